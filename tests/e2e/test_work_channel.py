"""WorkBatches.OpenWorkChannel (protos/work_batches.proto): work items and results on one bidirectional call.

Raw protocol: the channel opens with a GetWorkItemsRequest, carries work-item batches, and answers
each results message with one outcome per result under the message's callId; bad input is refused
with nothing changed; a half-closed channel answers what it was sent, then ends with OK; a channel
that ends hands its leased work back. SDK: our worker uses the channel when the sidecar serves it,
falls back when not, and a channel that breaks with results in flight loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from durabletask.internal.worker_channel import ChannelSender
from durabletask.worker import TaskHubGrpcWorker
from sidecar import servicer_batches
from sidecar.server import SidecarServer
from sidecar.servicer_batches import BatchServicer
from sidecar.servicer_util import UNDECODABLE_DETAILS
from tests.e2e.conftest import (
    FAST,
    complete,
    eventually,
    fast_sidecar,
    official_backend_mode,
    result,
    schedule,
    start,
    test_store_spec,
    turn,
)
from tests.e2e.entity_wire import expect_status

WAIT = 15.0
OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
METHOD = "/durabletask.batches.WorkBatches/OpenWorkChannel"

pytestmark = pytest.mark.skipif(official_backend_mode(),
                                reason="WorkBatches is this repository's sidecar's service")

Stub = pb_grpc.TaskHubSidecarServiceStub


class ChannelWorker:
    """A raw OpenWorkChannel call: requests from a queue, replies read on a thread."""

    def __init__(
        self, address: str, request: pb.GetWorkItemsRequest | None = None, *, reads_work_with_outcomes: bool = False
    ) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = batches_grpc.WorkBatchesStub(self.channel)
        self._outgoing: queue.Queue[batches_pb.ChannelRequest | None] = queue.Queue()
        self._outgoing.put(batches_pb.ChannelRequest(
            open=request or pb.GetWorkItemsRequest(), readsWorkWithOutcomes=reads_work_with_outcomes))
        self.replies: list[batches_pb.ChannelReply] = []
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self._answers: dict[int, batches_pb.CompletionOutcomes] = {}
        self._answered = threading.Condition()
        self.first = threading.Event()
        self.ended = threading.Event()
        self.error: grpc.RpcError | None = None
        self.call = self.stub.OpenWorkChannel(self._requests())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.first.wait(WAIT), "no first message when the channel opened"

    def _requests(self) -> Iterator[batches_pb.ChannelRequest]:
        while True:
            message = self._outgoing.get()
            if message is None:
                return
            yield message

    def _read(self) -> None:
        try:
            for reply in self.call:
                for item in reply.readyWork.workItems:  # as received just before the outcomes
                    self.items.put(item)
                with self._answered:
                    self.replies.append(reply)
                    if reply.WhichOneof("message") == "outcomes":
                        assert reply.callId not in self._answers, f"callId {reply.callId} answered twice"
                        self._answers[reply.callId] = reply.outcomes
                        self._answered.notify_all()
                self.first.set()
                if reply.WhichOneof("message") == "workItems":
                    assert reply.workItems.workItems, "a batch is never empty"
                    for item in reply.workItems.workItems:
                        if not item.HasField("healthPing"):
                            self.items.put(item)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.ended.set()
            self.first.set()
            with self._answered:
                self._answered.notify_all()

    def send(self, message: batches_pb.ChannelRequest) -> None:
        self._outgoing.put(message)

    def send_turns(self, call_id: int, *results: pb.OrchestratorResponse) -> None:
        self.send(batches_pb.ChannelRequest(
            orchestratorResults=batches_pb.OrchestratorResultBatch(results=results), callId=call_id))

    def send_activities(self, call_id: int, *results: pb.ActivityResponse) -> None:
        self.send(batches_pb.ChannelRequest(
            activityResults=batches_pb.ActivityResultBatch(results=results), callId=call_id))

    def outcomes(self, call_id: int) -> batches_pb.CompletionOutcomes:
        """The outcomes answered under ``call_id`` (waits for them)."""
        with self._answered:
            self._answered.wait_for(lambda: call_id in self._answers or self.ended.is_set(), WAIT)
            assert call_id in self._answers, f"no outcomes for callId {call_id} (ended: {self.error})"
            return self._answers[call_id]

    def codes(self, call_id: int) -> list[int]:
        return [outcome.code for outcome in self.outcomes(call_id).outcomes]

    def take(self, kind: str, count: int) -> list[pb.WorkItem]:
        taken = [self.items.get(timeout=WAIT) for _ in range(count)]
        assert all(item.WhichOneof("request") == kind for item in taken), taken
        return taken

    def half_close(self) -> None:
        """End the request stream (the worker sends nothing more)."""
        self._outgoing.put(None)

    def wait_end(self) -> None:
        assert self.ended.wait(WAIT), "the channel did not end"
        self._thread.join(WAIT)

    def close(self) -> None:
        self._outgoing.put(None)
        self.call.cancel()
        self._thread.join(timeout=10)
        self.channel.close()


@pytest.fixture
def env() -> Iterator[tuple[Stub, str]]:
    """A fast in-process sidecar: a raw client stub and the address."""
    with fast_sidecar() as (_, address), grpc.insecure_channel(address) as channel:
        yield Stub(channel), address


@pytest.fixture
def channels(env: tuple[Stub, str]) -> Iterator[tuple[Stub, Any]]:
    """The client stub and a factory of raw channel workers (all closed at the end)."""
    stub, address = env
    opened: list[ChannelWorker] = []

    def open_channel(
        request: pb.GetWorkItemsRequest | None = None, *, reads_work_with_outcomes: bool = False
    ) -> ChannelWorker:
        worker = ChannelWorker(address, request, reads_work_with_outcomes=reads_work_with_outcomes)
        opened.append(worker)
        return worker

    yield stub, open_channel
    for worker in opened:
        worker.close()


def history(stub: Stub, iid: str) -> list[pb.HistoryEvent]:
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid), timeout=WAIT)
    return [event for chunk in chunks for event in chunk.events]


def status(stub: Stub, iid: str) -> int:
    return int(stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), timeout=WAIT)
               .orchestrationState.orchestrationStatus)


def completed_ids(item: pb.WorkItem) -> list[int]:
    return sorted(e.taskCompleted.taskScheduledId for e in item.orchestratorRequest.newEvents
                  if e.HasField("taskCompleted"))


def unchanged_and_offered(stub: Stub, open_channel: Any, iid: str, before: list[pb.HistoryEvent]) -> None:
    """A refusal changed nothing: ``iid`` is still pending with the same history, and its first
    turn is offered to a new channel (at once, or after the grace of a channel that held it)."""
    assert status(stub, iid) == pb.ORCHESTRATION_STATUS_PENDING
    assert history(stub, iid) == before
    fresh = open_channel()
    (item,) = fresh.take("orchestratorRequest", 1)
    assert item.orchestratorRequest.instanceId == iid
    fresh.send_turns(1, turn(item, complete(1, '"ok"')))
    assert fresh.codes(1) == [OK]


# ------------------------------------------------------------------ results on the channel


def test_results_on_the_channel_are_answered_under_their_call_id(channels: Any) -> None:
    stub, open_channel = channels
    worker = open_channel()
    first = worker.replies[0]
    assert first.WhichOneof("message") == "workItems" and first.callId == 0
    assert first.workItems.workItems[0].HasField("healthPing"), "the channel opens with a health ping"
    start(stub, "fan")
    (item,) = worker.take("orchestratorRequest", 1)
    worker.send_turns(41, turn(item, schedule(1, "a", '"1"'), schedule(2, "b"), schedule(3, "c")))
    assert worker.codes(41) == [OK]
    activities = worker.take("activityRequest", 3)  # on the same channel
    assert sorted(a.activityRequest.taskId for a in activities) == [1, 2, 3]
    assert len({a.completionToken for a in activities}) == 3
    by_task = {a.activityRequest.taskId: a for a in activities}
    # Two messages in flight at once, answered each under its own callId.
    worker.send_activities(7, result(by_task[1], '"r1"'))
    worker.send_activities(1_000_000_007, result(by_task[2], '"r2"'), result(by_task[3], '"r3"'))
    assert worker.codes(1_000_000_007) == [OK, OK]
    assert worker.codes(7) == [OK]
    answered = sorted(r.callId for r in worker.replies if r.WhichOneof("message") == "outcomes")
    assert answered == [7, 41, 1_000_000_007], "one reply per results message"
    turns = worker.take("orchestratorRequest", 1)
    while sum(len(completed_ids(t)) for t in turns) < 3:  # the results may come in one turn or two
        worker.send_turns(100 + len(turns), turn(turns[-1]))
        assert worker.codes(100 + len(turns)) == [OK]
        turns += worker.take("orchestratorRequest", 1)
    assert sorted(i for t in turns for i in completed_ids(t)) == [1, 2, 3]
    worker.send_turns(200, turn(turns[-1], complete(4, '"done"')))
    assert worker.codes(200) == [OK]
    done = stub.WaitForInstanceCompletion(
        pb.GetInstanceRequest(instanceId="fan", getInputsAndOutputs=True), timeout=WAIT)
    assert done.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    assert done.orchestrationState.output.value == '"done"'
    results = sorted((e.taskCompleted.taskScheduledId, e.taskCompleted.result.value)
                     for e in history(stub, "fan") if e.HasField("taskCompleted"))
    assert results == [(1, '"r1"'), (2, '"r2"'), (3, '"r3"')]
    assert not any(r.HasField("readyWork") for r in worker.replies), \
        "a worker that did not open with readsWorkWithOutcomes gets its work in messages of their own"


def _reply(worker: ChannelWorker, call_id: int) -> batches_pb.ChannelReply:
    worker.outcomes(call_id)
    return next(r for r in worker.replies if r.WhichOneof("message") == "outcomes" and r.callId == call_id)


@pytest.fixture
def unbounded_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A settling message holds its stream's work until its outcomes go, however long its commit
    takes (a loaded machine's PostgreSQL commit can take longer than the usual bound)."""
    monkeypatch.setattr(servicer_batches, "HOLD_FOR_OUTCOMES", 60.0)


