"""durabletask.testing without a sidecar: history builders, one-turn runs, replay of recorded histories.

Non-determinism messages must name the line of the test's own orchestrator statement; the
expected line numbers are computed from each function's first line, so moving a function
keeps them right while changing its body breaks them on purpose.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import OrchestrationStatus
from durabletask.entities import EntityInstanceId
from durabletask.testing import (
    DEFAULT_TIME,
    load_history,
    replay_histories,
    replay_history,
    run_turn,
    save_history,
    to_protobuf,
)
from durabletask.testing import history_builders as hb
from durabletask.testing.history_files import EVENT_KINDS

T1 = DEFAULT_TIME + timedelta(seconds=1)
T2 = DEFAULT_TIME + timedelta(seconds=2)
COUNTER = EntityInstanceId("counter", "a")
HERE = Path(__file__).name


def every_kind() -> list[history.HistoryEvent]:
    """One event of each kind the builders make, with their optional fields set."""
    return [
        hb.orchestrator_started(),
        hb.execution_started("orch", {"x": 1}, instance_id="i-1", version="2", parent_instance_id="p", tags={"k": "v"}),
        hb.task_scheduled(1, "act", [1, 2], version="1", tags={"t": "1"}),
        hb.task_completed(1, "done"),
        hb.task_failed(2, ValueError("bad")),
        hb.timer_created(3, T2),
        hb.timer_fired(3, T2),
        hb.sub_orchestration_created(4, "child", "i-1:0004", "in", version="3"),
        hb.sub_orchestration_completed(4, 7),
        hb.sub_orchestration_failed(5, "boom", error_type="builtins.KeyError"),
        hb.event_raised("approve", True),
        hb.event_sent(6, "other", "ping", {"a": None}),
        hb.execution_suspended("pause"),
        hb.execution_resumed("go"),
        hb.entity_operation_called(7, COUNTER, "add", "req-1", 5),
        hb.entity_operation_signaled(8, COUNTER, "reset", "req-2", scheduled_time=T2),
        hb.entity_operation_completed("req-1", 5),
        hb.entity_operation_failed("req-3", RuntimeError("entity failed")),
        hb.entity_lock_requested(9, "cs-1", [COUNTER]),
        hb.entity_lock_granted("cs-1"),
        hb.entity_unlock_sent(10, "cs-1", COUNTER),
        hb.continue_as_new(3),
        hb.generic_event("data"),
        hb.execution_rewound("fixed"),
        hb.execution_terminated("stop", recurse=True),
        hb.execution_completed("failed", failure="it failed"),
        hb.orchestrator_completed(),
    ]


# ----------------------------------------------------------------- builders


def test_builders_cover_every_kind_and_survive_the_wire_form() -> None:
    events = every_kind()
    kinds = {to_protobuf(e).WhichOneof("eventType") for e in events}
    assert kinds == EVENT_KINDS - {"historyState"}
    for event in events:
        assert history.from_protobuf(to_protobuf(event)) == event


def test_builders_encode_payloads_as_json_and_number_calls_by_task_id() -> None:
    scheduled = hb.task_scheduled(3, "act", {"n": 1})
    assert (scheduled.event_id, scheduled.name, json.loads(scheduled.input or "")) == (3, "act", {"n": 1})
    assert hb.task_completed(3).result is None
    failed = hb.task_failed(1, ValueError("no"))
    assert failed.failure_details is not None
    assert (failed.failure_details.error_type, failed.failure_details.message) == ("builtins.ValueError", "no")
    assert hb.orchestrator_started(datetime(2024, 5, 1)).timestamp == datetime(2024, 5, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("build", "error", "text"),
    [
        (lambda: hb.task_scheduled(-1, "a"), ValueError, "task id"),
        (lambda: hb.task_completed("1"), ValueError, "task id"),  # type: ignore[arg-type]
        (lambda: hb.execution_started(""), ValueError, "orchestrator's name"),
        (lambda: hb.execution_completed("done"), ValueError, "unknown completion status 'done'"),
        (lambda: hb.task_failed(1, 42), TypeError, "not int"),  # type: ignore[arg-type]
        (lambda: hb.orchestrator_started("now"), TypeError, "timestamp must be a datetime"),  # type: ignore[arg-type]
    ],
)
def test_builders_reject_bad_arguments(build: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        build()


# ------------------------------------------------------------- one turn


def approval(ctx: task.OrchestrationContext, amount: int):
    ctx.set_custom_status("checking")
    checked = yield ctx.call_activity("check", input=amount)
    if not checked:
        return "rejected"
    yield ctx.create_timer(timedelta(seconds=30))
    approved = yield ctx.wait_for_external_event("approve")
    return f"approved {amount}" if approved else "declined"


def started(name: str = "approval", value: Any = 5) -> list[history.HistoryEvent]:
    return [hb.orchestrator_started(), hb.execution_started(name, value)]


def first_turn_history() -> list[history.HistoryEvent]:
    return [*started(), hb.task_scheduled(1, "check", 5), hb.orchestrator_completed()]


def test_first_turn_returns_readable_and_raw_actions() -> None:
    result = run_turn(approval, [], started())
    assert result.status is OrchestrationStatus.RUNNING
    (action,) = result.actions
    assert (action.id, action.kind, action.name, action.input) == (1, "scheduleTask", "check", "5")
    assert action.description == "call_activity('check')"
    assert action.raw.scheduleTask.name == "check"
    assert result.get_custom_status() == "checking"
    assert result.output is None and result.failure_details is None


def test_later_turns_from_a_history() -> None:
    past = first_turn_history()
    result = run_turn(approval, past, [hb.orchestrator_started(T1), hb.task_completed(1, True)])
    (timer,) = result.actions
    assert (timer.kind, timer.fire_at) == ("createTimer", datetime(2024, 1, 1, 0, 0, 31))

    done = run_turn(approval, past, [hb.orchestrator_started(T1), hb.task_completed(1, False)])
    assert done.status is OrchestrationStatus.COMPLETED and done.output == "rejected"
    assert [a.kind for a in done.actions] == ["completeOrchestration"] and done.pending_actions == []


def test_a_failed_activity_fails_the_turn_with_details() -> None:
    result = run_turn(
        approval, first_turn_history(), [hb.orchestrator_started(T1), hb.task_failed(1, KeyError("gone"))]
    )
    assert result.status is OrchestrationStatus.FAILED
    assert result.failure_details is not None
    assert result.failure_details.error_type == "durabletask.task.TaskFailedError"
    assert "gone" in result.failure_details.message


def test_continue_as_new_and_terminate() -> None:
    def looping(ctx: task.OrchestrationContext, n: int):
        yield ctx.create_timer(timedelta(seconds=1))
        ctx.continue_as_new(n + 1)

    past = [*started("looping", 1), hb.timer_created(1, T1), hb.orchestrator_completed()]
    again = run_turn(looping, past, [hb.orchestrator_started(T1), hb.timer_fired(1, T1)])
    assert again.status is OrchestrationStatus.CONTINUED_AS_NEW and again.output == 2
    stopped = run_turn(looping, past, [hb.orchestrator_started(T1), hb.execution_terminated("enough")])
    assert stopped.status is OrchestrationStatus.TERMINATED and stopped.output == "enough"


def test_bad_turn_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="must begin with an executionStarted event.*begins with taskCompleted"):
        run_turn(approval, [hb.orchestrator_started()], [hb.task_completed(1, True)])
    with pytest.raises(ValueError, match="history is empty"):
        run_turn(approval, [], [hb.orchestrator_started()])
    with pytest.raises(TypeError, match="history event 1: not a history event: dict"):
        run_turn(approval, [], [hb.orchestrator_started(), {"executionStarted": {}}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a function"):
        run_turn("approval", [], started())  # type: ignore[arg-type]
    with pytest.raises(task.OrchestrationStateError, match="at least one new event"):
        run_turn(approval, first_turn_history(), [])


# ------------------------------------------------------------ whole replay


def recorded_until_approval() -> list[history.HistoryEvent]:
    return [
        *first_turn_history(),
        hb.orchestrator_started(T1), hb.task_completed(1, True, timestamp=T1),
        hb.timer_created(2, T1 + timedelta(seconds=30), timestamp=T1), hb.orchestrator_completed(T1),
    ]


def test_replay_of_a_running_history_reports_what_it_waits_for() -> None:
    result = replay_history(approval, recorded_until_approval())
    assert result.status is OrchestrationStatus.RUNNING
    assert result.actions == []
    assert result.waiting_for == ["create_timer(2024-01-01T00:00:31) with task id 2"]


def test_replay_of_a_completed_history_returns_its_output() -> None:
    fired = T1 + timedelta(seconds=30)
    events = [
        *recorded_until_approval(),
        hb.orchestrator_started(fired), hb.timer_fired(2, fired), hb.orchestrator_completed(fired),
        hb.orchestrator_started(T2 + timedelta(minutes=1)), hb.event_raised("approve", True),
        hb.execution_completed("completed", "approved 5"), hb.orchestrator_completed(),
    ]
    result = replay_history(approval, events)
    assert result.status is OrchestrationStatus.COMPLETED and result.output == "approved 5"

    def approves_differently(ctx: task.OrchestrationContext, amount: int):
        yield ctx.call_activity("check", input=amount)
        yield ctx.create_timer(timedelta(seconds=30))
        yield ctx.wait_for_external_event("approve")
        yield ctx.wait_for_external_event("approve-again")
        return "x"

    line = approves_differently.__code__.co_firstlineno + 4
    with pytest.raises(task.NonDeterminismError, match=f"ended COMPLETED .* still waiting at .*{HERE}:{line} "):
        replay_history(approves_differently, events)


def renamed_check(ctx: task.OrchestrationContext, amount: int):
    ctx.set_custom_status("checking")
    checked = yield ctx.call_activity("verify", input=amount)
    return checked


def test_changed_code_raises_naming_the_line_the_calls_and_the_event() -> None:
    line = renamed_check.__code__.co_firstlineno + 2
    with pytest.raises(task.NonDeterminismError) as caught:
        replay_history(renamed_check, recorded_until_approval())
    message = str(caught.value)
    assert "expected call_activity('verify') but history has a taskScheduled('check') at id 1" in message
    assert f"code:    call_activity('verify') at {__file__}:{line} (in renamed_check)" in message
    assert "history: call_activity('check') with task id 1, from taskScheduled event ID 1 at 2024-01-01T00:00:00 UTC" in message


def test_code_making_fewer_calls_names_where_it_waits() -> None:
    def skips_timer(ctx: task.OrchestrationContext, amount: int):
        yield ctx.call_activity("check", input=amount)
        return (yield ctx.wait_for_external_event("approve"))

    line = skips_timer.__code__.co_firstlineno + 2
    with pytest.raises(task.NonDeterminismError) as caught:
        replay_history(skips_timer, recorded_until_approval())
    message = str(caught.value)
    assert "history has a timerCreated at id 2 (from create_timer) but the orchestrator code made no call" in message
    assert f"made no such call; it is waiting at {__file__}:{line} (in skips_timer)" in message
    assert "from timerCreated event ID 2 at 2024-01-01T00:00:01 UTC" in message


def test_code_making_more_calls_names_the_extra_call() -> None:
    def checks_twice(ctx: task.OrchestrationContext, amount: int):
        yield task.when_all([
            ctx.call_activity("check", input=amount),
            ctx.call_activity("audit", input=amount),
        ])

    line = checks_twice.__code__.co_firstlineno + 3
    with pytest.raises(task.NonDeterminismError) as caught:
        replay_history(checks_twice, first_turn_history())
    message = str(caught.value)
    assert "calls call_activity('audit') (action id 2) but the history has no record of it" in message
    assert f"at {__file__}:{line} (in " in message


def test_entity_call_changes_name_the_line() -> None:
    def calls_counter(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_entity(EntityInstanceId("counter", "b"), "add", 1))

    events = [*started("calls_counter", None), hb.entity_operation_called(1, COUNTER, "add", "r-1", 1),
              hb.orchestrator_completed()]
    line = calls_counter.__code__.co_firstlineno + 1
    with pytest.raises(task.NonDeterminismError, match=rf"call_entity\('@counter@b', 'add'\) at .*{HERE}:{line} "):
        replay_history(calls_counter, events)


def test_non_determinism_message_stays_bounded() -> None:
    long_name = "a" * 5000

    def long_call(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity(long_name)

    with pytest.raises(task.NonDeterminismError) as caught:
        replay_history(long_call, [*started("long_call"), hb.task_scheduled(1, "b"), hb.orchestrator_completed()])
    code_line = next(line for line in str(caught.value).splitlines() if line.startswith("  code:"))
    assert len(code_line) < 400


# ------------------------------------------------------------------- files


def test_json_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    save_history(path, every_kind())
    assert load_history(path) == every_kind()
    assert json.loads(path.read_text())["format"] == "durabletask-history"
    assert replay_history(approval, _saved(tmp_path, recorded_until_approval())).status is OrchestrationStatus.RUNNING


def _saved(tmp_path: Path, events: list[history.HistoryEvent], name: str = "saved.json") -> Path:
    save_history(tmp_path / name, events)
    return tmp_path / name


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ('{"format": "durabletask-history", "version": 1, "events": [{"eventId": 1, "taskScheduledd": {}}]}',
         "event 0 has an unknown event kind 'taskScheduledd'"),
        ('{"format": "durabletask-history", "version": 1, "events": [{"eventId": 1}]}', "exactly one event kind"),
        ('{"format": "durabletask-history", "version": 1, "events": [{"taskScheduled": {"name": 3, "x": 1}}]}',
         r"event 0 \(taskScheduled\) does not parse"),
        ('{"format": "durabletask-history", "version": 9, "events": []}', "unsupported history file version 9"),
        ('{"events": []}', "not a saved history"),
        ("[1]", "event 0 is a int, not an object"),
        ("not json", "not JSON"),
    ],
)
def test_loading_a_bad_file_names_the_problem(tmp_path: Path, content: str, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=text):
        load_history(path)


def test_replay_histories_names_the_history_that_breaks(tmp_path: Path) -> None:
    good = _saved(tmp_path, recorded_until_approval(), "good.json")
    results = replay_histories(approval, [good])
    assert results[str(good)].status is OrchestrationStatus.RUNNING
    by_id = {"i-1": recorded_until_approval(), "i-2": first_turn_history()}
    assert set(replay_histories(approval, by_id)) == {"i-1", "i-2"}
    with pytest.raises(task.NonDeterminismError, match="history of 'i-1': Non-deterministic orchestration"):
        replay_histories(renamed_check, by_id)
    with pytest.raises(TypeError, match="several histories"):
        replay_histories(approval, str(good))


def test_call_sites_are_kept_only_for_pending_actions_across_cached_turns() -> None:
    from durabletask.internal import proto_helpers as ph
    from durabletask.internal.registry import Registry
    from durabletask.internal.replay import OrchestrationExecutor

    def chain(ctx: task.OrchestrationContext, _: Any):
        for i in range(50):
            yield ctx.call_activity("step", input=i)

    registry = Registry()
    registry.add_orchestrator(chain, name="chain")
    executor = OrchestrationExecutor(registry)
    new = [ph.new_orchestrator_started_event(), ph.new_execution_started_event("chain", "i-1")]
    results, state = executor.execute_turn("i-1", [], new)
    for task_id in range(1, 50):
        assert state is not None and set(state.ctx.call_sites) == {task_id}
        recorded = [*new, ph.new_task_scheduled_event(task_id, "step"), ph.new_orchestrator_completed_event()]
        new = [ph.new_orchestrator_started_event(), ph.new_task_completed_event(task_id, "1")]
        results, state = executor.execute_turn("i-1", recorded[len(recorded) - 2:], new, state)
    assert [a.scheduleTask.name for a in results.actions] == ["step"]


def test_a_non_retriable_failure_replays_from_fetched_and_saved_histories(tmp_path: Path) -> None:
    # A failure the worker marks non-retriable (e.g. a version mismatch) is not retried by a retry
    # policy; the history events get_orchestration_history returns, and a file saved from them, must
    # keep that mark, or the replay retries the call and reports a non-determinism that is not there.
    from durabletask.internal import orchestrator_service_pb2 as pb

    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=3)

    def guarded(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.call_activity("act", retry_policy=policy)
        except task.TaskFailedError:
            return "gave up"
        return "ok"

    failed = pb.HistoryEvent(eventId=-1, timestamp=to_protobuf(hb.orchestrator_started()).timestamp)
    failed.taskFailed.taskScheduledId = 1
    failed.taskFailed.failureDetails.errorType = "VersionMismatch"
    failed.taskFailed.failureDetails.errorMessage = "version 2 is not supported"
    failed.taskFailed.failureDetails.isNonRetriable = True
    fetched = [
        hb.orchestrator_started(), hb.execution_started("guarded"), hb.task_scheduled(1, "act"),
        hb.orchestrator_completed(), hb.orchestrator_started(), history.from_protobuf(failed),
        hb.execution_completed("completed", result="gave up"),
    ]
    assert replay_history(guarded, fetched).output == "gave up"
    save_history(tmp_path / "h.json", fetched)
    assert replay_history(guarded, tmp_path / "h.json").output == "gave up"
    assert to_protobuf(fetched[5]).taskFailed.failureDetails.isNonRetriable
