"""Pure application of an entity batch result: (batch sent, EntityBatchResult) -> what to commit.

The store commits the returned :class:`BatchOutcome` in one transaction: the new state,
the consumed queue entries, replies to calling orchestrations, signals to entities and new
orchestrations. Results line up with the operations sent (``results[i]`` answers the
i-th operation). A worker that returns fewer results than operations ran only those; the
rest stay queued for the next batch. A new state over the sidecar's limit fails the
operations that ran (state and outgoing actions are dropped) rather than the whole result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import from_timestamp, new_event, new_execution_started, optional_str
from sidecar.engine_validate import MAX_TEXT_LENGTH, text_problem, timestamps_problem, trace_context_problem
from sidecar.entity_scheduler import (
    CALL,
    SIGNAL,
    EntityIdError,
    QueuedMessage,
    is_entity_id,
    normalize_entity_id,
)
from sidecar.ids import IdFactory, random_id
from sidecar.model import InstanceSnapshot, InvalidTurnError, OutboundMessage
from sidecar.quoting import quoted

MAX_INSTANCE_ID_LENGTH = MAX_TEXT_LENGTH

# errorType of the failure an operation gets when the state it leaves is over the sidecar's limit.
STATE_TOO_LARGE_ERROR = "EntityStateTooLargeError"


class InvalidBatchResultError(InvalidTurnError):
    """A worker's entity batch result cannot be applied. Maps to INVALID_ARGUMENT; nothing changes."""


@dataclass
class EntitySignal:
    """A signal to an entity, sent by an entity operation."""

    target: str
    sender: str
    event: pb.HistoryEvent
    visible_at: datetime | None = None
    # SendSignalAction.parentTraceContext: queued with the signal, handed to the target's worker.
    trace_context: pb.TraceContext | None = None


@dataclass
class NewOrchestration:
    """An orchestration started by an entity operation (PENDING until ``visible_at``)."""

    instance: InstanceSnapshot
    start_event: pb.HistoryEvent
    visible_at: datetime


@dataclass
class BatchOutcome:
    """The change set of one entity batch result."""

    state: str | None
    consumed: list[int] = field(default_factory=list)
    replies: list[OutboundMessage] = field(default_factory=list)
    signals: list[EntitySignal] = field(default_factory=list)
    orchestrations: list[NewOrchestration] = field(default_factory=list)
    # Human-readable lines about signalled operations that failed (nobody waits for them).
    failed_signals: list[str] = field(default_factory=list)
    # Nothing ran (no results): keep everything queued and offer the batch again later.
    retry: bool = False
    retry_reason: str = ""


def apply_batch_result(
    entity_id: str,
    state_before: str | None,
    batch: Sequence[QueuedMessage],
    result: pb.EntityBatchResult,
    now: datetime,
    max_state_size: int | None = None,
    new_id: IdFactory = random_id,
) -> BatchOutcome:
    """Validate ``result`` against the ``batch`` that was sent and compute its change set.

    Raises InvalidBatchResultError naming the problem when the result cannot be applied.
    A new state over ``max_state_size`` bytes is not an invalid result: the operations that
    ran fail (see :func:`_state_too_large`).
    """
    _validate(entity_id, batch, result)
    ran = len(result.results)
    if ran == 0:
        reason = "the worker returned no operation results"
        if result.HasField("failureDetails"):
            failure = result.failureDetails
            reason = f"the batch failed: {failure.errorType}: {failure.errorMessage}"
        return BatchOutcome(state=state_before, retry=True, retry_reason=reason)
    if max_state_size is not None and result.HasField("entityState"):
        size = len(result.entityState.value.encode("utf-8"))
        if size > max_state_size:
            return _state_too_large(entity_id, state_before, batch[:ran], size, max_state_size, now)

    new_state = optional_str(result, "entityState") or None
    outcome = BatchOutcome(state=new_state)
    for message, op_result in zip(batch[:ran], result.results, strict=True):
        outcome.consumed.append(message.seq)
        if message.kind == CALL:
            outcome.replies.append(_reply(message, op_result, now))
        elif message.kind == SIGNAL and op_result.HasField("failure"):
            outcome.failed_signals.append(_describe_failure(entity_id, message, op_result.failure.failureDetails))
    for action in result.actions:
        kind = action.WhichOneof("operationActionType")
        if kind == "sendSignal":
            outcome.signals.append(_signal(entity_id, action.sendSignal, now, new_id))
        elif kind == "startNewOrchestration":
            outcome.orchestrations.append(_new_orchestration(action.startNewOrchestration, now, new_id))
    return outcome


