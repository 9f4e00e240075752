"""Histories this sidecar read or wrote lately, so that a turn reads only what is new.

A cached :class:`HistoryView` is never trusted blindly: before each use the store is asked for
the history's key (new whenever a history starts over: the instance was created again, or its
history replaced by a rewind or a continue-as-new) and for the rows from the view's last
sequence number on. With the same key, the history only grew, by appends numbered after the
view's last event: the rows after it are what was appended since (by this sidecar or another
one). Otherwise the history is read again in full. Correctness never depends on the cache,
only the cost of a turn does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_history import HistorySummary
from sidecar.store.base import StoreTx

DEFAULT_CAPACITY = 1000  # instances
DEFAULT_MAX_EVENTS = 500_000  # events over all cached views
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # encoded size of the events over all cached views


@dataclass(frozen=True)
class HistoryView:
    """One execution's stored history: its key, its events, the number of the first, and their summary."""

    key: str | None
    execution_id: str
    first_seq: int
    events: tuple[pb.HistoryEvent, ...]
    summary: HistorySummary
    size: int = -1  # encoded bytes of the events (-1: count them)

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", sum(event.ByteSize() for event in self.events))

    @classmethod
    def of(cls, key: str | None, execution_id: str, rows: Sequence[tuple[int, pb.HistoryEvent]]) -> HistoryView:
        """The view of a history read in full."""
        events = tuple(event for _, event in rows)
        return cls(key, execution_id, rows[0][0] if rows else 0, events, HistorySummary(events))

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended event gets."""
        return self.first_seq + len(self.events)

    def extended(self, events: Sequence[pb.HistoryEvent]) -> HistoryView:
        """This view with ``events`` appended."""
        if not events:
            return self
        summary = self.summary.copy()
        summary.add(events)
        size = self.size + sum(event.ByteSize() for event in events)
        return HistoryView(self.key, self.execution_id, self.first_seq, self.events + tuple(events), summary, size)


class HistoryCache:
    """A bounded, least-recently-used map of instance ID -> :class:`HistoryView`."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._views: OrderedDict[str, HistoryView] = OrderedDict()
        self._events = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._views)

    @property
    def event_count(self) -> int:
        """Events held over all views."""
        return self._events

    @property
    def byte_count(self) -> int:
        """Encoded bytes of the events held over all views."""
        return self._bytes

    def load(self, tx: StoreTx, instance_id: str, execution_id: str) -> HistoryView:
        """The instance's stored history as of ``tx``: the cached view plus what was appended, or read in full."""
        with self._lock:
            cached = self._views.get(instance_id)
        key = tx.history_key(instance_id)
        # A history without a key (written by a sidecar older than the key) is read in full.
        if (cached is not None and key is not None and cached.key == key and cached.execution_id == execution_id
                and cached.events):
            last = cached.next_seq - 1
            rows = tx.history_rows(instance_id, last)
            if rows and rows[0][0] == last:
                return cached.extended([event for _, event in rows[1:]])
        return HistoryView.of(key, execution_id, tx.history_rows(instance_id))

    def put(self, instance_id: str, view: HistoryView) -> None:
        """Remember ``view`` (after the transaction that read or wrote it committed)."""
        if self.capacity <= 0 or len(view.events) > self.max_events or view.size > self.max_bytes:
            self.discard(instance_id)
            return
        with self._lock:
            old = self._views.pop(instance_id, None)
            if old is not None:
                self._events -= len(old.events)
                self._bytes -= old.size
            self._views[instance_id] = view
            self._events += len(view.events)
            self._bytes += view.size
            while self._views and (
                len(self._views) > self.capacity or self._events > self.max_events or self._bytes > self.max_bytes
            ):
                _, evicted = self._views.popitem(last=False)
                self._events -= len(evicted.events)
                self._bytes -= evicted.size

    def discard(self, instance_id: str) -> None:
        """Forget the instance's view."""
        with self._lock:
            old = self._views.pop(instance_id, None)
            if old is not None:
                self._events -= len(old.events)
                self._bytes -= old.size

    def clear(self) -> None:
        """Forget every view."""
        with self._lock:
            self._views.clear()
            self._events = 0
            self._bytes = 0
