"""Shared end-to-end fixtures: an in-process sidecar, and sidecar subprocesses on SQLite files.

Names other tests rely on: ``free_port()``, fixture ``sidecar`` (``.address``, ``.port``,
``.server``) and fixture ``sidecar_process`` (``start(db_path, port)`` returning a handle
with ``.address``, ``.pid``, ``.kill()``, ``.terminate()``). Protocol-level tests also use
``fast_sidecar()`` and ``RawWorker``, a hand-written worker speaking raw gRPC.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.dispatch import DispatchOptions
from sidecar.engine_events import to_timestamp
from sidecar.server import SidecarServer

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class InProcessSidecar:
    """A sidecar served from this process on a fresh in-memory store."""

    server: SidecarServer
    port: int

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"


@pytest.fixture
def sidecar() -> Iterator[InProcessSidecar]:
    """An in-process sidecar on a fresh memory store, on a free port."""
    server = SidecarServer("memory", host="localhost")
    port = server.start(0)
    try:
        yield InProcessSidecar(server=server, port=port)
    finally:
        server.stop(grace=0.5)


def wait_for_hello(address: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until a sidecar at ``address`` answers Hello (fails early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"sidecar process exited with code {proc.returncode} before answering Hello")
            try:
                stub.Hello(empty_pb2.Empty(), timeout=1.0, wait_for_ready=True)
                return
            except grpc.RpcError as exc:
                last = exc
    raise TimeoutError(f"sidecar at {address} did not answer Hello within {timeout}s: {last}")


@dataclass
class SidecarProcess:
    """A sidecar subprocess (``python -m sidecar``)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for a clean exit. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class SidecarProcessFactory:
    """Starts sidecar subprocesses; everything it started is stopped (by PID) at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[SidecarProcess] = []

    def start(self, db_path: str | os.PathLike[str], port: int, *extra: str, timeout: float = 30) -> SidecarProcess:
        log_path = self.log_dir / f"sidecar-{len(self.started)}-{port}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "--store", str(db_path), "--port", str(port), *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.log_dir),
            env=env,
        )
        log_file.close()
        handle = SidecarProcess(proc=proc, port=port, log_path=log_path)
        self.started.append(handle)
        try:
            wait_for_hello(handle.address, timeout, proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- sidecar output ---\n{handle.output()}") from exc
        return handle

    def stop_all(self) -> None:
        for handle in self.started:
            if handle.proc.poll() is None:
                handle.proc.send_signal(signal.SIGKILL)
                handle.proc.wait(timeout=30)


@pytest.fixture
def sidecar_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcessFactory]:
    """Factory fixture: ``sidecar_process.start(db_path, port)`` runs a sidecar subprocess."""
    factory = SidecarProcessFactory(tmp_path_factory.mktemp("sidecar-logs"))
    try:
        yield factory
    finally:
        factory.stop_all()


# --- raw protocol helpers ---------------------------------------------------------------

FAST = DispatchOptions(stream_grace=0.3, health_ping_interval=0.5, safety_poll=1.0)


@contextmanager
def fast_sidecar(options: DispatchOptions = FAST, **kwargs: object) -> Iterator[tuple[SidecarServer, str]]:
    """An in-process sidecar with short grace/ping intervals; yields (server, address)."""
    server = SidecarServer("memory", host="localhost", dispatch_options=options, **kwargs)  # type: ignore[arg-type]
    port = server.start(0)
    try:
        yield server, f"localhost:{port}"
    finally:
        server.stop(grace=0.2)


def kinds(events: object) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]  # type: ignore[attr-defined]


class RawWorker:
    """Opens a GetWorkItems stream and collects its items (health pings counted apart)."""

    def __init__(self, address: str, request: pb.GetWorkItemsRequest | None = None) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.TaskHubSidecarServiceStub(self.channel)
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self.pings = 0
        self.first_ping = threading.Event()
        self._stream = self.stub.GetWorkItems(request or pb.GetWorkItemsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.first_ping.wait(10), "no health ping when the stream opened"

    def _read(self) -> None:
        try:
            for item in self._stream:
                if item.HasField("healthPing"):
                    self.pings += 1
                    self.first_ping.set()
                else:
                    self.items.put(item)
        except grpc.RpcError:
            pass

    def next(self, kind: str, timeout: float = 10) -> pb.WorkItem:
        """The next work item, which must be of ``kind`` (orchestratorRequest / activityRequest)."""
        item = self.items.get(timeout=timeout)
        assert item.WhichOneof("request") == kind, item
        assert item.completionToken
        return item

    def expect_nothing(self, within: float) -> None:
        """Assert that no work item arrives within ``within`` seconds."""
        try:
            item = self.items.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected work item: {item}")

    def complete(self, item: pb.WorkItem, *actions: pb.OrchestratorAction, custom_status: str | None = None) -> None:
        response = pb.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken, actions=actions
        )
        if custom_status is not None:
            response.customStatus.value = custom_status
        self.stub.CompleteOrchestratorTask(response)

    def complete_activity(self, item: pb.WorkItem, result: str | None) -> None:
        req = item.activityRequest
        response = pb.ActivityResponse(
            instanceId=req.orchestrationInstance.instanceId, taskId=req.taskId, completionToken=item.completionToken
        )
        if result is not None:
            response.result.value = result
        self.stub.CompleteActivityTask(response)

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)
        self.channel.close()


def schedule(action_id: int, name: str, data: str | None = None) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.scheduleTask.name = name
    if data is not None:
        a.scheduleTask.input.value = data
    return a


def timer(action_id: int, fire_at: datetime) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.createTimer.fireAt.CopyFrom(to_timestamp(fire_at))
    return a


def complete(action_id: int, result: str | None = None, status: int = pb.ORCHESTRATION_STATUS_COMPLETED) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.completeOrchestration.orchestrationStatus = status  # type: ignore[assignment]
    if result is not None:
        a.completeOrchestration.result.value = result
    return a


def start(stub: pb_grpc.TaskHubSidecarServiceStub, instance_id: str, name: str = "orch", **fields: object) -> str:
    response = stub.StartInstance(pb.CreateInstanceRequest(instanceId=instance_id, name=name, **fields))  # type: ignore[arg-type]
    return str(response.instanceId)
