"""Validation of a worker's orchestrator response before the engine applies anything."""

from __future__ import annotations

from google.protobuf.message import Message

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import status_name
from sidecar.entity_scheduler import EntityIdError, parse_entity_id
from sidecar.model import InstanceSnapshot, InvalidTurnError

ACTION_KIND = "orchestratorActionType"
ENTITY_MESSAGE_KIND = "EntityMessageType"

# Statuses a completeOrchestration action may carry.
VALID_COMPLETION_STATUSES: frozenset[int] = frozenset({
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
})

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
            f"response.instanceId '{response.instanceId}' does not match instance '{instance.instance_id}'"
        )
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
        if action.id < 0:
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
    elif kind == "createSubOrchestration":
        if not action.createSubOrchestration.name:
            raise InvalidTurnError(f"{prefix}: createSubOrchestration has no name")
        check_version(action.createSubOrchestration, "version", prefix)
    elif kind == "createTimer":
        if not action.createTimer.HasField("fireAt"):
            raise InvalidTurnError(f"{prefix}: createTimer has no fireAt")
    elif kind == "sendEvent":
        send = action.sendEvent
        if not send.instance.instanceId:
            raise InvalidTurnError(f"{prefix}: sendEvent has no target instance")
        if not send.name:
            raise InvalidTurnError(f"{prefix}: sendEvent has no event name")
    elif kind == "terminateOrchestration":
        if not action.terminateOrchestration.instanceId:
            raise InvalidTurnError(f"{prefix}: terminateOrchestration has no instanceId")
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
                raise InvalidTurnError(f"{prefix}: entityLockRequested lockSet lists '{entity_id}' more than once")
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


def _check_entity_id(entity_id: str, prefix: str) -> str:
    try:
        return str(parse_entity_id(entity_id))
    except EntityIdError as exc:
        raise InvalidTurnError(f"{prefix}: {exc}") from None
