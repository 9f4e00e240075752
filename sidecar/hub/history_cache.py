"""Histories this sidecar read or wrote lately, so that a turn reads only what is new.

A cached :class:`HistoryView` is never trusted blindly: before each use the store is asked for
the history's key (new whenever a history starts over: the instance was created again, or its
history replaced by a rewind or a continue-as-new) and for the rows from the view's last
sequence number on. With the same key, the history only grew, by appends numbered after the
view's last event: the rows after it are what was appended since (by this sidecar or another
one). Otherwise the history is read again in full. Correctness never depends on the cache,
only the cost of a turn does.

The cache also notes, per instance, the last turn applied to its history (:class:`TurnNote`,
written inside the turn's transaction): which lease token it was, and how many of the events
stored after it the token's worker had processed. A turn built from a history whose tail is
exactly that turn's events names its predecessor (:meth:`HistoryCache.prior_turn`), so that the
worker that ran it is sent only what it has not seen even before the sidecar settled that turn.
A note is checked against the history like a view is, event for event, and never trusted on
its own: a note of a turn whose transaction failed matches no stored history.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import overload

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_history import HistorySummary
from sidecar.store.base import StoreTx

DEFAULT_CAPACITY = 1000  # instances
DEFAULT_MAX_EVENTS = 500_000  # events over all cached views
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # encoded size of the events over all cached views


# Held while a list shared by views is extended (see HistoryEvents.plus).
_APPEND_LOCK = threading.Lock()


class HistoryEvents(Sequence[pb.HistoryEvent]):
    """The first ``len(self)`` events of a list that only grows, which the views extended from
    one another share: extending a view costs what is appended, not the whole history.

    Never changes once made: events appended to the list beyond its length are not its. A view
    extended from one that is not the list's last (a turn whose transaction failed extended it
    first) gets a list of its own.
    """

    __slots__ = ("_items", "_length")

    def __init__(self, events: Iterable[pb.HistoryEvent] = ()) -> None:
        self._items = list(events)
        self._length = len(self._items)

    @classmethod
    def _sharing(cls, items: list[pb.HistoryEvent], length: int) -> HistoryEvents:
        view = cls.__new__(cls)
        view._items = items
        view._length = length
        return view

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> pb.HistoryEvent: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[pb.HistoryEvent, ...]: ...

    def __getitem__(self, index: int | slice) -> pb.HistoryEvent | tuple[pb.HistoryEvent, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step == 1:
                return tuple(self._items[start:stop])
            return tuple(self._items[i] for i in range(start, stop, step))
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError("history event index out of range")
        return self._items[position]

    def __iter__(self) -> Iterator[pb.HistoryEvent]:
        return islice(self._items, self._length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (HistoryEvents, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HistoryEvents({list(self)!r})"

    def plus(self, events: Sequence[pb.HistoryEvent]) -> HistoryEvents:
        """These events and then ``events``."""
        if not events:
            return self
        with _APPEND_LOCK:
            if len(self._items) == self._length:
                self._items.extend(events)
                return HistoryEvents._sharing(self._items, self._length + len(events))
        items = self._items[: self._length]
        items.extend(events)
        return HistoryEvents._sharing(items, len(items))


@dataclass(frozen=True)
class HistoryView:
    """One execution's stored history: its key, its events, the number of the first, and their summary."""

    key: str | None
    execution_id: str
    first_seq: int
    events: HistoryEvents
    summary: HistorySummary
    size: int = -1  # encoded bytes of the events (-1: count them)

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", sum(event.ByteSize() for event in self.events))

    @classmethod
    def of(cls, key: str | None, execution_id: str, rows: Sequence[tuple[int, pb.HistoryEvent]]) -> HistoryView:
        """The view of a history read in full."""
        events = HistoryEvents(event for _, event in rows)
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
        return HistoryView(self.key, self.execution_id, self.first_seq, self.events.plus(events), summary, size)


