"""The payload helpers: which fields move to the store, the threshold, tokens, and the way back."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.payload_rpc import prepare_request, resolve_response
from durabletask.payload import (
    LargePayloadStorageOptions,
    deexternalize_payloads,
    deexternalize_payloads_async,
    externalize_payloads,
    externalize_payloads_async,
)
from tests.payload_support import MemoryPayloadStore

LIMIT = 100
BIG = "x" * (LIMIT + 1)
SMALL = "y" * LIMIT


def sv(text: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=text)


def test_the_official_defaults() -> None:
    options = LargePayloadStorageOptions()
    assert (options.threshold_bytes, options.max_stored_payload_bytes, options.enable_compression) == (
        262_144, 10 * 1024 * 1024, True,
    )


def test_only_payloads_longer_than_the_threshold_in_utf8_bytes_move() -> None:
    store = MemoryPayloadStore(threshold_bytes=LIMIT)
    req = pb.CreateInstanceRequest(instanceId="i", name="orch", input=sv(SMALL), version=sv(BIG))
    externalize_payloads(req, store, instance_id="i")
    assert req.input.value == SMALL, "exactly at the threshold stays inline"
    assert store.is_known_token(req.version.value)
    assert store.uploaded_for == ["i"]
    # 51 two-byte characters: 102 bytes although only 51 characters
    wide = pb.RaiseEventRequest(instanceId="i", name="e", input=sv("é" * 51))
    externalize_payloads(wide, store)
    assert store.is_known_token(wide.input.value)


def test_a_payload_over_the_store_limit_is_refused() -> None:
    store = MemoryPayloadStore(threshold_bytes=LIMIT, max_stored_payload_bytes=200)
    req = pb.CreateInstanceRequest(instanceId="i", input=sv("z" * 201))
    with pytest.raises(ValueError, match="201 bytes exceeds"):
        externalize_payloads(req, store)
    assert store.blobs == {}


def test_tokens_are_not_stored_again_and_plain_strings_are_not_resolved() -> None:
    store = MemoryPayloadStore(threshold_bytes=1)
    req = pb.CreateInstanceRequest(instanceId="i", input=sv("memory:7"), name="not-a-wrapper" * 20)
    externalize_payloads(req, store)
    assert req.input.value == "memory:7" and store.blobs == {}, "already a token"
    assert req.name == "not-a-wrapper" * 20, "plain string fields are names, not payloads"
    res = pb.GetInstanceResponse(exists=True)
    res.orchestrationState.input.value = "plain text"
    deexternalize_payloads(res, store)
    assert res.orchestrationState.input.value == "plain text" and store.downloads == 0


def every_field_kind() -> list[tuple[str, object]]:
    """Messages with a large payload in each place the official SDK externalizes: nested, repeated, oneof."""
    turn = pb.OrchestratorRequest(instanceId="o")
    turn.pastEvents.add(eventId=-1).executionStarted.input.value = BIG
    turn.pastEvents.add(eventId=1).taskCompleted.result.value = BIG
    turn.newEvents.add(eventId=-1).eventRaised.input.value = BIG
    turn.newEvents.add(eventId=-1).subOrchestrationInstanceCompleted.result.value = BIG
    turn.newEvents.add(eventId=-1).entityOperationCompleted.output.value = BIG
    response = pb.OrchestratorResponse(instanceId="o", customStatus=sv(BIG))
    response.actions.add(id=1).scheduleTask.input.value = BIG
    response.actions.add(id=2).createSubOrchestration.input.value = BIG
    response.actions.add(id=3).sendEvent.data.value = BIG
    response.actions.add(id=4).completeOrchestration.result.value = BIG
    response.actions.add(id=5).sendEntityMessage.entityOperationCalled.input.value = BIG
    activity = pb.ActivityRequest(name="a", input=sv(BIG))
    activity_result = pb.ActivityResponse(instanceId="o", result=sv(BIG))
    batch = pb.EntityBatchRequest(instanceId="@e@k", entityState=sv(BIG))
    batch.operations.add(operation="op", input=sv(BIG))
    batch_result = pb.EntityBatchResult(entityState=sv(BIG))
    batch_result.results.add().success.result.value = BIG
    batch_result.actions.add().sendSignal.input.value = BIG
    batch_result.actions.add().startNewOrchestration.input.value = BIG
    state = pb.GetInstanceResponse(exists=True)
    state.orchestrationState.input.value = BIG
    state.orchestrationState.output.value = BIG
    state.orchestrationState.customStatus.value = BIG
    query = pb.QueryInstancesResponse()
    query.orchestrationState.add(instanceId="a").output.value = BIG
    entity = pb.GetEntityResponse(exists=True)
    entity.entity.serializedState.value = BIG
    chunk = pb.HistoryChunk()
    chunk.events.add().executionCompleted.result.value = BIG
    return [
        ("orchestrator request", turn), ("orchestrator response", response), ("activity request", activity),
        ("activity response", activity_result), ("entity batch", batch), ("entity batch result", batch_result),
        ("instance state", state), ("query page", query), ("entity", entity), ("history chunk", chunk),
    ]


PAYLOAD_COUNTS = {
    "orchestrator request": 5, "orchestrator response": 6, "activity request": 1, "activity response": 1,
    "entity batch": 2, "entity batch result": 4, "instance state": 3, "query page": 1, "entity": 1,
    "history chunk": 1,
}


@pytest.mark.parametrize("kind", list(PAYLOAD_COUNTS))
def test_every_payload_of_every_message_kind_moves_and_comes_back(kind: str) -> None:
    message = dict(every_field_kind())[kind]
    store = MemoryPayloadStore(threshold_bytes=LIMIT)
    original = message.SerializeToString()  # type: ignore[attr-defined]
    externalize_payloads(message, store, instance_id="o")  # type: ignore[arg-type]
    assert len(store.blobs) == PAYLOAD_COUNTS[kind]
    assert BIG not in str(message)
    deexternalize_payloads(message, store)  # type: ignore[arg-type]
    assert message.SerializeToString() == original  # type: ignore[attr-defined]


def test_the_async_helpers_do_the_same() -> None:
    store = MemoryPayloadStore(threshold_bytes=LIMIT)
    _, response = every_field_kind()[1]
    original = response.SerializeToString()  # type: ignore[attr-defined]
    asyncio.run(externalize_payloads_async(response, store, instance_id="o"))  # type: ignore[arg-type]
    assert len(store.blobs) == 6 and BIG not in str(response)
    asyncio.run(deexternalize_payloads_async(response, store))  # type: ignore[arg-type]
    assert response.SerializeToString() == original  # type: ignore[attr-defined]


def test_the_client_externalizes_only_the_requests_the_official_client_does() -> None:
    store = MemoryPayloadStore(threshold_bytes=LIMIT)
    for method, request in [
        ("StartInstance", pb.CreateInstanceRequest(instanceId="s", input=sv(BIG))),
        ("RaiseEvent", pb.RaiseEventRequest(instanceId="r", input=sv(BIG))),
        ("TerminateInstance", pb.TerminateRequest(instanceId="t", output=sv(BIG))),
        ("SignalEntity", pb.SignalEntityRequest(instanceId="@e@k", input=sv(BIG))),
    ]:
        prepare_request(method, request, store)
        assert store.is_known_token(request.input.value if method != "TerminateInstance" else request.output.value)
    assert store.uploaded_for == ["s", "r", "t", "@e@k"]
    other = pb.RestartInstanceRequest(instanceId=BIG)
    prepare_request("RestartInstance", other, store)
    prepare_request("StartInstance", pb.CreateInstanceRequest(input=sv(BIG)), None)
    assert len(store.blobs) == 4
    state = pb.GetInstanceResponse(exists=True)
    state.orchestrationState.output.value = next(iter(store.blobs))
    resolve_response("GetInstance", state, store)
    assert state.orchestrationState.output.value == BIG
