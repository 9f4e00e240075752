"""Non-blocking admission control for the worker: concurrency caps and per-key ordering.

Both classes hand work out through ``start`` callbacks and keep what cannot start
yet in order; neither ever blocks the thread that submits. What is still waiting
when the worker stops is returned by ``drain()`` so it can be handed back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pending:
    """A unit of work that has not started: how to start it, and how to give it back."""

    start: Callable[[], None]
    abandon: Callable[[], None]


class WorkLimiter:
    """Lets at most ``limit`` jobs run at once; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, not {limit}")
        self._limit = limit
        self._running = 0
        self._waiting: deque[Pending] = deque()
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def submit(self, job: Pending) -> None:
        """Start ``job`` now if a slot is free, otherwise queue it. The job must call ``release``."""
        with self._lock:
            if self._running >= self._limit:
                self._waiting.append(job)
                return
            self._running += 1
        job.start()

    def release(self) -> None:
        """A running job finished: its slot goes to the next waiting job, if any."""
        with self._lock:
            if self._waiting:
                successor: Pending | None = self._waiting.popleft()
            else:
                successor = None
                self._running = max(0, self._running - 1)
        if successor is not None:
            successor.start()

    def drain(self) -> list[Pending]:
        """Remove and return every job that has not started."""
        with self._lock:
            drained = list(self._waiting)
            self._waiting.clear()
        return drained


class KeyedSequencer:
    """Runs jobs sharing a key one after another, in arrival order; other keys are independent."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[Pending]] = {}
        self._lock = threading.Lock()

    def is_active(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._queues

    def submit(self, key: Hashable, job: Pending) -> None:
        """Start ``job`` unless a job with the same key is active; then it waits its turn."""
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque()
        job.start()

    def finish(self, key: Hashable) -> None:
        """The active job of ``key`` is done: start the next one with that key."""
        with self._lock:
            queue = self._queues.get(key)
            if queue:
                successor: Pending | None = queue.popleft()
            else:
                successor = None
                self._queues.pop(key, None)
        if successor is not None:
            successor.start()

    def drain(self) -> list[Pending]:
        """Remove and return every queued (not active) job."""
        with self._lock:
            drained = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
        return drained
