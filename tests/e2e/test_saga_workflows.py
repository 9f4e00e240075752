"""durabletask.saga and durabletask.workflows end to end: one in-process sidecar and one worker per module.

The worker keeps no replay state between turns (``maximum_cached_orchestrations=0``), so every
turn replays the orchestrator from the start: sagas and workflows must be deterministic to pass.
Activities record their calls per instance, to check what ran, how often and in which order.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.saga import SAGA_ERROR_TYPE, Saga
from durabletask.worker import TaskHubGrpcWorker
from durabletask.workflows import (
    AsyncWorkflowClient,
    UnknownWorkflowError,
    WorkflowBuilder,
    WorkflowClient,
    WorkflowNotFoundError,
    WorkflowState,
    WorkflowStateError,
    register_workflow,
)
from tests.e2e.conftest import eventually, fast_sidecar

_lock = threading.Lock()
CALLS: dict[str, list[str]] = defaultdict(list)
STARTS: dict[str, int] = defaultdict(int)
GATES: dict[str, threading.Event] = {}


def _record(instance_id: str, what: str) -> None:
    with _lock:
        CALLS[instance_id].append(what)


def calls(instance_id: str) -> list[str]:
    with _lock:
        return list(CALLS[instance_id])


# ------------------------------------------------------------------ saga orchestrations


def book(ctx: task.ActivityContext, step: dict) -> str:
    _record(ctx.orchestration_id, f"book {step['step']}")
    if step["fail"]:
        raise RuntimeError(f"no availability for {step['step']}")
    return f"{step['step']} booked"


def undo(ctx: task.ActivityContext, step: dict) -> str:
    _record(ctx.orchestration_id, f"undo {step['step']}")
    if step["broken"]:
        raise KeyError(f"cannot undo {step['step']}")
    return f"{step['step']} undone"


FAST_RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=10), max_number_of_attempts=2)


def trip(ctx: task.OrchestrationContext, params: dict) -> Any:
    """Books params['steps'] (failing at params['fail_at']); compensates by params['mode']."""
    with _lock:
        STARTS[ctx.instance_id] += 1
    ctx.set_custom_status("booking")
    saga = Saga(ctx, parallel=params.get("parallel", False))
    try:
        for step in params["steps"]:
            yield ctx.call_activity(book, input={"step": step, "fail": step == params.get("fail_at")})
            retry = FAST_RETRY if params.get("retry") else None
            saga.add_compensation(undo, {"step": step, "broken": step in params.get("broken", [])}, retry_policy=retry)
            if params.get("timers"):
                yield ctx.create_timer(timedelta(0))
    except task.TaskFailedError as err:
        if params.get("mode") == "raise":
            yield from saga.compensate_and_raise(err)
        report = yield from saga.compensate(err)
        return {"compensated": report.compensated, "results": report.results}
    return "booked"


async def trip_async(ctx: task.OrchestrationContext, params: dict) -> Any:
    """``trip`` as an ``async def`` orchestrator: the saga's operations are awaited."""
    saga = Saga(ctx, parallel=params.get("parallel", False))
    try:
        for step in params["steps"]:
            await ctx.call_activity(book, input={"step": step, "fail": step == params.get("fail_at")})
            saga.add_compensation(undo, {"step": step, "broken": step in params.get("broken", [])})
    except task.TaskFailedError as err:
        if params.get("mode") == "raise":
            await saga.compensate_and_raise(err)
        report = await saga.compensate(err)
        return {"compensated": report.compensated, "results": report.results}
    return "booked"


def saga_bad_input(ctx: task.OrchestrationContext, _: Any) -> list[str]:
    saga = Saga(ctx)
    errors = []
    for args, kwargs in (((" ",), {}), ((42,), {}), (("undo",), {"retry_policy": "often"})):
        try:
            saga.add_compensation(*args, **kwargs)
        except (TypeError, ValueError) as err:
            errors.append(f"{type(err).__name__}: {err}")
    errors.append(f"pending: {len(saga.pending)}")
    return errors


# --------------------------------------------------------------------- workflow activities


def reserve(ctx: task.ActivityContext, data: dict) -> str:
    _record(ctx.orchestration_id, "reserve")
    return f"R-{data['context']['order']}"


