"""The WorkBatches service (protos/work_batches.proto): work items and results in batches.

Raw protocol: a batched stream carries every item that was ready; CompleteActivityTasks and
CompleteOrchestratorTasks answer each result with the outcome its one-by-one call would have
had, and settle the good ones whatever happens to the others. SDK: our worker uses the service
when the sidecar serves it and falls back to GetWorkItems and one-by-one completions when not.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from durabletask.worker import TaskHubGrpcWorker
from sidecar import transport
from tests.e2e.conftest import complete, fast_sidecar, official_backend_mode, result, schedule, start, turn

WAIT = 15.0
OK = grpc.StatusCode.OK.value[0]

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="WorkBatches is this repository's sidecar's service")


class BatchedWorker:
    """A raw GetWorkItemBatches stream: the messages as they came, and their work items in order."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = batches_grpc.WorkBatchesStub(self.channel)
        self.messages: list[list[pb.WorkItem]] = []
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self.first = threading.Event()
        self._stream = self.stub.GetWorkItemBatches(pb.GetWorkItemsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.first.wait(10), "no first message when the stream opened"

    def _read(self) -> None:
        try:
            for message in self._stream:
                items = list(message.workItems)
                assert items, "a batch is never empty"
                self.messages.append(items)
                self.first.set()
                for item in items:
                    if not item.HasField("healthPing"):
                        self.items.put(item)
        except grpc.RpcError:
            pass

    def take(self, kind: str, count: int) -> list[pb.WorkItem]:
        taken = [self.items.get(timeout=WAIT) for _ in range(count)]
        assert all(item.WhichOneof("request") == kind for item in taken), taken
        return taken

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)
        self.channel.close()


@pytest.fixture
def batched() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, BatchedWorker]]:
    with fast_sidecar() as (_, address):
        channel = grpc.insecure_channel(address)
        worker = BatchedWorker(address)
        try:
            yield pb_grpc.TaskHubSidecarServiceStub(channel), worker
        finally:
            worker.close()
            channel.close()


def history(stub: pb_grpc.TaskHubSidecarServiceStub, iid: str) -> list[pb.HistoryEvent]:
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid), timeout=WAIT)
    return [event for chunk in chunks for event in chunk.events]


def test_a_batched_stream_carries_every_item_that_was_ready(batched: Any) -> None:
    stub, worker = batched
    assert worker.messages[0][0].HasField("healthPing"), "the stream opens with a health ping"
    start(stub, "fan")
    (first,) = worker.take("orchestratorRequest", 1)
    worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(
        results=[turn(first, *[schedule(n, "act", str(n)) for n in range(1, 61)])]), timeout=WAIT)
    activities = worker.take("activityRequest", 60)
    assert sorted(item.activityRequest.taskId for item in activities) == list(range(1, 61))
    assert len({item.completionToken for item in activities}) == 60
    sizes = [len(items) for items in worker.messages[1:]]
    assert max(sizes) > 1, f"activities leased together share a message: {sizes}"


def test_activity_results_each_get_their_own_outcome(batched: Any) -> None:
    stub, worker = batched
    start(stub, "mixed")
    (first,) = worker.take("orchestratorRequest", 1)
    worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(
        results=[turn(first, schedule(1, "a"), schedule(2, "b"))]), timeout=WAIT)
    one, two = worker.take("activityRequest", 2)
    stale = pb.ActivityResponse(instanceId="mixed", taskId=1, completionToken=uuid.uuid4().hex)
    no_token = pb.ActivityResponse(instanceId="mixed", taskId=2)
    reply = worker.stub.CompleteActivityTasks(batches_pb.ActivityResultBatch(
        results=[result(one, '"r1"'), stale, no_token, result(two, '"r2"')]), timeout=WAIT)
    codes = [o.code for o in reply.outcomes]
    assert codes == [OK, grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0], OK]
    assert "completionToken is required" in reply.outcomes[2].message
    # Both good results reached the instance, once each.
    (second,) = worker.take("orchestratorRequest", 1)
    completed = sorted(e.taskCompleted.taskScheduledId for e in second.orchestratorRequest.newEvents
                       if e.HasField("taskCompleted"))
    assert completed == [1, 2]
    again = worker.stub.CompleteActivityTasks(batches_pb.ActivityResultBatch(results=[result(one, '"r1"')]),
                                              timeout=WAIT)
    assert [o.code for o in again.outcomes] == [grpc.StatusCode.NOT_FOUND.value[0]], "a result settles once"
    worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(
        results=[turn(second, complete(3, '"done"'))]), timeout=WAIT)
    res = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="mixed"), timeout=WAIT)
    assert res.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


