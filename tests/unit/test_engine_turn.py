"""apply_turn: every action kind, its history event and side effect; status and custom status."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from test_engine_fixtures import (
    EXECUTION_ID,
    INSTANCE_ID,
    NOW,
    TURN_STARTED,
    create_sub,
    create_timer,
    entity_call,
    entity_signal,
    event_raised,
    kinds,
    lock_request,
    make_instance,
    make_turn,
    orchestrator_started,
    run_turn,
    schedule_task,
    send_event,
    terminate_action,
    ts,
    unlock,
)

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.model import ParentRef


def test_first_turn_moves_pending_to_running() -> None:
    result = run_turn(instance=make_instance(pb.ORCHESTRATION_STATUS_PENDING))
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    assert result.instance.last_updated_at == NOW
    assert result.completed is False


def test_running_instance_stays_running_and_input_snapshot_is_not_mutated() -> None:
    turn = make_turn(schedule_task(0), instance=make_instance(custom_status='"old"'))
    before = copy.deepcopy(turn.instance)
    result = engine.apply_turn(turn)
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    assert turn.instance == before
    assert result.instance is not turn.instance


def test_turn_without_actions_appends_new_events_then_orchestrator_completed() -> None:
    new_events = [orchestrator_started(), event_raised("go", '"x"')]
    result = run_turn(new_events=new_events)
    assert result.history_append[:2] == new_events
    assert kinds(result.history_append) == ["orchestratorStarted", "eventRaised", "orchestratorCompleted"]
    # New events keep their own timestamps; the engine's own events are stamped with now.
    assert result.history_append[0].timestamp == ts(TURN_STARTED)
    assert result.history_append[-1].timestamp == ts(NOW)
    assert result.history_append[-1].eventId == -1
    assert result.reset_history is None
    assert result.activity_tasks == [] and result.messages == [] and result.new_instances == []
    assert result.terminations == [] and result.inbox_prepend == []


def test_every_engine_event_is_stamped_now_and_actions_keep_their_order() -> None:
    result = run_turn(
        send_event(3), schedule_task(0), create_timer(1, NOW + timedelta(minutes=1)), create_sub(2),
        terminate_action(4), entity_signal(5),
    )
    assert kinds(result.history_append) == [
        "orchestratorStarted", "eventSent", "taskScheduled", "timerCreated",
        "subOrchestrationInstanceCreated", "eventSent", "entityOperationSignaled", "orchestratorCompleted",
    ]
    assert [e.eventId for e in result.history_append[1:-1]] == [3, 0, 1, 2, 4, 5]
    for event in result.history_append[1:]:
        assert event.timestamp == ts(NOW)
    for message in result.messages:
        assert message.event.timestamp == ts(NOW)
    assert result.new_instances[0].start_event.timestamp == ts(NOW)


@pytest.mark.parametrize(("custom", "expected"), [('"busy"', '"busy"'), ("", ""), (None, None)])
def test_custom_status_is_set_from_response_or_cleared(custom: str | None, expected: str | None) -> None:
    result = run_turn(instance=make_instance(custom_status='"previous"'), custom_status=custom)
    assert result.instance.custom_status == expected


def test_schedule_task_records_task_scheduled_and_queues_activity() -> None:
    result = run_turn(schedule_task(0, "charge", version="2.1", input='{"a": 1}', tags={"k": "v"}, trace_parent="00-ab"))
    scheduled = result.history_append[1]
    assert scheduled.eventId == 0
    assert scheduled.taskScheduled.name == "charge"
    assert scheduled.taskScheduled.version.value == "2.1"
    assert scheduled.taskScheduled.input.value == '{"a": 1}'
    assert dict(scheduled.taskScheduled.tags) == {"k": "v"}
    assert scheduled.taskScheduled.parentTraceContext.traceParent == "00-ab"
    [task] = result.activity_tasks
    assert task.instance_id == INSTANCE_ID
    assert task.execution_id == EXECUTION_ID
    assert task.task_id == 0
    assert task.name == "charge"
    assert task.version == "2.1"
    assert task.input == '{"a": 1}'
    assert task.tags == {"k": "v"}


def test_schedule_task_without_version_or_input_gives_none() -> None:
    result = run_turn(schedule_task(4, "noop"), instance=make_instance(version=None))
    scheduled = result.history_append[1].taskScheduled
    assert not scheduled.HasField("version") and not scheduled.HasField("input")
    [task] = result.activity_tasks
    assert (task.task_id, task.version, task.input, task.tags) == (4, None, None, {})


def test_schedule_task_without_version_runs_under_the_orchestration_version() -> None:
    result = run_turn(schedule_task(4, "noop"), instance=make_instance(version="1.0"))
    assert not result.history_append[1].taskScheduled.HasField("version")  # history keeps what was asked
    [task] = result.activity_tasks
    assert task.version == "1.0"  # the queued task matches version-filtered activity streams


def test_create_timer_records_timer_created_and_schedules_timer_fired_to_self() -> None:
    fire_at = NOW + timedelta(minutes=10)
    result = run_turn(create_timer(2, fire_at))
    created = result.history_append[1]
    assert created.eventId == 2
    assert created.timerCreated.fireAt == ts(fire_at)
    [message] = result.messages
    assert message.target_instance_id == INSTANCE_ID
    assert message.target_execution_id == EXECUTION_ID
    assert message.visible_at == fire_at
    assert message.event.timerFired.timerId == 2
    assert message.event.timerFired.fireAt == ts(fire_at)
    assert result.activity_tasks == []


def test_create_sub_orchestration_with_explicit_id() -> None:
    instance = make_instance(version="3")
    result = run_turn(
        create_sub(5, "child_orch", "child-x", version="9", input='"cin"', tags={"t": "1"}, trace_parent="00-cd"),
        instance=instance,
    )
    created = result.history_append[1]
    assert created.eventId == 5
    sub = created.subOrchestrationInstanceCreated
    assert (sub.instanceId, sub.name, sub.version.value, sub.input.value) == ("child-x", "child_orch", "9", '"cin"')
    assert dict(sub.tags) == {"t": "1"}
    assert sub.parentTraceContext.traceParent == "00-cd"

    [spec] = result.new_instances
    assert spec.instance_id == "child-x"
    assert spec.name == "child_orch"
    assert spec.version == "9"
    assert spec.input == '"cin"'
    assert spec.tags == {"t": "1"}
    assert spec.execution_id and spec.execution_id != EXECUTION_ID
    assert spec.parent == ParentRef(
        instance_id=INSTANCE_ID, execution_id=EXECUTION_ID, task_scheduled_id=5, name="my_orch", version="3"
    )
    start = spec.start_event.executionStarted
    assert spec.start_event.eventId == -1
    assert start.name == "child_orch"
    assert start.version.value == "9"
    assert start.input.value == '"cin"'
    assert start.orchestrationInstance.instanceId == "child-x"
    assert start.orchestrationInstance.executionId.value == spec.execution_id
    assert start.parentInstance.taskScheduledId == 5
    assert start.parentInstance.name.value == "my_orch"
    assert start.parentInstance.version.value == "3"
    assert start.parentInstance.orchestrationInstance.instanceId == INSTANCE_ID
    assert start.parentInstance.orchestrationInstance.executionId.value == EXECUTION_ID
    assert dict(start.tags) == {"t": "1"}
    assert start.parentTraceContext.traceParent == "00-cd"
    assert result.messages == [] and result.activity_tasks == []


def test_create_sub_orchestration_without_id_gets_parent_based_id_and_fresh_executions() -> None:
    result = run_turn(create_sub(10), create_sub(0x1234))
    ids = [spec.instance_id for spec in result.new_instances]
    assert ids == [f"{INSTANCE_ID}:000a", f"{INSTANCE_ID}:1234"]
    assert [e.subOrchestrationInstanceCreated.instanceId for e in result.history_append[1:3]] == ids
    first, second = result.new_instances
    assert first.execution_id != second.execution_id
    assert first.version is None and first.input is None
    assert not first.start_event.executionStarted.HasField("version")
    assert engine.sub_orchestration_instance_id("p", 255) == "p:00ff"


def test_send_event_records_event_sent_and_raises_event_on_target() -> None:
    result = run_turn(send_event(1, target="other-inst", name="approve", data='"yes"'))
    sent = result.history_append[1]
    assert sent.eventId == 1
    assert (sent.eventSent.instanceId, sent.eventSent.name, sent.eventSent.input.value) == (
        "other-inst", "approve", '"yes"'
    )
    [message] = result.messages
    assert message.target_instance_id == "other-inst"
    assert message.target_execution_id is None
    assert message.visible_at is None
    assert message.event.eventRaised.name == "approve"
    assert message.event.eventRaised.input.value == '"yes"'


def test_send_event_without_data_leaves_input_unset() -> None:
    result = run_turn(send_event(1))
    assert not result.history_append[1].eventSent.HasField("input")
    assert not result.messages[0].event.eventRaised.HasField("input")


@pytest.mark.parametrize(("reason", "recurse"), [("stop it", True), (None, False)])
def test_terminate_orchestration_action_requests_termination(reason: str | None, recurse: bool) -> None:
    result = run_turn(terminate_action(3, "victim", reason=reason, recurse=recurse))
    [spec] = result.terminations
    assert (spec.instance_id, spec.output, spec.recurse) == ("victim", reason, recurse)
    assert result.history_append[1].eventId == 3
    assert result.history_append[1].eventSent.instanceId == "victim"
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING


def test_entity_signal_goes_to_the_entity_instance() -> None:
    result = run_turn(entity_signal(2, target="@counter@k1", operation="add", request_id="req-9"))
    recorded = result.history_append[1]
    assert recorded.eventId == 2
    assert recorded.entityOperationSignaled == make_turn(entity_signal(2, request_id="req-9")).response.actions[
        0
    ].sendEntityMessage.entityOperationSignaled
    [message] = result.messages
    assert message.target_instance_id == "@counter@k1"
    assert message.visible_at is None
    signal = message.event.entityOperationSignaled
    assert (signal.requestId, signal.operation, signal.input.value) == ("req-9", "add", "5")


def test_scheduled_entity_signal_becomes_visible_at_its_time() -> None:
    later = NOW + timedelta(hours=2)
    result = run_turn(entity_signal(0, scheduled=later), entity_signal(1, request_id="r9", scheduled=NOW - timedelta(seconds=1)))
    assert [m.visible_at for m in result.messages] == [later, None]


def test_entity_call_fills_in_the_caller_execution() -> None:
    result = run_turn(entity_call(4, target="@acct@bob"))
    assert result.history_append[1].entityOperationCalled.requestId == "r2"
    [message] = result.messages
    assert message.target_instance_id == "@acct@bob"
    call = message.event.entityOperationCalled
    assert call.parentInstanceId.value == INSTANCE_ID
    assert call.parentExecutionId.value == EXECUTION_ID
    assert call.operation == "get"


def test_lock_request_goes_to_the_entity_at_its_position() -> None:
    result = run_turn(lock_request(6, ["@a@1", "@b@2"], position=1))
    recorded = result.history_append[1]
    assert recorded.eventId == 6
    assert list(recorded.entityLockRequested.lockSet) == ["@a@1", "@b@2"]
    [message] = result.messages
    assert message.target_instance_id == "@b@2"
    assert message.event.entityLockRequested.criticalSectionId == "cs1"
    assert message.event.entityLockRequested.parentInstanceId.value == INSTANCE_ID


def test_unlock_goes_to_its_target() -> None:
    result = run_turn(unlock(7, target="@a@1"))
    assert result.history_append[1].entityUnlockSent.criticalSectionId == "cs1"
    assert result.history_append[1].eventId == 7
    [message] = result.messages
    assert message.target_instance_id == "@a@1"
    assert message.event.entityUnlockSent.criticalSectionId == "cs1"


def test_suspend_and_resume_events_set_the_status() -> None:
    suspended = pb.HistoryEvent(eventId=-1, executionSuspended=pb.ExecutionSuspendedEvent())
    resumed = pb.HistoryEvent(eventId=-1, executionResumed=pb.ExecutionResumedEvent())
    result = run_turn(new_events=[orchestrator_started(), suspended])
    assert result.instance.status == pb.ORCHESTRATION_STATUS_SUSPENDED
    result = run_turn(instance=make_instance(pb.ORCHESTRATION_STATUS_SUSPENDED), new_events=[orchestrator_started(), resumed])
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    result = run_turn(instance=make_instance(pb.ORCHESTRATION_STATUS_SUSPENDED))
    assert result.instance.status == pb.ORCHESTRATION_STATUS_SUSPENDED


def test_entity_message_helpers_keep_caller_given_parent() -> None:
    action = entity_call(1)
    action.sendEntityMessage.entityOperationCalled.parentExecutionId.value = "given-exec"
    result = run_turn(action)
    assert result.messages[0].event.entityOperationCalled.parentExecutionId.value == "given-exec"
