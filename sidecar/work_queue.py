"""A FIFO queue that any thread feeds and that a blocked thread or an asyncio task reads.

Each GetWorkItems stream has one: the dispatcher thread puts work items (and ``None`` for the
end) into it; the stream's RPC, served on the sidecar's event loop, awaits :meth:`WorkQueue.aget`
without holding a thread. :meth:`WorkQueue.get` keeps the blocking interface of ``queue.Queue``
for synchronous readers.

A reader that is about to send something of its own may :meth:`~WorkQueue.hold` the queue: items
put meanwhile wake no asyncio reader, so that the holder can take them with
:meth:`~WorkQueue.take_ready` and send them in its own message; the last :meth:`~WorkQueue.release`
wakes the readers for whatever it left.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WorkQueue(Generic[T]):
    """Thread-safe FIFO with a blocking ``get`` and an awaitable ``aget``; ``queue.Empty`` on timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        # Tasks awaiting an item: (their loop, the future that wakes them).
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._holds = 0

    def put(self, item: T) -> None:
        """Append ``item`` and wake a reader (from any thread, or from a reader's event loop).

        While the queue is held, an asyncio reader is not woken (a holder takes the item).
        """
        with self._lock:
            self._items.append(item)
            self._ready.notify()
            if self._holds:
                return
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: that reader is gone
                pass

    def hold(self) -> None:
        """Until the matching :meth:`release`, items put wake no asyncio reader."""
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        """End one :meth:`hold`; the last one wakes the readers when items wait."""
        with self._lock:
            self._holds -= 1
            if self._holds or not self._items:
                return
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    def take_ready(self, limit: int, stop: Callable[[T], bool] = lambda item: False) -> list[T]:
        """The items waiting, at most ``limit``, up to the first for which ``stop`` is true; never waits."""
        taken: list[T] = []
        with self._lock:
            while self._items and len(taken) < limit and not stop(self._items[0]):
                taken.append(self._items.popleft())
        return taken

    def qsize(self) -> int:
        """How many items wait to be read."""
        with self._lock:
            return len(self._items)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next item; waits up to ``timeout`` seconds (forever for None) unless ``block`` is False."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._items), timeout if block else 0):
                raise queue.Empty
            return self._items.popleft()

    async def aget(self, timeout: float | None = None) -> T:
        """The next item, awaited on the running loop for up to ``timeout`` seconds (forever for None)."""
        return (await self.aget_many(1, timeout))[0]

    async def aget_many(self, limit: int, timeout: float | None = None) -> list[T]:
        """The next items, at least one and at most ``limit``: every item waiting, without waiting for more.

        Awaited on the running loop for up to ``timeout`` seconds (forever for None).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                if self._items:
                    return [self._items.popleft() for _ in range(min(limit, len(self._items)))]
                if deadline is not None and loop.time() >= deadline:
                    raise queue.Empty
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            timer = None if deadline is None else loop.call_at(deadline, _resolve, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))
