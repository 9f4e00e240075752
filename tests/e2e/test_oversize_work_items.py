"""Work items larger than the message limit (issue 13, item 3).

Against an in-process sidecar with a 64 KiB --max-message-size, over real gRPC: a turn too
large to send fails its orchestration (a worker that cannot stream the history) or goes without
its past events (a worker that can); an activity whose input is too large fails; an entity
operation too large fails; the failure names the size, the limit and how to raise it; the
worker's stream survives and other work goes on; batched streams split their messages.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import history_chunks
from sidecar.servicer_batches import split_batch
from tests.e2e.conftest import FAST, RawWorker, complete, eventually, fast_sidecar, kinds, schedule, start
from tests.e2e.entity_wire import ENTITY_ITEM

pytestmark = pytest.mark.our_sidecar("message limits of this repository's sidecar")

LIMIT = 64 * 1024
Stub = pb_grpc.TaskHubSidecarServiceStub


@pytest.fixture
def env() -> Iterator[tuple[Stub, RawWorker, str]]:
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address), grpc.insecure_channel(address) as channel:
        worker = RawWorker(address)
        try:
            yield Stub(channel), worker, address
        finally:
            worker.close()


def failure_of(stub: Stub, instance_id: str) -> pb.TaskFailureDetails:
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id)).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED, state
    return state.failureDetails


def names_the_limit(details: pb.TaskFailureDetails) -> None:
    assert details.errorType == "WorkItemTooLarge"
    assert f"{LIMIT:,} bytes" in details.errorMessage and "--max-message-size" in details.errorMessage, details


def big_start(stub: Stub, instance_id: str, size: int) -> None:
    request = pb.CreateInstanceRequest(instanceId=instance_id, name="orch")
    request.input.value = "x" * size
    stub.StartInstance(request)


def test_a_turn_too_large_for_a_worker_without_history_streaming_fails_its_orchestration(env) -> None:
    stub, worker, _ = env
    big_start(stub, "o", 30_000)
    first = worker.next("orchestratorRequest")
    worker.complete(first, schedule(1, "work", "y" * 30_000))
    activity = worker.next("activityRequest")
    worker.complete_activity(activity, '"' + "z" * 10_000 + '"')
    # The next turn (past events of 60 KB plus a 10 KB result) is not sent: the orchestration fails.
    eventually(lambda: failed(stub, "o"), 10, "the orchestration to fail")
    details = failure_of(stub, "o")
    names_the_limit(details)
    assert "the next turn of orchestration 'o'" in details.errorMessage
    history = list(_history(stub, "o"))
    assert kinds(history)[-2:] == ["executionCompleted", "orchestratorCompleted"]
    # The stream lives on: other work still reaches it.
    start(stub, "other")
    worker.complete(worker.next("orchestratorRequest"), complete(1, '"ok"'))
    other = stub.GetInstance(pb.GetInstanceRequest(instanceId="other")).orchestrationState
    assert other.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


def test_a_turn_too_large_goes_without_its_past_events_to_a_worker_that_streams_the_history() -> None:
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address), grpc.insecure_channel(address) as channel:
        stub = Stub(channel)
        streaming = RawWorker(address, pb.GetWorkItemsRequest(capabilities=[pb.WORKER_CAPABILITY_HISTORY_STREAMING]))
        try:
            big_start(stub, "o", 30_000)
            streaming.complete(streaming.next("orchestratorRequest"), schedule(1, "work", "y" * 30_000))
            streaming.complete_activity(streaming.next("activityRequest"), '"' + "z" * 10_000 + '"')
            turn = streaming.next("orchestratorRequest")
            request = turn.orchestratorRequest
            assert request.requiresHistoryStreaming and not request.pastEvents
            assert [e.taskCompleted.taskScheduledId for e in request.newEvents if e.HasField("taskCompleted")] == [1]
            chunks = list(stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="o")))
            assert all(chunk.ByteSize() <= LIMIT for chunk in chunks)
            assert kinds(e for c in chunks for e in c.events) == [
                "orchestratorStarted", "executionStarted", "taskScheduled", "orchestratorCompleted",
            ]
            streaming.complete(turn, complete(2, '"done"'))
            state = stub.GetInstance(pb.GetInstanceRequest(instanceId="o")).orchestrationState
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
        finally:
            streaming.close()


def test_events_too_large_together_reach_the_orchestration_over_several_turns() -> None:
    """Three events of 25 KB raised during a turn: together they would make the next turn larger
    than the 64 KiB limit, so each turn carries those that fit, in order (its past events are
    streamed), and none fails."""
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address), grpc.insecure_channel(address) as channel:
        worker = RawWorker(address, pb.GetWorkItemsRequest(capabilities=[pb.WORKER_CAPABILITY_HISTORY_STREAMING]))
        try:
            _raise_three_and_receive(Stub(channel), worker)
        finally:
            worker.close()


def _raise_three_and_receive(stub: Stub, worker: RawWorker) -> None:
    start(stub, "o")
    first = worker.next("orchestratorRequest")
    for name in ("one", "two", "three"):
        request = pb.RaiseEventRequest(instanceId="o", name=name)
        request.input.value = "x" * 25_000
        stub.RaiseEvent(request)
    worker.complete(first)
    received: list[str] = []
    while len(received) < 3:
        item = worker.next("orchestratorRequest")
        assert item.ByteSize() <= LIMIT
        received += [e.eventRaised.name for e in item.orchestratorRequest.newEvents if e.HasField("eventRaised")]
        worker.complete(item, *([complete(1, '"done"')] if len(received) == 3 else []))
    assert received == ["one", "two", "three"]
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="o")).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, state.failureDetails


def test_our_worker_finishes_an_orchestration_whose_history_exceeds_the_limit() -> None:
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address):
        worker = TaskHubGrpcWorker(host_address=address)

        def piece(ctx: object, i: int) -> str:
            return str(i) * 20_000

        def pieces(ctx, _):  # type: ignore[no-untyped-def]
            lengths = []
            for i in range(5):
                value = yield ctx.call_activity(piece, input=i)
                lengths.append(len(value))
            return sum(lengths)

        worker.add_orchestrator(pieces)
        worker.add_activity(piece)
        worker.start()
        try:
            with TaskHubGrpcClient(host_address=address) as client:
                iid = client.schedule_new_orchestration(pieces)
                state = client.wait_for_orchestration_completion(iid, timeout=60)
                assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
                assert state.serialized_output == "100000"
        finally:
            worker.stop()


def test_an_activity_input_too_large_to_send_fails_the_activity() -> None:
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address), grpc.insecure_channel(address) as channel:
        stub = Stub(channel)
        # A worker that streams histories: the turn after the activity holds its large input.
        worker = RawWorker(address, pb.GetWorkItemsRequest(capabilities=[pb.WORKER_CAPABILITY_HISTORY_STREAMING]))
        try:
            start(stub, "o")
            first = worker.next("orchestratorRequest")
            # An input whose taskScheduled event fits in a message, but whose activity work item
            # (which also carries the execution ID and a token) does not.
            event = pb.HistoryEvent(eventId=1, timestamp=first.orchestratorRequest.newEvents[0].timestamp)
            event.taskScheduled.name = "work"
            event.taskScheduled.input.value = ""
            action = schedule(1, "work", "y" * (LIMIT - 64 - event.ByteSize() - 8))
            worker.complete(first, action)
            turn = worker.next("orchestratorRequest")
            failed = [e.taskFailed for e in turn.orchestratorRequest.newEvents if e.HasField("taskFailed")]
            assert len(failed) == 1 and failed[0].taskScheduledId == 1
            names_the_limit(failed[0].failureDetails)
            assert "activity 'work' (task 1 of orchestration 'o') with its input" in failed[0].failureDetails.errorMessage
            worker.complete(turn, complete(2, '"handled"'))
            state = stub.GetInstance(pb.GetInstanceRequest(instanceId="o")).orchestrationState
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
        finally:
            worker.close()


def test_an_entity_operation_too_large_to_send_fails(env) -> None:
    stub, worker, _ = env
    request = pb.SignalEntityRequest(instanceId="@counter@a", name="add", requestId="r1")
    request.input.value = "x" * (LIMIT - 120)
    assert request.ByteSize() < LIMIT
    stub.SignalEntity(request)
    stub.SignalEntity(pb.SignalEntityRequest(instanceId="@counter@a", name="add", requestId="r2"))
    # The oversize operation fails (a signal: nobody waits for it) and the next one is sent.
    item = worker.next(ENTITY_ITEM)
    ops = [e.entityOperationSignaled.requestId for e in item.entityRequestV2.operationRequests]
    assert ops == ["r2"]


def test_batched_streams_split_messages_to_stay_under_the_limit() -> None:
    items = [pb.WorkItem(completionToken=str(i) * 20_000) for i in range(5)]
    parts = split_batch(items, LIMIT)
    assert [len(p) for p in parts] == [3, 2]
    assert [i for p in parts for i in p] == items
    assert split_batch(items, None) == [items]
    with fast_sidecar(FAST, max_message_size=LIMIT) as (_, address), grpc.insecure_channel(address) as channel:
        stub = Stub(channel)
        for i in range(3):
            big_start(stub, f"o{i}", 25_000)
        messages: queue.Queue[list[pb.WorkItem]] = queue.Queue()
        batches = batches_grpc.WorkBatchesStub(channel).GetWorkItemBatches(pb.GetWorkItemsRequest())

        def read() -> None:
            try:
                for message in batches:
                    assert message.ByteSize() <= LIMIT
                    messages.put([i for i in message.workItems if not i.HasField("healthPing")])
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        got: list[pb.WorkItem] = []
        while len(got) < 3:
            got.extend(messages.get(timeout=10))
        assert sorted(i.orchestratorRequest.instanceId for i in got) == ["o0", "o1", "o2"]
        batches.cancel()
        reader.join(timeout=10)


def test_history_chunks_stay_under_the_limit() -> None:
    events = [pb.HistoryEvent(eventId=i) for i in range(250)]
    assert [len(c.events) for c in history_chunks(events, None)] == [100, 100, 50]
    big = [pb.HistoryEvent(eventId=i, eventRaised=pb.EventRaisedEvent(name="x" * 20_000)) for i in range(5)]
    chunks = list(history_chunks(big, LIMIT))
    assert [len(c.events) for c in chunks] == [3, 2] and all(c.ByteSize() <= LIMIT for c in chunks)
    assert [len(c.events) for c in history_chunks([], LIMIT)] == [0]


# --- helpers ----------------------------------------------------------------------------------


def _history(stub: Stub, instance_id: str) -> Iterator[pb.HistoryEvent]:
    for chunk in stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=instance_id)):
        yield from chunk.events


def failed(stub: Stub, instance_id: str) -> bool:
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id)).orchestrationState
    return state.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
