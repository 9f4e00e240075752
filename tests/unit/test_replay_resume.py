"""Replay state kept between turns: resuming a turn from the returned state equals a full replay.

Each scenario drives one synthetic history turn by turn (as a backend would keep it) and runs
every turn twice: once with ``execute`` over the whole history (a worker without a cache), once
with ``execute_turn`` continuing the state the previous turn returned, given only the past
events that state has not processed. Both must produce the same actions and custom status.
The resumed side is run in three ways: every turn from the state of the turn before; lagging
(other turns ran elsewhere, so the delta spans several turns); and with cache misses (the state
is dropped now and then and the turn replays the full history, as after an eviction).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from history_builders import T0, Instance, completion, failure, kinds, output, scheduling_event

from durabletask import task
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import ExecutionResults, OrchestrationExecutor, ReplayState
from durabletask.internal.replay_cache import DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS, ReplayCache

NON_DETERMINISM = "durabletask.task.NonDeterminismError"
MODES = ["every-turn", "lagging", "cache-miss"]


def make(*orchestrators: Callable[..., Any], **kwargs: Any) -> OrchestrationExecutor:
    registry = Registry()
    for fn in orchestrators:
        registry.add_orchestrator(fn)
    return OrchestrationExecutor(registry, **kwargs)


def encoded(result: ExecutionResults) -> tuple[list[bytes], str | None]:
    """A turn's result in comparable form."""
    return [a.SerializeToString(deterministic=True) for a in result.actions], result.custom_status


def is_final(result: ExecutionResults) -> bool:
    return any(a.HasField("completeOrchestration") for a in result.actions)


class ResumedInstance(Instance):
    """An :class:`Instance` whose every turn is also run from the replay state kept since the last one.

    ``mode``: ``every-turn`` resumes each turn from the previous one's state; ``lagging`` skips
    the resumed run on every other turn (the state falls behind and the next delta spans several
    turns, as when another worker ran them); ``cache-miss`` drops the state on every third turn
    and replays the full history from scratch with ``execute_turn`` (no state).
    """

    def __init__(self, executor: OrchestrationExecutor, name: str, input: Any = None, *,
                 mode: str = "every-turn", **kwargs: Any) -> None:
        super().__init__(executor, name, input, **kwargs)
        assert mode in MODES
        self.mode = mode
        self.state: ReplayState | None = None
        self.turns = 0
        self.resumed_turns = 0  # turns run from a kept state (not from scratch)
        self.longest_delta = 0

    def turn(self, *events: pb.HistoryEvent, advance: timedelta = timedelta(seconds=1)) -> ExecutionResults:
        if self.history:
            self.now = self.now + advance
        new_events = [ph.new_orchestrator_started_event(self.now), *events]
        full = self.executor.execute(self.instance_id, list(self.history), new_events)
        index = self.turns
        self.turns += 1
        skip = self.mode == "lagging" and index % 2 == 1 and not is_final(full)
        if not skip:
            if self.mode == "cache-miss" and index % 3 == 2:
                self.state = None
            if self.state is None:
                past: Sequence[pb.HistoryEvent] = list(self.history)
            else:
                past = self.history[self.state.processed:]
                self.resumed_turns += 1
                self.longest_delta = max(self.longest_delta, len(past))
            resumed, self.state = self.executor.execute_turn(self.instance_id, past, new_events, self.state)
            assert encoded(resumed) == encoded(full), f"turn {index}: resumed {resumed} != full {full}"
            if is_final(full):
                assert self.state is None, "a finished execution keeps no state"
            else:
                assert self.state is not None
                assert self.state.processed == len(self.history) + len(new_events)
        self.history.extend(new_events)
        for action in full.actions:
            recorded = scheduling_event(action, self.now)
            if recorded is not None:
                self.history.append(recorded)
        self.history.append(ph.new_orchestrator_completed_event(self.now))
        self.last = full
        return full

    def check_resumed(self) -> None:
        """The resumed side did continue from kept states (the test exercised what it claims)."""
        assert self.resumed_turns >= 1, "no turn was resumed from a kept state"
        if self.mode == "lagging":
            assert self.longest_delta > 4, "no delta spanned more than one turn"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def instance(mode: str, fn: Callable[..., Any], input: Any = None, **kwargs: Any) -> ResumedInstance:
    executor_options = {k: kwargs.pop(k) for k in ("data_converter", "maximum_timer_interval") if k in kwargs}
    return ResumedInstance(make(fn, **executor_options), fn.__name__, input, mode=mode, **kwargs)