def test_the_work_results_make_comes_with_their_outcomes_to_a_worker_that_reads_it(
    channels: Any, unbounded_hold: None
) -> None:
    """Opened with readsWorkWithOutcomes: the activity a turn schedules comes in the turn's outcomes
    message, and so does the turn an activity's result makes; nothing comes twice."""
    stub, open_channel = channels
    worker = open_channel(reads_work_with_outcomes=True)
    start(stub, "step")
    (first,) = worker.take("orchestratorRequest", 1)
    worker.send_turns(1, turn(first, schedule(1, "a", '"1"')))
    assert worker.codes(1) == [OK]
    (activity,) = _reply(worker, 1).readyWork.workItems
    assert activity.activityRequest.taskId == 1 and worker.take("activityRequest", 1) == [activity]
    worker.send_activities(2, result(activity, '"r"'))
    assert worker.codes(2) == [OK]
    (follow,) = _reply(worker, 2).readyWork.workItems
    assert completed_ids(follow) == [1] and worker.take("orchestratorRequest", 1) == [follow]
    worker.send_turns(3, turn(follow, complete(2, '"done"')))
    assert worker.codes(3) == [OK]
    done = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="step", getInputsAndOutputs=True),
                                          timeout=WAIT)
    assert done.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    assert worker.items.empty(), "no work item came twice"


