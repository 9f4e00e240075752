"""Validation of a worker's orchestrator response before the engine applies anything."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import status_name
from sidecar.entity_scheduler import EntityIdError, parse_entity_id
from sidecar.model import InstanceSnapshot, InvalidTurnError
from sidecar.quoting import quoted

ACTION_KIND = "orchestratorActionType"
ENTITY_MESSAGE_KIND = "EntityMessageType"

# Statuses a completeOrchestration action may carry.
VALID_COMPLETION_STATUSES: frozenset[int] = frozenset({
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
})

# The id official workers give the completeOrchestration of an orchestration they fail outside its
# code's own actions (the code threw, or the worker refuses its version): the one negative action id
# accepted, and only on completeOrchestration.
FAILURE_ACTION_ID = -1

# Names, instance IDs and versions: at most this many characters.
MAX_TEXT_LENGTH = 256


def text_problem(value: str, field: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """What makes ``value`` unacceptable as a name, ID or version (too long, a control character), or None."""
    if len(value) > max_length:
        return f"{field} is {len(value)} characters long; at most {max_length} are allowed"
    for ch in value:
        if ord(ch) < 32 or ord(ch) == 127:
            return f"{field} contains a control character ({ord(ch):#04x})"
    return None


# Trace contexts are carried, not read, but kept bounded: a W3C traceparent is 55 characters,
# a tracestate at most 32 members; a span ID (hex) 16.
MAX_TRACEPARENT_LENGTH = 256
MAX_TRACESTATE_LENGTH = 8192
MAX_SPAN_ID_LENGTH = 64


def trace_context_problem(ctx: pb.TraceContext, field: str) -> str | None:
    """What makes a carried trace context unacceptable (too long, a control character), or None."""
    return (
        text_problem(ctx.traceParent, f"{field}.traceParent", MAX_TRACEPARENT_LENGTH)
        or text_problem(ctx.spanID, f"{field}.spanID", MAX_SPAN_ID_LENGTH)
        or text_problem(ctx.traceState.value, f"{field}.traceState", MAX_TRACESTATE_LENGTH)
    )


def _check_trace_context(message: pb.ScheduleTaskAction | pb.CreateSubOrchestrationAction, prefix: str) -> None:
    if message.HasField("parentTraceContext"):
        problem = trace_context_problem(message.parentTraceContext, "parentTraceContext")
        if problem is not None:
            raise InvalidTurnError(f"{prefix}: {problem}")


# What a protobuf Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name


def timestamp_problem(ts: timestamp_pb2.Timestamp, field: str) -> str | None:
    """What makes ``ts`` an invalid Timestamp (seconds outside years 1..9999, nanos outside 0..999,999,999), or None."""
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        return (
            f"{field} is out of range: seconds {ts.seconds} is not between {MIN_TIMESTAMP_SECONDS} "
            f"(0001-01-01T00:00:00Z) and {MAX_TIMESTAMP_SECONDS} (9999-12-31T23:59:59Z)"
        )
    if not 0 <= ts.nanos <= 999_999_999:
        return f"{field} is out of range: nanos {ts.nanos} is not between 0 and 999999999"
    return None


# Message type -> its fields that hold a Timestamp, directly or further down (computed once per type).
_TIMESTAMP_FIELDS: dict[str, tuple[FieldDescriptor, ...]] = {}


def _timestamp_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    cached = _TIMESTAMP_FIELDS.get(descriptor.full_name)
    if cached is not None:
        return cached
    # Every message type reachable from this one, then which of them reach a Timestamp (to a fixed point).
    reachable: dict[str, Descriptor] = {}
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in reachable or current.full_name == _TIMESTAMP:
            continue
        reachable[current.full_name] = current
        pending.extend(f.message_type for f in current.fields if f.message_type is not None)
    holding: set[str] = {_TIMESTAMP}
    changed = True
    while changed:
        changed = False
        for name, current in reachable.items():
            if name not in holding and any(
                f.message_type is not None and f.message_type.full_name in holding for f in current.fields
            ):
                holding.add(name)
                changed = True
    for name, current in reachable.items():
        _TIMESTAMP_FIELDS[name] = tuple(
            f for f in current.fields if f.message_type is not None and f.message_type.full_name in holding
        )
    return _TIMESTAMP_FIELDS[descriptor.full_name]


def timestamps_problem(message: Message, path: str = "") -> str | None:
    """The first invalid Timestamp anywhere in ``message`` (named by its path, e.g. ``actions[0].createTimer.fireAt``), or None."""
    for field in _timestamp_fields(message.DESCRIPTOR):
        name = f"{path}{field.name}"
        value: Any = getattr(message, field.name)
        if field.message_type.GetOptions().map_entry:
            items = [(f"{name}[{key!r}]", item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(f"{name}[{index}]", item) for index, item in enumerate(value)]
        elif message.HasField(field.name):
            items = [(name, value)]
        else:
            continue
        for item_name, item in items:
            if not isinstance(item, Message):
                continue
            if item.DESCRIPTOR.full_name == _TIMESTAMP:
                problem = timestamp_problem(item, item_name)  # type: ignore[arg-type]
            else:
                problem = timestamps_problem(item, f"{item_name}.")
            if problem is not None:
                return problem
    return None


def check_version(message: Message, field: str, prefix: str) -> None:
    """Raise InvalidTurnError when the optional version field ``field`` of ``message`` is set and unacceptable."""
    if not message.HasField(field):
        return
    problem = text_problem(getattr(message, field).value, field)
    if problem is not None:
        raise InvalidTurnError(f"{prefix}: {problem}")


def is_rewind_response(response: pb.OrchestratorResponse) -> bool:
    """True when the response rewinds the instance (its only action is rewindOrchestration)."""
    return len(response.actions) == 1 and response.actions[0].WhichOneof(ACTION_KIND) == "rewindOrchestration"


def validate_turn(instance: InstanceSnapshot, response: pb.OrchestratorResponse) -> None:
    """Raise InvalidTurnError naming the first problem found in ``response``; return None when it can be applied."""
    rewind = is_rewind_response(response)
    # A failed instance accepts a rewind turn even if the store has not reset its status yet.
    if instance.is_terminal and not (rewind and instance.status == pb.ORCHESTRATION_STATUS_FAILED):
        raise InvalidTurnError(f"instance '{instance.instance_id}' is already {status_name(instance.status)}")
    # An empty instanceId is tolerated: the completion token already identifies the instance.
    if response.instanceId and response.instanceId != instance.instance_id:
        raise InvalidTurnError(
            f"response.instanceId {quoted(response.instanceId)} does not match instance {quoted(instance.instance_id)}"
        )
    problem = timestamps_problem(response)
    if problem is None and response.HasField("orchestrationTraceContext"):
        span_id = response.orchestrationTraceContext.spanID.value
        problem = text_problem(span_id, "orchestrationTraceContext.spanID", MAX_SPAN_ID_LENGTH)
    if problem is not None:
        raise InvalidTurnError(problem)
    seen_ids: set[int] = set()
    completions = 0
    for index, action in enumerate(response.actions):
        kind = action.WhichOneof(ACTION_KIND)
        if kind is None:
            raise InvalidTurnError(f"action {action.id} (index {index}) has no known action kind set")
        if kind == "rewindOrchestration":
            if not rewind:
                raise InvalidTurnError(f"action {action.id}: rewindOrchestration must be the only action of a turn")
            continue
        if action.id < 0 and not (action.id == FAILURE_ACTION_ID and kind == "completeOrchestration"):
            raise InvalidTurnError(f"action id {action.id} ({kind}) is negative")
        if action.id in seen_ids:
            raise InvalidTurnError(f"duplicate action id {action.id} ({kind})")
        seen_ids.add(action.id)
        if kind == "completeOrchestration":
            completions += 1
            if completions > 1:
                raise InvalidTurnError(f"action {action.id}: more than one completeOrchestration in a turn")
        _validate_action_fields(action, kind)


def _validate_action_fields(action: pb.OrchestratorAction, kind: str) -> None:
    prefix = f"action {action.id} ({kind})"
    if kind == "scheduleTask":
        if not action.scheduleTask.name:
            raise InvalidTurnError(f"{prefix}: scheduleTask has no name")
        check_version(action.scheduleTask, "version", prefix)
        _check_trace_context(action.scheduleTask, prefix)
    elif kind == "createSubOrchestration":
        sub = action.createSubOrchestration
        if not sub.name:
            raise InvalidTurnError(f"{prefix}: createSubOrchestration has no name")
        check_version(sub, "version", prefix)
        _check_trace_context(sub, prefix)
        if sub.instanceId:  # empty: the sidecar makes one up
            _check_id(sub.instanceId, "createSubOrchestration.instanceId", prefix)
            if sub.instanceId.startswith("@"):
                raise InvalidTurnError(
                    f"{prefix}: createSubOrchestration.instanceId {quoted(sub.instanceId)} starts with '@', "
                    "which is reserved for entity IDs (@name@key)"
                )
    elif kind == "createTimer":
        if not action.createTimer.HasField("fireAt"):
            raise InvalidTurnError(f"{prefix}: createTimer has no fireAt")
    elif kind == "sendEvent":
        send = action.sendEvent
        if not send.instance.instanceId:
            raise InvalidTurnError(f"{prefix}: sendEvent has no target instance")
        _check_id(send.instance.instanceId, "sendEvent.instance.instanceId", prefix)
        if send.instance.HasField("executionId"):
            _check_id(send.instance.executionId.value, "sendEvent.instance.executionId", prefix)
        if not send.name:
            raise InvalidTurnError(f"{prefix}: sendEvent has no event name")
    elif kind == "terminateOrchestration":
        if not action.terminateOrchestration.instanceId:
            raise InvalidTurnError(f"{prefix}: terminateOrchestration has no instanceId")
        _check_id(action.terminateOrchestration.instanceId, "terminateOrchestration.instanceId", prefix)
    elif kind == "completeOrchestration":
        status = action.completeOrchestration.orchestrationStatus
        if status not in VALID_COMPLETION_STATUSES:
            raise InvalidTurnError(
                f"{prefix}: completeOrchestration has invalid status {status_name(status)}"
            )
        check_version(action.completeOrchestration, "newVersion", prefix)
    elif kind == "sendEntityMessage":
        _validate_entity_message(action.sendEntityMessage, prefix)


def _validate_entity_message(message: pb.SendEntityMessageAction, prefix: str) -> None:
    kind = message.WhichOneof(ENTITY_MESSAGE_KIND)
    if kind is None:
        raise InvalidTurnError(f"{prefix}: sendEntityMessage has no message kind set")
    if kind == "entityLockRequested":
        lock = message.entityLockRequested
        if not lock.criticalSectionId:
            raise InvalidTurnError(f"{prefix}: entityLockRequested has no criticalSectionId")
        if not lock.lockSet:
            raise InvalidTurnError(f"{prefix}: entityLockRequested has an empty lockSet")
        if not 0 <= lock.position < len(lock.lockSet):
            raise InvalidTurnError(
                f"{prefix}: entityLockRequested position {lock.position} is outside its lockSet"
            )
        seen: set[str] = set()
        for entity_id in lock.lockSet:
            canonical = _check_entity_id(entity_id, f"{prefix}: entityLockRequested lockSet")
            if canonical in seen:
                raise InvalidTurnError(f"{prefix}: entityLockRequested lockSet lists {quoted(entity_id)} more than once")
            seen.add(canonical)
        return
    event = getattr(message, kind)
    if not event.targetInstanceId.value:
        raise InvalidTurnError(f"{prefix}: {kind} has no targetInstanceId")
    _check_entity_id(event.targetInstanceId.value, f"{prefix}: {kind} targetInstanceId")
    if kind in ("entityOperationSignaled", "entityOperationCalled"):
        if not event.requestId:
            raise InvalidTurnError(f"{prefix}: {kind} has no requestId")
        if not event.operation:
            raise InvalidTurnError(f"{prefix}: {kind} has no operation name")
    elif not event.criticalSectionId:
        raise InvalidTurnError(f"{prefix}: {kind} has no criticalSectionId")


def _check_id(value: str, field: str, prefix: str) -> None:
    problem = text_problem(value, field)
    if problem is not None:
        raise InvalidTurnError(f"{prefix}: {problem}")


def _check_entity_id(entity_id: str, prefix: str) -> str:
    _check_id(entity_id, "entity ID", prefix)
    try:
        return str(parse_entity_id(entity_id))
    except EntityIdError as exc:
        raise InvalidTurnError(f"{prefix}: {exc}") from None
