"""Transport settings for the gRPC channels of the client and the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
