"""The sidecar's pure engine: (instance, history, new events, worker response) -> change set.

No I/O here: no store, no gRPC, no clock (time comes in as ``now``). The store commits
the returned ``TurnResult`` in one transaction.

Outbound effects of a turn, in brief:

- activities go to ``activity_tasks`` (not created when the execution continues as new);
- timers become ``OutboundMessage``s to the instance itself, visible at their fire time and
  scoped to the current execution (not created when the execution ends in this turn);
- events, terminations, sub-orchestrations and entity messages are always emitted, also
  when the orchestration finishes in the same turn (fire-and-forget semantics);
- entity messages are plain ``OutboundMessage``s addressed to the entity's instance id
  (``@name@key``); lock requests go to ``lockSet[position]``. Entity scheduling itself
  (queues, locks) lives elsewhere;
- terminateOrchestration becomes a ``TerminateSpec``; history records it as an ``eventSent``
  named ``terminate`` (eventId = action id), since the protocol has no dedicated event.

Actions after a completion: the execution ends at its ``completeOrchestration`` action. Actions
listed before it are carried out as above (official workers send an orchestration's pending
actions, such as entity unlocks, signals and events, before its continue-as-new); actions listed
after it are validated like any other but then ignored: nothing is recorded or carried out for
them, so ``executionCompleted`` is the last event of the execution but for the turn's closing
``orchestratorCompleted``. They are named in ``TurnResult.ignored_actions`` for the log. (A
worker failing an orchestration, for non-determinism say, may still list the actions its code
had pending; a finished orchestration starts nothing.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import (
    activity_result_event,
    execution_completed_event,
    execution_terminated_event,
    from_timestamp,
    new_event,
    new_execution_started,
    new_orchestrator_completed,
    new_orchestrator_started,
    optional_str,
    status_name,
)
from sidecar.engine_history import HistorySummary, select_new_events
from sidecar.engine_rewind import apply_rewind, check_not_ignoring_rewind
from sidecar.engine_validate import ACTION_KIND, ENTITY_MESSAGE_KIND, is_rewind_response, validate_turn
from sidecar.ids import IdFactory, random_id
from sidecar.model import (
    ActivityTaskSpec,
    InstanceSnapshot,
    InvalidTurnError,
    NewInstanceSpec,
    OutboundMessage,
    ParentRef,
    TerminateSpec,
    TurnInput,
    TurnResult,
)

__all__ = [
    "TERMINATED_ERROR_TYPE",
    "HistorySummary",
    "InvalidTurnError",
    "activity_result_event",
    "apply_turn",
    "new_execution_id",
    "new_execution_started",
    "new_orchestrator_started",
    "parent_notification",
    "select_new_events",
    "split_at_completion",
    "sub_orchestration_instance_id",
    "terminate",
]

# errorType reported to a parent whose sub-orchestration was terminated.
TERMINATED_ERROR_TYPE = "OrchestrationTerminated"


def new_execution_id() -> str:
    """A fresh, unique execution id."""
    return random_id()


def sub_orchestration_instance_id(parent_instance_id: str, action_id: int) -> str:
    """The instance id given to a sub-orchestration created without one."""
    return f"{parent_instance_id}:{action_id:04x}"


@dataclass
class _TurnState:
    """Working state while the actions of one turn are applied."""

    source: InstanceSnapshot  # the instance as it was before the turn
    out: TurnResult  # its ``instance`` is the row being updated
    now: datetime
    ends_execution: bool
    continues_as_new: bool
    history: list[pb.HistoryEvent] = field(default_factory=list)
    new_id: IdFactory = random_id

    @property
    def instance(self) -> InstanceSnapshot:
        return self.out.instance


def apply_turn(turn: TurnInput) -> TurnResult:
    """Validate the worker's actions and compute the change set of one orchestration turn.

    Raises InvalidTurnError (nothing applied) when the response is invalid.
    """
    validate_turn(turn.instance, turn.response)
    if is_rewind_response(turn.response):
        return apply_rewind(turn)
    check_not_ignoring_rewind(turn)

    response = turn.response
    actions, ignored = split_at_completion(list(response.actions))
    completion = actions[-1].completeOrchestration if ignored is not None else None
    instance = replace(turn.instance, tags=dict(turn.instance.tags))
    instance.status = _status_after_events(turn.instance.status, turn.new_events)
    instance.last_updated_at = turn.now
    instance.custom_status = optional_str(response, "customStatus")
    if response.HasField("orchestrationTraceContext"):
        instance.trace_context = response.orchestrationTraceContext

    state = _TurnState(
        source=turn.instance,
        out=TurnResult(instance=instance),
        now=turn.now,
        ends_execution=completion is not None,
        continues_as_new=(
            completion is not None
            and completion.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
        ),
        history=list(turn.new_events),
        new_id=turn.new_id,
    )
    for action in actions:
        _apply_action(state, action, turn)
    state.history.append(new_orchestrator_completed(turn.now))

    result = state.out
    result.ignored_actions = [f"{a.WhichOneof(ACTION_KIND)} {a.id}" for a in ignored or ()]
    if state.continues_as_new:
        result.history_append = []
        result.reset_history = []
    else:
        result.history_append = state.history
    return result


def split_at_completion(
    actions: list[pb.OrchestratorAction],
) -> tuple[list[pb.OrchestratorAction], list[pb.OrchestratorAction] | None]:
    """(the actions up to and including the first completeOrchestration, the actions after it).

    Without a completeOrchestration: (all the actions, None).
    """
    for index, action in enumerate(actions):
        if action.WhichOneof(ACTION_KIND) == "completeOrchestration":
            return actions[: index + 1], actions[index + 1:]
    return actions, None


def terminate(instance: InstanceSnapshot, output: str | None, now: datetime) -> TurnResult:
    """Change set that terminates a non-terminal instance directly (no worker involved).

    Recursion to children is the store's job (it knows them). Raises InvalidTurnError
    when the instance is already terminal.
    """
    if instance.is_terminal:
        raise InvalidTurnError(f"instance '{instance.instance_id}' is already {status_name(instance.status)}")
    updated = replace(
        instance,
        tags=dict(instance.tags),
        status=pb.ORCHESTRATION_STATUS_TERMINATED,
        output=output,
        failure=None,
        completed_at=now,
        last_updated_at=now,
    )
    result = TurnResult(
        instance=updated,
        history_append=[
            execution_terminated_event(output, now),
            execution_completed_event(pb.ORCHESTRATION_STATUS_TERMINATED, output, None, now),
        ],
    )
    parent_message = parent_notification(updated, pb.ORCHESTRATION_STATUS_TERMINATED, output, None, now)
    if parent_message is not None:
        result.messages.append(parent_message)
    return result


def _status_after_events(status: int, new_events: list[pb.HistoryEvent]) -> int:
    """Status after the worker saw ``new_events``: started, suspended or resumed."""
    if status == pb.ORCHESTRATION_STATUS_PENDING:
        status = pb.ORCHESTRATION_STATUS_RUNNING
    for event in new_events:
        if event.HasField("executionSuspended"):
            status = pb.ORCHESTRATION_STATUS_SUSPENDED
        elif event.HasField("executionResumed"):
            status = pb.ORCHESTRATION_STATUS_RUNNING
    return status


def _apply_action(state: _TurnState, action: pb.OrchestratorAction, turn: TurnInput) -> None:
    kind = action.WhichOneof(ACTION_KIND)
    if kind == "scheduleTask":
        _schedule_task(state, action)
    elif kind == "createTimer":
        _create_timer(state, action)
    elif kind == "createSubOrchestration":
        _create_sub_orchestration(state, action)
    elif kind == "sendEvent":
        _send_event(state, action)
    elif kind == "terminateOrchestration":
        _terminate_other(state, action)
    elif kind == "sendEntityMessage":
        _send_entity_message(state, action)
    elif kind == "completeOrchestration":
        _complete(state, action, turn)
    else:  # validate_turn rejects anything else before we get here
        raise InvalidTurnError(f"action {action.id}: unsupported action kind {kind}")


def _schedule_task(state: _TurnState, action: pb.OrchestratorAction) -> None:
    task = action.scheduleTask
    event = new_event(state.now, action.id)
    scheduled = event.taskScheduled
    scheduled.name = task.name
    if task.HasField("version"):
        scheduled.version.CopyFrom(task.version)
    if task.HasField("input"):
        scheduled.input.CopyFrom(task.input)
    if task.HasField("parentTraceContext"):
        scheduled.parentTraceContext.CopyFrom(task.parentTraceContext)
    scheduled.tags.update(task.tags)
    state.history.append(event)
    if state.continues_as_new:
        return
    state.out.activity_tasks.append(ActivityTaskSpec(
        instance_id=state.source.instance_id,
        execution_id=state.source.execution_id,
        task_id=action.id,
        name=task.name,
        # An activity without a version of its own runs under its orchestration's (work-item filters).
        version=optional_str(task, "version") or state.source.version,
        input=optional_str(task, "input"),
        tags=dict(task.tags),
        trace_context=task.parentTraceContext if task.HasField("parentTraceContext") else None,
    ))


def _create_timer(state: _TurnState, action: pb.OrchestratorAction) -> None:
    fire_at = action.createTimer.fireAt
    event = new_event(state.now, action.id)
    event.timerCreated.fireAt.CopyFrom(fire_at)
    state.history.append(event)
    if state.ends_execution:
        return
    fired = new_event(state.now)
    fired.timerFired.fireAt.CopyFrom(fire_at)
    fired.timerFired.timerId = action.id
    state.out.messages.append(OutboundMessage(
        target_instance_id=state.source.instance_id,
        event=fired,
        visible_at=from_timestamp(fire_at),
        target_execution_id=state.source.execution_id,
    ))


def _create_sub_orchestration(state: _TurnState, action: pb.OrchestratorAction) -> None:
    sub = action.createSubOrchestration
    parent = state.source
    child_id = sub.instanceId or sub_orchestration_instance_id(parent.instance_id, action.id)
    event = new_event(state.now, action.id)
    created = event.subOrchestrationInstanceCreated
    created.instanceId = child_id
    created.name = sub.name
    if sub.HasField("version"):
        created.version.CopyFrom(sub.version)
    if sub.HasField("input"):
        created.input.CopyFrom(sub.input)
    if sub.HasField("parentTraceContext"):
        created.parentTraceContext.CopyFrom(sub.parentTraceContext)
    created.tags.update(sub.tags)
    state.history.append(event)

    parent_ref = ParentRef(
        instance_id=parent.instance_id,
        execution_id=parent.execution_id,
        task_scheduled_id=action.id,
        name=parent.name,
        version=parent.version,
    )
    execution_id = state.new_id()
    version = optional_str(sub, "version")
    child_input = optional_str(sub, "input")
    start = new_execution_started(
        name=sub.name,
        instance_id=child_id,
        execution_id=execution_id,
        now=state.now,
        version=version,
        input=child_input,
        tags=dict(sub.tags),
        parent=parent_ref,
        parent_trace_context=sub.parentTraceContext if sub.HasField("parentTraceContext") else None,
    )
    state.out.new_instances.append(NewInstanceSpec(
        instance_id=child_id,
        execution_id=execution_id,
        name=sub.name,
        version=version,
        input=child_input,
        parent=parent_ref,
        start_event=start,
        tags=dict(sub.tags),
    ))


def _send_event(state: _TurnState, action: pb.OrchestratorAction) -> None:
    send = action.sendEvent
    target = send.instance.instanceId
    event = new_event(state.now, action.id)
    event.eventSent.instanceId = target
    event.eventSent.name = send.name
    if send.HasField("data"):
        event.eventSent.input.CopyFrom(send.data)
    state.history.append(event)

    raised = new_event(state.now)
    raised.eventRaised.name = send.name
    if send.HasField("data"):
        raised.eventRaised.input.CopyFrom(send.data)
    state.out.messages.append(OutboundMessage(target_instance_id=target, event=raised))


def _terminate_other(state: _TurnState, action: pb.OrchestratorAction) -> None:
    term = action.terminateOrchestration
    # The history records the request as an event sent to the target (nothing more specific exists).
    event = new_event(state.now, action.id)
    event.eventSent.instanceId = term.instanceId
    event.eventSent.name = "terminate"
    if term.HasField("reason"):
        event.eventSent.input.CopyFrom(term.reason)
    state.history.append(event)
    state.out.terminations.append(TerminateSpec(
        instance_id=term.instanceId,
        output=optional_str(term, "reason"),
        recurse=term.recurse,
    ))


def _send_entity_message(state: _TurnState, action: pb.OrchestratorAction) -> None:
    message = action.sendEntityMessage
    kind = message.WhichOneof(ENTITY_MESSAGE_KIND)
    assert kind is not None  # validated
    body = getattr(message, kind)

    event = new_event(state.now, action.id)
    getattr(event, kind).CopyFrom(body)
    state.history.append(event)

    outbound = new_event(state.now)
    out_body = getattr(outbound, kind)
    out_body.CopyFrom(body)
    # Fill in the sender so the entity layer can route replies and own locks.
    if kind in ("entityOperationCalled", "entityLockRequested", "entityUnlockSent"):
        if not out_body.parentInstanceId.value:
            out_body.parentInstanceId.value = state.source.instance_id
    if kind == "entityOperationCalled" and not out_body.parentExecutionId.value:
        out_body.parentExecutionId.value = state.source.execution_id

    visible_at: datetime | None = None
    if kind == "entityLockRequested":
        target = body.lockSet[body.position]
    else:
        target = body.targetInstanceId.value
        if kind == "entityOperationSignaled" and body.HasField("scheduledTime"):
            scheduled = from_timestamp(body.scheduledTime)
            visible_at = scheduled if scheduled > state.now else None
    state.out.messages.append(OutboundMessage(target_instance_id=target, event=outbound, visible_at=visible_at))


def _default_failure(instance_id: str) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(
        errorType="OrchestrationFailed",
        errorMessage=f"orchestration '{instance_id}' failed without failure details",
    )


def _complete(state: _TurnState, action: pb.OrchestratorAction, turn: TurnInput) -> None:
    complete = action.completeOrchestration
    status = complete.orchestrationStatus
    result = optional_str(complete, "result")
    if status == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
        _continue_as_new(state, complete, result, turn)
        return

    failure: pb.TaskFailureDetails | None = None
    if complete.HasField("failureDetails"):
        failure = pb.TaskFailureDetails()
        failure.CopyFrom(complete.failureDetails)
    elif status == pb.ORCHESTRATION_STATUS_FAILED:
        failure = _default_failure(state.source.instance_id)

    state.history.append(execution_completed_event(status, result, failure, state.now, action.id))
    instance = state.instance
    instance.status = status
    instance.output = result
    instance.failure = failure
    instance.completed_at = state.now
    parent_message = parent_notification(instance, status, result, failure, state.now)
    if parent_message is not None:
        state.out.messages.append(parent_message)


def _original_trace_context(events: list[pb.HistoryEvent]) -> pb.TraceContext | None:
    for event in events:
        if event.HasField("executionStarted") and event.executionStarted.HasField("parentTraceContext"):
            return event.executionStarted.parentTraceContext
    return None


def _continue_as_new(
    state: _TurnState, complete: pb.CompleteOrchestrationAction, new_input: str | None, turn: TurnInput
) -> None:
    instance = state.instance
    execution_id = state.new_id()
    version = optional_str(complete, "newVersion")
    if version is None:
        version = instance.version
    start = new_execution_started(
        name=instance.name,
        instance_id=instance.instance_id,
        execution_id=execution_id,
        now=state.now,
        version=version,
        input=new_input,
        tags=instance.tags,
        parent=instance.parent,
        parent_trace_context=_original_trace_context([*turn.past_events, *turn.new_events]),
    )
    state.out.inbox_prepend = [start, *complete.carryoverEvents]
    instance.execution_id = execution_id
    instance.trace_context = None  # the new execution is a span of its own
    instance.input = new_input
    instance.version = version
    instance.status = pb.ORCHESTRATION_STATUS_RUNNING
    instance.output = None
    instance.failure = None
    instance.completed_at = None


def parent_notification(
    child: InstanceSnapshot,
    status: int,
    result: str | None,
    failure: pb.TaskFailureDetails | None,
    now: datetime,
) -> OutboundMessage | None:
    """The message telling a finished sub-orchestration's parent how it ended, or None without a parent."""
    parent = child.parent
    if parent is None:
        return None
    event = new_event(now)
    if status == pb.ORCHESTRATION_STATUS_COMPLETED:
        event.subOrchestrationInstanceCompleted.taskScheduledId = parent.task_scheduled_id
        if result is not None:
            event.subOrchestrationInstanceCompleted.result.value = result
    else:
        failed = event.subOrchestrationInstanceFailed
        failed.taskScheduledId = parent.task_scheduled_id
        if status == pb.ORCHESTRATION_STATUS_TERMINATED:
            message = f"sub-orchestration '{child.instance_id}' was terminated"
            if result:
                message += f": {result}"
            failed.failureDetails.CopyFrom(pb.TaskFailureDetails(
                errorType=TERMINATED_ERROR_TYPE, errorMessage=message, isNonRetriable=True,
            ))
        else:
            failed.failureDetails.CopyFrom(failure or _default_failure(child.instance_id))
    return OutboundMessage(
        target_instance_id=parent.instance_id,
        event=event,
        target_execution_id=parent.execution_id,
    )
