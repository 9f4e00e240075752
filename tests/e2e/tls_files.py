"""Throw-away TLS material for tests, made with the ``openssl`` command: a CA, a server certificate for
localhost and 127.0.0.1, and a client certificate, all signed by that CA (EC keys: quick to make)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files (as strings, the way the CLI and GrpcTlsOptions take them)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that signed none of the above


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory,
    )


def _signed(directory: Path, name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=directory,
    )


def make_tls_files(directory: Path) -> TlsFiles:
    """Writes the CA, server and client files into ``directory`` (skips the test without ``openssl``)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(directory, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed(directory, "client", "extendedKeyUsage=clientAuth\n")
    d = str(directory)
    return TlsFiles(
        ca=f"{d}/ca.pem", server_cert=f"{d}/server.pem", server_key=f"{d}/server.key",
        client_cert=f"{d}/client.pem", client_key=f"{d}/client.key", other_ca=f"{d}/other-ca.pem",
    )
