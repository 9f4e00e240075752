"""Transport settings for the gRPC channels of the client and the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# The key under which GrpcChannelOptions.tls rides in the option list; the channel factory takes it
# out (gRPC never sees it) and builds the channel's credentials from it.
TLS_OPTION = "durabletask.tls"


def _duration_string(seconds: float) -> str:
    """A gRPC service-config duration ("0.05s"); refuses values that round to zero."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    if float(text) == 0:
        raise ValueError(f"{seconds!r} seconds is too small to express as a gRPC duration")
    return f"{text}s"


@dataclass(slots=True, kw_only=True)
class GrpcRetryPolicyOptions:
    """Transparent retries of failed calls, applied by gRPC itself through the service config."""

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 0.25
    backoff_multiplier: float = 2.0
    retryable_status_codes: list[str] = field(default_factory=lambda: ["UNAVAILABLE"])

    def __post_init__(self) -> None:
        if self.max_attempts < 2:
            raise ValueError("max_attempts must be at least 2")
        if self.initial_backoff_seconds <= 0:
            raise ValueError("initial_backoff_seconds must be positive")
        if self.max_backoff_seconds <= 0:
            raise ValueError("max_backoff_seconds must be positive")
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must not be less than initial_backoff_seconds")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be positive")
        if not self.retryable_status_codes:
            raise ValueError("retryable_status_codes must name at least one status code")
        _duration_string(self.initial_backoff_seconds)
        _duration_string(self.max_backoff_seconds)

    def to_service_config(self) -> dict[str, Any]:
        """The service-config document enabling this policy for every method."""
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration_string(self.initial_backoff_seconds),
            "maxBackoff": _duration_string(self.max_backoff_seconds),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }
        return {"methodConfig": [{"name": [{}], "retryPolicy": policy}]}


@dataclass(slots=True, kw_only=True, frozen=True)
class GrpcTlsOptions:
    """TLS settings beyond the official SDK's (which trusts the system's roots only): a private CA,
    a client certificate and key for mutual TLS, and the name to expect in the server's certificate.

    Files are PEM; they are read whenever a channel is made. Setting these turns TLS on whatever
    the address's scheme or ``secure_channel`` say.
    """

    root_certificates_file: str | None = None
    client_certificate_file: str | None = None
    client_key_file: str | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if bool(self.client_certificate_file) != bool(self.client_key_file):
            raise ValueError("client_certificate_file and client_key_file go together: give both or neither")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The credentials for ``grpc.secure_channel``; ValueError naming a file that cannot be read."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates_file, "root_certificates_file"),
            private_key=_read_pem(self.client_key_file, "client_key_file"),
            certificate_chain=_read_pem(self.client_certificate_file, "client_certificate_file"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """The gRPC channel options these settings need."""
        if self.server_name_override:
            return [("grpc.ssl_target_name_override", self.server_name_override)]
        return []


def _read_pem(path: str | None, field_name: str) -> bytes | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"GrpcTlsOptions.{field_name}: cannot read '{path}': {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise ValueError(f"GrpcTlsOptions.{field_name}: '{path}' is not a PEM file")
    return data


@dataclass(slots=True, kw_only=True)
class GrpcChannelOptions:
    """Channel settings; unset fields keep the SDK defaults (64 MiB messages, keepalive on)."""

    max_receive_message_length: int | None = None
    max_send_message_length: int | None = None
    keepalive_time_ms: int | None = None
    keepalive_timeout_ms: int | None = None
    keepalive_permit_without_calls: bool | None = None
    retry_policy: GrpcRetryPolicyOptions | None = None
    raw_options: list[tuple[str, Any]] = field(default_factory=list)
    tls: GrpcTlsOptions | None = None

    def to_grpc_options(self) -> list[tuple[str, Any]]:
        """The ``(key, value)`` pairs for ``grpc.*_channel(options=...)``; named fields follow raw ones."""
        options: list[tuple[str, Any]] = list(self.raw_options)
        named: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_receive_message_length),
            ("grpc.max_send_message_length", self.max_send_message_length),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
        ]
        if self.keepalive_permit_without_calls is not None:
            named.append(("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)))
        options.extend((key, value) for key, value in named if value is not None)
        if self.retry_policy is not None:
            options.append(("grpc.enable_retries", 1))
            options.append(("grpc.service_config", json.dumps(self.retry_policy.to_service_config())))
        if self.tls is not None:
            options.append((TLS_OPTION, self.tls))
        return options


@dataclass(slots=True, kw_only=True)
class GrpcWorkerResiliencyOptions:
    """How the worker notices a dead connection and how fast it reconnects."""

    hello_timeout_seconds: float = 30.0
    silent_disconnect_timeout_seconds: float = 120.0
    channel_recreate_failure_threshold: int = 5
    reconnect_backoff_base_seconds: float = 1.0
    reconnect_backoff_cap_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.hello_timeout_seconds <= 0:
            raise ValueError("hello_timeout_seconds must be positive")
        if self.silent_disconnect_timeout_seconds < 0:
            raise ValueError("silent_disconnect_timeout_seconds must not be negative (0 disables it)")
        if self.channel_recreate_failure_threshold < 0:
            raise ValueError("channel_recreate_failure_threshold must not be negative (0 disables it)")
        if self.reconnect_backoff_base_seconds <= 0:
            raise ValueError("reconnect_backoff_base_seconds must be positive")
        if self.reconnect_backoff_cap_seconds <= 0:
            raise ValueError("reconnect_backoff_cap_seconds must be positive")
        if self.reconnect_backoff_cap_seconds < self.reconnect_backoff_base_seconds:
            raise ValueError("reconnect_backoff_cap_seconds must not be less than reconnect_backoff_base_seconds")


@dataclass(slots=True, kw_only=True)
class GrpcClientResiliencyOptions:
    """When the client replaces a channel that keeps failing with transport errors."""

    channel_recreate_failure_threshold: int = 5
    min_recreate_interval_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.channel_recreate_failure_threshold < 0:
            raise ValueError("channel_recreate_failure_threshold must not be negative (0 disables it)")
        if self.min_recreate_interval_seconds < 0:
            raise ValueError("min_recreate_interval_seconds must not be negative")