# ------------------------------------------------------------------ activities


def chain(ctx: task.OrchestrationContext, names: list[str]):
    results = []
    for i, name in enumerate(names):
        ctx.set_custom_status({"step": i})
        results.append((yield ctx.call_activity("hello", input=name)))
    return results


def test_activity_chain(mode: str) -> None:
    names = [f"n{i}" for i in range(7)]
    inst = instance(mode, chain, names)
    result = inst.start()
    for i, name in enumerate(names):
        assert kinds(result.actions) == ["scheduleTask"] and result.actions[0].id == i + 1
        assert json.loads(result.custom_status or "") == {"step": i}
        result = inst.turn(ph.new_task_completed_event(i + 1, json.dumps(f"hi {name}")))
    assert output(result) == [f"hi {n}" for n in names]
    inst.check_resumed()


def fan(ctx: task.OrchestrationContext, n: int):
    first = yield task.when_all([ctx.call_activity("square", input=i) for i in range(n)])
    again = yield task.when_all([ctx.call_activity("square", input=v) for v in first])
    return sum(again)


def test_fan_out_and_fan_in_with_results_one_turn_at_a_time(mode: str) -> None:
    inst = instance(mode, fan, 4)
    assert [a.id for a in inst.start().actions] == [1, 2, 3, 4]
    for task_id, value in [(3, 4), (1, 0), (4, 9)]:
        assert inst.turn(ph.new_task_completed_event(task_id, str(value))).actions == []
    second = inst.turn(ph.new_task_completed_event(2, "1"))
    assert [a.id for a in second.actions] == [5, 6, 7, 8]
    assert inst.turn(ph.new_task_completed_event(8, "81"), ph.new_task_completed_event(5, "0")).actions == []
    done = inst.turn(ph.new_task_completed_event(6, "1"), ph.new_task_completed_event(7, "16"))
    assert output(done) == 98
    inst.check_resumed()


def when_any_approval(ctx: task.OrchestrationContext, _: Any):
    event = ctx.wait_for_external_event("Approval")
    timeout = ctx.create_timer(timedelta(hours=1))
    winner = yield task.when_any([event, timeout])
    if winner is event:
        timeout.cancel()
        first = yield ctx.call_activity("after", input=event.get_result())
        second = yield ctx.call_activity("after", input=first)
        return [first, second, timeout.is_cancelled]
    return "timed out"


def test_when_any_with_the_timer_cancelled_and_firing_late(mode: str) -> None:
    inst = instance(mode, when_any_approval)
    assert kinds(inst.start().actions) == ["createTimer"]
    result = inst.turn(ph.new_event_raised_event("approval", '"yes"'))
    assert kinds(result.actions) == ["scheduleTask"] and result.actions[0].id == 2
    assert inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(hours=1))).actions == []
    assert kinds(inst.turn(ph.new_task_completed_event(2, '"one"')).actions) == ["scheduleTask"]
    assert output(inst.turn(ph.new_task_completed_event(3, '"two"'))) == ["one", "two", True]
    inst.check_resumed()


RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=4, backoff_coefficient=2.0)


