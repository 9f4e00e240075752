"""Entities as seen from an orchestration: calls, signals, critical sections, and their history.

The context's ``call_entity``/``signal_entity``/``lock_entities`` are implemented here,
as are the replay of the entity history events (the records of sent messages, which are
matched against the actions the code re-issues, and the results, which complete tasks).

A critical section (``with (yield ctx.lock_entities([...])):``) holds a sorted,
de-duplicated lock set. Inside it an orchestration may call each locked entity (one call
at a time per entity) and signal entities it has not locked; leaving it sends one unlock
message per entity. Sections still open when the orchestration completes, fails or
continues as new are released along with the completion.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from durabletask import task
from durabletask.entities.entity_instance_id import EntityInstanceId, as_entity_id
from durabletask.entities.entity_lock import EntityLock
from durabletask.entities.entity_operation_failed_exception import EntityOperationFailedException
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.call_sites import CallSite, code_line, history_line
from durabletask.internal.replay_descriptions import describe_action
from durabletask.serialization import DataConverter

# History records of sent entity messages -> the context method that sends them.
ENTITY_SCHEDULING_EVENTS: dict[str, str] = {
    "entityOperationCalled": "call_entity",
    "entityOperationSignaled": "signal_entity",
    "entityLockRequested": "lock_entities",
    "entityUnlockSent": "the release of a critical section",
}
ENTITY_RESULT_EVENTS = frozenset({"entityOperationCompleted", "entityOperationFailed", "entityLockGranted"})
ENTITY_EVENTS = frozenset(ENTITY_SCHEDULING_EVENTS) | ENTITY_RESULT_EVENTS


@dataclass
class _EntityCall:
    entity_id: EntityInstanceId
    operation: str
    task_id: int


class EntityCallerContext(Protocol):
    """What entity calls need from the replay context (``RuntimeOrchestrationContext`` provides it)."""

    entities: OrchestrationEntityState
    pending_actions: dict[int, pb.OrchestratorAction]
    pending_tasks: dict[int, task.CompletableTask[Any]]
    call_sites: dict[int, CallSite]

    @property
    def instance_id(self) -> str: ...

    @property
    def converter(self) -> DataConverter: ...

    def next_sequence_number(self) -> int: ...

    def new_uuid(self) -> str: ...

    def log(self, level: int, message: str, *args: Any) -> None: ...

    def complete_with_payload(self, target: task.CompletableTask[Any], payload: str | None, what: str) -> None: ...

    def resume(self) -> None: ...

    def waiting_site(self) -> CallSite | None: ...


class OrchestrationEntityState:
    """The entity bookkeeping of one orchestration execution."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.critical_section_id: str | None = None
        self.locked: list[EntityInstanceId] = []
        # Locked entities without a call in flight.
        self.available: list[EntityInstanceId] = []
        self.acquiring = False
        self.calls: dict[str, _EntityCall] = {}
        self.lock_requests: dict[str, int] = {}

    @property
    def in_critical_section(self) -> bool:
        """True from a lock request until its locks are released."""
        return self.critical_section_id is not None

    def check_call(self, target: EntityInstanceId) -> None:
        """Raise RuntimeError if calling ``target`` is not allowed now; else take its lock for the call."""
        if not self.in_critical_section:
            return
        if target in self.available:
            self.available.remove(target)
            return
        if self.acquiring:
            raise RuntimeError(
                "Must await the completion of the lock request prior to calling any entity "
                "(yield the lock_entities task first)."
            )
        if target in self.locked:
            raise RuntimeError(
                f"Must not call entity '{target}' from a critical section while a prior call to the "
                "same entity is still pending."
            )
        raise RuntimeError(
            f"Must not call entity '{target}' from a critical section: it is not one of the locked entities."
        )

    def check_signal(self, target: EntityInstanceId) -> None:
        """Raise RuntimeError when signalling ``target`` from the current critical section is not allowed."""
        if self.in_critical_section and target in self.locked:
            raise RuntimeError(f"Must not signal the locked entity '{target}' from a critical section.")

    def check_lock(self) -> None:
        """Raise RuntimeError when a critical section is already open."""
        if self.in_critical_section:
            raise RuntimeError("Must not enter another critical section from within a critical section.")

    def enter(self, critical_section_id: str, entities: Sequence[EntityInstanceId]) -> list[EntityInstanceId]:
        """Open a critical section over ``entities``; returns the lock set (sorted, no duplicates)."""
        lock_set = sorted(set(entities))
        if not lock_set:
            raise RuntimeError("lock_entities needs at least one entity to lock.")
        self.critical_section_id = critical_section_id
        self.locked = lock_set
        self.available = []
        self.acquiring = True
        return lock_set

    def granted(self, critical_section_id: str) -> None:
        """Every lock of the section is held: the locked entities become callable."""
        if critical_section_id != self.critical_section_id:
            raise RuntimeError(
                f"lock granted for critical section '{critical_section_id}', "
                f"but the open one is '{self.critical_section_id}'"
            )
        self.available = list(self.locked)
        self.acquiring = False

    def call_returned(self, target: EntityInstanceId) -> None:
        """A call to a locked entity finished: it can be called again."""
        if self.in_critical_section and target in self.locked and target not in self.available:
            self.available.append(target)

    def release(self) -> list[EntityInstanceId]:
        """Close the open critical section; returns the entities to send unlocks to."""
        locked = self.locked if self.in_critical_section else []
        self.critical_section_id = None
        self.locked = []
        self.available = []
        self.acquiring = False
        return locked


