"""The worker against the real sidecar (in-process, in-memory store) with the real client."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.worker import ActivityNotRegisteredError, ConcurrencyOptions, TaskHubGrpcWorker
from sidecar.server import SidecarServer
from tests.e2e.conftest import official_backend_mode, test_store_spec

WAIT = 30.0
FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5, hello_timeout_seconds=5
)


def new_id() -> str:
    return f"w-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(sidecar: Any) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=sidecar.address) as c:
        yield c


@pytest.fixture
def make_worker(sidecar: Any) -> Iterator[Callable[..., TaskHubGrpcWorker]]:
    """Builds workers on the fixture's sidecar; each is stopped at teardown."""
    made: list[TaskHubGrpcWorker] = []

    def _make(**kwargs: Any) -> TaskHubGrpcWorker:
        kwargs.setdefault("resiliency_options", FAST_RECONNECT)
        worker = TaskHubGrpcWorker(host_address=sidecar.address, **kwargs)
        made.append(worker)
        return worker

    yield _make
    for worker in made:
        worker.stop(timeout=10)


def run(client: TaskHubGrpcClient, orchestrator: Any, input: Any = None) -> Any:
    iid = client.schedule_new_orchestration(orchestrator, input=input, instance_id=new_id())
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None
    return state


# ------------------------------------------------------------------ functions


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def square(ctx: task.ActivityContext, n: int) -> int:
    return n * n


async def slow_double(ctx: task.ActivityContext, n: int) -> int:
    await asyncio.sleep(0)
    return n * 2


def chain(ctx: task.OrchestrationContext, names: list[str]):
    results = []
    for name in names:
        results.append((yield ctx.call_activity(hello, input=name)))
    return results


def fan_out(ctx: task.OrchestrationContext, count: int):
    values = yield task.when_all([ctx.call_activity(square, input=i) for i in range(1, count + 1)])
    return sum(values)


def async_fan_out(ctx: task.OrchestrationContext, count: int):
    values = yield task.when_all([ctx.call_activity(slow_double, input=i) for i in range(count)])
    return values


def timer_then_activity(ctx: task.OrchestrationContext, _: Any):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=1))
    waited = (ctx.current_utc_datetime - start).total_seconds()
    greeting = yield ctx.call_activity(hello, input="timer")
    return {"waited": waited, "greeting": greeting}


def approval(ctx: task.OrchestrationContext, _: Any):
    decision = yield ctx.wait_for_external_event("Approval")
    return f"approved by {decision['by']}"


def child(ctx: task.OrchestrationContext, n: int):
    doubled = yield ctx.call_activity(slow_double, input=n)
    return {"child": ctx.instance_id, "parent": ctx.parent_instance_id, "value": doubled}


def parent(ctx: task.OrchestrationContext, count: int):
    results = yield task.when_all([ctx.call_sub_orchestrator(child, input=i) for i in range(count)])
    return results


def calls_missing_activity(ctx: task.OrchestrationContext, _: Any):
    return (yield ctx.call_activity("no_such_activity", input=1))


def catches_missing_activity(ctx: task.OrchestrationContext, _: Any):
    try:
        yield ctx.call_activity("no_such_activity", input=1)
    except task.TaskFailedError as failure:
        return {
            "type": failure.details.error_type,
            "caused_by": failure.details.is_caused_by(ActivityNotRegisteredError),
        }
    return None


# ------------------------------------------------------------------ tests


