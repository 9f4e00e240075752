"""Store failures below the hub: a full SQLite database, files that cannot be opened, and transactions
run again after their connection broke (before the commit only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sidecar.store import MEMORY, SqliteStore, StoreFullError, StoreTx, StoreUnavailableError
from sidecar.store.sql_tx import SqlTx


def cap(store: SqliteStore, capped: bool) -> None:
    """Test-only: cap the database at its current size through the store's private connection (as a
    full disk would), or lift the cap."""
    with store._lock:
        db = store._db
        assert db is not None
        if capped:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}").fetchall()
        else:
            db.execute("PRAGMA max_page_count = 1073741823").fetchall()


def write_blob(size: int) -> object:
    def fn(tx: StoreTx) -> None:
        assert isinstance(tx, SqlTx)
        tx.db.execute("INSERT INTO history (instance_id, seq, event) VALUES ('x', "
                      "(SELECT COALESCE(MAX(seq), 0) + 1 FROM history), ?)", (b"\0" * size,))
    return fn


@pytest.fixture(params=["memory", "file"])
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(MEMORY if request.param == "memory" else tmp_path / "s.db")
    try:
        yield store
    finally:
        store.close()


def test_a_full_database_is_store_full_and_the_next_transaction_starts_clean(sqlite_store: SqliteStore) -> None:
    sqlite_store.run(write_blob(10))
    cap(sqlite_store, True)
    for _ in range(3):  # SQLite rolled the transaction back itself; nothing is left open
        with pytest.raises(StoreFullError) as full:
            sqlite_store.run(write_blob(100_000))
        assert "full" in str(full.value)
        assert ("in memory" in str(full.value)) if sqlite_store.path == MEMORY else (
            str(Path(sqlite_store.path).resolve()) in str(full.value)
        )
        assert sqlite_store._db is not None and not sqlite_store._db.in_transaction
    assert sqlite_store.get_instance("x") is None  # reads work while full
    cap(sqlite_store, False)
    sqlite_store.run(write_blob(100_000))
    with sqlite_store._lock:
        assert sqlite_store._db is not None
        assert sqlite_store._db.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 2


def test_a_path_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreUnavailableError, match="a-directory.db"):
        SqliteStore(directory)


def test_a_file_that_is_not_a_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a SQLite database" * 200)
    with pytest.raises(StoreUnavailableError, match="garbage.db"):
        SqliteStore(path)
    path.unlink()
    SqliteStore(path).close()  # the lock file was released


def test_a_closed_store_answers_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "closed.db")
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.get_instance("x")
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.run(write_blob(1))  # type: ignore[arg-type]


class Broken(sqlite3.OperationalError):
    """Stands for a connection that broke (a PostgreSQL server restarting)."""


class FlakyStore(SqliteStore):
    """A memory store whose connection 'breaks' in the transaction body or at its commit."""

    def __init__(self) -> None:
        self.break_in_body = 0
        self.break_at_commit = 0
        self.break_reads = 0
        super().__init__(MEMORY)

    def _connection_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, Broken)

    @contextmanager
    def _transaction(self) -> Iterator:  # type: ignore[override]
        with super()._transaction() as conn:
            if self.break_in_body:
                self.break_in_body -= 1
                raise Broken("server closed the connection unexpectedly")
            yield conn
            if self.break_at_commit:
                self.break_at_commit -= 1
                raise Broken("server closed the connection unexpectedly")

    @contextmanager
    def _reader(self) -> Iterator:  # type: ignore[override]
        with super()._reader() as conn:
            if self.break_reads:
                self.break_reads -= 1
                raise Broken("server closed the connection unexpectedly")
            yield conn


def counting(calls: list[int]) -> object:
    def fn(tx: StoreTx) -> str:
        calls.append(1)
        return "ok"
    return fn


def test_a_transaction_whose_connection_broke_before_the_commit_runs_again() -> None:
    store = FlakyStore()
    try:
        calls: list[int] = []
        store.break_in_body = 2
        assert store.run(counting(calls)) == "ok"  # type: ignore[arg-type]
        store.break_in_body = 3  # a connection that keeps breaking: reported
        with pytest.raises(StoreUnavailableError, match="closed the connection"):
            store.run(counting(calls))  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_transaction_whose_connection_broke_at_the_commit_is_reported_not_run_again() -> None:
    store = FlakyStore()
    try:
        calls: list[int] = []
        store.break_at_commit = 1  # it may have committed: running it again could apply it twice
        with pytest.raises(StoreUnavailableError):
            store.run(counting(calls))  # type: ignore[arg-type]
        assert calls == [1]
    finally:
        store.close()


def test_a_read_whose_connection_broke_runs_again() -> None:
    store = FlakyStore()
    try:
        store.break_reads = 1
        assert store.get_instance("absent") is None
        store.break_reads = 3
        with pytest.raises(StoreUnavailableError):
            store.get_instance("absent")
    finally:
        store.close()


def test_postgres_lost_connections_are_told_apart_from_other_failures() -> None:
    pytest.importorskip("psycopg")
    import psycopg
    import psycopg_pool
    from psycopg import errors

    from sidecar.store.postgres import PostgresStore

    store = PostgresStore.__new__(PostgresStore)  # only the classification is used: no connection
    assert store._connection_lost(errors.AdminShutdown("terminating connection due to administrator command"))
    assert store._connection_lost(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert store._connection_lost(psycopg.InterfaceError("the connection is closed"))
    assert not store._connection_lost(psycopg_pool.PoolTimeout("couldn't get a connection after 30 s"))
    assert not store._connection_lost(errors.DiskFull("could not extend file"))
    assert not store._connection_lost(errors.QueryCanceled("canceling statement due to statement timeout"))
    assert not store._connection_lost(errors.DeadlockDetected("deadlock detected"))
    assert not store._connection_lost(ValueError("not a database error"))


def test_postgres_pool_parameters_are_taken_out_of_the_url() -> None:
    pytest.importorskip("psycopg")
    from sidecar.store.base import StoreValueError
    from sidecar.store.postgres import PoolSettings, split_url

    assert split_url("postgresql://u@h/db") == ("postgresql://u@h/db", PoolSettings(1, 10, 10.0))
    libpq, pool = split_url("postgresql://u@h/db?pool_max=20&sslmode=require&pool_min=2&pool_timeout=2.5")
    assert libpq == "postgresql://u@h/db?sslmode=require" and pool == PoolSettings(2, 20, 2.5)
    # libpq's own parameters pass through percent-encoded: it does not read '+' as a space.
    libpq, _ = split_url("postgresql://u@h/db?options=-c%20synchronous_commit%3Doff&pool_max=4")
    assert libpq == "postgresql://u@h/db?options=-c%20synchronous_commit%3Doff"
    for bad, named in [
        ("pool_min=0", "pool_min <= pool_max"), ("pool_min=5&pool_max=4", "pool_min <= pool_max"),
        ("pool_max=many", "must be integers"), ("pool_timeout=0", "pool_timeout"),
        ("pool_timeout=soon", "pool_timeout"), ("pool_timeout=inf", "pool_timeout"),
    ]:
        with pytest.raises(StoreValueError, match=named) as refused:
            split_url(f"postgresql://u:secret@h/db?{bad}")
        assert "secret" not in str(refused.value)


def test_postgres_failures_are_classified_by_cause() -> None:
    pytest.importorskip("psycopg")
    from psycopg import errors

    from sidecar.store.base import StoreFullError, StoreValueError
    from sidecar.store.postgres import PostgresStore

    store = PostgresStore.__new__(PostgresStore)  # only the classification is used: no connection
    store._shown = "postgresql://u:***@h/db"
    full = store._classify(errors.DiskFull("could not extend file: No space left on device"))
    assert isinstance(full, StoreFullError) and "is full" in str(full)
    # A row or index entry over PostgreSQL's limits never fits: refused, not retried as "full".
    too_big = store._classify(errors.ProgramLimitExceeded("index row size 9000 exceeds maximum 2712"))
    assert isinstance(too_big, StoreValueError) and "index row size" in str(too_big)
