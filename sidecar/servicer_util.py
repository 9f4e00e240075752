"""Request validation, error mapping and response building for the sidecar's gRPC servicer."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import from_timestamp, to_timestamp
from sidecar.engine_validate import (
    MAX_TEXT_LENGTH,
    text_problem,
    timestamp_problem,
    timestamps_problem,
    trace_context_problem,
)
from sidecar.model import InstanceSnapshot, InvalidTurnError, MismatchedResultError
from sidecar.quoting import bounded_message, quoted
from sidecar.store.base import (
    InstanceExistsError,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    StoreValueError,
)

log = logging.getLogger("durabletask-sidecar")

MAX_INSTANCE_ID_LENGTH = MAX_TEXT_LENGTH

F = TypeVar("F", bound=Callable[..., Any])

# What a sync grpc server answers a request whose bytes do not parse (INTERNAL); the sidecar answers the same.
UNDECODABLE_DETAILS = "Exception deserializing request!"


class BadRequest(Exception):
    """The request is malformed. Maps to INVALID_ARGUMENT."""


class RpcFailure(Exception):
    """Fail the RPC with this status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_code_for(exc: Exception) -> grpc.StatusCode:
    """The gRPC status that reports ``exc`` to the caller."""
    if isinstance(exc, RpcFailure):
        return exc.code
    if isinstance(exc, (BadRequest, InvalidTurnError, MismatchedResultError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, (InstanceNotFoundError, LeaseNotFoundError)):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InstanceExistsError):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, InvalidStateError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, StoreUnavailableError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, StoreFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, StoreValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def error_status(exc: Exception, rpc: str) -> tuple[grpc.StatusCode, str]:
    """The status and message that report ``exc``, raised by RPC ``rpc``; unexpected errors are logged.

    The message is bounded in length (see :mod:`sidecar.quoting`).
    """
    if isinstance(exc, (BadRequest, RpcFailure, InvalidTurnError, MismatchedResultError, StoreError)):
        return status_code_for(exc), bounded_message(str(exc))
    log.error("%s failed", rpc, exc_info=exc)
    return grpc.StatusCode.INTERNAL, bounded_message(f"{rpc} failed: {type(exc).__name__}: {exc}")


# Worker results: their timestamps are checked where the result is applied, so that a refused
# result releases its work item (see sidecar.engine_validate and sidecar.entity_batch).
_CHECKED_WHEN_APPLIED = frozenset({"CompleteOrchestratorTask", "CompleteActivityTask", "CompleteEntityTask"})


def mapped_errors(fn: F) -> F:
    """Turn store/validation errors of a unary RPC into gRPC statuses with their messages.

    Before the RPC runs, every Timestamp in a client's request is checked (BadRequest naming
    the first one out of range), whatever the RPC and field.
    """
    check_timestamps = fn.__name__ not in _CHECKED_WHEN_APPLIED

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if check_timestamps:
                check_request_timestamps(request)
            return fn(self, request, context)
        except Exception as exc:
            context.abort(*error_status(exc, fn.__name__))

    return wrapper  # type: ignore[return-value]


def check_request_timestamps(request: Any) -> None:
    """Raise BadRequest naming the first Timestamp of ``request`` that is out of range."""
    problem = timestamps_problem(request) if isinstance(request, Message) else None
    if problem is not None:
        raise BadRequest(problem)


def check_trace_context(message: Any, field: str = "parentTraceContext") -> pb.TraceContext | None:
    """An optional carried trace context: None when unset; else bounded, without control characters."""
    if not message.HasField(field):
        return None
    ctx: pb.TraceContext = getattr(message, field)
    problem = trace_context_problem(ctx, field)
    if problem is not None:
        raise BadRequest(problem)
    return ctx


def check_instance_id(instance_id: str, field: str = "instanceId") -> str:
    """An instance ID must be non-empty, at most 256 characters, without control characters."""
    if not instance_id:
        raise BadRequest(f"{field} is required")
    _check_text(instance_id, field, MAX_INSTANCE_ID_LENGTH)
    return instance_id


MAX_NAME_LENGTH = MAX_TEXT_LENGTH


def check_name(name: str, field: str, what: str) -> str:
    """A name (orchestrator, event, operation) must be non-blank, at most 256 characters, no control characters."""
    if not name.strip():
        raise BadRequest(f"{field} is required: {what}")
    _check_text(name, field, MAX_NAME_LENGTH)
    return name


def check_version(message: Any, field: str = "version") -> str | None:
    """An optional version field: None when unset; else at most 256 characters, no control characters."""
    if not message.HasField(field):
        return None
    version: str = getattr(message, field).value
    _check_text(version, field, MAX_NAME_LENGTH)
    return version


def _check_text(value: str, field: str, max_length: int) -> None:
    problem = text_problem(value, field, max_length)
    if problem is not None:
        raise BadRequest(problem)


