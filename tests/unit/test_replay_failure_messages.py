"""What orchestration code reads from ``str(TaskFailedError)``: the official SDK's wording, exactly.

Failed activities carry the instance ID before the message, failed sub-orchestrations do not,
and a failed entity operation reads "... failed with error: ...".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from history_builders import Instance, output

from durabletask import task
from durabletask.entities import EntityInstanceId
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor

POLICY = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=2)
COUNTER = EntityInstanceId("counter", "k")


def catching(ctx: task.OrchestrationContext, kind: str):
    try:
        if kind == "activity":
            yield ctx.call_activity("work")
        elif kind == "retried-activity":
            yield ctx.call_activity("work", retry_policy=POLICY)
        elif kind == "sub-orchestration":
            yield ctx.call_sub_orchestrator("child")
        elif kind == "retried-sub-orchestration":
            yield ctx.call_sub_orchestrator("child", retry_policy=POLICY)
        else:
            yield ctx.call_entity(COUNTER, "add", 1)
    except task.TaskFailedError as err:
        return str(err)
    return None


def started(kind: str) -> Instance:
    registry = Registry()
    registry.add_orchestrator(catching)
    inst = Instance(OrchestrationExecutor(registry), "catching", kind, instance_id="order-42")
    inst.start()
    return inst


def retry_once(inst: Instance) -> None:
    """Let the first attempt fail and its retry timer fire (the retry goes under id 1 again)."""
    waited = inst.last
    assert waited is not None
    timer = waited.actions[0]
    fire_at = ph.to_datetime(timer.createTimer.fireAt)
    inst.turn(ph.new_timer_fired_event(timer.id, fire_at), advance=fire_at - inst.now)


def test_a_failed_activity_reads_with_the_instance_id() -> None:
    inst = started("activity")
    done = inst.turn(ph.new_task_failed_event(1, ValueError("no stock")))
    assert output(done) == "order-42: Activity task #1 failed: no stock"


def test_an_activity_whose_retries_ran_out_reads_the_same() -> None:
    inst = started("retried-activity")
    inst.turn(ph.new_task_failed_event(1, ValueError("first")))
    retry_once(inst)
    done = inst.turn(ph.new_task_failed_event(1, ValueError("second")))
    assert output(done) == "order-42: Activity task #1 failed: second"


def test_a_failed_sub_orchestration_reads_without_the_instance_id() -> None:
    inst = started("sub-orchestration")
    done = inst.turn(ph.new_sub_orchestration_failed_event(1, ValueError("child broke")))
    assert output(done) == "Sub-orchestration task #1 failed: child broke"


def test_a_sub_orchestration_whose_retries_ran_out_reads_the_same() -> None:
    inst = started("retried-sub-orchestration")
    inst.turn(ph.new_sub_orchestration_failed_event(1, ValueError("first")))
    retry_once(inst)
    done = inst.turn(ph.new_sub_orchestration_failed_event(1, ValueError("second")))
    assert output(done) == "Sub-orchestration task #1 failed: second"


def test_a_failed_entity_operation_reads_failed_with_error() -> None:
    inst = started("entity")
    assert inst.last is not None
    request_id = inst.last.actions[0].sendEntityMessage.entityOperationCalled.requestId
    done = inst.turn(ph.new_entity_operation_failed_event(request_id, ValueError("too big")))
    assert output(done) == "Operation 'add' on entity '@counter@k' failed with error: too big"


def test_the_failure_details_keep_the_bare_error_message() -> None:
    def details_of(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.call_activity("work")
        except task.TaskFailedError as err:
            return [err.details.message, err.details.error_type]
        return None

    registry = Registry()
    registry.add_orchestrator(details_of)
    inst = Instance(OrchestrationExecutor(registry), "details_of")
    inst.start()
    done = inst.turn(ph.new_task_failed_event(1, ValueError("no stock")))
    assert output(done) == ["no stock", "builtins.ValueError"]
