"""The SQLite store: one file (WAL mode) owned by one sidecar process, or ``memory`` for tests.

All access goes through a single connection guarded by a lock; each transaction is one
``BEGIN IMMEDIATE`` ... ``COMMIT``. Because one process owns the file (an advisory lock file
beside it says so), leases left by a previous run of that process are released at open.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sidecar.store.base import SchemaVersionError, StoreError, StoreFullError, StoreUnavailableError
from sidecar.store.sql_schema import MIGRATIONS, SCHEMA_VERSION, SQLITE, newer_schema_message
from sidecar.store.sql_store import Failure, SqlStore
from sidecar.store.sql_tx import Row

MEMORY = "memory"


class StoreLockedError(StoreError):
    """Another sidecar process already owns this SQLite file."""


class _FileLock:
    """An exclusive advisory lock next to the database file, held while the store is open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX systems run without the lock
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise StoreLockedError(
                f"the store is in use by another sidecar process (lock file {path} is held); "
                "a SQLite store is owned by one sidecar at a time (use PostgreSQL to run several)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Connection:
    """A sqlite3 connection as the SQL layer wants it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)


class SqliteStore(SqlStore):
    """SQLite implementation of :class:`~sidecar.store.base.Store`. ``path`` is a file path or ``"memory"``."""

    def __init__(self, path: str | os.PathLike[str] = MEMORY) -> None:
        super().__init__()
        self.path = str(path)
        self._lock = threading.RLock()
        self._file_lock: _FileLock | None = None
        if self.path == MEMORY:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = _FileLock(self.path + ".lock")
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                # Set before the first table exists: freed pages are kept for reuse and can be returned.
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except Exception:
                self._file_lock.release()
                raise
        db.row_factory = sqlite3.Row
        self._db = db
        self._conn = _Connection(db)
        try:
            self._migrate()
            self.cleared_leases = self._clear_leases()
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        return "in memory (lost on exit)" if self.path == MEMORY else f"SQLite file {Path(self.path).resolve()}"

    # --- plumbing ---

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reader(self) -> Iterator[_Connection]:
        with self._lock:
            yield self._conn

    def _classify(self, exc: BaseException) -> Failure | StoreError:
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc)
            if "full" in text:
                return StoreFullError(f"the SQLite store {self.path} is full ({text}); free disk space and retry")
            return StoreUnavailableError(f"the SQLite store {self.path} failed: {text}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            return StoreUnavailableError(f"the SQLite store {self.path} failed: {exc}")
        return Failure.OTHER

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._file_lock is not None:
                self._file_lock.release()
                self._file_lock = None

    # --- schema ---

    def _version(self) -> int | None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" in tables:
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0]) if row[0] is not None else (0 if "instances" in tables else None)
        return 0 if "instances" in tables else None

    def schema_version(self) -> int:
        with self._lock:
            return self._version() or 0

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._version()
                if found is not None and found > SCHEMA_VERSION:
                    raise SchemaVersionError(newer_schema_message(found, self.describe()))
                if found is not None:
                    for version in range(found + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[version]["sqlite"]:
                            self._db.execute(statement)
                for statement in SQLITE.create_tables().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                if found != SCHEMA_VERSION:
                    self._db.execute("DELETE FROM schema_version")
                    self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _clear_leases(self) -> int:
        """Release every lease left by the previous run of the process that owns this file."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            n = self._db.execute(
                "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL,"
                " lease_new_events = NULL WHERE lease_token IS NOT NULL"
            ).rowcount
            n += self._db.execute(
                "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL WHERE lease_token IS NOT NULL"
            ).rowcount
            n += self._db.execute(
                "UPDATE entities SET lease_token = NULL, lease_expires_at = NULL, lease_batch = NULL"
                " WHERE lease_token IS NOT NULL"
            ).rowcount
            self._db.execute("COMMIT")
        return n