def test_a_result_naming_another_task_fails_alone_on_the_channel(channels: Any) -> None:
    stub, open_channel = channels
    worker = open_channel()
    start(stub, "mismatch")
    (first,) = worker.take("orchestratorRequest", 1)
    worker.send_turns(1, turn(first, schedule(1, "a"), schedule(2, "b"), schedule(3, "c")))
    assert worker.codes(1) == [OK]
    one, two, three = sorted(worker.take("activityRequest", 3), key=lambda item: item.activityRequest.taskId)
    wrong = result(two, '"r2"')
    wrong.taskId = 7
    stale = pb.ActivityResponse(instanceId="mismatch", taskId=3, completionToken=uuid.uuid4().hex)
    worker.send_activities(2, result(one, '"r1"'), wrong, stale, result(three, '"r3"'))
    outcomes = worker.outcomes(2).outcomes
    assert [o.code for o in outcomes] == [OK, INVALID, NOT_FOUND, OK]
    assert "taskId 7 does not match task 2" in outcomes[1].message
    assert outcomes[0].message == outcomes[3].message == ""
    # The handed-back task is offered again under a new token, on the same channel; the turn
    # with the good results comes meanwhile.
    two_items = [worker.items.get(timeout=WAIT) for _ in range(2)]
    arrived = {item.WhichOneof("request"): item for item in two_items}
    again, second = arrived["activityRequest"], arrived["orchestratorRequest"]
    assert again.activityRequest.taskId == 2 and again.completionToken != two.completionToken
    assert completed_ids(second) == [1, 3], "the good results of the message were committed"
    worker.send_turns(3, turn(second))
    worker.send_activities(4, result(again, '"r2"'))
    assert worker.codes(3) == [OK] and worker.codes(4) == [OK]
    (third,) = worker.take("orchestratorRequest", 1)
    assert completed_ids(third) == [2]
    worker.send_turns(5, turn(third, complete(4, '"done"')))
    assert worker.codes(5) == [OK]
    done = stub.WaitForInstanceCompletion(
        pb.GetInstanceRequest(instanceId="mismatch", getInputsAndOutputs=True), timeout=WAIT)
    assert done.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    completed = sorted(e.taskCompleted.taskScheduledId for e in history(stub, "mismatch")
                       if e.HasField("taskCompleted"))
    assert completed == [1, 2, 3], "each result counted once"