def check_execution_id(message: Any, field: str = "executionId") -> str | None:
    """An optional execution ID (StringValue): None when unset or empty; else at most 256 characters, no control characters."""
    if not message.HasField(field):
        return None
    execution_id: str = getattr(message, field).value
    if execution_id:
        _check_text(execution_id, field, MAX_INSTANCE_ID_LENGTH)
    return execution_id or None


def check_orchestration_id(instance_id: str) -> str:
    """An ID for a new orchestration: a valid instance ID outside the entity namespace ('@name@key')."""
    check_instance_id(instance_id)
    if instance_id.startswith("@"):
        raise BadRequest(
            f"instanceId {quoted(instance_id)} starts with '@', which is reserved for entity IDs (@name@key)"
        )
    return instance_id


def check_token(token: str) -> str:
    """A completion token must be non-empty (an unknown one is NOT_FOUND, from the dispatcher)."""
    if not token:
        raise BadRequest("completionToken is required")
    return token


def optional_time(message: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when unset; BadRequest naming the field when out of range."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    problem = timestamp_problem(value, field)
    if problem is not None:
        raise BadRequest(problem)
    return from_timestamp(value)


def optional_string(message: Any, field: str) -> str | None:
    """A StringValue field's value, or None when unset."""
    return getattr(message, field).value if message.HasField(field) else None


def check_statuses(statuses: Any, field: str) -> list[int]:
    """Orchestration status values of a filter; BadRequest naming an unknown one."""
    values = list(statuses)
    for value in values:
        if value not in pb.OrchestrationStatus.values():
            raise BadRequest(f"{field} contains an unknown orchestration status ({value})")
    return values


# Beyond the protocol: InstanceQuery has no version field, so our client sends the versions it
# filters on in this metadata header (a JSON list of strings; "" means "no version").
QUERY_VERSIONS_HEADER = "x-durabletask-query-versions"


def query_versions(metadata: Any) -> list[str]:
    """The versions named by the query-versions header of a call, or [] (no version filter)."""
    for key, value in metadata or ():
        if key != QUERY_VERSIONS_HEADER:
            continue
        try:
            versions = json.loads(value)
        except ValueError:
            versions = None
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise BadRequest(f"metadata header {QUERY_VERSIONS_HEADER} must be a JSON list of strings, not {quoted(value)}")
        return versions
    return []


def check_page_size(value: int, field: str, default: int) -> int:
    """A page size: ``default`` for 0; BadRequest when negative."""
    if value < 0:
        raise BadRequest(f"{field} must not be negative (got {value})")
    return value or default


WORK_ITEM_LIMITS = (
    "maxConcurrentOrchestrationWorkItems",
    "maxConcurrentActivityWorkItems",
    "maxConcurrentEntityWorkItems",
)


def check_work_items_request(request: pb.GetWorkItemsRequest) -> None:
    """A GetWorkItems request's concurrency limits must not be negative (0 picks the default)."""
    for field in WORK_ITEM_LIMITS:
        value = getattr(request, field)
        if value < 0:
            raise BadRequest(f"{field} must not be negative (got {value}; 0 picks the sidecar's default)")


async def check_stream_request(request: pb.GetWorkItemsRequest, context: grpc.aio.ServicerContext, rpc: str) -> None:
    """On the event loop: refuse a work-item stream request that cannot be served (INVALID_ARGUMENT naming why)."""
    try:
        check_work_items_request(request)
    except Exception as exc:
        await context.abort(*error_status(exc, rpc))


def to_state(inst: InstanceSnapshot, include_payloads: bool) -> pb.OrchestrationState:
    """The wire form of an instance row; input and output only when asked for."""
    state = pb.OrchestrationState(
        instanceId=inst.instance_id,
        name=inst.name,
        orchestrationStatus=inst.status,  # type: ignore[arg-type]
        createdTimestamp=to_timestamp(inst.created_at),
        lastUpdatedTimestamp=to_timestamp(inst.last_updated_at),
        tags=inst.tags,
    )
    state.executionId.value = inst.execution_id
    if inst.version is not None:
        state.version.value = inst.version
    if inst.scheduled_start_at is not None:
        state.scheduledStartTimestamp.CopyFrom(to_timestamp(inst.scheduled_start_at))
    if inst.completed_at is not None:
        state.completedTimestamp.CopyFrom(to_timestamp(inst.completed_at))
    if inst.parent is not None:
        state.parentInstanceId.value = inst.parent.instance_id
    if inst.custom_status is not None:
        state.customStatus.value = inst.custom_status
    if inst.failure is not None:
        state.failureDetails.CopyFrom(inst.failure)
    if include_payloads:
        if inst.input is not None:
            state.input.value = inst.input
        if inst.output is not None:
            state.output.value = inst.output
    return state
