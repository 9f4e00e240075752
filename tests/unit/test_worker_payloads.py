"""Naming the part of a worker's result that holds a payload over the payload store's limit."""

from __future__ import annotations

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.worker_payloads import (
    PAYLOAD_TOO_LARGE_ERROR_TYPE,
    oversize_batch_part,
    oversize_turn_part,
    payload_too_large_details,
)
from durabletask.payload import PayloadTooLargeError
from tests.payload_support import MemoryPayloadStore

LIMIT = 100
BIG = "x" * (LIMIT + 1)


def store() -> MemoryPayloadStore:
    return MemoryPayloadStore(threshold_bytes=10, max_stored_payload_bytes=LIMIT)


def turn(*actions: pb.OrchestratorAction) -> pb.OrchestratorResponse:
    return pb.OrchestratorResponse(instanceId="i", actions=actions)


def test_the_part_of_a_turn_is_named() -> None:
    small = pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="small", input={"value": "y" * 50}))
    big_input = pb.OrchestratorAction(id=2, scheduleTask=pb.ScheduleTaskAction(name="load", input={"value": BIG}))
    output = pb.OrchestratorAction(id=3, completeOrchestration=pb.CompleteOrchestrationAction(result={"value": BIG}))
    child = pb.OrchestratorAction(
        id=4, createSubOrchestration=pb.CreateSubOrchestrationAction(name="child", input={"value": BIG})
    )
    assert oversize_turn_part(turn(small, big_input), store()) == "the input of activity 'load' of orchestration 'i'"
    assert oversize_turn_part(turn(small, output), store()) == "the output of orchestration 'i'"
    assert oversize_turn_part(turn(child), store()) == "the input of sub-orchestration 'child' of orchestration 'i'"
    status = turn(small)
    status.customStatus.value = BIG
    assert oversize_turn_part(status, store()) == "the custom status of orchestration 'i'"
    tokens = turn(pb.OrchestratorAction(id=5, completeOrchestration=pb.CompleteOrchestrationAction(
        result={"value": "memory:" + BIG}
    )))
    assert oversize_turn_part(tokens, store()) == "a payload of orchestration 'i'", "tokens are not payloads"


def test_the_part_of_an_entity_batch_is_named() -> None:
    req = pb.EntityBatchRequest(instanceId="@e@k", operations=[
        pb.OperationRequest(operation="a"), pb.OperationRequest(operation="b"),
    ])
    ok = pb.OperationResult(success=pb.OperationResultSuccess(result={"value": "1"}))
    big = pb.OperationResult(success=pb.OperationResultSuccess(result={"value": BIG}))
    assert oversize_batch_part(req, pb.EntityBatchResult(results=[ok, big]), store()) == (
        "the result of operation 'b' of entity '@e@k'"
    )
    state = pb.EntityBatchResult(results=[ok, ok], entityState={"value": BIG})
    assert oversize_batch_part(req, state, store()) == "the state of entity '@e@k'"


def test_the_failure_names_size_and_limit() -> None:
    details = payload_too_large_details("the result of activity 'x'", PayloadTooLargeError(150, LIMIT))
    assert details.errorType == PAYLOAD_TOO_LARGE_ERROR_TYPE and details.isNonRetriable
    assert details.errorMessage == (
        "the result of activity 'x' is 150 bytes, over the limit of 100 bytes set by "
        "LargePayloadStorageOptions.max_stored_payload_bytes"
    )
