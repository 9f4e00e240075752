"""Validation found in review: entity state over the sidecar's limit, and version strings on the wire."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import RawWorker, complete, fast_sidecar, schedule, start
from tests.e2e.entity_wire import expect_status

pytestmark = pytest.mark.our_sidecar("limits and status messages of this repository's sidecar")

Code = grpc.StatusCode
MAX_MESSAGE = 1024 * 1024
WAIT = 30.0


def blob(ctx: entities.EntityContext, value: Any) -> Any:
    """set: store ``value`` characters; get: the stored length."""
    if ctx.operation == "set":
        ctx.set_state("x" * value)
        return value
    return len(ctx.get_state(str, ""))


def call_blob(ctx: task.OrchestrationContext, params: dict):
    """Calls one operation on a blob entity; returns its result or the failure's details."""
    try:
        result = yield ctx.call_entity(EntityInstanceId.parse(params["id"]), params["op"], params.get("input"))
    except task.TaskFailedError as err:
        inner = err.details.inner_failure
        assert inner is not None
        return {"inner_type": inner.error_type, "inner_message": inner.message,
                "caused_by": inner.is_caused_by("EntityStateTooLargeError")}
    return {"result": result}


@pytest.fixture
def small_hub() -> Iterator[tuple[TaskHubGrpcClient, Any]]:
    """A sidecar with a 1 MiB message limit, a worker with default options and a client."""
    with fast_sidecar(max_message_size=MAX_MESSAGE) as (server, address):
        worker = TaskHubGrpcWorker(host_address=address)
        worker.add_entity(blob)
        worker.add_orchestrator(call_blob)
        worker.start()
        try:
            with TaskHubGrpcClient(host_address=address) as client:
                yield client, server
        finally:
            worker.stop(timeout=10)


def run(client: TaskHubGrpcClient, params: dict) -> Any:
    iid = client.schedule_new_orchestration(call_blob, input=params)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return state.get_output()


def test_call_setting_a_state_over_the_sidecar_limit_fails_clearly(small_hub) -> None:
    client, server = small_hub
    limit = server.dispatcher.options.entity_payload_limit
    assert limit == MAX_MESSAGE // 2
    target = f"@blob@{uuid.uuid4().hex[:8]}"
    assert run(client, {"id": target, "op": "set", "input": 1000}) == {"result": 1000}
    out = run(client, {"id": target, "op": "set", "input": 700_000})
    assert out["inner_type"] == "EntityStateTooLargeError" and out["caused_by"] is True
    assert f"limit of {limit} bytes" in out["inner_message"] and target in out["inner_message"]
    assert run(client, {"id": target, "op": "get"}) == {"result": 1000}
    meta = client.get_entity(EntityInstanceId.parse(target))
    assert meta is not None and meta.get_typed_state(str) == "x" * 1000


class LineWatcher(logging.Handler):
    """Signals the first log line containing ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.line = ""
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.needle in message and not self.seen.is_set():
            self.line = message
            self.seen.set()


def test_signal_setting_a_state_over_the_sidecar_limit_is_logged_and_dropped(small_hub, caplog) -> None:
    client, server = small_hub
    limit = server.dispatcher.options.entity_payload_limit
    target = EntityInstanceId("blob", uuid.uuid4().hex[:8])
    caplog.set_level(logging.WARNING, logger="durabletask-sidecar")
    logged = LineWatcher("EntityStateTooLargeError")
    logging.getLogger("durabletask-sidecar").addHandler(logged)
    try:
        client.signal_entity(target, "set", 700_000)
        assert logged.seen.wait(WAIT), "the failed signal was never logged"
    finally:
        logging.getLogger("durabletask-sidecar").removeHandler(logged)
    line = logged.line
    assert str(target) in line and f"limit of {limit} bytes" in line and "'set'" in line
    assert run(client, {"id": str(target), "op": "get"}) == {"result": 0}


# --- versions: at most 256 characters, no control characters ------------------------------------

BAD_VERSIONS = [("v" * 5000, "5000 characters long"), ("1.0\x00", "control character (0x00)"),
                ("1\n2", "control character (0x0a)")]


@pytest.fixture
def raw() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker]]:
    with fast_sidecar() as (_, address):
        channel = grpc.insecure_channel(address)
        worker = RawWorker(address)
        yield pb_grpc.TaskHubSidecarServiceStub(channel), worker
        worker.close()
        channel.close()


@pytest.mark.parametrize(("version", "words"), BAD_VERSIONS)
def test_start_instance_rejects_bad_versions(raw, version: str, words: str) -> None:
    stub, worker = raw
    expect_status(lambda: start(stub, "i1", version=StringValue(value=version)), Code.INVALID_ARGUMENT,
                  "version", words)
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="i1")).exists is False
    worker.expect_nothing(0.2)
    start(stub, "i1", version=StringValue(value="v" * 256))
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="i1")).orchestrationState
    assert state.version.value == "v" * 256


def _with_version(action: pb.OrchestratorAction, version: str) -> pb.OrchestratorAction:
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        action.scheduleTask.version.value = version
    elif kind == "createSubOrchestration":
        action.createSubOrchestration.version.value = version
    else:
        action.completeOrchestration.newVersion.value = version
    return action


def _sub(action_id: int) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.createSubOrchestration.name = "child"
    action.createSubOrchestration.instanceId = "child-1"
    return action


@pytest.mark.parametrize(("version", "words"), BAD_VERSIONS)
def test_orchestrator_actions_with_bad_versions_are_rejected(raw, version: str, words: str) -> None:
    stub, worker = raw
    start(stub, "p1")
    item = worker.next("orchestratorRequest")
    before = stub.GetInstance(pb.GetInstanceRequest(instanceId="p1")).orchestrationState
    for action, field in [
        (schedule(1, "act"), "version"),
        (_sub(1), "version"),
        (complete(1, status=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW), "newVersion"),
    ]:
        bad = _with_version(action, version)
        expect_status(lambda bad=bad, item=item: worker.complete(item, bad), Code.INVALID_ARGUMENT,  # type: ignore[misc]
                      f"action 1 ({bad.WhichOneof('orchestratorActionType')})", f"{field} ", words)
        item = worker.next("orchestratorRequest", timeout=5)  # the turn is offered again; nothing changed
        assert stub.GetInstance(pb.GetInstanceRequest(instanceId="child-1")).exists is False
        assert stub.GetInstance(pb.GetInstanceRequest(instanceId="p1")).orchestrationState == before
    worker.complete(item, _with_version(schedule(1, "act"), "2.0"))
    activity = worker.next("activityRequest")
    assert activity.activityRequest.version.value == "2.0"