def retrying(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("flaky", input="a", retry_policy=RETRY)
    b = yield ctx.call_activity("flaky", input="b", retry_policy=RETRY)
    return [a, b]


def fire_only_timer(inst: Instance, result: ExecutionResults) -> ExecutionResults:
    assert kinds(result.actions) == ["createTimer"], result
    action = result.actions[0]
    fire_at = ph.to_datetime(action.createTimer.fireAt)
    return inst.turn(ph.new_timer_fired_event(action.id, fire_at), advance=fire_at - inst.now)


def test_retries_of_a_failing_activity(mode: str) -> None:
    inst = instance(mode, retrying)
    task_id = inst.start().actions[0].id
    for attempt in range(2):
        waited = inst.turn(ph.new_task_failed_event(task_id, RuntimeError(f"attempt {attempt}")))
        again = fire_only_timer(inst, waited)
        assert kinds(again.actions) == ["scheduleTask"] and again.actions[0].scheduleTask.input.value == '"a"'
        task_id = again.actions[0].id
    second = inst.turn(ph.new_task_completed_event(task_id, '"A"'))
    task_id = second.actions[0].id
    # The second call exhausts its attempts: the orchestration fails with the last error.
    for attempt in range(3):
        task_id = fire_only_timer(inst, inst.turn(ph.new_task_failed_event(task_id, RuntimeError(f"b{attempt}")))).actions[0].id
    details = failure(inst.turn(ph.new_task_failed_event(task_id, RuntimeError("b-last"))))
    assert details.innerFailure.errorMessage == "b-last"
    inst.check_resumed()


# ------------------------------------------------------------ external events


def collector(ctx: task.OrchestrationContext, _: Any):
    yield ctx.create_timer(timedelta(seconds=5))
    first = yield ctx.wait_for_external_event("item")
    second = yield ctx.wait_for_external_event("item")
    ctx.set_custom_status([first, second])
    third = yield ctx.wait_for_external_event("other")
    fourth = yield ctx.wait_for_external_event("item")
    return [first, second, third, fourth]


def test_external_events_buffered_before_they_are_awaited(mode: str) -> None:
    inst = instance(mode, collector)
    inst.start()
    # Events that nobody waits for yet are buffered in the state, turn after turn.
    assert inst.turn(ph.new_event_raised_event("ITEM", "1")).actions == []
    assert inst.turn(ph.new_event_raised_event("item", "2"), ph.new_event_raised_event("unrelated", "0")).actions == []
    assert inst.turn(ph.new_event_raised_event("Item", "3")).actions == []
    fired = inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(seconds=5)))
    assert fired.actions == [] and json.loads(fired.custom_status or "") == [1, 2]
    assert inst.turn(ph.new_event_raised_event("nothing")).actions == []
    assert output(inst.turn(ph.new_event_raised_event("other", '"x"'))) == [1, 2, "x", 3]
    inst.check_resumed()


def sender(ctx: task.OrchestrationContext, peers: list[str]):
    for peer in peers:
        ctx.send_event(peer, "ping", data=peer)
        yield ctx.create_timer(timedelta(seconds=1))
    return ctx.new_uuid()


def test_send_event_and_new_uuid(mode: str) -> None:
    inst = instance(mode, sender, ["p1", "p2", "p3"])
    result = inst.start()
    for _ in range(3):
        assert kinds(result.actions) == ["sendEvent", "createTimer"]
        timer = result.actions[1]
        result = inst.turn(ph.new_timer_fired_event(timer.id, ph.to_datetime(timer.createTimer.fireAt)))
    assert isinstance(output(result), str)
    inst.check_resumed()


# ------------------------------------------------------------ suspend / resume


