"""The event-loop side of the sidecar's waits: WorkQueue.aget and InstanceWatcher.wait_for_async.

Both are woken from other threads (the dispatcher, a committing store call) without holding a
thread of their own while they wait.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from datetime import datetime, timezone

import pytest

from sidecar.model import InstanceSnapshot
from sidecar.notify import InstanceWatcher
from sidecar.store.base import CommitNotice
from sidecar.work_queue import WorkQueue


def snapshot(status: int, output: str | None = None) -> InstanceSnapshot:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    return InstanceSnapshot("i1", "e1", "orch", status, now, now, output=output)


def later(seconds: float, fn: object, *args: object) -> threading.Timer:
    timer = threading.Timer(seconds, fn, args)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_queue_keeps_order_for_blocking_and_async_readers() -> None:
    q: WorkQueue[int] = WorkQueue()
    for n in range(3):
        q.put(n)
    assert q.qsize() == 3
    assert q.get(timeout=0) == 0
    assert asyncio.run(q.aget(timeout=0)) == 1
    assert q.get(block=False) == 2
    with pytest.raises(queue.Empty):
        q.get(block=False)


def test_queue_aget_many_takes_every_waiting_item_up_to_the_limit() -> None:
    q: WorkQueue[int] = WorkQueue()

    async def read() -> list[list[int]]:
        for n in range(5):
            q.put(n)
        batches = [await q.aget_many(3, timeout=1), await q.aget_many(3, timeout=1)]
        later(0.05, q.put, 9)
        batches.append(await q.aget_many(3, timeout=10))  # waits for the next item, then returns it alone
        with pytest.raises(queue.Empty):
            await q.aget_many(3, timeout=0.01)
        return batches

    assert asyncio.run(read()) == [[0, 1, 2], [3, 4], [9]]


def test_queue_aget_is_woken_by_a_put_from_another_thread() -> None:
    q: WorkQueue[str] = WorkQueue()

    async def read() -> tuple[str, float]:
        began = time.monotonic()
        item = await q.aget(timeout=10)
        return item, time.monotonic() - began

    later(0.1, q.put, "item")
    item, waited = asyncio.run(read())
    assert item == "item" and waited < 5


def test_queue_aget_times_out_with_empty_and_forgets_the_waiter() -> None:
    q: WorkQueue[str] = WorkQueue()

    async def read() -> None:
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.05)
        task = asyncio.ensure_future(q.aget())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(read())
    assert q._waiters == []
    q.put("kept")  # nobody is woken, nothing is lost
    assert q.get(timeout=1) == "kept"


def test_queue_blocking_get_waits_for_a_put() -> None:
    q: WorkQueue[int] = WorkQueue()
    later(0.05, q.put, 7)
    assert q.get(timeout=10) == 7
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def _wait(watcher: InstanceWatcher, state: dict[str, int], timeout: float | None) -> int:
    async def read() -> int:
        return state["version"]

    return asyncio.run(watcher.wait_for_async("i1", read, lambda v: v >= 2, timeout))


def test_async_wait_re_reads_on_each_change_of_its_instance() -> None:
    watcher = InstanceWatcher()
    state = {"version": 0}

    def change(version: int) -> None:
        state["version"] = version
        watcher.on_change(CommitNotice(instances={"i1"}))

    later(0.05, change, 1)
    later(0.15, change, 2)
    assert _wait(watcher, state, timeout=10) == 2
    assert watcher.waiting() == 0


def test_async_wait_ignores_other_instances_and_times_out() -> None:
    watcher = InstanceWatcher()
    state = {"version": 0}

    def other() -> None:
        state["version"] = 5  # changed, but the notice names another instance: no re-read
        watcher.on_change(CommitNotice(instances={"i2"}))

    later(0.02, other)
    began = time.monotonic()
    assert _wait(watcher, state, timeout=0.3) == 0
    assert time.monotonic() - began >= 0.25


def test_async_wait_ends_on_reset_and_on_close() -> None:
    watcher = InstanceWatcher()
    state = {"version": 0}

    def reset() -> None:
        state["version"] = 3
        watcher.on_change(CommitNotice(reset=True))

    later(0.05, reset)
    assert _wait(watcher, state, timeout=10) == 3

    state["version"] = 0
    later(0.05, watcher.close)
    began = time.monotonic()
    assert _wait(watcher, state, timeout=10) == 0  # released, not done: the caller answers DEADLINE_EXCEEDED
    assert time.monotonic() - began < 5


def test_async_wait_is_not_woken_by_a_commit_that_left_a_status_that_cannot_end_it() -> None:
    watcher = InstanceWatcher()
    state = {"status": 0, "reads": 0}

    async def read() -> int:
        state["reads"] += 1
        return state["status"]

    def commit(status: int, known: bool = True) -> None:
        state["status"] = status
        watcher.on_change(CommitNotice(instances={"i1"}, states={"i1": snapshot(status)} if known else {}))

    def wait() -> int:
        return asyncio.run(watcher.wait_for_async("i1", read, lambda s: s == 1, 10, may_end=lambda s: s == 1))

    later(0.02, commit, 0)  # a turn that left the instance RUNNING: the completion wait stays asleep
    later(0.1, commit, 1)
    assert wait() == 1
    assert state["reads"] == 2, "read once at first, once after the commit that finished it"
    # A commit whose notice names no status (another sidecar's, a purge) wakes the wait as before.
    state.update(status=0, reads=0)
    later(0.02, commit, 0, False)
    later(0.1, commit, 1)
    assert wait() == 1
    assert state["reads"] == 3


def test_async_wait_takes_the_state_the_waking_commit_wrote_without_reading_it() -> None:
    watcher = InstanceWatcher()
    reads: list[int] = []

    async def read() -> InstanceSnapshot | None:
        reads.append(1)
        return snapshot(0)  # the store as first read: RUNNING

    def commit(state: InstanceSnapshot | None) -> None:
        watcher.on_change(CommitNotice(instances={"i1"}, states={"i1": state} if state else {}))

    def wait() -> InstanceSnapshot | None:
        return asyncio.run(watcher.wait_for_async(
            "i1", read, lambda s: s is not None and s.status == 1, 10, value_of=lambda state: state,
        ))

    later(0.05, commit, snapshot(1, '"done"'))
    final = wait()
    assert final is not None and (final.status, final.output) == (1, '"done"')
    assert len(reads) == 1, "read once at first; the finishing commit's state answered the wait"
    # A commit that did not say what it wrote (another sidecar's, a purge) is read as before.
    reads.clear()
    later(0.05, commit, None)
    later(0.15, commit, snapshot(1))
    assert wait() is not None
    assert len(reads) == 2
