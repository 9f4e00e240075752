"""Actions a worker lists after its completeOrchestration are ignored (issue 13, item 6).

Over real gRPC against an in-process sidecar, a raw worker answers a turn with actions after
the completion: the call succeeds, the execution ends where the completion says, nothing is
recorded or carried out for the actions after it, and the history ends with executionCompleted
(then the turn's closing orchestratorCompleted). Actions before a continue-as-new are carried out.
"""

from __future__ import annotations

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import RawWorker, complete, kinds, schedule, start
from tests.e2e.entity_wire import signal_action

pytestmark = pytest.mark.our_sidecar("how this repository's sidecar treats actions after a completion")

Stub = pb_grpc.TaskHubSidecarServiceStub
CAN = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW


@pytest.fixture
def env(stub_and_worker: tuple[Stub, RawWorker]) -> tuple[Stub, RawWorker]:
    return stub_and_worker


def history(stub: Stub, instance_id: str) -> list[pb.HistoryEvent]:
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=instance_id))
    return [event for chunk in chunks for event in chunk.events]


def send_event(action_id: int, target: str, name: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.sendEvent.instance.instanceId = target
    action.sendEvent.name = name
    return action


def sub_orchestration(action_id: int, child: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.createSubOrchestration.name = "child"
    action.createSubOrchestration.instanceId = child
    return action


def status(stub: Stub, instance_id: str) -> int:
    return int(stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id)).orchestrationState.orchestrationStatus)


@pytest.mark.parametrize("status_code", [pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED])
def test_actions_after_a_completion_are_ignored(env: tuple[Stub, RawWorker], status_code: int) -> None:
    stub, worker = env
    start(stub, "bystander")
    worker.complete(worker.next("orchestratorRequest"), schedule(1, "wait"))
    worker.next("activityRequest")  # held: the bystander stays as it is
    before = history(stub, "bystander")
    start(stub, "o")
    item = worker.next("orchestratorRequest")
    worker.complete(
        item,
        complete(1, '"done"', status=status_code),
        schedule(2, "late"),
        sub_orchestration(3, "late-child"),
        send_event(4, "bystander", "late"),
        signal_action(5, "@counter@late", "add", "r1"),
    )
    assert status(stub, "o") == status_code
    assert kinds(history(stub, "o")) == [
        "orchestratorStarted", "executionStarted", "executionCompleted", "orchestratorCompleted",
    ]
    # Nothing of the ignored actions happened: no activity, no child, no event (it would give
    # the bystander a turn), no entity.
    worker.expect_nothing(1.0)
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="late-child")).exists is False
    assert history(stub, "bystander") == before
    assert not stub.GetEntity(pb.GetEntityRequest(instanceId="@counter@late")).exists
    # The call was not refused: sending the same answer again finds the token spent.
    with pytest.raises(grpc.RpcError) as err:
        worker.complete(item, complete(1))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_actions_before_a_continue_as_new_run_and_those_after_it_are_ignored(env: tuple[Stub, RawWorker]) -> None:
    stub, worker = env
    start(stub, "target")
    worker.complete(worker.next("orchestratorRequest"), schedule(1, "wait"))
    worker.next("activityRequest")  # held: the target waits with its event in the inbox
    start(stub, "o")
    item = worker.next("orchestratorRequest")
    carry_on = complete(2, '"round 2"', status=CAN)
    worker.complete(item, send_event(1, "target", "before"), carry_on, send_event(3, "target", "after"),
                    schedule(4, "late"))
    # Two turns: the new execution's first, and the target's (the event sent before the continue-as-new).
    turns = {t.orchestratorRequest.instanceId: t for t in (worker.next("orchestratorRequest") for _ in range(2))}
    raised = [e.eventRaised.name for e in turns["target"].orchestratorRequest.newEvents if e.HasField("eventRaised")]
    assert raised == ["before"]
    again = turns["o"]
    started = [e.executionStarted for e in again.orchestratorRequest.newEvents if e.HasField("executionStarted")]
    assert [s.input.value for s in started] == ['"round 2"']
    assert not any(e.HasField("taskScheduled") for e in again.orchestratorRequest.pastEvents)
    worker.complete(again, complete(1, '"end"'))
    assert kinds(history(stub, "o"))[-2:] == ["executionCompleted", "orchestratorCompleted"]
    assert status(stub, "o") == pb.ORCHESTRATION_STATUS_COMPLETED
    worker.complete(turns["target"])
    worker.expect_nothing(1.0)  # no activity 'late', no second event for the target