def release(ctx: task.ActivityContext, data: dict) -> None:
    _record(ctx.orchestration_id, f"release {data['result']}")
    if data["context"].get("release_fails"):
        raise RuntimeError("warehouse offline")


def review(ctx: task.ActivityContext, data: dict) -> str:
    _record(ctx.orchestration_id, "review")
    return "approved"


def charge(ctx: task.ActivityContext, data: dict) -> int:
    _record(ctx.orchestration_id, "charge")
    if data["context"].get("card") == "declined":
        raise ValueError("card declined")
    return int(data["context"]["amount"])


def refund(ctx: task.ActivityContext, data: dict) -> None:
    _record(ctx.orchestration_id, f"refund {data['result']}")


def label(ctx: task.ActivityContext, data: dict) -> str:
    _record(ctx.orchestration_id, "label")
    return f"L-{data['results']['reserve']}"


def void_label(ctx: task.ActivityContext, data: dict) -> None:
    _record(ctx.orchestration_id, f"void {data['result']}")


def ship(ctx: task.ActivityContext, data: dict) -> str:
    _record(ctx.orchestration_id, "ship")
    gate = data.get("gate")
    if gate is not None:
        assert GATES[gate].wait(20), "the test never opened the gate"
    return f"shipped {data['label']}"


def unship(ctx: task.ActivityContext, data: dict) -> None:
    _record(ctx.orchestration_id, "unship")


ORDER = (
    WorkflowBuilder("order_processing")
    .add_step("reserve", reserve, compensation=release)
    .add_conditional_step("review", review, condition=lambda view: view["amount"] > 100)
    .add_parallel_steps(
        [
            {"name": "charge", "activity": charge, "compensation": refund},
            {"name": "label", "activity": label, "compensation": void_label},
        ]
    )
    .add_step(
        "ship", ship, compensation=unship, input=lambda view: {"label": view["label"], "gate": view.get("gate")}
    )
    .with_retry_config(max_retries=1, backoff_factor=1.0, first_interval=timedelta(milliseconds=10))
    .build()
)

FRAGILE = (
    WorkflowBuilder("fragile")
    .add_step("reserve", reserve, compensation=release)
    .add_conditional_step("check", review, condition=lambda view: view["no_such_key"] > 1)
    .build()
)


@dataclass
class Env:
    client: TaskHubGrpcClient
    address: str
    workflows: WorkflowClient


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with fast_sidecar() as (_, address):
        worker = TaskHubGrpcWorker(host_address=address, maximum_cached_orchestrations=0)
        worker.add_orchestrator(trip)
        worker.add_orchestrator(trip_async)
        worker.add_orchestrator(saga_bad_input)
        worker.add_activity(book)
        worker.add_activity(undo)
        register_workflow(worker, ORDER)
        register_workflow(worker, FRAGILE)
        worker.start()
        client = TaskHubGrpcClient(host_address=address)
        try:
            yield Env(client, address, WorkflowClient(client, [ORDER, FRAGILE]))
        finally:
            client.close()
            worker.stop()


def run_trip(env: Env, **params: Any) -> Any:
    instance_id = env.client.schedule_new_orchestration(trip, input=params)
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    return instance_id, state


def undo_turns(env: Env, instance_id: str) -> list[int]:
    """For each scheduled ``undo``, the number of the turn that scheduled it."""
    turn, found = 0, []
    for event in env.client.get_orchestration_history(instance_id):
        if isinstance(event, history.OrchestratorStartedEvent):
            turn += 1
        elif isinstance(event, history.TaskScheduledEvent) and event.name == "undo":
            found.append(turn)
    return found


# ------------------------------------------------------------------------------- sagas


def test_saga_compensates_in_reverse_order_one_at_a_time(env: Env) -> None:
    instance_id, state = run_trip(env, steps=["a", "b", "c", "d"], fail_at="d")
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert state.get_output() == {"compensated": ["undo"] * 3, "results": ["c undone", "b undone", "a undone"]}
    assert calls(instance_id)[-3:] == ["undo c", "undo b", "undo a"]
    turns = undo_turns(env, instance_id)
    assert len(set(turns)) == 3, "sequential compensations are scheduled one turn after another"


