"""Shared end-to-end fixtures: an in-process sidecar, and sidecar subprocesses on SQLite files.

Names other tests rely on: ``free_port()``, fixture ``sidecar`` (``.address``, ``.port``,
``.server``) and fixture ``sidecar_process`` (``start(db_path, port)`` returning a handle
with ``.address``, ``.pid``, ``.kill()``, ``.terminate()``). Protocol-level tests also use
``fast_sidecar()`` and ``RawWorker``, a hand-written worker speaking raw gRPC.

Backend switch (``make compat``): with ``DURABLETASK_E2E_BACKEND=official`` and
``DURABLETASK_COMPAT_PYTHON`` naming the compatibility interpreter, the ``sidecar`` fixture serves
Microsoft's official in-memory test backend (``compat/official_backend.py``, one process per test)
instead of ours. Tests that cannot run against it are skipped with the reason: tests marked
``our_sidecar``, tests that do not use the ``sidecar`` fixture (they start their own server or
need none), and tests that touch ``sidecar.server`` or open a ``RawWorker``.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.dispatch import DispatchOptions
from sidecar.engine_events import to_timestamp
from sidecar.server import SidecarServer

REPO_ROOT = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")


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


STORE_VARIABLE = "DURABLETASK_TEST_STORE"
_postgres_database: str | None = None


def store_mode() -> str:
    """Which store in-process sidecars of the e2e tests use: ``memory`` (default) or ``postgresql``."""
    mode = os.environ.get(STORE_VARIABLE, "memory").strip().lower()
    if mode not in ("memory", "postgresql"):
        raise pytest.UsageError(f"{STORE_VARIABLE} must be 'memory' or 'postgresql', not {mode!r}")
    return mode


def test_store_spec() -> str:
    """A store spec for one in-process sidecar: ``memory``, or a fresh schema of this session's PostgreSQL database."""
    global _postgres_database
    if store_mode() == "memory":
        return "memory"
    from tests.pg_support import create_database, require_postgres

    require_postgres()
    if _postgres_database is None:
        _postgres_database = create_database("durabletask_e2e")
    import psycopg

    schema = f"s_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_postgres_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in _postgres_database else "?"
    return f"{_postgres_database}{separator}options=-csearch_path%3D{schema}"


def drop_test_database() -> None:
    """Drop the session's PostgreSQL database, if one was made (end of the session)."""
    global _postgres_database
    if _postgres_database is not None:
        from tests.pg_support import drop_database

        drop_database(_postgres_database)
        _postgres_database = None


test_store_spec.__test__ = False  # type: ignore[attr-defined]


BACKEND_VARIABLE = "DURABLETASK_E2E_BACKEND"
COMPAT_PYTHON_VARIABLE = "DURABLETASK_COMPAT_PYTHON"
OFFICIAL_BACKEND_SCRIPT = REPO_ROOT / "compat" / "official_backend.py"


def official_backend_mode() -> bool:
    """True when the ``sidecar`` fixture serves the official package's test backend."""
    mode = os.environ.get(BACKEND_VARIABLE, "ours").strip().lower()
    if mode not in ("ours", "official"):
        raise pytest.UsageError(f"{BACKEND_VARIABLE} must be 'ours' or 'official', not {mode!r}")
    return mode == "official"


def compat_python() -> str | None:
    """The compatibility interpreter (official ``durabletask`` installed), if one is given."""
    path = os.environ.get(COMPAT_PYTHON_VARIABLE)
    return os.path.abspath(path) if path else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "our_sidecar(reason): needs this repository's sidecar; skipped when the e2e tests run "
        "against the official test backend",
    )
    config.addinivalue_line(
        "markers", "compat: needs the official SDK's interpreter (DURABLETASK_COMPAT_PYTHON, set by make compat)"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_test_database()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("compat") is not None and compat_python() is None:
        pytest.skip(f"needs the official SDK: set {COMPAT_PYTHON_VARIABLE} (make compat does)")
    if not official_backend_mode():
        return
    marker = item.get_closest_marker("our_sidecar")
    if marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "needs this repository's sidecar")
        pytest.skip(f"official backend: {reason}")
    if "sidecar" not in getattr(item, "fixturenames", ()):
        pytest.skip("official backend: does not use the `sidecar` fixture (starts its own server or needs none)")


