"""Settings of the Azure Blob Storage payload store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durabletask.payload.store import LargePayloadStorageOptions


@dataclass
class BlobPayloadStoreOptions(LargePayloadStorageOptions):
    """Where payloads are stored: a container, and either a connection string or an account URL.

    ``credential`` (e.g. an ``azure.identity`` credential) goes with ``account_url``;
    ``api_version`` pins the storage service version (useful with older emulators).
    """

    container_name: str = "durabletask-payloads"
    connection_string: str | None = None
    account_url: str | None = None
    credential: Any = field(default=None, repr=False)
    api_version: str | None = None
