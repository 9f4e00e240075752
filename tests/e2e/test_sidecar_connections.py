"""Hundreds of open calls at once: streams and long polls hold no server thread, so the sidecar stays responsive.

The sidecar once served every call on one of 256 threads: 300 open work-item streams or long
polls left none for anything else. Here 400 of each are open together, and Hello, StartInstance
and TerminateInstance still answer at once; the waits return when their instances end.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.dispatch import DispatchOptions
from sidecar.server import SidecarServer
from tests.e2e.conftest import FAST, eventually, fast_sidecar, test_store_spec

COUNT = 400  # streams, and as many long polls
CHANNELS = 8
PROMPT = 2.0  # seconds: generous, machines vary; a starved server does not answer at all
# Streams that take none of the work below: the instances stay pending until terminated.
IDLE = pb.GetWorkItemsRequest(
    workItemFilters=pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="not_these")])
)


def timed(call: object, *args: object, **kwargs: object) -> float:
    began = time.perf_counter()
    call(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - began


def test_hundreds_of_streams_and_long_polls_leave_the_sidecar_responsive() -> None:
    with fast_sidecar(DispatchOptions(stream_grace=0.3)) as (server, address):
        # Separate connections (no shared subchannel), as many workers and clients would have.
        channels = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CHANNELS)]
        stubs = [pb_grpc.TaskHubSidecarServiceStub(channel) for channel in channels]
        stub = stubs[0]
        streams: list = []
        try:
            ids = [f"many-{n}" for n in range(COUNT)]
            starts = [stub.StartInstance.future(pb.CreateInstanceRequest(name="nobody_runs_this", instanceId=iid),
                                                timeout=30) for iid in ids]
            for start in starts:
                start.result()

            streams = [stubs[n % CHANNELS].GetWorkItems(IDLE, timeout=60) for n in range(COUNT)]
            for call in streams:
                assert next(call).HasField("healthPing"), "every stream is served at once"
            waits = [stubs[n % CHANNELS].WaitForInstanceCompletion.future(pb.GetInstanceRequest(instanceId=iid),
                                                                          timeout=60)
                     for n, iid in enumerate(ids)]
            eventually(lambda: server.watcher.waiting() >= COUNT, 10, f"{COUNT} long polls to be waiting")

            hellos = [timed(stub.Hello, empty_pb2.Empty(), timeout=10) for _ in range(20)]
            assert max(hellos) < PROMPT, f"Hello took {max(hellos):.2f}s with {COUNT} streams and long polls open"
            started = timed(stub.StartInstance, pb.CreateInstanceRequest(name="nobody_runs_this", instanceId="one-more"),
                            timeout=10)
            assert started < PROMPT, f"StartInstance took {started:.2f}s"
            assert not any(wait.done() for wait in waits), "a wait returned before its instance ended"

            ends = [stub.TerminateInstance.future(pb.TerminateRequest(instanceId=iid), timeout=30) for iid in ids]
            for end in ends:
                end.result()
            for iid, wait in zip(ids, waits, strict=True):
                state = wait.result(timeout=30).orchestrationState
                assert (state.instanceId, state.orchestrationStatus) == (iid, pb.ORCHESTRATION_STATUS_TERMINATED)
            assert server.watcher.waiting() == 0
        finally:
            for call in streams:
                call.cancel()
            for channel in channels:
                channel.close()
        eventually(lambda: server.dispatcher.open_streams() == 0, 10, "the cancelled streams to close")


def test_cancelled_long_polls_and_streams_are_let_go() -> None:
    with fast_sidecar() as (server, address), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        waits = [stub.WaitForInstanceCompletion.future(pb.GetInstanceRequest(instanceId=f"later-{n}"), timeout=60)
                 for n in range(20)]
        streams = [stub.GetWorkItems(IDLE, timeout=60) for _ in range(20)]
        for call in streams:
            next(call)
        eventually(lambda: server.watcher.waiting() == 20, 10, "the long polls to be waiting")
        assert server.dispatcher.open_streams() == 20
        for wait in waits:
            wait.cancel()
        for call in streams:
            call.cancel()
        eventually(lambda: server.watcher.waiting() == 0, 10, "the cancelled long polls to end")
        eventually(lambda: server.dispatcher.open_streams() == 0, 10, "the cancelled streams to close")


def test_stopping_ends_open_long_polls_and_streams_quickly() -> None:
    server = SidecarServer(test_store_spec(), host="localhost", dispatch_options=FAST)
    address = f"localhost:{server.start(0)}"
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        waits = [stub.WaitForInstanceCompletion.future(pb.GetInstanceRequest(instanceId=f"never-{n}"), timeout=60)
                 for n in range(50)]
        streams = [stub.GetWorkItems(IDLE, timeout=60) for _ in range(50)]
        for call in streams:
            next(call)
        eventually(lambda: server.watcher.waiting() == 50, 10, "the long polls to be waiting")
        # Well within the calls' 60 s deadlines (a loaded CI machine takes a few seconds).
        assert timed(server.stop, grace=0.2) < 15
        for wait in waits:
            with pytest.raises(grpc.RpcError) as failed:
                wait.result(timeout=10)
            assert failed.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        for call in streams:
            try:
                rest = list(call)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            else:
                assert rest == []