def test_activity_chain(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(chain)
    worker.add_activity(hello)
    worker.start()
    state = run(client, chain, ["Tokyo", "Seattle", "London"])
    assert state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == ["Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"]


def test_fan_out_fan_in(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(fan_out)
    worker.add_activity(square)
    worker.start()
    state = run(client, fan_out, 25)
    assert state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == sum(i * i for i in range(1, 26))


def test_async_activities(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(async_fan_out)
    worker.add_activity(slow_double)
    worker.start()
    state = run(client, async_fan_out, 10)
    assert state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == [i * 2 for i in range(10)]


def test_durable_timer(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(timer_then_activity)
    worker.add_activity(hello)
    worker.start()
    state = run(client, timer_then_activity)
    assert state.runtime_status is OrchestrationStatus.COMPLETED
    output = state.get_output()
    assert output["greeting"] == "Hello, timer!"
    assert output["waited"] >= 1.0


def test_external_event(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(approval)
    worker.start()
    iid = client.schedule_new_orchestration(approval, instance_id=new_id())
    client.wait_for_orchestration_start(iid, timeout=WAIT)
    client.raise_orchestration_event(iid, "approval", data={"by": "Jane"})
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == "approved by Jane"


def test_sub_orchestrations(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(parent)
    worker.add_orchestrator(child)
    worker.add_activity(slow_double)
    worker.start()
    iid = new_id()
    client.schedule_new_orchestration(parent, input=3, instance_id=iid)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    results = state.get_output()
    assert [r["value"] for r in results] == [0, 2, 4]
    if not official_backend_mode():  # the official test backend records no parent for a child
        assert all(r["parent"] == iid for r in results)
    assert len({r["child"] for r in results}) == 3


def test_unregistered_orchestrator_and_activity_fail_and_the_worker_keeps_going(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(calls_missing_activity)
    worker.add_orchestrator(catches_missing_activity)
    worker.add_orchestrator(chain)
    worker.add_activity(hello)
    worker.start()

    missing_orch = client.schedule_new_orchestration("no_such_orchestrator", instance_id=new_id())
    state = client.wait_for_orchestration_completion(missing_orch, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type.endswith("OrchestratorNotRegisteredError")

    state = run(client, calls_missing_activity)
    assert state.runtime_status is OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "no_such_activity" in state.failure_details.message
    assert "not registered" in state.failure_details.message

    state = run(client, catches_missing_activity)
    assert state.get_output() == {
        "type": "durabletask.worker.ActivityNotRegisteredError",
        "caused_by": True,
    }

    state = run(client, chain, ["again"])
    assert state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == ["Hello, again!"]


def test_activity_concurrency_limit_is_honoured(make_worker, client) -> None:
    gate = threading.Event()
    cond = threading.Condition()
    counts = {"running": 0, "peak": 0}

    def gated(ctx: task.ActivityContext, n: int) -> int:
        with cond:
            counts["running"] += 1
            counts["peak"] = max(counts["peak"], counts["running"])
            cond.notify_all()
        try:
            assert gate.wait(WAIT)
            return n
        finally:
            with cond:
                counts["running"] -= 1

    def gated_fan_out(ctx: task.OrchestrationContext, count: int):
        return (yield task.when_all([ctx.call_activity(gated, input=i) for i in range(count)]))

    worker = make_worker(
        concurrency_options=ConcurrencyOptions(maximum_concurrent_activity_work_items=2, maximum_thread_pool_workers=8)
    )
    worker.add_orchestrator(gated_fan_out)
    worker.add_activity(gated)
    worker.start()
    iid = client.schedule_new_orchestration(gated_fan_out, input=6, instance_id=new_id())
    with cond:
        assert cond.wait_for(lambda: counts["running"] == 2, WAIT)
        # Six activities are scheduled; a third must not start while two run.
        assert not cond.wait_for(lambda: counts["running"] > 2, 0.5)
    gate.set()
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.get_output() == list(range(6))
    assert counts["peak"] == 2


def test_stop_returns_promptly_and_leaves_no_threads(make_worker, client) -> None:
    worker = make_worker()
    worker.add_orchestrator(chain)
    worker.add_activity(hello)
    worker.start()
    assert run(client, chain, ["x"]).runtime_status is OrchestrationStatus.COMPLETED
    began = time.monotonic()
    worker.stop()
    assert time.monotonic() - began < 5
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("durabletask-worker")]
    assert leftovers == []


def test_worker_reconnects_after_the_sidecar_restarts_on_the_same_port() -> None:
    first = SidecarServer(test_store_spec(), host="localhost")
    port = first.start(0)
    address = f"localhost:{port}"
    worker = TaskHubGrpcWorker(host_address=address, resiliency_options=FAST_RECONNECT)
    worker.add_orchestrator(chain)
    worker.add_activity(hello)
    second: SidecarServer | None = None
    try:
        worker.start()
        with TaskHubGrpcClient(host_address=address) as c:
            assert run(c, chain, ["before"]).get_output() == ["Hello, before!"]
        first.stop(grace=0.5)
        second = SidecarServer(test_store_spec(), host="localhost")
        assert second.start(port) == port
        with TaskHubGrpcClient(host_address=address) as c:
            state = run(c, chain, ["after"])
        assert state.runtime_status is OrchestrationStatus.COMPLETED
        assert state.get_output() == ["Hello, after!"]
    finally:
        worker.stop(timeout=10)
        first.stop(grace=0)
        if second is not None:
            second.stop(grace=0)