def test_saga_compensates_in_parallel_when_asked(env: Env) -> None:
    instance_id, state = run_trip(env, steps=["a", "b", "c", "d"], fail_at="d", parallel=True)
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert state.get_output()["results"] == ["c undone", "b undone", "a undone"]
    turns = undo_turns(env, instance_id)
    assert len(turns) == 3 and len(set(turns)) == 1, "parallel compensations are scheduled in one turn"


@pytest.mark.parametrize("parallel", [False, True])
def test_an_async_orchestrator_awaits_the_saga_with_the_same_history(env: Env, parallel: bool) -> None:
    params = {"steps": ["a", "b", "c"], "fail_at": "c", "parallel": parallel}
    generator_id, generator_state = run_trip(env, **params)
    async_id = env.client.schedule_new_orchestration(trip_async, input=params)
    async_state = env.client.wait_for_orchestration_completion(async_id, timeout=30)
    assert async_state is not None and async_state.runtime_status == OrchestrationStatus.COMPLETED, (
        async_state and async_state.failure_details)
    assert async_state.get_output() == generator_state.get_output() == {
        "compensated": ["undo", "undo"], "results": ["b undone", "a undone"]}
    assert undo_turns(env, async_id) == undo_turns(env, generator_id)
    assert calls(async_id) == calls(generator_id)


def test_an_async_orchestrator_awaits_compensate_and_raise(env: Env) -> None:
    instance_id = env.client.schedule_new_orchestration(
        trip_async, input={"steps": ["a", "b"], "fail_at": "b", "mode": "raise"})
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None and state.failure_details.error_type == SAGA_ERROR_TYPE
    assert calls(instance_id) == ["book a", "book b", "undo a"]


def test_saga_happy_path_runs_no_compensation(env: Env) -> None:
    instance_id, state = run_trip(env, steps=["a", "b"])
    assert state.get_output() == "booked"
    assert calls(instance_id) == ["book a", "book b"]


@pytest.mark.parametrize("parallel", [False, True])
def test_compensation_failures_are_reported_with_the_original_error(env: Env, parallel: bool) -> None:
    instance_id, state = run_trip(
        env, steps=["a", "b", "c", "d"], fail_at="d", broken=["b", "c"], retry=True, parallel=parallel, mode="raise"
    )
    assert state.runtime_status == OrchestrationStatus.FAILED
    details = state.failure_details
    assert details is not None and details.error_type == "durabletask.saga.SagaFailedError"
    assert details.message.startswith("saga failed: no availability for d; 2 compensation(s) failed: ")
    assert "undo (KeyError: 'cannot undo c')" in details.message
    assert "undo (KeyError: 'cannot undo b')" in details.message
    # every compensation was tried, the broken ones twice (their retry policy), the good one once
    undone = [c for c in calls(instance_id) if c.startswith("undo")]
    assert sorted(undone) == ["undo a", "undo b", "undo b", "undo c", "undo c"]


def test_compensate_and_raise_fails_the_orchestration_even_when_compensation_succeeds(env: Env) -> None:
    instance_id, state = run_trip(env, steps=["a", "b"], fail_at="b", mode="raise")
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.message == "saga failed: no availability for b; every compensation succeeded"
    assert calls(instance_id) == ["book a", "book b", "undo a"]


def test_saga_replays_deterministically_across_durable_waits(env: Env) -> None:
    instance_id, state = run_trip(env, steps=["a", "b", "c"], fail_at="c", timers=True)
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert state.get_output()["results"] == ["b undone", "a undone"]
    # each step, timer and compensation ended a turn; every turn replayed the saga from the start
    assert STARTS[instance_id] >= 7
    assert calls(instance_id) == ["book a", "book b", "book c", "undo b", "undo a"]


def test_saga_bad_input_is_refused_and_registers_nothing(env: Env) -> None:
    instance_id = env.client.schedule_new_orchestration(saga_bad_input)
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None and state.get_output() == [
        "ValueError: a compensation needs an activity name, not an empty string",
        "TypeError: a compensation is an activity function or name, not int",
        "TypeError: retry_policy must be a RetryPolicy, not str",
        "pending: 0",
    ]


# --------------------------------------------------------------------------- workflows


