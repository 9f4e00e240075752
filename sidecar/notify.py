"""Wake-ups for long polls: wait until an instance's state changes, without polling the store.

The store calls :meth:`InstanceWatcher.on_change` after each commit; a waiter re-reads
the instance only when a commit touched it (or the store was reset).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from sidecar.store.base import CommitNotice

T = TypeVar("T")

# Upper bound of one condition wait, so a waiter notices a cancelled client or shutdown.
_RECHECK_SECONDS = 1.0


class InstanceWatcher:
    """Tracks per-instance change counters for the instances someone is waiting on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._watchers: Counter[str] = Counter()
        self._epoch = 0
        self._closed = False

    def on_change(self, changes: CommitNotice) -> None:
        """Store listener: bump the counters of watched instances and wake their waiters."""
        with self._cond:
            hit = changes.reset or changes.resync
            if hit:
                self._epoch += 1
            for iid in changes.instances:
                if iid in self._watchers:
                    self._versions[iid] = self._versions.get(iid, 0) + 1
                    hit = True
            if hit:
                self._cond.notify_all()

    def close(self) -> None:
        """Release every waiter (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

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
