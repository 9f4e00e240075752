"""``async def`` orchestrators on a real worker and sidecar, and an instance moving between the two forms."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import eventually

WAIT = 30.0


def double(ctx: task.ActivityContext, value: int) -> int:
    return value * 2


def generator_form() -> Callable[..., Any]:
    def approve_order(ctx: task.OrchestrationContext, value: int) -> Any:
        first = yield ctx.call_activity(double, input=value)
        ctx.set_custom_status("waiting")
        extra = yield ctx.wait_for_external_event("go")
        second = yield ctx.call_activity(double, input=first + extra)
        return [first, second]

    return approve_order


def async_form() -> Callable[..., Any]:
    async def approve_order(ctx: task.OrchestrationContext, value: int) -> Any:
        first = await ctx.call_activity(double, input=value)
        ctx.set_custom_status("waiting")
        extra = await ctx.wait_for_external_event("go")
        second = await ctx.call_activity(double, input=first + extra)
        return [first, second]

    return approve_order


def _custom_status(client: TaskHubGrpcClient, instance_id: str) -> Any:
    state = client.get_orchestration_state(instance_id)
    return state.get_custom_status() if state is not None else None


def _worker(address: str, orchestrator: Callable[..., Any], activity: Callable[..., Any]) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_orchestrator(orchestrator)
    worker.add_activity(activity)
    worker.start()
    return worker


def test_an_instance_started_by_the_generator_form_finishes_on_the_async_form(sidecar: Any) -> None:
    ran = threading.Event()

    def double_and_note(ctx: task.ActivityContext, value: int) -> int:
        ran.set()
        return value * 2

    double_and_note.__name__ = "double"
    instance_id = f"forms-{uuid.uuid4().hex[:8]}"
    with TaskHubGrpcClient(host_address=sidecar.address) as client:
        first_worker = _worker(sidecar.address, generator_form(), double_and_note)
        try:
            client.schedule_new_orchestration("approve_order", input=5, instance_id=instance_id)
            assert ran.wait(WAIT), "the generator form's first activity did not run"
            # Stop it only at the durable pause (the activity's result committed, the event awaited):
            # a backend may not hand out again what a stopped worker held.
            eventually(lambda: _custom_status(client, instance_id) == "waiting", WAIT, "the durable pause")
        finally:
            first_worker.stop()
        second_worker = _worker(sidecar.address, async_form(), double)
        try:
            client.raise_orchestration_event(instance_id, "go", data=1)
            state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
        finally:
            second_worker.stop()
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    assert state.get_output() == [10, 22]
    assert state.get_custom_status() == "waiting"