@dataclass(frozen=True)
class TurnNote:
    """A turn applied to a history: its token, where its events start, the events it appended,
    and how many of them its worker had processed (its new events: the rest are its actions'
    records and the closing ``orchestratorCompleted``)."""

    token: str
    key: str | None
    execution_id: str
    first_seq: int
    start: int  # index in the history's events of the turn's first appended event
    appended: tuple[pb.HistoryEvent, ...]
    delivered: int  # of ``appended``, the turn's new events

    @property
    def seen(self) -> int:
        """Events the turn's worker had processed when it answered: its past and new events."""
        return self.start + self.delivered

    def tail_of(self, view: HistoryView) -> bool:
        """Whether ``view`` is the history this turn left: the same history, ending in exactly its events."""
        return (
            self.key is not None and view.key == self.key and view.execution_id == self.execution_id
            and view.first_seq == self.first_seq and len(view.events) == self.start + len(self.appended)
            and view.events[self.start:] == self.appended
        )


class HistoryCache:
    """A bounded, least-recently-used map of instance ID -> :class:`HistoryView`."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._views: OrderedDict[str, HistoryView] = OrderedDict()
        self._turns: OrderedDict[str, TurnNote] = OrderedDict()
        # The views turns out on leases were built from, by token (within the same bounds): while
        # its token holds, nothing else appends to an instance's history, so the turn's commit
        # needs no read to check the view.
        self._leased: OrderedDict[str, HistoryView] = OrderedDict()
        self._leased_events = 0
        self._leased_bytes = 0
        self._noted = 0  # events held by the notes (mostly the same objects as the views')
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
            self._drop_view(instance_id)
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

    def lease(self, token: str, view: HistoryView) -> None:
        """Remember the view the turn held by ``token`` was built from (after its lease committed)."""
        if self.capacity <= 0 or len(view.events) > self.max_events or view.size > self.max_bytes:
            return
        with self._lock:
            self._leased[token] = view
            self._leased_events += len(view.events)
            self._leased_bytes += view.size
            while self._leased and (
                len(self._leased) > self.capacity or self._leased_events > self.max_events
                or self._leased_bytes > self.max_bytes
            ):
                _, evicted = self._leased.popitem(last=False)
                self._leased_events -= len(evicted.events)
                self._leased_bytes -= evicted.size

    def leased_view(self, token: str) -> HistoryView | None:
        """The view the turn held by ``token`` was built from, if remembered (then forgotten)."""
        with self._lock:
            view = self._leased.pop(token, None)
            if view is not None:
                self._leased_events -= len(view.events)
                self._leased_bytes -= view.size
            return view

    def note_turn(self, instance_id: str, note: TurnNote) -> None:
        """Note the last turn applied to the instance's history (inside that turn's transaction)."""
        if self.capacity <= 0 or len(note.appended) > self.max_events:
            self._forget_turn(instance_id)
            return
        with self._lock:
            old = self._turns.pop(instance_id, None)
            if old is not None:
                self._noted -= len(old.appended)
            self._turns[instance_id] = note
            self._noted += len(note.appended)
            while self._turns and (len(self._turns) > self.capacity or self._noted > self.max_events):
                _, evicted = self._turns.popitem(last=False)
                self._noted -= len(evicted.appended)

    def _forget_turn(self, instance_id: str) -> None:
        with self._lock:
            old = self._turns.pop(instance_id, None)
            if old is not None:
                self._noted -= len(old.appended)

    def prior_turn(self, instance_id: str, view: HistoryView) -> TurnNote | None:
        """The noted turn whose events end ``view`` (the history as a transaction reads it), or None."""
        with self._lock:
            note = self._turns.get(instance_id)
        return note if note is not None and note.tail_of(view) else None

    def discard(self, instance_id: str) -> None:
        """Forget the instance's view and turn note."""
        self._forget_turn(instance_id)
        self._drop_view(instance_id)

    def _drop_view(self, instance_id: str) -> None:
        with self._lock:
            old = self._views.pop(instance_id, None)
            if old is not None:
                self._events -= len(old.events)
                self._bytes -= old.size

    def clear(self) -> None:
        """Forget every view."""
        with self._lock:
            self._views.clear()
            self._turns.clear()
            self._leased.clear()
            self._leased_events = 0
            self._leased_bytes = 0
            self._noted = 0
            self._events = 0
            self._bytes = 0
