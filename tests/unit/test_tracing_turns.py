"""The tracing of orchestration turns (durabletask.internal.tracing_turns), on synthetic turns.

A turn's spans come only from its new events and actions: replayed events never produce one,
whether the whole history is replayed or the notes of earlier turns stand in for it. The
orchestration span keeps the ID and start time handed back between turns.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, SpanKind

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import tracing
from durabletask.internal.activity_executor import ActivityExecutor
from durabletask.internal.registry import Registry
from durabletask.internal.tracing_turns import TurnNotes, trace_turn
from tests.otel_support import attributes, collecting_spans, only, parent_id, span_id, spans_of_trace

PARENT_SPAN = 0xB7AD6B7169203331


@pytest.fixture(autouse=True)
def collecting() -> Iterator[None]:
    with collecting_spans():
        yield


def parent_context(trace_id: int) -> pb.TraceContext:
    return pb.TraceContext(traceParent=f"00-{trace_id:032x}-{PARENT_SPAN:016x}-01")


def event(event_id: int, seconds: int, **body: object) -> pb.HistoryEvent:
    e = pb.HistoryEvent(eventId=event_id, **body)  # type: ignore[arg-type]
    e.timestamp.FromSeconds(seconds)
    return e


def started(ctx: pb.TraceContext) -> pb.HistoryEvent:
    return event(-1, 100, executionStarted=pb.ExecutionStartedEvent(name="orch", parentTraceContext=ctx))


def turn_one(ctx: pb.TraceContext) -> tuple[pb.OrchestratorRequest, pb.OrchestratorResponse]:
    req = pb.OrchestratorRequest(instanceId="i1", newEvents=[event(-1, 100, orchestratorStarted={}), started(ctx)])
    response = pb.OrchestratorResponse(instanceId="i1", actions=[
        pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="act")),
    ])
    return req, response


def complete_action() -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=2, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
    ))


def test_a_task_gets_a_client_span_when_its_result_arrives_and_the_orchestration_span_keeps_its_id() -> None:
    trace_id = uuid.uuid4().int
    req, response = turn_one(parent_context(trace_id))
    notes = trace_turn(req, [], response, None)
    call = tracing.ref_of(response.actions[0].scheduleTask.parentTraceContext)
    kept = response.orchestrationTraceContext
    assert call is not None and call.trace_id == trace_id
    assert kept.spanID.value and kept.HasField("spanStartTime")
    assert spans_of_trace(trace_id) == [], "nothing has finished yet"

    scheduled = event(1, 101, taskScheduled=pb.TaskScheduledEvent(
        name="act", parentTraceContext=response.actions[0].scheduleTask.parentTraceContext,
    ))
    done = event(-1, 103, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1))
    second = pb.OrchestratorRequest(
        instanceId="i1", newEvents=[event(-1, 103, orchestratorStarted={}), done], orchestrationTraceContext=kept,
    )
    final = pb.OrchestratorResponse(instanceId="i1", actions=[complete_action()])
    # Only the events after those the notes cover are passed, as with a worker's cached state.
    trace_turn(second, [scheduled], final, notes)

    spans = spans_of_trace(trace_id)
    orchestration = only(spans, "orchestration:orch")
    client = only(spans, "activity:act")
    assert f"{span_id(orchestration):016x}" == kept.spanID.value
    assert orchestration.start_time == kept.spanStartTime.ToNanoseconds()
    assert orchestration.kind == SpanKind.SERVER and parent_id(orchestration) == PARENT_SPAN
    assert client.kind == SpanKind.CLIENT and span_id(client) == call.span_id
    assert parent_id(client) == span_id(orchestration)
    assert (client.start_time, client.end_time) == (101 * 10**9, 103 * 10**9)
    assert attributes(client)["durabletask.task.task_id"] == "1"
    assert final.orchestrationTraceContext == kept


def test_replayed_events_produce_no_spans() -> None:
    trace_id = uuid.uuid4().int
    ctx = parent_context(trace_id)
    call = pb.TraceContext(traceParent=f"00-{trace_id:032x}-{0x1234:016x}-01")
    past = [
        event(-1, 100, orchestratorStarted={}), started(ctx),
        event(1, 100, taskScheduled=pb.TaskScheduledEvent(name="act", parentTraceContext=call)),
        event(-1, 102, orchestratorStarted={}),
        event(-1, 102, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1)),
        event(2, 102, timerCreated=pb.TimerCreatedEvent()),
    ]
    kept = pb.OrchestrationTraceContext()
    kept.spanID.value = f"{0xABCDEF:016x}"
    kept.spanStartTime.FromSeconds(100)
    req = pb.OrchestratorRequest(
        instanceId="i2", pastEvents=past, orchestrationTraceContext=kept,
        newEvents=[event(-1, 105, orchestratorStarted={}), event(-1, 105, timerFired=pb.TimerFiredEvent(timerId=2))],
    )
    response = pb.OrchestratorResponse(instanceId="i2", actions=[
        pb.OrchestratorAction(id=3, scheduleTask=pb.ScheduleTaskAction(name="next")),
    ])
    trace_turn(req, past, response, None)

    spans = spans_of_trace(trace_id)
    assert [s.name for s in spans] == ["orchestration:orch:timer"], "the activity's span was recorded in its own turn"
    timer = spans[0]
    assert parent_id(timer) == 0xABCDEF and timer.start_time == 102 * 10**9
    scheduled = tracing.ref_of(response.actions[0].scheduleTask.parentTraceContext)
    assert scheduled is not None and scheduled.span_id not in (0xABCDEF, 0x1234)


def test_a_malformed_parent_is_not_passed_on() -> None:
    req, response = turn_one(pb.TraceContext(traceParent="not-a-traceparent"))
    notes = trace_turn(req, [], response, None)
    assert isinstance(notes, TurnNotes)
    assert not response.actions[0].scheduleTask.HasField("parentTraceContext")
    assert response.orchestrationTraceContext.HasField("spanStartTime")
    assert not response.orchestrationTraceContext.HasField("spanID")


def test_without_opentelemetry_everything_imports_and_nothing_is_traced() -> None:
    script = (
        "import sys\n"
        "for name in ('opentelemetry', 'opentelemetry.trace', 'opentelemetry.sdk'):\n"
        "    sys.modules[name] = None\n"
        "from durabletask import client, worker\n"
        "from durabletask.internal import orchestrator_service_pb2 as pb, tracing\n"
        "from durabletask.internal.tracing_turns import trace_turn\n"
        "assert not tracing.OTEL_AVAILABLE\n"
        "req = pb.CreateInstanceRequest(name='o', instanceId='i')\n"
        "with tracing.creating_orchestration(req):\n"
        "    pass\n"
        "assert not req.HasField('parentTraceContext')\n"
        "response = pb.OrchestratorResponse()\n"
        "assert trace_turn(pb.OrchestratorRequest(), [], response, None) is None\n"
        "assert not response.HasField('orchestrationTraceContext')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_with_emission_off_contexts_still_flow_but_no_span_is_recorded() -> None:
    trace_id = uuid.uuid4().int
    req, response = turn_one(parent_context(trace_id))
    response.actions.append(complete_action())
    trace_turn(req, [], response, None, emit=False)
    assert response.actions[0].scheduleTask.parentTraceContext == parent_context(trace_id)

    registry = Registry()
    name = registry.add_activity(lambda ctx, _: "done", name="traced_unit_activity")
    activity = pb.ActivityRequest(name=name, taskId=1, parentTraceContext=parent_context(trace_id))
    assert ActivityExecutor(registry, emit_trace_spans=False).run(activity, "t").result.value == '"done"'
    assert spans_of_trace(trace_id) == []
    ActivityExecutor(registry).run(activity, "t")
    assert [s.name for s in spans_of_trace(trace_id)] == [f"activity:{name}"]


@pytest.fixture
def no_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process where no TracerProvider was ever set: OpenTelemetry hands out its proxy."""
    monkeypatch.setattr(tracing.otel_trace, "get_tracer_provider", lambda: ProxyTracerProvider())
    assert not tracing.spans_recorded() and not tracing.can_emit_with_id()


