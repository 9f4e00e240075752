"""The sidecar at the gRPC level, driven by a hand-written worker: turns, activities, timers, leases."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import empty_pb2
from google.protobuf.wrappers_pb2 import StringValue

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.engine_events import to_timestamp
from tests.e2e.conftest import FAST, complete, fast_sidecar, kinds, schedule, start, timer


def now() -> datetime:
    return datetime.now(timezone.utc)


def get(stub, iid: str) -> pb.OrchestrationState:
    res = stub.GetInstance(pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True))
    assert res.exists
    return res.orchestrationState


def test_activity_round_trip_and_wait_for_completion(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "rt", input=StringValue(value='"in"'))
    waited: dict[str, object] = {}

    def wait_completion() -> None:
        res = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="rt", getInputsAndOutputs=True), timeout=20)
        waited["state"] = res.orchestrationState
        waited["at"] = time.monotonic()

    waiter = threading.Thread(target=wait_completion)
    waiter.start()

    first = w.next("orchestratorRequest")
    req = first.orchestratorRequest
    assert req.instanceId == "rt" and req.executionId.value
    assert list(req.pastEvents) == []
    assert kinds(req.newEvents) == ["orchestratorStarted", "executionStarted"]
    assert req.newEvents[1].executionStarted.name == "orch"
    w.complete(first, schedule(1, "say", '"hi"'))

    act = w.next("activityRequest")
    assert act.activityRequest.name == "say" and act.activityRequest.input.value == '"hi"'
    assert act.activityRequest.orchestrationInstance.instanceId == "rt"
    assert act.activityRequest.orchestrationInstance.executionId.value == req.executionId.value
    assert act.completionToken != first.completionToken
    w.complete_activity(act, '"done"')

    second = w.next("orchestratorRequest")
    assert kinds(second.orchestratorRequest.pastEvents)[:3] == ["orchestratorStarted", "executionStarted", "taskScheduled"]
    new = second.orchestratorRequest.newEvents
    assert kinds(new) == ["orchestratorStarted", "taskCompleted"]
    assert new[1].taskCompleted.taskScheduledId == 1 and new[1].taskCompleted.result.value == '"done"'
    assert get(stub, "rt").orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
    assert "state" not in waited
    completed_at = time.monotonic()
    w.complete(second, complete(2, '"result"'))

    waiter.join(timeout=20)
    state = waited["state"]
    assert isinstance(state, pb.OrchestrationState)
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED and state.output.value == '"result"'
    assert float(waited["at"]) - completed_at < 1.0, "the long poll answers as soon as the state changes"  # type: ignore[arg-type]


def test_wait_for_start_and_timeouts(raw_env) -> None:
    stub, worker, _ = raw_env
    start(stub, "ws")
    with pytest.raises(grpc.RpcError) as err:
        stub.WaitForInstanceStart(pb.GetInstanceRequest(instanceId="ws"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as err:
        stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="missing"), timeout=0.3)
    # An unknown instance is waited for (it may be about to be created), up to the deadline.
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    w = worker()
    item = w.next("orchestratorRequest")
    w.complete(item)
    res = stub.WaitForInstanceStart(pb.GetInstanceRequest(instanceId="ws"), timeout=5)
    assert res.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING


def test_timer_fires_near_fire_at(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "tm")
    item = w.next("orchestratorRequest")
    fire_at = now() + timedelta(seconds=0.6)
    w.complete(item, timer(1, fire_at))
    fired = w.next("orchestratorRequest", timeout=10)
    arrived = now()
    assert kinds(fired.orchestratorRequest.newEvents) == ["orchestratorStarted", "timerFired"]
    assert fired.orchestratorRequest.newEvents[1].timerFired.timerId == 1
    # Never early; late by far less than this bound (bench/latency.py measures the real figure:
    # well under 100 ms on an idle machine). The bound leaves room for a loaded CI machine.
    assert fire_at <= arrived <= fire_at + timedelta(seconds=0.5), (fire_at, arrived)


def test_scheduled_start_is_honoured(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start_at = now() + timedelta(seconds=0.7)
    start(stub, "later", scheduledStartTimestamp=to_timestamp(start_at))
    assert get(stub, "later").orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
    item = w.next("orchestratorRequest", timeout=10)
    arrived = now()
    assert start_at <= arrived <= start_at + timedelta(seconds=0.5), (start_at, arrived)
    assert get(stub, "later").scheduledStartTimestamp.ToDatetime(tzinfo=timezone.utc) == start_at
    assert item.orchestratorRequest.instanceId == "later"


def test_stale_and_duplicate_tokens_are_rejected_and_change_nothing(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "tok")
    item = w.next("orchestratorRequest")
    w.complete(item, schedule(1, "a"))
    history = list(stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="tok")))
    for bad in (item.completionToken, "never-issued"):
        with pytest.raises(grpc.RpcError) as err:
            stub.CompleteOrchestratorTask(
                pb.OrchestratorResponse(instanceId="tok", completionToken=bad, actions=[complete(2, '"x"')])
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and bad in (err.value.details() or "")
    assert list(stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="tok"))) == history
    assert get(stub, "tok").orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
    act = w.next("activityRequest")
    w.complete_activity(act, '"1"')
    with pytest.raises(grpc.RpcError) as err:
        w.complete_activity(act, '"2"')
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    turn = w.next("orchestratorRequest")
    assert kinds(turn.orchestratorRequest.newEvents) == ["orchestratorStarted", "taskCompleted"]
    assert turn.orchestratorRequest.newEvents[1].taskCompleted.result.value == '"1"'


def test_stream_loss_requeues_after_grace_and_late_completion_is_accepted(raw_env) -> None:
    stub, worker, _ = raw_env
    first = worker()
    start(stub, "lost")
    item = first.next("orchestratorRequest")
    second = worker()
    closed_at = time.monotonic()
    first.close()
    again = second.next("orchestratorRequest", timeout=10)
    assert time.monotonic() - closed_at >= FAST.stream_grace * 0.9, "re-queued only after the grace period"
    assert again.orchestratorRequest.instanceId == "lost" and again.completionToken != item.completionToken
    with pytest.raises(grpc.RpcError) as err:
        stub.CompleteOrchestratorTask(pb.OrchestratorResponse(instanceId="lost", completionToken=item.completionToken))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    second.complete(again, complete(1))

    # Within the grace period, a completion for an item of a closed stream still counts.
    start(stub, "late")
    third = worker()
    second.close()
    item = third.next("orchestratorRequest")
    third.close()
    stub.CompleteOrchestratorTask(
        pb.OrchestratorResponse(instanceId="late", completionToken=item.completionToken, actions=[complete(1)])
    )
    res = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="late"), timeout=5)
    assert res.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


def test_abandon_requeues_with_a_new_token(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "ab")
    item = w.next("orchestratorRequest")
    stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
    again = w.next("orchestratorRequest", timeout=5)
    assert again.orchestratorRequest.instanceId == "ab" and again.completionToken != item.completionToken
    assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
    w.complete(again, schedule(1, "x"))
    act = w.next("activityRequest")
    stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest(completionToken=act.completionToken))
    act2 = w.next("activityRequest", timeout=5)
    assert act2.activityRequest.taskId == 1 and act2.completionToken != act.completionToken
    with pytest.raises(grpc.RpcError) as err:
        w.complete_activity(act, '"stale"')
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrency_limit_and_name_filter(raw_env) -> None:
    stub, worker, _ = raw_env
    filt = pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="other")])
    picky = worker(pb.GetWorkItemsRequest(workItemFilters=filt))
    limited = worker(pb.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=1))
    start(stub, "c1")
    start(stub, "c2")
    one = limited.next("orchestratorRequest")
    limited.expect_nothing(0.5)
    picky.expect_nothing(0.01)
    limited.complete(one, complete(1))
    two = limited.next("orchestratorRequest")
    assert {one.orchestratorRequest.instanceId, two.orchestratorRequest.instanceId} == {"c1", "c2"}
    start(stub, "o1", name="other")
    assert picky.next("orchestratorRequest").orchestratorRequest.instanceId == "o1"


def test_health_pings_while_idle(raw_env) -> None:
    _, worker, _ = raw_env
    w = worker()
    w.expect_nothing(FAST.health_ping_interval * 3.5)
    assert w.pings >= 3


def test_terminate_cancels_the_running_turn(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "term")
    item = w.next("orchestratorRequest")
    stub.TerminateInstance(pb.TerminateRequest(instanceId="term", output=StringValue(value='"stop"')))
    state = get(stub, "term")
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED and state.output.value == '"stop"'
    with pytest.raises(grpc.RpcError) as err:
        w.complete(item, complete(1, '"too late"'))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert get(stub, "term").output.value == '"stop"'
    stub.TerminateInstance(pb.TerminateRequest(instanceId="term"))  # already terminal: no-op


def test_suspend_resume_and_raise_event(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "sr")
    w.complete(w.next("orchestratorRequest"))
    stub.SuspendInstance(pb.SuspendRequest(instanceId="sr"))
    assert get(stub, "sr").orchestrationStatus == pb.ORCHESTRATION_STATUS_SUSPENDED
    stub.RaiseEvent(pb.RaiseEventRequest(instanceId="sr", name="go"))
    w.expect_nothing(0.4)
    stub.ResumeInstance(pb.ResumeRequest(instanceId="sr"))
    item = w.next("orchestratorRequest")
    assert kinds(item.orchestratorRequest.newEvents) == [
        "orchestratorStarted", "executionSuspended", "eventRaised", "executionResumed"
    ]
    assert item.orchestratorRequest.newEvents[2].eventRaised.name == "go"
    w.complete(item, complete(1))
    stub.RaiseEvent(pb.RaiseEventRequest(instanceId="sr", name="after"))  # finished: dropped, no error


def test_query_list_history_purge_restart(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    for i in range(3):
        start(stub, f"q{i}", input=StringValue(value=f'"{i}"'))
    for _ in range(3):
        item = w.next("orchestratorRequest")
        w.complete(item, complete(1, '"r"'))
    for i in range(3):
        stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=f"q{i}"), timeout=5)

    query = pb.InstanceQuery(maxInstanceCount=2, instanceIdPrefix=StringValue(value="q"))
    page1 = stub.QueryInstances(pb.QueryInstancesRequest(query=query))
    assert [s.instanceId for s in page1.orchestrationState] == ["q0", "q1"]
    assert not page1.orchestrationState[0].HasField("input")
    query.continuationToken.CopyFrom(page1.continuationToken)
    query.fetchInputsAndOutputs = True
    page2 = stub.QueryInstances(pb.QueryInstancesRequest(query=query))
    assert [s.instanceId for s in page2.orchestrationState] == ["q2"]
    assert page2.orchestrationState[0].input.value == '"2"' and not page2.HasField("continuationToken")

    ids = stub.ListInstanceIds(pb.ListInstanceIdsRequest(pageSize=10))
    assert sorted(ids.instanceIds) == ["q0", "q1", "q2"]

    chunks = list(stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="q0")))
    events = [e for c in chunks for e in c.events]
    assert kinds(events)[1] == "executionStarted" and "executionCompleted" in kinds(events)

    restarted = stub.RestartInstance(pb.RestartInstanceRequest(instanceId="q0", restartWithNewInstanceId=True))
    assert restarted.instanceId != "q0"
    item = w.next("orchestratorRequest")
    assert item.orchestratorRequest.instanceId == restarted.instanceId
    assert item.orchestratorRequest.newEvents[1].executionStarted.input.value == '"0"'
    w.complete(item, complete(1))
    same = stub.RestartInstance(pb.RestartInstanceRequest(instanceId="q1"))
    assert same.instanceId == "q1"
    assert get(stub, "q1").orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
    w.complete(w.next("orchestratorRequest"), complete(1))
    stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="q1"), timeout=5)

    purged = stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId="q0"))
    assert purged.deletedInstanceCount == 1 and purged.isComplete.value
    assert not stub.GetInstance(pb.GetInstanceRequest(instanceId="q0")).exists
    flt = pb.PurgeInstanceFilter(runtimeStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    purged = stub.PurgeInstances(pb.PurgeInstancesRequest(purgeInstanceFilter=flt))
    assert purged.deletedInstanceCount == 3


def test_long_history_streams_in_chunks(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "long")
    item = w.next("orchestratorRequest")
    w.complete(item, *[schedule(i, "x") for i in range(1, 251)])
    chunks = list(stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="long")))
    assert len(chunks) >= 3 and all(len(c.events) <= 100 for c in chunks)
    assert sum(len(c.events) for c in chunks) >= 252


def test_oversize_message_is_rejected_with_resource_exhausted() -> None:
    limit = 1024 * 1024
    with fast_sidecar(max_message_size=limit) as (_, address):
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 8 * limit)]) as channel:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)
            big = pb.CreateInstanceRequest(instanceId="big", name="orch")
            big.input.value = "x" * (2 * limit)
            with pytest.raises(grpc.RpcError) as err:
                stub.StartInstance(big)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert str(limit) in (err.value.details() or ""), err.value.details()
            assert not stub.GetInstance(pb.GetInstanceRequest(instanceId="big")).exists
            small = pb.CreateInstanceRequest(instanceId="small", name="orch")
            small.input.value = "x" * (limit // 2)
            stub.StartInstance(small)


def test_client_keepalive_pings_are_permitted(raw_env) -> None:
    stub, worker, server = raw_env
    options = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(f"localhost:{server.port}", options=options) as channel:
        keepalive_stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        keepalive_stub.Hello(empty_pb2.Empty(), timeout=5)
        w = worker()
        w.expect_nothing(1.5)  # the idle channel pings meanwhile
        keepalive_stub.Hello(empty_pb2.Empty(), timeout=5)
