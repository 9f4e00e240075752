"""OpenTelemetry traces end to end: our client, the real sidecar, our worker, one trace.

Spans are collected with the OpenTelemetry SDK's in-memory exporter. The shape checked is the
official Python SDK's (1.12): the client's PRODUCER ``create_orchestration:NAME``, the
orchestration's SERVER span (one per execution, whatever the number of turns and replays), a
CLIENT span per activity / sub-orchestration call with the callee's SERVER span under it, an
INTERNAL span per timer, a SERVER span per entity operation (under the signalling client's span
or entity operation's span). The raw-protocol tests check what the sidecar stores and hands back:
the orchestration's trace context between turns, an activity's parent context, a signal's trace
context in the v1 entity batch, and bad trace contexts refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import RawWorker, complete, eventually, fast_sidecar, schedule, start
from tests.otel_support import (
    attributes,
    collecting_spans,
    named,
    only,
    parent_id,
    span_exporter,
    span_id,
    spans_of_trace,
)
from tests.payload_support import MemoryPayloadStore

WAIT = 15.0


def double(ctx: task.ActivityContext, value: int) -> int:
    return value * 2


def explode(ctx: task.ActivityContext, _: Any) -> None:
    raise ValueError("boom")


def traced_child(ctx: task.OrchestrationContext, value: int) -> Any:
    return (yield ctx.call_activity(double, input=value))


def traced_parent(ctx: task.OrchestrationContext, value: int) -> Any:
    first = yield ctx.call_activity(double, input=value)
    second = yield ctx.call_activity(double, input=first)
    third = yield ctx.call_sub_orchestrator(traced_child, input=second)
    yield ctx.create_timer(timedelta(milliseconds=50))
    return third


def traced_failure(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity(explode)


def counter(ctx: entities.EntityContext, value: Any) -> None:
    ctx.set_state((ctx.get_state(int) or 0) + (value or 0))


def relay(ctx: entities.EntityContext, value: Any) -> None:
    """Passes each operation on to the counter of the same key, as a signal."""
    ctx.signal_entity(entities.EntityInstanceId("counter", ctx.entity_id.key), "add", value)


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[TaskHubGrpcClient, str]]:
    with collecting_spans(), fast_sidecar() as (_, address):
        worker = TaskHubGrpcWorker(host_address=address)
        for fn in (traced_parent, traced_child, traced_failure):
            worker.add_orchestrator(fn)
        worker.add_activity(double)
        worker.add_activity(explode)
        worker.add_entity(counter)
        worker.add_entity(relay)
        worker.start()
        client = TaskHubGrpcClient(host_address=address)
        try:
            yield client, address
        finally:
            client.close()
            worker.stop()


def run_traced(client: TaskHubGrpcClient, orchestrator: Any, value: Any) -> tuple[int, int, str]:
    """Start ``orchestrator`` inside a test span and wait for it; (trace ID, test span ID, instance ID)."""
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("test") as root:
        iid = client.schedule_new_orchestration(orchestrator, input=value, instance_id=f"tr-{uuid.uuid4().hex[:8]}")
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None
    context = root.get_span_context()
    return context.trace_id, context.span_id, iid


def test_one_trace_from_the_client_through_activities_and_a_sub_orchestration(
    env: tuple[TaskHubGrpcClient, str],
) -> None:
    client, _ = env
    trace_id, root_id, iid = run_traced(client, traced_parent, 3)
    assert client.get_orchestration_state(iid).runtime_status == OrchestrationStatus.COMPLETED  # type: ignore[union-attr]
    spans = spans_of_trace(trace_id)

    create = only(spans, "create_orchestration:traced_parent")
    assert create.kind == SpanKind.PRODUCER and parent_id(create) == root_id
    assert attributes(create) == {
        "durabletask.type": "orchestration", "durabletask.task.name": "traced_parent",
        "durabletask.task.instance_id": iid,
    }
    orchestration = only(spans, "orchestration:traced_parent")
    assert orchestration.kind == SpanKind.SERVER and parent_id(orchestration) == span_id(create)
    assert attributes(orchestration) == {
        "durabletask.type": "orchestration", "durabletask.task.name": "traced_parent",
        "durabletask.task.instance_id": iid, "durabletask.task.status": "Completed",
    }

    # Three calls of the activity (two from the parent, one from the child), each a CLIENT span
    # with the activity's SERVER span under it; no more, although turns replayed them.
    clients = [s for s in named(spans, "activity:double") if s.kind == SpanKind.CLIENT]
    servers = [s for s in named(spans, "activity:double") if s.kind == SpanKind.SERVER]
    assert len(clients) == 3 and len(servers) == 3
    assert sorted(parent_id(s) or 0 for s in servers) == sorted(span_id(s) for s in clients)
    parent_calls = [s for s in clients if parent_id(s) == span_id(orchestration)]
    assert [attributes(s)["durabletask.task.task_id"] for s in sorted(parent_calls, key=lambda s: s.start_time or 0)] \
        == ["1", "2"]
    for call in parent_calls:
        assert attributes(call) == {
            "durabletask.type": "activity", "durabletask.task.name": "double",
            "durabletask.task.instance_id": iid, "durabletask.task.task_id": attributes(call)["durabletask.task.task_id"],
        }
    server = next(s for s in servers if parent_id(s) == span_id(parent_calls[0]))
    assert attributes(server)["durabletask.type"] == "activity"
    assert attributes(server)["durabletask.task.instance_id"] == iid

    # The orchestration span spans every turn: one ID, started before its first call.
    assert orchestration.start_time is not None and orchestration.end_time is not None
    assert all(orchestration.start_time <= (s.start_time or 0) for s in parent_calls)
    assert all((s.end_time or 0) <= orchestration.end_time for s in parent_calls)

    child_spans = named(spans, "orchestration:traced_child")
    sub_call = next(s for s in child_spans if s.kind == SpanKind.CLIENT)
    child = next(s for s in child_spans if s.kind == SpanKind.SERVER)
    assert len(child_spans) == 2
    assert parent_id(sub_call) == span_id(orchestration) and parent_id(child) == span_id(sub_call)
    child_id = attributes(child)["durabletask.task.instance_id"]
    assert attributes(sub_call)["durabletask.task.instance_id"] == child_id and child_id.startswith(iid)
    assert [s for s in clients if parent_id(s) == span_id(child)], "the child's activity call hangs on the child"

    timer = only(spans, "orchestration:traced_parent:timer")
    assert timer.kind == SpanKind.INTERNAL and parent_id(timer) == span_id(orchestration)
    assert attributes(timer)["durabletask.type"] == "timer" and "durabletask.fire_at" in attributes(timer)
    assert len(spans) == 1 + 1 + 1 + 6 + 2 + 1  # test, create, orchestration, activities, child, timer


def test_failures_mark_the_spans(env: tuple[TaskHubGrpcClient, str]) -> None:
    client, _ = env
    trace_id, _, iid = run_traced(client, traced_failure, None)
    spans = spans_of_trace(trace_id)
    orchestration = only(spans, "orchestration:traced_failure")
    assert orchestration.status.status_code == StatusCode.ERROR
    assert attributes(orchestration)["durabletask.task.status"] == "Failed"
    run, call = sorted(named(spans, "activity:explode"), key=lambda s: s.kind.value)
    assert run.kind == SpanKind.SERVER and call.kind == SpanKind.CLIENT
    assert run.status.status_code == StatusCode.ERROR and call.status.status_code == StatusCode.ERROR
    assert "boom" in (call.status.description or "")
    assert [e.name for e in run.events] == ["exception"]


def test_entity_operations_get_server_spans(env: tuple[TaskHubGrpcClient, str]) -> None:
    client, _ = env
    key = uuid.uuid4().hex[:8]
    client.signal_entity(entities.EntityInstanceId("counter", key), "add", input=2)

    def operation_span() -> Any:
        return next((s for s in span_exporter().get_finished_spans()
                     if s.name == "entity:counter:add" and attributes(s)["durabletask.task.instance_id"] == f"@counter@{key}"),
                    None)

    span = eventually(operation_span, WAIT, "the entity operation's span")
    assert span.kind == SpanKind.SERVER
    assert attributes(span) == {
        "durabletask.type": "entity", "durabletask.task.name": "counter",
        "durabletask.task.instance_id": f"@counter@{key}", "durabletask.entity.operation": "add",
    }


def test_a_signal_joins_the_callers_trace_and_an_entity_signal_keeps_the_chain(
    env: tuple[TaskHubGrpcClient, str],
) -> None:
    client, _ = env
    key = uuid.uuid4().hex[:8]
    with trace.get_tracer("tests").start_as_current_span("test") as root:
        client.signal_entity(entities.EntityInstanceId("relay", key), "forward", input=4)
    context = root.get_span_context()

    def counted() -> Any:
        return next((s for s in spans_of_trace(context.trace_id) if s.name == "entity:counter:add"), None)

    added = eventually(counted, WAIT, "the relayed operation's span, in the client's trace")
    forwarded = only(spans_of_trace(context.trace_id), "entity:relay:forward")
    assert forwarded.kind == SpanKind.SERVER and parent_id(forwarded) == context.span_id
    assert attributes(forwarded)["durabletask.task.instance_id"] == f"@relay@{key}"
    assert added.kind == SpanKind.SERVER and parent_id(added) == span_id(forwarded)
    assert attributes(added)["durabletask.task.instance_id"] == f"@counter@{key}"
    assert eventually(lambda: state_of(client, entities.EntityInstanceId("counter", key)), WAIT, "the counter") == 4


def state_of(client: TaskHubGrpcClient, entity: entities.EntityInstanceId) -> int | None:
    """The entity's state, or None until it has one (a queued signal makes it exist without state)."""
    metadata = client.get_entity(entity)
    return None if metadata is None else metadata.get_state(int)