def traced_turns(trace_id: int | None) -> list[tuple[pb.OrchestratorRequest, list[pb.HistoryEvent], pb.OrchestratorResponse]]:
    """A first turn and a later one (with past events and a kept start time), parented on ``trace_id``."""
    ctx = parent_context(trace_id) if trace_id is not None else pb.TraceContext()
    first, first_response = turn_one(ctx)
    first_response.actions.append(pb.OrchestratorAction(
        id=2, createSubOrchestration=pb.CreateSubOrchestrationAction(name="child", instanceId="c"),
    ))
    past = [event(1, 101, taskScheduled=pb.TaskScheduledEvent(name="act"))]
    kept = pb.OrchestrationTraceContext()
    kept.spanStartTime.FromSeconds(100)
    kept.spanID.value = f"{0xABCDEF:016x}"
    later = pb.OrchestratorRequest(
        instanceId="i1", pastEvents=past, orchestrationTraceContext=kept,
        newEvents=[event(-1, 103, orchestratorStarted={}),
                   event(-1, 103, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1))],
    )
    later_response = pb.OrchestratorResponse(instanceId="i1", actions=[
        pb.OrchestratorAction(id=3, scheduleTask=pb.ScheduleTaskAction(name="next")),
        pb.OrchestratorAction(id=4, sendEvent=pb.SendEventAction(name="e")),
        complete_action(),
    ])
    return [(first, [], first_response), (later, past, later_response)]


