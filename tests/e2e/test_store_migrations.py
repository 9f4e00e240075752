"""Schema versions and migrations of both stores.

- a database without a version table (version 0) is migrated in one transaction, and its work runs on;
- a failed migration leaves the old database untouched;
- a database written by a newer sidecar is refused, both versions named, by the store and the CLI;
- a version-3 database (SQLite or PostgreSQL) gains the entity queue's trace_context column;
- a version-4 database gains the partial indexes of leased, delayed and ready rows;
- a version-5 database gains instances.lease_visible, and a turn leased before it runs on;
- sidecars starting at once on one fresh PostgreSQL database create the schema once;
- a sidecar starting on a database at the current version runs no DDL, so it neither waits for
  nor deadlocks with the running sidecars' transactions.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.engine_events import new_event
from sidecar.hub import TaskHub
from sidecar.server import SidecarServer
from sidecar.store import SchemaVersionError, SqliteStore, open_store, sql_schema
from sidecar.store.sql_schema import SCHEMA_VERSION
from tests.e2e.conftest import FAST, REPO_ROOT, RawWorker, complete, free_port, kinds, sidecar_env
from tests.e2e.v0_database import write_v0_database


def test_version_0_sqlite_file_is_migrated_and_its_instance_runs_to_completion(tmp_path: Path) -> None:
    path = tmp_path / "v0.db"
    write_v0_database(path, "old-1")

    server = SidecarServer(str(path), host="localhost", dispatch_options=FAST)
    port = server.start(0)
    address = f"localhost:{port}"
    try:
        store = server.store
        assert store.schema_version() == SCHEMA_VERSION
        inbox = store.inbox_of("old-1")
        assert [e.WhichOneof("eventType") for e, _, _ in inbox] == ["executionStarted", "eventRaised"]
        assert isinstance(store, SqliteStore) and store.cleared_leases == 1  # the old run's lease
        assert query(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
        assert query(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        # A row written now (no ``ord``) is delivered after the migrated ones.
        raised = pb.RaiseEventRequest(instanceId="old-1", name="later")
        raised.input.value = '"later"'
        stub.RaiseEvent(raised)
        worker = RawWorker(address)
        try:
            turn = worker.next("orchestratorRequest")  # the stale lease of the old run was released
            assert turn.orchestratorRequest.instanceId == "old-1"
            new_events = turn.orchestratorRequest.newEvents
            assert kinds(new_events) == [
                "orchestratorStarted",
                "executionStarted",
                "eventRaised",
                "eventRaised",
            ]
            assert [e.eventRaised.input.value for e in new_events[2:]] == ['"event"', '"later"']
            worker.complete(turn, complete(1, '"done"'))
            state = stub.WaitForInstanceCompletion(
                pb.GetInstanceRequest(instanceId="old-1", getInputsAndOutputs=True), timeout=10
            ).orchestrationState
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
            assert state.input.value == '"old"' and state.output.value == '"done"'
        finally:
            worker.close()
            channel.close()
    finally:
        server.stop(grace=0.2)


def test_failed_migration_leaves_the_version_0_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v0.db"
    write_v0_database(path, "kept")
    broken = {v: dict(steps) for v, steps in sql_schema.MIGRATIONS.items()}
    broken[SCHEMA_VERSION] = {
        **broken[SCHEMA_VERSION],
        "sqlite": [*broken[SCHEMA_VERSION]["sqlite"], "ALTER TABLE no_such_table ADD COLUMN x INTEGER"],
    }
    monkeypatch.setattr(sql_schema, "MIGRATIONS", broken)
    with pytest.raises(Exception, match="no_such_table"):
        SqliteStore(path)
    monkeypatch.undo()
    tables = {r[0] for r in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_version" not in tables  # rolled back with everything else
    assert query(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == [("inbox_default_ord",)]
    assert query(path, "SELECT COUNT(*) FROM inbox") == [(2,)]
    store = SqliteStore(path)  # the real migration still works afterwards
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert len(store.inbox_of("kept")) == 2
    finally:
        store.close()


def set_sqlite_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("UPDATE schema_version SET version = ?", (version,))
    finally:
        db.close()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on a SQLite file, from a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_sqlite_file_from_a_newer_sidecar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SqliteStore(path).close()
    set_sqlite_version(path, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as refused:
        SqliteStore(path)
    message = str(refused.value)
    assert (
        f"schema version {SCHEMA_VERSION + 1}" in message and f"schema version {SCHEMA_VERSION}:" in message
    )
    assert str(path.resolve()) in message
    assert query(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]  # untouched
    with pytest.raises(SchemaVersionError):  # refused again, not "in use": the refusal released the file
        SqliteStore(path)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_cli_refuses_a_database_from_a_newer_sidecar(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        spec = str(tmp_path / "newer.db")
        SqliteStore(spec).close()
        set_sqlite_version(Path(spec), SCHEMA_VERSION + 1)
    else:
        import psycopg

        spec = str(request.getfixturevalue("fresh_postgres"))
        open_store(spec).close()
        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "--store", spec, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=sidecar_env(),
        cwd=str(REPO_ROOT),
    )
    assert proc.returncode != 0
    assert f"schema version {SCHEMA_VERSION + 1}" in proc.stderr, proc.stderr
    assert f"schema version {SCHEMA_VERSION}:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_postgres_database_from_a_newer_sidecar_is_refused(fresh_postgres: str) -> None:
    import psycopg

    open_store(fresh_postgres).close()
    with psycopg.connect(fresh_postgres, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError) as refused:
        open_store(fresh_postgres)
    message = str(refused.value)
    assert (
        f"schema version {SCHEMA_VERSION + 1}" in message and f"schema version {SCHEMA_VERSION}:" in message
    )
    with psycopg.connect(fresh_postgres) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION + 1,)]


def test_two_postgres_stores_opened_at_once_on_a_fresh_database(fresh_postgres: str) -> None:
    import psycopg

    barrier = threading.Barrier(4)
    opened: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(open_store(fresh_postgres))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors, errors
        assert len(opened) == 4
        assert all(s.schema_version() == SCHEMA_VERSION for s in opened)
        with psycopg.connect(fresh_postgres) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        for s in opened:
            s.close()


def test_a_sidecar_starting_on_a_live_postgres_database_runs_no_ddl(fresh_postgres: str) -> None:
    import psycopg

    open_store(fresh_postgres).close()
    # A running sidecar's open transaction holds ROW EXCLUSIVE on the tables it writes; any DDL
    # on them, even "IF NOT EXISTS", would wait for it.
    running = psycopg.connect(fresh_postgres)
    opened: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_store(fresh_postgres))
        except BaseException as exc:  # reported below
            errors.append(exc)

    starting = threading.Thread(target=open_one)
    try:
        for table in ("instances", "history", "inbox", "activity_tasks", "entities", "entity_queue"):
            running.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
        starting.start()
        starting.join(timeout=20)
        assert not starting.is_alive(), "the second store waited for the running transaction"
        assert not errors, errors
        assert opened[0].schema_version() == SCHEMA_VERSION
    finally:
        running.rollback()
        running.close()
        if starting.is_alive():
            starting.join(timeout=30)  # released by the rollback
        for store in opened:
            store.close()


def run_statements(kind: str, spec: str, statements: list[str]) -> None:
    """Run ``statements`` on the SQLite file or PostgreSQL database ``spec``, outside any store."""
    if kind == "sqlite":
        db = sqlite3.connect(spec, isolation_level=None)
        for statement in statements:
            db.execute(statement)
        db.close()
        return
    import psycopg

    with psycopg.connect(spec, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


# What versions after 5 added, undone to make an older database.
AFTER_VERSION_5 = ["ALTER TABLE instances DROP COLUMN lease_visible"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_version_3_database_gains_the_entity_queue_trace_context(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Version 4 adds entity_queue.trace_context: a queued message written before it runs on."""
    now = datetime.now(timezone.utc)

    def signal(store: Any, request_id: str, ctx: pb.TraceContext | None) -> None:
        event = new_event(now)
        event.entityOperationSignaled.requestId = request_id
        event.entityOperationSignaled.operation = "add"
        TaskHub(store).signal_entity("@counter@a", event, now, now, ctx)

    spec = str(tmp_path / "v3.db") if kind == "sqlite" else str(request.getfixturevalue("fresh_postgres"))
    old = open_store(spec)
    signal(old, "before", None)
    old.close()
    downgrade = ["ALTER TABLE entity_queue DROP COLUMN trace_context", *AFTER_VERSION_5,
                 "UPDATE schema_version SET version = 3"]
    run_statements(kind, spec, downgrade)

    store = open_store(spec)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        traced = pb.TraceContext(traceParent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        signal(store, "after", traced)
        item = TaskHub(store).lease_entity(now, timedelta(minutes=1))
        assert item is not None
        assert [e.entityOperationSignaled.requestId for e in item.operations] == ["before", "after"]
        assert item.trace_contexts == [None, traced]
    finally:
        store.close()


# Version 5's indexes: of the next-due question, and of the activity claim (activity_ready).
DUE_TIME_INDEXES = {
    "instances_delayed", "instances_leased", "activity_leased", "activity_ready", "entities_delayed",
    "entities_leased",
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_version_4_database_gains_the_due_time_indexes(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Version 5 adds partial indexes of leased and delayed rows; a database without them gets them."""
    spec = str(tmp_path / "v4.db") if kind == "sqlite" else str(request.getfixturevalue("fresh_postgres"))
    open_store(spec).close()
    downgrade = [*(f"DROP INDEX {name}" for name in sorted(DUE_TIME_INDEXES)), *AFTER_VERSION_5,
                 "UPDATE schema_version SET version = 4"]
    listing = (
        "SELECT name FROM sqlite_master WHERE type = 'index'" if kind == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    run_statements(kind, spec, downgrade)
    if kind == "sqlite":
        assert not DUE_TIME_INDEXES & {name for (name,) in query(Path(spec), listing)}

    store = open_store(spec)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.next_due_at(datetime.now(timezone.utc)) is None
    finally:
        store.close()
    if kind == "sqlite":
        names = {name for (name,) in query(Path(spec), listing)}
    else:
        import psycopg

        with psycopg.connect(spec) as conn:
            names = {name for (name,) in conn.execute(listing).fetchall()}
    assert DUE_TIME_INDEXES <= names



@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_turn_leased_by_a_version_5_sidecar_runs_on_after_the_upgrade(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Version 6 adds instances.lease_visible (the held rows' own times); a lease from before has
    none, and its rows were never moved out of sight: released or cleared, its events go out again."""
    from sidecar.model import InstanceSnapshot
    from sidecar.store.sql_rows import to_us

    now = datetime.now(timezone.utc)
    spec = str(tmp_path / "v5.db") if kind == "sqlite" else str(request.getfixturevalue("fresh_postgres"))
    old = open_store(spec)
    hub = TaskHub(old)
    instance = InstanceSnapshot(instance_id="a", execution_id="a-e", name="o",
                                status=pb.ORCHESTRATION_STATUS_PENDING, created_at=now, last_updated_at=now)
    start = new_event(now)
    start.executionStarted.name = "o"
    start.executionStarted.orchestrationInstance.instanceId = "a"
    start.executionStarted.orchestrationInstance.executionId.value = "a-e"
    hub.create_instance(instance, start, now, now)
    item = hub.lease_orchestration(now, timedelta(minutes=5))
    assert item is not None
    old.close()
    # As a version-5 sidecar left it: the row where it was, no lease_visible column.
    downgrade = [f"UPDATE inbox SET visible_at = {to_us(now)}", *AFTER_VERSION_5, "UPDATE schema_version SET version = 5"]
    run_statements(kind, spec, downgrade)

    store = open_store(spec)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        upgraded = TaskHub(store)
        if kind == "postgresql":  # a SQLite file's leases are cleared when it is opened
            assert upgraded.release_orchestration(item.token)
        again = upgraded.lease_orchestration(now + timedelta(seconds=1), timedelta(minutes=5))
        assert again is not None and again.token != item.token
        assert kinds(again.new_events) == ["orchestratorStarted", "executionStarted"]
    finally:
        store.close()
