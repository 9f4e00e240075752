"""The PostgreSQL store: several sidecar processes sharing one database.

PostgreSQL does the distribution: every lease is one ``UPDATE ... WHERE id = (SELECT ...
FOR UPDATE SKIP LOCKED)`` that re-checks the lease, so two sidecars never hold one item;
rows touched by a transaction are locked (``FOR UPDATE``) until it commits; a deadlock or
duplicate key between two sidecars rolls one transaction back and it runs again. Each
commit publishes its notice with ``pg_notify`` (delivered when it commits), and a listener
connection relays the other sidecars' notices to this one's dispatcher and long polls.

The URL is a libpq URL (``postgresql://user[:password]@host:port/db``) with optional
parameters of ours: ``pool_min`` and ``pool_max``, the size of the connection pool (default 1
and 10), and ``pool_timeout``, the seconds a call waits for a connection before it is answered
UNAVAILABLE (default 10).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import errors
from psycopg.rows import dict_row

from sidecar.store.base import (
    CommitNotice,
    StoreError,
    StoreFullError,
    StoreTx,
    StoreUnavailableError,
    StoreValueError,
)
from sidecar.store.pg_statistics import ANALYZE_SQL, StatisticsKeeper
from sidecar.store.sql_schema import POSTGRES, bring_up_to_date
from sidecar.store.sql_store import Failure, SqlStore
from sidecar.store.sql_tx import Row, SqlFlavor, SqlTx
from sidecar.store.urls import redact

log = logging.getLogger("durabletask-sidecar.store")

CHANNEL = "durabletask_commits"
# pg_notify payloads must stay under 8000 bytes; instance IDs are sent in chunks.
_PAYLOAD_BUDGET = 7000
# Serializes schema creation and migration between sidecars starting at once.
_MIGRATION_LOCK = 0x6475726162  # "durab"
_CONNECT_TIMEOUT = 10.0
# A pooled connection idle for longer than this is checked (one round trip) before reuse.
_IDLE_CHECK_AFTER = 2.0

# admin_shutdown, crash_shutdown, cannot_connect_now: the server is restarting.
_SHUTDOWN_STATES = ("57P01", "57P02", "57P03")

_RETRY = (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation, errors.LockNotAvailable)


_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
# ``INSERT INTO t (columns) VALUES (?, ...)``: the statement before VALUES, and one row's placeholders.
_SINGLE_ROW_INSERT = re.compile(r"\s*(INSERT\s+INTO\s+[^;]*?\s+VALUES)\s*(\((?:\s*\?\s*,)*\s*\?\s*\))\s*$", re.I | re.S)
# Rows per multi-row INSERT (each size is a statement of its own to prepare).
_INSERT_CHUNK = 50


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection as the SQL layer wants it (``?`` placeholders).

    One cursor serves every statement of a transaction, and a result's rows are read without
    asking for its column descriptions (built for every statement, they took about a fifth of
    psycopg's time in a profile of a chain).
    """

    def __init__(self, conn: psycopg.Connection[Row], cursor: psycopg.Cursor[Row]) -> None:
        self.conn = conn
        self.cursor = cursor

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.cursor.execute(_placeholders(sql), list(params))  # type: ignore[arg-type]
        result = cur.pgresult
        return cur.fetchall() if result is not None and result.status == _TUPLES_OK else []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.cursor.execute(_placeholders(sql), list(params)).rowcount  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # An INSERT goes as multi-row INSERTs: psycopg's executemany sets up a pipeline, and costs
        # about twice a statement's CPU for a turn's few history rows.
        insert = _SINGLE_ROW_INSERT.match(sql)
        if insert is None:
            self.cursor.executemany(_placeholders(sql), [list(r) for r in rows])  # type: ignore[arg-type]
            return
        head, values = insert.group(1), insert.group(2)
        width = values.count("?")
        if any(len(row) != width for row in rows):
            raise ValueError(f"every row of {head!r} needs {width} values")
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start:start + _INSERT_CHUNK]
            params = [value for row in chunk for value in row]
            self.cursor.execute(_placeholders(f"{head} {','.join([values] * len(chunk))}"), params)