@pytest.mark.parametrize("parented", [True, False])
def test_without_a_tracer_provider_turns_carry_the_same_contexts_as_with_emission_off(
    parented: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace_id = uuid.uuid4().int if parented else None
    expected = traced_turns(trace_id)
    notes = None
    for req, past, response in expected:
        notes = trace_turn(req, past, response, notes, emit=False)
    start = expected[0][2].orchestrationTraceContext.spanStartTime

    monkeypatch.setattr(tracing.otel_trace, "get_tracer_provider", lambda: ProxyTracerProvider())
    actual = traced_turns(trace_id)
    quiet_notes = None
    for req, past, response in actual:
        quiet_notes = trace_turn(req, past, response, quiet_notes)
    assert actual[0][2].orchestrationTraceContext.spanStartTime.ToNanoseconds() >= start.ToNanoseconds()
    actual[0][2].orchestrationTraceContext.spanStartTime.CopyFrom(start)  # "now" differs
    assert [r for _, _, r in actual] == [r for _, _, r in expected]
    assert actual[1][2].orchestrationTraceContext.spanStartTime.seconds == 100
    assert not actual[1][2].orchestrationTraceContext.HasField("spanID")
    assert isinstance(quiet_notes, TurnNotes) and isinstance(notes, TurnNotes)
    assert (quiet_notes.name, quiet_notes.parent, quiet_notes.scheduled) == (notes.name, notes.parent, notes.scheduled)
    if trace_id is not None:
        assert actual[0][2].actions[1].createSubOrchestration.parentTraceContext == parent_context(trace_id)
        assert spans_of_trace(trace_id) == []


def test_without_a_tracer_provider_an_activity_runs_in_its_parent_context(no_tracer_provider: None) -> None:
    trace_id = uuid.uuid4().int
    seen: list[tuple[int, int]] = []

    def activity(ctx: object, _: object) -> str:
        current = trace.get_current_span().get_span_context()
        seen.append((current.trace_id, current.span_id))
        return "done"

    registry = Registry()
    name = registry.add_activity(activity, name="untraced_unit_activity")
    request = pb.ActivityRequest(name=name, taskId=1, parentTraceContext=parent_context(trace_id))
    assert ActivityExecutor(registry).run(request, "t").result.value == '"done"'
    assert seen == [(trace_id, PARENT_SPAN)]
    assert spans_of_trace(trace_id) == []
    assert trace.get_current_span().get_span_context().trace_id != trace_id, "the parent stays inside the run"
