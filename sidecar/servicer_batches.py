"""The ``durabletask.batches.WorkBatches`` service: work items and their results in batches.

An addition of ours to the protocol (``protos/work_batches.proto``), used by our SDK's worker
only: one stream message carries every work item that was ready, and one call settles many
results of one kind in one store transaction (with those of other calls arriving meanwhile).
Each result is checked and settled as ``CompleteActivityTask`` or ``CompleteOrchestratorTask``
would settle it alone, and its outcome (status code and message) is the one that call would
have answered. ``OpenWorkChannel`` serves both on one bidirectional call: the stream's batches
go out as they are ready, and each results message is settled as its unary call would be and
answered with its outcomes, so that a result costs a stream message each way, not a call.

When one of the per-item methods has been replaced on the servicer object (tests record what it
serves), the batches go through the replacement: a replaced GetWorkItems streams batches of one
item, a replaced CompleteActivityTask or CompleteOrchestratorTask settles the results one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, NoReturn
from urllib.parse import unquote

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from sidecar.dispatch import Dispatcher
from sidecar.quoting import log_text
from sidecar.servicer_util import UNDECODABLE_DETAILS, check_stream_request, check_token, error_status
from sidecar.work_queue import WorkQueue
from sidecar.work_streams import ENVELOPE_BYTES, WorkStream

# Most work items in one stream message, and most bytes: several items share a message only up
# to gRPC's usual 4 MiB receive limit (a worker may keep it), so a larger item travels alone, as
# it would on GetWorkItems.
MAX_ITEMS_PER_BATCH = 64
MAX_BATCH_BYTES = 4 * 1024 * 1024

Status = tuple[grpc.StatusCode, str]

log = logging.getLogger("durabletask-sidecar")

_CHANNEL_STARTS = "the first message of a work channel must be 'open' (a GetWorkItemsRequest)"
_CHANNEL_OPENED = ("a work channel is opened once: after 'open' it takes only results "
                   "(activityResults or orchestratorResults)")
# Results messages of one channel settled at once; the next is read when one is answered, so a
# worker that sends faster is held back by the call's flow control rather than taking every thread.
MAX_SETTLING_PER_CHANNEL = 4
# The longest a settling results message holds back other work for its stream (seconds): a
# commit takes about a millisecond; one that waits longer lets the work go out on its own.
HOLD_FOR_OUTCOMES = 0.005


class _ItemAborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.status: Status = (code, details)


class _ItemContext:
    """The context one result of a batch is settled with: ``abort`` ends that result only."""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _ItemAborted(code, details)


class _OneItemBatches:
    """A call's context whose writes of single work items go out as batches of one."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, item: pb.WorkItem) -> None:
        await self._context.write(batches_pb.WorkItemBatch(workItems=[item]))


