"""The worker's side of ``WorkBatches.OpenWorkChannel``: results sent on the work-item call itself.

Our sidecar only (``protos/work_batches.proto``). The call's first message opens the stream;
after it, each batch of results goes out as one message carrying a call ID, and the sidecar
answers with the outcomes under that ID. :class:`ChannelSender` stands in for the
``WorkBatches`` stub the result batchers use (same two methods, same answers), so a result
costs a message each way on an open call instead of a call of its own. When the channel ends,
every send still waiting fails with :class:`ChannelClosed`, and the batcher sends those results
again one by one with the unary calls (a result the sidecar had settled is then refused as
stale, and dropped). So does a batch larger than the sidecar takes (its first message says how
large; 4 MiB until then): on the channel it would end the call, alone it is answered by itself.
A worker that stops first ends its side of the call and waits a moment for the outcomes of what
it sent (:meth:`ChannelSender.finish`), which the sidecar sends before it ends the call (giving
the worker no new work meanwhile; what was already on its way the worker hands back): the stop
does not lose them, so nothing is sent twice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb


class ChannelClosed(grpc.RpcError):
    """A send on a work channel that ended (or gave no outcome in time) before its outcomes came."""


class _Waiter:
    __slots__ = ("event", "outcomes")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcomes: batches_pb.CompletionOutcomes | None = None


# The largest results message sent on a channel before the sidecar has said what it takes:
# gRPC's usual receive limit.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ChannelSender:
    """The messages a worker sends on one work channel, and the outcomes it waits for."""

    def __init__(self, open_request: pb.GetWorkItemsRequest) -> None:
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        """The largest results message sent on the channel (set from the sidecar's first message)."""
        self._outgoing: queue.SimpleQueue[batches_pb.ChannelRequest | None] = queue.SimpleQueue()
        self._outgoing.put(batches_pb.ChannelRequest(open=open_request, readsWorkWithOutcomes=True))
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._next_id = 0
        self._closed = False  # no new sends (finishing or closed)
        self._ended = False  # the request stream is ended

    def requests(self) -> Iterator[batches_pb.ChannelRequest]:
        """The call's request stream: the open message, then each send, until :meth:`close`."""
        while True:
            message = self._outgoing.get()
            if message is None:
                return
            yield message

    def CompleteActivityTasks(  # noqa: N802 - the stub's method name
        self, request: batches_pb.ActivityResultBatch, timeout: float | None = None, metadata: object = None
    ) -> batches_pb.CompletionOutcomes:
        """Send activity results on the channel; their outcomes, as ``WorkBatches.CompleteActivityTasks``."""
        return self._send(batches_pb.ChannelRequest(activityResults=request), timeout)

    def CompleteOrchestratorTasks(  # noqa: N802 - the stub's method name
        self, request: batches_pb.OrchestratorResultBatch, timeout: float | None = None, metadata: object = None
    ) -> batches_pb.CompletionOutcomes:
        """Send turn results on the channel; their outcomes, as ``WorkBatches.CompleteOrchestratorTasks``."""
        return self._send(batches_pb.ChannelRequest(orchestratorResults=request), timeout)

    def _send(self, message: batches_pb.ChannelRequest, timeout: float | None) -> batches_pb.CompletionOutcomes:
        size = message.ByteSize() + 16  # with the call ID and the message's framing
        if size > self.max_message_bytes:
            raise ChannelClosed(f"{size} bytes of results are more than the sidecar takes in one message "
                                f"({self.max_message_bytes})")
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise ChannelClosed("the work channel is closed")
            self._next_id += 1
            message.callId = self._next_id
            self._waiting[message.callId] = waiter
            self._outgoing.put(message)
        answered = waiter.event.wait(timeout)
        with self._lock:
            self._waiting.pop(message.callId, None)
        waiter.event.set()  # a finish() waiting for it need not wait any longer
        if not answered and waiter.outcomes is None:
            raise ChannelClosed(f"no outcome on the work channel within {timeout} s")
        if waiter.outcomes is None:
            raise ChannelClosed("the work channel ended before the outcomes came")
        return waiter.outcomes

    def answered(self, call_id: int, outcomes: batches_pb.CompletionOutcomes) -> None:
        """The sidecar's outcomes for the send ``call_id`` arrived (an unknown ID is ignored)."""
        with self._lock:
            waiter = self._waiting.pop(call_id, None)
        if waiter is not None:
            waiter.outcomes = outcomes
            waiter.event.set()

    def finish(self, timeout: float) -> bool:
        """End the request stream and wait up to ``timeout`` seconds for the outcomes of the sends made.

        New sends fail at once with :class:`ChannelClosed`. True when every outcome came.
        """
        with self._lock:
            self._closed = True
            self._end_requests()
            waiting = list(self._waiting.values())
        deadline = time.monotonic() + timeout
        for waiter in waiting:
            waiter.event.wait(max(0.0, deadline - time.monotonic()))
        return all(waiter.outcomes is not None for waiter in waiting)

    def close(self) -> None:
        """End the request stream; every send still waiting fails with :class:`ChannelClosed`."""
        with self._lock:
            self._closed = True
            self._end_requests()
            waiting, self._waiting = list(self._waiting.values()), {}
        for waiter in waiting:
            waiter.event.set()

    def _end_requests(self) -> None:
        if not self._ended:
            self._ended = True
            self._outgoing.put(None)
