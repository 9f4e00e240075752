"""The interface of a store that holds payloads too large to travel inline, and its options."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass
class LargePayloadStorageOptions:
    """When payloads are moved out of gRPC messages into a payload store.

    ``threshold_bytes``: a payload whose UTF-8 encoding is longer than this is stored and replaced
    by a token (256 KiB by default, as in the other Durable Task SDKs).
    ``max_stored_payload_bytes``: a longer payload is refused with :class:`PayloadTooLargeError`, a
    ``ValueError`` (10 MiB).
    ``enable_compression``: stores may gzip what they store (the Azure Blob store does).
    """

    threshold_bytes: int = 256 * 1024
    max_stored_payload_bytes: int = 10 * 1024 * 1024
    enable_compression: bool = True


class PayloadTooLargeError(ValueError):
    """A payload is longer than ``LargePayloadStorageOptions.max_stored_payload_bytes``.

    A client raises it to the caller. A worker does not retry such a result: the activity, the
    orchestration or the entity operation fails with a failure that names the size and the limit.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"a payload of {size} bytes exceeds the limit of {limit} bytes set by "
            "LargePayloadStorageOptions.max_stored_payload_bytes"
        )
        self.size = size
        self.limit = limit


class PayloadStore(abc.ABC):
    """Where large payloads are kept; each stored payload is named by a short token string."""

    @property
    @abc.abstractmethod
    def options(self) -> LargePayloadStorageOptions:
        """The thresholds this store is used with."""

    @abc.abstractmethod
    def upload(self, data: bytes, *, instance_id: str | None = None) -> str:
        """Store ``data`` (for the given instance, if any) and return its token."""

    @abc.abstractmethod
    async def upload_async(self, data: bytes, *, instance_id: str | None = None) -> str:
        """Store ``data`` without blocking the event loop and return its token."""

    @abc.abstractmethod
    def download(self, token: str) -> bytes:
        """The bytes stored under ``token``."""

    @abc.abstractmethod
    async def download_async(self, token: str) -> bytes:
        """The bytes stored under ``token``, without blocking the event loop."""

    @abc.abstractmethod
    def is_known_token(self, value: str) -> bool:
        """Whether ``value`` is a token of this store (rather than an inline payload)."""
