"""Replay engine: history that no longer matches the orchestrator code fails the instance."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from history_builders import T0, Instance, failure, kinds, output

from durabletask import task
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor

NON_DETERMINISM = "durabletask.task.NonDeterminismError"


def executor_for(fn: Callable[..., Any]) -> OrchestrationExecutor:
    registry = Registry()
    registry.add_orchestrator(fn, name="orch")
    return OrchestrationExecutor(registry)


def started_with(fn: Callable[..., Any]) -> Instance:
    """An instance whose first turn ran ``fn``."""
    inst = Instance(executor_for(fn), "orch")
    inst.start()
    return inst


def activity_a(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity("a")
    yield ctx.call_activity("next")


def test_same_code_replays_cleanly() -> None:
    inst = started_with(activity_a)
    result = inst.turn(ph.new_task_completed_event(1))
    assert kinds(result.actions) == ["scheduleTask"]


def test_wrong_kind() -> None:
    def timer_instead(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(seconds=5))

    inst = started_with(activity_a)
    inst.executor = executor_for(timer_instead)
    result = inst.turn(ph.new_task_completed_event(1))
    details = failure(result)
    assert details.errorType == NON_DETERMINISM
    assert "expected create_timer(" in details.errorMessage
    assert "history has a taskScheduled('a') at id 1" in details.errorMessage
    assert kinds(result.actions) == ["completeOrchestration"]


def test_wrong_kind_message_names_both_sides() -> None:
    def timer_first(ctx: task.OrchestrationContext, _: Any):
        yield ctx.create_timer(timedelta(seconds=5))

    def activity_first(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")

    inst = started_with(timer_first)
    inst.executor = executor_for(activity_first)
    details = failure(inst.turn(ph.new_timer_fired_event(1, T0 + timedelta(seconds=5))))
    assert "expected call_activity('a') but history has a timerCreated at id 1" in details.errorMessage


def test_wrong_activity_name() -> None:
    def renamed(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("b")

    inst = started_with(activity_a)
    inst.executor = executor_for(renamed)
    details = failure(inst.turn(ph.new_task_completed_event(1)))
    assert details.errorType == NON_DETERMINISM
    assert "expected call_activity('b') but history has a taskScheduled('a') at id 1" in details.errorMessage


def test_wrong_sub_orchestration_name() -> None:
    def calls_x(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_sub_orchestrator("x")

    def calls_y(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_sub_orchestrator("y")

    inst = started_with(calls_x)
    inst.executor = executor_for(calls_y)
    details = failure(inst.turn(ph.new_sub_orchestration_completed_event(1)))
    assert "call_sub_orchestrator('y')" in details.errorMessage
    assert "subOrchestrationInstanceCreated('x')" in details.errorMessage


def test_send_event_target_or_name_changed() -> None:
    def sends(target: str, name: str) -> Callable[..., Any]:
        def orch(ctx: task.OrchestrationContext, _: Any):
            ctx.send_event(target, name)
            yield ctx.create_timer(timedelta(seconds=1))

        return orch

    for target, name, ok in [("t", "E", True), ("u", "e", False), ("t", "f", False)]:
        inst = started_with(sends("t", "e"))
        inst.executor = executor_for(sends(target, name))
        result = inst.turn(ph.new_timer_fired_event(2, T0 + timedelta(seconds=1)))
        if ok:
            assert output(result) is None
        else:
            assert failure(result).errorType == NON_DETERMINISM
            assert f"expected send_event('{target}', '{name}')" in failure(result).errorMessage


def test_history_event_without_action() -> None:
    def does_nothing_first(ctx: task.OrchestrationContext, _: Any):
        yield ctx.wait_for_external_event("never")

    inst = started_with(activity_a)
    inst.executor = executor_for(does_nothing_first)
    details = failure(inst.turn(ph.new_task_completed_event(1)))
    assert details.errorType == NON_DETERMINISM
    assert "history has a taskScheduled('a') at id 1" in details.errorMessage
    assert "made no call with this id" in details.errorMessage


def test_extra_history_event_after_completion_of_code() -> None:
    def two_at_once(ctx: task.OrchestrationContext, _: Any):
        yield task.when_all([ctx.call_activity("a"), ctx.call_activity("b")])

    def one_only(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")

    inst = started_with(two_at_once)
    inst.executor = executor_for(one_only)
    details = failure(inst.turn(ph.new_task_completed_event(1)))
    assert "history has a taskScheduled('b') at id 2" in details.errorMessage


def test_missing_action_code_now_does_more_than_history_recorded() -> None:
    def one_only(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")
        yield ctx.call_activity("c")

    def two_at_once(ctx: task.OrchestrationContext, _: Any):
        yield task.when_all([ctx.call_activity("a"), ctx.call_activity("b")])
        yield ctx.call_activity("c")

    inst = started_with(one_only)
    inst.executor = executor_for(two_at_once)
    result = inst.turn(ph.new_task_completed_event(1))
    details = failure(result)
    assert details.errorType == NON_DETERMINISM
    assert "calls call_activity('b') (action id 2) but the history has no record of it" in details.errorMessage
    assert kinds(result.actions) == ["completeOrchestration"]


def test_non_determinism_drops_other_pending_actions() -> None:
    def fan(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("a")
        yield task.when_all([ctx.call_activity("x"), ctx.call_activity("y")])

    def changed(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_activity("z")

    inst = started_with(fan)
    inst.turn(ph.new_task_completed_event(1))
    inst.executor = executor_for(changed)
    result = inst.turn(ph.new_task_completed_event(2))
    assert kinds(result.actions) == ["completeOrchestration"]
    assert failure(result).errorType == NON_DETERMINISM
