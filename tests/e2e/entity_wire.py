"""Raw-protocol helpers for the sidecar's entity tests: requests, results and orchestration actions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.engine_events import to_timestamp
from tests.e2e.conftest import RawWorker

ENTITY_ITEM = "entityRequestV2"


def now() -> datetime:
    return datetime.now(timezone.utc)


def signal(stub: pb_grpc.TaskHubSidecarServiceStub, entity_id: str, operation: str, data: str | None = None,
           at: datetime | None = None, request_id: str = "") -> None:
    request = pb.SignalEntityRequest(instanceId=entity_id, name=operation, requestId=request_id)
    if data is not None:
        request.input.value = data
    if at is not None:
        request.scheduledTime.CopyFrom(to_timestamp(at))
    stub.SignalEntity(request)


def get_entity(stub: pb_grpc.TaskHubSidecarServiceStub, entity_id: str,
               include_state: bool = True) -> pb.EntityMetadata | None:
    response = stub.GetEntity(pb.GetEntityRequest(instanceId=entity_id, includeState=include_state))
    return response.entity if response.exists else None


def operations(item: pb.WorkItem) -> list[tuple[str, str]]:
    """(kind, operation) of each operation of an entity work item."""
    out = []
    for event in item.entityRequestV2.operationRequests:
        kind = event.WhichOneof("eventType") or ""
        out.append((kind, getattr(event, kind).operation))
    return out


def ok(value: str | None = None) -> pb.OperationResult:
    result = pb.OperationResult(success=pb.OperationResultSuccess())
    if value is not None:
        result.success.result.value = value
    return result


def failed(error_type: str = "ValueError", message: str = "boom") -> pb.OperationResult:
    details = pb.TaskFailureDetails(errorType=error_type, errorMessage=message)
    return pb.OperationResult(failure=pb.OperationResultFailure(failureDetails=details))


def batch_result(item: pb.WorkItem, *results: pb.OperationResult, state: str | None = None,
                 actions: Iterable[pb.OperationAction] = ()) -> pb.EntityBatchResult:
    result = pb.EntityBatchResult(results=results, actions=list(actions), completionToken=item.completionToken)
    if state is not None:
        result.entityState.value = state
    return result


def finish(worker: RawWorker, item: pb.WorkItem, *results: pb.OperationResult, state: str | None = None,
           actions: Iterable[pb.OperationAction] = ()) -> None:
    worker.stub.CompleteEntityTask(batch_result(item, *results, state=state, actions=actions))


def entity_action(action_id: int, **message: Any) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, sendEntityMessage=pb.SendEntityMessageAction(**message))


def call_action(action_id: int, target: str, operation: str, request_id: str,
                data: str | None = None) -> pb.OrchestratorAction:
    called = pb.EntityOperationCalledEvent(requestId=request_id, operation=operation)
    called.targetInstanceId.value = target
    if data is not None:
        called.input.value = data
    return entity_action(action_id, entityOperationCalled=called)


def signal_action(action_id: int, target: str, operation: str, request_id: str,
                  at: datetime | None = None) -> pb.OrchestratorAction:
    signaled = pb.EntityOperationSignaledEvent(requestId=request_id, operation=operation)
    signaled.targetInstanceId.value = target
    if at is not None:
        signaled.scheduledTime.CopyFrom(to_timestamp(at))
    return entity_action(action_id, entityOperationSignaled=signaled)


def lock_action(action_id: int, instance_id: str, section: str, lock_set: list[str]) -> pb.OrchestratorAction:
    request = pb.EntityLockRequestedEvent(criticalSectionId=section, lockSet=lock_set, position=0)
    request.parentInstanceId.value = instance_id
    return entity_action(action_id, entityLockRequested=request)


def unlock_action(action_id: int, instance_id: str, section: str, target: str) -> pb.OrchestratorAction:
    unlock = pb.EntityUnlockSentEvent(criticalSectionId=section)
    unlock.parentInstanceId.value = instance_id
    unlock.targetInstanceId.value = target
    return entity_action(action_id, entityUnlockSent=unlock)


def new_events(item: pb.WorkItem) -> list[pb.HistoryEvent]:
    """The new events of an orchestrator work item, without its leading orchestratorStarted."""
    return [e for e in item.orchestratorRequest.newEvents if not e.HasField("orchestratorStarted")]


def expect_status(call: Callable[[], object], code: grpc.StatusCode, *words: str) -> str:
    """Assert that ``call`` fails with ``code`` and a message containing ``words``; return the message."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, (err.value.code(), err.value.details())
    details = err.value.details() or ""
    for word in words:
        assert word in details, (word, details)
    return details