def test_workflow_runs_every_step_and_skips_a_false_condition(env: Env) -> None:
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o1", "amount": 40})
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.COMPLETED and status.error is None
    assert status.workflow_name == "order_processing" and status.instance_id == instance_id
    assert status.step_results == {"reserve": "R-o1", "charge": 40, "label": "L-R-o1", "ship": "shipped L-R-o1"}
    assert status.skipped_steps == ["review"] and status.completed_steps == ["reserve", "charge", "label", "ship"]
    assert status.current_step is None and status.compensated_steps == []
    assert status.created_at <= status.updated_at
    assert "review" not in calls(instance_id)
    state = env.client.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED


def test_workflow_runs_a_true_conditional_step(env: Env) -> None:
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o2", "amount": 500})
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.COMPLETED
    assert status.step_results["review"] == "approved" and status.skipped_steps == []


def test_failed_step_compensates_completed_steps_in_reverse(env: Env) -> None:
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o3", "amount": 40, "card": "declined"})
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.COMPENSATED
    assert status.failed_step == "charge" and status.error == "step 'charge' failed: card declined"
    # label ran beside the failing charge and is undone; charge itself is not refunded
    assert status.compensated_steps == ["label", "reserve"]
    assert status.step_results == {"reserve": "R-o3", "label": "L-R-o3"}
    recorded = calls(instance_id)
    assert recorded.count("charge") == 2, "the workflow's retry config retried the step once"
    assert recorded[-2:] == ["void L-R-o3", "release R-o3"] and "ship" not in recorded


def test_failed_compensation_ends_the_workflow_failed_naming_both_errors(env: Env) -> None:
    context = {"order": "o4", "amount": 40, "card": "declined", "release_fails": True}
    instance_id = env.workflows.execute_workflow("order_processing", context)
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.FAILED
    assert status.error is not None
    assert "step 'charge' failed: card declined" in status.error and "release (RuntimeError: warehouse offline)" in status.error
    assert status.compensation_failures == [
        {"step": "reserve", "activity": "release", "error": "warehouse offline"}
    ]
    assert status.compensated_steps == ["label"]
    assert calls(instance_id).count("release R-o4") == 2, "compensations are retried by the retry config too"
    state = env.client.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == OrchestrationStatus.FAILED


def test_a_condition_that_raises_fails_its_step_and_compensates(env: Env) -> None:
    instance_id = env.workflows.execute_workflow("fragile", {"order": "o5"})
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.COMPENSATED and status.failed_step == "check"
    assert status.error is not None and status.error.startswith("step 'check': its condition raised KeyError:")
    assert calls(instance_id) == ["reserve", "release R-o5"]


def test_cancel_lets_the_running_step_finish_then_compensates_everything(env: Env) -> None:
    GATES["g1"] = threading.Event()
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o6", "amount": 40, "gate": "g1"})
    running = eventually(
        lambda: (s := env.workflows.get_status(instance_id)).current_step == "ship" and s, 20, "the ship step to start"
    )
    assert running.state == WorkflowState.RUNNING and running.current_steps == ["ship"]
    assert running.step_results == {"reserve": "R-o6", "charge": 40, "label": "L-R-o6"}
    env.workflows.cancel_workflow(instance_id)
    GATES["g1"].set()
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.CANCELLED and status.error is None
    assert status.compensated_steps == ["ship", "label", "charge", "reserve"]
    assert calls(instance_id)[-4:] == ["unship", "void L-R-o6", "refund 40", "release R-o6"]
    with pytest.raises(WorkflowStateError, match="has already ended \\(cancelled\\)"):
        env.workflows.cancel_workflow(instance_id)


def test_a_workflow_cancelled_while_pending_ends_cancelled(env: Env) -> None:
    # The cancel event is seen in the first turn right after the first step was scheduled:
    # that step is let finish and undone; no later step starts.
    start_at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    instance_id = env.client.schedule_new_orchestration(
        "order_processing", input={"order": "o8", "amount": 40}, start_at=start_at
    )
    pending = env.workflows.get_status(instance_id)
    assert pending.state == WorkflowState.PENDING and pending.step_results == {} and pending.current_step is None
    env.workflows.cancel_workflow(instance_id)
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.CANCELLED and status.error is None
    assert status.compensated_steps == list(reversed(status.completed_steps))
    assert status.completed_steps in ([], ["reserve"])
    assert "charge" not in calls(instance_id)


