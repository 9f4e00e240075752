"""Bad input to the sidecar's entity RPCs: each gets its status and a message naming the problem, and changes nothing."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.wrappers_pb2 import Int32Value

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import RawWorker, fast_sidecar, start
from tests.e2e.entity_wire import (
    ENTITY_ITEM,
    batch_result,
    call_action,
    expect_status,
    finish,
    get_entity,
    lock_action,
    ok,
    operations,
    signal,
)

pytestmark = pytest.mark.our_sidecar("status codes and messages of this repository's sidecar")

Code = grpc.StatusCode

BAD_IDS = [
    ("", "instanceId is required"),
    ("counter@a", "must have the form '@name@key'"),
    ("@counter", "exactly two '@'"),
    ("@counter@a@b", "exactly two '@'"),
    ("@@a", "entity name is empty"),
    ("@counter@", "entity key is empty"),
    ("@c@" + "k" * 300, "at most 256"),
]


@pytest.fixture
def env():
    with fast_sidecar(max_message_size=64 * 1024) as (server, address):
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        worker = RawWorker(address)
        yield stub, worker, server
        worker.close()
        channel.close()


def nothing_stored(stub: pb_grpc.TaskHubSidecarServiceStub) -> bool:
    response = stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True)))
    return len(response.entities) == 0


@pytest.mark.parametrize(("entity_id", "words"), BAD_IDS)
def test_bad_entity_ids_are_invalid_argument(env, entity_id: str, words: str) -> None:
    stub, _, _ = env
    details = expect_status(lambda: signal(stub, entity_id, "op"), Code.INVALID_ARGUMENT, words)
    if entity_id and len(entity_id) < 100:
        assert f"'{entity_id}'" in details
    expect_status(lambda: get_entity(stub, entity_id), Code.INVALID_ARGUMENT, words)
    assert nothing_stored(stub)


def test_signal_without_operation_name(env) -> None:
    stub, worker, _ = env
    expect_status(lambda: signal(stub, "@counter@a", ""), Code.INVALID_ARGUMENT, "name is required")
    assert nothing_stored(stub)
    worker.expect_nothing(0.3)


def test_negative_page_size(env) -> None:
    stub, _, _ = env
    request = pb.QueryEntitiesRequest(query=pb.EntityQuery(pageSize=Int32Value(value=-1)))
    expect_status(lambda: stub.QueryEntities(request), Code.INVALID_ARGUMENT, "pageSize", "-1")


def test_completion_tokens_missing_unknown_or_stale(env) -> None:
    stub, worker, _ = env
    expect_status(lambda: stub.CompleteEntityTask(pb.EntityBatchResult()), Code.INVALID_ARGUMENT, "completionToken")
    expect_status(lambda: stub.CompleteEntityTask(pb.EntityBatchResult(completionToken="nope")), Code.NOT_FOUND,
                  "'nope'")
    expect_status(lambda: stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest()), Code.INVALID_ARGUMENT,
                  "completionToken")
    expect_status(lambda: stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken="nope")),
                  Code.NOT_FOUND, "'nope'")
    signal(stub, "@counter@a", "add")
    item = worker.next(ENTITY_ITEM)
    stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken=item.completionToken))
    expect_status(lambda: finish(worker, item, ok(), state="1"), Code.NOT_FOUND, "stale")
    entity = get_entity(stub, "@counter@a")
    assert entity is not None and not entity.HasField("serializedState") and entity.backlogQueueSize == 1


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda item: batch_result(item, ok(), ok(), state="1"), "2 operation results, but the batch had 1"),
        (lambda item: batch_result(item, pb.OperationResult(), state="1"), "neither success nor failure"),
        (lambda item: batch_result(item, ok(), state="1", actions=[
            pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="bad-target", name="x"))]), "'bad-target'"),
        (lambda item: batch_result(item, ok(), state="1", actions=[
            pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="o"))]),
         "no orchestration name"),
    ],
)
def test_invalid_batch_result_changes_nothing_and_the_batch_runs_again(env, build, words: str) -> None:
    stub, worker, _ = env
    start(stub, "caller")
    worker.complete(worker.next("orchestratorRequest"), call_action(1, "@counter@a", "get", "r1"))
    item = worker.next(ENTITY_ITEM)
    expect_status(lambda: stub.CompleteEntityTask(build(item)), Code.INVALID_ARGUMENT, words, "@counter@a")
    entity = get_entity(stub, "@counter@a")
    assert entity is not None and not entity.HasField("serializedState")
    again = worker.next(ENTITY_ITEM, timeout=5)  # offered again after a short back-off
    assert operations(again) == operations(item) and again.completionToken != item.completionToken
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="o")).exists is False
    finish(worker, again, ok("0"), state="0")
    turn = worker.next("orchestratorRequest")
    assert [e.WhichOneof("eventType") for e in turn.orchestratorRequest.newEvents][1:] == ["entityOperationCompleted"]


def test_state_over_the_message_limit_fails_the_operations(env) -> None:
    stub, worker, server = env
    limit = server.dispatcher.options.entity_payload_limit
    assert limit == 32 * 1024  # half of the 64 KiB message limit of this sidecar
    signal(stub, "@big@a", "set", "1")
    item = worker.next(ENTITY_ITEM)
    finish(worker, item, ok(), state="x" * (limit + 1))  # accepted: the operation fails, nothing is retried
    entity = get_entity(stub, "@big@a", include_state=False)
    assert entity is None or entity.backlogQueueSize == 0
    worker.expect_nothing(0.3)
    signal(stub, "@big@a", "set", "2")
    again = worker.next(ENTITY_ITEM, timeout=5)
    assert operations(again) == [("entityOperationSignaled", "set")]
    finish(worker, again, ok(), state="x" * limit)
    assert len(get_entity(stub, "@big@a").serializedState.value) == limit  # type: ignore[union-attr]


def test_orchestration_messages_to_bad_entity_ids_fail_the_turn(env) -> None:
    stub, worker, _ = env
    start(stub, "orch")
    turn = worker.next("orchestratorRequest")
    expect_status(lambda: worker.complete(turn, call_action(1, "not-an-entity", "get", "r1")),
                  Code.INVALID_ARGUMENT, "'not-an-entity'", "targetInstanceId")
    turn = worker.next("orchestratorRequest", timeout=5)  # the turn is offered again
    expect_status(lambda: worker.complete(turn, lock_action(1, "orch", "cs", ["@ok@1", "@bad"])),
                  Code.INVALID_ARGUMENT, "'@bad'", "lockSet")
    turn = worker.next("orchestratorRequest", timeout=5)
    expect_status(lambda: worker.complete(turn, lock_action(1, "orch", "cs", ["@ok@1", "@OK@1"])),
                  Code.INVALID_ARGUMENT, "'@OK@1' more than once")
    assert nothing_stored(stub)
