"""Client transport behaviour against a small in-process gRPC server whose answers the test controls.

Covers what the real sidecar cannot be made to do on demand: metadata on every call, error
mapping (NOT_FOUND, DEADLINE_EXCEEDED), paging loops, channel recreation after transport failures.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from durabletask.client import (
    AsyncTaskHubGrpcClient,
    OrchestrationQuery,
    OrchestrationStatus,
    TaskHubGrpcClient,
)
from durabletask.grpc_options import GrpcClientResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs

METADATA = [("taskhub", "hub-a"), ("authorization", "Bearer t0k3n")]


class ScriptedSidecar(stubs.TaskHubSidecarServiceServicer):
    """Answers a handful of RPCs in ways each test sets up, and records what it was sent."""

    def __init__(self) -> None:
        self.seen_metadata: list[dict[str, str]] = []
        self.requests: list[Any] = []
        self.unavailable = False
        self.not_found_details = "no such instance"
        self.lock = threading.Lock()

    def _note(self, request: Any, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.seen_metadata.append(dict(context.invocation_metadata()))  # type: ignore[arg-type]
            self.requests.append(request)
        if self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    def StartInstance(self, request: pb.CreateInstanceRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        return pb.CreateInstanceResponse(instanceId=request.instanceId)

    def GetInstance(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        if request.instanceId == "exists-false":
            return pb.GetInstanceResponse(exists=False)
        if request.instanceId == "not-found":
            context.abort(grpc.StatusCode.NOT_FOUND, "gone")
        state = pb.OrchestrationState(instanceId=request.instanceId, name="o",
                                      orchestrationStatus=pb.ORCHESTRATION_STATUS_RUNNING)
        return pb.GetInstanceResponse(exists=True, orchestrationState=state)

    def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        ended = threading.Event()
        context.add_callback(ended.set)
        ended.wait(30)  # until the caller's deadline cancels the call
        return pb.GetInstanceResponse(exists=False)

    def RaiseEvent(self, request: pb.RaiseEventRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        context.abort(grpc.StatusCode.NOT_FOUND, self.not_found_details)

    def SuspendInstance(self, request: pb.SuspendRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "cannot suspend")

    def QueryInstances(self, request: pb.QueryInstancesRequest, context: grpc.ServicerContext) -> Any:
        self._note(request, context)
        page = int(request.query.continuationToken.value or "0")
        states = [pb.OrchestrationState(instanceId=f"i{page}-{n}", name="o",
                                        orchestrationStatus=pb.ORCHESTRATION_STATUS_PENDING) for n in range(2)]
        token = wrappers_pb2.StringValue(value=str(page + 1)) if page < 2 else None
        return pb.QueryInstancesResponse(orchestrationState=states, continuationToken=token)

    def StreamInstanceHistory(self, request: pb.StreamInstanceHistoryRequest,
                              context: grpc.ServicerContext) -> Iterator[pb.HistoryChunk]:
        self._note(request, context)
        for event_id in range(3):
            event = pb.HistoryEvent(eventId=event_id)
            event.timestamp.GetCurrentTime()
            event.eventRaised.name = f"e{event_id}"
            yield pb.HistoryChunk(events=[event])


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedSidecar, str]]:
    servicer = ScriptedSidecar()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    stubs.add_TaskHubSidecarServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_metadata_on_every_call(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    with TaskHubGrpcClient(host_address=address, metadata=METADATA) as client:
        client.schedule_new_orchestration("o", instance_id="m1")
        client.get_orchestration_state("m1")
        client.get_all_orchestration_states()
        client.get_orchestration_history("m1")
    assert len(servicer.seen_metadata) == 6
    for seen in servicer.seen_metadata:
        assert seen["taskhub"] == "hub-a" and seen["authorization"] == "Bearer t0k3n"


def test_default_version_and_explicit_version(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    with TaskHubGrpcClient(host_address=address, default_version="1.0") as client:
        assert client.schedule_new_orchestration("o", instance_id="v1") == "v1"
        client.schedule_new_orchestration("o", instance_id="v2", version="2.0")
    assert [r.version.value for r in servicer.requests] == ["1.0", "2.0"]


def test_not_found_is_none_for_get(scripted: tuple[ScriptedSidecar, str]) -> None:
    _, address = scripted
    with TaskHubGrpcClient(host_address=address) as client:
        assert client.get_orchestration_state("exists-false") is None
        assert client.get_orchestration_state("not-found") is None
        state = client.get_orchestration_state("here")
        assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING


def test_not_found_names_the_instance(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    with TaskHubGrpcClient(host_address=address) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.raise_orchestration_event("ghost-42", "evt")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert "ghost-42" in str(info.value)
        servicer.not_found_details = "instance 'ghost-43' was not found"
        with pytest.raises(grpc.RpcError) as again:
            client.raise_orchestration_event("ghost-43", "evt")
        assert again.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert "ghost-43" in again.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as other:
            client.suspend_orchestration("x")
        assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]


def test_wait_timeout_raises_builtin_timeout(scripted: tuple[ScriptedSidecar, str]) -> None:
    _, address = scripted
    with TaskHubGrpcClient(host_address=address) as client:
        with pytest.raises(TimeoutError) as info:
            client.wait_for_orchestration_start("slow", timeout=0.3)
    assert "slow" in str(info.value)


def test_query_follows_continuation_tokens(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    with TaskHubGrpcClient(host_address=address) as client:
        states = client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=2))
    assert [s.instance_id for s in states] == ["i0-0", "i0-1", "i1-0", "i1-1", "i2-0", "i2-1"]
    assert [r.query.continuationToken.value for r in servicer.requests] == ["", "1", "2"]


def test_history_collects_every_chunk(scripted: tuple[ScriptedSidecar, str]) -> None:
    _, address = scripted
    with TaskHubGrpcClient(host_address=address) as client:
        events = client.get_orchestration_history("h1")
    assert [e.event_id for e in events] == [0, 1, 2]
    assert [getattr(e, "name", None) for e in events] == ["e0", "e1", "e2"]


def test_channel_recreated_after_repeated_unavailable(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    options = GrpcClientResiliencyOptions(channel_recreate_failure_threshold=2, min_recreate_interval_seconds=0)
    with TaskHubGrpcClient(host_address=address, resiliency_options=options) as client:
        first = client._channel
        servicer.unavailable = True
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                client.get_orchestration_state("x")
        assert client._channel is not first
        servicer.unavailable = False
        assert client.get_orchestration_state("x") is not None


def test_caller_channel_is_not_closed(scripted: tuple[ScriptedSidecar, str]) -> None:
    _, address = scripted
    channel = grpc.insecure_channel(address)
    try:
        with TaskHubGrpcClient(channel=channel) as client:
            assert client.get_orchestration_state("a") is not None
        again = TaskHubGrpcClient(channel=channel)
        assert again.get_orchestration_state("b") is not None
    finally:
        channel.close()


def test_async_client(scripted: tuple[ScriptedSidecar, str]) -> None:
    servicer, address = scripted
    client = AsyncTaskHubGrpcClient(host_address=address, metadata=METADATA)
    assert client._channel is None  # nothing opened outside an event loop

    async def run() -> None:
        async with client:
            assert await client.schedule_new_orchestration("o", instance_id="a1") == "a1"
            assert await client.get_orchestration_state("exists-false") is None
            assert await client.get_orchestration_state("not-found") is None
            states = await client.get_all_orchestration_states()
            assert len(states) == 6
            assert [e.event_id for e in await client.get_orchestration_history("h")] == [0, 1, 2]
            with pytest.raises(grpc.RpcError) as info:
                await client.raise_orchestration_event("ghost-7", "evt")
            assert "ghost-7" in str(info.value)
            with pytest.raises(TimeoutError):
                await client.wait_for_orchestration_start("slow", timeout=0.3)

    asyncio.run(run())
    assert all(seen["taskhub"] == "hub-a" for seen in servicer.seen_metadata)
    with pytest.raises(RuntimeError):
        asyncio.run(client.get_orchestration_state("after-close"))
