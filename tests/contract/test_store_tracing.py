"""Trace contexts on every store: the orchestration's kept between turns, an activity's parent, an entity
message's sender's."""

from __future__ import annotations

from datetime import timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import new_event
from sidecar.hub import TaskHub
from tests.contract.test_store_instances import LEASE, T0, S, action, complete, start

CALL = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01")


def kept(span_id: str) -> pb.OrchestrationTraceContext:
    ctx = pb.OrchestrationTraceContext()
    ctx.spanID.value = span_id
    ctx.spanStartTime.FromSeconds(1_900_000_000)
    return ctx


def test_trace_contexts_are_kept_between_turns_and_reset_by_continue_as_new(hub: TaskHub) -> None:
    start(hub, "t")
    first = hub.lease_orchestration(T0, LEASE)
    assert first is not None and first.instance.trace_context is None
    scheduled = action(1, scheduleTask=pb.ScheduleTaskAction(name="act", parentTraceContext=CALL))
    hub.complete_orchestration(first.token, pb.OrchestratorResponse(
        instanceId="t", completionToken=first.token, actions=[scheduled], orchestrationTraceContext=kept("aa" * 8),
    ), T0)

    task = hub.lease_activity(T0, LEASE)
    assert task is not None and task.task.trace_context == CALL
    hub.complete_activity(task.token, pb.ActivityResponse(instanceId="t", taskId=1, completionToken=task.token), T0)

    t1 = T0 + timedelta(seconds=1)
    second = hub.lease_orchestration(t1, LEASE)
    assert second is not None and second.instance.trace_context == kept("aa" * 8)
    hub.complete_orchestration(second.token, pb.OrchestratorResponse(
        instanceId="t", completionToken=second.token,
        actions=[complete(2, S.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, result='"again"')],
    ), t1)
    third = hub.lease_orchestration(t1, LEASE)
    assert third is not None and third.instance.trace_context is None, "a new execution is a new span"


CLIENT = pb.TraceContext(traceParent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
ENTITY = pb.TraceContext(traceParent="00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01")
ENTITY.traceState.value = "vendor=1"


def test_entity_messages_keep_their_senders_trace_contexts(hub: TaskHub) -> None:
    """A client's signal and an entity's signal keep their trace contexts in the queue, through a
    hand-back and a re-lease; an orchestration's call has none (the protocol carries none)."""
    start(hub, "caller")
    first = hub.lease_orchestration(T0, LEASE)
    assert first is not None
    called = pb.EntityOperationCalledEvent(requestId="r1", operation="get")
    called.targetInstanceId.value = "@acct@a"
    hub.complete_orchestration(first.token, pb.OrchestratorResponse(instanceId="caller", completionToken=first.token,
        actions=[action(1, sendEntityMessage=pb.SendEntityMessageAction(entityOperationCalled=called))]), T0)
    signal_event = new_event(T0)
    signal_event.entityOperationSignaled.requestId = "s1"
    signal_event.entityOperationSignaled.operation = "deposit"
    hub.signal_entity("@acct@a", signal_event, T0, T0, CLIENT)

    item = hub.lease_entity(T0, LEASE)
    assert item is not None and item.trace_contexts == [None, CLIENT]
    hub.abandon_entity(item.token, T0)
    again = hub.lease_entity(T0 + timedelta(minutes=1), LEASE)
    assert again is not None and again.trace_contexts == [None, CLIENT]

    sent = pb.SendSignalAction(instanceId="@audit@log", name="record", parentTraceContext=ENTITY)
    hub.complete_entity(again.token, pb.EntityBatchResult(
        completionToken=again.token, results=[ok(), ok()], actions=[pb.OperationAction(sendSignal=sent)],
    ), T0 + timedelta(minutes=1))
    audit = hub.lease_entity(T0 + timedelta(minutes=1), LEASE, names=["audit"])
    assert audit is not None and audit.trace_contexts == [ENTITY]
    assert audit.trace_contexts[0] is not None and audit.trace_contexts[0].traceState.value == "vendor=1"


def ok() -> pb.OperationResult:
    return pb.OperationResult(success=pb.OperationResultSuccess())