# ------------------------------------------------------------------ bad input


FIRST_MESSAGES = {
    "activityResults": lambda item: batches_pb.ChannelRequest(
        activityResults=batches_pb.ActivityResultBatch(results=[result(item, '"sneaked"')]), callId=1),
    "orchestratorResults": lambda item: batches_pb.ChannelRequest(
        orchestratorResults=batches_pb.OrchestratorResultBatch(results=[]), callId=1),
    "empty": lambda item: batches_pb.ChannelRequest(),
    "none": None,
}


@pytest.mark.parametrize("first", list(FIRST_MESSAGES))
def test_a_channel_must_start_with_open(channels: Any, env: tuple[Stub, str], first: str) -> None:
    stub, open_channel = channels
    _, address = env
    holder = open_channel()
    start(stub, "busy")
    (item,) = holder.take("orchestratorRequest", 1)
    holder.send_turns(1, turn(item, schedule(1, "work")))
    assert holder.codes(1) == [OK]
    (activity,) = holder.take("activityRequest", 1)
    start(stub, "kept")
    (kept_item,) = holder.take("orchestratorRequest", 1)
    holder.send_turns(2, turn(kept_item))  # an empty turn: 'kept' is still pending afterwards
    assert holder.codes(2) == [OK]
    busy_before, kept_before = history(stub, "busy"), history(stub, "kept")

    make = FIRST_MESSAGES[first]
    messages = [] if make is None else [make(activity)]
    with grpc.insecure_channel(address) as channel:
        call = batches_grpc.WorkBatchesStub(channel).OpenWorkChannel(iter(messages), timeout=WAIT)
        expect_status(lambda: list(call), grpc.StatusCode.INVALID_ARGUMENT, "'open'")
    assert history(stub, "busy") == busy_before and history(stub, "kept") == kept_before
    # The activity result in the refused message was not taken: its own holder settles it now.
    holder.send_activities(3, result(activity, '"real"'))
    assert holder.codes(3) == [OK]
    (after,) = holder.take("orchestratorRequest", 1)
    assert [e.taskCompleted.result.value for e in after.orchestratorRequest.newEvents
            if e.HasField("taskCompleted")] == ['"real"']
    assert status(stub, "kept") == pb.ORCHESTRATION_STATUS_RUNNING


def test_an_open_with_a_bad_request_is_refused_and_changes_nothing(
    channels: Any, env: tuple[Stub, str]
) -> None:
    stub, open_channel = channels
    _, address = env
    start(stub, "kept")
    before = history(stub, "kept")
    request = pb.GetWorkItemsRequest(maxConcurrentActivityWorkItems=-1)
    with grpc.insecure_channel(address) as channel:
        call = batches_grpc.WorkBatchesStub(channel).OpenWorkChannel(
            iter([batches_pb.ChannelRequest(open=request)]), timeout=WAIT)
        expect_status(lambda: list(call), grpc.StatusCode.INVALID_ARGUMENT,
                      "maxConcurrentActivityWorkItems", "-1")
    unchanged_and_offered(stub, open_channel, "kept", before)


def test_a_second_open_is_refused(channels: Any) -> None:
    stub, open_channel = channels
    start(stub, "kept")
    before = history(stub, "kept")
    worker = open_channel()
    worker.take("orchestratorRequest", 1)  # leased to this channel, never answered
    worker.send(batches_pb.ChannelRequest(open=pb.GetWorkItemsRequest()))
    worker.wait_end()
    assert worker.error is not None
    assert worker.error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "opened once" in worker.error.details()  # type: ignore[attr-defined]
    unchanged_and_offered(stub, open_channel, "kept", before)


