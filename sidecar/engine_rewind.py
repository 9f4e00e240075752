"""Rewind in the pure engine: the worker's rewritten history in, a change set out.

A rewind runs in two steps. ``RewindInstance`` puts an ``executionRewound`` event in the
inbox of a FAILED instance and marks it RUNNING (the store does that). The worker answers
that turn with one ``rewindOrchestration`` action whose ``newHistory`` is the history
without the failures (and, in the official SDK's shape, without the ``taskScheduled`` of
failed activities, so that replay schedules them again). This module turns that answer
into a change set: the history is replaced, the instance gets a fresh turn to replay the
cleaned history, and whatever the history still waits for is set going again:

- activities scheduled but without a result (they were dropped when the instance failed)
  are queued again;
- timers created but not fired are armed again at their original fire time;
- sub-orchestrations created without a result are handed to the store as a ``RewindPlan``
  (rewind the failed ones, re-create purged ones, re-link running ones).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import (
    from_timestamp,
    new_event,
    new_execution_started,
    new_orchestrator_started,
    optional_str,
)
from sidecar.ids import IdFactory
from sidecar.model import (
    ActivityTaskSpec,
    InstanceSnapshot,
    InvalidTurnError,
    NewInstanceSpec,
    OutboundMessage,
    ParentRef,
    RewindPlan,
    TurnInput,
    TurnResult,
)
from sidecar.quoting import quoted

__all__ = ["apply_rewind", "check_not_ignoring_rewind", "is_rewind_turn", "rewound_event"]


def rewound_event(now: datetime, reason: str | None, parent_execution_id: str | None = None) -> pb.HistoryEvent:
    """The ``executionRewound`` inbox event that asks the worker to rewrite a failed instance's history."""
    event = new_event(now)
    rewound = event.executionRewound
    rewound.SetInParent()
    if reason is not None:
        rewound.reason.value = reason
    if parent_execution_id is not None:
        rewound.parentExecutionId.value = parent_execution_id
    return event


def is_rewind_turn(turn: TurnInput) -> bool:
    """True when the turn delivers an ``executionRewound`` to a history that has ended."""
    return any(e.HasField("executionRewound") for e in turn.new_events) and any(
        e.HasField("executionCompleted") for e in turn.past_events
    )


def check_not_ignoring_rewind(turn: TurnInput) -> None:
    """A worker that answers a rewind request with ordinary actions cannot be applied."""
    if is_rewind_turn(turn):
        raise InvalidTurnError(
            f"instance '{turn.instance.instance_id}' is being rewound: the turn must be answered with a single "
            "rewindOrchestration action (does this worker's SDK support rewind?)"
        )


def apply_rewind(turn: TurnInput) -> TurnResult:
    """Replace the history with the worker's rewritten one and restart what it still waits for."""
    if not is_rewind_turn(turn):
        raise InvalidTurnError(
            "rewindOrchestration is only accepted in answer to an executionRewound event "
            f"(instance '{turn.instance.instance_id}' was not asked to rewind)"
        )
    new_history = list(turn.response.actions[0].rewindOrchestration.newHistory)
    started = _check_history(turn.instance, new_history)
    instance = replace(
        turn.instance,
        tags=dict(turn.instance.tags),
        status=pb.ORCHESTRATION_STATUS_RUNNING,
        output=None,
        failure=None,
        completed_at=None,
        last_updated_at=turn.now,
        custom_status=optional_str(turn.response, "customStatus"),
    )
    execution_id = optional_str(started.orchestrationInstance, "executionId")
    if execution_id:
        instance.execution_id = execution_id
    result = TurnResult(
        instance=instance,
        reset_history=new_history,
        inbox_prepend=[new_orchestrator_started(turn.now)],
        rewind=RewindPlan(reason=_reason(turn.new_events)),
    )
    _restart_waiting_work(result, new_history, turn.now, turn.new_id)
    return result


