"""What the dashboard's JSON API returns: instances, history events, the timeline, entities, schedules."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import status_name
from sidecar.model import EPOCH
from sidecar.work_streams import StreamView

# The entity name under which durabletask.scheduled keeps each schedule (``@schedule@<id>``).
SCHEDULE_ENTITY_PREFIX = "@schedule@"
_SCHEDULE_STATUSES = {0: "Uninitialized", 1: "Active", 2: "Paused"}


def iso(ts: Timestamp) -> str:
    """A Timestamp as ISO 8601 UTC text with a Z (whole-number arithmetic: a float sum rounds the last
    nanoseconds of 9999-12-31T23:59:59.999999999Z, which the sidecar accepts, up into year 10000)."""
    moment = EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _optional_iso(message: Any, field: str) -> str | None:
    return iso(getattr(message, field)) if message.HasField(field) else None


def _optional_text(message: Any, field: str) -> str | None:
    return getattr(message, field).value if message.HasField(field) else None


def failure_json(failure: pb.TaskFailureDetails) -> dict[str, Any]:
    """A failure with its inner failures."""
    result: dict[str, Any] = {
        "error_type": failure.errorType,
        "message": failure.errorMessage,
        "stack_trace": _optional_text(failure, "stackTrace"),
        "non_retriable": failure.isNonRetriable,
    }
    if failure.HasField("innerFailure"):
        result["inner"] = failure_json(failure.innerFailure)
    return result


def instance_json(state: pb.OrchestrationState) -> dict[str, Any]:
    """An orchestration instance as the dashboard shows it."""
    return {
        "instance_id": state.instanceId,
        "name": state.name,
        "version": _optional_text(state, "version"),
        "status": status_name(state.orchestrationStatus),
        "execution_id": _optional_text(state, "executionId"),
        "created_at": _optional_iso(state, "createdTimestamp"),
        "last_updated_at": _optional_iso(state, "lastUpdatedTimestamp"),
        "completed_at": _optional_iso(state, "completedTimestamp"),
        "scheduled_start_at": _optional_iso(state, "scheduledStartTimestamp"),
        "parent_instance_id": _optional_text(state, "parentInstanceId"),
        "input": _optional_text(state, "input"),
        "output": _optional_text(state, "output"),
        "custom_status": _optional_text(state, "customStatus"),
        "failure": failure_json(state.failureDetails) if state.HasField("failureDetails") else None,
        "tags": dict(state.tags),
    }


def event_json(event: pb.HistoryEvent) -> dict[str, Any]:
    """A history event: its ID, time, type and fields (protobuf JSON names)."""
    kind = event.WhichOneof("eventType") or "unknown"
    fields = json_format.MessageToDict(getattr(event, kind)) if kind != "unknown" else {}
    return {"event_id": event.eventId, "timestamp": iso(event.timestamp), "type": kind, "fields": fields}


class _Span:
    """One row of the timeline being built."""

    def __init__(self, kind: str, name: str, start: Timestamp, detail: str = "") -> None:
        self.kind = kind
        self.name = name
        self.start = start
        self.end: Timestamp | None = None
        self.outcome = "pending"
        self.detail = detail

    def finish(self, end: Timestamp, outcome: str, detail: str | None = None) -> None:
        self.end = end
        self.outcome = outcome
        if detail:
            self.detail = detail

    def to_json(self) -> dict[str, Any]:
        duration = None
        if self.end is not None:
            duration = round(
                (self.end.seconds - self.start.seconds) * 1000 + (self.end.nanos - self.start.nanos) / 1e6, 3
            )
        return {
            "kind": self.kind,
            "name": self.name,
            "start": iso(self.start),
            "end": iso(self.end) if self.end is not None else None,
            "duration_ms": duration,
            "outcome": self.outcome,
            "detail": self.detail,
        }


def timeline(events: list[pb.HistoryEvent]) -> list[dict[str, Any]]:
    """The history as spans: activities, timers, sub-orchestrations and entity calls from start to end,
    with their outcome; external events, sent events, signals and lifecycle changes as instants."""
    spans: list[_Span] = []
    by_task: dict[int, _Span] = {}  # activities, sub-orchestrations and timers by their event ID
    by_request: dict[str, _Span] = {}  # entity calls and lock requests
    execution: _Span | None = None
    for event in events:
        kind = event.WhichOneof("eventType")
        at = event.timestamp
        if kind == "executionStarted":
            execution = _Span("orchestration", event.executionStarted.name, at)
            spans.append(execution)
        elif kind == "executionCompleted" and execution is not None:
            done = event.executionCompleted
            outcome = status_name(done.orchestrationStatus).lower()
            execution.finish(at, outcome, done.failureDetails.errorMessage if done.HasField("failureDetails") else "")
        elif kind == "executionTerminated" and execution is not None:
            execution.finish(at, "terminated")
        elif kind == "taskScheduled":
            by_task[event.eventId] = _Span("activity", event.taskScheduled.name, at)
            spans.append(by_task[event.eventId])
        elif kind == "subOrchestrationInstanceCreated":
            created = event.subOrchestrationInstanceCreated
            by_task[event.eventId] = _Span("sub-orchestration", created.name, at, created.instanceId)
            spans.append(by_task[event.eventId])
        elif kind == "timerCreated":
            by_task[event.eventId] = _Span("timer", "timer", at, f"fires at {iso(event.timerCreated.fireAt)}")
            spans.append(by_task[event.eventId])
        elif kind in ("taskCompleted", "subOrchestrationInstanceCompleted"):
            span = by_task.get(getattr(event, kind).taskScheduledId)
            if span is not None:
                span.finish(at, "completed")
        elif kind in ("taskFailed", "subOrchestrationInstanceFailed"):
            failed = getattr(event, kind)
            span = by_task.get(failed.taskScheduledId)
            if span is not None:
                span.finish(at, "failed", failed.failureDetails.errorMessage)
        elif kind == "timerFired":
            span = by_task.get(event.timerFired.timerId)
            if span is not None:  # the event is stamped when the timer was set: it ends when due
                span.finish(event.timerFired.fireAt, "fired")
        elif kind == "entityOperationCalled":
            called = event.entityOperationCalled
            target = _optional_text(called, "targetInstanceId") or ""
            by_request[called.requestId] = _Span("entity", called.operation, at, target)
            spans.append(by_request[called.requestId])
        elif kind in ("entityOperationCompleted", "entityOperationFailed"):
            result = getattr(event, kind)
            span = by_request.get(result.requestId)
            if span is not None:
                failed = kind == "entityOperationFailed"
                span.finish(at, "failed" if failed else "completed", result.failureDetails.errorMessage if failed else "")
        elif kind == "entityLockRequested":
            lock = event.entityLockRequested
            by_request[lock.criticalSectionId] = _Span("entity", "lock", at, ", ".join(lock.lockSet))
            spans.append(by_request[lock.criticalSectionId])
        elif kind == "entityLockGranted":
            span = by_request.get(event.entityLockGranted.criticalSectionId)
            if span is not None:
                span.finish(at, "granted")
        else:
            instant = _instant(event, kind)
            if instant is not None:
                spans.append(instant)
    return [span.to_json() for span in spans]


def _instant(event: pb.HistoryEvent, kind: str | None) -> _Span | None:
    at = event.timestamp
    if kind == "eventRaised":
        span = _Span("event", event.eventRaised.name, at, "received")
    elif kind == "eventSent":
        span = _Span("event", event.eventSent.name, at, f"sent to {event.eventSent.instanceId}")
    elif kind == "entityOperationSignaled":
        signaled = event.entityOperationSignaled
        span = _Span("entity", signaled.operation, at, f"signal to {_optional_text(signaled, 'targetInstanceId') or ''}")
    elif kind in ("executionSuspended", "executionResumed", "executionRewound", "continueAsNew"):
        span = _Span("lifecycle", kind.removeprefix("execution").lower(), at)
    else:
        return None
    span.finish(at, "instant")
    return span


def _state_value(state: str | None) -> Any:
    """An entity's state decoded from JSON when it is JSON (our SDK's default), else the text."""
    if state is None:
        return None
    try:
        return json.loads(state)
    except ValueError:
        return state


def entity_json(entity: pb.EntityMetadata) -> dict[str, Any]:
    """An entity: ID, name and key, state, lock holder and queue length."""
    name, _, key = entity.instanceId.removeprefix("@").partition("@")
    return {
        "entity_id": entity.instanceId,
        "name": name,
        "key": key,
        "state": _optional_text(entity, "serializedState"),
        "locked_by": _optional_text(entity, "lockedBy"),
        "queue_length": entity.backlogQueueSize,
        "last_modified_at": _optional_iso(entity, "lastModifiedTime"),
    }


def schedule_json(entity: pb.EntityMetadata) -> dict[str, Any] | None:
    """A schedule kept by durabletask.scheduled in entity ``@schedule@<id>``; None when it holds none."""
    state = _state_value(_optional_text(entity, "serializedState"))
    if isinstance(state, str):  # stored as a JSON string holding the JSON object
        state = _state_value(state)
    if not isinstance(state, dict) or not isinstance(state.get("ScheduleConfiguration"), dict):
        return None
    config = state["ScheduleConfiguration"]
    status = state.get("Status")
    return {
        "schedule_id": entity.instanceId.removeprefix(SCHEDULE_ENTITY_PREFIX),
        "status": _SCHEDULE_STATUSES.get(status, str(status)) if isinstance(status, int) else str(status),
        "orchestration_name": config.get("OrchestrationName"),
        "interval": config.get("Interval"),
        "cron": config.get("CronExpression"),
        "start_at": config.get("StartAt"),
        "end_at": config.get("EndAt"),
        "last_run_at": state.get("LastRunAt"),
        "next_run_at": state.get("NextRunAt"),
    }


def worker_json(view: StreamView) -> dict[str, Any]:
    """A connected worker's stream."""
    result = asdict(view)
    result["opened_at"] = datetime.fromtimestamp(view.opened_at, tz=timezone.utc).isoformat(timespec="seconds")
    return result
