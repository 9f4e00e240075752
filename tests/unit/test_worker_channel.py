"""The worker's ChannelSender: the messages of one work channel, and the sends waiting for outcomes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal.worker_channel import ChannelClosed, ChannelSender

WAIT = 5.0


def activity_batch(token: str) -> batches_pb.ActivityResultBatch:
    response = pb.ActivityResponse(instanceId="i", taskId=1, completionToken=token)
    return batches_pb.ActivityResultBatch(results=[response])


def turn_batch(token: str) -> batches_pb.OrchestratorResultBatch:
    response = pb.OrchestratorResponse(instanceId="i", completionToken=token)
    return batches_pb.OrchestratorResultBatch(results=[response])


def outcomes(*codes: int) -> batches_pb.CompletionOutcomes:
    return batches_pb.CompletionOutcomes(outcomes=[batches_pb.CompletionOutcome(code=c, message=f"m{c}")
                                                   for c in codes])


class Reader:
    """Reads a sender's request stream on a thread, as gRPC does: each message into a queue."""

    def __init__(self, sender: ChannelSender) -> None:
        self.messages: queue.Queue[batches_pb.ChannelRequest] = queue.Queue()
        self.ended = threading.Event()
        self._requests = sender.requests()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for message in self._requests:
            self.messages.put(message)
        self.ended.set()

    def next(self) -> batches_pb.ChannelRequest:
        return self.messages.get(timeout=WAIT)


class Send:
    """One send on a thread: its outcomes, or the error it raised."""

    def __init__(self, call: Callable[[], batches_pb.CompletionOutcomes]) -> None:
        self.reply: batches_pb.CompletionOutcomes | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._call = call
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reply = self._call()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            self.error = exc
        finally:
            self.done.set()

    def wait(self) -> None:
        assert self.done.wait(WAIT), "the send never returned"


@pytest.fixture
def sender() -> Iterator[ChannelSender]:
    sender = ChannelSender(pb.GetWorkItemsRequest(maxConcurrentActivityWorkItems=7, worker_instance_id="w"))
    yield sender
    sender.close()


def test_the_open_message_comes_first_then_the_sends_in_order_then_the_end(sender: ChannelSender) -> None:
    reader = Reader(sender)
    first = reader.next()
    assert first.WhichOneof("message") == "open"
    assert first.open == pb.GetWorkItemsRequest(maxConcurrentActivityWorkItems=7, worker_instance_id="w")
    one = Send(lambda: sender.CompleteActivityTasks(activity_batch("a")))
    sent_one = reader.next()
    two = Send(lambda: sender.CompleteOrchestratorTasks(turn_batch("t")))
    sent_two = reader.next()
    assert sent_one.WhichOneof("message") == "activityResults"
    assert sent_one.activityResults == activity_batch("a")
    assert sent_two.WhichOneof("message") == "orchestratorResults"
    assert sent_two.orchestratorResults == turn_batch("t")
    assert not reader.ended.is_set()
    sender.close()
    assert reader.ended.wait(WAIT), "the request stream did not end after close()"
    assert reader.messages.empty()
    for send in (one, two):
        send.wait()
        assert isinstance(send.error, ChannelClosed)


