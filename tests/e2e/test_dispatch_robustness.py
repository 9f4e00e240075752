"""Dispatch robustness on the real sidecar: lost completions, oversize results, rejected turns.

- A work item whose completion never arrives while its stream stays open is offered again
  once the stream has held it for the kind's maximum hold time.
- A result over the sidecar's message limit becomes a failure that names the limit: the
  activity fails, the orchestration ends FAILED, the entity operation fails.
- A stream that hands a turn back is not offered it again while another open stream could
  take it, and a stream that has not handed it back is offered it at once, however far the
  back-off has grown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import (
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)
from sidecar.dispatch import DispatchOptions
from sidecar.hub import TaskHub
from sidecar.server import SidecarServer
from sidecar.store import open_store
from sidecar.store.base import Backoff
from tests.e2e.conftest import FAST, RawWorker, complete, schedule, start, test_store_spec

WAIT = 30
HOLD = timedelta(seconds=1.5)
LIMIT = 64 * 1024  # the small message limit of the oversize tests


@contextmanager
def running_sidecar(
    options: DispatchOptions = FAST, backoff: Backoff | None = None, **kwargs: Any
) -> Iterator[tuple[SidecarServer, pb_grpc.TaskHubSidecarServiceStub]]:
    """An in-process sidecar on a memory store with these dispatch options and hand-back back-off."""
    hub = TaskHub(open_store(test_store_spec()), abandon_backoff=backoff)
    server = SidecarServer(hub, host="localhost", dispatch_options=options, owns_store=True, **kwargs)
    port = server.start(0)
    channel = grpc.insecure_channel(f"localhost:{port}")
    try:
        yield server, pb_grpc.TaskHubSidecarServiceStub(channel)
    finally:
        channel.close()
        server.stop(grace=0.2)


@contextmanager
def raw_workers(address: str) -> Iterator[Any]:
    """A factory of RawWorkers (optionally with a GetWorkItemsRequest), all closed at the end."""
    opened: list[RawWorker] = []

    def open_worker(request: pb.GetWorkItemsRequest | None = None) -> RawWorker:
        worker = RawWorker(address, request)
        opened.append(worker)
        return worker

    try:
        yield open_worker
    finally:
        for worker in opened:
            worker.close()


def address_of(server: SidecarServer) -> str:
    return f"localhost:{server.port}"


def status_of(stub: pb_grpc.TaskHubSidecarServiceStub, instance_id: str) -> int:
    return int(stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id)).orchestrationState.orchestrationStatus)


def v2_only(limit: int = 0) -> pb.GetWorkItemsRequest:
    """A stream that takes only version "2" of orchestration "orch" (at most ``limit`` turns at once)."""
    request = pb.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=limit)
    request.workItemFilters.orchestrations.add(name="orch", versions=["2"])
    return request


# --- lost completions on a live stream -------------------------------------------------------------


def test_an_activity_held_without_completion_on_a_live_stream_is_offered_again() -> None:
    options = DispatchOptions(
        stream_grace=0.3, health_ping_interval=0.5, safety_poll=1.0,
        activity_lease=timedelta(seconds=1), activity_max_hold=HOLD,
    )
    with running_sidecar(options) as (server, stub), raw_workers(address_of(server)) as open_worker:
        worker = open_worker(pb.GetWorkItemsRequest(maxConcurrentActivityWorkItems=1))
        start(stub, "held")
        worker.complete(worker.next("orchestratorRequest"), schedule(1, "slow"))
        lost = worker.next("activityRequest")
        handed_out = time.monotonic()
        # The completion never comes; the stream stays open (and its only activity slot taken).
        again = worker.next("activityRequest", timeout=WAIT)
        assert time.monotonic() - handed_out >= HOLD.total_seconds() * 0.9
        assert again.activityRequest.taskId == 1 and again.completionToken != lost.completionToken
        with pytest.raises(grpc.RpcError) as err:
            worker.complete_activity(lost, '"late"')
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        worker.complete_activity(again, '"on time"')
        turn = worker.next("orchestratorRequest")
        [result] = [e for e in turn.orchestratorRequest.newEvents if e.HasField("taskCompleted")]
        assert result.taskCompleted.result.value == '"on time"'
        worker.complete(turn, complete(2, '"done"'))
        assert status_of(stub, "held") == pb.ORCHESTRATION_STATUS_COMPLETED


def test_an_orchestration_turn_held_without_completion_on_a_live_stream_is_offered_again() -> None:
    options = DispatchOptions(
        stream_grace=0.3, health_ping_interval=0.5, safety_poll=1.0, orchestration_max_hold=HOLD,
    )
    with running_sidecar(options) as (server, stub), raw_workers(address_of(server)) as open_worker:
        worker = open_worker(pb.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=1))
        start(stub, "stuck")
        lost = worker.next("orchestratorRequest")
        again = worker.next("orchestratorRequest", timeout=WAIT)
        assert again.orchestratorRequest.instanceId == "stuck" and again.completionToken != lost.completionToken
        with pytest.raises(grpc.RpcError) as err:
            worker.complete(lost, complete(1, '"late"'))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        worker.complete(again, complete(1, '"done"'))
        state = stub.GetInstance(pb.GetInstanceRequest(instanceId="stuck", getInputsAndOutputs=True))
        assert state.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
        assert state.orchestrationState.output.value == '"done"'


def test_leases_of_a_live_stream_are_renewed_by_kind_and_held_items_stay_put() -> None:
    options = DispatchOptions(
        stream_grace=0.3, health_ping_interval=0.5, safety_poll=1.0,
        activity_lease=timedelta(seconds=1.5), activity_max_hold=timedelta(minutes=5),
    )
    with running_sidecar(options) as (server, stub), raw_workers(address_of(server)) as open_worker:
        worker = open_worker()
        start(stub, "renewed")
        worker.complete(worker.next("orchestratorRequest"), schedule(1, "slow"))
        held = worker.next("activityRequest")
        # Renewed by the activity lease (1.5 s), not the 5-minute orchestration lease: the store's
        # next due moment (which includes lease expiries) stays within one activity lease, and the
        # item is not offered again meanwhile (the checks span more than one lease).
        for _ in range(3):
            now = server.dispatcher.clock()
            due = server.store.next_due_at(now)
            assert due is not None and (due - now).total_seconds() <= 1.5 + 0.05
            worker.expect_nothing(0.7)
        worker.complete_activity(held, '"ok"')


# --- results over the message limit ------------------------------------------------------------------


def huge(ctx: task.ActivityContext, size: int) -> str:
    return "x" * size


def calls_huge(ctx: task.OrchestrationContext, size: int) -> Any:
    try:
        yield ctx.call_activity(huge, input=size)
    except task.TaskFailedError as err:
        return {"type": err.details.error_type, "message": err.details.message}
    return "the activity did not fail"


def returns_huge(ctx: task.OrchestrationContext, size: int) -> str:
    return "y" * size


def blob(ctx: entities.EntityContext, size: int) -> str:
    return "z" * size


def calls_blob(ctx: task.OrchestrationContext, size: int) -> Any:
    try:
        yield ctx.call_entity(entities.EntityInstanceId("blob", "k"), "read", size)
    except task.TaskFailedError as err:
        inner = err.details.inner_failure
        return {"message": err.details.message, "inner": inner.message if inner else ""}
    return "the operation did not fail"


@pytest.fixture
def small_limit() -> Iterator[tuple[TaskHubGrpcClient, pb_grpc.TaskHubSidecarServiceStub]]:
    """A sidecar with a 64 KiB message limit, a worker running the functions above, and a client."""
    with running_sidecar(max_message_size=LIMIT) as (server, stub):
        worker = TaskHubGrpcWorker(host_address=address_of(server))
        worker.add_activity(huge)
        worker.add_orchestrator(calls_huge)
        worker.add_orchestrator(returns_huge)
        worker.add_orchestrator(calls_blob)
        worker.add_entity(blob)
        worker.start()
        try:
            with TaskHubGrpcClient(host_address=address_of(server)) as client:
                yield client, stub
        finally:
            worker.stop()


def finished(client: TaskHubGrpcClient, instance_id: str) -> Any:
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    return state


def test_an_activity_result_over_the_limit_fails_the_activity_naming_the_limit(small_limit) -> None:
    client, _ = small_limit
    state = finished(client, client.schedule_new_orchestration(calls_huge, input=2 * LIMIT))
    assert state.runtime_status is OrchestrationStatus.COMPLETED, state.failure_details
    failure = state.get_output()
    assert failure["type"] == "MessageTooLarge"
    assert f"maximum message size of {LIMIT} bytes" in failure["message"] and "'huge'" in failure["message"]
    small = finished(client, client.schedule_new_orchestration(calls_huge, input=100))
    assert small.get_output() == "the activity did not fail"


def test_an_orchestration_output_over_the_limit_fails_the_instance_naming_the_limit(small_limit) -> None:
    client, _ = small_limit
    state = finished(client, client.schedule_new_orchestration(returns_huge, input=2 * LIMIT))
    assert state.runtime_status is OrchestrationStatus.FAILED
    assert state.failure_details is not None and state.failure_details.error_type == "MessageTooLarge"
    assert f"maximum message size of {LIMIT} bytes" in state.failure_details.message
    ok = finished(client, client.schedule_new_orchestration(returns_huge, input=10))
    assert ok.runtime_status is OrchestrationStatus.COMPLETED and ok.get_output() == "y" * 10


def test_an_entity_result_over_the_limit_fails_the_operation_naming_the_limit(small_limit) -> None:
    client, _ = small_limit
    state = finished(client, client.schedule_new_orchestration(calls_blob, input=2 * LIMIT))
    assert state.runtime_status is OrchestrationStatus.COMPLETED, state.failure_details
    failure = state.get_output()
    assert f"maximum message size of {LIMIT} bytes" in failure["message"] + failure["inner"]


# --- turns handed back (a worker rejecting the version) -------------------------------------------


def test_a_stream_that_did_not_reject_a_turn_gets_it_at_once_however_long_the_back_off() -> None:
    backoff = Backoff(first=timedelta(seconds=2))
    with running_sidecar(backoff=backoff) as (server, stub), raw_workers(address_of(server)) as open_worker:
        rejecting = open_worker()
        start(stub, "x", version=StringValue(value="2"))
        for _ in range(2):  # back-offs of 2 s, then 4 s
            item = rejecting.next("orchestratorRequest", timeout=WAIT)
            stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
        opened = time.monotonic()
        matching = open_worker(v2_only())
        item = matching.next("orchestratorRequest", timeout=WAIT)
        assert time.monotonic() - opened < 3.0, "waited for the back-off instead of going to the new stream"
        assert item.orchestratorRequest.instanceId == "x"
        matching.complete(item, complete(1, '"v2"'))
        rejecting.expect_nothing(0)
        assert status_of(stub, "x") == pb.ORCHESTRATION_STATUS_COMPLETED


def test_a_rejecting_stream_is_passed_over_while_another_can_take_the_turn() -> None:
    backoff = Backoff(first=timedelta(seconds=0.2))
    with running_sidecar(backoff=backoff) as (server, stub), raw_workers(address_of(server)) as open_worker:
        rejecting = open_worker()
        for instance_id in ("a", "b"):
            start(stub, instance_id, version=StringValue(value="2"))
        for _ in range(2):
            item = rejecting.next("orchestratorRequest", timeout=WAIT)
            stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
        matching = open_worker(v2_only(limit=1))
        first = matching.next("orchestratorRequest", timeout=WAIT)
        # The other turn waits for the busy matching stream, even after its back-off ran out.
        rejecting.expect_nothing(1.5)
        matching.expect_nothing(0)
        matching.complete(first, complete(1, '"v2"'))
        second = matching.next("orchestratorRequest", timeout=WAIT)
        assert {first.orchestratorRequest.instanceId, second.orchestratorRequest.instanceId} == {"a", "b"}
        # The matching stream goes away holding the turn: the rejecting stream, now the only one
        # left, is offered it again after the back-off (it may have handed it back for a passing reason).
        matching.close()
        again = rejecting.next("orchestratorRequest", timeout=WAIT)
        assert again.orchestratorRequest.instanceId == second.orchestratorRequest.instanceId
        rejecting.complete(again, complete(1, '"v1 after all"'))
        assert status_of(stub, "a") == status_of(stub, "b") == pb.ORCHESTRATION_STATUS_COMPLETED


class Rejections(logging.Handler):
    """Counts the turns a worker handed back (its "rejecting a turn" log records)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("rejecting a turn"):
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, timeout)