# ------------------------------------------------------------ context methods


def call_entity(
    ctx: EntityCallerContext,
    entity: EntityInstanceId | str,
    operation: str,
    input: Any = None,
    return_type: type | None = None,
) -> task.CompletableTask[Any]:
    """Send a two-way operation; the task completes with the result or fails with TaskFailedError."""
    action_id = ctx.next_sequence_number()
    target = as_entity_id(entity)
    if not operation:
        raise ValueError("call_entity needs an operation name")
    ctx.entities.check_call(target)
    encoded = ctx.converter.serialize(input)
    request_id = ctx.new_uuid()
    ctx.pending_actions[action_id] = ph.new_call_entity_action(
        action_id, ctx.instance_id, str(target), operation, encoded, request_id
    )
    call: task.CompletableTask[Any] = task.CompletableTask(return_type)
    ctx.pending_tasks[action_id] = call
    ctx.entities.calls[request_id] = _EntityCall(target, operation, action_id)
    return call


def signal_entity(
    ctx: EntityCallerContext,
    entity_id: EntityInstanceId | str,
    operation_name: str,
    input: Any = None,
    signal_time: datetime | None = None,
) -> None:
    """Send a one-way operation, delivered at ``signal_time`` when given."""
    action_id = ctx.next_sequence_number()
    target = as_entity_id(entity_id)
    if not operation_name:
        raise ValueError("signal_entity needs an operation name")
    ctx.entities.check_signal(target)
    encoded = ctx.converter.serialize(input)
    ctx.pending_actions[action_id] = ph.new_signal_entity_action(
        action_id, str(target), operation_name, encoded, ctx.new_uuid(), signal_time
    )


def lock_entities(
    ctx: EntityCallerContext, entities: Sequence[EntityInstanceId | str]
) -> task.CompletableTask[EntityLock]:
    """Ask for the locks of ``entities``; the task completes with an EntityLock once all are held."""
    action_id = ctx.next_sequence_number()
    if isinstance(entities, (str, EntityInstanceId)):
        raise TypeError("lock_entities takes a list of entity IDs")
    targets = [as_entity_id(e) for e in entities]
    ctx.entities.check_lock()
    section_id = ctx.new_uuid()
    lock_set = ctx.entities.enter(section_id, targets)
    ctx.pending_actions[action_id] = ph.new_lock_entities_action(
        action_id, section_id, ctx.instance_id, [str(e) for e in lock_set]
    )
    lock_task: task.CompletableTask[EntityLock] = task.CompletableTask()
    ctx.pending_tasks[action_id] = lock_task
    ctx.entities.lock_requests[section_id] = action_id
    return lock_task


def exit_critical_section(ctx: EntityCallerContext) -> None:
    """Release the open critical section, if any: one unlock message per locked entity."""
    section_id = ctx.entities.critical_section_id
    if section_id is None:
        return
    ctx.entities.lock_requests.pop(section_id, None)
    for entity_id in ctx.entities.release():
        action_id = ctx.next_sequence_number()
        ctx.pending_actions[action_id] = ph.new_unlock_entity_action(
            action_id, section_id, ctx.instance_id, str(entity_id)
        )


# ------------------------------------------------------------------ history


def _describe_event(event: pb.HistoryEvent, kind: str) -> str:
    if kind == "entityOperationCalled":
        c = event.entityOperationCalled
        return f"an entityOperationCalled('{c.targetInstanceId.value}', '{c.operation}')"
    if kind == "entityOperationSignaled":
        s = event.entityOperationSignaled
        return f"an entityOperationSignaled('{s.targetInstanceId.value}', '{s.operation}')"
    if kind == "entityLockRequested":
        return f"an entityLockRequested({list(event.entityLockRequested.lockSet)})"
    return f"an {kind}"


def _same_message(kind: str, action_message: Any, recorded: Any) -> bool:
    if kind in ("entityOperationCalled", "entityOperationSignaled"):
        return bool(
            action_message.targetInstanceId.value == recorded.targetInstanceId.value
            and action_message.operation == recorded.operation
        )
    if kind == "entityLockRequested":
        return list(action_message.lockSet) == list(recorded.lockSet)
    return True