@dataclass(frozen=True)
class PoolSettings:
    """The connection pool's parameters, taken from the store URL."""

    min_size: int = 1
    max_size: int = 10
    timeout: float = 10.0  # seconds a call waits for a free connection


_POOL_PARAMETERS = ("pool_min", "pool_max", "pool_timeout")


def split_url(url: str) -> tuple[str, PoolSettings]:
    """The libpq URL and the pool settings: our parameters taken out of the URL's query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _POOL_PARAMETERS}
    rest = [(k, v) for k, v in query if k not in _POOL_PARAMETERS]
    default = PoolSettings()
    try:
        pool_min = int(ours.get("pool_min", default.min_size))
        pool_max = int(ours.get("pool_max", default.max_size))
    except ValueError:
        raise StoreValueError(f"pool_min and pool_max in the store URL must be integers ({redact(url)})") from None
    if pool_min < 1 or pool_max < pool_min:
        raise StoreValueError(f"the store URL needs 1 <= pool_min <= pool_max ({redact(url)})")
    try:
        timeout = float(ours.get("pool_timeout", default.timeout))
        if not 0 < timeout < float("inf"):
            raise ValueError(timeout)
    except ValueError:
        raise StoreValueError(
            f"pool_timeout in the store URL must be a positive number of seconds ({redact(url)})"
        ) from None
    # Percent-encoded (libpq decodes %20, not '+'): options=-c%20synchronous_commit%3Doff stays as written.
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), PoolSettings(pool_min, pool_max, timeout)


class _RecentUse:
    """Checks a pooled connection before reuse only when it sat idle: a busy one answered a moment ago.

    A connection that broke anyway fails its transaction before the commit, and the transaction
    runs again on another connection (see ``SqlStore.run``).
    """

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def returned(self, conn: Any) -> None:
        self._returned[conn] = time.monotonic()

    def forget(self) -> None:
        """Check every pooled connection before its next use (one of them just broke)."""
        self._returned = weakref.WeakKeyDictionary()

    def check(self, conn: Any) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > _IDLE_CHECK_AFTER:
            psycopg_pool.ConnectionPool.check_connection(conn)


class PostgresStore(SqlStore):
    """PostgreSQL implementation of :class:`~sidecar.store.base.Store` (see the module docstring)."""

    flavor = SqlFlavor(for_update="FOR UPDATE", skip_locked="FOR UPDATE SKIP LOCKED", writing_with=True)

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._shown = redact(url)
        self._origin = uuid.uuid4().hex
        self._closed = threading.Event()
        self._conninfo, pool = split_url(url)
        self._recent = _RecentUse()
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=pool.min_size,
            max_size=pool.max_size,
            timeout=pool.timeout,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": int(_CONNECT_TIMEOUT)},
            check=self._recent.check,
            reset=self._recent.returned,
            open=False,
            name="durabletask-sidecar",
        )
        try:
            self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL database {self._shown} within {_CONNECT_TIMEOUT:g} s: "
                f"{self._last_connect_error() or exc}"
            ) from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise
        self._statistics = StatisticsKeeper(self._analyze)
        self._listening = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="sidecar-pg-listener", daemon=True)
        self._listener.start()
        # Serve only once other sidecars' commits reach us: a commit announced before LISTEN would
        # never wake the long polls waiting for it.
        if not self._listening.wait(_CONNECT_TIMEOUT):
            log.warning("not yet listening for other sidecars' commits on %s; long polls re-check once it is",
                        self._shown)

    def describe(self) -> str:
        return f"PostgreSQL database {self._shown}"

    def _last_connect_error(self) -> str | None:
        try:
            with psycopg.connect(self._conninfo, connect_timeout=3):
                return None
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    # --- plumbing ---

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            yield _Connection(conn, cursor)

    @contextmanager
    def _reader(self) -> Iterator[_Connection]:
        with self._pool.connection() as conn, conn.cursor() as cursor:
            yield _Connection(conn, cursor)

    def _classify(self, exc: BaseException) -> Failure | StoreError:
        if isinstance(exc, _RETRY):
            return Failure.RETRY
        if isinstance(exc, errors.ProgramLimitExceeded):  # a row or index entry too big: permanent
            return StoreValueError(f"a value is too large for the PostgreSQL database {self._shown}: {_first_line(exc)}")
        if isinstance(exc, (errors.DiskFull, errors.OutOfMemory)):
            return StoreFullError(
                f"the PostgreSQL database {self._shown} is full (no room for the write: {_first_line(exc)}); "
                "free space on the server; the work is kept and resumes then"
            )
        if isinstance(exc, psycopg.DataError) and "0x00" in str(exc):
            return StoreValueError("a value contains a NUL character (\\0), which PostgreSQL text cannot hold")
        if isinstance(exc, psycopg_pool.PoolTimeout):
            return StoreUnavailableError(
                f"no connection to the PostgreSQL database {self._shown} became free or could be opened in time "
                "(raise pool_max in the store URL, or check the database)"
            )
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return StoreUnavailableError(f"the PostgreSQL database {self._shown} is unavailable: {_first_line(exc)}")
        return Failure.OTHER

    def _connection_lost(self, exc: BaseException) -> bool:
        # A server restart or a killed backend ends the session (SQLSTATE class 08, 57P01-57P03,
        # or no SQLSTATE at all when the socket closed); from then on the pool checks each
        # connection before handing it out again. Not a pool timeout: waiting again would only double the wait.
        if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)):
            return False
        if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SHUTDOWN_STATES

    def _on_connection_lost(self) -> None:
        self._recent.forget()  # the other pooled connections may be broken too (a server restart)

    def _analyze(self) -> None:
        with self._pool.connection() as conn:
            conn.execute(ANALYZE_SQL)

    def _publish(self, db: Any, notice: CommitNotice) -> None:
        self._statistics.wrote()
        ids = sorted(notice.instances)
        chunks: list[list[str]] = [[]]
        size = 0
        for iid in ids:
            cost = len(iid.encode()) + 4
            if size + cost > _PAYLOAD_BUDGET and chunks[-1]:
                chunks.append([])
                size = 0
            chunks[-1].append(iid)
            size += cost
        for chunk in chunks:
            payload = json.dumps(
                {"o": self._origin, "w": notice.work_available, "k": sorted(notice.work_kinds), "r": notice.reset,
                 "i": chunk},
                separators=(",", ":"),
            )
            db.query("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def close(self) -> None:
        self._closed.set()
        self._statistics.close()
        self._pool.close()
        if self._listener.is_alive():
            self._listener.join(timeout=5)

    # --- other sidecars' commits ---

    def _listen(self) -> None:
        delay = 0.1
        missed = True  # commits may have gone unannounced to us (at first: those before LISTEN)
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT)) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    delay = 0.1
                    if missed:
                        # Commits made while we were not listening are unknown: everyone looks again.
                        self._notify(CommitNotice(work_available=True, resync=True))
                        missed = False
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._relay(note.payload)
            except Exception as exc:
                if self._closed.is_set():
                    return
                if not missed:
                    log.warning("lost the notification connection to %s (%s); reconnecting", self._shown,
                                _first_line(exc))
                missed = True
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)

    def _relay(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if data.get("o") == self._origin:
            return
        kinds = data.get("k")
        self._notify(CommitNotice(instances=set(data.get("i", [])), work_available=bool(data.get("w")),
                                  reset=bool(data.get("r")),
                                  work_kinds={str(k) for k in kinds} if isinstance(kinds, list) else set()))

    # --- schema ---

    def schema_version(self) -> int:
        rows = self._read("SELECT MAX(version) AS v FROM schema_version")
        return int(rows[0]["v"] or 0)

    def _migrate(self) -> None:
        def migrate(tx: StoreTx) -> None:
            assert isinstance(tx, SqlTx)
            db = tx.db
            db.query("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            exists = db.query("SELECT to_regclass('schema_version') IS NOT NULL AS present")[0]["present"]
            found: int | None = None
            if exists:
                value = db.query("SELECT MAX(version) AS v FROM schema_version")[0]["v"]
                found = int(value) if value is not None else None
            bring_up_to_date(db, POSTGRES, found, self.describe())

        try:
            self.run(migrate)  # a race with running sidecars' transactions is run again there
        except _RETRY as exc:
            raise StoreUnavailableError(
                f"the schema migration of the PostgreSQL database {self._shown} kept colliding with "
                f"other sessions ({_first_line(exc)}); start the sidecar again"
            ) from exc

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
