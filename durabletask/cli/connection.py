"""Where the sidecar is and how to reach it: address, TLS and bearer token, from options or environment.

The channel is built here (plaintext, TLS, or mutual TLS) and handed to ``TaskHubGrpcClient``
as ``channel=``; the token travels as ``authorization: Bearer <token>`` metadata on every call.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import namedtuple
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from durabletask.cli.errors import UsageError
from durabletask.client import TaskHubGrpcClient
from durabletask.internal.grpc_channel import DEFAULT_HOST_ADDRESS, merge_options, parse_address

ADDRESS_VARIABLE = "DURABLETASK_ADDRESS"
TOKEN_VARIABLE = "DURABLETASK_TOKEN"
TOKEN_FILE_VARIABLE = "DURABLETASK_TOKEN_FILE"
TLS_VARIABLE = "DURABLETASK_TLS"
TLS_CA_VARIABLE = "DURABLETASK_TLS_CA"
TLS_CERT_VARIABLE = "DURABLETASK_TLS_CERT"
TLS_KEY_VARIABLE = "DURABLETASK_TLS_KEY"
TIMEOUT_VARIABLE = "DURABLETASK_RPC_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 30.0

_TRUE_WORDS = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a channel to the sidecar."""

    address: str                      # host:port, without a scheme
    tls: bool = False
    ca_pem: bytes | None = None       # trusted roots (None: the system's)
    cert_pem: bytes | None = None     # client certificate, for mutual TLS
    key_pem: bytes | None = None
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS  # deadline of each call that sets none itself (seconds)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """The call metadata: the bearer token, when one is set."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials from the CA and client certificate given."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    def open_channel(self) -> grpc.Channel:
        """A new channel to the sidecar (the caller closes it); calls without a deadline get ``timeout``."""
        options = merge_options(None)
        if self.tls:
            channel = grpc.secure_channel(self.address, self.credentials(), options=options)
        else:
            channel = grpc.insecure_channel(self.address, options=options)
        return grpc.intercept_channel(channel, DefaultDeadline(self.timeout))


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    """A call's details with another deadline."""


class DefaultDeadline(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Gives every call that sets no deadline of its own one of ``seconds``, so a sidecar that never
    answers cannot hang the command (the waits set theirs from their own ``--timeout``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _bounded(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        if details.timeout is not None:
            return details
        return _CallDetails(details.method, self.seconds, details.metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._bounded(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._bounded(client_call_details), request)


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None


def _read_token(path: str) -> str:
    text = _read_file(path, "token file").decode("utf-8", errors="replace").strip()
    token = text.splitlines()[0].strip() if text else ""
    if not token:
        raise UsageError(f"token file '{path}' holds no token")
    return token


def settings_from(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ConnectionSettings:
    """Connection settings from the parsed global options, falling back to the environment."""
    raw_address = args.address or environ.get(ADDRESS_VARIABLE) or DEFAULT_HOST_ADDRESS
    tls_wanted = bool(args.tls) or environ.get(TLS_VARIABLE, "").strip().lower() in _TRUE_WORDS
    address, tls = parse_address(raw_address, tls_wanted)
    if not address or address.startswith(":") or address.endswith(":"):
        raise UsageError(f"invalid address {raw_address!r} (use host:port, e.g. localhost:4001)")
    ca_path = args.tls_ca or environ.get(TLS_CA_VARIABLE)
    cert_path = args.tls_cert or environ.get(TLS_CERT_VARIABLE)
    key_path = args.tls_key or environ.get(TLS_KEY_VARIABLE)
    if bool(cert_path) != bool(key_path):
        raise UsageError("mutual TLS needs both --tls-cert and --tls-key")
    if ca_path or cert_path:
        tls = True
    token_file = args.token_file or environ.get(TOKEN_FILE_VARIABLE)
    if token_file:
        token: str | None = _read_token(token_file)
    else:
        token = environ.get(TOKEN_VARIABLE, "").strip() or None
    if token is not None and any(c.isspace() for c in token):
        raise UsageError("the token must not contain whitespace")
    timeout = _timeout_from(getattr(args, "rpc_timeout", None), environ.get(TIMEOUT_VARIABLE))
    return ConnectionSettings(
        address=address,
        tls=tls,
        ca_pem=_read_file(ca_path, "CA certificate file") if ca_path else None,
        cert_pem=_read_file(cert_path, "client certificate file") if cert_path else None,
        key_pem=_read_file(key_path, "client key file") if key_path else None,
        token=token,
        timeout=timeout,
    )


def _timeout_from(option: float | None, variable: str | None) -> float:
    if option is not None:
        value, source = option, "--rpc-timeout"
    elif variable and variable.strip():
        source = f"${TIMEOUT_VARIABLE}"
        try:
            value = float(variable)
        except ValueError:
            raise UsageError(f"{source} must be a number of seconds, not {variable!r}") from None
    else:
        return DEFAULT_TIMEOUT_SECONDS
    if not 0 < value < float("inf"):
        raise UsageError(f"{source} must be a positive number of seconds, not {value:g}")
    return value


class Connection:
    """An open client to the sidecar; closes its channel on exit."""

    def __init__(self, settings: ConnectionSettings, verbose: bool = False) -> None:
        self.settings = settings
        self.channel = settings.open_channel()
        handler: logging.Handler = logging.StreamHandler() if verbose else logging.NullHandler()
        self.client = TaskHubGrpcClient(
            host_address=settings.address,
            channel=self.channel,
            metadata=settings.metadata or None,
            log_handler=handler,
        )

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *args: object) -> None:
        self.client.close()
        self.channel.close()