def process_entity_event(ctx: EntityCallerContext, event: pb.HistoryEvent, kind: str, hint: str) -> None:
    """Apply one entity history event; ``hint`` ends non-determinism messages."""
    if kind in ENTITY_SCHEDULING_EVENTS:
        _match_sent_message(ctx, event, kind, hint)
    elif kind == "entityOperationCompleted":
        done = event.entityOperationCompleted
        found = _take_call(ctx, done.requestId, kind)
        if found is not None:
            call, pending = found
            ctx.complete_with_payload(
                pending, done.output.value if done.HasField("output") else None,
                f"the result of operation '{call.operation}' on entity '{call.entity_id}'",
            )
            ctx.entities.call_returned(call.entity_id)
            ctx.resume()
    elif kind == "entityOperationFailed":
        failed = event.entityOperationFailed
        found = _take_call(ctx, failed.requestId, kind)
        if found is not None:
            call, pending = found
            error = EntityOperationFailedException(call.entity_id, call.operation, failed.failureDetails)
            details = pb.TaskFailureDetails(
                errorType=ph.qualified_name(EntityOperationFailedException),
                errorMessage=str(error),
            )
            details.innerFailure.CopyFrom(failed.failureDetails)
            ctx.entities.call_returned(call.entity_id)
            pending.fail(str(error), details)
            ctx.resume()
    elif kind == "entityLockGranted":
        section_id = event.entityLockGranted.criticalSectionId
        task_id = ctx.entities.lock_requests.pop(section_id, None)
        lock_task = ctx.pending_tasks.pop(task_id, None) if task_id is not None else None
        if lock_task is None:
            ctx.log(logging.WARNING, "ignoring entityLockGranted for unknown critical section '%s'", section_id)
            return
        ctx.entities.granted(section_id)
        lock_task.complete(EntityLock(ctx))
        ctx.resume()


def _take_call(
    ctx: EntityCallerContext, request_id: str, kind: str
) -> tuple[_EntityCall, task.CompletableTask[Any]] | None:
    call = ctx.entities.calls.pop(request_id, None)
    pending = ctx.pending_tasks.pop(call.task_id, None) if call is not None else None
    if call is None or pending is None:
        ctx.log(logging.WARNING, "ignoring %s for unknown request '%s'", kind, request_id)
        return None
    return call, pending


def _match_sent_message(ctx: EntityCallerContext, event: pb.HistoryEvent, kind: str, hint: str) -> None:
    """Match the record of a sent entity message to the action the code re-issued."""
    recorded = getattr(event, kind)
    action_id = event.eventId
    action = ctx.pending_actions.get(action_id)
    if kind == "entityUnlockSent" and not _is_unlock_of(action, recorded.criticalSectionId):
        # Recorded without a usable event id: every unlock of the section was sent.
        for other_id, other in list(ctx.pending_actions.items()):
            if _is_unlock_of(other, recorded.criticalSectionId):
                del ctx.pending_actions[other_id]
        return
    method = ENTITY_SCHEDULING_EVENTS[kind]
    expected = f"{method} with task id {action_id}"
    if action is None:
        site = ctx.waiting_site()
        where = f"it is waiting at {site}" if site is not None else "it had already finished"
        raise task.NonDeterminismError(
            f"Non-deterministic orchestration: history has {_describe_event(event, kind)} at id {action_id} "
            f"(from {method}) but the orchestrator code made no call with this id."
            f"\n  code:    made no such call; {where}{history_line(expected, event)}{hint}"
        )
    message = action.sendEntityMessage if action.HasField("sendEntityMessage") else None
    if (
        message is None
        or message.WhichOneof("EntityMessageType") != kind
        or not _same_message(kind, getattr(message, kind), recorded)
    ):
        raise task.NonDeterminismError(
            f"Non-deterministic orchestration: expected {describe_action(action)} but history has "
            f"{_describe_event(event, kind)} at id {action_id}."
            f"{code_line(describe_action(action), ctx.call_sites.get(action_id))}{history_line(expected, event)}{hint}"
        )
    del ctx.pending_actions[action_id]
    # History is authoritative for the IDs answers will carry.
    if kind == "entityOperationCalled":
        issued = message.entityOperationCalled.requestId
        if issued != recorded.requestId and issued in ctx.entities.calls:
            ctx.entities.calls[recorded.requestId] = ctx.entities.calls.pop(issued)
    elif kind == "entityLockRequested":
        issued = message.entityLockRequested.criticalSectionId
        if issued != recorded.criticalSectionId and issued in ctx.entities.lock_requests:
            ctx.entities.lock_requests[recorded.criticalSectionId] = ctx.entities.lock_requests.pop(issued)
            if ctx.entities.critical_section_id == issued:
                ctx.entities.critical_section_id = recorded.criticalSectionId


def _is_unlock_of(action: pb.OrchestratorAction | None, critical_section_id: str) -> bool:
    return bool(
        action is not None
        and action.HasField("sendEntityMessage")
        and action.sendEntityMessage.HasField("entityUnlockSent")
        and action.sendEntityMessage.entityUnlockSent.criticalSectionId == critical_section_id
    )
