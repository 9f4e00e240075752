"""Which client RPCs carry payloads to a payload store and back (the official SDK's choice).

Requests that carry user payloads to the sidecar have them externalized, under the instance the
request is about; responses that carry payloads back have tokens resolved. Other RPCs pass as they are.
"""

from __future__ import annotations

from typing import Any

from durabletask.payload.helpers import (
    deexternalize_payloads,
    deexternalize_payloads_async,
    externalize_payloads,
    externalize_payloads_async,
)
from durabletask.payload.store import PayloadStore

EXTERNALIZING_REQUESTS = frozenset({"StartInstance", "RaiseEvent", "TerminateInstance", "SignalEntity"})
RESOLVING_RESPONSES = frozenset({
    "GetInstance", "WaitForInstanceStart", "WaitForInstanceCompletion", "QueryInstances",
    "StreamInstanceHistory", "GetEntity", "QueryEntities",
})


def prepare_request(method: str, request: Any, store: PayloadStore | None) -> None:
    """Externalize the large payloads of ``request`` when ``method`` is one that carries them."""
    if store is not None and method in EXTERNALIZING_REQUESTS:
        externalize_payloads(request, store, instance_id=request.instanceId or None)


def resolve_response(method: str, response: Any, store: PayloadStore | None) -> None:
    """Put the payloads named by tokens back into ``response``."""
    if store is not None and method in RESOLVING_RESPONSES:
        deexternalize_payloads(response, store)


async def prepare_request_async(method: str, request: Any, store: PayloadStore | None) -> None:
    """:func:`prepare_request` with the store's asynchronous upload."""
    if store is not None and method in EXTERNALIZING_REQUESTS:
        await externalize_payloads_async(request, store, instance_id=request.instanceId or None)


async def resolve_response_async(method: str, response: Any, store: PayloadStore | None) -> None:
    """:func:`resolve_response` with the store's asynchronous download."""
    if store is not None and method in RESOLVING_RESPONSES:
        await deexternalize_payloads_async(response, store)
