"""The SQLite store: one file (WAL mode) owned by one sidecar process, or ``memory`` for tests.

All access goes through a single connection guarded by a lock; each transaction is one
``BEGIN IMMEDIATE`` ... ``COMMIT``. Because one process owns the file (an advisory lock file
beside it says so), leases left by a previous run of that process are released at open.

Space: a file created by this version uses ``auto_vacuum=INCREMENTAL``. Pages freed by deletes
(purges) are reused by later writes; once many of them are free, they are handed back to the
file system (``PRAGMA incremental_vacuum`` and a checkpoint after the commit). The write-ahead
log is truncated to :data:`WAL_SIZE_LIMIT` after each checkpoint. A file written before the
schema had versions keeps ``auto_vacuum=NONE`` (changing it rewrites the whole file): its free
pages are reused, never returned.

Failures: "database or disk is full" is :class:`StoreFullError`, every other database failure
:class:`StoreUnavailableError`, each naming the file; the transaction is rolled back (SQLite may
already have rolled it back itself) and the next one starts clean.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sidecar.store.base import StoreError, StoreFullError, StoreUnavailableError
from sidecar.store.client_turns import TurnTakingLock
from sidecar.store.sql_rows import RESTORE_HELD_ROW_SQL, held_rows
from sidecar.store.sql_schema import SCHEMA_VERSION, SQLITE, bring_up_to_date
from sidecar.store.sql_store import Failure, SqlStore
from sidecar.store.sql_tx import Row

MEMORY = "memory"

log = logging.getLogger("durabletask-sidecar.store")

# Largest the write-ahead log stays after a checkpoint (bytes).
WAL_SIZE_LIMIT = 16 * 1024 * 1024
# Free pages handed back to the file system once at least this many are free and they are at
# least this share of the file (below that, they are kept for the next writes).
VACUUM_MIN_FREE_PAGES = 256
VACUUM_MIN_FREE_SHARE = 0.25
# Most pages returned after one commit (the rest after the next ones): a huge purge does not
# hold up the store for long.
VACUUM_MAX_PAGES = 16384
# The free pages are counted again only after this many rows changed (pages free up only
# when many rows go).
VACUUM_CHECK_CHANGES = 256


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
        self._lock = TurnTakingLock()
        self._file_lock: _FileLock | None = None
        self._db: sqlite3.Connection | None = None
        self._returns_pages = False  # auto_vacuum=INCREMENTAL: free pages can go back to the file system
        self._changes_at_check = 0  # the connection's total_changes when free pages were last counted
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = _FileLock(self.path + ".lock")
        try:
            if self.path == MEMORY:
                db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db = db
            if self.path != MEMORY:
                # Set before the first table exists: freed pages are kept for reuse and can be returned.
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.row_factory = sqlite3.Row
            self._conn = _Connection(db)
            self._migrate()
            self.cleared_leases = self._clear_leases()
            if self.path != MEMORY:
                self._returns_pages = db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                verdict = self._classify(exc)
                if isinstance(verdict, StoreError):
                    raise verdict from exc
            raise

    def describe(self) -> str:
        return "in memory (lost on exit)" if self.path == MEMORY else f"SQLite file {Path(self.path).resolve()}"

    def _name(self) -> str:
        """The store in error messages."""
        return "SQLite store in memory" if self.path == MEMORY else f"SQLite store {Path(self.path).resolve()}"

    # --- plumbing ---

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
            # Checked here: taking the lock again after every commit queues the thread behind others.
            due = self._returns_pages and db.total_changes - self._changes_at_check >= VACUUM_CHECK_CHANGES
        if due:
            self._return_free_pages()

    def _rollback(self, db: sqlite3.Connection) -> None:
        """End a failed transaction. SQLite rolls some back by itself (a full disk): nothing is left then."""
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the original failure is the one to report
            log.warning("rolling back a failed transaction on the %s failed too: %s", self._name(), exc)

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailableError(f"the {self._name()} is closed")
        return self._db

    def _return_free_pages(self) -> None:
        """Hand free pages back to the file system once many are free (after purges)."""
        if not self._returns_pages:
            return
        with self._lock:
            db = self._db
            if db is None or db.in_transaction or db.total_changes - self._changes_at_check < VACUUM_CHECK_CHANGES:
                return
            self._changes_at_check = db.total_changes
            try:
                free = db.execute("PRAGMA freelist_count").fetchone()[0]
                if free < VACUUM_MIN_FREE_PAGES:
                    return
                total = db.execute("PRAGMA page_count").fetchone()[0]
                if free < total * VACUUM_MIN_FREE_SHARE:
                    return
                # executescript steps the pragma to its end (execute() would free one page only).
                db.executescript(f"PRAGMA incremental_vacuum({VACUUM_MAX_PAGES});")
                # The file shrinks when the log is written back; do it now, and empty the log.
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:  # space stays allocated; it is still reused by later writes
                log.warning("could not return free pages of the %s to the file system: %s", self._name(), exc)
                self._rollback(db)

    @contextmanager
    def _reader(self) -> Iterator[_Connection]:
        with self._lock:
            self._open_db()
            yield self._conn

    def _classify(self, exc: BaseException) -> Failure | StoreError:
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc)
            if "full" in text:
                return StoreFullError(
                    f"the {self._name()} is full ({text}): free disk space; the work is kept and resumes then"
                )
            return StoreUnavailableError(f"the {self._name()} failed: {text}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            return StoreUnavailableError(f"the {self._name()} failed: {exc}")
        return Failure.OTHER

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._file_lock is not None:
                self._file_lock.release()
                self._file_lock = None

    # --- schema ---

    def _version(self) -> int | None:
        db = self._open_db()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" in tables:
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0]) if row[0] is not None else (0 if "instances" in tables else None)
        return 0 if "instances" in tables else None

    def schema_version(self) -> int:
        with self._lock:
            return self._version() or 0

    def _migrate(self) -> None:
        """Create the schema, or bring an older one up to SCHEMA_VERSION, in one transaction."""
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                found = self._version()
                if found is not None and found < SCHEMA_VERSION:
                    log.info("migrating %s from schema version %d to %d", self.describe(), found, SCHEMA_VERSION)
                bring_up_to_date(db, SQLITE, found, self.describe())
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise

    def _clear_leases(self) -> int:
        """Release every lease left by the previous run of the process that owns this file."""
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                held = db.execute(
                    "SELECT lease_inbox, lease_visible FROM instances WHERE lease_token IS NOT NULL"
                ).fetchall()
                db.executemany(RESTORE_HELD_ROW_SQL, [row for r in held for row in held_rows(r[0], r[1])])
                n = db.execute(
                    "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL,"
                    " lease_visible = NULL, lease_new_events = NULL WHERE lease_token IS NOT NULL"
                ).rowcount
                n += db.execute(
                    "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL"
                    " WHERE lease_token IS NOT NULL"
                ).rowcount
                n += db.execute(
                    "UPDATE entities SET lease_token = NULL, lease_expires_at = NULL, lease_batch = NULL"
                    " WHERE lease_token IS NOT NULL"
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
        return n
