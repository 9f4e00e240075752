"""Trace contexts on every store: the orchestration's kept between turns, an activity's parent."""

from __future__ import annotations

from datetime import timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
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