def _check_history(instance: InstanceSnapshot, history: list[pb.HistoryEvent]) -> pb.ExecutionStartedEvent:
    """The rewritten history must be a live history of this instance; returns its executionStarted."""
    starts = [e.executionStarted for e in history if e.HasField("executionStarted")]
    if len(starts) != 1:
        raise InvalidTurnError(
            f"rewindOrchestration.newHistory must hold exactly one executionStarted event, not {len(starts)}"
        )
    if starts[0].name != instance.name:
        raise InvalidTurnError(
            f"rewindOrchestration.newHistory starts orchestration {quoted(starts[0].name)}, "
            f"but instance '{instance.instance_id}' runs '{instance.name}'"
        )
    if any(e.HasField("executionCompleted") for e in history):
        raise InvalidTurnError("rewindOrchestration.newHistory must not contain an executionCompleted event")
    return starts[0]


def _reason(events: list[pb.HistoryEvent]) -> str | None:
    for event in events:
        if event.HasField("executionRewound"):
            return optional_str(event.executionRewound, "reason")
    return None


def _restart_waiting_work(
    result: TurnResult, history: list[pb.HistoryEvent], now: datetime, new_id: IdFactory
) -> None:
    """Queue the activities, timers and sub-orchestrations the history has no outcome for."""
    instance = result.instance
    scheduled: dict[int, pb.HistoryEvent] = {}
    timers: dict[int, pb.HistoryEvent] = {}
    children: dict[int, pb.HistoryEvent] = {}
    for event in history:
        kind = event.WhichOneof("eventType")
        if kind == "taskScheduled":
            scheduled[event.eventId] = event
        elif kind in ("taskCompleted", "taskFailed"):
            scheduled.pop(getattr(event, kind).taskScheduledId, None)
        elif kind == "timerCreated":
            timers[event.eventId] = event
        elif kind == "timerFired":
            timers.pop(event.timerFired.timerId, None)
        elif kind == "subOrchestrationInstanceCreated":
            children[event.eventId] = event
        elif kind in ("subOrchestrationInstanceCompleted", "subOrchestrationInstanceFailed"):
            children.pop(getattr(event, kind).taskScheduledId, None)

    for task_id, event in scheduled.items():
        task = event.taskScheduled
        result.activity_tasks.append(ActivityTaskSpec(
            instance_id=instance.instance_id,
            execution_id=instance.execution_id,
            task_id=task_id,
            name=task.name,
            version=optional_str(task, "version") or instance.version,
            input=optional_str(task, "input"),
            tags=dict(task.tags),
        ))
    for timer_id, event in timers.items():
        fired = new_event(now)
        fired.timerFired.fireAt.CopyFrom(event.timerCreated.fireAt)
        fired.timerFired.timerId = timer_id
        result.messages.append(OutboundMessage(
            target_instance_id=instance.instance_id,
            event=fired,
            visible_at=max(now, from_timestamp(event.timerCreated.fireAt)),
            target_execution_id=instance.execution_id,
        ))
    assert result.rewind is not None
    for task_id, event in children.items():
        result.rewind.children.append(_child_spec(instance, task_id, event.subOrchestrationInstanceCreated, now, new_id))


def _child_spec(
    parent: InstanceSnapshot,
    task_id: int,
    created: pb.SubOrchestrationInstanceCreatedEvent,
    now: datetime,
    new_id: IdFactory,
) -> NewInstanceSpec:
    parent_ref = ParentRef(
        instance_id=parent.instance_id,
        execution_id=parent.execution_id,
        task_scheduled_id=task_id,
        name=parent.name,
        version=parent.version,
    )
    execution_id = new_id()
    version = optional_str(created, "version")
    child_input = optional_str(created, "input")
    start = new_execution_started(
        name=created.name,
        instance_id=created.instanceId,
        execution_id=execution_id,
        now=now,
        version=version,
        input=child_input,
        tags=dict(created.tags),
        parent=parent_ref,
        parent_trace_context=created.parentTraceContext if created.HasField("parentTraceContext") else None,
    )
    return NewInstanceSpec(
        instance_id=created.instanceId,
        execution_id=execution_id,
        name=created.name,
        version=version,
        input=child_input,
        parent=parent_ref,
        start_event=start,
        tags=dict(created.tags),
    )