def test_turns_each_get_their_own_outcome(batched: Any) -> None:
    stub, worker = batched
    start(stub, "good")
    start(stub, "bad")
    items = {item.orchestratorRequest.instanceId: item for item in worker.take("orchestratorRequest", 2)}
    before = history(stub, "bad")
    status_before = stub.GetInstance(pb.GetInstanceRequest(instanceId="bad")).orchestrationState.orchestrationStatus
    unnamed = schedule(1, "x")
    unnamed.scheduleTask.name = ""  # refused: an activity needs a name
    reply = worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(results=[
        turn(items["bad"], unnamed), turn(items["good"], complete(1, '"ok"')),
        pb.OrchestratorResponse(instanceId="good", completionToken=uuid.uuid4().hex),
    ]), timeout=WAIT)
    codes = [o.code for o in reply.outcomes]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT.value[0], OK, grpc.StatusCode.NOT_FOUND.value[0]]
    assert "name" in reply.outcomes[0].message
    done = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="good"), timeout=WAIT)
    assert done.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    assert history(stub, "bad") == before, "a refused turn changes nothing"
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="bad")).orchestrationState
    assert state.orchestrationStatus == status_before == pb.ORCHESTRATION_STATUS_PENDING


# ------------------------------------------------------------------ our SDK


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def fan_out(ctx: task.OrchestrationContext, n: int):  # type: ignore[no-untyped-def]
    values = yield task.when_all([ctx.call_activity(double, input=i) for i in range(n)])
    total = sum(values)
    total += yield ctx.call_activity(double, input=total)
    return total


def run_fan_out(address: str) -> Any:
    """Runs a fan-out of 100 on a worker of ours; returns the worker's dispatcher (to see how results went)."""
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_orchestrator(fan_out)
    worker.add_activity(double)
    worker.start()
    dispatcher = worker._dispatcher  # noqa: SLF001
    try:
        with TaskHubGrpcClient(host_address=address) as client:
            iid = client.schedule_new_orchestration(fan_out, input=100)
            state = client.wait_for_orchestration_completion(iid, timeout=60)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            assert state.serialized_output == str(3 * 2 * sum(range(100)))
    finally:
        worker.stop()
    return dispatcher


def test_our_worker_uses_batches_when_the_sidecar_serves_them() -> None:
    with fast_sidecar() as (_, address):
        dispatcher = run_fan_out(address)
    assert dispatcher._activity_results.calls >= 1 and dispatcher._turn_results.calls >= 1


def test_our_worker_falls_back_when_the_sidecar_does_not_serve_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport.batches_grpc, "add_WorkBatchesServicer_to_server", lambda servicer, server: None)
    with fast_sidecar() as (_, address):
        channel = grpc.insecure_channel(address)
        with pytest.raises(grpc.RpcError) as raised:
            next(iter(batches_grpc.WorkBatchesStub(channel).GetWorkItemBatches(pb.GetWorkItemsRequest())))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        channel.close()
        dispatcher = run_fan_out(address)
    assert dispatcher._activity_results.calls == 0 and dispatcher._turn_results.calls == 0


def test_a_result_naming_another_task_fails_alone_and_its_task_is_offered_again(batched: Any) -> None:
    stub, worker = batched
    start(stub, "mismatch")
    (first,) = worker.take("orchestratorRequest", 1)
    worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(
        results=[turn(first, schedule(1, "a"), schedule(2, "b"))]), timeout=WAIT)
    one, two = sorted(worker.take("activityRequest", 2), key=lambda item: item.activityRequest.taskId)
    wrong = result(two, '"r2"')
    wrong.taskId = 7
    reply = worker.stub.CompleteActivityTasks(batches_pb.ActivityResultBatch(results=[result(one, '"r1"'), wrong]),
                                              timeout=WAIT)
    assert [o.code for o in reply.outcomes] == [OK, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "taskId 7 does not match task 2" in reply.outcomes[1].message
    # The handed-back task is offered again (after its back-off) under a new token; the turn with
    # the good result comes meanwhile.
    arrived = {item.WhichOneof("request"): item for item in (worker.items.get(timeout=WAIT) for _ in range(2))}
    again, second = arrived["activityRequest"], arrived["orchestratorRequest"]
    assert again.activityRequest.taskId == 2 and again.completionToken != two.completionToken
    completed = [e.taskCompleted.taskScheduledId for e in second.orchestratorRequest.newEvents
                 if e.HasField("taskCompleted")]
    assert completed == [1], "the good result of the batch was committed"


def test_items_share_a_message_only_up_to_4_mib(batched: Any) -> None:
    stub, worker = batched
    start(stub, "big")
    (first,) = worker.take("orchestratorRequest", 1)
    payload = '"' + "x" * (3 * 1024 * 1024) + '"'
    worker.stub.CompleteOrchestratorTasks(batches_pb.OrchestratorResultBatch(
        results=[turn(first, *[schedule(n, "act", payload) for n in range(1, 4)], schedule(4, "small", '"s"'))]),
        timeout=WAIT)
    worker.take("activityRequest", 4)
    for items in worker.messages[1:]:
        size = batches_pb.WorkItemBatch(workItems=items).ByteSize()
        assert len(items) == 1 or size <= 4 * 1024 * 1024, (len(items), size)
    assert len(worker.messages) - 2 >= 3, "the three big inputs went in messages of their own"
