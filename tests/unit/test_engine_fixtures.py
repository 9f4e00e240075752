"""Builders of synthetic instances, events and worker responses shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.model import InstanceSnapshot, ParentRef, TurnInput, TurnResult

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(hours=1)
TURN_STARTED = NOW - timedelta(seconds=3)
INSTANCE_ID = "inst-1"
EXECUTION_ID = "exec-1"


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def make_instance(
    status: int = pb.ORCHESTRATION_STATUS_RUNNING,
    parent: ParentRef | None = None,
    **fields: object,
) -> InstanceSnapshot:
    values: dict[str, object] = {
        "instance_id": INSTANCE_ID,
        "execution_id": EXECUTION_ID,
        "name": "my_orch",
        "status": status,
        "created_at": CREATED,
        "last_updated_at": CREATED,
        "version": "1.0",
        "input": '"in"',
        "parent": parent,
        "tags": {"team": "a"},
    }
    values.update(fields)
    return InstanceSnapshot(**values)  # type: ignore[arg-type]


def make_parent() -> ParentRef:
    return ParentRef(
        instance_id="parent-1", execution_id="parent-exec", task_scheduled_id=7, name="parent_orch", version="2"
    )


def orchestrator_started(when: datetime = TURN_STARTED) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, timestamp=ts(when), orchestratorStarted=pb.OrchestratorStartedEvent())


def execution_started_event(execution_id: str = EXECUTION_ID, trace_parent: str = "") -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(CREATED))
    event.executionStarted.name = "my_orch"
    event.executionStarted.orchestrationInstance.instanceId = INSTANCE_ID
    event.executionStarted.orchestrationInstance.executionId.value = execution_id
    if trace_parent:
        event.executionStarted.parentTraceContext.traceParent = trace_parent
    return event


def event_raised(name: str, data: str | None = None) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.eventRaised.name = name
    if data is not None:
        event.eventRaised.input.value = data
    return event


def task_completed(task_id: int, result: str = "1") -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.taskCompleted.taskScheduledId = task_id
    event.taskCompleted.result.value = result
    return event


def task_failed(task_id: int) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.taskFailed.taskScheduledId = task_id
    event.taskFailed.failureDetails.errorType = "ValueError"
    return event


def timer_fired(timer_id: int) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.timerFired.timerId = timer_id
    event.timerFired.fireAt.CopyFrom(ts(NOW))
    return event


def sub_completed(task_id: int) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.subOrchestrationInstanceCompleted.taskScheduledId = task_id
    return event


def sub_failed(task_id: int) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.subOrchestrationInstanceFailed.taskScheduledId = task_id
    return event


def schedule_task(
    action_id: int,
    name: str = "act",
    version: str | None = None,
    input: str | None = None,
    tags: dict[str, str] | None = None,
    trace_parent: str = "",
) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.scheduleTask.name = name
    if version is not None:
        action.scheduleTask.version.value = version
    if input is not None:
        action.scheduleTask.input.value = input
    action.scheduleTask.tags.update(tags or {})
    if trace_parent:
        action.scheduleTask.parentTraceContext.traceParent = trace_parent
    return action


def create_timer(action_id: int, fire_at: datetime) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.createTimer.fireAt.CopyFrom(ts(fire_at))
    return action


def create_sub(
    action_id: int,
    name: str = "child_orch",
    instance_id: str = "",
    version: str | None = None,
    input: str | None = None,
    tags: dict[str, str] | None = None,
    trace_parent: str = "",
) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    sub = action.createSubOrchestration
    sub.name = name
    sub.instanceId = instance_id
    if version is not None:
        sub.version.value = version
    if input is not None:
        sub.input.value = input
    sub.tags.update(tags or {})
    if trace_parent:
        sub.parentTraceContext.traceParent = trace_parent
    return action


def send_event(action_id: int, target: str = "other", name: str = "ping", data: str | None = None) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.sendEvent.instance.instanceId = target
    action.sendEvent.name = name
    if data is not None:
        action.sendEvent.data.value = data
    return action


def complete(
    action_id: int,
    status: int = pb.ORCHESTRATION_STATUS_COMPLETED,
    result: str | None = None,
    failure: pb.TaskFailureDetails | None = None,
    new_version: str | None = None,
    carryover: Iterable[pb.HistoryEvent] = (),
) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    done = action.completeOrchestration
    done.orchestrationStatus = status  # type: ignore[assignment]
    if result is not None:
        done.result.value = result
    if failure is not None:
        done.failureDetails.CopyFrom(failure)
    if new_version is not None:
        done.newVersion.value = new_version
    done.carryoverEvents.extend(carryover)
    return action


def terminate_action(action_id: int, target: str = "victim", reason: str | None = None, recurse: bool = False) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.terminateOrchestration.instanceId = target
    if reason is not None:
        action.terminateOrchestration.reason.value = reason
    action.terminateOrchestration.recurse = recurse
    return action


def entity_signal(action_id: int, target: str = "@counter@k1", operation: str = "add", request_id: str = "r1",
                  scheduled: datetime | None = None) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    signal = action.sendEntityMessage.entityOperationSignaled
    signal.requestId = request_id
    signal.operation = operation
    signal.input.value = "5"
    if target:
        signal.targetInstanceId.value = target
    if scheduled is not None:
        signal.scheduledTime.CopyFrom(ts(scheduled))
    return action


def entity_call(action_id: int, target: str = "@counter@k1", request_id: str = "r2") -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    call = action.sendEntityMessage.entityOperationCalled
    call.requestId = request_id
    call.operation = "get"
    call.targetInstanceId.value = target
    call.parentInstanceId.value = INSTANCE_ID
    return action


def lock_request(action_id: int, lock_set: list[str], position: int = 0, section: str = "cs1") -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    lock = action.sendEntityMessage.entityLockRequested
    lock.criticalSectionId = section
    lock.lockSet.extend(lock_set)
    lock.position = position
    lock.parentInstanceId.value = INSTANCE_ID
    return action


def unlock(action_id: int, target: str = "@counter@k1", section: str = "cs1") -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    sent = action.sendEntityMessage.entityUnlockSent
    sent.criticalSectionId = section
    sent.targetInstanceId.value = target
    sent.parentInstanceId.value = INSTANCE_ID
    return action


def make_response(
    *actions: pb.OrchestratorAction, instance_id: str = INSTANCE_ID, custom_status: str | None = None
) -> pb.OrchestratorResponse:
    response = pb.OrchestratorResponse(instanceId=instance_id, completionToken="tok")
    response.actions.extend(actions)
    if custom_status is not None:
        response.customStatus.value = custom_status
    return response


def make_turn(
    *actions: pb.OrchestratorAction,
    instance: InstanceSnapshot | None = None,
    past: list[pb.HistoryEvent] | None = None,
    new_events: list[pb.HistoryEvent] | None = None,
    custom_status: str | None = None,
    response: pb.OrchestratorResponse | None = None,
) -> TurnInput:
    return TurnInput(
        instance=instance if instance is not None else make_instance(),
        past_events=past if past is not None else [execution_started_event()],
        new_events=new_events if new_events is not None else [orchestrator_started()],
        response=response if response is not None else make_response(*actions, custom_status=custom_status),
        now=NOW,
    )


def run_turn(*actions: pb.OrchestratorAction, **kwargs: object) -> TurnResult:
    return engine.apply_turn(make_turn(*actions, **kwargs))  # type: ignore[arg-type]


def kinds(events: Iterable[pb.HistoryEvent]) -> list[str | None]:
    return [e.WhichOneof("eventType") for e in events]