class OfficialBackend:
    """The official package's in-memory test backend, served by a compat-interpreter process."""

    def __init__(self, python: str, port: int, timeout: float = 30) -> None:
        self.port = port
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [python, "-P", str(OFFICIAL_BACKEND_SCRIPT), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")},
            cwd=str(REPO_ROOT / "compat"),
        )
        try:
            self._wait_ready(timeout)
            wait_for_hello(self.address, timeout, self.proc)  # type: ignore[arg-type]
        except Exception as exc:
            output = self.output()
            self.stop()
            raise RuntimeError(f"official backend did not start: {exc}\n{output}") from exc

    def _wait_ready(self, timeout: float) -> None:
        """Waits for the one line the process prints once its server is started."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"listening on"):
            raise RuntimeError(f"no 'listening on' line within {timeout}s (got {line!r})")

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def server(self) -> SidecarServer:
        pytest.skip("official backend: the test uses our sidecar's internals (sidecar.server)")

    def output(self) -> str:
        """What the process has printed so far."""
        if self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """Closes its standard input (it stops the server and exits); kills it if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def sidecar() -> Iterator[InProcessSidecar | OfficialBackend]:
    """An in-process sidecar on a fresh memory store, on a free port (or the official backend)."""
    if official_backend_mode():
        python = compat_python()
        if python is None:
            raise pytest.UsageError(f"{BACKEND_VARIABLE}=official needs {COMPAT_PYTHON_VARIABLE}")
        backend = OfficialBackend(python, free_port())
        try:
            yield backend
        finally:
            backend.stop()
        return
    server = SidecarServer(test_store_spec(), host="localhost")
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
        env = sidecar_env()
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
    server = SidecarServer(test_store_spec(), host="localhost", dispatch_options=options, **kwargs)  # type: ignore[arg-type]
    port = server.start(0)
    try:
        yield server, f"localhost:{port}"
    finally:
        server.stop(grace=0.2)


@pytest.fixture
def raw_env() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, Callable[..., RawWorker], SidecarServer]]:
    """A fast in-process sidecar with a raw stub and a factory of raw workers, all closed at the end."""
    with fast_sidecar() as (server, address):
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        workers: list[RawWorker] = []

        def worker(request: pb.GetWorkItemsRequest | None = None) -> RawWorker:
            w = RawWorker(address, request)
            workers.append(w)
            return w

        yield stub, worker, server
        for w in workers:
            w.close()
        channel.close()


def kinds(events: object) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]  # type: ignore[attr-defined]


@pytest.fixture
def stub_and_worker() -> Iterator[tuple[pb_grpc.TaskHubSidecarServiceStub, RawWorker]]:
    """A fast in-process sidecar: a raw stub, and one raw worker whose stream is open."""
    with fast_sidecar() as (_, address), grpc.insecure_channel(address) as channel:
        worker = RawWorker(address)
        try:
            yield pb_grpc.TaskHubSidecarServiceStub(channel), worker
        finally:
            worker.close()


class RawWorker:
    """Opens a GetWorkItems stream and collects its items (health pings counted apart)."""

    def __init__(self, address: str, request: pb.GetWorkItemsRequest | None = None) -> None:
        if official_backend_mode():
            pytest.skip("official backend: a raw-protocol test (RawWorker) of this repository's sidecar")
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


def turn(item: pb.WorkItem, *actions: pb.OrchestratorAction) -> pb.OrchestratorResponse:
    """The result of an orchestration work item: ``actions``, under its token."""
    return pb.OrchestratorResponse(
        instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken, actions=actions
    )


def result(item: pb.WorkItem, value: str) -> pb.ActivityResponse:
    """The result of an activity work item: ``value``, under its token."""
    req = item.activityRequest
    response = pb.ActivityResponse(
        instanceId=req.orchestrationInstance.instanceId, taskId=req.taskId, completionToken=item.completionToken
    )
    response.result.value = value
    return response


def start(stub: pb_grpc.TaskHubSidecarServiceStub, instance_id: str, name: str = "orch", **fields: object) -> str:
    response = stub.StartInstance(pb.CreateInstanceRequest(instanceId=instance_id, name=name, **fields))  # type: ignore[arg-type]
    return str(response.instanceId)


def sidecar_env() -> dict[str, str]:
    """The environment for a sidecar subprocess: unbuffered output, this checkout importable."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def eventually(probe: Callable[[], _T | None], timeout: float, what: str, every: float = 0.05) -> _T:
    """Poll ``probe`` until it returns a value other than None/False; fails the test at the timeout."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(every)
