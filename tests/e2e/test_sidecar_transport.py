"""The asyncio transport around the synchronous servicer: statuses, call context, clean stops."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.server import SidecarServer


def served(replace: dict[str, Any]) -> SidecarServer:
    """A started in-memory sidecar whose servicer methods named in ``replace`` are replaced."""
    server = SidecarServer("memory", host="localhost")
    for name, method in replace.items():
        setattr(server.servicer, name, method)
    server.start(0)
    return server


def call(server: SidecarServer, name: str, request: Any, **kwargs: Any) -> Any:
    with grpc.insecure_channel(server.address) as channel:
        return getattr(pb_grpc.TaskHubSidecarServiceStub(channel), name)(request, **kwargs)


def test_an_unexpected_error_is_unknown_as_with_a_sync_server() -> None:
    def broken(request: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    server = served({"GetInstance": broken})
    try:
        with pytest.raises(grpc.RpcError) as failed:
            call(server, "GetInstance", pb.GetInstanceRequest(instanceId="x"))
        assert failed.value.code() == grpc.StatusCode.UNKNOWN
        assert failed.value.details() == "Exception calling application: boom"
    finally:
        server.stop(0)


def test_a_status_set_before_raising_is_the_answer() -> None:
    def unimplemented(request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    server = served({"RewindInstance": unimplemented})
    try:
        with pytest.raises(grpc.RpcError) as failed:
            call(server, "RewindInstance", pb.RewindInstanceRequest(instanceId="x"))
        assert (failed.value.code(), failed.value.details()) == (
            grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!"
        )
    finally:
        server.stop(0)


def test_the_servicer_sees_the_calls_metadata_and_deadline_and_its_abort_ends_the_call() -> None:
    seen: dict[str, Any] = {}

    def inspecting(request: Any, context: Any) -> Any:
        seen["metadata"] = dict(context.invocation_metadata())
        seen["remaining"] = context.time_remaining()
        seen["active"] = context.is_active()
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no, because")

    server = served({"QueryInstances": inspecting})
    try:
        with pytest.raises(grpc.RpcError) as failed:
            call(server, "QueryInstances", pb.QueryInstancesRequest(), timeout=30, metadata=[("x-probe", "1")])
        assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "no, because")
        assert seen["metadata"]["x-probe"] == "1"
        # The deadline gRPC reports on the server may read slightly over the timeout (30.098 s was seen).
        assert 0 < seen["remaining"] <= 31 and seen["active"]
    finally:
        server.stop(0)


def test_stopped_sidecars_leave_no_threads_behind() -> None:
    before = {t.ident for t in threading.enumerate()}
    for _ in range(5):
        server = SidecarServer("memory", host="localhost")
        server.start(0)
        call(server, "Hello", empty_pb2.Empty(), timeout=10)
        call(server, "StartInstance", pb.CreateInstanceRequest(name="n", instanceId="i"), timeout=10)
        server.stop(0.5)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_an_undecodable_request_is_internal_as_with_a_sync_server() -> None:
    server = served({})
    try:
        with grpc.insecure_channel(server.address) as channel:
            for method, streaming in (("GetInstance", False), ("WaitForInstanceCompletion", False),
                                      ("GetWorkItems", True), ("StreamInstanceHistory", True)):
                path = f"/TaskHubSidecarService/{method}"
                with pytest.raises(grpc.RpcError) as failed:
                    if streaming:
                        list(channel.unary_stream(path)(b"\xff\xff\xff", timeout=10))
                    else:
                        channel.unary_unary(path)(b"\xff\xff\xff", timeout=10)
                assert (failed.value.code(), failed.value.details()) == (
                    grpc.StatusCode.INTERNAL, "Exception deserializing request!"
                ), method
    finally:
        server.stop(0)
