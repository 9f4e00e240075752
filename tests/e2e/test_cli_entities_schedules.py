"""The ``durabletask`` CLI's entity and schedule commands, and its TLS and token options, against real sidecars."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from durabletask import entities, task
from durabletask.cli import main
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.security import AccessToken, ServerTls
from sidecar.server import SidecarServer
from tests.e2e.conftest import eventually
from tests.e2e.test_cli_instances import mask

pytestmark = pytest.mark.our_sidecar("checks the CLI's output against this sidecar's messages")


def counter(ctx: entities.EntityContext, value: int | None) -> int | None:
    if ctx.operation == "add":
        ctx.set_state(ctx.get_state(int, 0) + (value or 0))
    return ctx.get_state(int, 0)


def tick(ctx: task.OrchestrationContext, _: object) -> str:
    return "tick"


@dataclass
class Env:
    address: str
    client: TaskHubGrpcClient


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    """One sidecar and a worker running the counter entity and schedules."""
    server = SidecarServer("memory", host="localhost")
    address = f"localhost:{server.start(0)}"
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_entity(counter)
    worker.add_orchestrator(tick)
    worker.configure_scheduled_tasks()
    worker.start()
    client = TaskHubGrpcClient(host_address=address)
    try:
        yield Env(address, client)
    finally:
        client.close()
        worker.stop()
        server.stop(grace=0.2)


def run(address: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--address", address, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _state_is(env: Env, entity: str, value: int) -> bool:
    found = env.client.get_entity(entities.EntityInstanceId.parse(entity))
    return found is not None and found.get_state() == str(value)


def test_entities_signal_list_show_clean(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(env.address, capsys, "entities", "signal", "@counter@a", "add", "--input", "5")[:2] == (
        0, "signaled 'add' to entity '@counter@a'\n")
    assert run(env.address, capsys, "entities", "signal", "@counter@b", "add", "--input", "7")[0] == 0
    eventually(lambda: _state_is(env, "@counter@a", 5) and _state_is(env, "@counter@b", 7), 10, "entity states")

    code, out, _ = run(env.address, capsys, "entities", "list", "--prefix", "@counter@")
    assert code == 0
    assert mask(out) == (
        "ENTITY      MODIFIED (UTC)       QUEUE  LOCKED BY  STATE\n"
        "@counter@a  <time>               0      -          5\n"
        "@counter@b  <time>               0      -          7\n"
    )
    code, out, _ = run(env.address, capsys, "entities", "show", "@counter@b", "--json")
    shown = json.loads(out)
    assert (shown["id"], shown["state"], shown["backlogQueueSize"], shown["lockedBy"]) == ("@counter@b", 7, 0, None)
    code, out, _ = run(env.address, capsys, "entities", "show", "@counter@a")
    assert "State:         5" in out and code == 0
    code, out, _ = run(env.address, capsys, "entities", "clean", "--json")
    assert code == 0 and set(json.loads(out)) == {"emptyEntitiesRemoved", "orphanedLocksReleased"}


@pytest.mark.parametrize(("argv", "exit_code", "message"), [
    (["entities", "show", "@counter@nobody"], 1, "error: entity '@counter@nobody' not found"),
    (["entities", "show", "counter-a"], 2, "error: invalid entity ID 'counter-a': it must look like '@name@key'"),
    (["entities", "signal", "@counter@a", "add", "--input", "{"], 2, "error: --input is not valid JSON"),
    (["schedules", "create", "s", "tick"], 2, "error: give exactly one of --interval and --cron"),
    (["schedules", "create", "s", "tick", "--interval", "soon"], 2, "error: --interval: invalid duration 'soon'"),
    (["schedules", "create", "s", "tick", "--cron", "61 * * * *"], 2, "error: invalid schedule 's': "),
    (["schedules", "show", "nothing-here"], 1, "error: schedule 'nothing-here' not found"),
])
def test_entity_and_schedule_errors(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], exit_code: int, message: str
) -> None:
    code, out, err = run(env.address, capsys, *argv)
    assert code == exit_code
    assert err.startswith(message) and err.count("\n") == 1, err
    assert out == ""


def test_schedules_lifecycle(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(env.address, capsys, "schedules", "create", "cli-hourly", "tick", "--interval", "1h",
                         "--input", '{"report": "sales"}')
    assert (code, out) == (0, "created schedule 'cli-hourly'\n"), err
    code, out, _ = run(env.address, capsys, "schedules", "list", "--prefix", "cli-")
    assert mask(out) == (
        "SCHEDULE    ORCHESTRATION  WHEN      STATUS  LAST RUN (UTC)  NEXT RUN (UTC)\n"
        "cli-hourly  tick           every 1h  Active  -               <time>\n"
    )
    assert run(env.address, capsys, "schedules", "pause", "cli-hourly")[:2] == (0, "paused schedule 'cli-hourly'\n")
    code, _, err = run(env.address, capsys, "schedules", "pause", "cli-hourly")
    assert (code, err) == (1, "error: schedule 'cli-hourly': operation 'pause_schedule' is not allowed: "
                              "cannot go from 'Paused' to 'Paused'\n")
    code, out, _ = run(env.address, capsys, "schedules", "list", "--status", "paused", "--json")
    listed = json.loads(out)
    assert [(s["scheduleId"], s["status"], s["intervalSeconds"]) for s in listed] == [("cli-hourly", "Paused", 3600.0)]
    assert listed[0]["orchestrationInput"] == {"report": "sales"}
    assert run(env.address, capsys, "schedules", "resume", "cli-hourly")[0] == 0
    code, out, _ = run(env.address, capsys, "schedules", "show", "cli-hourly", "--json")
    assert json.loads(out)["status"] == "Active"
    assert run(env.address, capsys, "schedules", "delete", "cli-hourly")[:2] == (0, "deleted schedule 'cli-hourly'\n")
    assert run(env.address, capsys, "schedules", "show", "cli-hourly")[0] == 1


def test_schedule_change_without_worker_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    server = SidecarServer("memory", host="localhost")
    address = f"localhost:{server.start(0)}"
    try:
        code, _, err = run(address, capsys, "schedules", "pause", "s1", "--timeout", "0.5")
    finally:
        server.stop(grace=0.2)
    assert code == 5
    assert err == ("error: schedule 's1': 'pause' did not finish within 0.5s "
                   "(is a worker with configure_scheduled_tasks() connected?)\n")


# --- TLS and token ------------------------------------------------------------------------------


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)


def _make_certificates(directory: Path) -> None:
    """A CA, a server certificate for localhost and a client certificate, all signed by the CA."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(directory, "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=cli-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    for name, extension in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                            ("client", "extendedKeyUsage=clientAuth\n")):
        (directory / f"{name}.ext").write_text(extension)
        _openssl(directory, "req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")


