"""apply_turn rejects invalid worker responses with InvalidTurnError naming the problem, applying nothing."""

from __future__ import annotations

import copy

import pytest
from test_engine_fixtures import (
    INSTANCE_ID,
    complete,
    create_sub,
    create_timer,
    entity_call,
    entity_signal,
    lock_request,
    make_instance,
    make_response,
    make_turn,
    schedule_task,
    send_event,
    terminate_action,
    unlock,
)

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.model import InvalidTurnError, TurnInput


def assert_rejected(turn: TurnInput, *fragments: str) -> None:
    before_instance = copy.deepcopy(turn.instance)
    before_response = turn.response.SerializeToString()
    with pytest.raises(InvalidTurnError) as raised:
        engine.apply_turn(turn)
    for fragment in fragments:
        assert fragment in str(raised.value)
    # Nothing was changed in what the engine was given.
    assert turn.instance == before_instance
    assert turn.response.SerializeToString() == before_response


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (pb.ORCHESTRATION_STATUS_COMPLETED, "COMPLETED"),
        (pb.ORCHESTRATION_STATUS_FAILED, "FAILED"),
        (pb.ORCHESTRATION_STATUS_TERMINATED, "TERMINATED"),
        (pb.ORCHESTRATION_STATUS_CANCELED, "CANCELED"),
    ],
)
def test_terminal_instance_is_rejected(status: int, name: str) -> None:
    turn = make_turn(schedule_task(0), instance=make_instance(status))
    assert_rejected(turn, f"instance '{INSTANCE_ID}' is already {name}")


def test_mismatched_instance_id_is_rejected() -> None:
    turn = make_turn(response=make_response(schedule_task(0), instance_id="someone-else"))
    assert_rejected(turn, "someone-else", INSTANCE_ID)


def test_empty_instance_id_is_tolerated() -> None:
    result = engine.apply_turn(make_turn(response=make_response(schedule_task(0), instance_id="")))
    assert [t.task_id for t in result.activity_tasks] == [0]


def test_action_without_kind_is_rejected() -> None:
    turn = make_turn(schedule_task(0), pb.OrchestratorAction(id=1))
    assert_rejected(turn, "action 1", "no known action kind")


def test_duplicate_action_ids_are_rejected() -> None:
    turn = make_turn(schedule_task(0), create_timer(1, make_instance().created_at), send_event(1))
    assert_rejected(turn, "duplicate action id 1")


def test_negative_action_id_is_rejected() -> None:
    assert_rejected(make_turn(schedule_task(-2)), "action id -2", "negative")


def test_minus_one_is_accepted_only_on_a_completion() -> None:
    # Official workers fail an orchestration (its code threw, a refused version) with action id -1.
    failure = pb.TaskFailureDetails(errorType="VersionMismatch", errorMessage="version 2 is not supported")
    result = engine.apply_turn(make_turn(complete(-1, pb.ORCHESTRATION_STATUS_FAILED, failure=failure)))
    assert result.instance.status == pb.ORCHESTRATION_STATUS_FAILED
    assert result.instance.failure == failure
    completed = [e for e in result.history_append if e.HasField("executionCompleted")]
    assert [e.eventId for e in completed] == [-1]
    assert_rejected(make_turn(schedule_task(-1)), "action id -1 (scheduleTask)", "negative")
    assert_rejected(make_turn(send_event(-1)), "action id -1 (sendEvent)", "negative")
    assert_rejected(make_turn(complete(-2, pb.ORCHESTRATION_STATUS_FAILED)), "action id -2", "negative")
    assert_rejected(
        make_turn(complete(-1, pb.ORCHESTRATION_STATUS_FAILED), complete(-1, pb.ORCHESTRATION_STATUS_FAILED)),
        "duplicate action id -1",
    )
    assert_rejected(
        make_turn(schedule_task(1), complete(-1, pb.ORCHESTRATION_STATUS_FAILED), create_timer(1, make_instance().created_at)),
        "duplicate action id 1",
    )


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (pb.ORCHESTRATION_STATUS_RUNNING, "RUNNING"),
        (pb.ORCHESTRATION_STATUS_PENDING, "PENDING"),
        (pb.ORCHESTRATION_STATUS_SUSPENDED, "SUSPENDED"),
        (pb.ORCHESTRATION_STATUS_CANCELED, "CANCELED"),
    ],
)
def test_completion_with_invalid_status_is_rejected(status: int, name: str) -> None:
    assert_rejected(make_turn(complete(0, status)), "completeOrchestration", f"invalid status {name}")


