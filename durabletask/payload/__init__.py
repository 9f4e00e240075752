"""Large payloads kept out of gRPC messages: a :class:`PayloadStore` holds them and messages carry tokens.

Give ``payload_store=`` to ``TaskHubGrpcClient``, ``AsyncTaskHubGrpcClient`` and ``TaskHubGrpcWorker``
(all of them, with stores that reach the same storage). The token format of the Azure Blob store
(``durabletask.extensions.azure_blob_payloads``) is the one the other Durable Task SDKs use.
"""

from durabletask.payload.helpers import (
    deexternalize_payloads,
    deexternalize_payloads_async,
    externalize_payloads,
    externalize_payloads_async,
)
from durabletask.payload.store import LargePayloadStorageOptions, PayloadStore, PayloadTooLargeError

__all__ = [
    "LargePayloadStorageOptions",
    "PayloadStore",
    "PayloadTooLargeError",
    "deexternalize_payloads",
    "deexternalize_payloads_async",
    "externalize_payloads",
    "externalize_payloads_async",
]
