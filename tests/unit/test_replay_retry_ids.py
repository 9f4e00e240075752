"""Task ids of retried calls, in both numberings a history may hold.

The official SDK schedules each new attempt of a retried activity or sub-orchestration
under the call's first id (only the retry timers take new ids); our earlier versions gave
every attempt a new id. New turns follow the official numbering; histories written the
old way (or partly the old way) still replay, the engine telling them apart from the
history itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from history_builders import Instance, kinds, output
from test_replay_resume import MODES, ResumedInstance, make

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.replay import ExecutionResults

DELAY = timedelta(seconds=5)
POLICY = task.RetryPolicy(first_retry_interval=DELAY, max_number_of_attempts=3)
CHILD_ID = "inst-1:0003"  # the child's instance ID under the official numbering


def retried(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("flaky", input="a", retry_policy=POLICY)
    b = yield ctx.call_sub_orchestrator("child", input="b", retry_policy=POLICY)
    c = yield ctx.call_activity("last", input="c")
    return [a, b, c]


def only(result: ExecutionResults, kind: str) -> pb.OrchestratorAction:
    assert kinds(result.actions) == [kind], result
    return result.actions[0]


def fire(inst: Instance, result: ExecutionResults) -> ExecutionResults:
    """Fire the only (retry) timer of ``result`` at its due time."""
    timer = only(result, "createTimer")
    fire_at = ph.to_datetime(timer.createTimer.fireAt)
    return inst.turn(ph.new_timer_fired_event(timer.id, fire_at), advance=fire_at - inst.now)


def drive_official_numbering(inst: Instance) -> None:
    """Run ``retried`` through one retry of each call, checking every id against the official numbering."""
    assert only(inst.start(), "scheduleTask").id == 1
    waited = inst.turn(ph.new_task_failed_event(1, RuntimeError("first")))
    assert only(waited, "createTimer").id == 2
    again = only(fire(inst, waited), "scheduleTask")
    assert (again.id, again.scheduleTask.name, again.scheduleTask.input.value) == (1, "flaky", '"a"')

    child = only(inst.turn(ph.new_task_completed_event(1, '"A"')), "createSubOrchestration")
    assert (child.id, child.createSubOrchestration.instanceId) == (3, CHILD_ID)
    waited = inst.turn(ph.new_sub_orchestration_failed_event(3, RuntimeError("child")))
    assert only(waited, "createTimer").id == 4
    again = only(fire(inst, waited), "createSubOrchestration")
    assert (again.id, again.createSubOrchestration.instanceId) == (3, CHILD_ID)

    last = only(inst.turn(ph.new_sub_orchestration_completed_event(3, '"B"')), "scheduleTask")
    assert (last.id, last.scheduleTask.name) == (5, "last")
    assert output(inst.turn(ph.new_task_completed_event(5, '"C"'))) == ["A", "B", "C"]


def test_new_attempts_keep_the_first_id_and_timers_take_new_ones() -> None:
    inst = Instance(make(retried), "retried")
    drive_official_numbering(inst)  # every turn replays the whole history so far
    scheduled = [(e.eventId, e.taskScheduled.name) for e in inst.history if e.HasField("taskScheduled")]
    assert scheduled == [(1, "flaky"), (1, "flaky"), (5, "last")]
    created = [e.eventId for e in inst.history if e.HasField("subOrchestrationInstanceCreated")]
    assert created == [3, 3]


@pytest.mark.parametrize("mode", MODES)
def test_resuming_turn_by_turn_equals_a_full_replay(mode: str) -> None:
    inst = ResumedInstance(make(retried), "retried", mode=mode)
    drive_official_numbering(inst)
    inst.check_resumed()


# ------------------------------------------------- histories of earlier versions


def legacy_turn(inst: Instance, *events: pb.HistoryEvent, records: list[pb.HistoryEvent],
                advance: timedelta = timedelta(seconds=1)) -> None:
    """Append a turn as our earlier versions had it recorded (the engine does not run)."""
    if inst.history:
        inst.now += advance
    inst.history.append(ph.new_orchestrator_started_event(inst.now))
    inst.history.extend(events)
    inst.history.extend(records)
    inst.history.append(ph.new_orchestrator_completed_event(inst.now))


def legacy_activity_retry(inst: Instance) -> None:
    """Turns 0-2 the old way: ``flaky`` fails at id 1, timer 2, the retry goes under id 3."""
    start = ph.new_execution_started_event("retried", inst.instance_id, None, timestamp=inst.now)
    legacy_turn(inst, start, records=[ph.new_task_scheduled_event(1, "flaky", '"a"')])
    fire_at = inst.now + timedelta(seconds=1) + DELAY
    legacy_turn(inst, ph.new_task_failed_event(1, RuntimeError("first")),
                records=[ph.new_timer_created_event(2, fire_at)])
    legacy_turn(inst, ph.new_timer_fired_event(2, fire_at), advance=DELAY,
                records=[ph.new_task_scheduled_event(3, "flaky", '"a"')])


def legacy_sub_orchestration_retry(inst: Instance) -> None:
    """Turns 3-5 the old way: the child (id 4) fails, timer 5, the retry goes under id 6."""
    legacy_turn(inst, ph.new_task_completed_event(3, '"A"'),
                records=[ph.new_sub_orchestration_created_event(4, "child", "inst-1:0004", '"b"')])
    fire_at = inst.now + timedelta(seconds=1) + DELAY
    legacy_turn(inst, ph.new_sub_orchestration_failed_event(4, RuntimeError("child")),
                records=[ph.new_timer_created_event(5, fire_at)])
    legacy_turn(inst, ph.new_timer_fired_event(5, fire_at), advance=DELAY,
                records=[ph.new_sub_orchestration_created_event(6, "child", "inst-1:0004", '"b"')])


def test_a_history_with_new_ids_for_retries_still_replays() -> None:
    inst = Instance(make(retried), "retried")
    legacy_activity_retry(inst)
    legacy_sub_orchestration_retry(inst)
    last = only(inst.turn(ph.new_sub_orchestration_completed_event(6, '"B"')), "scheduleTask")
    assert (last.id, last.scheduleTask.name) == (7, "last")  # the old numbering goes on
    assert output(inst.turn(ph.new_task_completed_event(7, '"C"'))) == ["A", "B", "C"]


def test_a_history_switching_numbering_midway_replays() -> None:
    # The activity was retried by an earlier version, the child is retried by this one.
    inst = Instance(make(retried), "retried")
    legacy_activity_retry(inst)
    child = only(inst.turn(ph.new_task_completed_event(3, '"A"')), "createSubOrchestration")
    assert (child.id, child.createSubOrchestration.instanceId) == (4, "inst-1:0004")
    waited = inst.turn(ph.new_sub_orchestration_failed_event(4, RuntimeError("child")))
    assert only(waited, "createTimer").id == 5
    again = only(fire(inst, waited), "createSubOrchestration")
    assert (again.id, again.createSubOrchestration.instanceId) == (4, "inst-1:0004")
    last = only(inst.turn(ph.new_sub_orchestration_completed_event(4, '"B"')), "scheduleTask")
    assert last.id == 6
    assert output(inst.turn(ph.new_task_completed_event(6, '"C"'))) == ["A", "B", "C"]


def test_one_call_retried_the_old_way_then_the_new_way() -> None:
    inst = Instance(make(retried), "retried")
    legacy_activity_retry(inst)  # the second attempt ran under id 3
    waited = inst.turn(ph.new_task_failed_event(3, RuntimeError("second")))
    assert only(waited, "createTimer").id == 4
    third = only(fire(inst, waited), "scheduleTask")
    assert (third.id, third.scheduleTask.name) == (1, "flaky")  # back under the call's first id
    child = only(inst.turn(ph.new_task_completed_event(1, '"A"')), "createSubOrchestration")
    assert child.id == 5
    assert inst.turn(ph.new_sub_orchestration_completed_event(5, '"B"')).actions[0].id == 6


def test_a_resumed_replay_tells_the_old_numbering_from_the_events_it_is_given() -> None:
    inst = ResumedInstance(make(retried), "retried", mode="every-turn")
    inst.start()
    timer = only(inst.turn(ph.new_task_failed_event(1, RuntimeError("first"))), "createTimer")
    assert ph.to_datetime(timer.createTimer.fireAt) == inst.now + DELAY
    # The kept state stops here: the turns that follow were run by an earlier version.
    fire_at = inst.now + DELAY
    legacy_turn(inst, ph.new_timer_fired_event(2, fire_at), advance=DELAY,
                records=[ph.new_task_scheduled_event(3, "flaky", '"a"')])
    legacy_sub_orchestration_retry(inst)
    last = only(inst.turn(ph.new_sub_orchestration_completed_event(6, '"B"')), "scheduleTask")
    assert last.id == 7
    assert output(inst.turn(ph.new_task_completed_event(7, '"C"'))) == ["A", "B", "C"]
    inst.check_resumed()
    assert inst.longest_delta > 10  # the resumed turn replayed all the old-numbered turns at once
