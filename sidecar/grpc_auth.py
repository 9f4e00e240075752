"""The bearer token on gRPC: a server interceptor that refuses, before any handler runs, every call
that does not carry ``authorization: Bearer <token>``.

It guards every method of every service on the server (TaskHubSidecarService and WorkBatches),
Hello included: a worker with a wrong token then fails at once with a clear status instead of at
its first work item. A refused call is answered UNAUTHENTICATED without its request being parsed,
so it reaches neither the servicer nor the store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from sidecar.quoting import log_text
from sidecar.security import AccessToken

log = logging.getLogger("durabletask-sidecar")

AUTHORIZATION = "authorization"
MISSING_TOKEN = (
    "this sidecar requires a token: send the metadata 'authorization: Bearer <token>' "
    "(no 'authorization' metadata came with the call)"
)
WRONG_TOKEN = "the token in the 'authorization' metadata is not accepted by this sidecar (expected 'Bearer <token>')"


def authorization_of(metadata: Any) -> str | None:
    """The first ``authorization`` value among a call's (key, value) metadata, if any."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _ignore_request(data: bytes) -> None:
    return None


def _refusal(handler: grpc.RpcMethodHandler, details: str) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that answers UNAUTHENTICATED with ``details``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> NoReturn:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
        raise AssertionError("abort returned")  # it raises

    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, _ignore_request, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, _ignore_request, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, _ignore_request, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, _ignore_request, serializer)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets through only calls whose ``authorization`` metadata carries ``token``."""

    def __init__(self, token: AccessToken) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # an unknown method: gRPC answers UNIMPLEMENTED
        offered = authorization_of(handler_call_details.invocation_metadata)
        if self._token.accepts(offered):
            return handler
        details = MISSING_TOKEN if offered is None else WRONG_TOKEN
        log.info(
            "refused %s: %s token", log_text(handler_call_details.method), "no" if offered is None else "a wrong"
        )
        return _refusal(handler, details)
