"""The sidecar when its database fails: a full SQLite file, dropped PostgreSQL connections, an
unreachable database at start, schema versions, and space reuse after purges.

What must hold (the storage-failure issue):

- a storage failure answers UNAVAILABLE or RESOURCE_EXHAUSTED with a message naming the store and
  the cause, never INTERNAL with a raw driver message;
- a work item whose completion failed goes back to the queue at once (with the hand-back delay),
  not after its lease; everything resumes within seconds once space or the database is back, and
  nothing is lost or applied twice;
- an unreachable database at start ends the process with a message naming the URL (no password);
- a database written by a newer sidecar is refused (both versions named); an older one is
  migrated in one transaction;
- purged space is reused, and handed back to the file system (the SQLite file does not only grow).
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import TaskHubGrpcWorker
from sidecar import engine_events
from sidecar.dispatch import DispatchOptions
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.server import SidecarServer
from sidecar.store import InstanceFilter, SqliteStore
from sidecar.store.urls import redact
from tests.e2e.conftest import (
    REPO_ROOT,
    RawWorker,
    complete,
    eventually,
    free_port,
    kinds,
    schedule,
    sidecar_env,
)
from tests.e2e.v0_database import write_v0_database

pytestmark = pytest.mark.our_sidecar("checks this sidecar's own store failure handling")

WAIT = 60.0
BIG = 20_000  # characters: a payload that needs new database pages
FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5, hello_timeout_seconds=5
)
# Leases far longer than any wait below: an item offered again came back through the hand-back.
LONG_LEASE = DispatchOptions(
    orchestration_lease=timedelta(seconds=120),
    activity_lease=timedelta(seconds=120),
    entity_lease=timedelta(seconds=120),
    stream_grace=0.3,
    health_ping_interval=0.5,
    safety_poll=0.5,
)


# ================================================================ a full database (SQLite and PostgreSQL)


def cap_sqlite_store(server: SidecarServer, capped: bool) -> None:
    """Cap the SQLite file at its current size (writes needing a new page fail with SQLITE_FULL, as
    on a full disk), or lift the cap.

    Test-only: this reaches into the store's private connection (``_db``) under its lock, because
    a real full disk cannot be made safely in a test.
    """
    store = server.store
    assert isinstance(store, SqliteStore)
    with store._lock:
        db = store._db
        assert db is not None
        if not capped:
            db.execute("PRAGMA max_page_count = 1073741823").fetchall()
            return
        db.executescript("PRAGMA incremental_vacuum;")  # no free page left to reuse
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        assert db.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages


# On PostgreSQL a full disk is simulated by triggers that fail every new row with SQLSTATE 53100
# (disk_full, what the server reports when it cannot extend a file) while a switch is on.
PG_FULL_SWITCH = """
CREATE TABLE test_disk_full (full_now BOOLEAN NOT NULL);
INSERT INTO test_disk_full VALUES (false);
CREATE FUNCTION test_disk_full_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT full_now FROM test_disk_full) THEN
        RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = '53100';
    END IF;
    RETURN NEW;
