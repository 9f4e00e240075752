"""terminate, select_new_events and the event builders of the engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_engine_fixtures import (
    EXECUTION_ID,
    INSTANCE_ID,
    NOW,
    event_raised,
    execution_started_event,
    kinds,
    make_instance,
    make_parent,
    orchestrator_started,
    sub_completed,
    sub_failed,
    task_completed,
    task_failed,
    timer_fired,
    ts,
)

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.model import InvalidTurnError, ParentRef

TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED


@pytest.mark.parametrize(
    "status",
    [pb.ORCHESTRATION_STATUS_RUNNING, pb.ORCHESTRATION_STATUS_PENDING, pb.ORCHESTRATION_STATUS_SUSPENDED],
)
def test_terminate_records_terminated_then_completed(status: int) -> None:
    instance = make_instance(status, custom_status='"cs"')
    result = engine.terminate(instance, '"bye"', NOW)
    assert kinds(result.history_append) == ["executionTerminated", "executionCompleted"]
    terminated, completed = result.history_append
    assert terminated.executionTerminated.input.value == '"bye"'
    assert completed.executionCompleted.orchestrationStatus == TERMINATED
    assert completed.executionCompleted.result.value == '"bye"'
    assert all(e.timestamp == ts(NOW) for e in result.history_append)
    updated = result.instance
    assert (updated.status, updated.output, updated.failure) == (TERMINATED, '"bye"', None)
    assert updated.completed_at == NOW and updated.last_updated_at == NOW
    assert updated.custom_status == '"cs"'
    assert result.completed is True
    assert result.messages == [] and result.activity_tasks == [] and result.terminations == []
    assert instance.status == status  # the given snapshot is untouched


def test_terminate_without_output() -> None:
    result = engine.terminate(make_instance(), None, NOW)
    assert result.instance.output is None
    assert not result.history_append[0].executionTerminated.HasField("input")
    assert not result.history_append[1].executionCompleted.HasField("result")


def test_terminate_child_notifies_parent_as_failed() -> None:
    result = engine.terminate(make_instance(parent=make_parent()), '"reason"', NOW)
    [message] = result.messages
    assert message.target_instance_id == "parent-1"
    assert message.target_execution_id == "parent-exec"
    failed = message.event.subOrchestrationInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails.errorType == engine.TERMINATED_ERROR_TYPE == "OrchestrationTerminated"
    assert INSTANCE_ID in failed.failureDetails.errorMessage


@pytest.mark.parametrize(
    "status",
    [
        pb.ORCHESTRATION_STATUS_COMPLETED,
        pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_TERMINATED,
        pb.ORCHESTRATION_STATUS_CANCELED,
    ],
)
def test_terminate_terminal_instance_raises(status: int) -> None:
    with pytest.raises(InvalidTurnError, match=f"instance '{INSTANCE_ID}' is already"):
        engine.terminate(make_instance(status), None, NOW)


def scheduled(kind: str, event_id: int) -> pb.HistoryEvent:
    """The history event that schedules a task, timer or sub-orchestration with this id."""
    if kind == "timer":
        return pb.HistoryEvent(eventId=event_id, timerCreated=pb.TimerCreatedEvent())
    if kind == "sub":
        return pb.HistoryEvent(
            eventId=event_id, subOrchestrationInstanceCreated=pb.SubOrchestrationInstanceCreatedEvent(name="c")
        )
    return pb.HistoryEvent(eventId=event_id, taskScheduled=pb.TaskScheduledEvent(name="a"))


def scheduling_for(*results: pb.HistoryEvent) -> list[pb.HistoryEvent]:
    """One scheduling event per distinct (kind, id) among ``results``."""
    out: list[pb.HistoryEvent] = []
    seen: set[tuple[str, int]] = set()
    for event in results:
        kind = event.WhichOneof("eventType") or ""
        if kind.startswith("task"):
            key = ("task", getattr(event, kind).taskScheduledId)
        elif kind == "timerFired":
            key = ("timer", event.timerFired.timerId)
        elif kind.startswith("subOrchestration"):
            key = ("sub", getattr(event, kind).taskScheduledId)
        else:
            continue
        if key not in seen:
            seen.add(key)
            out.append(scheduled(*key))
    return out


def test_select_delivers_everything_without_duplicates_in_order() -> None:
    inbox = [event_raised("a"), event_raised("a"), task_completed(0), timer_fired(1), sub_completed(2), task_failed(3)]
    past = [execution_started_event(), *scheduling_for(*inbox)]
    assert engine.select_new_events(past, inbox) == ([0, 1, 2, 3, 4, 5], [])


def test_select_drops_results_for_nothing_scheduled() -> None:
    inbox = [task_completed(7), timer_fired(8), sub_failed(9), event_raised("x")]
    assert engine.select_new_events([execution_started_event()], inbox) == ([3], [0, 1, 2])


def test_select_admits_one_result_per_scheduling_of_a_reused_id() -> None:
    # The official SDK retries an activity under the same action id: two schedulings of id 1
    # admit two results; a third result for id 1 is a duplicate.
    past = [scheduled("task", 1), task_failed(1), scheduled("timer", 2), timer_fired(2), scheduled("task", 1)]
    assert engine.select_new_events(past, [task_completed(1), task_completed(1)]) == ([0], [1])


def test_select_empty_inbox() -> None:
    assert engine.select_new_events([], []) == ([], [])


@pytest.mark.parametrize(
    ("past", "duplicate"),
    [
        (task_completed(4), task_completed(4)),
        (task_completed(4), task_failed(4)),
        (task_failed(4), task_completed(4)),
        (timer_fired(4), timer_fired(4)),
        (sub_completed(4), sub_completed(4)),
        (sub_completed(4), sub_failed(4)),
        (sub_failed(4), sub_failed(4)),
        (execution_started_event(), execution_started_event()),
    ],
)
def test_select_drops_duplicates_of_history(past: pb.HistoryEvent, duplicate: pb.HistoryEvent) -> None:
    inbox = [event_raised("x"), duplicate, event_raised("y")]
    history = [orchestrator_started(), *scheduling_for(past), past]
    assert engine.select_new_events(history, inbox) == ([0, 2], [1])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (task_completed(1), task_completed(1)),
        (task_failed(1), task_completed(1)),
        (timer_fired(1), timer_fired(1)),
        (sub_failed(1), sub_completed(1)),
        (execution_started_event(), execution_started_event("exec-2")),
    ],
)
def test_select_drops_duplicates_within_the_inbox(first: pb.HistoryEvent, second: pb.HistoryEvent) -> None:
    past = scheduling_for(first, second)
    assert engine.select_new_events(past, [first, event_raised("x"), second]) == ([0, 1], [2])


def test_select_keeps_results_of_different_kinds_and_ids() -> None:
    # Activities, timers and sub-orchestrations share id space but are different resolutions.
    inbox = [timer_fired(1), sub_completed(1), task_completed(2), timer_fired(2)]
    past = [*scheduling_for(task_completed(1), *inbox), task_completed(1)]
    assert engine.select_new_events(past, inbox) == ([0, 1, 2, 3], [])


def test_select_drops_duplicate_entity_responses() -> None:
    completed = pb.HistoryEvent(entityOperationCompleted=pb.EntityOperationCompletedEvent(requestId="r1"))
    failed = pb.HistoryEvent(entityOperationFailed=pb.EntityOperationFailedEvent(requestId="r1"))
    other = pb.HistoryEvent(entityOperationCompleted=pb.EntityOperationCompletedEvent(requestId="r2"))
    granted = pb.HistoryEvent(entityLockGranted=pb.EntityLockGrantedEvent(criticalSectionId="cs"))
    assert engine.select_new_events([completed], [failed, other, granted, granted]) == ([1, 2], [0, 3])


def test_new_orchestrator_started() -> None:
    event = engine.new_orchestrator_started(NOW)
    assert kinds([event]) == ["orchestratorStarted"]
    assert event.eventId == -1
    assert event.timestamp == ts(NOW)


def test_activity_result_event_completed() -> None:
    response = pb.ActivityResponse(instanceId=INSTANCE_ID, taskId=3)
    response.result.value = '"ok"'
    event = engine.activity_result_event(3, response, NOW)
    assert event.eventId == -1
    assert event.timestamp == ts(NOW)
    assert event.taskCompleted.taskScheduledId == 3
    assert event.taskCompleted.result.value == '"ok"'


def test_activity_result_event_without_result() -> None:
    event = engine.activity_result_event(5, pb.ActivityResponse(taskId=5), NOW)
    assert event.taskCompleted.taskScheduledId == 5
    assert not event.taskCompleted.HasField("result")


def test_activity_result_event_failed() -> None:
    response = pb.ActivityResponse(taskId=2)
    response.failureDetails.errorType = "KeyError"
    response.failureDetails.errorMessage = "missing"
    event = engine.activity_result_event(2, response, NOW)
    assert kinds([event]) == ["taskFailed"]
    assert event.taskFailed.taskScheduledId == 2
    assert event.taskFailed.failureDetails.errorMessage == "missing"


def test_new_execution_started_with_everything() -> None:
    start_at = NOW + timedelta(minutes=5)
    trace = pb.TraceContext(traceParent="00-ef")
    parent = ParentRef(instance_id="p", execution_id=None, task_scheduled_id=1)
    event = engine.new_execution_started(
        name="orch", instance_id="i", execution_id="e", now=NOW, version="1", input='"in"',
        tags={"a": "b"}, scheduled_start_at=start_at, parent=parent, parent_trace_context=trace,
    )
    assert event.eventId == -1 and event.timestamp == ts(NOW)
    start = event.executionStarted
    assert (start.name, start.version.value, start.input.value) == ("orch", "1", '"in"')
    assert start.orchestrationInstance.instanceId == "i"
    assert start.orchestrationInstance.executionId.value == "e"
    assert dict(start.tags) == {"a": "b"}
    assert start.scheduledStartTimestamp == ts(start_at)
    assert start.parentTraceContext.traceParent == "00-ef"
    assert start.parentInstance.taskScheduledId == 1
    assert start.parentInstance.orchestrationInstance.instanceId == "p"
    assert not start.parentInstance.orchestrationInstance.HasField("executionId")
    assert not start.parentInstance.HasField("name")


def test_new_execution_started_minimal() -> None:
    event = engine.new_execution_started(name="orch", instance_id="i", execution_id=EXECUTION_ID, now=NOW)
    start = event.executionStarted
    for name in ("version", "input", "parentInstance", "scheduledStartTimestamp", "parentTraceContext"):
        assert not start.HasField(name)
    assert dict(start.tags) == {}


def test_new_execution_id_is_unique() -> None:
    ids = {engine.new_execution_id() for _ in range(100)}
    assert len(ids) == 100
