"""The worker's transport against a scripted in-process gRPC sidecar.

The scripted sidecar is a real gRPC server that hands out exactly the work items a
test queues and records every call the worker makes, so the stream handling,
limits, reconnects and stop behaviour can be checked without the real backend.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import (
    ConcurrencyOptions,
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)

WAIT = 10.0
_CLOSE = object()

FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.2, hello_timeout_seconds=2
)


class ScriptedSidecar(pb_grpc.TaskHubSidecarServiceServicer):
    """Serves queued work items and records what the worker sends back."""

    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.calls: list[tuple[str, Any]] = []
        self.stream_requests: list[pb.GetWorkItemsRequest] = []
        self.stream_metadata: list[dict[str, str]] = []
        # (status, details) to answer the next completions with, in order.
        self.completion_failures: list[tuple[grpc.StatusCode, str]] = []
        self.cond = threading.Condition()
        self.server: grpc.Server | None = None
        self.port = 0

    # ----- server lifecycle -----

    def serve(self, port: int = 0) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_TaskHubSidecarServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"localhost:{port}")
        server.start()
        self.server = server

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait(WAIT)
            self.server = None

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    # ----- helpers for tests -----

    def record(self, name: str, message: Any) -> None:
        with self.cond:
            self.calls.append((name, message))
            self.cond.notify_all()

    def named(self, name: str) -> list[Any]:
        with self.cond:
            return [m for n, m in self.calls if n == name]

    def wait_for(self, predicate, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_calls(self, name: str, count: int, timeout: float = WAIT) -> list[Any]:
        assert self.wait_for(lambda: len([1 for n, _ in self.calls if n == name]) >= count, timeout), (
            f"expected {count} {name} call(s), got {self.named(name)}"
        )
        return self.named(name)

    def wait_streams(self, count: int, timeout: float = WAIT) -> None:
        assert self.wait_for(lambda: len(self.stream_requests) >= count, timeout), (
            f"expected {count} stream(s), saw {len(self.stream_requests)}"
        )

    # ----- RPCs -----

    def Hello(self, request, context):
        return empty_pb2.Empty()

    def GetWorkItems(self, request, context) -> Iterator[pb.WorkItem]:
        with self.cond:
            self.stream_requests.append(request)
            self.stream_metadata.append(dict(context.invocation_metadata()))
            mine = len(self.stream_requests)
            self.cond.notify_all()

        def current() -> bool:
            return context.is_active() and mine == len(self.stream_requests)

        while current():
            try:
                item = self.items.get(timeout=0.05)
            except queue.Empty:
                continue
            if not current():
                self.items.put(item)  # only the newest stream hands out work
                return
            if item is _CLOSE:
                return
            yield item

    def _complete(self, name: str, request, context):
        with self.cond:
            failure = self.completion_failures.pop(0) if self.completion_failures else None
        if failure is not None:
            self.record(name + ":rejected", request)
            context.abort(*failure)
        self.record(name, request)
        return pb.CompleteTaskResponse()

    def CompleteActivityTask(self, request, context):
        return self._complete("CompleteActivityTask", request, context)

    def CompleteOrchestratorTask(self, request, context):
        return self._complete("CompleteOrchestratorTask", request, context)

    def CompleteEntityTask(self, request, context):
        return self._complete("CompleteEntityTask", request, context)

    def AbandonTaskActivityWorkItem(self, request, context):
        self.record("AbandonTaskActivityWorkItem", request)
        return pb.AbandonActivityTaskResponse()

    def AbandonTaskOrchestratorWorkItem(self, request, context):
        self.record("AbandonTaskOrchestratorWorkItem", request)
        return pb.AbandonOrchestrationTaskResponse()

    def AbandonTaskEntityWorkItem(self, request, context):
        self.record("AbandonTaskEntityWorkItem", request)
        return pb.AbandonEntityTaskResponse()


def activity_item(name: str, value: Any = None, *, token: str, task_id: int = 1) -> pb.WorkItem:
    item = pb.WorkItem(completionToken=token)
    req = item.activityRequest
    req.name = name
    req.taskId = task_id
    req.orchestrationInstance.instanceId = "inst"
    if value is not None:
        req.input.value = json.dumps(value)
    return item


def orchestration_item(instance_id: str, version: str | None, *, token: str) -> pb.WorkItem:
    item = pb.WorkItem(completionToken=token)
    req = item.orchestratorRequest
    req.instanceId = instance_id
    started = req.newEvents.add(eventId=-1)
    started.executionStarted.name = "orch"
    started.executionStarted.orchestrationInstance.instanceId = instance_id
    if version is not None:
        started.executionStarted.version.value = version
    return item


@pytest.fixture
def sidecar() -> Iterator[ScriptedSidecar]:
    fake = ScriptedSidecar()
    fake.serve()
    yield fake
    fake.shutdown()


@pytest.fixture
def make_worker(sidecar: ScriptedSidecar) -> Iterator:
    made: list[TaskHubGrpcWorker] = []

    def _make(**kwargs: Any) -> TaskHubGrpcWorker:
        kwargs.setdefault("resiliency_options", FAST_RECONNECT)
        worker = TaskHubGrpcWorker(host_address=sidecar.address, **kwargs)
        made.append(worker)
        return worker

    yield _make
    for worker in made:
        worker.stop(timeout=5)


def double(ctx, value: int) -> int:
    return value * 2


def test_activity_completes_and_pings_and_entities_are_handled(sidecar, make_worker) -> None:
    worker = make_worker(metadata=[("x-test", "yes")])
    worker.add_activity(double)
    worker.start()
    sidecar.wait_streams(1)
    request = sidecar.stream_requests[0]
    assert request.maxConcurrentActivityWorkItems == worker.concurrency_options.maximum_concurrent_activity_work_items
    assert sidecar.stream_metadata[0].get("x-test") == "yes"

    sidecar.items.put(pb.WorkItem(healthPing=pb.HealthPing()))
    entity = pb.WorkItem(completionToken="ent-1")
    entity.entityRequestV2.instanceId = "@counter@a"
    entity.entityRequestV2.entityState.value = "7"
    signal = entity.entityRequestV2.operationRequests.add()
    signal.entityOperationSignaled.requestId = "r1"
    signal.entityOperationSignaled.operation = "add"
    sidecar.items.put(entity)
    legacy = pb.WorkItem(completionToken="ent-2")  # the older batch form of an entity work item
    legacy.entityRequest.instanceId = "@counter@b"
    legacy.entityRequest.operations.add(operation="add", requestId="r2")
    sidecar.items.put(legacy)
    sidecar.items.put(activity_item("double", 21, token="t1", task_id=5))
    sidecar.items.put(activity_item("nope", token="t2", task_id=6))

    done = {r.completionToken: r for r in sidecar.wait_calls("CompleteActivityTask", 2)}
    assert json.loads(done["t1"].result.value) == 42
    assert done["t1"].taskId == 5 and done["t1"].instanceId == "inst"
    assert done["t2"].failureDetails.errorType.endswith("ActivityNotRegisteredError")
    # An entity batch for an entity this worker does not know: the operation fails, the state is kept.
    batches = {b.completionToken: b for b in sidecar.wait_calls("CompleteEntityTask", 2)}
    batch = batches["ent-1"]
    assert batch.entityState.value == "7"
    assert batch.results[0].failure.failureDetails.errorType.endswith("EntityNotRegisteredError")
    assert [i.requestId for i in batch.operationInfos] == ["r1"]
    assert len(batches["ent-2"].results) == 1 and not batches["ent-2"].operationInfos


def test_activity_limit_is_honoured_locally(sidecar, make_worker) -> None:
    gate = threading.Event()
    state = {"running": 0, "peak": 0}
    cond = threading.Condition()

    def blocked(ctx, _):
        with cond:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            cond.notify_all()
        assert gate.wait(WAIT)
        with cond:
            state["running"] -= 1
        return "ok"

    worker = make_worker(
        concurrency_options=ConcurrencyOptions(maximum_concurrent_activity_work_items=2, maximum_thread_pool_workers=8)
    )
    worker.add_activity(blocked)
    worker.start()
    sidecar.wait_streams(1)
    for i in range(5):
        sidecar.items.put(activity_item("blocked", token=f"t{i}", task_id=i))
    with cond:
        assert cond.wait_for(lambda: state["running"] == 2, WAIT)
        # Five items are held by the worker; a third must not start while two run.
        assert not cond.wait_for(lambda: state["running"] > 2, 0.5)
    gate.set()
    sidecar.wait_calls("CompleteActivityTask", 5)
    assert state["peak"] == 2


def test_async_activities_run_concurrently_on_the_worker_loop(sidecar, make_worker) -> None:
    both_started = asyncio.Event()
    arrived: list[int] = []
    threads: set[str] = set()

    async def rendezvous(ctx, index: int) -> int:
        threads.add(threading.current_thread().name)
        arrived.append(index)
        if len(arrived) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), WAIT)
        return index

    worker = make_worker(concurrency_options=ConcurrencyOptions(maximum_thread_pool_workers=1))
    worker.add_activity(rendezvous)
    worker.start()
    sidecar.wait_streams(1)
    sidecar.items.put(activity_item("rendezvous", 1, token="a"))
    sidecar.items.put(activity_item("rendezvous", 2, token="b"))
    done = sidecar.wait_calls("CompleteActivityTask", 2)
    assert sorted(json.loads(r.result.value) for r in done) == [1, 2]
    assert threads == {"durabletask-worker-loop"}


def test_a_completion_failing_with_a_transient_error_is_retried(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.add_activity(double)
    worker.start()
    sidecar.wait_streams(1)
    sidecar.completion_failures = [
        (grpc.StatusCode.UNAVAILABLE, "try again later"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "too slow"),
    ]
    sidecar.items.put(activity_item("double", 1, token="retried"))
    done = sidecar.wait_calls("CompleteActivityTask", 1)
    assert [r.completionToken for r in done] == ["retried"] and json.loads(done[0].result.value) == 2
    assert len(sidecar.named("CompleteActivityTask:rejected")) == 2
    sidecar.items.put(activity_item("double", 2, token="next"))
    assert [r.completionToken for r in sidecar.wait_calls("CompleteActivityTask", 2)] == ["retried", "next"]
    assert sidecar.named("AbandonTaskActivityWorkItem") == []


def test_reconnects_when_the_stream_ends(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.add_activity(double)
    worker.start()
    sidecar.wait_streams(1)
    sidecar.items.put(_CLOSE)
    sidecar.wait_streams(2)
    sidecar.items.put(activity_item("double", 5, token="after"))
    assert json.loads(sidecar.wait_calls("CompleteActivityTask", 1)[0].result.value) == 10


def test_reconnects_after_the_sidecar_restarts(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.add_activity(double)
    worker.start()
    sidecar.wait_streams(1)
    port = sidecar.port
    sidecar.shutdown()
    sidecar.serve(port)
    sidecar.wait_streams(2, timeout=20)
    sidecar.items.put(activity_item("double", 7, token="restarted"))
    assert json.loads(sidecar.wait_calls("CompleteActivityTask", 1)[0].result.value) == 14


def test_a_silent_stream_is_dropped_and_reopened(sidecar, make_worker) -> None:
    worker = make_worker(
        resiliency_options=GrpcWorkerResiliencyOptions(
            silent_disconnect_timeout_seconds=0.3,
            reconnect_backoff_base_seconds=0.05,
            reconnect_backoff_cap_seconds=0.1,
        )
    )
    worker.start()
    sidecar.wait_streams(3)


def test_version_reject_hands_the_turn_back_and_fail_fails_it(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.use_versioning(
        VersioningOptions(
            version="2.0", match_strategy=VersionMatchStrategy.STRICT, failure_strategy=VersionFailureStrategy.REJECT
        )
    )
    worker.start()
    sidecar.wait_streams(1)
    sidecar.items.put(orchestration_item("o1", "1.0", token="rej"))
    assert [r.completionToken for r in sidecar.wait_calls("AbandonTaskOrchestratorWorkItem", 1)] == ["rej"]
    worker.stop(timeout=5)

    failing = make_worker()
    failing.use_versioning(
        VersioningOptions(
            version="2.0",
            match_strategy=VersionMatchStrategy.CURRENT_OR_OLDER,
            failure_strategy=VersionFailureStrategy.FAIL,
        )
    )
    failing.start()
    sidecar.wait_streams(2)
    sidecar.items.put(orchestration_item("o2", "3.0", token="fail"))
    response = sidecar.wait_calls("CompleteOrchestratorTask", 1)[0]
    assert response.completionToken == "fail" and response.instanceId == "o2"
    (action,) = response.actions
    complete = action.completeOrchestration
    assert complete.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert complete.failureDetails.errorType == "VersionMismatch"


def test_stop_hands_back_waiting_work_and_finishes_running_work(sidecar, make_worker) -> None:
    gate = threading.Event()
    started = threading.Event()

    def slow(ctx, _):
        started.set()
        assert gate.wait(WAIT)
        return "finished"

    worker = make_worker(concurrency_options=ConcurrencyOptions(maximum_concurrent_activity_work_items=1))
    worker.add_activity(slow)
    worker.start()
    sidecar.wait_streams(1)
    for i in range(3):
        sidecar.items.put(activity_item("slow", token=f"s{i}", task_id=i))
    assert started.wait(WAIT)
    # All three must have reached the worker before it stops.
    assert worker._dispatcher is not None and worker._dispatcher.wait_for_outstanding(3, WAIT)

    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": WAIT})
    stopper.start()
    abandoned = sidecar.wait_calls("AbandonTaskActivityWorkItem", 2)
    assert sorted(a.completionToken for a in abandoned) == ["s1", "s2"]
    gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert [r.completionToken for r in sidecar.named("CompleteActivityTask")] == ["s0"]
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("durabletask-worker")]
    assert leftovers == []


def test_stop_is_prompt_when_idle(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.start()
    sidecar.wait_streams(1)
    began = time.monotonic()
    worker.stop()
    assert time.monotonic() - began < 3
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("durabletask-worker")]
    assert leftovers == []


def turn_item(instance_id: str, orchestrator: str, *, token: str) -> pb.WorkItem:
    item = pb.WorkItem(completionToken=token)
    req = item.orchestratorRequest
    req.instanceId = instance_id
    req.newEvents.add(eventId=-1).orchestratorStarted.SetInParent()
    started = req.newEvents.add(eventId=-1)
    started.executionStarted.name = orchestrator
    started.executionStarted.orchestrationInstance.instanceId = instance_id
    return item


def test_turns_of_one_instance_never_overlap_but_instances_run_in_parallel(sidecar, make_worker) -> None:
    gate = threading.Event()
    cond = threading.Condition()
    active: dict[str, int] = {}
    entered: list[str] = []
    peak = {"same": 0}

    def blocking(ctx, _):
        iid = ctx.instance_id
        with cond:
            active[iid] = active.get(iid, 0) + 1
            peak["same"] = max(peak["same"], active.get("same", 0))
            entered.append(iid)
            cond.notify_all()
        try:
            assert gate.wait(WAIT)
        finally:
            with cond:
                active[iid] -= 1
        return iid

    worker = make_worker(concurrency_options=ConcurrencyOptions(maximum_thread_pool_workers=4))
    worker.add_orchestrator(blocking)
    worker.start()
    sidecar.wait_streams(1)
    sidecar.items.put(turn_item("same", "blocking", token="s1"))
    sidecar.items.put(turn_item("same", "blocking", token="s2"))
    sidecar.items.put(turn_item("other", "blocking", token="o1"))
    with cond:
        assert cond.wait_for(lambda: sorted(entered) == ["other", "same"], WAIT)
        assert not cond.wait_for(lambda: entered.count("same") > 1, 0.5)
    gate.set()
    done = sidecar.wait_calls("CompleteOrchestratorTask", 3)
    assert [r.completionToken for r in done if r.instanceId == "same"] == ["s1", "s2"]
    assert peak["same"] == 1
    for response in done:
        (action,) = response.actions
        assert action.completeOrchestration.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


def test_a_turn_the_executor_cannot_process_is_handed_back(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.start()
    sidecar.wait_streams(1)
    broken = pb.WorkItem(completionToken="broken")
    broken.orchestratorRequest.instanceId = "no-new-events"
    sidecar.items.put(broken)
    assert [r.completionToken for r in sidecar.wait_calls("AbandonTaskOrchestratorWorkItem", 1)] == ["broken"]
    assert sidecar.named("CompleteOrchestratorTask") == []


def test_a_stopped_worker_can_start_again(sidecar, make_worker) -> None:
    worker = make_worker()
    worker.add_activity(double)
    worker.start()
    sidecar.wait_streams(1)
    worker.stop(timeout=5)
    worker.start()
    sidecar.wait_streams(2)
    sidecar.items.put(activity_item("double", 8, token="again"))
    assert json.loads(sidecar.wait_calls("CompleteActivityTask", 1)[0].result.value) == 16