def two_steps(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("a")
    b = yield ctx.wait_for_external_event("b")
    c = yield ctx.call_activity("c")
    return [a, b, c]


def test_suspend_holds_events_across_turns_until_resume(mode: str) -> None:
    inst = instance(mode, two_steps)
    inst.start()
    assert inst.turn(ph.new_execution_suspended_event("pause")).actions == []
    assert inst.turn(ph.new_task_completed_event(1, "1")).actions == []
    assert inst.turn(ph.new_event_raised_event("b", "2")).actions == []
    resumed = inst.turn(ph.new_execution_resumed_event("go"))
    assert kinds(resumed.actions) == ["scheduleTask"] and resumed.actions[0].scheduleTask.name == "c"
    assert inst.turn(ph.new_execution_suspended_event(), ph.new_execution_resumed_event()).actions == []
    assert output(inst.turn(ph.new_task_completed_event(2, "3"))) == [1, 2, 3]
    inst.check_resumed()


def test_terminate_ends_the_state(mode: str) -> None:
    inst = instance(mode, two_steps)
    inst.start()
    inst.turn(ph.new_task_completed_event(1, "1"))
    inst.turn(ph.new_event_raised_event("unrelated"))
    done = completion(inst.turn(ph.new_execution_terminated_event('"stop"')))
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED
    assert inst.state is None
    inst.check_resumed()


# ----------------------------------------------------------- sub-orchestrations


def parent(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_sub_orchestrator("child", input=1)
    both = yield task.when_all([
        ctx.call_sub_orchestrator("child", input=2, instance_id="fixed"),
        ctx.call_activity("side"),
    ])
    try:
        yield ctx.call_sub_orchestrator("child", input=3)
    except task.TaskFailedError as err:
        return [a, *both, err.details.error_type]
    return None


def test_sub_orchestrations(mode: str) -> None:
    inst = instance(mode, parent, instance_id="p")
    first = inst.start()
    assert first.actions[0].createSubOrchestration.instanceId == "p:0001"
    second = inst.turn(ph.new_sub_orchestration_completed_event(1, "10"))
    assert kinds(second.actions) == ["createSubOrchestration", "scheduleTask"]
    assert inst.turn(ph.new_task_completed_event(3, '"s"')).actions == []
    third = inst.turn(ph.new_sub_orchestration_completed_event(2, "20"))
    assert kinds(third.actions) == ["createSubOrchestration"]
    failed = pb.TaskFailureDetails(errorType="custom.Error", errorMessage="child broke")
    assert output(inst.turn(ph.new_sub_orchestration_failed_event(4, failed))) == [10, 20, "s", "custom.Error"]
    inst.check_resumed()


# ------------------------------------------------------------------- timers


def long_sleep(ctx: task.OrchestrationContext, _: Any):
    yield ctx.create_timer(timedelta(days=7))
    yield ctx.call_activity("a")
    return ctx.current_utc_datetime.isoformat()


def test_a_long_timer_in_chunks(mode: str) -> None:
    inst = instance(mode, long_sleep)
    result = inst.start()
    for _ in range(3):
        result = fire_only_timer(inst, result)
    assert kinds(result.actions) == ["scheduleTask"]
    assert output(inst.turn(ph.new_task_completed_event(result.actions[0].id))) == (
        T0 + timedelta(days=7, seconds=1)
    ).isoformat()
    inst.check_resumed()


# --------------------------------------------------------------- entities

A = EntityInstanceId("account", "a")
B = EntityInstanceId("account", "b")


def messages(result: ExecutionResults, kind: str) -> list[Any]:
    return [
        getattr(a.sendEntityMessage, kind)
        for a in result.actions
        if a.HasField("sendEntityMessage") and a.sendEntityMessage.WhichOneof("EntityMessageType") == kind
    ]


def transfer(ctx: task.OrchestrationContext, amount: int):
    ctx.signal_entity(A, "touch")
    before = yield ctx.call_entity(A, "get")
    with (yield ctx.lock_entities([A, B])):
        balance = yield ctx.call_entity(A, "get")
        yield task.when_all([ctx.call_entity(A, "add", -amount), ctx.call_entity(B, "add", amount)])
    after = yield ctx.call_entity(B, "get")
    return [before, balance, after]


def test_entity_calls_signals_and_a_critical_section(mode: str) -> None:
    inst = instance(mode, transfer, 30, instance_id="orch-e")
    first = inst.start()
    assert len(messages(first, "entityOperationSignaled")) == 1
    [call] = messages(first, "entityOperationCalled")
    [lock] = messages(inst.turn(ph.new_entity_operation_completed_event(call.requestId, "100")), "entityLockRequested")
    [get] = messages(inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId)), "entityOperationCalled")
    calls = messages(inst.turn(ph.new_entity_operation_completed_event(get.requestId, "100")), "entityOperationCalled")
    assert len(calls) == 2
    assert inst.turn(ph.new_entity_operation_completed_event(calls[1].requestId)).actions == []
    released = inst.turn(ph.new_entity_operation_completed_event(calls[0].requestId))
    assert len(messages(released, "entityUnlockSent")) == 2
    [last] = messages(released, "entityOperationCalled")
    assert output(inst.turn(ph.new_entity_operation_completed_event(last.requestId, "130"))) == [100, 100, 130]
    inst.check_resumed()


