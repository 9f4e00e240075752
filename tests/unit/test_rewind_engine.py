"""The sidecar engine's side of rewind: checking the rewritten history and restarting what it waits for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_engine_fixtures import (
    EXECUTION_ID,
    INSTANCE_ID,
    NOW,
    TURN_STARTED,
    execution_started_event,
    kinds,
    make_instance,
    make_response,
    make_turn,
    orchestrator_started,
    schedule_task,
    sub_completed,
    task_completed,
    timer_fired,
    ts,
)

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.engine_rewind import is_rewind_turn, rewound_event
from sidecar.model import InvalidTurnError, TurnInput, TurnResult

FAILED = pb.ORCHESTRATION_STATUS_FAILED
RUNNING = pb.ORCHESTRATION_STATUS_RUNNING


def finished() -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=-1, timestamp=ts(TURN_STARTED))
    event.executionCompleted.orchestrationStatus = FAILED
    return event


def rewind_request(reason: str | None = "oops") -> list[pb.HistoryEvent]:
    return [orchestrator_started(), rewound_event(NOW, reason)]


def scheduled(event_id: int, name: str = "act", version: str | None = None) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=event_id, timestamp=ts(TURN_STARTED))
    event.taskScheduled.name = name
    event.taskScheduled.input.value = f'"{name}-input"'
    if version is not None:
        event.taskScheduled.version.value = version
    event.taskScheduled.tags["k"] = "v"
    return event


def timer_created(event_id: int, fire_in: timedelta) -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=event_id, timestamp=ts(TURN_STARTED))
    event.timerCreated.fireAt.CopyFrom(ts(NOW + fire_in))
    return event


def sub_created(event_id: int, child_id: str, version: str | None = "3") -> pb.HistoryEvent:
    event = pb.HistoryEvent(eventId=event_id, timestamp=ts(TURN_STARTED))
    created = event.subOrchestrationInstanceCreated
    created.instanceId = child_id
    created.name = "child_orch"
    created.input.value = '"child-in"'
    if version is not None:
        created.version.value = version
    created.tags["team"] = "kids"
    return event


def answer(*history: pb.HistoryEvent) -> pb.OrchestratorResponse:
    action = pb.OrchestratorAction(id=-1)
    action.rewindOrchestration.newHistory.extend(history)
    return make_response(action)


def rewritten(*body: pb.HistoryEvent, execution_id: str = "exec-2") -> list[pb.HistoryEvent]:
    return [orchestrator_started(), execution_started_event(execution_id), *body, *rewind_request()]


def rewind(history: list[pb.HistoryEvent], status: int = RUNNING) -> TurnResult:
    turn = TurnInput(
        instance=make_instance(status),
        past_events=[execution_started_event(), finished()],
        new_events=rewind_request(),
        response=answer(*history),
        now=NOW,
    )
    return engine.apply_turn(turn)


def test_a_rewind_turn_is_recognised_only_on_a_finished_history() -> None:
    done = TurnInput(make_instance(), [execution_started_event(), finished()], rewind_request(), make_response(), NOW)
    live = TurnInput(make_instance(), [execution_started_event()], rewind_request(), make_response(), NOW)
    assert is_rewind_turn(done) and not is_rewind_turn(live)


def test_rewound_event_carries_reason_and_parent_execution() -> None:
    event = rewound_event(NOW, "why", "parent-exec")
    assert event.executionRewound.reason.value == "why"
    assert event.executionRewound.parentExecutionId.value == "parent-exec"
    assert event.timestamp == ts(NOW)
    bare = rewound_event(NOW, None)
    assert bare.HasField("executionRewound")
    assert not bare.executionRewound.HasField("reason") and not bare.executionRewound.HasField("parentExecutionId")


def test_history_is_replaced_and_the_instance_woken_with_the_new_execution() -> None:
    history = rewritten(scheduled(1), task_completed(1))
    result = rewind(history)
    assert result.reset_history == history
    assert (result.instance.status, result.instance.execution_id) == (RUNNING, "exec-2")
    assert kinds(result.inbox_prepend) == ["orchestratorStarted"]
    assert result.rewind is not None and result.rewind.reason == "oops" and result.rewind.children == []
    assert result.activity_tasks == [] and result.messages == []


def test_activities_without_a_result_are_queued_again() -> None:
    result = rewind(rewritten(scheduled(1, "done"), task_completed(1), scheduled(2, "inflight", version="5")))
    [task] = result.activity_tasks
    assert (task.instance_id, task.execution_id, task.task_id, task.name) == (INSTANCE_ID, "exec-2", 2, "inflight")
    assert (task.version, task.input, task.tags) == ("5", '"inflight-input"', {"k": "v"})
    unversioned = rewind(rewritten(scheduled(3)))
    assert unversioned.activity_tasks[0].version == "1.0"  # the orchestration's version


def test_unfired_timers_are_armed_again_at_their_fire_time_for_the_new_execution() -> None:
    result = rewind(rewritten(timer_created(1, timedelta(minutes=5)), timer_created(2, -timedelta(minutes=1)),
                              timer_created(3, timedelta(minutes=9)), timer_fired(3)))
    by_id = {m.event.timerFired.timerId: m for m in result.messages}
    assert set(by_id) == {1, 2}
    assert by_id[1].visible_at == NOW + timedelta(minutes=5)
    assert by_id[2].visible_at == NOW  # overdue: at once
    assert all(m.target_instance_id == INSTANCE_ID and m.target_execution_id == "exec-2" for m in by_id.values())


def test_children_without_a_result_are_handed_to_the_store() -> None:
    result = rewind(rewritten(sub_created(1, "kid-a"), sub_created(2, "kid-b"), sub_completed(2)))
    assert result.rewind is not None
    [spec] = result.rewind.children
    assert (spec.instance_id, spec.name, spec.version, spec.input, spec.tags) == (
        "kid-a", "child_orch", "3", '"child-in"', {"team": "kids"})
    assert spec.parent is not None
    assert (spec.parent.instance_id, spec.parent.execution_id, spec.parent.task_scheduled_id) == (
        INSTANCE_ID, "exec-2", 1)
    started = spec.start_event.executionStarted
    assert started.name == "child_orch" and started.orchestrationInstance.instanceId == "kid-a"
    assert started.parentInstance.orchestrationInstance.executionId.value == "exec-2"
    assert started.orchestrationInstance.executionId.value == spec.execution_id


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([*rewind_request()], "exactly one executionStarted"),
        ([execution_started_event(), execution_started_event(), *rewind_request()], "exactly one executionStarted"),
        ([execution_started_event(), finished()], "must not contain an executionCompleted"),
    ],
)
def test_malformed_rewritten_histories_are_rejected(history: list[pb.HistoryEvent], message: str) -> None:
    with pytest.raises(InvalidTurnError, match=message):
        rewind(history)


def test_a_history_of_another_orchestration_is_rejected() -> None:
    other = execution_started_event()
    other.executionStarted.name = "someone_else"
    with pytest.raises(InvalidTurnError, match="'someone_else'.*runs 'my_orch'"):
        rewind([other, *rewind_request()])


def test_ordinary_actions_do_not_answer_a_rewind_request() -> None:
    turn = TurnInput(make_instance(), [execution_started_event(), finished()], rewind_request(),
                     make_response(schedule_task(1)), NOW)
    with pytest.raises(InvalidTurnError, match="single rewindOrchestration action"):
        engine.apply_turn(turn)
    empty = TurnInput(make_instance(), [execution_started_event(), finished()], rewind_request(), make_response(), NOW)
    with pytest.raises(InvalidTurnError, match="being rewound"):
        engine.apply_turn(empty)


def test_a_rewind_nobody_asked_for_is_rejected() -> None:
    with pytest.raises(InvalidTurnError, match="not asked to rewind"):
        engine.apply_turn(make_turn(response=answer(*rewritten())))


def test_after_the_rewind_the_replay_turn_is_an_ordinary_turn() -> None:
    past = rewritten(scheduled(1), execution_id=EXECUTION_ID)
    result = engine.apply_turn(make_turn(schedule_task(2), past=past, new_events=[orchestrator_started()]))
    assert [t.task_id for t in result.activity_tasks] == [2]
    assert kinds(result.history_append) == ["orchestratorStarted", "taskScheduled", "orchestratorCompleted"]
