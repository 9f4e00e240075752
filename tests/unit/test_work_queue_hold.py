"""WorkQueue.hold/release/take_ready, and packing ready work items with outcomes (with_ready_work).

A held queue wakes no asyncio reader on put, so that the holder (a work channel about to send
outcomes) can take the items and send them in its own message; the last release wakes the readers
for what is left.
"""

from __future__ import annotations

import asyncio

from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from sidecar.servicer_batches import HOLD_FOR_OUTCOMES, hold_for_outcomes, with_ready_work
from sidecar.work_queue import WorkQueue
from sidecar.work_streams import ENVELOPE_BYTES


async def _let_the_loop_run() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_held_queue_wakes_no_reader_and_the_holder_takes_the_items() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        q: WorkQueue[str] = WorkQueue()
        reader = asyncio.ensure_future(q.aget_many(10))
        await _let_the_loop_run()  # the reader waits
        q.hold()
        await loop.run_in_executor(None, q.put, "a")  # from another thread, as the dispatcher's
        await _let_the_loop_run()
        assert not reader.done(), "a put while held woke the reader"
        assert q.take_ready(10) == ["a"]
        q.release()  # nothing left: still no wake-up
        await _let_the_loop_run()
        assert not reader.done()
        await loop.run_in_executor(None, q.put, "b")  # not held: wakes at once
        assert await asyncio.wait_for(reader, 5) == ["b"]

    asyncio.run(scenario())


def test_the_last_release_wakes_the_readers_for_what_is_left() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        reader = asyncio.ensure_future(q.aget_many(10))
        await _let_the_loop_run()
        q.hold()
        q.hold()
        q.put("a")
        q.release()  # one hold remains
        await _let_the_loop_run()
        assert not reader.done()
        q.release()
        assert await asyncio.wait_for(reader, 5) == ["a"]

    asyncio.run(scenario())


def test_a_settle_holds_the_queue_for_a_bounded_time_only() -> None:
    """A results message that takes long to settle lets the other work of its stream go after
    HOLD_FOR_OUTCOMES; releasing it afterwards changes nothing."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        q: WorkQueue[str] = WorkQueue()
        reader = asyncio.ensure_future(q.aget_many(10))
        await _let_the_loop_run()
        release = hold_for_outcomes(q, loop)
        started = loop.time()
        await loop.run_in_executor(None, q.put, "a")
        await _let_the_loop_run()
        assert not reader.done(), "held: the item waits for the outcomes"
        assert await asyncio.wait_for(reader, 5) == ["a"]
        assert loop.time() - started >= HOLD_FOR_OUTCOMES * 0.9
        release()
        release()
        second = asyncio.ensure_future(q.aget_many(10))
        await _let_the_loop_run()
        q.put("b")  # not held any more (the releases did not count twice)
        assert await asyncio.wait_for(second, 5) == ["b"]

    asyncio.run(scenario())


def test_take_ready_never_waits_and_stops_at_the_limit_and_at_the_stop_item() -> None:
    q: WorkQueue[str | None] = WorkQueue()
    assert q.take_ready(5) == []
    for item in ("a", "b", "c", None, "d"):
        q.put(item)
    assert q.take_ready(2, stop=lambda item: item is None) == ["a", "b"]
    assert q.take_ready(5, stop=lambda item: item is None) == ["c"]
    assert q.take_ready(5, stop=lambda item: item is None) == []  # the end stays for the stream
    assert q.get(timeout=1) is None and q.take_ready(5) == ["d"]


def _item(n: int, size: int) -> pb.WorkItem:
    request = pb.ActivityRequest(name="a", taskId=n, input=wrappers_pb2.StringValue(value="x" * size))
    return pb.WorkItem(activityRequest=request,
                       completionToken=str(n))



def _outcomes(call_id: int) -> batches_pb.ChannelReply:
    return batches_pb.ChannelReply(
        outcomes=batches_pb.CompletionOutcomes(outcomes=[batches_pb.CompletionOutcome(code=0)]), callId=call_id)


def test_ready_work_that_fits_goes_with_the_outcomes_and_the_rest_after_in_order() -> None:
    limit = 10_000
    items = [_item(n, 3_000) for n in range(6)]
    messages = with_ready_work(_outcomes(7), items, limit)
    first, *rest = messages
    assert first.WhichOneof("message") == "outcomes" and first.callId == 7
    assert 0 < len(first.readyWork.workItems) < len(items)
    assert all(m.WhichOneof("message") == "workItems" for m in rest) and rest
    sent = [*first.readyWork.workItems, *(i for m in rest for i in m.workItems.workItems)]
    assert sent == items, "every item once, in order"
    assert all(m.ByteSize() + ENVELOPE_BYTES <= limit for m in messages)


def test_an_item_too_large_to_go_with_the_outcomes_goes_in_a_message_of_its_own() -> None:
    big = _item(1, 9_900)
    messages = with_ready_work(_outcomes(1), [big], 10_000)
    assert [m.WhichOneof("message") for m in messages] == ["outcomes", "workItems"]
    assert not messages[0].HasField("readyWork") and list(messages[1].workItems.workItems) == [big]


def test_no_ready_work_is_the_outcomes_alone() -> None:
    reply = _outcomes(3)
    assert with_ready_work(reply, [], 10_000) == [reply] and not reply.HasField("readyWork")
