"""Trace spans of orchestration turns, computed from a turn's events and actions.

The replay engine knows nothing of tracing: after a turn has run, :func:`trace_turn` looks at
what was new in it and

- gives each new ``scheduleTask`` / ``createSubOrchestration`` action a ``parentTraceContext``
  naming a CLIENT span (``activity:NAME`` / ``orchestration:NAME``) that is recorded, with that
  ID, when the task's result arrives in a later turn;
- records an INTERNAL ``orchestration:NAME:timer`` span for each timer that fired, a PRODUCER
  ``orchestration_event:NAME`` span for each event sent, and, when the execution completes, the
  SERVER ``orchestration:NAME`` span;
- puts the orchestration span's ID and start time in ``orchestrationTraceContext``, which the
  sidecar hands back on the next turn, so the span keeps one ID and start across turns.

Replayed (past) events never produce spans; they are only read for what later spans need.
What the past events of a turn held is kept in :class:`TurnNotes` between turns, for workers
that are sent only the events they have not seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import tracing as tr

_logger = logging.getLogger("durabletask-tracing")

_SCHEDULING = ("taskScheduled", "subOrchestrationInstanceCreated", "timerCreated")
_RESOLUTION_ID = {
    "taskCompleted": "taskScheduledId",
    "taskFailed": "taskScheduledId",
    "subOrchestrationInstanceCompleted": "taskScheduledId",
    "subOrchestrationInstanceFailed": "taskScheduledId",
    "timerFired": "timerId",
}


@dataclass
class TurnNotes:
    """What the tracing of later turns needs from events already seen."""

    name: str = ""
    parent: pb.TraceContext | None = None
    scheduled: dict[int, pb.HistoryEvent] = field(default_factory=dict)

    def observe(self, event: pb.HistoryEvent) -> None:
        kind = event.WhichOneof("eventType")
        if kind == "executionStarted":
            started = event.executionStarted
            self.name = started.name
            self.parent = started.parentTraceContext if started.HasField("parentTraceContext") else None
            self.scheduled.clear()
        elif kind in _SCHEDULING:
            self.scheduled[event.eventId] = event
        elif kind in _RESOLUTION_ID:
            self.scheduled.pop(getattr(getattr(event, kind), _RESOLUTION_ID[kind]), None)


def trace_turn(
    req: pb.OrchestratorRequest,
    past: Sequence[pb.HistoryEvent],
    response: pb.OrchestratorResponse,
    notes: TurnNotes | None,
    *,
    emit: bool = True,
) -> TurnNotes | None:
    """Add trace contexts to ``response`` and record the turn's spans; returns the notes to keep.

    ``past`` are the past events replayed this turn (after those ``notes`` already cover);
    ``emit`` False propagates contexts without recording spans, and so does a worker whose
    spans could not be recorded (no OpenTelemetry SDK TracerProvider set), at less cost. Does
    nothing (returns None) without OpenTelemetry or for a rewind.
    """
    if not tr.OTEL_AVAILABLE or any(a.HasField("rewindOrchestration") for a in response.actions):
        return notes
    try:
        if emit and tr.can_emit_with_id():
            return _trace(req, past, response, notes or TurnNotes(), True)
        return _propagate(req, past, response, notes or TurnNotes())
    except Exception:  # tracing must never cost a turn
        _logger.warning("could not trace a turn of '%s'", req.instanceId, exc_info=True)
        return None


def _trace(
    req: pb.OrchestratorRequest,
    past: Sequence[pb.HistoryEvent],
    response: pb.OrchestratorResponse,
    notes: TurnNotes,
    emit: bool,
) -> TurnNotes:
    for event in past:
        notes.observe(event)
    for event in req.newEvents:
        if event.HasField("executionStarted"):
            notes.observe(event)
    turn = _Turn(req, response, notes, emit)
    for event in req.newEvents:
        turn.on_new_event(event)
        notes.observe(event)
    for action in response.actions:
        turn.on_action(action)
    turn.finish()
    return notes


def _propagate(
    req: pb.OrchestratorRequest,
    past: Sequence[pb.HistoryEvent],
    response: pb.OrchestratorResponse,
    notes: TurnNotes,
) -> TurnNotes:
    """What :func:`_trace` does when no span is recorded, without its span bookkeeping: new work
    continues the orchestration's parent context, and the turn keeps the orchestration's start."""
    for event in past:
        notes.observe(event)
    for event in req.newEvents:
        notes.observe(event)
    parent = notes.parent if tr.ref_of(notes.parent) is not None else None
    if parent is not None:
        for action in response.actions:
            kind = action.WhichOneof("orchestratorActionType")
            if kind in ("scheduleTask", "createSubOrchestration"):
                target = getattr(action, kind)
                if not target.HasField("parentTraceContext"):
                    target.parentTraceContext.CopyFrom(parent)
    kept = response.orchestrationTraceContext
    kept.Clear()
    if req.HasField("orchestrationTraceContext") and req.orchestrationTraceContext.HasField("spanStartTime"):
        kept.spanStartTime.CopyFrom(req.orchestrationTraceContext.spanStartTime)
    else:
        kept.spanStartTime.FromNanoseconds(time.time_ns())
    return notes


class _Turn:
    def __init__(
        self, req: pb.OrchestratorRequest, response: pb.OrchestratorResponse, notes: TurnNotes, emit: bool
    ) -> None:
        self.req = req
        self.response = response
        self.notes = notes
        self.emit = emit and tr.can_emit_with_id()
        self.instance_id = req.instanceId
        kept = req.orchestrationTraceContext if req.HasField("orchestrationTraceContext") else None
        self.start_ns = (
            kept.spanStartTime.ToNanoseconds() if kept is not None and kept.HasField("spanStartTime")
            else time.time_ns()
        )
        self.parent_ref = tr.ref_of(notes.parent)
        # The orchestration's own span: the same ID on every turn, once chosen.
        self.span: tr.SpanRef | None = None
        if self.parent_ref is not None and self.emit:
            kept_id = _span_id(kept.spanID.value) if kept is not None and kept.HasField("spanID") else None
            self.span = self.parent_ref.with_span_id(kept_id or tr.new_span_id())

    def context(self) -> pb.TraceContext | None:
        """The trace context that work started by the orchestration continues."""
        if self.span is not None:
            return self.span.to_proto()
        return self.notes.parent if self.parent_ref is not None else None

    def on_new_event(self, event: pb.HistoryEvent) -> None:
        kind = event.WhichOneof("eventType")
        if kind not in _RESOLUTION_ID or not self.emit:
            return
        body = getattr(event, kind)
        scheduled = self.notes.scheduled.get(getattr(body, _RESOLUTION_ID[kind]))
        if scheduled is None:
            return
        if kind == "timerFired":
            self._emit_timer(scheduled)
        else:
            failure = body.failureDetails.errorMessage if kind.endswith("Failed") else None
            self._emit_client_span(scheduled, event, failure)

    def _emit_timer(self, created: pb.HistoryEvent) -> None:
        if not created.HasField("timerCreated"):
            return
        attributes = {
            tr.ATTR_TYPE: "timer",
            tr.ATTR_TASK_NAME: self.notes.name,
            tr.ATTR_INSTANCE_ID: self.instance_id,
            tr.ATTR_TASK_ID: str(created.eventId),
            tr.ATTR_FIRE_AT: created.timerCreated.fireAt.ToDatetime().isoformat(),
        }
        start = created.timestamp.ToNanoseconds() if created.HasField("timestamp") else None
        tr.emit_span(f"orchestration:{self.notes.name}:timer", "INTERNAL", attributes,
                     parent=self.context(), start_ns=start)

    def _emit_client_span(self, scheduled: pb.HistoryEvent, done: pb.HistoryEvent, failure: str | None) -> None:
        if scheduled.HasField("taskScheduled"):
            body = scheduled.taskScheduled
            kind, instance_id = "activity", self.instance_id
        elif scheduled.HasField("subOrchestrationInstanceCreated"):
            body = scheduled.subOrchestrationInstanceCreated
            kind, instance_id = "orchestration", body.instanceId
        else:
            return
        ref = tr.ref_of(body.parentTraceContext) if body.HasField("parentTraceContext") else None
        if ref is None or self.span is None or ref.span_id == self.span.span_id:
            return  # the downstream span hangs on the orchestration span itself: no CLIENT span
        version = body.version.value if body.HasField("version") and body.version.value else None
        attributes = {
            tr.ATTR_TYPE: kind,
            tr.ATTR_TASK_NAME: body.name,
            tr.ATTR_INSTANCE_ID: instance_id,
            tr.ATTR_TASK_ID: str(scheduled.eventId),
        }
        if version:
            attributes[tr.ATTR_TASK_VERSION] = version
        tr.emit_span_with_id(
            tr.span_name(kind, body.name, version), "CLIENT", attributes,
            ref=ref, parent_span_id=self.span.span_id,
            start_ns=scheduled.timestamp.ToNanoseconds() if scheduled.HasField("timestamp") else None,
            end_ns=done.timestamp.ToNanoseconds() if done.HasField("timestamp") else None,
            error=failure,
        )

    def on_action(self, action: pb.OrchestratorAction) -> None:
        kind = action.WhichOneof("orchestratorActionType")
        if kind in ("scheduleTask", "createSubOrchestration"):
            target = getattr(action, kind)
            if not target.HasField("parentTraceContext"):
                ctx = self.span.child().to_proto() if self.span is not None else self.context()
                if ctx is not None:
                    target.parentTraceContext.CopyFrom(ctx)
        elif kind == "sendEvent" and self.emit:
            send = action.sendEvent
            attributes = {tr.ATTR_TYPE: "event", tr.ATTR_TASK_NAME: send.name, tr.ATTR_INSTANCE_ID: self.instance_id}
            if send.instance.instanceId:
                attributes[tr.ATTR_EVENT_TARGET] = send.instance.instanceId
            tr.emit_span(tr.span_name("orchestration_event", send.name), "PRODUCER", attributes,
                         parent=self.context())
        elif kind == "completeOrchestration" and self.emit:
            self._emit_orchestration_span(action.completeOrchestration)

    def _emit_orchestration_span(self, complete: pb.CompleteOrchestrationAction) -> None:
        failed = complete.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
        attributes = {
            tr.ATTR_TYPE: "orchestration",
            tr.ATTR_TASK_NAME: self.notes.name,
            tr.ATTR_INSTANCE_ID: self.instance_id,
            tr.ATTR_STATUS: tr.STATUS_FAILED if failed else tr.STATUS_COMPLETED,
        }
        error = complete.failureDetails.errorMessage if failed else None
        name = tr.span_name("orchestration", self.notes.name)
        if self.span is not None and self.parent_ref is not None:
            tr.emit_span_with_id(name, "SERVER", attributes, ref=self.span, parent_span_id=self.parent_ref.span_id,
                                 start_ns=self.start_ns, error=error)
        else:
            tr.emit_span(name, "SERVER", attributes, parent=self.notes.parent, start_ns=self.start_ns, error=error)

    def finish(self) -> None:
        kept = self.response.orchestrationTraceContext
        kept.Clear()
        kept.spanStartTime.FromNanoseconds(self.start_ns)
        if self.span is not None:
            kept.spanID.value = f"{self.span.span_id:016x}"


def _span_id(text: str) -> int | None:
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value if 0 < value < 1 << 64 else None