class BatchServicer:
    """The aio handlers of the WorkBatches service.

    ``servicer_of`` gives the sidecar's servicer (``sidecar.server.SidecarServicer``): its
    dispatcher, and its CompleteOrchestratorTask for each turn; ``per_item`` serves its
    GetWorkItems on the event loop (``sidecar.transport.AsyncServicer``). Store work runs on
    ``pool``.
    """

    def __init__(self, servicer_of: Callable[[], Any], per_item: Any, pool: Executor) -> None:
        self._servicer_of = servicer_of
        self._per_item = per_item
        self._pool = pool

    def _replaced(self, rpc: str) -> bool:
        return rpc in vars(self._servicer_of())

    def _dispatcher(self) -> Dispatcher:
        dispatcher: Dispatcher = self._servicer_of().dispatcher
        return dispatcher

    async def GetWorkItemBatches(self, request: pb.GetWorkItemsRequest, context: grpc.aio.ServicerContext) -> None:
        await check_stream_request(request, context, "GetWorkItemBatches")
        if self._replaced("GetWorkItems"):
            await self._per_item.GetWorkItems(request, _OneItemBatches(context))
            return
        dispatcher = self._dispatcher()
        stream = dispatcher.open_stream(request)
        try:
            async for batch in self._work_batches(stream):
                await context.write(batch)
        finally:
            dispatcher.close_stream(stream)  # a no-op when the iteration ended it

    async def _work_batches(self, stream: WorkStream) -> AsyncIterator[batches_pb.WorkItemBatch]:
        """The stream's work items as batch messages, each within the message limit."""
        dispatcher = self._dispatcher()
        batches = dispatcher.aiterate_batches(stream, MAX_ITEMS_PER_BATCH)
        try:
            async for items in batches:
                for part in split_batch(items, self._batch_limit()):
                    yield batches_pb.WorkItemBatch(workItems=part)
        finally:
            await batches.aclose()  # closes the stream (a no-op when the iteration ended it)

    def _batch_limit(self) -> int:
        """The most bytes of work items one message carries."""
        return min(self._dispatcher().options.max_message_size or MAX_BATCH_BYTES, MAX_BATCH_BYTES)

    async def OpenWorkChannel(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        writing = asyncio.Lock()  # one write at a time: batches, outcomes and the call's status
        first = await self._channel_read(context, writing)
        if first is grpc.aio.EOF or first.WhichOneof("message") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _CHANNEL_STARTS)
        await check_stream_request(first.open, context, "OpenWorkChannel")
        if any(self._replaced(rpc) for rpc in ("GetWorkItems", "CompleteActivityTask", "CompleteOrchestratorTask")):
            # A servicer that records what it serves: the worker falls back to the calls it replaced.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "work channels are not served here")
        dispatcher = self._dispatcher()
        stream = dispatcher.open_stream(first.open)
        with_outcomes = first.readsWorkWithOutcomes

        async def write(reply: batches_pb.ChannelReply) -> None:
            async with writing:
                await context.write(reply)

        async def send_work() -> None:
            # The first message says how large a message the sidecar takes, so that the worker
            # sends a larger batch of results one by one instead of ending the call with it.
            limit = dispatcher.options.max_message_size or 0
            async for batch in self._work_batches(stream):
                await write(batches_pb.ChannelReply(workItems=batch, maxMessageBytes=limit))
                limit = 0

        async def answer(reply: batches_pb.ChannelReply) -> None:
            """Write outcomes, with the work items ready for the stream (see ``readyWork``)."""
            async with writing:
                ready = [] if stream.closed else stream.queue.take_ready(MAX_ITEMS_PER_BATCH, stop=_ends_stream)
                items = [item for item in ready if item is not None]  # stops before the end: none is
                for message in with_ready_work(reply, items, self._batch_limit()):
                    await context.write(message)

        async def settle(request: batches_pb.ChannelRequest) -> None:
            kind = request.WhichOneof("message")
            results: list[Any] = list(getattr(request, kind).results)
            complete = self.complete_activities if kind == "activityResults" else self.complete_turns
            loop = asyncio.get_running_loop()
            release = hold_for_outcomes(stream.queue, loop) if with_outcomes else None
            try:
                try:
                    outcomes = await loop.run_in_executor(self._pool, complete, results)
                except Exception as exc:  # the pool is shutting down: the worker sends each again by itself
                    outcomes = _outcomes([(grpc.StatusCode.UNAVAILABLE, f"not settled: {exc}")] * len(results))
                reply = batches_pb.ChannelReply(outcomes=outcomes, callId=request.callId)
                await (answer(reply) if with_outcomes else write(reply))
            finally:
                if release is not None:
                    release()

        work = asyncio.ensure_future(send_work())
        reading: asyncio.Future[Any] | None = None
        settling: set[asyncio.Future[None]] = set()
        try:
            while True:
                if len(settling) >= MAX_SETTLING_PER_CHANNEL:
                    await asyncio.wait(settling, return_when=asyncio.FIRST_COMPLETED)
                reading = asyncio.ensure_future(self._channel_read(context, writing))
                await asyncio.wait({reading, work}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():  # the stream ended (the sidecar stops, or the stream was replaced)
                    break
                request = reading.result()
                if request is grpc.aio.EOF:  # the worker is done sending: answer what it sent, then end
                    # It is stopping: no new work goes to it (not even the work its results make),
                    # and what it holds goes back to the queue after the grace period.
                    dispatcher.close_stream(stream)
                    break
                if request.WhichOneof("message") not in ("activityResults", "orchestratorResults"):
                    async with writing:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _CHANNEL_OPENED)
                task = asyncio.ensure_future(settle(request))
                settling.add(task)
                task.add_done_callback(settling.discard)
            if settling:
                await asyncio.gather(*settling)
            if work.done():
                work.result()
        finally:
            # Under the write lock: a write cut short would leave gRPC unable to send the status.
            async with writing:
                others = [future for future in (work, reading, *settling) if future is not None]
                for future in others:
                    future.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            dispatcher.close_stream(stream)  # a no-op when the batches' iteration closed it

    @staticmethod
    async def _channel_read(context: grpc.aio.ServicerContext, writing: asyncio.Lock) -> Any:
        """The next request of a channel (or EOF); a message that did not parse ends the call with INTERNAL.

        The status is sent under ``writing``: gRPC refuses to send it while a write is in flight.
        """
        request = await context.read()
        if request is not grpc.aio.EOF and not isinstance(request, batches_pb.ChannelRequest):
            log.warning("undecodable message on OpenWorkChannel from %s; answered INTERNAL",
                        log_text(unquote(context.peer())))
            async with writing:
                await context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE_DETAILS)
        return request

    async def CompleteActivityTasks(
        self, request: batches_pb.ActivityResultBatch, context: grpc.aio.ServicerContext
    ) -> batches_pb.CompletionOutcomes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.complete_activities, list(request.results))

    async def CompleteOrchestratorTasks(
        self, request: batches_pb.OrchestratorResultBatch, context: grpc.aio.ServicerContext
    ) -> batches_pb.CompletionOutcomes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.complete_turns, list(request.results))

    def complete_activities(self, results: list[pb.ActivityResponse]) -> batches_pb.CompletionOutcomes:
        """Settle activity ``results`` together; one outcome per result, in order."""
        return self._together("CompleteActivityTask", results, self._dispatcher().complete_activities)

    def complete_turns(self, results: list[pb.OrchestratorResponse]) -> batches_pb.CompletionOutcomes:
        """Settle orchestration turns together; one outcome per turn, in order."""
        return self._together("CompleteOrchestratorTask", results, self._dispatcher().complete_orchestrations)

    def _together(
        self, rpc: str, results: list[Any], settle: Callable[[list[Any]], list[Exception | None]]
    ) -> batches_pb.CompletionOutcomes:
        """Check each result as ``rpc`` would, then settle the good ones in one go (``settle``)."""
        if self._replaced(rpc):
            return self._one_by_one(rpc, results)
        outcomes: list[Status | None] = [None] * len(results)
        valid: list[int] = []
        for i, result in enumerate(results):
            try:
                check_token(result.completionToken)
                valid.append(i)
            except Exception as exc:
                outcomes[i] = error_status(exc, rpc)
        errors: list[Exception | None]
        try:
            errors = settle([results[i] for i in valid])
        except Exception as exc:  # not expected (the dispatcher reports errors per result): each reports it
            errors = [exc] * len(valid)
        for i, error in zip(valid, errors, strict=True):
            if error is not None:
                outcomes[i] = error_status(error, rpc)
        return _outcomes(outcomes)

    def _one_by_one(self, rpc: str, results: list[Any]) -> batches_pb.CompletionOutcomes:
        method = getattr(self._servicer_of(), rpc)
        outcomes: list[Status | None] = []
        for result in results:
            try:
                method(result, _ItemContext())
                outcomes.append(None)
            except _ItemAborted as aborted:
                outcomes.append(aborted.status)
            except Exception as exc:
                outcomes.append(error_status(exc, rpc))
        return _outcomes(outcomes)