@pytest.mark.parametrize("after_open", [False, True], ids=["first", "after-open"])
def test_an_undecodable_message_ends_the_channel_with_internal(
    channels: Any, env: tuple[Stub, str], after_open: bool
) -> None:
    stub, open_channel = channels
    _, address = env
    start(stub, "kept")
    before = history(stub, "kept")
    messages = [b"\xff\xff\xff"]
    if after_open:
        messages.insert(0, batches_pb.ChannelRequest(open=pb.GetWorkItemsRequest()).SerializeToString())
    with grpc.insecure_channel(address) as channel:
        raw = channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                    response_deserializer=batches_pb.ChannelReply.FromString)
        call = raw(iter(messages), timeout=WAIT)
        details = expect_status(lambda: list(call), grpc.StatusCode.INTERNAL)
        assert details == UNDECODABLE_DETAILS
    unchanged_and_offered(stub, open_channel, "kept", before)


# ------------------------------------------------------------------ the end of a channel


def test_a_half_closed_channel_answers_what_it_was_sent_then_ends_ok(channels: Any) -> None:
    stub, open_channel = channels
    worker = open_channel()
    start(stub, "a")
    start(stub, "b")
    items = {i.orchestratorRequest.instanceId: i for i in worker.take("orchestratorRequest", 2)}
    worker.send_turns(1, turn(items["a"], schedule(1, "work")))
    assert worker.codes(1) == [OK]
    (activity,) = worker.take("activityRequest", 1)
    # Both kinds of results, then the end of the request stream at once.
    worker.send_activities(2, result(activity, '"w"'))
    worker.send_turns(3, turn(items["b"], complete(1, '"b-done"')))
    worker.half_close()
    worker.wait_end()
    assert worker.error is None, worker.error
    assert worker.call.code() == grpc.StatusCode.OK
    assert worker.codes(2) == [OK] and worker.codes(3) == [OK]
    done = stub.WaitForInstanceCompletion(
        pb.GetInstanceRequest(instanceId="b", getInputsAndOutputs=True), timeout=WAIT)
    assert done.orchestrationState.output.value == '"b-done"'
    # The activity result was committed: the next turn of 'a' carries it (to a new channel).
    fresh = open_channel()
    (after,) = fresh.take("orchestratorRequest", 1)
    assert after.orchestratorRequest.instanceId == "a" and completed_ids(after) == [1]


def test_a_leased_turn_of_a_cancelled_channel_is_offered_again_and_its_old_token_is_stale(
    channels: Any,
) -> None:
    stub, open_channel = channels
    worker = open_channel()
    start(stub, "o")
    (held,) = worker.take("orchestratorRequest", 1)
    worker.close()  # cancels the call while it holds the turn
    fresh = open_channel()
    (again,) = fresh.take("orchestratorRequest", 1)
    assert again.orchestratorRequest.instanceId == "o"
    assert again.completionToken != held.completionToken
    kinds = [e.WhichOneof("eventType") for e in again.orchestratorRequest.newEvents]
    assert kinds == [e.WhichOneof("eventType") for e in held.orchestratorRequest.newEvents]
    fresh.send_turns(1, turn(held, complete(1, '"old"')))
    outcome = fresh.outcomes(1).outcomes
    assert [o.code for o in outcome] == [NOT_FOUND], "a result for the old token is stale"
    assert status(stub, "o") == pb.ORCHESTRATION_STATUS_PENDING
    fresh.send_turns(2, turn(again, complete(1, '"new"')))
    assert fresh.codes(2) == [OK]
    done = stub.WaitForInstanceCompletion(
        pb.GetInstanceRequest(instanceId="o", getInputsAndOutputs=True), timeout=WAIT)
    assert done.orchestrationState.output.value == '"new"'


# ------------------------------------------------------------------ our SDK


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def fan_out(ctx: task.OrchestrationContext, n: int):  # type: ignore[no-untyped-def]
    values = yield task.when_all([ctx.call_activity(double, input=i) for i in range(n)])
    total = sum(values)
    total += yield ctx.call_activity(double, input=total)
    return total