def test_an_answer_wakes_exactly_its_send_with_its_outcomes(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()  # open
    first = Send(lambda: sender.CompleteActivityTasks(activity_batch("a")))
    first_id = reader.next().callId
    second = Send(lambda: sender.CompleteOrchestratorTasks(turn_batch("t")))
    second_id = reader.next().callId
    sender.answered(second_id, outcomes(0, 5))
    second.wait()
    assert second.error is None and second.reply == outcomes(0, 5)
    assert not first.done.wait(0.1), "an answer to another call id woke this send"
    sender.answered(first_id, outcomes(0))
    first.wait()
    assert first.error is None and first.reply == outcomes(0)


def test_an_unknown_call_id_is_ignored(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    send = Send(lambda: sender.CompleteActivityTasks(activity_batch("a")))
    call_id = reader.next().callId
    sender.answered(call_id + 1000, outcomes(0))
    sender.answered(0, outcomes(0))
    assert not send.done.wait(0.1), "an unknown call id woke a send"
    sender.answered(call_id, outcomes(3))
    send.wait()
    assert send.reply == outcomes(3)
    sender.answered(call_id, outcomes(0))  # answered twice: the second is ignored too


def test_a_send_with_a_timeout_and_no_answer_raises_channel_closed(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    with pytest.raises(ChannelClosed, match="no outcome"):
        sender.CompleteActivityTasks(activity_batch("a"), timeout=0.05)
    late = reader.next()
    sender.answered(late.callId, outcomes(0))  # too late: nobody waits for it any more, nothing breaks
    # The channel still works for the next send.
    send = Send(lambda: sender.CompleteActivityTasks(activity_batch("b"), timeout=WAIT))
    sender.answered(reader.next().callId, outcomes(0))
    send.wait()
    assert send.error is None and send.reply == outcomes(0)


def test_close_fails_waiting_sends_and_later_sends_at_once(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    waiting = [Send(lambda: sender.CompleteActivityTasks(activity_batch("a"))),
               Send(lambda: sender.CompleteOrchestratorTasks(turn_batch("t")))]
    ids = [reader.next().callId, reader.next().callId]
    sender.close()
    for send in waiting:
        send.wait()
        assert isinstance(send.error, ChannelClosed), send.error
        assert send.reply is None
    with pytest.raises(ChannelClosed):
        sender.CompleteActivityTasks(activity_batch("b"), timeout=WAIT)
    with pytest.raises(ChannelClosed):
        sender.CompleteOrchestratorTasks(turn_batch("u"))  # no timeout: still at once
    sender.answered(ids[0], outcomes(0))  # an answer after the end is ignored
    sender.close()  # a second close is harmless
    assert reader.ended.wait(WAIT)
    assert reader.messages.empty(), "nothing is sent after close()"


def test_finish_ends_the_requests_and_waits_for_the_outcomes_of_the_sends_made(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    waiting = Send(lambda: sender.CompleteOrchestratorTasks(turn_batch("t")))
    call_id = reader.next().callId
    finished = Send(lambda: outcomes(int(sender.finish(WAIT))))  # finish's verdict, as a code
    assert reader.ended.wait(WAIT), "finish() did not end the request stream"
    with pytest.raises(ChannelClosed):
        sender.CompleteActivityTasks(activity_batch("late"))  # refused at once, to go one by one
    assert not waiting.done.wait(0.1) and not finished.done.is_set(), "finish() gave up on a waiting send"
    sender.answered(call_id, outcomes(0))
    waiting.wait()
    assert waiting.error is None and waiting.reply == outcomes(0)
    finished.wait()
    assert finished.reply == outcomes(1), "finish() saw every outcome come"
    assert reader.messages.empty(), "nothing is sent after finish()"


def test_finish_gives_up_after_its_timeout_and_close_then_fails_the_send(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    waiting = Send(lambda: sender.CompleteActivityTasks(activity_batch("a")))
    reader.next()
    assert sender.finish(0.05) is False
    assert not waiting.done.is_set()
    sender.close()
    waiting.wait()
    assert isinstance(waiting.error, ChannelClosed)
    assert sender.finish(WAIT) is True, "nothing waits any more"


def test_a_batch_larger_than_the_sidecar_takes_is_refused_before_it_is_sent(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    sender.max_message_bytes = 1000
    big = batches_pb.ActivityResultBatch(results=[pb.ActivityResponse(instanceId="i", completionToken="t" * 2000)])
    with pytest.raises(grpc.RpcError, match="more than the sidecar takes"):
        sender.CompleteActivityTasks(big, timeout=WAIT)
    small = Send(lambda: sender.CompleteActivityTasks(activity_batch("small"), timeout=WAIT))
    message = reader.next()
    assert message.activityResults.results[0].completionToken == "small", "the large batch was never queued"
    sender.answered(message.callId, outcomes(0))
    small.wait()
    assert small.reply is not None and small.reply.outcomes[0].code == 0


def test_call_ids_are_distinct(sender: ChannelSender) -> None:
    reader = Reader(sender)
    reader.next()
    sends: list[Send] = []
    for n in range(20):
        method: Any = sender.CompleteActivityTasks if n % 2 else sender.CompleteOrchestratorTasks
        batch: Any = activity_batch(str(n)) if n % 2 else turn_batch(str(n))
        sends.append(Send(lambda method=method, batch=batch: method(batch)))
    sent = [reader.next() for _ in range(20)]
    ids = [message.callId for message in sent]
    assert len(set(ids)) == 20 and all(call_id > 0 for call_id in ids), ids
    # Each answer reaches the send whose message carried that id.
    for message in sent:
        kind = message.WhichOneof("message")
        token = (message.activityResults if kind == "activityResults" else message.orchestratorResults) \
            .results[0].completionToken
        sender.answered(message.callId, batches_pb.CompletionOutcomes(
            outcomes=[batches_pb.CompletionOutcome(code=0, message=token)]))
    for n, send in enumerate(sends):
        send.wait()
        assert send.reply is not None and send.reply.outcomes[0].message == str(n)