def test_a_terminated_workflow_reads_as_failed(env: Env) -> None:
    GATES["g3"] = threading.Event()
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o9", "amount": 40, "gate": "g3"})
    eventually(lambda: env.workflows.get_status(instance_id).current_step == "ship", 20, "the ship step to start")
    env.client.terminate_orchestration(instance_id)
    GATES["g3"].set()
    status = env.workflows.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.FAILED and status.error == "the orchestration was terminated"
    assert status.compensated_steps == [] and "unship" not in calls(instance_id)


def test_parallel_steps_start_in_one_turn(env: Env) -> None:
    instance_id = env.workflows.execute_workflow("order_processing", {"order": "o7", "amount": 40})
    env.workflows.wait_for_workflow(instance_id, timeout=30)
    turn, scheduled = 0, {}
    for event in env.client.get_orchestration_history(instance_id):
        if isinstance(event, history.OrchestratorStartedEvent):
            turn += 1
        elif isinstance(event, history.TaskScheduledEvent):
            scheduled[event.name] = turn
    assert scheduled["charge"] == scheduled["label"] and scheduled["reserve"] < scheduled["charge"] < scheduled["ship"]


def test_facade_errors_are_clear_and_change_nothing(env: Env) -> None:
    before = len(env.client.get_all_orchestration_states())
    with pytest.raises(UnknownWorkflowError, match="unknown workflow 'order_procesing'; known: \\['fragile', 'order_processing'\\]"):
        env.workflows.execute_workflow("order_procesing", {})
    with pytest.raises(UnknownWorkflowError, match="non-empty string"):
        env.workflows.execute_workflow("", {})
    assert len(env.client.get_all_orchestration_states()) == before
    with pytest.raises(WorkflowNotFoundError, match="no workflow instance 'nope'"):
        env.workflows.get_status("nope")
    with pytest.raises(WorkflowNotFoundError):
        env.workflows.cancel_workflow("nope")
    saga_id, _ = run_trip(env, steps=["a"])
    with pytest.raises(WorkflowStateError, match="is not a declarative workflow"):
        env.workflows.get_status(saga_id)


def test_an_unregistered_workflow_fails_with_a_clear_status(env: Env) -> None:
    unchecked = WorkflowClient(env.client)  # no definitions: the name is only checked by the worker
    instance_id = unchecked.execute_workflow("not_registered", {})
    status = unchecked.wait_for_workflow(instance_id, timeout=30)
    assert status.state == WorkflowState.FAILED and status.error is not None and "not_registered" in status.error


def test_async_facade(env: Env) -> None:
    async def scenario() -> None:
        async with AsyncTaskHubGrpcClient(host_address=env.address) as client:
            workflows = AsyncWorkflowClient(client, [ORDER])
            instance_id = await workflows.execute_workflow(ORDER, {"order": "a1", "amount": 7})
            status = await workflows.wait_for_workflow(instance_id, timeout=30)
            assert status.state == WorkflowState.COMPLETED and status.step_results["charge"] == 7
            assert (await workflows.get_status(instance_id)).state == WorkflowState.COMPLETED

            GATES["g2"] = threading.Event()
            gated = await workflows.execute_workflow("order_processing", {"order": "a2", "amount": 7, "gate": "g2"})
            deadline = asyncio.get_running_loop().time() + 20
            while (await workflows.get_status(gated)).current_step != "ship":
                assert asyncio.get_running_loop().time() < deadline, "the ship step never started"
                await asyncio.sleep(0.05)
            await workflows.cancel_workflow(gated)
            GATES["g2"].set()
            cancelled = await workflows.wait_for_workflow(gated, timeout=30)
            assert cancelled.state == WorkflowState.CANCELLED
            assert cancelled.compensated_steps == ["ship", "label", "charge", "reserve"]

            with pytest.raises(UnknownWorkflowError):
                await workflows.execute_workflow("fragile", {})
            with pytest.raises(WorkflowNotFoundError):
                await workflows.get_status("nope")
            with pytest.raises(WorkflowStateError):
                await workflows.cancel_workflow(instance_id)

    asyncio.run(scenario())
