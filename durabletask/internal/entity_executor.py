"""Runs a batch of entity operations and builds the ``EntityBatchResult`` the sidecar expects.

No gRPC here: the worker feeds requests in and sends the results. Each operation is a
transaction: its state change and its outgoing actions are kept only if it returns; if it
raises, they are rolled back, the failure is reported in that operation's result, and the
batch goes on with the next operation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from durabletask import serialization
from durabletask.entities.durable_entity import DurableEntity
from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal import tracing
from durabletask.internal.registry import EntityNotRegisteredError, Registry

# Kept well below the default 64 MiB gRPC message limit, which also has to carry the
# batch's results and actions.
DEFAULT_MAXIMUM_ENTITY_STATE_SIZE = 16 * 1024 * 1024


class EntityStateTooLargeError(ValueError):
    """An operation tried to store a state larger than the configured limit."""


class EntityBatchState:
    """An entity's state and outgoing actions while a batch runs, with per-operation rollback.

    The state is held in its serialized form: a payload that no operation touched goes
    back to the sidecar byte for byte, and values read with ``get_state`` are fresh
    copies (mutating one changes nothing until it is passed to ``set_state``).
    """

    def __init__(
        self,
        serialized_state: str | None,
        data_converter: serialization.DataConverter,
        *,
        entity_id: EntityInstanceId | None = None,
        maximum_state_size: int | None = DEFAULT_MAXIMUM_ENTITY_STATE_SIZE,
    ) -> None:
        self._converter = data_converter
        self._entity_id = entity_id
        self._maximum_state_size = maximum_state_size
        self._state: str | None = serialized_state or None
        self._committed_state = self._state
        self._actions: list[pb.OperationAction] = []
        self._committed_actions = 0
        # The running operation's trace context: outgoing signals and orchestration starts carry it.
        self.trace_context: pb.TraceContext | None = None

    def get_state(self, intended_type: Any = None, default: Any = None) -> Any:
        """The decoded state, or ``default`` when there is none."""
        if self._state is None:
            return default
        value = self._converter.deserialize(self._state, intended_type)
        if isinstance(intended_type, type) and value is not None and not isinstance(value, intended_type):
            raise TypeError(
                f"the state of entity '{self._entity_id}' is a {type(value).__name__}, "
                f"not a {intended_type.__name__}"
            )
        return value

    def set_state(self, value: Any) -> None:
        """Replace the state (None deletes it); raises EntityStateTooLargeError over the limit."""
        encoded = None if value is None else self._converter.serialize(value)
        limit = self._maximum_state_size
        if encoded is not None and limit is not None and len(encoded) > limit // 4:
            size = len(encoded.encode("utf-8"))
            if size > limit:
                raise EntityStateTooLargeError(
                    f"the new state of entity '{self._entity_id}' is {size} bytes when serialized, "
                    f"over the limit of {limit} bytes"
                )
        self._state = encoded

    def add_action(self, action: pb.OperationAction) -> None:
        """Queue an outgoing signal or orchestration start of the running operation (given the
        operation's trace context as its parent when it has none)."""
        kind = action.WhichOneof("operationActionType")
        if self.trace_context is not None and kind in ("sendSignal", "startNewOrchestration"):
            target = getattr(action, kind)
            if not target.HasField("parentTraceContext"):
                target.parentTraceContext.CopyFrom(self.trace_context)
        self._actions.append(action)

    @property
    def encoded_state(self) -> str | None:
        """The serialized state as of the last committed operation."""
        return self._committed_state

    @property
    def actions(self) -> list[pb.OperationAction]:
        """The actions of the committed operations, in order."""
        return self._actions[: self._committed_actions]

    def commit(self) -> None:
        """Keep what the current operation did."""
        self._committed_state = self._state
        self._committed_actions = len(self._actions)

    def rollback(self) -> None:
        """Undo what the current operation did."""
        self._state = self._committed_state
        del self._actions[self._committed_actions:]


def to_batch_request(req: pb.EntityRequest) -> tuple[pb.EntityBatchRequest, list[pb.OperationInfo]]:
    """Turn the history-event form of an entity work item into a batch, plus where each response goes."""
    batch = pb.EntityBatchRequest(instanceId=req.instanceId)
    if req.HasField("entityState"):
        batch.entityState.CopyFrom(req.entityState)
    infos: list[pb.OperationInfo] = []
    for event in req.operationRequests:
        kind = event.WhichOneof("eventType")
        if kind == "entityOperationSignaled":
            signaled = event.entityOperationSignaled
            batch.operations.append(pb.OperationRequest(
                requestId=signaled.requestId, operation=signaled.operation,
                input=signaled.input if signaled.HasField("input") else None,
            ))
            infos.append(pb.OperationInfo(requestId=signaled.requestId))
        elif kind == "entityOperationCalled":
            called = event.entityOperationCalled
            batch.operations.append(pb.OperationRequest(
                requestId=called.requestId, operation=called.operation,
                input=called.input if called.HasField("input") else None,
            ))
            infos.append(pb.OperationInfo(
                requestId=called.requestId,
                responseDestination=pb.OrchestrationInstance(
                    instanceId=called.parentInstanceId.value,
                    executionId=called.parentExecutionId if called.HasField("parentExecutionId") else None,
                ),
            ))
    return batch, infos


_SIGNATURE_CACHE_SIZE = 1024
_takes_input_cache: dict[tuple[type, str], bool] = {}
_takes_input_lock = threading.Lock()


def _takes_input(cls: type, operation: str) -> bool:
    """Whether a class entity's method has a parameter that must be given (cached per class and name)."""
    key = (cls, operation)
    known = _takes_input_cache.get(key)
    if known is not None:
        return known
    try:
        signature = inspect.signature(getattr(cls, operation))
        params = [
            p for p in signature.parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        # Unbound: the first parameter is self.
        answer = any(p.default is inspect.Parameter.empty for p in params[1:])
    except (TypeError, ValueError):
        answer = True
    with _takes_input_lock:
        if len(_takes_input_cache) >= _SIGNATURE_CACHE_SIZE:
            _takes_input_cache.pop(next(iter(_takes_input_cache)))
        _takes_input_cache[key] = answer
    return answer


def _find_operation(cls: type, operation: str) -> str | None:
    """The method implementing ``operation``: an exact match, else a case-insensitive one."""
    if operation.startswith("_"):
        return None
    if callable(getattr(cls, operation, None)):
        return operation
    folded = operation.casefold()
    for name in dir(cls):
        if not name.startswith("_") and name.casefold() == folded and callable(getattr(cls, name, None)):
            return name
    return None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EntityExecutor:
    """Looks up entities, decodes inputs, runs operations and encodes their results."""

    def __init__(
        self,
        registry: Registry,
        data_converter: serialization.DataConverter | None = None,
        logger: logging.Logger | None = None,
        *,
        maximum_state_size: int | None = DEFAULT_MAXIMUM_ENTITY_STATE_SIZE,
        emit_trace_spans: bool = True,
        exception_properties_provider: Any = None,
    ) -> None:
        self._registry = registry
        self._properties_provider = exception_properties_provider
        self._converter = data_converter or serialization.default_converter()
        self._logger = logger or logging.getLogger("durabletask-worker")
        self._maximum_state_size = maximum_state_size
        self._emit_trace_spans = emit_trace_spans

    def execute(
        self,
        instance_id: str,
        entity_id: EntityInstanceId,
        operation: str,
        state: EntityBatchState,
        encoded_input: str | None,
        await_result: Callable[[Awaitable[Any]], Any] | None = None,
    ) -> str | None:
        """Run one operation against ``state``; returns the encoded result, raises what it raises."""
        fn = self._registry.get_entity(entity_id.entity)
        if fn is None:
            raise EntityNotRegisteredError(f"Entity function named '{entity_id.entity}' was not registered!")
        ctx = EntityContext(instance_id, operation, state, entity_id, self._converter)
        if isinstance(fn, type) and issubclass(fn, DurableEntity):
            method_name = _find_operation(fn, operation)
            if method_name is None:
                raise AttributeError(f"Entity '{entity_id}' has no operation named '{operation}'")
            value = self._decode_input(encoded_input, getattr(fn, method_name), 1)
            instance = fn()
            instance._initialize_entity_context(ctx)
            method = getattr(instance, method_name)
            if value is not None or _takes_input(fn, method_name):
                output = method(value)
            else:
                output = method()
        else:
            value = self._decode_input(encoded_input, fn, 1)
            output = fn(ctx, value)
        if inspect.isawaitable(output):
            output = await_result(output) if await_result is not None else asyncio.run(_await(output))
        return self._converter.serialize(output)

    def _decode_input(self, encoded: str | None, fn: Any, position: int) -> Any:
        if not encoded:
            return None
        target = serialization.input_type_of(fn, position)
        if target is not None and not self._converter.can_reconstruct(target):
            target = None
        return self._converter.deserialize(encoded, target)

    def run_batch(
        self,
        req: pb.EntityBatchRequest | pb.EntityRequest,
        completion_token: str,
        await_result: Callable[[Awaitable[Any]], Any] | None = None,
    ) -> pb.EntityBatchResult:
        """Run every operation of a work item in order; never raises for an operation's failure."""
        infos: list[pb.OperationInfo] = []
        if isinstance(req, pb.EntityRequest):
            req, infos = to_batch_request(req)
        instance_id = req.instanceId
        parse_error: Exception | None = None
        entity_id: EntityInstanceId | None = None
        try:
            entity_id = EntityInstanceId.parse(instance_id)
        except (TypeError, ValueError) as ex:
            parse_error = ex
        state = EntityBatchState(
            req.entityState.value if req.HasField("entityState") else None,
            self._converter,
            entity_id=entity_id,
            maximum_state_size=self._maximum_state_size,
        )
        results: list[pb.OperationResult] = []
        for op in req.operations:
            started = _now()
            entity_name = entity_id.entity if entity_id is not None else instance_id
            parent = op.traceContext if op.HasField("traceContext") else None
            try:
                with tracing.running_entity_operation(
                    instance_id, entity_name, op.operation, parent, self._emit_trace_spans
                ) as span:
                    # The operation's span (or, without one, its parent) is the parent of what it sends.
                    state.trace_context = tracing.current_trace_context() or parent
                    try:
                        if entity_id is None:
                            raise ValueError(f"cannot run operations on '{instance_id}': {parse_error}")
                        encoded = self.execute(
                            instance_id, entity_id, op.operation, state,
                            op.input.value if op.HasField("input") else None, await_result,
                        )
                    except Exception as ex:
                        tracing.mark_failed(span, ex)
                        raise
            except Exception as ex:
                state.rollback()
                self._logger.warning(
                    "%s: operation '%s' failed: %s: %s",
                    instance_id, op.operation, ph.qualified_name(type(ex)), ex,
                )
                results.append(pb.OperationResult(failure=pb.OperationResultFailure(
                    failureDetails=ph.new_failure_details(
                        ex, properties_provider=self._properties_provider, logger=self._logger
                    ),
                    startTimeUtc=ph.new_timestamp(started),
                    endTimeUtc=ph.new_timestamp(_now()),
                )))
                continue
            state.commit()
            results.append(pb.OperationResult(success=pb.OperationResultSuccess(
                result=ph.string_value(encoded),
                startTimeUtc=ph.new_timestamp(started),
                endTimeUtc=ph.new_timestamp(_now()),
            )))
        self._logger.debug("%s: ran a batch of %d operation(s)", instance_id, len(results))
        return pb.EntityBatchResult(
            results=results,
            actions=state.actions,
            entityState=ph.string_value(state.encoded_state),
            completionToken=completion_token,
            operationInfos=infos,
        )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