END $$;
"""
PG_FULL_TABLES = ("instances", "history", "inbox", "activity_tasks", "entity_queue")


class Fullness:
    """Makes the store of an in-process sidecar full, and gives it room again."""

    def __init__(self, kind: str, server: SidecarServer, spec: str) -> None:
        self.kind = kind
        self.server = server
        self.spec = spec
        if kind == "postgresql":
            import psycopg

            with psycopg.connect(spec, autocommit=True) as conn:
                conn.execute(PG_FULL_SWITCH)
                for table in PG_FULL_TABLES:
                    conn.execute(
                        f"CREATE TRIGGER test_disk_full BEFORE INSERT ON {table}"
                        " FOR EACH ROW EXECUTE FUNCTION test_disk_full_check()"
                    )

    def set(self, full: bool) -> None:
        if self.kind == "sqlite":
            cap_sqlite_store(self.server, full)
            return
        import psycopg

        with psycopg.connect(self.spec, autocommit=True) as conn:
            conn.execute("UPDATE test_disk_full SET full_now = %s", (full,))

    def names_store(self, details: str) -> bool:
        if self.kind == "sqlite":
            return str(Path(self.spec).resolve()) in details
        return redact(self.spec) in details


@pytest.fixture(params=["sqlite", "postgresql"])
def full_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SidecarServer, Fullness]]:
    """An in-process sidecar (long leases) on a SQLite file or a fresh PostgreSQL database, and its switch."""
    kind = str(request.param)
    spec = str(tmp_path / "full.db") if kind == "sqlite" else str(request.getfixturevalue("fresh_postgres"))
    server = SidecarServer(spec, host="localhost", dispatch_options=LONG_LEASE)
    server.start(0)
    try:
        yield server, Fullness(kind, server, spec)
    finally:
        server.stop(grace=0.2)


class Items:
    """The work items of a RawWorker, taken by what they are (others wait for their turn)."""

    def __init__(self, worker: RawWorker) -> None:
        self.worker = worker
        self.waiting: list[pb.WorkItem] = []

    def take(self, match: Callable[[pb.WorkItem], bool], timeout: float = 10) -> pb.WorkItem:
        deadline = time.monotonic() + timeout
        while True:
            for item in self.waiting:
                if match(item):
                    self.waiting.remove(item)
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching work item within {timeout} s (have {self.waiting})")
            try:
                self.waiting.append(self.worker.items.get(timeout=remaining))
            except queue.Empty:
                pass

    def turn(self, instance_id: str, timeout: float = 10) -> pb.WorkItem:
        return self.take(lambda i: i.orchestratorRequest.instanceId == instance_id, timeout)

    def activity(self, instance_id: str, timeout: float = 10) -> pb.WorkItem:
        return self.take(lambda i: i.activityRequest.orchestrationInstance.instanceId == instance_id, timeout)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_full_store_refuses_with_resource_exhausted_hands_work_back_and_resumes(
    full_env: tuple[SidecarServer, Fullness],
) -> None:
    server, fullness = full_env
    address = f"localhost:{server.port}"
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.TaskHubSidecarServiceStub(channel)
    worker = RawWorker(address)
    items = Items(worker)
    big = json.dumps("r" * BIG)
    try:
        for iid in ("a", "b"):
            stub.StartInstance(pb.CreateInstanceRequest(instanceId=iid, name="orch"))
        turn_a = items.turn("a")
        worker.complete(items.turn("b"), schedule(1, "act"))
        activity_b = items.activity("b")

        fullness.set(True)

        # A client write that needs space: RESOURCE_EXHAUSTED naming the store and the cause.
        error = rpc_error(lambda: stub.StartInstance(
            pb.CreateInstanceRequest(instanceId="c", name="orch", input=wrappers_pb2.StringValue(value=big))
        ))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert fullness.names_store(error.details()) and "full" in error.details(), error.details()
        # Reads still work.
        assert stub.GetInstance(pb.GetInstanceRequest(instanceId="a")).exists

        # A turn completed while full: refused, and offered again at once (not after the lease).
        failed_at = time.monotonic()
        error = rpc_error(lambda: worker.complete(turn_a, complete(1, big)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        again_a = items.turn("a", timeout=5)
        assert time.monotonic() - failed_at < 5
        assert again_a.completionToken != turn_a.completionToken
        assert kinds(again_a.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]

        # An activity result while full: the same.
        error = rpc_error(lambda: worker.complete_activity(activity_b, big))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        again_b = items.activity("b", timeout=5)
        assert again_b.completionToken != activity_b.completionToken

        # Still full: refused again, and back again after the (growing) hand-back delay.
        error = rpc_error(lambda: worker.complete(again_a, complete(1, big)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        again_a = items.turn("a", timeout=5)

        fullness.set(False)

        worker.complete(again_a, complete(1, big))
        worker.complete_activity(again_b, big)
        final_b = items.turn("b")
        new_events = final_b.orchestratorRequest.newEvents
        assert kinds(new_events) == ["orchestratorStarted", "taskCompleted"]
        assert new_events[1].taskCompleted.result.value == big
        worker.complete(final_b, complete(2, new_events[1].taskCompleted.result.value))
        stub.StartInstance(pb.CreateInstanceRequest(instanceId="c", name="orch", input=wrappers_pb2.StringValue(value=big)))
        turn_c = items.turn("c")
        worker.complete(turn_c, complete(1, turn_c.orchestratorRequest.newEvents[1].executionStarted.input.value))

        for iid in ("a", "b", "c"):
            state = stub.WaitForInstanceCompletion(
                pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True), timeout=10
            ).orchestrationState
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, iid
            assert state.output.value == big, iid
        history_b = server.store.get_history("b")
        assert history_b is not None and kinds(history_b).count("taskCompleted") == 1
        worker.expect_nothing(0.5)
    finally:
        worker.close()
        channel.close()


def padded_echo(ctx: task.OrchestrationContext, n: int):
    padded = yield ctx.call_activity(pad, input=n)
    yield ctx.create_timer(timedelta(milliseconds=200))
    return f"{n}:{len(padded)}"


def pad(ctx: task.ActivityContext, n: int) -> str:
    return "p" * BIG + str(n)


def test_full_store_with_the_sdk_worker_loses_nothing(
    full_env: tuple[SidecarServer, Fullness], caplog: pytest.LogCaptureFixture
) -> None:
    """The real worker keeps going through a full store: every orchestration ends with its own result."""
    caplog.set_level(logging.WARNING, logger="durabletask-sidecar.dispatch")
    server, fullness = full_env
    address = f"localhost:{server.port}"
    worker = TaskHubGrpcWorker(host_address=address, resiliency_options=FAST_RECONNECT)
    worker.add_orchestrator(padded_echo)
    worker.add_activity(pad)
    try:
        with TaskHubGrpcClient(host_address=address) as client:
            ids = [client.schedule_new_orchestration(padded_echo, input=n, instance_id=f"sdk-{n}") for n in range(6)]
            fullness.set(True)
            worker.start()
            eventually(  # the worker runs into the full store
                lambda: any("completion failed" in r.getMessage() for r in caplog.records),
                WAIT, "a completion to fail on the full store",
            )
            error = rpc_error(
                lambda: client.schedule_new_orchestration(padded_echo, input="x" * BIG, instance_id="late")
            )
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            handed_back = [r for r in caplog.records if "completion failed" in r.getMessage()]
            assert handed_back, "no completion ran into the full store"
            fullness.set(False)
            resumed = time.monotonic()
            for n, iid in enumerate(ids):
                state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
                assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
                assert state.serialized_output == json.dumps(f"{n}:{BIG + len(str(n))}")
            # Resumed within the hand-back delay's cap, far below the 120 s lease.
            assert time.monotonic() - resumed < 35
            for iid in ids:
                history = server.store.get_history(iid)
                assert history is not None and kinds(history).count("taskCompleted") == 1, iid
    finally:
        worker.stop(timeout=10)


# ================================================================ PostgreSQL: connections dropped mid-run


def steps(ctx: task.OrchestrationContext, n: int):
    total = 0
    for step in range(3):
        total += yield ctx.call_activity(numbered, input=[n, step])
        yield ctx.create_timer(timedelta(milliseconds=300))
    return total


CALLS: dict[tuple[int, int], int] = {}
CALLS_LOCK = threading.Lock()


def numbered(ctx: task.ActivityContext, args: list[int]) -> int:
    n, step = args
    with CALLS_LOCK:
        CALLS[(n, step)] = CALLS.get((n, step), 0) + 1
    return n * 100 + step


def expected_total(n: int) -> int:
    return sum(n * 100 + step for step in range(3))


def terminate_sessions(url: str) -> int:
    """End every session on ``url``'s database, as a server restart would (from an admin connection)."""
    import psycopg

    from tests.pg_support import admin_url, database_name

    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database_name(url),),
        ).fetchone()
    return int(row[0]) if row else 0


