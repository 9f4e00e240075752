"""The sidecar's security options on its command line: bad files refused in one line, and the warning
printed when it listens beyond loopback without TLS or a token (issue 10 point 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.security import TOKEN_VARIABLE
from tests.e2e.conftest import official_backend_mode
from tests.e2e.tls_files import TlsFiles, make_tls_files

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="the options are this repository's sidecar's")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _bad_inputs(files: TlsFiles, tmp: Path) -> list[tuple[list[str], str]]:
    not_pem = tmp / "not.pem"
    not_pem.write_text("hello\n")
    empty = tmp / "empty-token"
    empty.write_text("\n")
    missing = str(tmp / "missing.pem")
    return [
        (["--tls-cert", files.server_cert], "--tls-cert needs --tls-key"),
        (["--tls-key", files.server_key], "--tls-key needs --tls-cert"),
        (["--tls-client-ca", files.ca], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", missing, "--tls-key", files.server_key], f"cannot read TLS certificate '{missing}'"),
        (["--tls-cert", str(not_pem), "--tls-key", files.server_key], "is not a PEM file"),
        (["--tls-cert", files.server_cert, "--tls-key", files.client_key], "do not form a usable pair"),
        (["--tls-cert", files.server_cert, "--tls-key", files.server_key, "--tls-client-ca", str(not_pem)],
         "TLS client CA"),
        (["--token-file", missing], f"cannot read token file '{missing}'"),
        (["--token-file", str(empty)], "is empty"),
    ]


def test_bad_security_options_fail_in_one_line(
    tls_files: TlsFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "never-created.db"
    for args, expected in _bad_inputs(tls_files, tmp_path):
        code = cli.main(["--port", "0", "--store", str(store), *args])
        err = capsys.readouterr().err
        assert code == 2, args
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, (args, err)
        assert "Traceback" not in err
    assert not store.exists()  # refused before anything was opened


def _start_output(*args: str) -> tuple[str, str]:
    """Starts the sidecar on 0.0.0.0, reads its output up to the security line, stops it: (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--host", "0.0.0.0", "--port", "0", "--store", "memory", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        done = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("security:"):
                    break
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert done.wait(TIMEOUT), "the sidecar did not start"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=TIMEOUT)
    return "".join(lines), err


def test_exposed_without_tls_and_token_warns(tls_files: TlsFiles, tmp_path: Path) -> None:
    out, err = _start_output()
    assert "security: plaintext; no token" in out
    warnings = [line for line in err.splitlines() if line.startswith("WARNING: listening on '0.0.0.0'")]
    assert len(warnings) == 1, err
    assert "no token" in warnings[0] and "no TLS" in warnings[0]

    token_file = tmp_path / "token"
    token_file.write_text("the-token\n")
    out, err = _start_output(
        "--tls-cert", tls_files.server_cert, "--tls-key", tls_files.server_key, "--tls-client-ca", tls_files.ca,
        "--token-file", str(token_file),
    )
    assert "security: mutual TLS (client certificates required); bearer token required" in out
    assert "WARNING" not in err
