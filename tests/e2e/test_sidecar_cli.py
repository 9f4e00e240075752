"""The sidecar as a process: CLI output, clean SIGTERM, one owner per file, kill -9 and restart."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.testing import create_test_backend
from tests.e2e.conftest import REPO_ROOT, RawWorker, complete, free_port, kinds, schedule, start


def test_cli_prints_address_and_store_and_stops_on_sigterm(tmp_path, sidecar_process) -> None:
    db = tmp_path / "cli.db"
    port = free_port()
    proc = sidecar_process.start(db, port)
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        start(stub, "persisted")
    assert proc.terminate() == 0
    out = proc.output()
    assert f"listening on 127.0.0.1:{port}" in out
    assert "store: SQLite file" in out and "cli.db" in out
    assert "stopping" in out
    assert db.exists()


def test_second_sidecar_on_the_same_file_is_refused(tmp_path, sidecar_process) -> None:
    db = tmp_path / "owned.db"
    sidecar_process.start(db, free_port())
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "--store", str(db), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO_ROOT),
    )
    assert result.returncode == 1
    assert "in use by another sidecar" in result.stderr


def test_port_in_use_is_reported(tmp_path, sidecar_process) -> None:
    port = free_port()
    sidecar_process.start(tmp_path / "a.db", port)
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "--store", "memory", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO_ROOT),
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.slow
def test_kill_9_mid_turn_then_restart_redispatches_and_loses_nothing(tmp_path, sidecar_process) -> None:
    db = tmp_path / "crash.db"
    port = free_port()
    first = sidecar_process.start(db, port)
    with grpc.insecure_channel(first.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        worker = RawWorker(first.address)
        start(stub, "k1")
        turn = worker.next("orchestratorRequest")
        worker.complete(turn, schedule(1, "step"))  # acknowledged: must survive
        activity = worker.next("activityRequest")  # leased, never completed
        start(stub, "k2")
        leased_turn = worker.next("orchestratorRequest")  # leased mid-turn, never completed
        assert leased_turn.orchestratorRequest.instanceId == "k2"
        first.kill()
        worker.close()

    second = sidecar_process.start(db, port)
    assert "released 2 leases" in second.output()
    with grpc.insecure_channel(second.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        worker = RawWorker(second.address)
        try:
            got: dict[str, pb.WorkItem] = {}
            for _ in range(2):
                item = worker.items.get(timeout=10)
                kind = item.WhichOneof("request")
                got[kind] = item
            redo = got["orchestratorRequest"]
            assert redo.orchestratorRequest.instanceId == "k2"
            assert kinds(redo.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
            assert redo.completionToken != leased_turn.completionToken
            act = got["activityRequest"]
            assert act.activityRequest.orchestrationInstance.instanceId == "k1" and act.activityRequest.taskId == 1
            assert act.completionToken != activity.completionToken

            worker.complete(redo, complete(1, '"k2"'))
            worker.complete_activity(act, '"stepped"')
            final = worker.next("orchestratorRequest")
            assert final.orchestratorRequest.instanceId == "k1"
            assert kinds(final.orchestratorRequest.pastEvents).count("taskScheduled") == 1
            assert kinds(final.orchestratorRequest.newEvents) == ["orchestratorStarted", "taskCompleted"]
            worker.complete(final, complete(2, '"k1"'))
            for iid in ("k1", "k2"):
                res = stub.WaitForInstanceCompletion(
                    pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True), timeout=10
                )
                assert res.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
                assert res.orchestrationState.output.value == f'"{iid}"'
        finally:
            worker.close()


def test_create_test_backend_serves_resets_and_stops() -> None:
    backend = create_test_backend(port=free_port())
    try:
        assert backend.address == f"localhost:{backend.port}"
        with grpc.insecure_channel(backend.address) as channel:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)
            start(stub, "tb")
            assert stub.GetInstance(pb.GetInstanceRequest(instanceId="tb")).exists
            backend.reset()
            assert not stub.GetInstance(pb.GetInstanceRequest(instanceId="tb")).exists
    finally:
        backend.stop()
    with grpc.insecure_channel(backend.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetInstance(pb.GetInstanceRequest(instanceId="tb"), timeout=1)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_cli_max_hold_flags_hand_held_work_out_again(tmp_path, sidecar_process) -> None:
    handle = sidecar_process.start(tmp_path / "hold.db", free_port(), "--turn-max-hold", "1", "--activity-max-hold", "1")
    with grpc.insecure_channel(handle.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        worker = RawWorker(handle.address)
        try:
            start(stub, "held")
            lost_turn = worker.next("orchestratorRequest")  # held on a live stream, never completed
            turn = worker.next("orchestratorRequest", timeout=20)
            assert turn.orchestratorRequest.instanceId == "held" and turn.completionToken != lost_turn.completionToken
            worker.complete(turn, schedule(1, "step"))
            lost_activity = worker.next("activityRequest")
            activity = worker.next("activityRequest", timeout=20)
            assert activity.activityRequest.taskId == 1 and activity.completionToken != lost_activity.completionToken
        finally:
            worker.close()


@pytest.mark.parametrize("flag", ["--turn-max-hold", "--activity-max-hold"])
def test_cli_rejects_a_non_positive_max_hold(flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "--store", "memory", "--port", "0", flag, "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO_ROOT),
    )
    assert proc.returncode == 2
    assert f"{flag} must be a positive number of seconds" in proc.stderr