def text_keeper(ctx: entities.EntityContext, text: str) -> None:
    """Keeps the length of the text; the entity keyed "first" passes the text on to "second"."""
    ctx.set_state(len(text))
    if ctx.entity_id.key.endswith("first"):
        ctx.signal_entity(entities.EntityInstanceId("text_keeper", ctx.entity_id.key[:-5] + "second"), "keep", text)


def test_traced_entity_batches_with_large_payloads_resolve_their_tokens() -> None:
    """The v1 batch (sent because the signals carry trace contexts) goes through the worker's payload
    store like the v2 form: the tokens of the client's and the entity's large inputs are resolved."""
    store = MemoryPayloadStore()
    text = "p" * 5000  # over the store's threshold: it travels as a token
    key = uuid.uuid4().hex[:8]
    with collecting_spans(), fast_sidecar() as (_, address):
        worker = TaskHubGrpcWorker(host_address=address, payload_store=store)
        worker.add_entity(text_keeper)
        with worker, TaskHubGrpcClient(host_address=address, payload_store=store) as client:
            worker.start()
            with trace.get_tracer("tests").start_as_current_span("test") as root:
                client.signal_entity(entities.EntityInstanceId("text_keeper", key + "first"), "keep", input=text)
            second = entities.EntityInstanceId("text_keeper", key + "second")
            kept = eventually(lambda: state_of(client, second), WAIT, "the second entity's state")
            assert kept == len(text)
            assert client.get_entity(entities.EntityInstanceId("text_keeper", key + "first")).get_state(int) == len(text)  # type: ignore[union-attr]
            assert store.uploaded_for, "the large inputs were stored as tokens"
            spans = spans_of_trace(root.get_span_context().trace_id)
            first_span, second_span = sorted(named(spans, "entity:text_keeper:keep"), key=lambda s: s.start_time or 0)
            assert parent_id(first_span) == root.get_span_context().span_id
            assert parent_id(second_span) == span_id(first_span)


