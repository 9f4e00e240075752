"""Wake-ups for long polls: wait until an instance's state changes, without polling the store.

The store calls :meth:`InstanceWatcher.on_change` after each commit; a waiter re-reads
the instance only when a commit touched it (or the store was reset). A thread waits with
:meth:`InstanceWatcher.wait_for`; a task on an event loop with
:meth:`InstanceWatcher.wait_for_async`, which holds no thread while it waits, and which takes the
state a commit of this process wrote (:attr:`CommitNotice.states`) instead of reading it again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sidecar.model import InstanceSnapshot
from sidecar.store.base import CommitNotice

T = TypeVar("T")

# Upper bound of one condition wait, so a waiter notices a cancelled client or shutdown.
_RECHECK_SECONDS = 1.0


@dataclass(eq=False)
class _AsyncWaiter:
    """A task waiting on an event loop: woken through the loop, from the committing thread."""

    loop: asyncio.AbstractEventLoop
    changed: asyncio.Event
    # Whether an instance left in a status may end the wait (None: any change may).
    may_end: Callable[[int], bool] | None = None
    # The state the last commit that woke the waiter wrote (None: it did not say, read it).
    state: InstanceSnapshot | None = None

    def cares(self, changes: CommitNotice, instance_id: str) -> bool:
        """Whether a commit that touched the instance may end this wait."""
        state = changes.states.get(instance_id)
        return state is None or self.may_end is None or self.may_end(state.status)

    def wake(self, state: InstanceSnapshot | None = None) -> None:
        self.state = state
        try:
            self.loop.call_soon_threadsafe(self.changed.set)
        except RuntimeError:  # the loop is closed: the waiter is gone
            pass


class InstanceWatcher:
    """Tracks per-instance change counters for the instances someone is waiting on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._watchers: Counter[str] = Counter()
        self._epoch = 0
        self._closed = False
        self._async_waiters: dict[str, set[_AsyncWaiter]] = {}

    def on_change(self, changes: CommitNotice) -> None:
        """Store listener: bump the counters of watched instances and wake their waiters."""
        woken: list[tuple[_AsyncWaiter, InstanceSnapshot | None]] = []
        with self._cond:
            hit = changes.reset or changes.resync
            if hit:
                self._epoch += 1
                woken = [(w, None) for waiters in self._async_waiters.values() for w in waiters]
            for iid in changes.instances:
                if iid in self._watchers:
                    self._versions[iid] = self._versions.get(iid, 0) + 1
                    hit = True
                if not (changes.reset or changes.resync):
                    state = changes.states.get(iid)
                    woken.extend((w, state) for w in self._async_waiters.get(iid, ()) if w.cares(changes, iid))
            if hit:
                self._cond.notify_all()
        for waiter, state in woken:
            waiter.wake(state)

    def waiting(self) -> int:
        """How many waits are in progress (threads and tasks)."""
        with self._cond:
            return sum(self._watchers.values()) + sum(len(w) for w in self._async_waiters.values())

    def close(self) -> None:
        """Release every waiter (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            woken = [w for waiters in self._async_waiters.values() for w in waiters]
        for waiter in woken:
            waiter.wake()

    def wait_for(
        self,
        instance_id: str,
        read: Callable[[], T],
        done: Callable[[T], bool],
        timeout: float | None,
        is_active: Callable[[], bool] = lambda: True,
    ) -> T:
        """Re-read the instance after each change until ``done(value)``, the timeout, or cancellation.

        Returns the last value read; the caller checks ``done`` again to tell a timeout apart.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._watchers[instance_id] += 1
        try:
            while True:
                with self._cond:
                    version = self._versions.get(instance_id, 0)
                    epoch = self._epoch
                value = read()
                if done(value):
                    return value
                with self._cond:
                    while (
                        self._versions.get(instance_id, 0) == version
                        and self._epoch == epoch
                        and not self._closed
                    ):
                        remaining = _RECHECK_SECONDS
                        if deadline is not None:
                            remaining = min(remaining, deadline - time.monotonic())
                        if remaining <= 0:
                            return value
                        self._cond.wait(remaining)
                        if not is_active():
                            return value
                    if self._closed:
                        return value
        finally:
            with self._cond:
                self._watchers[instance_id] -= 1
                if self._watchers[instance_id] <= 0:
                    del self._watchers[instance_id]
                    self._versions.pop(instance_id, None)

    async def wait_for_async(
        self,
        instance_id: str,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        timeout: float | None,
        may_end: Callable[[int], bool] | None = None,
        value_of: Callable[[InstanceSnapshot], T] | None = None,
    ) -> T:
        """:meth:`wait_for` for an event loop: awaits changes without holding a thread.

        ``read`` is awaited (it should run the store read off the loop). Cancelling the task
        (the client went away) ends the wait. Returns the last value read, as ``wait_for`` does.
        ``may_end``: whether an instance left in a status may end the wait; a commit that left
        the instance in a status that cannot is not read again. ``value_of``: the value of a state
        written by the commit that woke the wait; a state that ends the wait is returned unread.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter = _AsyncWaiter(loop, asyncio.Event(), may_end)
        with self._cond:
            self._async_waiters.setdefault(instance_id, set()).add(waiter)
        try:
            while True:
                waiter.changed.clear()  # changes from now on wake us: the read below may miss them
                value = await read()
                if done(value) or self._closed:
                    return value
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return value
                try:
                    await asyncio.wait_for(waiter.changed.wait(), remaining)
                except asyncio.TimeoutError:
                    return value
                state, waiter.state = waiter.state, None
                if state is not None and value_of is not None and not self._closed:
                    written = value_of(state)
                    if done(written):
                        return written
        finally:
            with self._cond:
                waiters = self._async_waiters.get(instance_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._async_waiters[instance_id]
