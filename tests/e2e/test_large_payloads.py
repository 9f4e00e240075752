"""Large payloads through a payload store: our client and worker on our sidecar, which keeps only tokens."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.payload import PayloadStore
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import eventually
from tests.e2e.test_replay_cache import observed_sidecar
from tests.payload_support import MemoryPayloadStore, azurite_blob_service

WAIT = 15.0
SIZE = 5000  # over the test stores' threshold of 1024 bytes


def big_result(ctx: task.ActivityContext, text: str) -> str:
    return text.upper() * 2


def large_flow(ctx: task.OrchestrationContext, text: str):
    doubled = yield ctx.call_activity(big_result, input=text)
    ctx.set_custom_status("waiting")
    event = yield ctx.wait_for_external_event("big")
    again = yield ctx.call_activity(big_result, input=event)
    return {"input": len(text), "activity": len(doubled), "event": len(event), "again": len(again), "echo": text}


def raw_history(address: str, iid: str) -> list[pb.HistoryEvent]:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        return [e for chunk in stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid))
                for e in chunk.events]


def run_large_flow(address: str, store: PayloadStore, **worker_options: Any) -> tuple[str, str]:
    worker = TaskHubGrpcWorker(host_address=address, payload_store=store, **worker_options)
    worker.add_orchestrator(large_flow)
    worker.add_activity(big_result)
    text, event = "a" * SIZE, "e" * SIZE
    with worker, TaskHubGrpcClient(host_address=address, payload_store=store) as client:
        worker.start()
        iid = client.schedule_new_orchestration(large_flow, input=text, instance_id=uuid.uuid4().hex)
        def waiting() -> bool:
            state = client.get_orchestration_state(iid)
            return state is not None and state.get_custom_status() == "waiting"

        eventually(waiting, WAIT, "the orchestration to wait for its event")
        client.raise_orchestration_event(iid, "big", data=event)
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
        assert state.get_output() == {"input": SIZE, "activity": 2 * SIZE, "event": SIZE, "again": 2 * SIZE, "echo": text}
        assert state.get_input() == text
        history = client.get_orchestration_history(iid)
        assert text in repr(history), "the history read through the store shows the payloads"
    return iid, text


def assert_only_tokens_stored(address: str, iid: str, store: PayloadStore) -> None:
    """The sidecar's history holds a token wherever a large payload was, and no large payload."""
    events = raw_history(address, iid)
    payloads = {
        "executionStarted": [e.executionStarted.input.value for e in events if e.HasField("executionStarted")],
        "taskScheduled": [e.taskScheduled.input.value for e in events if e.HasField("taskScheduled")],
        "taskCompleted": [e.taskCompleted.result.value for e in events if e.HasField("taskCompleted")],
        "eventRaised": [e.eventRaised.input.value for e in events if e.HasField("eventRaised")],
        "executionCompleted": [e.executionCompleted.result.value for e in events if e.HasField("executionCompleted")],
    }
    for kind, values in payloads.items():
        assert values, f"no {kind} in the history"
        assert all(store.is_known_token(v) for v in values), f"{kind} holds {[v[:40] for v in values]}"
    assert all(len(e.SerializeToString()) < 1024 for e in events), "no large payload inline"


def test_large_payloads_travel_as_tokens_and_the_code_sees_the_values(sidecar: Any) -> None:
    store = MemoryPayloadStore()
    iid, text = run_large_flow(sidecar.address, store)
    assert_only_tokens_stored(sidecar.address, iid, store)
    assert iid in store.uploaded_for, "stored under the instance's ID"
    with TaskHubGrpcClient(host_address=sidecar.address) as plain:
        state = plain.get_orchestration_state(iid)
        assert state is not None and store.is_known_token(state.serialized_input or "")


def test_a_worker_that_reads_the_history_back_resolves_it() -> None:
    """Turns sent without their past events, and histories read back after an eviction, are resolved too."""
    store = MemoryPayloadStore()
    with observed_sidecar() as (address, seen):
        worker = TaskHubGrpcWorker(host_address=address, payload_store=store, maximum_cached_orchestrations=1)
        worker.add_orchestrator(large_flow)
        worker.add_activity(big_result)
        with worker, TaskHubGrpcClient(host_address=address, payload_store=store) as client:
            worker.start()
            ids = [client.schedule_new_orchestration(large_flow, input=c * SIZE) for c in "pq"]
            def waiting(instance_id: str) -> bool:
                state = client.get_orchestration_state(instance_id)
                return state is not None and state.get_custom_status() == "waiting"

            for iid in ids:
                eventually(functools.partial(waiting, iid), WAIT, "both to wait for their event")
            for iid in ids:
                client.raise_orchestration_event(iid, "big", data="e" * SIZE)
            for iid, c in zip(ids, "pq", strict=True):
                state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
                assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
                assert state.get_output()["echo"] == c * SIZE
        assert seen.omitted_turns(), "some turns came without their past events"
        assert seen.reads(), "an evicted instance's history was read back (StreamInstanceHistory)"


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    try:
        with azurite_blob_service() as connection_string:
            yield connection_string
    except FileNotFoundError as missing:
        pytest.skip(f"{missing} (make tests/azurite/node_modules/.installed)")


