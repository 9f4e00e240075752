"""A :class:`PayloadStore` on Azure Blob Storage, with the token format of the other Durable Task SDKs.

A token reads ``blob:v1:<container>:<blob name>``; blobs are named ``<instance ID>/<random hex>``
(or just the random part without an instance), and hold the payload gzip-compressed when the
options ask for compression.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

from durabletask.extensions.azure_blob_payloads.options import BlobPayloadStoreOptions
from durabletask.payload.store import PayloadStore

TOKEN_PREFIX = "blob:v1:"


def parse_token(token: str) -> tuple[str, str] | None:
    """The container and blob name a token names, or None when it is not a blob token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    container, separator, blob_name = token[len(TOKEN_PREFIX):].partition(":")
    if not separator or not container or not blob_name:
        return None
    return container, blob_name


class BlobPayloadStore(PayloadStore):
    """Stores large payloads as blobs of one container (created on first upload)."""

    def __init__(self, options: BlobPayloadStoreOptions) -> None:
        if not options.connection_string and not options.account_url:
            raise ValueError("BlobPayloadStoreOptions needs connection_string, or account_url with a credential")
        self._options = options
        extra: dict[str, Any] = {"api_version": options.api_version} if options.api_version else {}
        if options.connection_string:
            self._client = BlobServiceClient.from_connection_string(options.connection_string, **extra)
            self._async_client = AsyncBlobServiceClient.from_connection_string(options.connection_string, **extra)
        else:
            assert options.account_url is not None
            self._client = BlobServiceClient(options.account_url, credential=options.credential, **extra)
            self._async_client = AsyncBlobServiceClient(
                options.account_url, credential=options.credential, **extra
            )
        self._container_ready = False

    @property
    def options(self) -> BlobPayloadStoreOptions:
        """The store's settings."""
        return self._options

    def close(self) -> None:
        """Close the synchronous service client."""
        self._client.close()

    async def close_async(self) -> None:
        """Close the asynchronous service client."""
        await self._async_client.close()

    def __enter__(self) -> BlobPayloadStore:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    async def __aenter__(self) -> BlobPayloadStore:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close_async()

    def is_known_token(self, value: str) -> bool:
        """Whether ``value`` reads ``blob:v1:<container>:<blob name>``."""
        return parse_token(value) is not None

    def upload(self, data: bytes, *, instance_id: str | None = None) -> str:
        """Store ``data`` as a new blob and return its token."""
        container = self._client.get_container_client(self._options.container_name)
        if not self._container_ready:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            self._container_ready = True
        blob_name = _new_blob_name(instance_id)
        body = gzip.compress(data) if self._options.enable_compression else data
        container.upload_blob(name=blob_name, data=body, overwrite=True)
        return f"{TOKEN_PREFIX}{self._options.container_name}:{blob_name}"

    async def upload_async(self, data: bytes, *, instance_id: str | None = None) -> str:
        """Store ``data`` as a new blob with the asynchronous client and return its token."""
        container = self._async_client.get_container_client(self._options.container_name)
        if not self._container_ready:
            try:
                await container.create_container()
            except ResourceExistsError:
                pass
            self._container_ready = True
        blob_name = _new_blob_name(instance_id)
        body = await asyncio.to_thread(gzip.compress, data) if self._options.enable_compression else data
        await container.upload_blob(name=blob_name, data=body, overwrite=True)
        return f"{TOKEN_PREFIX}{self._options.container_name}:{blob_name}"

    def download(self, token: str) -> bytes:
        """The payload stored under ``token``."""
        container, blob_name = _require_token(token)
        body = self._client.get_container_client(container).download_blob(blob_name).readall()
        return gzip.decompress(body) if self._options.enable_compression else body

    async def download_async(self, token: str) -> bytes:
        """The payload stored under ``token``, read with the asynchronous client."""
        container, blob_name = _require_token(token)
        downloader = await self._async_client.get_container_client(container).download_blob(blob_name)
        body = await downloader.readall()
        if self._options.enable_compression:
            return await asyncio.to_thread(gzip.decompress, body)
        return body


def _new_blob_name(instance_id: str | None) -> str:
    unique = uuid.uuid4().hex
    return f"{instance_id}/{unique}" if instance_id else unique


def _require_token(token: str) -> tuple[str, str]:
    parsed = parse_token(token)
    if parsed is None:
        raise ValueError(f"not a blob payload token: {token[:80]!r}")
    return parsed
