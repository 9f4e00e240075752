"""Replay engine: activities, sub-orchestrations, timers, events, composition, completion."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from history_builders import T0, Instance, completion, failure, kinds, output

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor
from durabletask.serialization import JsonDataConverter


def make(*orchestrators: Any, **kwargs: Any) -> OrchestrationExecutor:
    registry = Registry()
    for fn in orchestrators:
        registry.add_orchestrator(fn)
    return OrchestrationExecutor(registry, **kwargs)


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}"


# ----------------------------------------------------------------- activities


def test_activity_sequence_turn_by_turn() -> None:
    def sequence(ctx: task.OrchestrationContext, names: list[str]):
        results = []
        for name in names:
            results.append((yield ctx.call_activity(hello, input=name, tags={"t": "1"})))
        return results

    inst = Instance(make(sequence), "sequence", ["a", "b"])
    first = inst.start()
    assert kinds(first.actions) == ["scheduleTask"]
    action = first.actions[0]
    assert action.id == 1 and action.scheduleTask.name == "hello"
    assert action.scheduleTask.input.value == '"a"' and dict(action.scheduleTask.tags) == {"t": "1"}

    second = inst.turn(ph.new_task_completed_event(1, '"Hello a"'))
    assert kinds(second.actions) == ["scheduleTask"]
    assert second.actions[0].id == 2 and second.actions[0].scheduleTask.input.value == '"b"'

    third = inst.turn(ph.new_task_completed_event(2, '"Hello b"'))
    assert output(third) == ["Hello a", "Hello b"]
    assert third.actions[-1].id == 3


def test_plain_function_orchestrator_completes_at_once() -> None:
    def plain(ctx: task.OrchestrationContext, x: int) -> int:
        return x * 2

    result = Instance(make(plain), "plain", 21).start()
    assert kinds(result.actions) == ["completeOrchestration"]
    assert output(result) == 42


def test_no_input_and_none_output() -> None:
    def nothing(ctx: task.OrchestrationContext, x: Any) -> None:
        assert x is None

    done = completion(Instance(make(nothing), "nothing").start())
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED and not done.HasField("result")


@dataclass
class Order:
    item: str
    quantity: int


def test_input_and_results_are_type_directed() -> None:
    seen: list[Any] = []

    def typed(ctx: task.OrchestrationContext, order: Order):
        seen.append(order)
        again = yield ctx.call_activity("make_order", return_type=Order)
        seen.append(again)
        return again.quantity

    inst = Instance(make(typed, data_converter=JsonDataConverter()), "typed", {"item": "x", "quantity": 2})
    inst.start()
    result = inst.turn(ph.new_task_completed_event(1, json.dumps({"item": "y", "quantity": 3})))
    assert output(result) == 3
    assert seen[-2:] == [Order("x", 2), Order("y", 3)]


def test_context_properties_and_is_replaying() -> None:
    seen: list[tuple[datetime, bool]] = []
    info: list[Any] = []

    def props(ctx: task.OrchestrationContext, _: Any):
        info.append((ctx.instance_id, ctx.parent_instance_id, ctx.version))
        seen.append((ctx.current_utc_datetime, ctx.is_replaying))
        yield ctx.call_activity("a")
        seen.append((ctx.current_utc_datetime, ctx.is_replaying))
        yield ctx.call_activity("b")
        seen.append((ctx.current_utc_datetime, ctx.is_replaying))

    inst = Instance(make(props), "props", instance_id="child", version="1.2", parent_instance_id="parent")
    inst.start()
    inst.turn(ph.new_task_completed_event(1))
    seen.clear()
    inst.turn(ph.new_task_completed_event(2))
    assert seen == [
        (T0, True),
        (T0 + timedelta(seconds=1), True),
        (T0 + timedelta(seconds=2), False),
    ]
    assert info[-1] == ("child", "parent", "1.2")


def test_activity_failure_is_catchable() -> None:
    def catcher(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.call_activity("flaky")
        except task.TaskFailedError as err:
            return [err.details.error_type, err.details.message, err.details.is_caused_by(LookupError)]

    inst = Instance(make(catcher), "catcher")
    inst.start()
    result = inst.turn(ph.new_task_failed_event(1, KeyError("missing")))
    assert output(result) == ["builtins.KeyError", "'missing'", True]


def test_uncaught_activity_failure_fails_with_inner_failure() -> None:
    def careless(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("flaky")

    inst = Instance(make(careless), "careless")
    inst.start()
    details = failure(inst.turn(ph.new_task_failed_event(1, ValueError("bad value"))))
    assert details.errorType == "durabletask.task.TaskFailedError"
    assert "bad value" in details.errorMessage
    assert details.innerFailure.errorType == "builtins.ValueError"
    assert details.innerFailure.errorMessage == "bad value"


def test_unknown_completion_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def waits(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_activity("a"))

    inst = Instance(make(waits), "waits")
    inst.start()
    with caplog.at_level(logging.WARNING):
        result = inst.turn(ph.new_task_completed_event(99, "1"), ph.new_timer_fired_event(98, T0))
    assert result.actions == []
    assert "unknown task id 99" in caplog.text and "unknown task id 98" in caplog.text
    assert output(inst.turn(ph.new_task_completed_event(1, "5"))) == 5


# ----------------------------------------------------------- orchestrator failures


def test_exception_in_orchestrator_fails_it() -> None:
    def broken(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")
        raise ValueError("kaput")

    inst = Instance(make(broken), "broken")
    inst.start()
    details = failure(inst.turn(ph.new_task_completed_event(1)))
    assert details.errorType == "builtins.ValueError" and details.errorMessage == "kaput"
    assert "broken" in details.stackTrace.value


def test_exception_before_first_yield_and_in_plain_function() -> None:
    def plain(ctx: task.OrchestrationContext, _: Any) -> None:
        raise KeyError("x")

    assert failure(Instance(make(plain), "plain").start()).errorType == "builtins.KeyError"


def test_yielding_a_non_task_fails_clearly() -> None:
    def wrong(ctx: task.OrchestrationContext, _: Any):
        yield 42

    details = failure(Instance(make(wrong), "wrong").start())
    assert details.errorType == "builtins.TypeError"
    assert "yielded int" in details.errorMessage and "only tasks" in details.errorMessage


def test_async_orchestrator_returning_at_once_completes() -> None:
    async def coro(ctx: task.OrchestrationContext, _: Any) -> str:
        return "done"

    assert output(Instance(make(coro), "coro").start()) == "done"


def test_unregistered_orchestrator_fails() -> None:
    details = failure(Instance(make(), "ghost").start())
    assert details.errorType == "durabletask.worker.OrchestratorNotRegisteredError"
    assert "ghost" in details.errorMessage


def test_unserializable_output_fails() -> None:
    def odd(ctx: task.OrchestrationContext, _: Any) -> object:
        return object()

    assert "could not be serialized" in failure(Instance(make(odd), "odd").start()).errorMessage


def test_no_new_events_is_a_state_error() -> None:
    with pytest.raises(task.OrchestrationStateError):
        make().execute("i", [], [])


def test_history_without_execution_started_fails() -> None:
    result = make().execute("i", [], [ph.new_orchestrator_started_event(T0)])
    assert failure(result).errorType == "durabletask.task.OrchestrationStateError"


# ----------------------------------------------------------- sub-orchestrations


def child(ctx: task.OrchestrationContext, x: int) -> int:
    return x + 1


def test_sub_orchestrations() -> None:
    def parent(ctx: task.OrchestrationContext, _: Any):
        a = yield ctx.call_sub_orchestrator(child, input=1)
        b = yield ctx.call_sub_orchestrator("child", input=2, instance_id="fixed", version="2.0")
        return [a, b]

    inst = Instance(make(parent), "parent", instance_id="p")
    first = inst.start()
    create = first.actions[0].createSubOrchestration
    assert (create.name, create.instanceId, create.input.value) == ("child", "p:0001", "1")
    assert not create.HasField("version")
    second = inst.turn(ph.new_sub_orchestration_completed_event(1, "2"))
    create = second.actions[0].createSubOrchestration
    assert (create.instanceId, create.version.value) == ("fixed", "2.0")
    assert output(inst.turn(ph.new_sub_orchestration_completed_event(2, "3"))) == [2, 3]


def test_default_sub_orchestration_version_and_failure() -> None:
    def parent(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.call_sub_orchestrator("child")
        except task.TaskFailedError as err:
            return err.details.error_type

    inst = Instance(make(parent, default_version="9"), "parent")
    assert inst.start().actions[0].createSubOrchestration.version.value == "9"
    failed = pb.TaskFailureDetails(errorType="custom.Error", errorMessage="child broke")
    assert output(inst.turn(ph.new_sub_orchestration_failed_event(1, failed))) == "custom.Error"


# ------------------------------------------------------------------- timers


def test_timer_with_timedelta_and_aware_datetime() -> None:
    def sleeper(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(minutes=5))
        aware = datetime(2024, 1, 1, 15, 0, tzinfo=timezone(timedelta(hours=2)))
        yield ctx.create_timer(aware)
        return "woke"

    inst = Instance(make(sleeper), "sleeper")
    first = inst.start()
    assert ph.to_datetime(first.actions[0].createTimer.fireAt) == T0 + timedelta(minutes=5)
    second = inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(minutes=5)), advance=timedelta(minutes=5))
    assert ph.to_datetime(second.actions[0].createTimer.fireAt) == datetime(2024, 1, 1, 13, 0)
    assert output(inst.turn(ph.new_timer_fired_event(2, datetime(2024, 1, 1, 13, 0)))) == "woke"


def test_long_timer_is_split_into_chunks() -> None:
    def long_sleep(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(days=7))
        return ctx.current_utc_datetime.isoformat()

    inst = Instance(make(long_sleep), "long_sleep")
    fire_times = []
    result = inst.start()
    for _ in range(3):
        assert kinds(result.actions) == ["createTimer"]
        action = result.actions[0]
        fire_at = ph.to_datetime(action.createTimer.fireAt)
        fire_times.append(fire_at)
        result = inst.turn(ph.new_timer_fired_event(action.id, fire_at), advance=fire_at - inst.now)
    assert fire_times == [T0 + timedelta(days=3), T0 + timedelta(days=6), T0 + timedelta(days=7)]
    assert output(result) == (T0 + timedelta(days=7)).isoformat()


def test_chunking_can_be_disabled() -> None:
    def long_sleep(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(days=30))

    result = Instance(make(long_sleep, maximum_timer_interval=None), "long_sleep").start()
    assert ph.to_datetime(result.actions[0].createTimer.fireAt) == T0 + timedelta(days=30)


# ------------------------------------------------------------- composition


def test_fan_out_fan_in() -> None:
    def fan(ctx: task.OrchestrationContext, n: int):
        results = yield task.when_all([ctx.call_activity("square", input=i) for i in range(n)])
        return sum(results)

    inst = Instance(make(fan), "fan", 3)
    first = inst.start()
    assert [a.id for a in first.actions] == [1, 2, 3]
    assert inst.turn(ph.new_task_completed_event(2, "1")).actions == []
    result = inst.turn(ph.new_task_completed_event(3, "4"), ph.new_task_completed_event(1, "0"))
    assert output(result) == 5


def test_when_all_raises_first_failure_after_all_complete() -> None:
    def fan(ctx: task.OrchestrationContext, _: Any):
        try:
            yield task.when_all([ctx.call_activity("a"), ctx.call_activity("b"), ctx.call_activity("c")])
        except task.TaskFailedError as err:
            return err.details.message

    inst = Instance(make(fan), "fan")
    inst.start()
    assert inst.turn(ph.new_task_failed_event(2, ValueError("b broke"))).actions == []
    assert inst.turn(ph.new_task_failed_event(1, ValueError("a broke"))).actions == []
    assert output(inst.turn(ph.new_task_completed_event(3))) == "b broke"


def test_when_any_timeout_pattern_cancels_the_timer() -> None:
    def approval(ctx: task.OrchestrationContext, _: Any):
        event = ctx.wait_for_external_event("Approval")
        timeout = ctx.create_timer(timedelta(hours=1))
        winner = yield task.when_any([event, timeout])
        if winner is event:
            timeout.cancel()
            result = yield ctx.call_activity("after", input=event.get_result())
            return result
        event.cancel()
        return "timed out"

    inst = Instance(make(approval), "approval")
    assert kinds(inst.start().actions) == ["createTimer"]
    result = inst.turn(ph.new_event_raised_event("approval", '"yes"'))
    assert kinds(result.actions) == ["scheduleTask"] and result.actions[0].id == 2
    late = inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(hours=1)))
    assert late.actions == []
    assert output(inst.turn(ph.new_task_completed_event(2, '"done"'))) == "done"


def test_when_any_timeout_fires_first() -> None:
    def approval(ctx: task.OrchestrationContext, _: Any):
        event = ctx.wait_for_external_event("approval")
        winner = yield task.when_any([event, ctx.create_timer(timedelta(hours=1))])
        if winner is not event:
            event.cancel()
            again = yield ctx.wait_for_external_event("approval")
            return ["timed out", again]
        return "approved"

    inst = Instance(make(approval), "approval")
    inst.start()
    assert inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(hours=1))).actions == []
    assert output(inst.turn(ph.new_event_raised_event("APPROVAL", "1"))) == ["timed out", 1]


def test_timer_cancelled_in_the_same_turn_leaves_no_action() -> None:
    def quick(ctx: task.OrchestrationContext, _: Any):
        timer = ctx.create_timer(timedelta(days=1))
        timer.cancel()
        yield ctx.call_activity("a")
        return timer.is_cancelled

    inst = Instance(make(quick), "quick")
    first = inst.start()
    assert kinds(first.actions) == ["scheduleTask"] and first.actions[0].id == 2
    assert output(inst.turn(ph.new_task_completed_event(2))) is True


def test_yielding_a_cancelled_task_raises_task_cancelled_error() -> None:
    def cancels(ctx: task.OrchestrationContext, _: Any):
        timer = ctx.create_timer(timedelta(days=1))
        timer.cancel()
        try:
            yield timer
        except task.TaskCancelledError:
            return "cancelled"

    assert output(Instance(make(cancels), "cancels").start()) == "cancelled"


# ------------------------------------------------------------ external events


def test_events_are_case_insensitive_buffered_and_in_order() -> None:
    def collector(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(seconds=1))
        first = yield ctx.wait_for_external_event("Item")
        second = yield ctx.wait_for_external_event("ITEM")
        third = yield ctx.wait_for_external_event("item")
        return [first, second, third]

    inst = Instance(make(collector), "collector")
    inst.start()
    inst.turn(ph.new_event_raised_event("item", "1"), ph.new_event_raised_event("iTeM", "2"))
    result = inst.turn(ph.new_timer_fired_event(1, T0), ph.new_event_raised_event("ITEM", "3"))
    assert output(result) == [1, 2, 3]


def test_cancelled_wait_does_not_consume_a_later_event() -> None:
    def waiter(ctx: task.OrchestrationContext, _: Any):
        first = ctx.wait_for_external_event("go")
        first.cancel()
        second = ctx.wait_for_external_event("go")
        value = yield second
        return [value, first.is_cancelled]

    inst = Instance(make(waiter), "waiter")
    assert inst.start().actions == []
    assert output(inst.turn(ph.new_event_raised_event("go", '"x"'))) == ["x", True]


def test_event_payload_decode_failure_fails_the_wait() -> None:
    def waiter(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.wait_for_external_event("go", data_type=Order)
        except task.TaskFailedError as err:
            return "decode" in str(err)

    inst = Instance(make(waiter, data_converter=JsonDataConverter()), "waiter")
    inst.start()
    assert output(inst.turn(ph.new_event_raised_event("go", "not json"))) is True


def test_send_event() -> None:
    def sender(ctx: task.OrchestrationContext, _: Any):
        ctx.send_event("other", "ping", data={"n": 1})
        yield ctx.create_timer(timedelta(seconds=1))
        return "sent"

    inst = Instance(make(sender), "sender")
    first = inst.start()
    assert kinds(first.actions) == ["sendEvent", "createTimer"]
    send = first.actions[0].sendEvent
    assert (send.instance.instanceId, send.name, json.loads(send.data.value)) == ("other", "ping", {"n": 1})
    assert output(inst.turn(ph.new_timer_fired_event(2, T0))) == "sent"


@pytest.mark.parametrize("target,name", [("", "e"), ("@counter@k", "e"), ("x", "")])
def test_send_event_validates_arguments(target: str, name: str) -> None:
    def sender(ctx: task.OrchestrationContext, _: Any) -> None:
        ctx.send_event(target, name)

    assert failure(Instance(make(sender), "sender").start()).errorType == "builtins.ValueError"


# ------------------------------------------------------------- completion


def test_completion_returns_this_turns_pending_actions_and_completion() -> None:
    def finisher(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")
        ctx.send_event("peer", "done")
        ctx.call_activity("fire_and_forget")
        return "ok"

    inst = Instance(make(finisher), "finisher")
    inst.start()
    result = inst.turn(ph.new_task_completed_event(1))
    assert kinds(result.actions) == ["sendEvent", "scheduleTask", "completeOrchestration"]
    assert [a.id for a in result.actions] == [2, 3, 4]
    assert output(result) == "ok"


def test_custom_status() -> None:
    def status(ctx: task.OrchestrationContext, _: Any):
        ctx.set_custom_status({"step": 1})
        yield ctx.call_activity("a")
        ctx.set_custom_status({"step": 2})
        yield ctx.call_activity("b")

    inst = Instance(make(status), "status")
    assert json.loads(inst.start().custom_status or "") == {"step": 1}
    assert json.loads(inst.turn(ph.new_task_completed_event(1)).custom_status or "") == {"step": 2}
    assert Instance(make(child), "child", 1).start().custom_status is None


def test_new_uuid_is_deterministic() -> None:
    uuids: list[list[str]] = []

    def ids(ctx: task.OrchestrationContext, _: Any):
        batch = [ctx.new_uuid(), ctx.new_uuid()]
        uuids.append(batch)
        yield ctx.call_activity("a")
        return batch

    inst = Instance(make(ids), "ids")
    inst.start()
    result = inst.turn(ph.new_task_completed_event(1))
    assert uuids[0] == uuids[1] and uuids[0][0] != uuids[0][1]
    assert output(result) == uuids[0]
    other = Instance(make(ids), "ids", instance_id="inst-2")
    other.start()
    assert uuids[2][0] not in uuids[0]


def test_replay_safe_logger_in_orchestrator(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-orch-logger")

    def chatty(ctx: task.OrchestrationContext, _: Any):
        log = ctx.create_replay_safe_logger(logger)
        log.info("step 1")
        yield ctx.call_activity("a")
        log.info("step 2")

    inst = Instance(make(chatty), "chatty")
    with caplog.at_level(logging.INFO, logger="test-orch-logger"):
        inst.start()
        inst.turn(ph.new_task_completed_event(1))
    assert [r.getMessage() for r in caplog.records if r.name == "test-orch-logger"] == ["step 1", "step 2"]


def make_order(ctx: task.ActivityContext, item: str) -> Order:
    return Order(item, 1)


def test_activity_return_annotation_directs_decoding() -> None:
    def orders(ctx: task.OrchestrationContext, _: Any):
        made = yield ctx.call_activity(make_order, input="x")
        return [type(made).__name__, made.item]

    inst = Instance(make(orders, data_converter=JsonDataConverter()), "orders")
    inst.start()
    assert output(inst.turn(ph.new_task_completed_event(1, '{"item": "x", "quantity": 1}'))) == ["Order", "x"]


def test_execution_started_without_turn_start_sets_the_clock() -> None:
    seen: list[datetime] = []

    def clock(ctx: task.OrchestrationContext, _: Any) -> None:
        seen.append(ctx.current_utc_datetime)

    start = ph.new_execution_started_event("clock", "i", timestamp=T0)
    make(clock).execute("i", [], [start])
    assert seen == [T0]


def test_already_completed_history_produces_no_actions() -> None:
    inst = Instance(make(child), "child", 1)
    inst.start()
    inst.history.append(ph.new_execution_completed_event(pb.ORCHESTRATION_STATUS_COMPLETED, "2"))
    assert inst.turn(ph.new_event_raised_event("late")).actions == []