def test_postgres_sessions_killed_mid_run_lose_nothing(fresh_postgres: str) -> None:
    CALLS.clear()
    server = SidecarServer(fresh_postgres, host="localhost", dispatch_options=DispatchOptions(safety_poll=0.5))
    port = server.start(0)
    address = f"localhost:{port}"
    worker = TaskHubGrpcWorker(host_address=address, resiliency_options=FAST_RECONNECT)
    worker.add_orchestrator(steps)
    worker.add_activity(numbered)
    codes: list[grpc.StatusCode] = []
    probing = threading.Event()

    def probe() -> None:
        # Client calls while sessions are killed: each succeeds or is UNAVAILABLE, never INTERNAL.
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)
            i = 0
            while probing.is_set():
                i += 1
                try:
                    stub.GetInstance(pb.GetInstanceRequest(instanceId="pg-0"), timeout=30)
                    # A write that no worker ever sees: it starts tomorrow.
                    later = pb.CreateInstanceRequest(instanceId=f"probe-{i}", name="steps")
                    later.scheduledStartTimestamp.FromDatetime(datetime.now(timezone.utc) + timedelta(days=1))
                    stub.StartInstance(later, timeout=30)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())  # type: ignore[attr-defined]
                time.sleep(0.01)

    try:
        worker.start()
        with TaskHubGrpcClient(host_address=address) as client:
            ids = [client.schedule_new_orchestration(steps, input=n, instance_id=f"pg-{n}") for n in range(30)]
            probing.set()
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            killed = []
            for calls in (10, 40):  # mid-run: after some of the 90 activity calls, well before the last
                eventually(lambda n=calls: len(CALLS) >= n, WAIT, f"{calls} activity calls")
                killed.append(terminate_sessions(fresh_postgres))
            probed = len(codes)
            eventually(lambda: len(codes) >= probed + 20, WAIT, "client calls after the second kill")
            probing.clear()
            prober.join(timeout=60)
            assert all(k > 0 for k in killed), killed
            for n, iid in enumerate(ids):
                state = wait_tolerating_unavailable(client, iid)
                assert state.runtime_status == OrchestrationStatus.COMPLETED, (iid, state)
                assert state.serialized_output == str(expected_total(n)), iid
        for iid in ids:
            history = server.store.get_history(iid)
            assert history is not None
            completed = [e.taskCompleted.taskScheduledId for e in history if e.HasField("taskCompleted")]
            assert sorted(completed) == sorted(set(completed)) and len(completed) == 3, (iid, kinds(history))
        assert set(CALLS) == {(n, s) for n in range(30) for s in range(3)}
        assert codes and set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(codes)
    finally:
        probing.clear()
        worker.stop(timeout=10)
        server.stop(grace=0.2)


