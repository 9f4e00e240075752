"""Azure Blob Storage as the destination of history exports.

Needs ``azure-storage-blob``: ``pip install 'durabletask-standalone[history-export-azure]'``.
The writer uploads each file to the container named in its options (the job's
``ExportDestination.container`` is not used for routing: use one writer per container), with
the content type and encoding of the format and the activity's metadata as blob metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient, ContentSettings
except ImportError as error:
    raise ImportError(
        "durabletask.extensions.history_export.azure_blob needs the 'azure-storage-blob' package: "
        "pip install 'durabletask-standalone[history-export-azure]'"
    ) from error


@dataclass
class AzureBlobHistoryExportWriterOptions:
    """Where and how to write: a container, and either a connection string or an account URL with a credential.

    ``api_version`` pins the storage API version (useful with emulators);
    ``create_container_if_not_exists`` creates the container on the first write; with
    ``overwrite`` False an existing blob of the same name is an error (write-once exports).
    """

    container_name: str
    connection_string: str | None = None
    account_url: str | None = None
    credential: Any = field(default=None, repr=False)
    api_version: str | None = None
    create_container_if_not_exists: bool = True
    overwrite: bool = True

    def __post_init__(self) -> None:
        if not self.container_name:
            raise ValueError("container_name is required")
        if self.connection_string and self.account_url:
            raise ValueError("'connection_string' and 'account_url' are mutually exclusive")
        if not self.connection_string and not self.account_url:
            raise ValueError("Either 'connection_string' or 'account_url' (with 'credential') must be provided")
        if self.account_url and self.credential is None:
            raise ValueError("'credential' is required when 'account_url' is provided")


class AzureBlobHistoryExportWriter:
    """A ``HistoryWriter`` uploading to one Azure Blob container (a context manager; ``close`` when done)."""

    def __init__(self, options: AzureBlobHistoryExportWriterOptions) -> None:
        self._options = options
        extra: dict[str, Any] = {"api_version": options.api_version} if options.api_version else {}
        if options.connection_string:
            self._service = BlobServiceClient.from_connection_string(options.connection_string, **extra)
        else:
            self._service = BlobServiceClient(
                account_url=str(options.account_url), credential=options.credential, **extra
            )
        self._container_checked = not options.create_container_if_not_exists

    def close(self) -> None:
        """Close the underlying service client."""
        self._service.close()

    def __enter__(self) -> AzureBlobHistoryExportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(
        self,
        *,
        instance_id: str,
        container: str,
        blob_name: str,
        payload: bytes,
        content_type: str,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Upload one exported file as ``blob_name`` in the configured container."""
        if not self._container_checked:
            try:
                self._service.create_container(self._options.container_name)
            except ResourceExistsError:
                pass
            self._container_checked = True
        settings = ContentSettings(content_type=content_type)
        if content_encoding:
            settings.content_encoding = content_encoding
        self._service.get_container_client(self._options.container_name).upload_blob(
            name=blob_name,
            data=payload,
            overwrite=self._options.overwrite,
            content_settings=settings,
            metadata=dict(metadata) if metadata else None,
        )


__all__ = ["AzureBlobHistoryExportWriter", "AzureBlobHistoryExportWriterOptions"]
