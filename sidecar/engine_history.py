"""Which inbox events a turn may deliver, judged against what the history already holds.

Pure. A :class:`HistorySummary` counts, per resolution key, how many results the history
admits (one per scheduling event) and how many it already holds; it is built once from a
history and then extended with each turn's appended events, so a turn does not rescan the
whole history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from durabletask.internal import orchestrator_service_pb2 as pb

Key = tuple[str, int | str]

# Result kinds admitted once per scheduling event with their id (the others: once per execution).
_COUNTED_KINDS = frozenset({"task", "timer", "sub"})

_SCHEDULING_KINDS: dict[str, str] = {
    "taskScheduled": "task",
    "timerCreated": "timer",
    "subOrchestrationInstanceCreated": "sub",
}


def resolution_key(event: pb.HistoryEvent) -> Key | None:
    """Identity of an event that may occur at most once per scheduling (or execution), or None."""
    kind = event.WhichOneof("eventType")
    if kind == "taskCompleted":
        return ("task", event.taskCompleted.taskScheduledId)
    if kind == "taskFailed":
        return ("task", event.taskFailed.taskScheduledId)
    if kind == "timerFired":
        return ("timer", event.timerFired.timerId)
    if kind == "subOrchestrationInstanceCompleted":
        return ("sub", event.subOrchestrationInstanceCompleted.taskScheduledId)
    if kind == "subOrchestrationInstanceFailed":
        return ("sub", event.subOrchestrationInstanceFailed.taskScheduledId)
    if kind == "entityOperationCompleted":
        return ("entity-op", event.entityOperationCompleted.requestId)
    if kind == "entityOperationFailed":
        return ("entity-op", event.entityOperationFailed.requestId)
    if kind == "entityLockGranted":
        return ("lock", event.entityLockGranted.criticalSectionId)
    if kind == "executionStarted":
        return ("start", 0)
    return None


def scheduling_key(event: pb.HistoryEvent) -> Key | None:
    """The resolution key a scheduling event admits one result for, or None."""
    prefix = _SCHEDULING_KINDS.get(event.WhichOneof("eventType") or "")
    return None if prefix is None else (prefix, event.eventId)


class HistorySummary:
    """Results admitted and already held by a history; extend it as the history grows."""

    __slots__ = ("admitted", "used")

    def __init__(self, events: Iterable[pb.HistoryEvent] = ()) -> None:
        self.admitted: Counter[Key] = Counter()
        self.used: Counter[Key] = Counter()
        self.add(events)

    def add(self, events: Iterable[pb.HistoryEvent]) -> None:
        """Count events appended to the history."""
        for event in events:
            key = scheduling_key(event)
            if key is not None:
                self.admitted[key] += 1
                continue
            key = resolution_key(event)
            if key is not None:
                self.used[key] += 1

    def copy(self) -> HistorySummary:
        """An independent copy."""
        twin = HistorySummary()
        twin.admitted = self.admitted.copy()
        twin.used = self.used.copy()
        return twin


def select_new_events(
    past: Sequence[pb.HistoryEvent] | HistorySummary, inbox: list[pb.HistoryEvent]
) -> tuple[list[int], list[int]]:
    """Split inbox events (by index) into (deliver, drop).

    Results of activities (taskCompleted/taskFailed by taskScheduledId), timers (timerFired by
    timerId) and sub-orchestrations (by taskScheduledId) are counted against the scheduling
    events with that id in the history (``past``, its events or their summary): each
    scheduling admits one result. (The official SDK reuses an action id when it retries, so
    one id may be scheduled several times.) A result beyond that count, or for nothing
    scheduled, is dropped. Entity call results (by requestId), lock grants (by
    criticalSectionId) and executionStarted may occur once. Everything else is delivered in
    inbox order.
    """
    summary = past if isinstance(past, HistorySummary) else HistorySummary(past)
    used: Counter[Key] = Counter()
    deliver: list[int] = []
    drop: list[int] = []
    for index, event in enumerate(inbox):
        key = resolution_key(event)
        if key is not None:
            limit = summary.admitted[key] if key[0] in _COUNTED_KINDS else 1
            if summary.used[key] + used[key] >= limit:
                drop.append(index)
                continue
            used[key] += 1
        deliver.append(index)
    return deliver, drop
