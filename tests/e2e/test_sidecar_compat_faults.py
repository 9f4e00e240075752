"""Four sidecar faults the official JavaScript SDK's end-to-end suite found (issue 11, item 4).

Over real gRPC against an in-process sidecar, a raw worker and client show that:

- a completeOrchestration with action id -1 (how official workers fail an orchestration whose
  code threw or whose version they refuse) is accepted and fails the orchestration; -1 on any
  other action is still refused;
- an entity with only a delayed signal waiting does not exist (GetEntity, QueryEntities) until
  the signal is due;
- a running instance can be restarted under a new instance ID (the original runs on), not under
  its own;
- a reuse policy that lets a live instance be replaced but not a TERMINATED one is refused with
  INVALID_ARGUMENT, changing nothing.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import RawWorker, complete, kinds, schedule, start
from tests.e2e.entity_wire import ENTITY_ITEM, expect_status, finish, get_entity, now, ok, signal

pytestmark = pytest.mark.our_sidecar("raw-protocol checks of this repository's sidecar")

Stub = pb_grpc.TaskHubSidecarServiceStub
Code = grpc.StatusCode
FAILED = pb.ORCHESTRATION_STATUS_FAILED
WAIT = 10.0


@pytest.fixture
def env(stub_and_worker: tuple[Stub, RawWorker]) -> tuple[Stub, RawWorker]:
    return stub_and_worker


def state(stub: Stub, instance_id: str) -> pb.OrchestrationState:
    response = stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True))
    assert response.exists, instance_id
    return response.orchestrationState


def history(stub: Stub, instance_id: str) -> list[pb.HistoryEvent]:
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=instance_id))
    return [event for chunk in chunks for event in chunk.events]


def running(stub: Stub, worker: RawWorker, instance_id: str, data: str | None = None) -> None:
    """Start ``instance_id`` and answer its first turn with nothing, so that it stays RUNNING."""
    fields = {} if data is None else {"input": wrappers_pb2.StringValue(value=data)}
    start(stub, instance_id, **fields)
    item = worker.next("orchestratorRequest")
    assert item.orchestratorRequest.instanceId == instance_id
    worker.complete(item)
    assert state(stub, instance_id).orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING


# --- completeOrchestration with action id -1 ----------------------------------------------------------


def test_a_completion_with_action_id_minus_one_fails_the_orchestration(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    start(stub, "versioned", version=wrappers_pb2.StringValue(value="2.0"))
    item = worker.next("orchestratorRequest")
    failing = complete(-1, status=FAILED)
    failing.completeOrchestration.failureDetails.CopyFrom(pb.TaskFailureDetails(
        errorType="VersionMismatch", errorMessage="orchestration version 2.0 is not supported", isNonRetriable=True,
    ))
    worker.complete(item, failing)  # accepted: no INVALID_ARGUMENT

    done = stub.WaitForInstanceCompletion(
        pb.GetInstanceRequest(instanceId="versioned", getInputsAndOutputs=True), timeout=WAIT
    ).orchestrationState
    assert done.orchestrationStatus == FAILED
    assert done.failureDetails.errorType == "VersionMismatch"
    assert done.failureDetails.errorMessage == "orchestration version 2.0 is not supported"
    events = history(stub, "versioned")
    assert kinds(events)[-2:] == ["executionCompleted", "orchestratorCompleted"]
    assert events[-2].eventId == -1 and events[-2].executionCompleted.orchestrationStatus == FAILED
    worker.expect_nothing(0.5)  # the turn is settled, not offered again


def test_minus_one_on_any_other_action_is_still_refused(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    start(stub, "odd")
    item = worker.next("orchestratorRequest")
    expect_status(lambda: worker.complete(item, schedule(-1, "act")), Code.INVALID_ARGUMENT, "action id -1", "negative")
    item = worker.next("orchestratorRequest", timeout=WAIT)  # the refused turn is offered again
    expect_status(
        lambda: worker.complete(item, schedule(1, "act"), schedule(1, "act"), complete(-1, status=FAILED)),
        Code.INVALID_ARGUMENT, "duplicate action id 1",
    )
    assert state(stub, "odd").orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
    assert history(stub, "odd") == []


# --- an entity with only a delayed signal -------------------------------------------------------------


def entity_ids(stub: Stub, include_transient: bool) -> list[str]:
    query = pb.EntityQuery(includeTransient=include_transient)
    return [e.instanceId for e in stub.QueryEntities(pb.QueryEntitiesRequest(query=query)).entities]


def test_an_entity_with_only_a_delayed_signal_does_not_exist_yet(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    due = now() + timedelta(seconds=1)
    signal(stub, "@counter@later", "add", "5", at=due)
    assert get_entity(stub, "@counter@later") is None
    assert entity_ids(stub, include_transient=True) == []
    assert entity_ids(stub, include_transient=False) == []

    item = worker.next(ENTITY_ITEM, timeout=WAIT)  # delivered once due
    assert now() >= due
    finish(worker, item, ok(), state="5")
    entity = get_entity(stub, "@counter@later")
    assert entity is not None and entity.serializedState.value == "5"
    assert entity_ids(stub, include_transient=True) == ["@counter@later"]
    assert entity_ids(stub, include_transient=False) == ["@counter@later"]


def test_a_delayed_signal_to_an_existing_entity_leaves_it_as_it_is(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    signal(stub, "@counter@kept", "set", "1")
    finish(worker, worker.next(ENTITY_ITEM), ok(), state="1")
    signal(stub, "@counter@kept", "add", "2", at=now() + timedelta(minutes=10))
    entity = get_entity(stub, "@counter@kept")
    assert entity is not None and entity.serializedState.value == "1" and entity.backlogQueueSize == 0


# --- restarting a running instance ------------------------------------------------------------------------


def test_a_running_instance_restarts_under_a_new_id_only(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    running(stub, worker, "live", data='"payload"')
    before = state(stub, "live")

    expect_status(
        lambda: stub.RestartInstance(pb.RestartInstanceRequest(instanceId="live")),
        Code.FAILED_PRECONDITION, "live", "RUNNING", "new instance ID",
    )
    new_id = stub.RestartInstance(pb.RestartInstanceRequest(instanceId="live", restartWithNewInstanceId=True)).instanceId
    assert new_id and new_id != "live"
    item = worker.next("orchestratorRequest")
    assert item.orchestratorRequest.instanceId == new_id
    started = [e.executionStarted for e in item.orchestratorRequest.newEvents if e.HasField("executionStarted")]
    assert [(s.name, s.input.value) for s in started] == [("orch", '"payload"')]
    worker.complete(item, complete(1, '"copy done"'))
    assert state(stub, new_id).orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED

    after = state(stub, "live")  # the original runs on, untouched
    assert after.orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
    assert after.executionId == before.executionId


# --- reuse policies ---------------------------------------------------------------------------------------


def policy(*statuses: int) -> pb.OrchestrationIdReusePolicy:
    return pb.OrchestrationIdReusePolicy(replaceableStatus=list(statuses))


def test_a_policy_replacing_live_but_not_terminated_instances_is_refused(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    running(stub, worker, "held", data='"original"')
    stub.SuspendInstance(pb.SuspendRequest(instanceId="held"))
    before = state(stub, "held")
    assert before.orchestrationStatus == pb.ORCHESTRATION_STATUS_SUSPENDED

    # What the official JavaScript client sends for dedupeStatuses [TERMINATED, RUNNING, PENDING].
    contradictory = policy(
        pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED,
        pb.ORCHESTRATION_STATUS_CANCELED, pb.ORCHESTRATION_STATUS_SUSPENDED,
    )
    expect_status(
        lambda: start(stub, "held", input=wrappers_pb2.StringValue(value='"replacement"'),
                      orchestrationIdReusePolicy=contradictory),
        Code.INVALID_ARGUMENT,
        "Invalid reusable statuses: cannot exclude 'Terminated' while also allowing reuse of running instances",
        "SUSPENDED but not TERMINATED",
    )
    assert state(stub, "held") == before
    for live in (pb.ORCHESTRATION_STATUS_RUNNING, pb.ORCHESTRATION_STATUS_PENDING):  # also for a new ID
        expect_status(lambda live=live: start(stub, "fresh", orchestrationIdReusePolicy=policy(live)),
                      Code.INVALID_ARGUMENT, "orchestrationIdReusePolicy", "but not TERMINATED")
    assert not stub.GetInstance(pb.GetInstanceRequest(instanceId="fresh")).exists

    # Only finished statuses: a live instance is kept (ALREADY_EXISTS), as before.
    expect_status(lambda: start(stub, "held", orchestrationIdReusePolicy=policy(pb.ORCHESTRATION_STATUS_COMPLETED)),
                  Code.ALREADY_EXISTS, "held")
    # Live and TERMINATED: the suspended instance is terminated and replaced.
    start(stub, "held", input=wrappers_pb2.StringValue(value='"replacement"'),
          orchestrationIdReusePolicy=policy(pb.ORCHESTRATION_STATUS_SUSPENDED, pb.ORCHESTRATION_STATUS_TERMINATED))
    after = state(stub, "held")
    assert after.orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
    assert after.input.value == '"replacement"' and after.executionId != before.executionId