def _state_too_large(
    entity_id: str, state_before: str | None, ran: Sequence[QueuedMessage], size: int, limit: int, now: datetime
) -> BatchOutcome:
    """The operations that ran all fail; the state stays as it was and their actions are dropped."""
    failure = pb.TaskFailureDetails(
        errorType=STATE_TOO_LARGE_ERROR,
        errorMessage=(
            f"the new state of entity '{entity_id}' is {size} bytes, over the sidecar's limit of {limit} bytes "
            "(half its maximum message size); the operation's changes were not kept"
        ),
    )
    failed = pb.OperationResult(failure=pb.OperationResultFailure(failureDetails=failure))
    outcome = BatchOutcome(state=state_before)
    for message in ran:
        outcome.consumed.append(message.seq)
        if message.kind == CALL:
            outcome.replies.append(_reply(message, failed, now))
        elif message.kind == SIGNAL:
            outcome.failed_signals.append(_describe_failure(entity_id, message, failure))
    return outcome


def _validate(entity_id: str, batch: Sequence[QueuedMessage], result: pb.EntityBatchResult) -> None:
    problem = timestamps_problem(result)
    if problem is not None:
        raise InvalidBatchResultError(f"entity batch result for '{entity_id}': {problem}")
    if len(result.results) > len(batch):
        raise InvalidBatchResultError(
            f"entity batch result for '{entity_id}' has {len(result.results)} operation results, "
            f"but the batch had {len(batch)} operations"
        )
    for index, op_result in enumerate(result.results):
        if op_result.WhichOneof("resultType") is None:
            raise InvalidBatchResultError(
                f"entity batch result for '{entity_id}': results[{index}] has neither success nor failure"
            )
    for index, action in enumerate(result.actions):
        prefix = f"entity batch result for '{entity_id}': actions[{index}]"
        kind = action.WhichOneof("operationActionType")
        if kind is None:
            raise InvalidBatchResultError(f"{prefix} has no action kind set")
        if kind == "sendSignal":
            signal = action.sendSignal
            problem = text_problem(signal.instanceId, "sendSignal.instanceId", MAX_INSTANCE_ID_LENGTH)
            if problem is not None:
                raise InvalidBatchResultError(f"{prefix}: {problem}")
            try:
                normalize_entity_id(signal.instanceId)
            except EntityIdError as exc:
                raise InvalidBatchResultError(f"{prefix} (sendSignal): {exc}") from None
            if not signal.name:
                raise InvalidBatchResultError(f"{prefix} (sendSignal) has no operation name")
            if signal.HasField("parentTraceContext"):
                problem = trace_context_problem(signal.parentTraceContext, "parentTraceContext")
                if problem is not None:
                    raise InvalidBatchResultError(f"{prefix} (sendSignal): {problem}")
        else:
            start = action.startNewOrchestration
            if not start.name.strip():
                raise InvalidBatchResultError(f"{prefix} (startNewOrchestration) has no orchestration name")
            _check_instance_id(start.instanceId, f"{prefix} (startNewOrchestration)")
            if start.HasField("version"):
                problem = text_problem(start.version.value, "version")
                if problem is not None:
                    raise InvalidBatchResultError(f"{prefix} (startNewOrchestration): {problem}")
            if start.HasField("parentTraceContext"):
                problem = trace_context_problem(start.parentTraceContext, "parentTraceContext")
                if problem is not None:
                    raise InvalidBatchResultError(f"{prefix} (startNewOrchestration): {problem}")


