"""apply_turn: completion (with and without a parent), continue-as-new and rewind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_engine_fixtures import (
    EXECUTION_ID,
    INSTANCE_ID,
    NOW,
    complete,
    create_sub,
    create_timer,
    entity_signal,
    event_raised,
    execution_started_event,
    kinds,
    make_instance,
    make_parent,
    make_response,
    make_turn,
    orchestrator_started,
    run_turn,
    schedule_task,
    send_event,
    task_completed,
    ts,
)

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.model import InstanceSnapshot, InvalidTurnError, ParentRef, TurnInput, TurnResult

COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
FAILED = pb.ORCHESTRATION_STATUS_FAILED
TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED
CAN = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW


def failure(message: str = "boom") -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType="ValueError", errorMessage=message)


def test_completed_sets_output_and_records_execution_completed() -> None:
    result = run_turn(complete(3, COMPLETED, result='"done"'), instance=make_instance(pb.ORCHESTRATION_STATUS_PENDING))
    assert kinds(result.history_append) == ["orchestratorStarted", "executionCompleted", "orchestratorCompleted"]
    done = result.history_append[1]
    assert done.eventId == 3
    assert done.timestamp == ts(NOW)
    assert done.executionCompleted.orchestrationStatus == COMPLETED
    assert done.executionCompleted.result.value == '"done"'
    assert not done.executionCompleted.HasField("failureDetails")
    instance = result.instance
    assert (instance.status, instance.output, instance.failure, instance.completed_at) == (COMPLETED, '"done"', None, NOW)
    assert result.completed is True
    assert result.messages == []


def test_completed_without_result_leaves_output_none() -> None:
    result = run_turn(complete(0))
    assert result.instance.output is None
    assert not result.history_append[1].executionCompleted.HasField("result")


def test_failed_records_failure_details() -> None:
    result = run_turn(complete(1, FAILED, failure=failure("bad input")))
    assert result.instance.status == FAILED
    assert result.instance.failure == failure("bad input")
    assert result.instance.completed_at == NOW
    assert result.history_append[1].executionCompleted.failureDetails == failure("bad input")


def test_failed_without_details_gets_a_default_failure() -> None:
    result = run_turn(complete(1, FAILED))
    assert result.instance.failure is not None
    assert INSTANCE_ID in result.instance.failure.errorMessage
    assert result.history_append[1].executionCompleted.failureDetails == result.instance.failure


def test_terminated_by_worker() -> None:
    result = run_turn(complete(0, TERMINATED, result='"stopped"'))
    assert (result.instance.status, result.instance.output) == (TERMINATED, '"stopped"')
    assert result.instance.completed_at == NOW
    assert result.completed is True


def test_completed_child_notifies_parent() -> None:
    result = run_turn(complete(2, COMPLETED, result='"42"'), instance=make_instance(parent=make_parent()))
    [message] = result.messages
    assert message.target_instance_id == "parent-1"
    assert message.target_execution_id == "parent-exec"
    assert message.visible_at is None
    assert message.event.timestamp == ts(NOW)
    done = message.event.subOrchestrationInstanceCompleted
    assert done.taskScheduledId == 7
    assert done.result.value == '"42"'


def test_failed_child_notifies_parent_with_its_failure() -> None:
    result = run_turn(complete(2, FAILED, failure=failure("child broke")), instance=make_instance(parent=make_parent()))
    [message] = result.messages
    assert message.target_instance_id == "parent-1"
    failed = message.event.subOrchestrationInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails == failure("child broke")


def test_terminated_child_reports_failure_to_parent() -> None:
    result = run_turn(complete(2, TERMINATED, result='"why"'), instance=make_instance(parent=make_parent()))
    [message] = result.messages
    failed = message.event.subOrchestrationInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails.errorType == "OrchestrationTerminated"
    assert INSTANCE_ID in failed.failureDetails.errorMessage
    assert message.target_execution_id == "parent-exec"


def test_parent_without_execution_id_is_addressed_by_instance_only() -> None:
    parent = make_parent()
    parent.execution_id = None
    result = run_turn(complete(0), instance=make_instance(parent=parent))
    assert result.messages[0].target_execution_id is None


def test_completion_turn_keeps_outbound_effects_but_drops_its_timers() -> None:
    result = run_turn(
        send_event(0), create_timer(1, NOW + timedelta(minutes=1)), schedule_task(2), create_sub(3), entity_signal(4),
        complete(5),
    )
    assert kinds(result.history_append)[1:-1] == [
        "eventSent", "timerCreated", "taskScheduled", "subOrchestrationInstanceCreated",
        "entityOperationSignaled", "executionCompleted",
    ]
    assert [m.event.WhichOneof("eventType") for m in result.messages] == ["eventRaised", "entityOperationSignaled"]
    assert [t.task_id for t in result.activity_tasks] == [2]
    assert len(result.new_instances) == 1


def continue_turn(
    *actions: pb.OrchestratorAction, parent: ParentRef | None = None, version: str | None = "1.0"
) -> TurnResult:
    instance = make_instance(custom_status='"c"', parent=parent, version=version)
    return engine.apply_turn(make_turn(
        *actions,
        instance=instance,
        past=[execution_started_event(trace_parent="00-trace"), orchestrator_started(), task_completed(0)],
        new_events=[orchestrator_started(), event_raised("tick")],
    ))


def test_continue_as_new_starts_a_fresh_execution() -> None:
    carry = [event_raised("e1", '"1"'), event_raised("e2")]
    result = continue_turn(complete(4, CAN, result='"next"', carryover=carry), parent=make_parent())
    instance = result.instance
    assert instance.execution_id != EXECUTION_ID and instance.execution_id
    assert instance.input == '"next"'
    assert instance.version == "1.0"
    assert instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    assert (instance.output, instance.failure, instance.completed_at) == (None, None, None)
    assert instance.parent == make_parent()
    assert instance.tags == {"team": "a"}
    assert result.completed is False

    assert result.reset_history == []
    assert result.history_append == []
    assert kinds(result.inbox_prepend) == ["executionStarted", "eventRaised", "eventRaised"]
    assert result.inbox_prepend[1:] == carry
    start_event = result.inbox_prepend[0]
    assert start_event.timestamp == ts(NOW)
    start = start_event.executionStarted
    assert start.name == "my_orch"
    assert start.version.value == "1.0"
    assert start.input.value == '"next"'
    assert start.orchestrationInstance.instanceId == INSTANCE_ID
    assert start.orchestrationInstance.executionId.value == instance.execution_id
    assert start.parentInstance.taskScheduledId == 7
    assert start.parentInstance.orchestrationInstance.instanceId == "parent-1"
    assert start.parentInstance.orchestrationInstance.executionId.value == "parent-exec"
    assert dict(start.tags) == {"team": "a"}
    assert start.parentTraceContext.traceParent == "00-trace"
    # Still running: the parent is not told anything.
    assert result.messages == []


def test_continue_as_new_uses_new_version_when_given() -> None:
    result = continue_turn(complete(0, CAN, result="1", new_version="2.0"))
    assert result.instance.version == "2.0"
    assert result.inbox_prepend[0].executionStarted.version.value == "2.0"


def test_continue_as_new_without_version_or_input() -> None:
    result = continue_turn(complete(0, CAN), version=None)
    assert result.instance.version is None and result.instance.input is None
    start = result.inbox_prepend[0].executionStarted
    assert not start.HasField("version") and not start.HasField("input")
    assert not start.HasField("parentInstance")


def test_continue_as_new_gets_a_new_execution_id_every_time() -> None:
    first = continue_turn(complete(0, CAN))
    second = continue_turn(complete(0, CAN))
    assert first.instance.execution_id != second.instance.execution_id


def test_continue_as_new_drops_old_execution_tasks_but_still_sends_events() -> None:
    result = continue_turn(
        schedule_task(0), create_timer(1, NOW + timedelta(seconds=5)), send_event(2, target="peer", name="hello"),
        create_sub(3, instance_id="kid"), complete(4, CAN, result='"n"'),
    )
    assert result.activity_tasks == []
    [message] = result.messages
    assert message.target_instance_id == "peer"
    assert message.event.eventRaised.name == "hello"
    assert [spec.instance_id for spec in result.new_instances] == ["kid"]


def rewind_response(history: list[pb.HistoryEvent]) -> pb.OrchestratorResponse:
    action = pb.OrchestratorAction(id=-1)
    action.rewindOrchestration.newHistory.extend(history)
    return make_response(action)


REWOUND = pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent())


def clean_history(execution_id: str) -> list[pb.HistoryEvent]:
    return [execution_started_event(execution_id), orchestrator_started(), REWOUND]


def rewind_turn(instance: InstanceSnapshot, history: list[pb.HistoryEvent]) -> TurnInput:
    """A turn that delivers executionRewound to a finished history, answered with ``history``."""
    failed = pb.HistoryEvent(eventId=-1)
    failed.executionCompleted.orchestrationStatus = FAILED
    return make_turn(
        instance=instance,
        past=[execution_started_event(), failed],
        new_events=[orchestrator_started(), REWOUND],
        response=rewind_response(history),
    )


@pytest.mark.parametrize("status", [pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_RUNNING])
def test_rewind_replaces_history_and_makes_the_instance_runnable(status: int) -> None:
    history = clean_history("exec-rewound")
    instance = make_instance(status, output='"x"', failure=failure(), completed_at=NOW - timedelta(minutes=1))
    result = engine.apply_turn(rewind_turn(instance, history))
    assert result.reset_history == history
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    assert (result.instance.output, result.instance.failure, result.instance.completed_at) == (None, None, None)
    assert result.instance.execution_id == "exec-rewound"
    assert result.instance.last_updated_at == NOW
    assert kinds(result.inbox_prepend) == ["orchestratorStarted"]
    assert result.inbox_prepend[0].timestamp == ts(NOW)
    assert result.completed is False


def test_rewind_keeps_execution_id_when_history_has_none() -> None:
    started = execution_started_event()
    started.executionStarted.orchestrationInstance.ClearField("executionId")
    result = engine.apply_turn(rewind_turn(make_instance(FAILED), [started, REWOUND]))
    assert result.instance.execution_id == EXECUTION_ID


def test_rewind_of_a_completed_instance_is_rejected() -> None:
    turn = rewind_turn(make_instance(COMPLETED), clean_history("e"))
    with pytest.raises(InvalidTurnError, match="already COMPLETED"):
        engine.apply_turn(turn)


# --- actions after a completion (issue 13, item 6) ------------------------------------------------


def test_actions_after_a_completion_are_ignored() -> None:
    result = engine.apply_turn(make_turn(
        schedule_task(1),
        complete(2, FAILED, failure=failure("non-deterministic")),
        schedule_task(3),
        create_sub(4),
        send_event(5),
        create_timer(6, NOW + timedelta(minutes=1)),
        entity_signal(7),
        instance=make_instance(parent=make_parent()),
    ))
    # Nothing of the ignored actions is recorded: executionCompleted is the execution's last event
    # but for the turn's closing orchestratorCompleted.
    assert kinds(result.history_append) == [
        "orchestratorStarted", "taskScheduled", "executionCompleted", "orchestratorCompleted",
    ]
    assert result.instance.status == FAILED
    assert result.instance.failure is not None and result.instance.failure.errorMessage == "non-deterministic"
    # The action before the completion is carried out; none after it is.
    assert [t.task_id for t in result.activity_tasks] == [1]
    assert result.new_instances == [] and result.terminations == []
    assert [m.event.WhichOneof("eventType") for m in result.messages] == ["subOrchestrationInstanceFailed"]
    assert result.ignored_actions == [
        "scheduleTask 3", "createSubOrchestration 4", "sendEvent 5", "createTimer 6", "sendEntityMessage 7",
    ]


def test_actions_before_a_continue_as_new_are_carried_out_and_those_after_it_ignored() -> None:
    # The official Python worker lists an orchestration's pending actions (entity unlocks,
    # signals, events) before its continue-as-new.
    result = continue_turn(send_event(1), entity_signal(2), complete(3, CAN, result='"next"'), send_event(4, "late"))
    assert result.instance.status == pb.ORCHESTRATION_STATUS_RUNNING
    assert result.instance.execution_id != EXECUTION_ID
    assert kinds(result.inbox_prepend) == ["executionStarted"]
    assert [(m.target_instance_id, m.event.WhichOneof("eventType")) for m in result.messages] == [
        ("other", "eventRaised"), ("@counter@k1", "entityOperationSignaled"),
    ]
    assert result.ignored_actions == ["sendEvent 4"]


def test_a_turn_without_actions_after_its_completion_ignores_nothing() -> None:
    assert run_turn(schedule_task(1), complete(2)).ignored_actions == []
    assert run_turn(schedule_task(1)).ignored_actions == []


def test_split_at_completion() -> None:
    actions = [schedule_task(1), complete(2), schedule_task(3)]
    assert engine.split_at_completion(actions) == (actions[:2], actions[2:])
    assert engine.split_at_completion(actions[:2]) == (actions[:2], [])
    assert engine.split_at_completion(actions[:1]) == (actions[:1], None)
    assert engine.split_at_completion([]) == ([], None)


def test_actions_after_a_completion_are_still_validated() -> None:
    bad = pb.OrchestratorAction(id=3)
    bad.scheduleTask.SetInParent()  # no name
    with pytest.raises(InvalidTurnError, match="scheduleTask has no name"):
        run_turn(complete(2), bad)
