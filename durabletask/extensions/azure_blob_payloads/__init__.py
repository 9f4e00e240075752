"""Large payloads in Azure Blob Storage (``pip install 'durabletask-standalone[azure-blob-payloads]'``).

Usage::

    store = BlobPayloadStore(BlobPayloadStoreOptions(connection_string="..."))
    worker = TaskHubGrpcWorker(payload_store=store)
    client = TaskHubGrpcClient(payload_store=store)
"""

try:
    import azure.storage.blob  # noqa: F401
except ImportError as error:
    raise ImportError(
        "durabletask.extensions.azure_blob_payloads needs the 'azure-storage-blob' package: "
        "pip install 'durabletask-standalone[azure-blob-payloads]'"
    ) from error

from durabletask.extensions.azure_blob_payloads.blob_payload_store import BlobPayloadStore
from durabletask.extensions.azure_blob_payloads.options import BlobPayloadStoreOptions

__all__ = ["BlobPayloadStore", "BlobPayloadStoreOptions"]