def wait_tolerating_unavailable(client: TaskHubGrpcClient, iid: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            state = client.wait_for_orchestration_completion(iid, timeout=max(1, int(deadline - time.monotonic())))
            assert state is not None
            return state
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise


def test_postgres_call_waiting_for_a_connection_is_unavailable_after_pool_timeout(fresh_postgres: str) -> None:
    from sidecar.store.base import StoreUnavailableError
    from sidecar.store.postgres import PostgresStore

    store = PostgresStore(f"{fresh_postgres}?pool_max=1&pool_timeout=0.5")
    try:
        with store._pool.connection():  # the only connection, busy elsewhere
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="no connection .* became free") as refused:
                store.get_instance("any")
            waited = time.monotonic() - started
        assert 0.4 < waited < 5, waited
        assert "pool_max" in str(refused.value)
        assert store.get_instance("any") is None  # served again once a connection is free
    finally:
        store.close()


# ================================================================ unreachable database at start


def test_unreachable_postgres_at_start_exits_naming_the_url_without_password() -> None:
    closed_port = free_port()  # bound and released: nothing listens there
    url = f"postgresql://someone:secret@127.0.0.1:{closed_port}/x"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "--store", url, "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=sidecar_env(), cwd=str(REPO_ROOT),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 15, elapsed
    output = proc.stdout + proc.stderr
    assert "secret" not in output
    assert f"postgresql://someone:***@127.0.0.1:{closed_port}/x" in proc.stderr, proc.stderr


# ================================================================ SQLite: purged space is reused


T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def sqlite_size(path: Path) -> int:
    """Bytes on disk: the database file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def run_round(hub: TaskHub, round_no: int, count: int) -> None:
    payload = json.dumps("x" * 4000)
    for i in range(count):
        iid = f"r{round_no}-{i}-{uuid.uuid4().hex[:6]}"
        inst = InstanceSnapshot(instance_id=iid, execution_id="e", name="o", status=pb.ORCHESTRATION_STATUS_PENDING,
                                created_at=T0, last_updated_at=T0, input=payload)
        start = engine_events.new_execution_started(name="o", instance_id=iid, execution_id="e", now=T0,
                                                    input=payload)
        hub.create_instance(inst, start, T0, T0)
        item = hub.lease_orchestration(T0, timedelta(minutes=1))
        assert item is not None
        hub.complete_orchestration(
            item.token, pb.OrchestratorResponse(completionToken=item.token, actions=[complete(1, payload)]), T0
        )


@pytest.mark.parametrize("origin", ["new", "version-0"])
def test_purged_space_is_reused_and_returned(tmp_path: Path, origin: str) -> None:
    path = tmp_path / "purge.db"
    if origin == "version-0":
        write_v0_database(path, "old")  # auto_vacuum=NONE: free pages are reused, never returned
    hub = TaskHub(SqliteStore(path))
    try:
        peaks: list[int] = []
        after_purge: list[int] = []
        for round_no in range(5):
            run_round(hub, round_no, 200)
            peaks.append(sqlite_size(path))
            assert hub.purge_by_filter(InstanceFilter(), recursive=False) == 200
            after_purge.append(sqlite_size(path))
        # Later rounds reuse the space of the earlier ones: no linear growth (each round adds
        # about a first round's worth when nothing is reused). The write-ahead log reaches its
        # working size (checkpoints come every 1,000 pages written) during the first two rounds,
        # so the size levels off from the second round on.
        assert max(peaks[2:]) <= 1.1 * peaks[1], peaks
        assert max(peaks) <= 2 * peaks[0], peaks
        if origin == "new":
            # And a purge hands most of it back to the file system.
            assert all(size < peak / 4 for size, peak in zip(after_purge, peaks, strict=True)), (peaks, after_purge)
    finally:
        hub.close()
