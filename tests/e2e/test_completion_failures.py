"""No failure of a completion pins its work item until a lease runs out (issue 13, item 2).

Against an in-process sidecar whose leases last 300 s, over real gRPC: an unexpected error in
each completion RPC (CompleteOrchestratorTask, CompleteActivityTask, CompleteEntityTask and the
batched CompleteActivityTasks / CompleteOrchestratorTasks) is answered INTERNAL naming the error,
changes nothing, and the item is offered again within seconds under a new token. So is an item
whose result held a value the store cannot keep when no replacement comes, and an item whose
hand-back failed too (the store was down for a moment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from sidecar.server import SidecarServer
from sidecar.store.base import StoreUnavailableError, StoreValueError
from tests.e2e.conftest import FAST, RawWorker, complete, fast_sidecar, schedule, start
from tests.e2e.entity_wire import ENTITY_ITEM, batch_result, ok
from tests.e2e.test_sidecar_bad_input import refused, snapshot

pytestmark = pytest.mark.our_sidecar("failure handling of this repository's sidecar")

Code = grpc.StatusCode
LONG_LEASES = dataclasses.replace(
    FAST,
    orchestration_lease=timedelta(seconds=300),
    activity_lease=timedelta(seconds=300),
    entity_lease=timedelta(seconds=300),
)
# Far below the 300 s lease: the item must come back by its hand-back, not by the lease's end.
REOFFERED_WITHIN = 5.0


@dataclasses.dataclass
class Env:
    server: SidecarServer
    stub: pb_grpc.TaskHubSidecarServiceStub
    batches: batches_grpc.WorkBatchesStub
    worker: RawWorker


@pytest.fixture
def env() -> Iterator[Env]:
    with fast_sidecar(LONG_LEASES) as (server, address), grpc.insecure_channel(address) as channel:
        worker = RawWorker(address)
        try:
            yield Env(server, pb_grpc.TaskHubSidecarServiceStub(channel), batches_grpc.WorkBatchesStub(channel), worker)
        finally:
            worker.close()


def fail_once(obj: object, name: str, error: BaseException) -> list[int]:
    """Make ``obj.name`` raise ``error`` on its next call only; returns a list counting the calls."""
    original = getattr(obj, name)
    calls: list[int] = []

    def replaced(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return original(*args, **kwargs)

    setattr(obj, name, replaced)
    return calls


def outcome_of(call: Callable[[], batches_pb.CompletionOutcomes]) -> tuple[grpc.StatusCode, str]:
    """The status of the only result of a batched completion."""
    (outcome,) = call().outcomes
    return next(c for c in grpc.StatusCode if c.value[0] == outcome.code), outcome.message


def turn_response(item: pb.WorkItem, *actions: pb.OrchestratorAction) -> pb.OrchestratorResponse:
    return pb.OrchestratorResponse(
        instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken, actions=actions
    )


def activity_response(item: pb.WorkItem, result: str) -> pb.ActivityResponse:
    response = pb.ActivityResponse(
        instanceId=item.activityRequest.orchestrationInstance.instanceId,
        taskId=item.activityRequest.taskId,
        completionToken=item.completionToken,
    )
    response.result.value = result
    return response


def reoffered(worker: RawWorker, kind: str, item: pb.WorkItem) -> pb.WorkItem:
    again = worker.next(kind, timeout=REOFFERED_WITHIN)
    assert again.completionToken != item.completionToken
    return again


def new_events(item: pb.WorkItem) -> list[pb.HistoryEvent]:
    """A turn's new events without its own orchestratorStarted (which carries the turn's time)."""
    return [e for e in item.orchestratorRequest.newEvents if not e.HasField("orchestratorStarted")]


def injected(rpc: str) -> tuple[str, ...]:
    return (f"{rpc} failed", "RuntimeError", "injected")


@pytest.mark.parametrize("batched", [False, True], ids=["CompleteOrchestratorTask", "CompleteOrchestratorTasks"])
def test_an_unexpected_error_completing_a_turn_hands_it_back(env: Env, batched: bool) -> None:
    start(env.stub, "o")
    item = env.worker.next("orchestratorRequest")
    fail_once(env.server.hub, "complete_orchestrations", RuntimeError("injected"))
    response = turn_response(item, schedule(1, "work"))
    if batched:
        before = snapshot(env.stub)
        code, message = outcome_of(lambda: env.batches.CompleteOrchestratorTasks(
            batches_pb.OrchestratorResultBatch(results=[response])))
        assert code == Code.INTERNAL and all(w in message for w in injected("CompleteOrchestratorTask")), message
        assert snapshot(env.stub) == before
    else:
        refused(env.stub, lambda: env.stub.CompleteOrchestratorTask(response), Code.INTERNAL,
                *injected("CompleteOrchestratorTask"))
    again = reoffered(env.worker, "orchestratorRequest", item)
    assert new_events(again) == new_events(item)
    env.worker.complete(again, schedule(1, "work"))
    assert env.worker.next("activityRequest").activityRequest.name == "work"


@pytest.mark.parametrize("batched", [False, True], ids=["CompleteActivityTask", "CompleteActivityTasks"])
def test_an_unexpected_error_completing_an_activity_hands_it_back(env: Env, batched: bool) -> None:
    start(env.stub, "o")
    env.worker.complete(env.worker.next("orchestratorRequest"), schedule(1, "work"))
    item = env.worker.next("activityRequest")
    fail_once(env.server.hub, "complete_activities", RuntimeError("injected"))
    response = activity_response(item, '"lost"')
    if batched:
        before = snapshot(env.stub)
        code, message = outcome_of(lambda: env.batches.CompleteActivityTasks(
            batches_pb.ActivityResultBatch(results=[response])))
        assert code == Code.INTERNAL and all(w in message for w in injected("CompleteActivityTask")), message
        assert snapshot(env.stub) == before
    else:
        refused(env.stub, lambda: env.stub.CompleteActivityTask(response), Code.INTERNAL,
                *injected("CompleteActivityTask"))
    again = reoffered(env.worker, "activityRequest", item)
    env.worker.complete_activity(again, '"kept"')
    turn = env.worker.next("orchestratorRequest")
    assert [e.taskCompleted.result.value for e in new_events(turn)] == ['"kept"']


def test_an_unexpected_error_of_the_batched_call_itself_hands_every_result_back(env: Env) -> None:
    start(env.stub, "o")
    env.worker.complete(env.worker.next("orchestratorRequest"), schedule(1, "a"), schedule(2, "b"))
    items = [env.worker.next("activityRequest"), env.worker.next("activityRequest")]
    fail_once(env.server.dispatcher._activity_results, "submit_many", RuntimeError("injected"))
    before = snapshot(env.stub)
    outcomes = env.batches.CompleteActivityTasks(
        batches_pb.ActivityResultBatch(results=[activity_response(i, '"lost"') for i in items])).outcomes
    assert [o.code for o in outcomes] == [Code.INTERNAL.value[0]] * 2
    assert all("RuntimeError: injected" in o.message for o in outcomes)
    assert snapshot(env.stub) == before
    again = [reoffered(env.worker, "activityRequest", items[0]), env.worker.next("activityRequest", 1)]
    assert sorted(i.activityRequest.name for i in again) == ["a", "b"]


def test_an_unexpected_error_completing_an_entity_batch_hands_it_back(env: Env) -> None:
    env.stub.SignalEntity(pb.SignalEntityRequest(instanceId="@counter@a", name="add"))
    item = env.worker.next(ENTITY_ITEM)
    fail_once(env.server.hub, "complete_entity", RuntimeError("injected"))
    refused(env.stub, lambda: env.stub.CompleteEntityTask(batch_result(item, ok(), state="1")), Code.INTERNAL,
            *injected("CompleteEntityTask"))
    again = reoffered(env.worker, ENTITY_ITEM, item)
    assert list(again.entityRequestV2.operationRequests) == list(item.entityRequestV2.operationRequests)
    env.stub.CompleteEntityTask(batch_result(again, ok(), state="1"))
    entity = env.stub.GetEntity(pb.GetEntityRequest(instanceId="@counter@a", includeState=True)).entity
    assert entity.serializedState.value == "1"


def test_a_value_the_store_cannot_keep_waits_for_a_replacement_then_is_handed_back(env: Env) -> None:
    start(env.stub, "o")
    item = env.worker.next("orchestratorRequest")
    fail_once(env.server.hub, "complete_orchestrations", StoreValueError("a value is too large for the database"))
    refused(env.stub, lambda: env.worker.complete(item, complete(1, '"big"')), Code.INVALID_ARGUMENT, "too large")
    again = reoffered(env.worker, "orchestratorRequest", item)  # no replacement came
    # A replacement under the same token, within the grace period, is taken.
    fail_once(env.server.hub, "complete_orchestrations", StoreValueError("a value is too large for the database"))
    refused(env.stub, lambda: env.worker.complete(again, complete(1, '"big"')), Code.INVALID_ARGUMENT, "too large")
    env.worker.complete(again, complete(1, status=pb.ORCHESTRATION_STATUS_FAILED))
    state = env.stub.GetInstance(pb.GetInstanceRequest(instanceId="o")).orchestrationState
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    env.worker.expect_nothing(FAST.stream_grace * 3)


def test_a_failed_hand_back_is_tried_again(env: Env) -> None:
    start(env.stub, "o")
    item = env.worker.next("orchestratorRequest")
    fail_once(env.server.hub, "complete_orchestrations", StoreUnavailableError("the database is down"))
    abandons = fail_once(env.server.hub, "abandon_orchestration", StoreUnavailableError("the database is down"))
    refused(env.stub, lambda: env.worker.complete(item, schedule(1, "work")), Code.UNAVAILABLE, "database is down")
    again = reoffered(env.worker, "orchestratorRequest", item)
    assert len(abandons) == 2
    # The first token stays refused: its item went out again under the new one.
    refused(env.stub, lambda: env.worker.complete(item, schedule(1, "work")), Code.NOT_FOUND, "stale")
    env.worker.complete(again, complete(1))