def _check_instance_id(instance_id: str, prefix: str) -> None:
    problem = text_problem(instance_id, "instanceId", MAX_INSTANCE_ID_LENGTH)
    if problem is not None:
        raise InvalidBatchResultError(f"{prefix}: {problem}")
    if is_entity_id(instance_id):
        raise InvalidBatchResultError(
            f"{prefix}: instanceId {quoted(instance_id)} starts with '@', which is reserved for entities"
        )


def _reply(message: QueuedMessage, op_result: pb.OperationResult, now: datetime) -> OutboundMessage:
    called = message.event.entityOperationCalled
    event = new_event(now)
    if op_result.HasField("success"):
        event.entityOperationCompleted.requestId = called.requestId
        if op_result.success.HasField("result"):
            event.entityOperationCompleted.output.CopyFrom(op_result.success.result)
    else:
        event.entityOperationFailed.requestId = called.requestId
        event.entityOperationFailed.failureDetails.CopyFrom(op_result.failure.failureDetails)
    return OutboundMessage(
        target_instance_id=called.parentInstanceId.value or message.sender,
        event=event,
        target_execution_id=optional_str(called, "parentExecutionId") or None,
    )


def _describe_failure(entity_id: str, message: QueuedMessage, failure: pb.TaskFailureDetails) -> str:
    operation = message.event.entityOperationSignaled.operation
    sender = f"'{message.sender}'" if message.sender else "a client"
    return (
        f"signalled operation '{operation}' on entity '{entity_id}' (from {sender}) failed: "
        f"{failure.errorType}: {failure.errorMessage}"
    )


def _signal(entity_id: str, action: pb.SendSignalAction, now: datetime, new_id: IdFactory) -> EntitySignal:
    target = normalize_entity_id(action.instanceId)
    event = new_event(now)
    signaled = event.entityOperationSignaled
    signaled.requestId = new_id()
    signaled.operation = action.name
    signaled.targetInstanceId.value = target
    if action.HasField("input"):
        signaled.input.CopyFrom(action.input)
    visible_at: datetime | None = None
    if action.HasField("scheduledTime"):
        signaled.scheduledTime.CopyFrom(action.scheduledTime)
        scheduled = from_timestamp(action.scheduledTime)
        visible_at = scheduled if scheduled > now else None
    trace_context = action.parentTraceContext if action.HasField("parentTraceContext") else None
    return EntitySignal(target=target, sender=entity_id, event=event, visible_at=visible_at, trace_context=trace_context)


def _new_orchestration(action: pb.StartNewOrchestrationAction, now: datetime, new_id: IdFactory) -> NewOrchestration:
    instance_id = action.instanceId or new_id()
    execution_id = new_id()
    version = optional_str(action, "version")
    orchestration_input = optional_str(action, "input")
    start_at = from_timestamp(action.scheduledTime) if action.HasField("scheduledTime") else None
    instance = InstanceSnapshot(
        instance_id=instance_id,
        execution_id=execution_id,
        name=action.name,
        status=pb.ORCHESTRATION_STATUS_PENDING,
        created_at=now,
        last_updated_at=now,
        version=version,
        input=orchestration_input,
        scheduled_start_at=start_at,
    )
    start_event = new_execution_started(
        name=action.name,
        instance_id=instance_id,
        execution_id=execution_id,
        now=now,
        version=version,
        input=orchestration_input,
        scheduled_start_at=start_at,
        parent_trace_context=action.parentTraceContext if action.HasField("parentTraceContext") else None,
    )
    visible_at = start_at if start_at is not None and start_at > now else now
    return NewOrchestration(instance=instance, start_event=start_event, visible_at=visible_at)