@pytest.mark.parametrize(
    "status",
    [
        pb.ORCHESTRATION_STATUS_COMPLETED,
        pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_TERMINATED,
        pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    ],
)
def test_completion_with_valid_status_is_accepted(status: int) -> None:
    result = engine.apply_turn(make_turn(complete(0, status)))
    expected = pb.ORCHESTRATION_STATUS_RUNNING if status == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW else status
    assert result.instance.status == expected


def test_two_completions_are_rejected() -> None:
    assert_rejected(make_turn(complete(0), complete(1)), "more than one completeOrchestration")


def no_fire_at() -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=0)
    action.createTimer.SetInParent()
    return action


def send_event_without_target() -> pb.OrchestratorAction:
    action = send_event(0)
    action.sendEvent.ClearField("instance")
    return action


def entity_message_without_kind() -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=0)
    action.sendEntityMessage.SetInParent()
    return action


def entity_call_without_operation() -> pb.OrchestratorAction:
    action = entity_call(0)
    action.sendEntityMessage.entityOperationCalled.operation = ""
    return action


def unlock_without_section() -> pb.OrchestratorAction:
    return unlock(0, section="")


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        (schedule_task(0, name=""), "scheduleTask has no name"),
        (create_sub(0, name=""), "createSubOrchestration has no name"),
        (no_fire_at(), "createTimer has no fireAt"),
        (send_event_without_target(), "sendEvent has no target instance"),
        (send_event(0, target=""), "sendEvent has no target instance"),
        (send_event(0, name=""), "sendEvent has no event name"),
        (terminate_action(0, target=""), "terminateOrchestration has no instanceId"),
        (entity_message_without_kind(), "sendEntityMessage has no message kind"),
        (entity_signal(0, target=""), "entityOperationSignaled has no targetInstanceId"),
        (entity_signal(0, request_id=""), "entityOperationSignaled has no requestId"),
        (entity_call_without_operation(), "entityOperationCalled has no operation"),
        (lock_request(0, []), "entityLockRequested has an empty lockSet"),
        (lock_request(0, ["@a@1"], position=1), "position 1 is outside its lockSet"),
        (lock_request(0, ["@a@1"], section=""), "entityLockRequested has no criticalSectionId"),
        (unlock_without_section(), "entityUnlockSent has no criticalSectionId"),
        (unlock(0, target=""), "entityUnlockSent has no targetInstanceId"),
    ],
)
def test_missing_required_fields_are_rejected(action: pb.OrchestratorAction, fragment: str) -> None:
    assert_rejected(make_turn(action), "action 0", fragment)


def test_one_bad_action_rejects_the_whole_turn() -> None:
    turn = make_turn(schedule_task(0), send_event(1), complete(2), schedule_task(3, name=""))
    assert_rejected(turn, "action 3", "scheduleTask has no name")


def test_rewind_mixed_with_other_actions_is_rejected() -> None:
    rewind = pb.OrchestratorAction(id=-1)
    rewind.rewindOrchestration.SetInParent()
    assert_rejected(make_turn(schedule_task(0), rewind), "rewindOrchestration must be the only action")


def test_terminate_of_terminal_instance_is_rejected() -> None:
    instance = make_instance(pb.ORCHESTRATION_STATUS_FAILED)
    with pytest.raises(InvalidTurnError, match="already FAILED"):
        engine.terminate(instance, None, instance.created_at)
