"""An instance's history as a readable timeline: when, what, and how long each step took."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durabletask import history as h
from durabletask.cli.output import format_duration, shorten, table
from durabletask.client import OrchestrationStatus
from durabletask.task import FailureDetails

# Bookkeeping events of every turn; shown only with --all.
TURN_MARKERS = (h.OrchestratorStartedEvent, h.OrchestratorCompletedEvent)


@dataclass
class TimelineRow:
    """One line of the timeline."""

    time: datetime
    event: str
    details: str


def _failure(details: FailureDetails | None) -> str:
    if details is None:
        return "failed"
    return shorten(f"{details.error_type}: {details.message}", 80)


def _took(start: datetime | None, end: datetime) -> str:
    return f" (took {format_duration(end - start)})" if start is not None else ""


class _Timeline:
    """Walks the events once, remembering when each task started so completions show durations."""

    def __init__(self) -> None:
        self.scheduled: dict[int, tuple[str, datetime]] = {}
        self.entity_requests: dict[str, tuple[str, datetime]] = {}
        self.started_at: datetime | None = None

    def _task(self, task_id: int) -> tuple[str, datetime | None]:
        name, at = self.scheduled.get(task_id, ("?", None))
        return f"#{task_id} {name}", at

    def describe(self, e: h.HistoryEvent) -> tuple[str, str]:
        """The event's label and details."""
        t = e.timestamp
        if isinstance(e, h.ExecutionStartedEvent):
            self.started_at = t
            version = f" v{e.version}" if e.version else ""
            return "started", f"{e.name}{version} input={shorten(e.input)}"
        if isinstance(e, h.ExecutionCompletedEvent):
            status = OrchestrationStatus(e.orchestration_status).name.lower()
            outcome = _failure(e.failure_details) if e.failure_details else f"output={shorten(e.result)}"
            return status, f"{outcome}{_took(self.started_at, t)}"
        if isinstance(e, h.TaskScheduledEvent):
            self.scheduled[e.event_id] = (e.name, t)
            return "activity scheduled", f"#{e.event_id} {e.name} input={shorten(e.input)}"
        if isinstance(e, h.TaskCompletedEvent):
            name, at = self._task(e.task_scheduled_id)
            return "activity completed", f"{name} result={shorten(e.result)}{_took(at, t)}"
        if isinstance(e, h.TaskFailedEvent):
            name, at = self._task(e.task_scheduled_id)
            return "activity failed", f"{name} {_failure(e.failure_details)}{_took(at, t)}"
        if isinstance(e, h.SubOrchestrationInstanceCreatedEvent):
            self.scheduled[e.event_id] = (e.name, t)
            return "sub-orchestration started", f"#{e.event_id} {e.name} id={e.instance_id} input={shorten(e.input)}"
        if isinstance(e, h.SubOrchestrationInstanceCompletedEvent):
            name, at = self._task(e.task_scheduled_id)
            return "sub-orchestration completed", f"{name} result={shorten(e.result)}{_took(at, t)}"
        if isinstance(e, h.SubOrchestrationInstanceFailedEvent):
            name, at = self._task(e.task_scheduled_id)
            return "sub-orchestration failed", f"{name} {_failure(e.failure_details)}{_took(at, t)}"
        if isinstance(e, h.TimerCreatedEvent):
            self.scheduled[e.event_id] = ("timer", t)
            return "timer created", f"#{e.event_id} fires at {e.fire_at:%Y-%m-%d %H:%M:%S}"
        if isinstance(e, h.TimerFiredEvent):
            _, at = self._task(e.timer_id)
            return "timer fired", f"#{e.timer_id}{_took(at, t).replace('took', 'waited')}"
        return self._describe_other(e)

    def _describe_other(self, e: h.HistoryEvent) -> tuple[str, str]:
        t = e.timestamp
        if isinstance(e, h.EventRaisedEvent):
            return "event received", f"{e.name} data={shorten(e.input)}"
        if isinstance(e, h.EventSentEvent):
            return "event sent", f"{e.name} to {e.instance_id} data={shorten(e.input)}"
        if isinstance(e, h.ExecutionTerminatedEvent):
            return "terminate requested", f"output={shorten(e.input)}"
        if isinstance(e, h.ExecutionSuspendedEvent):
            return "suspended", f"reason={shorten(e.input)}"
        if isinstance(e, h.ExecutionResumedEvent):
            return "resumed", f"reason={shorten(e.input)}"
        if isinstance(e, h.ExecutionRewoundEvent):
            return "rewound", f"reason={shorten(e.reason)}"
        if isinstance(e, h.ContinueAsNewEvent):
            return "continued as new", f"input={shorten(e.input)}"
        if isinstance(e, (h.EntityOperationSignaledEvent, h.EntityOperationCalledEvent)):
            kind = "signaled" if isinstance(e, h.EntityOperationSignaledEvent) else "called"
            self.entity_requests[e.request_id] = (f"{e.target_instance_id} {e.operation}", t)
            return f"entity {kind}", f"{e.target_instance_id} {e.operation} input={shorten(e.input)}"
        if isinstance(e, h.EntityOperationCompletedEvent):
            what, at = self.entity_requests.get(e.request_id, ("?", None))  # type: ignore[arg-type]
            return "entity completed", f"{what} result={shorten(e.output)}{_took(at, t)}"
        if isinstance(e, h.EntityOperationFailedEvent):
            what, at = self.entity_requests.get(e.request_id, ("?", None))  # type: ignore[arg-type]
            return "entity failed", f"{what} {_failure(e.failure_details)}{_took(at, t)}"
        if isinstance(e, h.EntityLockRequestedEvent):
            self.entity_requests[e.critical_section_id] = ("lock", t)
            return "lock requested", ", ".join(e.lock_set)
        if isinstance(e, h.EntityLockGrantedEvent):
            _, at = self.entity_requests.get(e.critical_section_id, ("", None))  # type: ignore[arg-type]
            return "lock granted", f"critical section {e.critical_section_id}{_took(at, t).replace('took', 'waited')}"
        if isinstance(e, h.EntityUnlockSentEvent):
            return "unlock sent", f"{e.target_instance_id}"
        if isinstance(e, h.OrchestratorStartedEvent):
            return "turn started", ""
        if isinstance(e, h.OrchestratorCompletedEvent):
            return "turn completed", ""
        return type(e).__name__, ""