def with_ready_work(
    reply: batches_pb.ChannelReply, items: list[pb.WorkItem], max_bytes: int
) -> list[batches_pb.ChannelReply]:
    """An outcomes ``reply`` carrying the first of ``items`` that fit in ``max_bytes`` with it (its
    ``readyWork``), then the others in work-item messages of their own, in order."""
    budget, taken = max_bytes - reply.ByteSize() - ENVELOPE_BYTES, 0
    for item in items:
        budget -= item.ByteSize() + ENVELOPE_BYTES
        if budget < 0:
            break
        taken += 1
    if taken:
        reply.readyWork.workItems.extend(items[:taken])
    rest = split_batch(items[taken:], max_bytes) if taken < len(items) else []
    return [reply, *(batches_pb.ChannelReply(workItems=batches_pb.WorkItemBatch(workItems=part)) for part in rest)]


def hold_for_outcomes(queue: WorkQueue[Any], loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Hold a stream's ``queue`` while results settle, so that the work they make goes out with
    their outcomes; at most :data:`HOLD_FOR_OUTCOMES` seconds, so that a slow settle does not keep
    other work for the stream waiting. Returns the release (a second call does nothing)."""
    queue.hold()
    held = True

    def release() -> None:
        nonlocal held
        if held:
            held = False
            timer.cancel()
            queue.release()

    timer = loop.call_later(HOLD_FOR_OUTCOMES, release)
    return release


def _ends_stream(item: pb.WorkItem | None) -> bool:
    return item is None


def split_batch(items: list[pb.WorkItem], max_bytes: int | None) -> list[list[pb.WorkItem]]:
    """``items`` in consecutive batches whose messages stay under ``max_bytes`` (one batch when None).

    Each item fits alone (the dispatcher sends no larger one), so no batch is empty.
    """
    if max_bytes is None:
        return [items]
    parts: list[list[pb.WorkItem]] = [[]]
    size = 0
    for item in items:
        grows = item.ByteSize() + ENVELOPE_BYTES
        if parts[-1] and size + grows > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += grows
    return parts


def _outcomes(statuses: list[Status | None]) -> batches_pb.CompletionOutcomes:
    return batches_pb.CompletionOutcomes(outcomes=[_outcome(status) for status in statuses])


def _outcome(status: Status | None) -> batches_pb.CompletionOutcome:
    if status is None:
        return batches_pb.CompletionOutcome(code=grpc.StatusCode.OK.value[0])
    code, message = status
    return batches_pb.CompletionOutcome(code=code.value[0], message=message)


__all__ = ["HOLD_FOR_OUTCOMES", "MAX_ITEMS_PER_BATCH", "BatchServicer", "hold_for_outcomes", "split_batch", "with_ready_work"]