def expected(n: int) -> int:
    return 3 * 2 * sum(range(n))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_fan_out(
    address: str, n: int, lines: Lines | None = None, resiliency: GrpcWorkerResiliencyOptions | None = None
) -> tuple[Any, Any, str]:
    """Runs a fan-out of ``n`` on a worker of ours; returns its stream, its dispatcher and the instance ID."""
    logger = logging.getLogger(f"test-work-channel-{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    if lines is not None:
        logger.addHandler(lines)
    worker = TaskHubGrpcWorker(host_address=address, logger=logger, resiliency_options=resiliency)
    worker.add_orchestrator(fan_out)
    worker.add_activity(double)
    worker.start()
    stream, dispatcher = worker._stream, worker._dispatcher  # noqa: SLF001
    try:
        with TaskHubGrpcClient(host_address=address) as client:
            iid = client.schedule_new_orchestration(fan_out, input=n)
            state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            assert state.serialized_output == str(expected(n))
    finally:
        worker.stop()
    return stream, dispatcher, iid


def test_our_worker_uses_the_channel_when_the_sidecar_serves_it(unbounded_hold: None) -> None:
    with fast_sidecar() as (_, address):
        stream, dispatcher, _ = run_fan_out(address, 50)
    assert stream._serves_channel is True
    assert stream._serves_batches is None, "GetWorkItemBatches was never needed"
    assert dispatcher._activity_results.calls >= 1 and dispatcher._turn_results.calls >= 1
    assert stream.items_with_outcomes >= 1, "the activities the fan-out's turn scheduled came with its outcomes"


def padded(ctx: task.ActivityContext, x: int) -> str:
    return str(x) * 300_000  # ~300 KB: a few of these in one batch are more than 1 MiB


def padded_fan_out(ctx: task.OrchestrationContext, n: int):  # type: ignore[no-untyped-def]
    values = yield task.when_all([ctx.call_activity(padded, input=i) for i in range(n)])
    return sorted({value[0] for value in values}) == [str(i) for i in range(n)] and len("".join(values))


def test_our_worker_keeps_its_results_within_what_the_sidecar_takes() -> None:
    """The channel's first message says the sidecar's limit; the worker's batches of results stay
    within it, so no channel is ended by one (it stays the first one) and none goes one by one."""
    limit = 1024 * 1024
    with fast_sidecar(max_message_size=limit) as (_, address):
        worker = TaskHubGrpcWorker(host_address=address)
        worker.add_orchestrator(padded_fan_out)
        worker.add_activity(padded)
        worker.start()
        try:
            stream = worker._stream  # noqa: SLF001
            sender = eventually(lambda: stream.batch_stub(), WAIT, "the worker's channel to open")
            assert isinstance(sender, ChannelSender)
            assert sender.max_message_bytes == limit
            with TaskHubGrpcClient(host_address=address) as client:
                for _ in range(3):
                    iid = client.schedule_new_orchestration(padded_fan_out, input=8)
                    state = client.wait_for_orchestration_completion(iid, timeout=60)
                    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
                    assert state.serialized_output == str(8 * 300_000)
            assert stream.connections == 1, "no channel was ended by a message over the limit"
            batches = worker._dispatcher._activity_results  # noqa: SLF001
            assert batches.sent_alone == 0, "results over the limit together were sent one by one"
            assert batches.calls >= 3 * 8 / 3, "three ~300 KB results at most in a 1 MiB message"
        finally:
            worker.stop()


def _abort_unimplemented(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unimplemented(self: BatchServicer, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "work channels are not served in this test")

    monkeypatch.setattr(BatchServicer, "OpenWorkChannel", unimplemented)


def test_our_worker_falls_back_to_batches_when_channels_are_unimplemented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _abort_unimplemented(monkeypatch)
    with fast_sidecar() as (_, address):
        stream, dispatcher, _ = run_fan_out(address, 50)
    assert stream._serves_channel is False and stream._serves_batches is True
    assert dispatcher._activity_results.calls >= 1 and dispatcher._turn_results.calls >= 1


def test_our_worker_falls_back_when_a_channel_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel that never sends its first message (as behind a proxy that does not carry
    bidirectional calls) is given up after the Hello timeout, and the worker uses batches."""
    opened = threading.Event()

    async def silent(self: BatchServicer, requests: Any, context: grpc.aio.ServicerContext) -> None:
        opened.set()
        await asyncio.Event().wait()  # until the call is cancelled

    monkeypatch.setattr(BatchServicer, "OpenWorkChannel", silent)
    lines = Lines()
    with fast_sidecar() as (_, address):
        stream, dispatcher, _ = run_fan_out(
            address, 20, lines, GrpcWorkerResiliencyOptions(hello_timeout_seconds=0.5))
    assert opened.is_set()
    assert stream._serves_channel is False and stream._serves_batches is True
    assert dispatcher._activity_results.calls >= 1
    assert any("no first message on the work channel" in line for line in lines.lines)


def test_our_worker_falls_back_when_the_servicer_replaces_get_work_items() -> None:
    server = SidecarServer(test_store_spec(), host="localhost", dispatch_options=FAST)
    servicer = server.servicer
    served = {"streams": 0}
    real_items = servicer.GetWorkItems

    def work_items(request: pb.GetWorkItemsRequest, context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        served["streams"] += 1
        yield from real_items(request, context)

    servicer.GetWorkItems = work_items  # type: ignore[method-assign]
    port = server.start(0)
    try:
        address = f"localhost:{port}"
        with grpc.insecure_channel(address) as channel:
            call = batches_grpc.WorkBatchesStub(channel).OpenWorkChannel(
                iter([batches_pb.ChannelRequest(open=pb.GetWorkItemsRequest())]), timeout=WAIT)
            expect_status(lambda: list(call), grpc.StatusCode.UNIMPLEMENTED)
        stream, _, _ = run_fan_out(address, 20)
    finally:
        server.stop(grace=0.2)
    assert stream._serves_channel is False and stream._serves_batches is True
    assert served["streams"] >= 1, "the work items went through the replaced GetWorkItems"


def test_results_in_flight_when_the_channel_breaks_count_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first channel's first activity results are committed, but their outcomes never reach the
    worker: the sidecar drops the channel instead. The worker sends them again one by one (refused
    as stale), and every other result again or on the next channel."""
    settle = BatchServicer.complete_activities
    serve = BatchServicer.OpenWorkChannel
    lock = threading.Lock()
    state: dict[str, Any] = {}
    dropped = threading.Event()

    def settle_unanswered(
        self: BatchServicer, results: list[pb.ActivityResponse]
    ) -> batches_pb.CompletionOutcomes:
        outcomes = settle(self, results)
        with lock:
            first = "settled" not in state and "loop" in state
            if first:
                state["settled"] = len(results)
        if first:
            state["loop"].call_soon_threadsafe(state["event"].set)
            dropped.wait(WAIT)  # the channel is dropped meanwhile: these outcomes go nowhere
        return outcomes

    async def dropped_once(self: BatchServicer, requests: Any, context: grpc.aio.ServicerContext) -> None:
        with lock:
            first = "loop" not in state
            if first:
                state["loop"], state["event"] = asyncio.get_running_loop(), asyncio.Event()
        if not first:
            await serve(self, requests, context)
            return
        serving = asyncio.ensure_future(serve(self, requests, context))
        waiting = asyncio.ensure_future(state["event"].wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if serving.done():  # ended by itself (the worker stopped)
            serving.result()
            return
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        dropped.set()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the test dropped the channel")

    monkeypatch.setattr(BatchServicer, "complete_activities", settle_unanswered)
    monkeypatch.setattr(BatchServicer, "OpenWorkChannel", dropped_once)
    lines = Lines()
    n = 40
    with fast_sidecar() as (_, address), grpc.insecure_channel(address) as channel:
        stream, _, iid = run_fan_out(address, n, lines)
        events = history(Stub(channel), iid)
    assert dropped.is_set(), "the first channel was dropped"
    assert stream.connections >= 2 and stream._serves_channel is True
    scheduled = sorted(e.eventId for e in events if e.HasField("taskScheduled"))
    completed = sorted(e.taskCompleted.taskScheduledId for e in events if e.HasField("taskCompleted"))
    assert len(scheduled) == n + 1
    assert completed == scheduled, "each activity's result is in the history exactly once"
    results = {e.taskCompleted.taskScheduledId: e.taskCompleted.result.value for e in events
               if e.HasField("taskCompleted")}
    inputs = {e.eventId: e.taskScheduled.input.value for e in events if e.HasField("taskScheduled")}
    assert all(int(results[i]) == 2 * int(inputs[i]) for i in scheduled)
    stale = [line for line in lines.lines if "no longer holds" in line]
    assert len(stale) >= state["settled"], (state["settled"], stale)
