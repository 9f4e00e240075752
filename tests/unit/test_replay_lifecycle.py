"""Replay engine: retries, continue-as-new, suspend/resume, terminate."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from history_builders import Instance, completion, failure, kinds, output

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import ExecutionResults, OrchestrationExecutor


class TransientError(Exception):
    pass


class PermanentError(Exception):
    pass


def run(fn: Any, input: Any = None) -> Instance:
    registry = Registry()
    registry.add_orchestrator(fn, name="orch")
    inst = Instance(OrchestrationExecutor(registry), "orch", input)
    return inst


def retrying(policy: task.RetryPolicy, *, sub: bool = False) -> Any:
    def orch(ctx: task.OrchestrationContext, _: Any):
        if sub:
            return (yield ctx.call_sub_orchestrator("child", input="in", retry_policy=policy))
        return (yield ctx.call_activity("flaky", input="in", retry_policy=policy))

    return orch


def timer_delay(inst: Instance, result: ExecutionResults) -> timedelta:
    assert kinds(result.actions) == ["createTimer"]
    return ph.to_datetime(result.actions[0].createTimer.fireAt) - inst.now


def fire(inst: Instance, result: ExecutionResults) -> ExecutionResults:
    """Fire the only timer of ``result`` at its due time."""
    action = result.actions[0]
    fire_at = ph.to_datetime(action.createTimer.fireAt)
    return inst.turn(ph.new_timer_fired_event(action.id, fire_at), advance=fire_at - inst.now)


# -------------------------------------------------------------------- retries


def test_retry_with_backoff_then_success() -> None:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5, backoff_coefficient=2.0
    )
    inst = run(retrying(policy))
    first = inst.start()
    assert kinds(first.actions) == ["scheduleTask"] and first.actions[0].id == 1

    waited = inst.turn(ph.new_task_failed_event(1, TransientError("1st")))
    assert waited.actions[0].id == 2 and timer_delay(inst, waited) == timedelta(seconds=1)
    again = fire(inst, waited)
    assert kinds(again.actions) == ["scheduleTask"]
    assert again.actions[0].id == 1  # the retry keeps the call's id; timers take new ones
    assert again.actions[0].scheduleTask.name == "flaky" and again.actions[0].scheduleTask.input.value == '"in"'

    waited = inst.turn(ph.new_task_failed_event(1, TransientError("2nd")))
    assert waited.actions[0].id == 3 and timer_delay(inst, waited) == timedelta(seconds=2)
    again = fire(inst, waited)
    assert again.actions[0].id == 1
    assert output(inst.turn(ph.new_task_completed_event(1, '"finally"'))) == "finally"


def test_retry_interval_is_capped() -> None:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=10),
        max_number_of_attempts=4,
        backoff_coefficient=10.0,
        max_retry_interval=timedelta(seconds=30),
    )
    inst = run(retrying(policy))
    inst.start()
    delays = []
    task_id = 1
    for _ in range(3):
        waited = inst.turn(ph.new_task_failed_event(task_id, TransientError()))
        delays.append(timer_delay(inst, waited))
        task_id = fire(inst, waited).actions[0].id
    assert delays == [timedelta(seconds=10), timedelta(seconds=30), timedelta(seconds=30)]


def test_retries_stop_at_max_attempts() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=2)
    inst = run(retrying(policy))
    inst.start()
    again = fire(inst, inst.turn(ph.new_task_failed_event(1, TransientError("first"))))
    details = failure(inst.turn(ph.new_task_failed_event(again.actions[0].id, TransientError("last"))))
    assert details.innerFailure.errorMessage == "last"
    assert details.innerFailure.errorType.endswith("TransientError")


def test_no_retry_after_retry_timeout() -> None:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=5),
        max_number_of_attempts=10,
        retry_timeout=timedelta(seconds=30),
    )
    inst = run(retrying(policy))
    inst.start()
    waited = inst.turn(ph.new_task_failed_event(1, TransientError()), advance=timedelta(seconds=10))
    assert kinds(waited.actions) == ["createTimer"]
    again = fire(inst, waited)
    late = inst.turn(ph.new_task_failed_event(again.actions[0].id, TransientError()), advance=timedelta(seconds=20))
    assert failure(late).innerFailure.errorType.endswith("TransientError")


@pytest.mark.parametrize("non_retryable", [PermanentError, f"{__name__}.PermanentError", "PermanentError", Exception])
def test_non_retryable_errors(non_retryable: Any) -> None:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5, non_retryable_errors=[non_retryable]
    )
    inst = run(retrying(policy))
    inst.start()
    assert failure(inst.turn(ph.new_task_failed_event(1, PermanentError("no")))).innerFailure.errorMessage == "no"


def test_non_retryable_list_does_not_block_other_errors() -> None:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5, non_retryable_errors=[PermanentError]
    )
    inst = run(retrying(policy))
    inst.start()
    assert kinds(inst.turn(ph.new_task_failed_event(1, TransientError())).actions) == ["createTimer"]


def test_handle_decides_per_failure() -> None:
    seen: list[str] = []

    def handle(details: task.FailureDetails) -> bool:
        seen.append(details.message)
        return details.is_caused_by(TransientError)

    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5, handle=handle)
    inst = run(retrying(policy))
    inst.start()
    again = fire(inst, inst.turn(ph.new_task_failed_event(1, TransientError("t"))))
    details = failure(inst.turn(ph.new_task_failed_event(again.actions[0].id, PermanentError("p"))))
    assert details.innerFailure.errorMessage == "p"
    assert seen[-1] == "p" and "t" in seen


def test_failure_marked_non_retriable_is_not_retried() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5)
    inst = run(retrying(policy))
    inst.start()
    details = pb.TaskFailureDetails(errorType="x.Y", errorMessage="fatal", isNonRetriable=True)
    assert failure(inst.turn(ph.new_task_failed_event(1, details))).innerFailure.errorMessage == "fatal"


def test_sub_orchestration_retry_keeps_the_child_id() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=3)
    inst = run(retrying(policy, sub=True))
    first = inst.start().actions[0]
    again = fire(inst, inst.turn(ph.new_sub_orchestration_failed_event(1, TransientError())))
    retry = again.actions[0]
    assert retry.id == 1
    assert retry.createSubOrchestration.instanceId == first.createSubOrchestration.instanceId == "inst-1:0001"
    assert output(inst.turn(ph.new_sub_orchestration_completed_event(1, "7"))) == 7


def test_retried_task_in_when_all() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=2)

    def fan(ctx: task.OrchestrationContext, _: Any):
        return (yield task.when_all([
            ctx.call_activity("a", retry_policy=policy),
            ctx.call_activity("b", retry_policy=policy),
        ]))

    inst = run(fan)
    inst.start()
    waited = inst.turn(ph.new_task_failed_event(1, TransientError()), ph.new_task_completed_event(2, '"b"'))
    assert kinds(waited.actions) == ["createTimer"] and waited.actions[0].id == 3
    again = fire(inst, waited)
    assert again.actions[0].id == 1 and again.actions[0].scheduleTask.name == "a"
    assert output(inst.turn(ph.new_task_completed_event(1, '"a"'))) == ["a", "b"]


# ------------------------------------------------------------ continue-as-new


def counter(ctx: task.OrchestrationContext, n: int):
    if n >= 3:
        return n
    yield ctx.wait_for_external_event("tick")
    ctx.continue_as_new(n + 1, save_events=bool(n % 2), new_version="v2")


def test_continue_as_new_without_saving_events() -> None:
    inst = run(counter, 0)
    assert inst.start().actions == []
    result = inst.turn(ph.new_event_raised_event("tick"), ph.new_event_raised_event("extra", "1"))
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    assert done.result.value == "1" and done.newVersion.value == "v2"
    assert len(done.carryoverEvents) == 0


def test_continue_as_new_carries_over_unconsumed_events() -> None:
    inst = run(counter, 1)
    inst.start()
    result = inst.turn(
        ph.new_event_raised_event("Other", '"first"'),
        ph.new_event_raised_event("tick"),
        ph.new_event_raised_event("TICK", '"late"'),
    )
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    carried = [(e.eventRaised.name, e.eventRaised.input.value) for e in done.carryoverEvents]
    assert carried == [("Other", '"first"'), ("TICK", '"late"')]


def test_continue_as_new_keeps_actions_of_the_turn() -> None:
    def notifier(ctx: task.OrchestrationContext, n: int) -> None:
        ctx.send_event("peer", "n", data=n)
        ctx.continue_as_new(n + 1)
        ctx.continue_as_new(n + 100)

    result = run(notifier, 1).start()
    assert kinds(result.actions) == ["sendEvent", "completeOrchestration"]
    assert json.loads(completion(result).result.value) == 2


def test_continue_as_new_with_unserializable_input_fails() -> None:
    def bad(ctx: task.OrchestrationContext, _: Any) -> None:
        ctx.continue_as_new(object())

    assert completion(run(bad).start()).orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED


# ------------------------------------------------------------- suspend / resume


def two_steps(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity("a")
    b = yield ctx.wait_for_external_event("b")
    return [a, b]


def test_suspend_holds_events_until_resume() -> None:
    inst = run(two_steps)
    inst.start()
    held = inst.turn(
        ph.new_execution_suspended_event("pause"), ph.new_task_completed_event(1, "1"), ph.new_event_raised_event("b", "2")
    )
    assert held.actions == []
    assert inst.turn(ph.new_event_raised_event("ignored-while-suspended")).actions == []
    assert output(inst.turn(ph.new_execution_resumed_event("go"))) == [1, 2]


def test_suspend_and_resume_in_one_batch() -> None:
    inst = run(two_steps)
    inst.start()
    result = inst.turn(
        ph.new_execution_suspended_event(), ph.new_task_completed_event(1, "1"), ph.new_execution_resumed_event()
    )
    assert kinds(result.actions) == []
    assert output(inst.turn(ph.new_event_raised_event("b", "2"))) == [1, 2]


def test_resume_without_suspend_is_harmless() -> None:
    inst = run(two_steps)
    inst.start()
    assert inst.turn(ph.new_execution_resumed_event()).actions == []


# ----------------------------------------------------------------- terminate


def test_terminate() -> None:
    inst = run(two_steps)
    inst.start()
    result = inst.turn(ph.new_task_completed_event(1, "1"), ph.new_execution_terminated_event('"stopped"'))
    assert kinds(result.actions) == ["completeOrchestration"]
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED
    assert done.result.value == '"stopped"'


def test_terminate_while_suspended() -> None:
    inst = run(two_steps)
    inst.start()
    inst.turn(ph.new_execution_suspended_event())
    done = completion(inst.turn(ph.new_execution_terminated_event()))
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED and not done.HasField("result")