# -------------------------------------------------------- failures and the end


def breaks_later(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity("a")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity("b")
    raise ValueError("kaput")


def test_a_generator_that_raises(mode: str) -> None:
    inst = instance(mode, breaks_later)
    inst.start()
    inst.turn(ph.new_task_completed_event(1))
    inst.turn(ph.new_event_raised_event("noise"))
    assert kinds(inst.turn(ph.new_event_raised_event("go")).actions) == ["scheduleTask"]
    details = failure(inst.turn(ph.new_task_completed_event(2)))
    assert details.errorType == "builtins.ValueError" and details.errorMessage == "kaput"
    assert inst.state is None
    inst.check_resumed()


def counter(ctx: task.OrchestrationContext, n: int):
    total = n
    for _ in range(2):
        total += (yield ctx.call_activity("inc", input=total))
    if total >= 20:
        return total
    yield ctx.wait_for_external_event("tick")
    ctx.continue_as_new(total, save_events=True)


def test_continue_as_new_ends_the_state_and_the_next_execution_starts_over(mode: str) -> None:
    value = 1
    for execution in range(3):
        inst = instance(mode, counter, value, instance_id="can")
        result = inst.start()
        for _ in range(2):
            assert kinds(result.actions) == ["scheduleTask"]
            result = inst.turn(ph.new_task_completed_event(result.actions[0].id, "5"))
        if execution == 1:
            assert output(result) == 21 and inst.state is None
            return
        assert result.actions == [] and inst.state is not None
        early = ph.new_event_raised_event("early", '"kept"')
        done = completion(inst.turn(early, ph.new_event_raised_event("tick")))
        assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
        assert [e.eventRaised.name for e in done.carryoverEvents] == ["early"]
        assert inst.state is None, "continue-as-new finishes the execution: no state is kept"
        value = json.loads(done.result.value)
        assert value == 11
        inst.check_resumed()
    raise AssertionError("the counter never finished")


def rewound_chain(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("step", input=1)
    b = yield ctx.call_activity("flaky", input=2)
    c = yield ctx.call_activity("step", input=3)
    return [a, b, c]


def test_turns_after_a_rewind(mode: str) -> None:
    inst = instance(mode, rewound_chain)
    inst.start()
    inst.turn(ph.new_task_completed_event(1, "1"))
    boom = pb.TaskFailureDetails(errorType="builtins.RuntimeError", errorMessage="boom")
    failed = failure(inst.turn(ph.new_task_failed_event(2, boom)))
    assert inst.state is None
    inst.history.append(ph.new_execution_completed_event(pb.ORCHESTRATION_STATUS_FAILED, None, failed))
    # The rewind request: answered with the rewritten history, no state kept.
    request = pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent())
    inst.now += timedelta(seconds=1)
    results, state = inst.executor.execute_turn(
        inst.instance_id, list(inst.history), [ph.new_orchestrator_started_event(inst.now), request]
    )
    [action] = results.actions
    assert action.HasField("rewindOrchestration") and state is None
    inst.history = list(action.rewindOrchestration.newHistory)
    # The rewritten history replays (from scratch first, then from the kept state).
    again = inst.turn()
    assert kinds(again.actions) == ["scheduleTask"] and again.actions[0].scheduleTask.name == "flaky"
    assert inst.turn(ph.new_event_raised_event("noise")).actions == []
    third = inst.turn(ph.new_task_completed_event(again.actions[0].id, "20"))
    assert kinds(third.actions) == ["scheduleTask"] and third.actions[0].scheduleTask.name == "step"
    assert output(inst.turn(ph.new_task_completed_event(third.actions[0].id, "3"))) == [1, 20, 3]
    inst.check_resumed()


# -------------------------------------------------------------- non-determinism


def v1(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("a")
    b = yield ctx.wait_for_external_event("go")
    return [a, b]


def v2(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("renamed")
    b = yield ctx.wait_for_external_event("go")
    return [a, b]


def executor_named(fn: Callable[..., Any], name: str = "orch") -> OrchestrationExecutor:
    registry = Registry()
    registry.add_orchestrator(fn, name=name)
    return OrchestrationExecutor(registry)


def started_v1() -> ResumedInstance:
    inst = ResumedInstance(executor_named(v1), "orch")
    inst.start()
    inst.turn(ph.new_task_completed_event(1, '"A"'))
    assert inst.state is not None
    return inst


def test_a_changed_orchestrator_replayed_from_the_full_history_is_non_deterministic() -> None:
    inst = started_v1()
    new_events = [ph.new_orchestrator_started_event(inst.now), ph.new_event_raised_event("go", "1")]
    results, state = executor_named(v2).execute_turn(inst.instance_id, list(inst.history), new_events)
    details = failure(results)
    assert details.errorType == NON_DETERMINISM
    assert "expected call_activity('renamed') but history has a taskScheduled('a') at id 1" in details.errorMessage
    assert kinds(results.actions) == ["completeOrchestration"]
    assert state is None
    # The unchanged code, from its kept state, finishes normally.
    kept = inst.state
    assert kept is not None
    done, _ = inst.executor.execute_turn(inst.instance_id, inst.history[kept.processed:], new_events, kept)
    assert output(done) == ["A", 1]


def resumed_after_first_turn(fn: Callable[..., Any] = v1) -> tuple[OrchestrationExecutor, ReplayState, list[pb.HistoryEvent]]:
    """A state after the first turn of ``fn`` (which scheduled activity 'a' as action 1) and its history."""
    executor = executor_named(fn)
    new_events = [ph.new_orchestrator_started_event(T0), ph.new_execution_started_event("orch", "i", timestamp=T0)]
    results, state = executor.execute_turn("i", [], new_events)
    assert kinds(results.actions) == ["scheduleTask"] and results.actions[0].id == 1
    assert state is not None and state.processed == 2
    return executor, state, new_events


def next_turn(state: ReplayState, executor: OrchestrationExecutor,
              delta: list[pb.HistoryEvent]) -> tuple[ExecutionResults, ReplayState | None]:
    new_events = [ph.new_orchestrator_started_event(T0 + timedelta(seconds=1)), ph.new_task_completed_event(1, '"A"')]
    return executor.execute_turn("i", delta, new_events, state)


@pytest.mark.parametrize(
    "delta,message",
    [
        (
            [ph.new_task_scheduled_event(1, "b", timestamp=T0)],
            "expected call_activity('a') but history has a taskScheduled('b') at id 1",
        ),
        (
            [ph.new_timer_created_event(1, T0, timestamp=T0)],
            "expected call_activity('a') but history has a timerCreated at id 1",
        ),
        (
            [ph.new_task_scheduled_event(1, "a", timestamp=T0), ph.new_task_scheduled_event(2, "x", timestamp=T0)],
            "history has a taskScheduled('x') at id 2 (from call_activity) but the orchestrator code made no call",
        ),
        (
            [ph.new_orchestrator_completed_event(T0)],
            "calls call_activity('a') (action id 1) but the history has no record of it",
        ),
        ([], "calls call_activity('a') (action id 1) but the history has no record of it"),
    ],
    ids=["renamed", "wrong-kind", "extra-event", "missing-event", "empty-delta"],
)
def test_a_resumed_state_whose_delta_does_not_match_its_pending_actions_fails(
    delta: list[pb.HistoryEvent], message: str
) -> None:
    executor, state, _ = resumed_after_first_turn()
    results, after = next_turn(state, executor, delta)
    details = failure(results)
    assert details.errorType == NON_DETERMINISM
    assert message in details.errorMessage
    assert kinds(results.actions) == ["completeOrchestration"]
    assert after is None


def test_the_matching_delta_continues_the_state() -> None:
    executor, state, first = resumed_after_first_turn()
    delta = [ph.new_task_scheduled_event(1, "a", timestamp=T0), ph.new_orchestrator_completed_event(T0)]
    results, after = next_turn(state, executor, delta)
    assert results.actions == [] and after is state
    assert state.processed == len(first) + len(delta) + 2


def test_a_finished_state_cannot_be_resumed_and_a_turn_needs_new_events() -> None:
    executor, state, _ = resumed_after_first_turn()
    with pytest.raises(task.OrchestrationStateError):
        executor.execute_turn("i", [], [], state)
    done, after = next_turn(state, executor, [])
    assert after is None and state.ctx.is_finished and failure(done).errorType == NON_DETERMINISM
    with pytest.raises(task.OrchestrationStateError, match="finished execution"):
        next_turn(state, executor, [])


def test_the_state_knows_the_next_free_action_id() -> None:
    executor, state, _ = resumed_after_first_turn()
    assert state.next_action_id == 2
    delta = [ph.new_task_scheduled_event(1, "a", timestamp=T0), ph.new_orchestrator_completed_event(T0)]
    next_turn(state, executor, delta)
    assert state.next_action_id == 2  # waiting for an event took no action id
    results, _ = executor.execute_turn(
        "i", [], [ph.new_orchestrator_started_event(T0), ph.new_event_raised_event("go", "1")], state
    )
    assert output(results) == ["A", 1] and results.actions[0].id == 2


# ------------------------------------------------------------------ ReplayCache


def a_state(events: int = 2) -> ReplayState:
    """A real replay state that has processed ``events`` history events (2, or more with extra noise events)."""
    executor = executor_named(v1)
    new_events = [
        ph.new_orchestrator_started_event(T0),
        ph.new_execution_started_event("orch", "i", timestamp=T0),
        *(ph.new_event_raised_event("noise") for _ in range(events - 2)),
    ]
    _, state = executor.execute_turn("i", [], new_events)
    assert state is not None and state.processed == events
    return state


def test_take_returns_the_state_for_the_same_execution_and_exact_count_only() -> None:
    cache = ReplayCache(10)
    state = a_state(3)
    for execution_id, seen in [("other", 3), ("e1", 2), ("e1", 4), ("e1", 0), ("e1", -1)]:
        cache.put("i", "e1", state)
        assert cache.take("i", execution_id, seen) is None, (execution_id, seen)
        assert len(cache) == 0, "a take that does not match still removes the entry"
    cache.put("i", "e1", state)
    assert cache.take("other-instance", "e1", 3) is None and len(cache) == 1
    assert cache.take("i", "e1", 3) is state
    assert len(cache) == 0 and cache.take("i", "e1", 3) is None, "take removes the entry"


def test_put_replaces_the_entry_of_an_instance() -> None:
    cache = ReplayCache(10)
    old, new = a_state(2), a_state(4)
    cache.put("i", "e1", old)
    cache.put("i", "e2", new)
    assert len(cache) == 1
    assert cache.take("i", "e1", 2) is None
    cache.put("i", "e2", new)
    assert cache.take("i", "e2", 4) is new


def test_least_recently_put_entries_are_evicted_at_capacity() -> None:
    cache = ReplayCache(2)
    states = {name: a_state() for name in "abc"}
    cache.put("a", "e", states["a"])
    cache.put("b", "e", states["b"])
    cache.put("a", "e", states["a"])  # a is now the most recent
    cache.put("c", "e", states["c"])
    assert len(cache) == 2
    assert cache.take("b", "e", 2) is None
    assert cache.take("a", "e", 2) is states["a"]
    assert cache.take("c", "e", 2) is states["c"]


def test_capacity_zero_keeps_nothing() -> None:
    cache = ReplayCache(0)
    assert not cache.enabled
    cache.put("i", "e1", a_state())
    assert len(cache) == 0 and cache.take("i", "e1", 2) is None


def test_discard_and_clear() -> None:
    cache = ReplayCache(5)
    for name in "abc":
        cache.put(name, "e", a_state())
    cache.discard("b")
    cache.discard("missing")
    assert len(cache) == 2 and cache.take("b", "e", 2) is None
    cache.clear()
    assert len(cache) == 0 and cache.take("a", "e", 2) is None


@pytest.mark.parametrize("capacity", [-1, 1.5, True, False, "10", None])
def test_invalid_capacities_are_refused(capacity: Any) -> None:
    with pytest.raises(ValueError, match="cache size"):
        ReplayCache(capacity)


def test_default_capacity() -> None:
    cache = ReplayCache()
    assert cache.capacity == DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS > 0 and cache.enabled
