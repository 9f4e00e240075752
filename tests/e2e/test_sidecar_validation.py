"""Bad input gets the right gRPC status, a message naming the problem, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import RawWorker, complete, fast_sidecar, start

Code = grpc.StatusCode


@pytest.fixture
def env() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, str]]:
    with fast_sidecar() as (_, address):
        with grpc.insecure_channel(address) as channel:
            yield pb_grpc.TaskHubSidecarServiceStub(channel), address


def fails(call: Callable[[], Any], code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    for word in words:
        assert word in details, (word, details)


def all_ids(stub: pb_grpc.TaskHubSidecarServiceStub) -> list[str]:
    res = stub.QueryInstances(pb.QueryInstancesRequest(query=pb.InstanceQuery()))
    return [s.instanceId for s in res.orchestrationState]


def finished(stub: pb_grpc.TaskHubSidecarServiceStub, address: str, iid: str) -> None:
    start(stub, iid)
    stub.TerminateInstance(pb.TerminateRequest(instanceId=iid))


def test_start_instance_validation(env) -> None:
    stub, _ = env
    create = pb.CreateInstanceRequest
    fails(lambda: stub.StartInstance(create(instanceId="a", name="")), Code.INVALID_ARGUMENT, "name")
    fails(lambda: stub.StartInstance(create(instanceId="", name="o")), Code.INVALID_ARGUMENT, "instanceId")
    fails(lambda: stub.StartInstance(create(instanceId="x" * 257, name="o")), Code.INVALID_ARGUMENT, "instanceId", "256")
    fails(lambda: stub.StartInstance(create(instanceId="a\nb", name="o")), Code.INVALID_ARGUMENT, "control")
    fails(lambda: stub.StartInstance(create(instanceId="a", name="n" * 257)), Code.INVALID_ARGUMENT, "name", "256")
    fails(lambda: stub.StartInstance(create(instanceId="a", name="o\x00")), Code.INVALID_ARGUMENT, "control")
    fails(lambda: stub.StartInstance(create(instanceId="@counter@k", name="o")), Code.INVALID_ARGUMENT, "entity")
    fails(lambda: stub.RaiseEvent(pb.RaiseEventRequest(instanceId="a", name="e" * 257)), Code.INVALID_ARGUMENT, "256")
    fails(
        lambda: stub.SignalEntity(pb.SignalEntityRequest(instanceId="@c@k", name="o" * 257, requestId="r")),
        Code.INVALID_ARGUMENT,
        "256",
    )
    assert all_ids(stub) == []
    stub.StartInstance(create(instanceId="x" * 256, name="o"))
    assert all_ids(stub) == ["x" * 256]


def test_start_instance_id_reuse(env) -> None:
    stub, address = env
    start(stub, "dup")
    fails(lambda: start(stub, "dup"), Code.ALREADY_EXISTS, "dup")
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    fails(lambda: start(stub, "dup", orchestrationIdReusePolicy=policy), Code.ALREADY_EXISTS, "PENDING")
    before = stub.GetInstance(pb.GetInstanceRequest(instanceId="dup")).orchestrationState
    policy = pb.OrchestrationIdReusePolicy(
        replaceableStatus=[pb.ORCHESTRATION_STATUS_PENDING, pb.ORCHESTRATION_STATUS_TERMINATED]
    )
    start(stub, "dup", orchestrationIdReusePolicy=policy)
    after = stub.GetInstance(pb.GetInstanceRequest(instanceId="dup")).orchestrationState
    assert after.executionId.value != before.executionId.value
    finished(stub, address, "done")
    start(stub, "done")  # a finished instance is replaced by a fresh one
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="done")).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING


def test_unknown_instances(env) -> None:
    stub, _ = env
    assert not stub.GetInstance(pb.GetInstanceRequest(instanceId="ghost")).exists
    fails(lambda: stub.RaiseEvent(pb.RaiseEventRequest(instanceId="ghost", name="e")), Code.NOT_FOUND, "ghost")
    fails(lambda: stub.TerminateInstance(pb.TerminateRequest(instanceId="ghost")), Code.NOT_FOUND, "ghost")
    fails(lambda: stub.SuspendInstance(pb.SuspendRequest(instanceId="ghost")), Code.NOT_FOUND, "ghost")
    fails(lambda: stub.ResumeInstance(pb.ResumeRequest(instanceId="ghost")), Code.NOT_FOUND, "ghost")
    fails(lambda: stub.RestartInstance(pb.RestartInstanceRequest(instanceId="ghost")), Code.NOT_FOUND, "ghost")
    # Waits on an unknown instance wait for it to appear, up to the caller's deadline.
    fails(lambda: stub.WaitForInstanceStart(pb.GetInstanceRequest(instanceId="ghost"), timeout=0.5),
          Code.DEADLINE_EXCEEDED)
    fails(
        lambda: stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="ghost")), Code.NOT_FOUND, "ghost"
    )
    assert stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId="ghost")).deletedInstanceCount == 0
    assert all_ids(stub) == []


def test_missing_fields(env) -> None:
    stub, _ = env
    start(stub, "a")
    fails(lambda: stub.GetInstance(pb.GetInstanceRequest()), Code.INVALID_ARGUMENT, "instanceId")
    fails(lambda: stub.RaiseEvent(pb.RaiseEventRequest(instanceId="a")), Code.INVALID_ARGUMENT, "name")
    fails(lambda: stub.PurgeInstances(pb.PurgeInstancesRequest()), Code.INVALID_ARGUMENT, "instanceId")
    query = pb.InstanceQuery(maxInstanceCount=-1)
    fails(lambda: stub.QueryInstances(pb.QueryInstancesRequest(query=query)), Code.INVALID_ARGUMENT, "maxInstanceCount")
    fails(lambda: stub.ListInstanceIds(pb.ListInstanceIdsRequest(pageSize=-5)), Code.INVALID_ARGUMENT, "pageSize")
    for call in (
        lambda: stub.CompleteOrchestratorTask(pb.OrchestratorResponse(instanceId="a")),
        lambda: stub.CompleteActivityTask(pb.ActivityResponse(instanceId="a")),
        lambda: stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest()),
        lambda: stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest()),
    ):
        fails(call, Code.INVALID_ARGUMENT, "completionToken")
    for call in (
        lambda: stub.CompleteActivityTask(pb.ActivityResponse(completionToken="nope")),
        lambda: stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken="nope")),
        lambda: stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest(completionToken="nope")),
    ):
        fails(call, Code.NOT_FOUND, "nope")
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="a")).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING


def test_wrong_states(env) -> None:
    stub, address = env
    start(stub, "live")
    fails(lambda: stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId="live")), Code.FAILED_PRECONDITION, "live")
    batch = pb.InstanceBatch(instanceIds=["live"])
    fails(lambda: stub.PurgeInstances(pb.PurgeInstancesRequest(instanceBatch=batch)), Code.FAILED_PRECONDITION, "live")
    fails(lambda: stub.RestartInstance(pb.RestartInstanceRequest(instanceId="live")), Code.FAILED_PRECONDITION, "live")
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="live")).exists
    finished(stub, address, "over")
    fails(lambda: stub.SuspendInstance(pb.SuspendRequest(instanceId="over")), Code.FAILED_PRECONDITION, "over")
    fails(lambda: stub.ResumeInstance(pb.ResumeRequest(instanceId="over")), Code.FAILED_PRECONDITION, "over")
    stub.TerminateInstance(pb.TerminateRequest(instanceId="over"))  # no-op success
    stub.RaiseEvent(pb.RaiseEventRequest(instanceId="over", name="late"))  # dropped, success
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="over")).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED


def test_invalid_turn_is_rejected_and_changes_nothing(env) -> None:
    stub, address = env
    worker = RawWorker(address)
    try:
        start(stub, "bad")
        item = worker.next("orchestratorRequest")
        broken = pb.OrchestratorAction(id=1)  # no action kind
        fails(lambda: worker.complete(item, broken), Code.INVALID_ARGUMENT)
        history = [e for c in stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="bad")) for e in c.events]
        assert history == []
        state = stub.GetInstance(pb.GetInstanceRequest(instanceId="bad")).orchestrationState
        assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
        again = worker.next("orchestratorRequest", timeout=5)  # offered again after a short back-off
        assert again.completionToken != item.completionToken
        worker.complete(again, complete(1))
    finally:
        worker.close()


def test_skip_graceful_terminations(env) -> None:
    stub, address = env
    request = pb.SkipGracefulOrchestrationTerminationsRequest
    fails(lambda: stub.SkipGracefulOrchestrationTerminations(request()), Code.INVALID_ARGUMENT, "instanceIds")
    too_many = pb.InstanceBatch(instanceIds=[f"i{n}" for n in range(1001)])
    fails(lambda: stub.SkipGracefulOrchestrationTerminations(request(instanceBatch=too_many)),
          Code.INVALID_ARGUMENT, "1000")
    start(stub, "live")
    finished(stub, address, "over")
    batch = pb.InstanceBatch(instanceIds=["live", "over", "ghost"])
    answer = stub.SkipGracefulOrchestrationTerminations(request(instanceBatch=batch, reason=wrappers_pb2.StringValue(value='"stop"')))
    assert list(answer.unterminatedInstanceIds) == ["over", "ghost"]
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="live", getInputsAndOutputs=True)).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED and state.output.value == '"stop"'


def test_metadata_headers_are_ignored(env) -> None:
    stub, _ = env
    metadata = (("taskhub", "hub"), ("x-user-agent", "other-sdk/1.0"), ("workerid", "w1"), ("authorization", "x"))
    stub.StartInstance(pb.CreateInstanceRequest(instanceId="m", name="o"), metadata=metadata)
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="m"), metadata=metadata).exists