# ----- what the sidecar carries (raw protocol) -----

PARENT = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
CALL = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01")


@pytest.fixture(scope="module")
def raw() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker]]:
    with fast_sidecar() as (_, address):
        channel = grpc.insecure_channel(address)
        worker = RawWorker(address)
        try:
            yield pb_grpc.TaskHubSidecarServiceStub(channel), worker
        finally:
            worker.close()
            channel.close()


def test_the_sidecar_hands_back_the_orchestration_trace_context_and_passes_parents_on(
    raw: tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker],
) -> None:
    stub, worker = raw
    iid = start(stub, f"raw-{uuid.uuid4().hex[:8]}", parentTraceContext=PARENT)
    first = worker.next("orchestratorRequest")
    request = first.orchestratorRequest
    started = next(e for e in request.newEvents if e.HasField("executionStarted")).executionStarted
    assert started.parentTraceContext == PARENT
    assert not request.HasField("orchestrationTraceContext")

    kept = pb.OrchestrationTraceContext()
    kept.spanID.value = "1122334455667788"
    kept.spanStartTime.FromNanoseconds(1_700_000_000_123_456_000)
    action = schedule(1, "act")
    action.scheduleTask.parentTraceContext.CopyFrom(CALL)
    worker.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
        instanceId=iid, completionToken=first.completionToken, actions=[action], orchestrationTraceContext=kept,
    ))
    activity = worker.next("activityRequest")
    assert activity.activityRequest.parentTraceContext == CALL
    worker.complete_activity(activity, "1")

    item = worker.next("orchestratorRequest")
    second = item.orchestratorRequest
    assert second.orchestrationTraceContext == kept
    scheduled = next(e for e in second.pastEvents if e.HasField("taskScheduled"))
    assert scheduled.taskScheduled.parentTraceContext == CALL
    worker.complete(item, complete(2, "done"))
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId=iid))
    assert state.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