def test_tls_and_token(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    _make_certificates(tmp_path)
    (tmp_path / "token").write_text("s3cret-token\n")
    tls = ServerTls((tmp_path / "server.pem").read_bytes(), (tmp_path / "server.key").read_bytes(),
                    client_ca=(tmp_path / "ca.pem").read_bytes())
    server = SidecarServer("memory", host="localhost", tls=tls, token=AccessToken("s3cret-token"))
    address = f"localhost:{server.start(0)}"
    ca, cert, key = (str(tmp_path / f) for f in ("ca.pem", "client.pem", "client.key"))
    mtls = ["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]
    try:
        code, out, err = run(address, capsys, *mtls, "--token-file", str(tmp_path / "token"), "list", "--json")
        assert (code, json.loads(out or "null")) == (0, {"instances": [], "continuationToken": None}), err

        monkeypatch.setenv("DURABLETASK_TOKEN", "s3cret-token")
        monkeypatch.setenv("DURABLETASK_TLS_CA", ca)
        code, out, err = run(address, capsys, "--tls-cert", cert, "--tls-key", key, "start", "tick", "--id", "t1")
        assert (code, out) == (0, "t1\n"), err
        monkeypatch.delenv("DURABLETASK_TLS_CA")

        monkeypatch.setenv("DURABLETASK_TOKEN", "wrong")
        code, _, err = run(address, capsys, *mtls, "show", "t1")
        assert code == 4 and err.startswith(f"error: the sidecar at {address} refused the request (unauthenticated)")
        monkeypatch.delenv("DURABLETASK_TOKEN")
        code, _, err = run(address, capsys, *mtls, "terminate", "t1")
        assert code == 4 and err.count("\n") == 1

        code, _, err = run(address, capsys, "--token-file", str(tmp_path / "token"), "--tls-ca", ca, "list")
        assert code == 3 and err.startswith(f"error: cannot reach the sidecar at {address}")  # no client certificate
        code, _, err = run(address, capsys, "--tls-cert", cert, "list")
        assert (code, err) == (2, "error: mutual TLS needs both --tls-cert and --tls-key\n")
        code, _, err = run(address, capsys, "--token-file", str(tmp_path / "missing"), "list")
        assert code == 2 and err.startswith(f"error: cannot read token file '{tmp_path / 'missing'}'")
    finally:
        server.stop(grace=0.2)
