"""Tests for durabletask.history: protobuf conversion of every event kind and to_dict()."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2

from durabletask import history
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.task import FailureDetails

T0 = datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)
T1 = datetime(2024, 3, 5, 0, 0, 0, tzinfo=timezone.utc)


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def sv(text: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=text)


def trace() -> pb.TraceContext:
    return pb.TraceContext(traceParent="00-abc-def-01", spanID="def", traceState=sv("k=v"))


def parent() -> pb.ParentInstanceInfo:
    return pb.ParentInstanceInfo(
        taskScheduledId=3,
        name=sv("parent_orch"),
        version=sv("1.0"),
        orchestrationInstance=pb.OrchestrationInstance(instanceId="p1", executionId=sv("e1")),
    )


def failure() -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(
        errorType="builtins.ValueError",
        errorMessage="bad",
        stackTrace=sv("trace..."),
        innerFailure=pb.TaskFailureDetails(errorType="builtins.KeyError", errorMessage="k"),
        properties={"code": struct_pb2.Value(number_value=7), "why": struct_pb2.Value(string_value="x")},
    )


EXPECTED_FAILURE = FailureDetails(
    message="bad",
    error_type="builtins.ValueError",
    stack_trace="trace...",
    inner_failure=FailureDetails(message="k", error_type="builtins.KeyError", stack_trace=None),
    properties={"code": 7.0, "why": "x"},
)
EXPECTED_TRACE = history.TraceContext(trace_parent="00-abc-def-01", span_id="def", trace_state="k=v")
EXPECTED_PARENT = history.ParentInstanceInfo(
    task_scheduled_id=3,
    name="parent_orch",
    version="1.0",
    orchestration_instance=history.OrchestrationInstance(instance_id="p1", execution_id="e1"),
)

# kind -> (pb sub-message, expected dataclass type, expected fields beyond event_id/timestamp)
CASES: dict[str, tuple[Any, type, dict[str, Any]]] = {
    "executionStarted": (
        pb.ExecutionStartedEvent(
            name="orch", version=sv("2"), input=sv('"in"'),
            orchestrationInstance=pb.OrchestrationInstance(instanceId="i1", executionId=sv("x1")),
            parentInstance=parent(), scheduledStartTimestamp=ts(T1), parentTraceContext=trace(),
            orchestrationSpanID=sv("span"), tags={"a": "b"},
        ),
        history.ExecutionStartedEvent,
        dict(
            name="orch", version="2", input='"in"',
            orchestration_instance=history.OrchestrationInstance("i1", "x1"),
            parent_instance=EXPECTED_PARENT, scheduled_start_timestamp=T1,
            parent_trace_context=EXPECTED_TRACE, orchestration_span_id="span", tags={"a": "b"},
        ),
    ),
    "executionCompleted": (
        pb.ExecutionCompletedEvent(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED, result=sv("1"), failureDetails=failure(),
        ),
        history.ExecutionCompletedEvent,
        dict(orchestration_status=3, result="1", failure_details=EXPECTED_FAILURE),
    ),
    "executionTerminated": (
        pb.ExecutionTerminatedEvent(input=sv('"stop"'), recurse=True),
        history.ExecutionTerminatedEvent,
        dict(input='"stop"', recurse=True),
    ),
    "taskScheduled": (
        pb.TaskScheduledEvent(
            name="act", version=sv("v"), input=sv("5"), parentTraceContext=trace(), tags={"t": "1"},
        ),
        history.TaskScheduledEvent,
        dict(name="act", version="v", input="5", parent_trace_context=EXPECTED_TRACE, tags={"t": "1"}),
    ),
    "taskCompleted": (
        pb.TaskCompletedEvent(taskScheduledId=4, result=sv("6")),
        history.TaskCompletedEvent,
        dict(task_scheduled_id=4, result="6"),
    ),
    "taskFailed": (
        pb.TaskFailedEvent(taskScheduledId=4, failureDetails=failure()),
        history.TaskFailedEvent,
        dict(task_scheduled_id=4, failure_details=EXPECTED_FAILURE),
    ),
    "subOrchestrationInstanceCreated": (
        pb.SubOrchestrationInstanceCreatedEvent(
            instanceId="c1", name="child", version=sv("3"), input=sv("[]"),
            parentTraceContext=trace(), tags={"x": "y"},
        ),
        history.SubOrchestrationInstanceCreatedEvent,
        dict(
            instance_id="c1", name="child", version="3", input="[]",
            parent_trace_context=EXPECTED_TRACE, tags={"x": "y"},
        ),
    ),
    "subOrchestrationInstanceCompleted": (
        pb.SubOrchestrationInstanceCompletedEvent(taskScheduledId=8, result=sv("null")),
        history.SubOrchestrationInstanceCompletedEvent,
        dict(task_scheduled_id=8, result="null"),
    ),
    "subOrchestrationInstanceFailed": (
        pb.SubOrchestrationInstanceFailedEvent(taskScheduledId=8, failureDetails=failure()),
        history.SubOrchestrationInstanceFailedEvent,
        dict(task_scheduled_id=8, failure_details=EXPECTED_FAILURE),
    ),
    "timerCreated": (
        pb.TimerCreatedEvent(fireAt=ts(T1)),
        history.TimerCreatedEvent,
        dict(fire_at=T1),
    ),
    "timerFired": (
        pb.TimerFiredEvent(fireAt=ts(T1), timerId=2),
        history.TimerFiredEvent,
        dict(fire_at=T1, timer_id=2),
    ),
    "orchestratorStarted": (pb.OrchestratorStartedEvent(), history.OrchestratorStartedEvent, {}),
    "orchestratorCompleted": (pb.OrchestratorCompletedEvent(), history.OrchestratorCompletedEvent, {}),
    "eventSent": (
        pb.EventSentEvent(instanceId="other", name="ping", input=sv("1")),
        history.EventSentEvent,
        dict(instance_id="other", name="ping", input="1"),
    ),
    "eventRaised": (
        pb.EventRaisedEvent(name="Approval", input=sv("true")),
        history.EventRaisedEvent,
        dict(name="Approval", input="true"),
    ),
    "genericEvent": (pb.GenericEvent(data=sv("d")), history.GenericEvent, dict(data="d")),
    "historyState": (
        pb.HistoryStateEvent(orchestrationState=pb.OrchestrationState(
            instanceId="i1", name="orch", orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
            input=sv("1"), tags={"k": "v"},
        )),
        history.HistoryStateEvent,
        # The proto's own (camelCase) field names, as protobuf's JSON mapping writes them.
        dict(orchestration_state={
            "instanceId": "i1", "name": "orch", "orchestrationStatus": "ORCHESTRATION_STATUS_COMPLETED",
            "input": "1", "tags": {"k": "v"},
        }),
    ),
    "continueAsNew": (pb.ContinueAsNewEvent(input=sv("9")), history.ContinueAsNewEvent, dict(input="9")),
    "executionSuspended": (
        pb.ExecutionSuspendedEvent(input=sv("why")), history.ExecutionSuspendedEvent, dict(input="why"),
    ),
    "executionResumed": (
        pb.ExecutionResumedEvent(input=sv("ok")), history.ExecutionResumedEvent, dict(input="ok"),
    ),
    "entityOperationSignaled": (
        pb.EntityOperationSignaledEvent(
            requestId="r1", operation="add", scheduledTime=ts(T1), input=sv("1"),
            targetInstanceId=sv("@counter@a"),
        ),
        history.EntityOperationSignaledEvent,
        dict(request_id="r1", operation="add", scheduled_time=T1, input="1", target_instance_id="@counter@a"),
    ),
    "entityOperationCalled": (
        pb.EntityOperationCalledEvent(
            requestId="r2", operation="get", scheduledTime=ts(T1), input=sv("null"),
            parentInstanceId=sv("i1"), parentExecutionId=sv("x1"), targetInstanceId=sv("@counter@a"),
        ),
        history.EntityOperationCalledEvent,
        dict(
            request_id="r2", operation="get", scheduled_time=T1, input="null",
            parent_instance_id="i1", parent_execution_id="x1", target_instance_id="@counter@a",
        ),
    ),
    "entityOperationCompleted": (
        pb.EntityOperationCompletedEvent(requestId="r2", output=sv("3")),
        history.EntityOperationCompletedEvent,
        dict(request_id="r2", output="3"),
    ),
    "entityOperationFailed": (
        pb.EntityOperationFailedEvent(requestId="r2", failureDetails=failure()),
        history.EntityOperationFailedEvent,
        dict(request_id="r2", failure_details=EXPECTED_FAILURE),
    ),
    "entityLockRequested": (
        pb.EntityLockRequestedEvent(
            criticalSectionId="cs", lockSet=["@a@1", "@b@2"], position=1, parentInstanceId=sv("i1"),
        ),
        history.EntityLockRequestedEvent,
        dict(critical_section_id="cs", lock_set=["@a@1", "@b@2"], position=1, parent_instance_id="i1"),
    ),
    "entityLockGranted": (
        pb.EntityLockGrantedEvent(criticalSectionId="cs"),
        history.EntityLockGrantedEvent,
        dict(critical_section_id="cs"),
    ),
    "entityUnlockSent": (
        pb.EntityUnlockSentEvent(
            criticalSectionId="cs", parentInstanceId=sv("i1"), targetInstanceId=sv("@a@1"),
        ),
        history.EntityUnlockSentEvent,
        dict(critical_section_id="cs", parent_instance_id="i1", target_instance_id="@a@1"),
    ),
    "executionRewound": (
        pb.ExecutionRewoundEvent(
            reason=sv("retry"), parentExecutionId=sv("px"), instanceId=sv("i1"),
            parentTraceContext=trace(), name=sv("orch"), version=sv("1"), input=sv("0"),
            parentInstance=parent(), tags={"r": "1"},
        ),
        history.ExecutionRewoundEvent,
        dict(
            reason="retry", parent_execution_id="px", instance_id="i1", parent_trace_context=EXPECTED_TRACE,
            name="orch", version="1", input="0", parent_instance=EXPECTED_PARENT, tags={"r": "1"},
        ),
    ),
}


def wrap(kind: str, sub: Any, event_id: int = 7) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=event_id, timestamp=ts(T0), **{kind: sub})


def test_every_wire_event_kind_is_covered() -> None:
    oneof = pb.HistoryEvent.DESCRIPTOR.oneofs_by_name["eventType"]
    assert {f.name for f in oneof.fields} == set(CASES)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_from_protobuf_fills_every_field(kind: str) -> None:
    sub, expected_type, expected_fields = CASES[kind]
    event = history.from_protobuf(wrap(kind, sub))
    assert type(event) is expected_type
    assert event == expected_type(event_id=7, timestamp=T0, **expected_fields)
    assert event.timestamp.tzinfo is not None
    own_fields = {f.name for f in dataclasses.fields(event)} - {"event_id", "timestamp"}
    assert own_fields == set(expected_fields)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_absent_optional_fields_are_none(kind: str) -> None:
    sub, expected_type, _ = CASES[kind]
    event = history.from_protobuf(wrap(kind, type(sub)()))
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.default is None:
            assert value is None, f"{expected_type.__name__}.{f.name} should be None when unset"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_to_dict_is_json_friendly(kind: str) -> None:
    sub, _, expected_fields = CASES[kind]
    event = history.from_protobuf(wrap(kind, sub))
    as_dict = event.to_dict()
    assert history.to_dict(event) == as_dict
    assert as_dict["event_id"] == 7
    assert as_dict["timestamp"] == "2024-03-04T05:06:07.890000+00:00"
    assert set(as_dict) == {"event_id", "timestamp", *expected_fields}
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_to_dict_nested_values() -> None:
    started = history.from_protobuf(wrap("executionStarted", CASES["executionStarted"][0])).to_dict()
    assert started["scheduled_start_timestamp"] == "2024-03-05T00:00:00+00:00"
    assert started["parent_instance"] == {
        "task_scheduled_id": 3,
        "name": "parent_orch",
        "version": "1.0",
        "orchestration_instance": {"instance_id": "p1", "execution_id": "e1"},
    }
    assert started["parent_trace_context"] == {
        "trace_parent": "00-abc-def-01", "span_id": "def", "trace_state": "k=v",
    }
    failed = history.from_protobuf(wrap("taskFailed", CASES["taskFailed"][0])).to_dict()
    assert failed["failure_details"] == {
        "message": "bad",
        "error_type": "builtins.ValueError",
        "stack_trace": "trace...",
        "inner_failure": {
            "message": "k", "error_type": "builtins.KeyError", "stack_trace": None,
            "inner_failure": None, "properties": None,
        },
        "properties": {"code": 7.0, "why": "x"},
    }
    fired = history.from_protobuf(wrap("timerFired", CASES["timerFired"][0])).to_dict()
    assert fired == {"event_id": 7, "timestamp": "2024-03-04T05:06:07.890000+00:00",
                     "fire_at": "2024-03-05T00:00:00+00:00", "timer_id": 2}


def test_event_without_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="no event kind"):
        history.from_protobuf(pb.HistoryEvent(eventId=1, timestamp=ts(T0)))


def test_compat_alias_and_exports() -> None:
    assert history._from_protobuf is history.from_protobuf
    for name in history.__all__:
        assert hasattr(history, name), name


def test_events_are_immutable_and_constructible_positionally() -> None:
    event = history.TaskCompletedEvent(1, T0, 0, "5")
    assert event.task_scheduled_id == 0 and event.result == "5"
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.result = "6"  # type: ignore[misc]
    assert isinstance(event, history.HistoryEvent)
