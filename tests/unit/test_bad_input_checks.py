"""The checks behind the sidecar's answers to bad input: quoting, Timestamp ranges, activity task ids."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from google.protobuf import timestamp_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import activity_result_event
from sidecar.engine_rewind import _check_history as check_rewound_history
from sidecar.engine_validate import timestamp_problem, timestamps_problem, validate_turn
from sidecar.model import InstanceSnapshot, InvalidTurnError, MismatchedResultError
from sidecar.quoting import bounded_message, quoted
from sidecar.servicer_util import BadRequest, check_work_items_request, optional_time

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_quoted_keeps_short_values_and_cuts_long_ones() -> None:
    assert quoted("abc") == "'abc'"
    assert quoted("a\x00b\x7f") == "'a\\x00b\\x7f'"
    long = quoted("y" * 1_000_000)
    assert long == "'" + "y" * 200 + "...' (1,000,000 characters)"
    assert quoted("z" * 10, limit=4) == "'zzzz...' (10 characters)"


def test_bounded_message() -> None:
    assert bounded_message("short") == "short"
    cut = bounded_message("m" * 5000, limit=100)
    assert cut.startswith("m" * 100 + "...") and "5,000 characters" in cut and len(cut) < 200


@pytest.mark.parametrize(
    ("seconds", "nanos", "words"),
    [
        (253402300800, 0, "seconds 253402300800"),
        (-62135596801, 0, "seconds -62135596801"),
        (0, -1, "nanos -1"),
        (0, 1_000_000_000, "nanos 1000000000"),
    ],
)
def test_timestamp_problem(seconds: int, nanos: int, words: str) -> None:
    problem = timestamp_problem(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "when")
    assert problem is not None and problem.startswith("when is out of range") and words in problem


def test_timestamps_at_the_ends_of_the_range_are_valid() -> None:
    assert timestamp_problem(timestamp_pb2.Timestamp(seconds=-62135596800), "t") is None
    assert timestamp_problem(timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_999), "t") is None


def test_timestamps_problem_finds_the_first_bad_timestamp_anywhere_and_names_its_path() -> None:
    response = pb.OrchestratorResponse()
    good = response.actions.add(id=1)
    good.createTimer.fireAt.seconds = 10
    bad = response.actions.add(id=2)
    carried = bad.completeOrchestration.carryoverEvents.add()
    carried.timerFired.fireAt.nanos = -5
    assert timestamps_problem(response) == (
        "actions[1].completeOrchestration.carryoverEvents[0].timerFired.fireAt is out of range: "
        "nanos -5 is not between 0 and 999999999"
    )
    assert timestamps_problem(pb.OrchestratorResponse(actions=[good])) is None
    assert timestamps_problem(pb.GetInstanceRequest(instanceId="x")) is None  # holds no Timestamp at all


def test_timestamps_in_a_rewind_history_are_checked() -> None:
    action = pb.OrchestratorAction(id=-1)
    action.rewindOrchestration.newHistory.add(timestamp=timestamp_pb2.Timestamp(seconds=253402300800))
    problem = timestamps_problem(pb.OrchestratorResponse(actions=[action]))
    assert problem is not None and problem.startswith("actions[0].rewindOrchestration.newHistory[0].timestamp")


def test_optional_time_names_the_field() -> None:
    request = pb.CreateInstanceRequest(scheduledStartTimestamp=timestamp_pb2.Timestamp(seconds=253402300800))
    with pytest.raises(BadRequest, match="scheduledStartTimestamp is out of range"):
        optional_time(request, "scheduledStartTimestamp")
    assert optional_time(pb.CreateInstanceRequest(), "scheduledStartTimestamp") is None


def test_activity_result_for_another_task() -> None:
    with pytest.raises(MismatchedResultError, match="taskId 3 does not match task 2"):
        activity_result_event(2, pb.ActivityResponse(taskId=3), NOW)
    assert activity_result_event(2, pb.ActivityResponse(taskId=2), NOW).taskCompleted.taskScheduledId == 2
    assert activity_result_event(2, pb.ActivityResponse(), NOW).taskCompleted.taskScheduledId == 2  # 0: unset


def test_negative_work_item_limits() -> None:
    check_work_items_request(pb.GetWorkItemsRequest(maxConcurrentActivityWorkItems=0))
    with pytest.raises(BadRequest, match="maxConcurrentEntityWorkItems must not be negative"):
        check_work_items_request(pb.GetWorkItemsRequest(maxConcurrentEntityWorkItems=-3))


def test_messages_about_a_worker_response_quote_its_values_bounded() -> None:
    instance = InstanceSnapshot(instance_id="i", execution_id="e", name="orch",
                                status=pb.ORCHESTRATION_STATUS_FAILED, created_at=NOW, last_updated_at=NOW)
    started = pb.HistoryEvent(executionStarted=pb.ExecutionStartedEvent(name="n" * 100_000))
    with pytest.raises(InvalidTurnError) as err:
        check_rewound_history(instance, [started])
    assert "(100,000 characters)" in str(err.value) and len(str(err.value)) < 400
    response = pb.OrchestratorResponse(instanceId="z" * 100_000)
    with pytest.raises(InvalidTurnError) as err:
        validate_turn(dataclasses.replace(instance, status=pb.ORCHESTRATION_STATUS_RUNNING), response)
    assert "(100,000 characters)" in str(err.value) and len(str(err.value)) < 400