@pytest.mark.parametrize("bad, named_field", [
    (pb.TraceContext(traceParent="x" * 300), "parentTraceContext.traceParent"),
    (pb.TraceContext(traceParent="00-ab\n"), "parentTraceContext.traceParent"),
])
def test_bad_trace_contexts_are_refused_and_change_nothing(
    raw: tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker], bad: pb.TraceContext, named_field: str,
) -> None:
    stub, _ = raw
    iid = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as refused:
        start(stub, iid, parentTraceContext=bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named_field in (refused.value.details() or "")
    assert not stub.GetInstance(pb.GetInstanceRequest(instanceId=iid)).exists


def test_a_turn_with_a_bad_trace_context_is_refused(raw: tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker]) -> None:
    stub, worker = raw
    iid = start(stub, f"badturn-{uuid.uuid4().hex[:8]}")
    item = worker.next("orchestratorRequest")
    action = schedule(1, "act")
    action.scheduleTask.parentTraceContext.traceParent = "y" * 300
    with pytest.raises(grpc.RpcError) as refused:
        worker.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
            instanceId=iid, completionToken=item.completionToken, actions=[action],
        ))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parentTraceContext.traceParent" in (refused.value.details() or "")
    history = [e for c in stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid)) for e in c.events]
    assert not any(e.HasField("taskScheduled") for e in history)


def filtered(address: str, **filters: Any) -> RawWorker:
    """A raw worker taking only the work its filters name."""
    return RawWorker(address, pb.GetWorkItemsRequest(workItemFilters=pb.WorkItemFilters(**filters)))


def test_a_traced_signal_goes_out_in_a_v1_batch_and_replies_still_reach_the_caller() -> None:
    """A batch holding an operation with a trace context is sent as WorkItem.entityRequest
    (OperationRequest.traceContext); an orchestration's call in the same batch carries none (the
    protocol gives orchestrations' entity messages no field for it) and its reply is routed as usual.
    A batch without trace contexts keeps the v2 form."""
    with fast_sidecar() as (_, address), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        orchestrations = filtered(address, orchestrations=[pb.OrchestrationFilter(name="orch")])
        try:
            iid = start(stub, "caller")
            turn = orchestrations.next("orchestratorRequest")
            called = pb.EntityOperationCalledEvent(requestId="r1", operation="get")
            called.targetInstanceId.value = "@acct@k"
            called.parentInstanceId.value = iid
            call = pb.OrchestratorAction(id=1, sendEntityMessage=pb.SendEntityMessageAction(entityOperationCalled=called))
            orchestrations.complete(turn, call)
            signal = pb.SignalEntityRequest(instanceId="@acct@k", name="deposit", requestId="s1", parentTraceContext=PARENT)
            signal.input.value = "5"
            stub.SignalEntity(signal)

            entities_worker = filtered(address, entities=[pb.EntityFilter(name="acct")])
            try:
                item = entities_worker.next("entityRequest")
                batch = item.entityRequest
                assert batch.instanceId == "@acct@k"
                get, deposit = batch.operations
                assert (get.operation, get.requestId, get.HasField("traceContext")) == ("get", "r1", False)
                assert (deposit.operation, deposit.requestId, deposit.input.value) == ("deposit", "s1", "5")
                assert deposit.traceContext == PARENT
                result = pb.EntityBatchResult(completionToken=item.completionToken, results=[
                    pb.OperationResult(success=pb.OperationResultSuccess(result=StringValue(value="7"))),
                    pb.OperationResult(success=pb.OperationResultSuccess()),
                ])
                result.entityState.value = "5"
                entities_worker.stub.CompleteEntityTask(result)

                reply = orchestrations.next("orchestratorRequest")
                done = next(e for e in reply.orchestratorRequest.newEvents if e.HasField("entityOperationCompleted"))
                assert done.entityOperationCompleted.requestId == "r1" and done.entityOperationCompleted.output.value == "7"
                orchestrations.complete(reply, complete(2, "done"))

                stub.SignalEntity(pb.SignalEntityRequest(instanceId="@acct@k", name="deposit", requestId="s2"))
                plain = entities_worker.next("entityRequestV2")
                assert plain.entityRequestV2.entityState.value == "5"
            finally:
                entities_worker.close()
        finally:
            orchestrations.close()


@pytest.mark.parametrize("bad, named_field", [
    (pb.TraceContext(traceParent="x" * 300), "parentTraceContext.traceParent"),
    (pb.TraceContext(traceParent="00-ab", spanID="\x01"), "parentTraceContext.spanID"),
])
def test_a_signal_with_a_bad_trace_context_is_refused_and_queues_nothing(
    raw: tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker], bad: pb.TraceContext, named_field: str,
) -> None:
    stub, _ = raw
    entity_id = f"@refused@{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as refused:
        stub.SignalEntity(pb.SignalEntityRequest(instanceId=entity_id, name="add", parentTraceContext=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named_field in (refused.value.details() or "")
    assert not stub.GetEntity(pb.GetEntityRequest(instanceId=entity_id)).exists
