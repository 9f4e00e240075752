"""Address parsing and channel construction shared by the client and the worker."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from durabletask.grpc_options import TLS_OPTION, GrpcTlsOptions

DEFAULT_HOST_ADDRESS = "localhost:4001"

SECURE_PREFIXES = ("https://", "grpcs://")
INSECURE_PREFIXES = ("http://", "grpc://")

# Generous defaults: payloads and histories can be large.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def get_default_host_address() -> str:
    """The sidecar address: $DURABLETASK_GRPC_ENDPOINT or localhost:4001."""
    return os.environ.get("DURABLETASK_GRPC_ENDPOINT") or DEFAULT_HOST_ADDRESS


def parse_address(host_address: str | None, secure_channel: bool) -> tuple[str, bool]:
    """Strip a scheme prefix; http/grpc mean plaintext, https/grpcs mean TLS."""
    address = host_address or get_default_host_address()
    lowered = address.lower()
    for prefix in SECURE_PREFIXES:
        if lowered.startswith(prefix):
            return address[len(prefix):], True
    for prefix in INSECURE_PREFIXES:
        if lowered.startswith(prefix):
            return address[len(prefix):], False
    return address, secure_channel


def merge_options(options: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """Defaults overridden by the caller's options (same key: the caller wins)."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    for key, value in options or []:
        merged[key] = value
    return list(merged.items())


def channel_settings(
    host_address: str | None, secure_channel: bool, options: Sequence[tuple[str, Any]] | None
) -> tuple[str, grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """The target, the credentials (None: plaintext) and the gRPC options of a channel to the sidecar.

    A ``GrpcTlsOptions`` among ``options`` (see ``GrpcChannelOptions.tls``) is taken out and
    makes the credentials; otherwise TLS trusts gRPC's default roots, which
    ``$GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` can replace.
    """
    address, secure = parse_address(host_address, secure_channel)
    merged = merge_options(options)
    tls = next((value for key, value in merged if key == TLS_OPTION), None)
    opts = [(key, value) for key, value in merged if key != TLS_OPTION]
    if isinstance(tls, GrpcTlsOptions):
        return address, tls.channel_credentials(), opts + tls.channel_options()
    return address, grpc.ssl_channel_credentials() if secure else None, opts


def new_channel(
    host_address: str | None,
    secure_channel: bool = False,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A synchronous channel to the sidecar, with interceptors applied."""
    address, credentials, opts = channel_settings(host_address, secure_channel, options)
    if credentials is not None:
        channel = grpc.secure_channel(address, credentials, options=opts)
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if interceptors:
        channel = grpc.intercept_channel(channel, *interceptors)
    return channel


def new_aio_channel(
    host_address: str | None,
    secure_channel: bool = False,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to the sidecar."""
    address, credentials, opts = channel_settings(host_address, secure_channel, options)
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
