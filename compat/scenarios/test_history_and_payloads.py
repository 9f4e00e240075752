"""Long histories (StreamInstanceHistory in several chunks) and payloads of several MiB.

Message limits: our sidecar accepts and sends messages up to 64 MiB (``--max-message-size``). The
official SDK's channels keep gRPC's defaults unless given ``channel_options``: they send without
limit but receive at most 4 MiB, so a work item, an instance state with payloads, or a history
chunk larger than that needs ``GrpcChannelOptions(max_receive_message_length=...)`` on the official
worker and client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import compat_functions as fn
import grpc
import pytest
from compat_sidecar import OurSidecar
from compat_support import completed, new_id

from durabletask import history
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcChannelOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.worker import TaskHubGrpcWorker

MIB = 1024 * 1024
RAISED = GrpcChannelOptions(max_receive_message_length=64 * MIB, max_send_message_length=64 * MIB)


def _raw_chunks(address: str, instance_id: str) -> list[pb.HistoryChunk]:
    with grpc.insecure_channel(address) as channel:
        stream = stubs.TaskHubSidecarServiceStub(channel).StreamInstanceHistory(
            pb.StreamInstanceHistoryRequest(instanceId=instance_id), timeout=30
        )
        return list(stream)


def test_long_history_streams_in_chunks(hub: TaskHubGrpcClient, address: str) -> None:
    instance_id = hub.schedule_new_orchestration(fn.fan_out, input=120, instance_id=new_id("long-history"))
    state = completed(hub, instance_id, timeout=60)
    assert state.get_output() == sum(i * i for i in range(1, 121))

    events = hub.get_orchestration_history(instance_id)
    assert len(events) > 240
    scheduled = [e for e in events if isinstance(e, history.TaskScheduledEvent)]
    done = [e for e in events if isinstance(e, history.TaskCompletedEvent)]
    assert len(scheduled) == 120 and len(done) == 120
    assert sorted(e.task_scheduled_id for e in done) == sorted(e.event_id for e in scheduled)
    assert isinstance(events[1], history.ExecutionStartedEvent)
    assert isinstance(events[-2], history.ExecutionCompletedEvent)

    chunks = _raw_chunks(address, instance_id)
    assert len(chunks) >= 3, "a long history arrives in several chunks"
    assert all(len(chunk.events) > 0 for chunk in chunks)
    assert sum(len(chunk.events) for chunk in chunks) == len(events)
    flat = [event for chunk in chunks for event in chunk.events]
    assert [e.eventId for e in flat] == [e.event_id for e in events]


def test_megabyte_payloads_with_default_channels(hub: TaskHubGrpcClient) -> None:
    """About 1 MiB in and out: every message stays under the official 4 MiB receive default."""
    payload = "ab" * (MIB // 2)
    instance_id = hub.schedule_new_orchestration(fn.sized, input=payload)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    output = state.get_output()
    assert output["length"] == len(payload) and output["reversed"] == payload[::-1]
    assert state.get_input() == payload


@pytest.fixture
def raised_limits(private_sidecar: Callable[..., OurSidecar]) -> Iterator[tuple[TaskHubGrpcClient, str]]:
    """A sidecar of its own with only an official worker with raised receive limits; yields its client."""
    address = private_sidecar("payloads.db").address
    worker = TaskHubGrpcWorker(host_address=address, channel_options=RAISED)
    fn.register(worker)
    worker.start()
    client = TaskHubGrpcClient(host_address=address, channel_options=RAISED)
    try:
        yield client, address
    finally:
        client.close()
        worker.stop()


def test_multi_megabyte_payloads_with_raised_limits(raised_limits: tuple[TaskHubGrpcClient, str]) -> None:
    """3 MiB input, a 3 MiB activity result and output: work items and states of 6-9 MiB."""
    client, address = raised_limits
    payload = "x" * (3 * MIB)
    instance_id = client.schedule_new_orchestration(fn.big_round_trip, input=payload)
    state = completed(client, instance_id, timeout=60)
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    output = state.get_output()
    assert output["length"] == 3 * MIB and output["built"] == "z" * (3 * MIB)
    assert state.get_input() == payload
    events = client.get_orchestration_history(instance_id)
    results = [e.result for e in events if isinstance(e, history.TaskCompletedEvent)]
    assert results == [str(3 * MIB), '"' + "z" * (3 * MIB) + '"']

    with TaskHubGrpcClient(host_address=address) as default_client:
        bare = default_client.get_orchestration_state(instance_id, fetch_payloads=False)
        assert bare is not None and bare.runtime_status == OrchestrationStatus.COMPLETED
        with pytest.raises(grpc.RpcError) as too_big:
            default_client.get_orchestration_state(instance_id, fetch_payloads=True)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_payload_over_the_sidecar_limit_is_refused(raised_limits: tuple[TaskHubGrpcClient, str]) -> None:
    client, _ = raised_limits
    instance_id = new_id("too-big")
    with TaskHubGrpcClient(host_address=raised_limits[1]) as unlimited_sender:
        with pytest.raises(grpc.RpcError) as refused:
            unlimited_sender.schedule_new_orchestration(fn.sized, input="y" * (65 * MIB), instance_id=instance_id)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.get_orchestration_state(instance_id) is None
