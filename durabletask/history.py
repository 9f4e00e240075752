"""Orchestration history as plain dataclasses.

``TaskHubGrpcClient.get_orchestration_history`` returns a list of these: one
class per kind of history event, each carrying the common ``event_id`` and
``timestamp`` (aware UTC) plus its own fields. Payload fields (``input``,
``result``, ``output``...) are the raw serialized strings. ``to_dict()`` gives
a JSON-friendly dictionary (datetimes as ISO 8601 strings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.proto_helpers import failure_details_from_pb

if TYPE_CHECKING:
    from durabletask.task import FailureDetails

__all__ = [
    "ContinueAsNewEvent",
    "EntityLockGrantedEvent",
    "EntityLockRequestedEvent",
    "EntityOperationCalledEvent",
    "EntityOperationCompletedEvent",
    "EntityOperationFailedEvent",
    "EntityOperationSignaledEvent",
    "EntityUnlockSentEvent",
    "EventRaisedEvent",
    "EventSentEvent",
    "ExecutionCompletedEvent",
    "ExecutionResumedEvent",
    "ExecutionRewoundEvent",
    "ExecutionStartedEvent",
    "ExecutionSuspendedEvent",
    "ExecutionTerminatedEvent",
    "GenericEvent",
    "HistoryEvent",
    "HistoryStateEvent",
    "OrchestrationInstance",
    "OrchestratorCompletedEvent",
    "OrchestratorStartedEvent",
    "ParentInstanceInfo",
    "SubOrchestrationInstanceCompletedEvent",
    "SubOrchestrationInstanceCreatedEvent",
    "SubOrchestrationInstanceFailedEvent",
    "TaskCompletedEvent",
    "TaskFailedEvent",
    "TaskScheduledEvent",
    "TimerCreatedEvent",
    "TimerFiredEvent",
    "TraceContext",
    "from_protobuf",
    "to_dict",
]


@dataclass(frozen=True, slots=True)
class OrchestrationInstance:
    """An instance ID and, when known, the execution ID."""

    instance_id: str
    execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParentInstanceInfo:
    """The orchestration that started a sub-orchestration."""

    task_scheduled_id: int
    name: str | None = None
    version: str | None = None
    orchestration_instance: OrchestrationInstance | None = None


@dataclass(frozen=True, slots=True)
class TraceContext:
    """W3C trace propagation data."""

    trace_parent: str
    span_id: str
    trace_state: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """Base of every history event: its sequence number and when it happened."""

    event_id: int
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        """This event as a JSON-friendly dict (nested objects as dicts, datetimes as ISO strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class ExecutionStartedEvent(HistoryEvent):
    """First event of an execution: what runs, with which input, started by whom."""

    name: str
    version: str | None = None
    input: str | None = None
    orchestration_instance: OrchestrationInstance | None = None
    parent_instance: ParentInstanceInfo | None = None
    scheduled_start_timestamp: datetime | None = None
    parent_trace_context: TraceContext | None = None
    orchestration_span_id: str | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ExecutionCompletedEvent(HistoryEvent):
    """The execution finished; ``orchestration_status`` is the wire status value."""

    orchestration_status: int
    result: str | None = None
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class ExecutionTerminatedEvent(HistoryEvent):
    """A terminate request reached the instance."""

    input: str | None = None
    recurse: bool = False


@dataclass(frozen=True, slots=True)
class TaskScheduledEvent(HistoryEvent):
    """The orchestration scheduled an activity."""

    name: str
    version: str | None = None
    input: str | None = None
    parent_trace_context: TraceContext | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TaskCompletedEvent(HistoryEvent):
    """An activity returned a result."""

    task_scheduled_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFailedEvent(HistoryEvent):
    """An activity failed."""

    task_scheduled_id: int
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceCreatedEvent(HistoryEvent):
    """The orchestration started a child orchestration."""

    instance_id: str
    name: str
    version: str | None = None
    input: str | None = None
    parent_trace_context: TraceContext | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceCompletedEvent(HistoryEvent):
    """A child orchestration completed."""

    task_scheduled_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceFailedEvent(HistoryEvent):
    """A child orchestration failed."""

    task_scheduled_id: int
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class TimerCreatedEvent(HistoryEvent):
    """The orchestration created a durable timer."""

    fire_at: datetime


@dataclass(frozen=True, slots=True)
class TimerFiredEvent(HistoryEvent):
    """A durable timer became due; ``timer_id`` is the timer's creation event ID."""

    fire_at: datetime
    timer_id: int


@dataclass(frozen=True, slots=True)
class OrchestratorStartedEvent(HistoryEvent):
    """Start of an orchestrator turn; its timestamp is the turn's current time."""


@dataclass(frozen=True, slots=True)
class OrchestratorCompletedEvent(HistoryEvent):
    """End of an orchestrator turn."""


@dataclass(frozen=True, slots=True)
class EventSentEvent(HistoryEvent):
    """The orchestration sent an event to another instance."""

    instance_id: str
    name: str
    input: str | None = None


@dataclass(frozen=True, slots=True)
class EventRaisedEvent(HistoryEvent):
    """An external event arrived."""

    name: str
    input: str | None = None


@dataclass(frozen=True, slots=True)
class GenericEvent(HistoryEvent):
    """A free-form event."""

    data: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryStateEvent(HistoryEvent):
    """A snapshot of instance state (the protobuf state as a dict)."""

    orchestration_state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ContinueAsNewEvent(HistoryEvent):
    """The execution restarted itself with new input."""

    input: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionSuspendedEvent(HistoryEvent):
    """The instance was suspended; ``input`` is the reason."""

    input: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResumedEvent(HistoryEvent):
    """The instance was resumed; ``input`` is the reason."""

    input: str | None = None


@dataclass(frozen=True, slots=True)
class EntityOperationSignaledEvent(HistoryEvent):
    """A one-way entity operation was sent."""

    request_id: str
    operation: str
    scheduled_time: datetime | None = None
    input: str | None = None
    target_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntityOperationCalledEvent(HistoryEvent):
    """A two-way entity operation was sent; a response is expected."""

    request_id: str
    operation: str
    scheduled_time: datetime | None = None
    input: str | None = None
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    target_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntityOperationCompletedEvent(HistoryEvent):
    """A called entity operation returned."""

    request_id: str
    output: str | None = None


@dataclass(frozen=True, slots=True)
class EntityOperationFailedEvent(HistoryEvent):
    """A called entity operation failed."""

    request_id: str
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class EntityLockRequestedEvent(HistoryEvent):
    """The orchestration asked for a set of entity locks."""

    critical_section_id: str
    lock_set: list[str]
    position: int
    parent_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntityLockGrantedEvent(HistoryEvent):
    """All locks of a critical section were granted."""

    critical_section_id: str


@dataclass(frozen=True, slots=True)
class EntityUnlockSentEvent(HistoryEvent):
    """A lock held by a critical section was released."""

    critical_section_id: str
    parent_instance_id: str | None = None
    target_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRewoundEvent(HistoryEvent):
    """The instance was rewound to retry its failed work."""

    reason: str | None = None
    parent_execution_id: str | None = None
    instance_id: str | None = None
    parent_trace_context: TraceContext | None = None
    name: str | None = None
    version: str | None = None
    input: str | None = None
    parent_instance: ParentInstanceInfo | None = None
    tags: dict[str, str] | None = None


def to_dict(event: HistoryEvent) -> dict[str, Any]:
    """``event.to_dict()``."""
    return event.to_dict()


def from_protobuf(event: pb.HistoryEvent) -> HistoryEvent:
    """Convert a wire ``HistoryEvent`` into its dataclass.

    Raises ValueError when no event kind is set.
    """
    kind = event.WhichOneof("eventType")
    if kind is None:
        raise ValueError("history event has no event kind set")
    convert = _CONVERTERS.get(kind)
    if convert is None:
        raise ValueError(f"unsupported history event kind: {kind}")
    return convert(event.eventId, _time(event.timestamp), getattr(event, kind))


_from_protobuf = from_protobuf


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.metadata.get("to_dict", True)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _time(ts: Any) -> datetime:
    return ts.ToDatetime(tzinfo=timezone.utc)


def _opt_str(msg: Message, name: str) -> str | None:
    return getattr(msg, name).value if msg.HasField(name) else None


def _opt_time(msg: Message, name: str) -> datetime | None:
    return _time(getattr(msg, name)) if msg.HasField(name) else None


def _tags(tags: Any) -> dict[str, str] | None:
    return dict(tags) if tags else None


def _instance(msg: pb.OrchestrationInstance) -> OrchestrationInstance:
    return OrchestrationInstance(instance_id=msg.instanceId, execution_id=_opt_str(msg, "executionId"))


def _opt_instance(msg: Message, name: str) -> OrchestrationInstance | None:
    return _instance(getattr(msg, name)) if msg.HasField(name) else None


def _opt_parent(msg: Message, name: str) -> ParentInstanceInfo | None:
    if not msg.HasField(name):
        return None
    parent: pb.ParentInstanceInfo = getattr(msg, name)
    return ParentInstanceInfo(
        task_scheduled_id=parent.taskScheduledId,
        name=_opt_str(parent, "name"),
        version=_opt_str(parent, "version"),
        orchestration_instance=_opt_instance(parent, "orchestrationInstance"),
    )


def _opt_trace(msg: Message, name: str) -> TraceContext | None:
    if not msg.HasField(name):
        return None
    trace: pb.TraceContext = getattr(msg, name)
    return TraceContext(
        trace_parent=trace.traceParent,
        span_id=trace.spanID,
        trace_state=_opt_str(trace, "traceState"),
    )


def _opt_failure(msg: Message, name: str) -> FailureDetails | None:
    return failure_details_from_pb(getattr(msg, name)) if msg.HasField(name) else None


_Converter = Callable[[int, datetime, Any], HistoryEvent]

_CONVERTERS: dict[str, _Converter] = {
    "executionStarted": lambda eid, ts, e: ExecutionStartedEvent(
        eid, ts,
        name=e.name,
        version=_opt_str(e, "version"),
        input=_opt_str(e, "input"),
        orchestration_instance=_opt_instance(e, "orchestrationInstance"),
        parent_instance=_opt_parent(e, "parentInstance"),
        scheduled_start_timestamp=_opt_time(e, "scheduledStartTimestamp"),
        parent_trace_context=_opt_trace(e, "parentTraceContext"),
        orchestration_span_id=_opt_str(e, "orchestrationSpanID"),
        tags=_tags(e.tags),
    ),
    "executionCompleted": lambda eid, ts, e: ExecutionCompletedEvent(
        eid, ts,
        orchestration_status=int(e.orchestrationStatus),
        result=_opt_str(e, "result"),
        failure_details=_opt_failure(e, "failureDetails"),
    ),
    "executionTerminated": lambda eid, ts, e: ExecutionTerminatedEvent(
        eid, ts, input=_opt_str(e, "input"), recurse=e.recurse,
    ),
    "taskScheduled": lambda eid, ts, e: TaskScheduledEvent(
        eid, ts,
        name=e.name,
        version=_opt_str(e, "version"),
        input=_opt_str(e, "input"),
        parent_trace_context=_opt_trace(e, "parentTraceContext"),
        tags=_tags(e.tags),
    ),
    "taskCompleted": lambda eid, ts, e: TaskCompletedEvent(
        eid, ts, task_scheduled_id=e.taskScheduledId, result=_opt_str(e, "result"),
    ),
    "taskFailed": lambda eid, ts, e: TaskFailedEvent(
        eid, ts, task_scheduled_id=e.taskScheduledId, failure_details=_opt_failure(e, "failureDetails"),
    ),
    "subOrchestrationInstanceCreated": lambda eid, ts, e: SubOrchestrationInstanceCreatedEvent(
        eid, ts,
        instance_id=e.instanceId,
        name=e.name,
        version=_opt_str(e, "version"),
        input=_opt_str(e, "input"),
        parent_trace_context=_opt_trace(e, "parentTraceContext"),
        tags=_tags(e.tags),
    ),
    "subOrchestrationInstanceCompleted": lambda eid, ts, e: SubOrchestrationInstanceCompletedEvent(
        eid, ts, task_scheduled_id=e.taskScheduledId, result=_opt_str(e, "result"),
    ),
    "subOrchestrationInstanceFailed": lambda eid, ts, e: SubOrchestrationInstanceFailedEvent(
        eid, ts, task_scheduled_id=e.taskScheduledId, failure_details=_opt_failure(e, "failureDetails"),
    ),
    "timerCreated": lambda eid, ts, e: TimerCreatedEvent(eid, ts, fire_at=_time(e.fireAt)),
    "timerFired": lambda eid, ts, e: TimerFiredEvent(eid, ts, fire_at=_time(e.fireAt), timer_id=e.timerId),
    "orchestratorStarted": lambda eid, ts, e: OrchestratorStartedEvent(eid, ts),
    "orchestratorCompleted": lambda eid, ts, e: OrchestratorCompletedEvent(eid, ts),
    "eventSent": lambda eid, ts, e: EventSentEvent(
        eid, ts, instance_id=e.instanceId, name=e.name, input=_opt_str(e, "input"),
    ),
    "eventRaised": lambda eid, ts, e: EventRaisedEvent(eid, ts, name=e.name, input=_opt_str(e, "input")),
    "genericEvent": lambda eid, ts, e: GenericEvent(eid, ts, data=_opt_str(e, "data")),
    "historyState": lambda eid, ts, e: HistoryStateEvent(
        eid, ts,
        orchestration_state=json_format.MessageToDict(e.orchestrationState, preserving_proto_field_name=True),
    ),
    "continueAsNew": lambda eid, ts, e: ContinueAsNewEvent(eid, ts, input=_opt_str(e, "input")),
    "executionSuspended": lambda eid, ts, e: ExecutionSuspendedEvent(eid, ts, input=_opt_str(e, "input")),
    "executionResumed": lambda eid, ts, e: ExecutionResumedEvent(eid, ts, input=_opt_str(e, "input")),
    "entityOperationSignaled": lambda eid, ts, e: EntityOperationSignaledEvent(
        eid, ts,
        request_id=e.requestId,
        operation=e.operation,
        scheduled_time=_opt_time(e, "scheduledTime"),
        input=_opt_str(e, "input"),
        target_instance_id=_opt_str(e, "targetInstanceId"),
    ),
    "entityOperationCalled": lambda eid, ts, e: EntityOperationCalledEvent(
        eid, ts,
        request_id=e.requestId,
        operation=e.operation,
        scheduled_time=_opt_time(e, "scheduledTime"),
        input=_opt_str(e, "input"),
        parent_instance_id=_opt_str(e, "parentInstanceId"),
        parent_execution_id=_opt_str(e, "parentExecutionId"),
        target_instance_id=_opt_str(e, "targetInstanceId"),
    ),
    "entityOperationCompleted": lambda eid, ts, e: EntityOperationCompletedEvent(
        eid, ts, request_id=e.requestId, output=_opt_str(e, "output"),
    ),
    "entityOperationFailed": lambda eid, ts, e: EntityOperationFailedEvent(
        eid, ts, request_id=e.requestId, failure_details=_opt_failure(e, "failureDetails"),
    ),
    "entityLockRequested": lambda eid, ts, e: EntityLockRequestedEvent(
        eid, ts,
        critical_section_id=e.criticalSectionId,
        lock_set=list(e.lockSet),
        position=e.position,
        parent_instance_id=_opt_str(e, "parentInstanceId"),
    ),
    "entityLockGranted": lambda eid, ts, e: EntityLockGrantedEvent(
        eid, ts, critical_section_id=e.criticalSectionId,
    ),
    "entityUnlockSent": lambda eid, ts, e: EntityUnlockSentEvent(
        eid, ts,
        critical_section_id=e.criticalSectionId,
        parent_instance_id=_opt_str(e, "parentInstanceId"),
        target_instance_id=_opt_str(e, "targetInstanceId"),
    ),
    "executionRewound": lambda eid, ts, e: ExecutionRewoundEvent(
        eid, ts,
        reason=_opt_str(e, "reason"),
        parent_execution_id=_opt_str(e, "parentExecutionId"),
        instance_id=_opt_str(e, "instanceId"),
        parent_trace_context=_opt_trace(e, "parentTraceContext"),
        name=_opt_str(e, "name"),
        version=_opt_str(e, "version"),
        input=_opt_str(e, "input"),
        parent_instance=_opt_parent(e, "parentInstance"),
        tags=_tags(e.tags),
    ),
}