def timeline_rows(events: list[h.HistoryEvent], include_turns: bool = False) -> list[TimelineRow]:
    """The timeline of ``events`` (oldest first); turn markers are left out unless asked for."""
    walker = _Timeline()
    rows = []
    for event in events:
        label, details = walker.describe(event)
        if include_turns or not isinstance(event, TURN_MARKERS):
            rows.append(TimelineRow(event.timestamp, label, details))
    return rows


def render_timeline(events: list[h.HistoryEvent], include_turns: bool = False) -> str:
    """The timeline as a table: time (UTC), elapsed since the earliest event, event, details."""
    rows = timeline_rows(events, include_turns)
    if not rows:
        return "(no history)"
    first = min(e.timestamp for e in events)
    cells = [
        [f"{r.time:%Y-%m-%d %H:%M:%S.%f}"[:-3], "+" + format_duration(r.time - first), r.event, r.details]
        for r in rows
    ]
    return table(["TIME (UTC)", "ELAPSED", "EVENT", "DETAILS"], cells)


def events_to_json(events: list[h.HistoryEvent]) -> list[dict[str, Any]]:
    """The events as JSON objects, each with its ``kind`` (the event class name without ``Event``)."""
    result = []
    for event in events:
        kind = type(event).__name__
        data = {"kind": kind[:-5] if kind.endswith("Event") else kind}
        data.update(event.to_dict())
        result.append(data)
    return result