def greeter(ctx: task.OrchestrationContext, name: str) -> str:
    return f"hello {name} from {ctx.version}"


def versioned_worker(address: str, version: str, logger: logging.Logger | None = None) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=address, logger=logger)
    worker.add_orchestrator(greeter)
    worker.use_versioning(VersioningOptions(
        version, match_strategy=VersionMatchStrategy.STRICT, failure_strategy=VersionFailureStrategy.REJECT
    ))
    return worker


def test_a_worker_of_the_right_version_started_late_gets_a_rejected_instance_at_once() -> None:
    counter = Rejections()
    logger = logging.getLogger("test-dispatch-robustness-reject")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    backoff = Backoff(first=timedelta(seconds=2))
    try:
        with running_sidecar(backoff=backoff) as (server, _):
            v1 = versioned_worker(address_of(server), "1", logger)
            v1.start()
            try:
                with TaskHubGrpcClient(host_address=address_of(server)) as client:
                    iid = client.schedule_new_orchestration(greeter, input="you", version="2")
                    # Two rejections: the next offer is 4 s away.
                    assert counter.wait_for(2, WAIT), "the v1 worker was not offered the v2 turn twice"
                    v2 = versioned_worker(address_of(server), "2")
                    started = time.monotonic()
                    v2.start()
                    try:
                        state = finished(client, iid)
                        assert time.monotonic() - started < 3.0, "the v2 worker waited for the back-off"
                    finally:
                        v2.stop()
                    assert state.runtime_status is OrchestrationStatus.COMPLETED
                    assert state.get_output() == "hello you from 2"
                    assert counter.count == 2, "the v1 worker was offered the turn again"
            finally:
                v1.stop()
    finally:
        logger.removeHandler(counter)


def test_a_rejection_is_forgotten_when_the_instance_starts_a_new_execution() -> None:
    with running_sidecar() as (server, stub), raw_workers(address_of(server)) as open_worker:
        any_version = open_worker()
        start(stub, "again", version=StringValue(value="2"))
        item = any_version.next("orchestratorRequest", timeout=WAIT)
        stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
        matching = open_worker(v2_only())
        assert matching.next("orchestratorRequest", timeout=WAIT).orchestratorRequest.instanceId == "again"
        stub.TerminateInstance(pb.TerminateRequest(instanceId="again"))
        # The same ID starts over as version 1, which only the first stream takes.
        start(stub, "again", version=StringValue(value="1"))
        fresh = any_version.next("orchestratorRequest", timeout=WAIT)
        assert fresh.orchestratorRequest.instanceId == "again"
        started = [e for e in fresh.orchestratorRequest.newEvents if e.HasField("executionStarted")]
        assert started[0].executionStarted.version.value == "1"
        any_version.complete(fresh, complete(1))
        assert status_of(stub, "again") == pb.ORCHESTRATION_STATUS_COMPLETED
