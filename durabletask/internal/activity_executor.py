"""Runs one activity invocation and turns its outcome into an ``ActivityResponse``.

No gRPC here: the worker's transport feeds requests in and sends the responses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from durabletask import serialization, task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import tracing
from durabletask.internal.proto_helpers import new_failure_details, qualified_name
from durabletask.internal.registry import ActivityNotRegisteredError, Registry


def _new_context(req: pb.ActivityRequest) -> task.ActivityContext:
    return task.ActivityContext(req.orchestrationInstance.instanceId, req.taskId, tags=dict(req.tags))


def is_async_activity(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` activities (including callable objects with an async ``__call__``)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound method itself
    return call is not None and inspect.iscoroutinefunction(call)


class ActivityExecutor:
    """Looks up, decodes input for, runs and encodes the result of activities."""

    def __init__(
        self,
        registry: Registry,
        data_converter: serialization.DataConverter | None = None,
        logger: logging.Logger | None = None,
        *,
        emit_trace_spans: bool = True,
        exception_properties_provider: Any = None,
    ) -> None:
        self._registry = registry
        self._properties_provider = exception_properties_provider
        self._converter = data_converter or serialization.default_converter()
        self._logger = logger or logging.getLogger("durabletask-worker")
        self._emit_trace_spans = emit_trace_spans
        self._async_by_name: dict[str, tuple[Callable[..., Any], bool]] = {}

    def lookup(self, name: str) -> Callable[..., Any]:
        """The registered activity, or ``ActivityNotRegisteredError``."""
        fn = self._registry.get_activity(name)
        if fn is None:
            raise ActivityNotRegisteredError(f"Activity function named '{name}' was not registered!")
        return fn

    def is_async(self, req: pb.ActivityRequest) -> bool:
        """True when the request's activity must be awaited on an event loop."""
        fn = self._registry.get_activity(req.name)
        if fn is None:
            return False
        known = self._async_by_name.get(req.name)
        if known is None or known[0] is not fn:
            known = self._async_by_name[req.name] = (fn, is_async_activity(fn))
        return known[1]

    def _prepare(self, req: pb.ActivityRequest) -> tuple[Callable[..., Any], task.ActivityContext, Any]:
        fn = self.lookup(req.name)
        encoded = req.input.value if req.HasField("input") else None
        input_type = serialization.input_type_of(fn) if encoded else None
        # Annotations only direct decoding into types the converter can rebuild (dataclasses,
        # enums, ...); a loose `x: str` receiving 5 gets the 5, as in the official SDK.
        if input_type is not None and not self._converter.can_reconstruct(input_type):
            input_type = None
        value = self._converter.deserialize(encoded, input_type)
        self._logger.debug(
            "%s/%d: running activity '%s'", req.orchestrationInstance.instanceId, req.taskId, req.name
        )
        return fn, _new_context(req), value

    def _encode(self, req: pb.ActivityRequest, output: Any) -> str | None:
        encoded = self._converter.serialize(output)
        self._logger.debug(
            "%s/%d: activity '%s' completed (%d chars of output)",
            req.orchestrationInstance.instanceId,
            req.taskId,
            req.name,
            len(encoded) if encoded else 0,
        )
        return encoded

    def execute(
        self,
        req: pb.ActivityRequest,
        await_result: Callable[[Awaitable[Any]], Any] | None = None,
    ) -> str | None:
        """Run a synchronous activity; returns the encoded output, raises what it raises.

        A sync function that returns an awaitable has it resolved by ``await_result``
        (the worker passes one that waits on its event loop) or ``asyncio.run``.
        """
        fn, ctx, value = self._prepare(req)
        output = fn(ctx, value)
        if inspect.isawaitable(output):
            output = await_result(output) if await_result is not None else asyncio.run(_await(output))
        return self._encode(req, output)

    async def execute_async(self, req: pb.ActivityRequest) -> str | None:
        """Run an activity on the current event loop; returns the encoded output."""
        fn, ctx, value = self._prepare(req)
        output = fn(ctx, value)
        if inspect.isawaitable(output):
            output = await output
        return self._encode(req, output)

    def respond(
        self,
        req: pb.ActivityRequest,
        completion_token: str,
        result: str | None = None,
        error: BaseException | None = None,
    ) -> pb.ActivityResponse:
        """Build the response carrying the encoded ``result``, or ``error`` as failure details."""
        response = pb.ActivityResponse(
            instanceId=req.orchestrationInstance.instanceId,
            taskId=req.taskId,
            completionToken=completion_token,
        )
        if error is not None:
            response.failureDetails.CopyFrom(
                new_failure_details(error, properties_provider=self._properties_provider, logger=self._logger)
            )
            return response
        if result is not None:
            response.result.value = result
        return response

    def run(
        self,
        req: pb.ActivityRequest,
        completion_token: str,
        await_result: Callable[[Awaitable[Any]], Any] | None = None,
    ) -> pb.ActivityResponse:
        """Run a synchronous activity and answer with its result or its failure."""
        try:
            with tracing.running_activity(req, self._emit_trace_spans) as span:
                try:
                    return self.respond(req, completion_token, result=self.execute(req, await_result))
                except Exception as ex:
                    tracing.mark_failed(span, ex)
                    raise
        except Exception as ex:
            self._log_failure(req, ex)
            return self.respond(req, completion_token, error=ex)

    async def run_async(self, req: pb.ActivityRequest, completion_token: str) -> pb.ActivityResponse:
        """Await an activity and answer with its result or its failure."""
        try:
            with tracing.running_activity(req, self._emit_trace_spans) as span:
                try:
                    return self.respond(req, completion_token, result=await self.execute_async(req))
                except Exception as ex:
                    tracing.mark_failed(span, ex)
                    raise
        except Exception as ex:
            self._log_failure(req, ex)
            return self.respond(req, completion_token, error=ex)

    def _log_failure(self, req: pb.ActivityRequest, ex: Exception) -> None:
        self._logger.warning(
            "%s/%d: activity '%s' failed: %s: %s",
            req.orchestrationInstance.instanceId,
            req.taskId,
            req.name,
            qualified_name(type(ex)),
            ex,
        )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