def test_the_azure_blob_store_on_azurite(sidecar: Any, azurite: str) -> None:
    from durabletask.extensions.azure_blob_payloads import BlobPayloadStore, BlobPayloadStoreOptions

    options = BlobPayloadStoreOptions(connection_string=azurite, container_name="payloads", threshold_bytes=1024)
    with BlobPayloadStore(options) as store:
        iid, _ = run_large_flow(sidecar.address, store)
        assert_only_tokens_stored(sidecar.address, iid, store)
        token = next(
            e.executionStarted.input.value for e in raw_history(sidecar.address, iid) if e.HasField("executionStarted")
        )
        assert token.startswith(f"blob:v1:payloads:{iid}/")
        assert not store.is_known_token("blob:v1:payloads:") and not store.is_known_token("memory:1")


# ---------------------------------------------------------------- payloads over the store's limit

LIMIT = 4096  # max_stored_payload_bytes of these tests' store
UNDER = 2000  # over the threshold, under the limit
OVER = 6000


class FlakyPayloadStore(MemoryPayloadStore):
    """A memory store whose first ``failures`` uploads fail as a network error would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def upload(self, data: bytes, *, instance_id: str | None = None) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the payload store is unreachable")
        return super().upload(data, instance_id=instance_id)


def sized_text(ctx: task.ActivityContext, size: int) -> str:
    return "r" * size


def sized_entity(ctx: entities.EntityContext, size: int) -> Any:
    if ctx.operation == "remember":
        ctx.set_state(size)
        return None
    return "s" * size  # "produce"


def calls_with_results(ctx: task.OrchestrationContext, size: int):  # unannotated, as mypy infers Never from a typed one
    """An activity and an entity operation that each return ``size`` characters; returns what happened."""
    outcomes: dict[str, Any] = {}
    entity = entities.EntityInstanceId("sized_entity", ctx.instance_id)
    yield ctx.call_entity(entity, "remember", size)
    for kind, call in (("activity", lambda: ctx.call_activity(sized_text, input=size)),
                       ("entity", lambda: ctx.call_entity(entity, "produce", size))):
        try:
            outcomes[kind] = len((yield call()))
        except task.TaskFailedError as failure:
            details = failure.details
            outcomes[kind] = {"type": details.error_type, "message": details.message}
    return outcomes


def returns_text(ctx: task.OrchestrationContext, size: int):
    return "o" * size
    yield  # a generator: an orchestrator


def limited_worker(address: str, store: PayloadStore) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=address, payload_store=store)
    worker.add_orchestrator(calls_with_results)
    worker.add_orchestrator(returns_text)
    worker.add_activity(sized_text)
    worker.add_entity(sized_entity)
    return worker


def limit_words(size: int) -> str:
    return f"is {size} bytes, over the limit of {LIMIT} bytes set by LargePayloadStorageOptions.max_stored_payload_bytes"


def test_results_over_the_limit_fail_the_activity_and_the_entity_operation(sidecar: Any) -> None:
    store = MemoryPayloadStore(max_stored_payload_bytes=LIMIT)
    with limited_worker(sidecar.address, store) as worker, TaskHubGrpcClient(
        host_address=sidecar.address, payload_store=store
    ) as client:
        worker.start()
        iid = client.schedule_new_orchestration(calls_with_results, input=OVER, instance_id=uuid.uuid4().hex)
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
        outcomes = state.get_output()
        entity_id = f"@sized_entity@{iid}"
        assert outcomes["activity"] == {
            "type": "PayloadTooLarge", "message": f"the result of activity 'sized_text' {limit_words(OVER + 2)}"
        }, outcomes
        # A failed entity call reaches the orchestration as the official SDK's entity-operation failure.
        message = outcomes["entity"]["message"]
        assert message.startswith(f"Operation 'produce' on entity '{entity_id}' failed"), message
        assert message.endswith(f"the result of operation 'produce' of entity '{entity_id}' {limit_words(OVER + 2)}")
        entity = client.get_entity(entities.EntityInstanceId("sized_entity", iid))
        assert entity is not None and entity.get_state(int) == OVER, "the failed batch left the state as it was"

        small = client.schedule_new_orchestration(calls_with_results, input=UNDER, instance_id=uuid.uuid4().hex)
        state = client.wait_for_orchestration_completion(small, timeout=WAIT)
        assert state is not None and state.get_output() == {"activity": UNDER, "entity": UNDER}, "under the limit: stored"


def test_an_output_over_the_limit_fails_the_orchestration(sidecar: Any) -> None:
    store = MemoryPayloadStore(max_stored_payload_bytes=LIMIT)
    with limited_worker(sidecar.address, store) as worker, TaskHubGrpcClient(
        host_address=sidecar.address, payload_store=store
    ) as client:
        worker.start()
        iid = client.schedule_new_orchestration(returns_text, input=OVER, instance_id=uuid.uuid4().hex)
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.FAILED, state
        assert state.failure_details is not None
        assert state.failure_details.error_type == "PayloadTooLarge"
        assert state.failure_details.message == f"the output of orchestration '{iid}' {limit_words(OVER + 2)}"
        with pytest.raises(ValueError, match=f"{OVER + 2} bytes exceeds the limit of {LIMIT} bytes"):
            client.schedule_new_orchestration("returns_text", input="i" * OVER)


def test_a_store_that_fails_for_a_while_gets_the_results_retried(sidecar: Any) -> None:
    """A store error that is not about the size hands the work item back; it is run again and stored."""
    store = FlakyPayloadStore(failures=2)
    with limited_worker(sidecar.address, store) as worker, TaskHubGrpcClient(host_address=sidecar.address) as client:
        worker.start()
        iid = client.schedule_new_orchestration(returns_text, input=SIZE, instance_id=uuid.uuid4().hex)
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
        assert store.failures == 0
        assert store.download(state.serialized_output or "") == b'"' + b"o" * SIZE + b'"'
