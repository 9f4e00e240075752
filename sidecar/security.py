"""The sidecar's protection: the shared bearer token (loaded once, checked the same way by gRPC, dashboard
and metrics), its TLS material, and the warning for an exposed, unprotected sidecar."""

from __future__ import annotations

import hmac
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

# The environment variable that holds the token when no --token-file is given.
TOKEN_VARIABLE = "DURABLETASK_SIDECAR_TOKEN"
_SCHEME = "bearer "


class TokenError(ValueError):
    """The token file cannot be read or holds no token."""


class AccessToken:
    """A shared secret that every request must carry as ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        if not token or any(c.isspace() for c in token):
            raise TokenError("the token must be non-empty and contain no whitespace")
        self._token = token.encode()

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``authorization`` header value carries this token (compared in constant time)."""
        if authorization is None or not authorization[: len(_SCHEME)].lower() == _SCHEME:
            return False
        offered = authorization[len(_SCHEME) :].strip().encode()
        return hmac.compare_digest(offered, self._token)


def load_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> AccessToken | None:
    """The token from ``token_file`` (its first line), else from ``$DURABLETASK_SIDECAR_TOKEN``, else None."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenError(f"cannot read token file '{token_file}': {exc.strerror or exc}") from exc
        lines = text.strip().splitlines()
        if not lines:
            raise TokenError(f"token file '{token_file}' is empty")
        return AccessToken(lines[0].strip())
    value = environ.get(TOKEN_VARIABLE, "").strip()
    return AccessToken(value) if value else None


class TlsError(ValueError):
    """A TLS file cannot be read, is not PEM, or the key does not belong to the certificate."""


@dataclass(frozen=True)
class ServerTls:
    """The sidecar's TLS material, as PEM bytes: its certificate chain and key, and optionally a client CA.

    With ``client_ca`` every client must present a certificate signed by it (mutual TLS).
    """

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC credentials for ``add_secure_port``."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def _read_pem(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise TlsError(f"{what} '{path}' is not a PEM file (no '-----BEGIN' line)")
    return data


def load_server_tls(cert_file: str | None, key_file: str | None, client_ca_file: str | None) -> ServerTls | None:
    """The TLS material named by --tls-cert/--tls-key/--tls-client-ca, checked; None when none is given.

    The certificate and key must come together and match; a client CA needs them.
    """
    if not cert_file and not key_file:
        if client_ca_file:
            raise TlsError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    if not cert_file or not key_file:
        given, missing = ("--tls-cert", "--tls-key") if cert_file else ("--tls-key", "--tls-cert")
        raise TlsError(f"{given} needs {missing}: give both or neither")
    certificate = _read_pem(cert_file, "TLS certificate")
    key = _read_pem(key_file, "TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"TLS certificate '{cert_file}' and key '{key_file}' do not form a usable pair: {exc.reason or exc}"
        ) from exc
    client_ca = None
    if client_ca_file:
        client_ca = _read_pem(client_ca_file, "TLS client CA")
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS client CA '{client_ca_file}' holds no usable certificate: {exc.reason or exc}") from exc
    return ServerTls(certificate, key, client_ca)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface to listen on) is reachable from this machine only."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, tls: ServerTls | None, token: AccessToken | None) -> str | None:
    """The warning to print when listening beyond loopback without TLS or without a token (else None)."""
    if is_loopback(host):
        return None
    problems = []
    if token is None:
        problems.append(
            f"no token (--token-file or ${TOKEN_VARIABLE}): anyone who can reach the port can read and change "
            "every instance and delete the task hub"
        )
    if tls is None:
        problems.append("no TLS (--tls-cert/--tls-key): requests, payloads and any token travel in plaintext")
    if not problems:
        return None
    return f"WARNING: listening on '{host}', reachable from other machines, with {'; and '.join(problems)}"


def describe_protection(tls: ServerTls | None, token: AccessToken | None) -> str:
    """One line for the start-up output: whether TLS (mutual or not) and a token are in force."""
    if tls is None:
        transport = "plaintext"
    else:
        transport = "mutual TLS (client certificates required)" if tls.client_ca is not None else "TLS"
    return f"security: {transport}; {'bearer token required' if token is not None else 'no token'}"
