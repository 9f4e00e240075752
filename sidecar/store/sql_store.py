"""The part of every SQL store that is the same on each database: reads, transactions, retries.

A subclass supplies connections (``_transaction``, ``_reader``), says which database errors
mean "lost a race, run again" and what the others mean (``_classify``), which mean "this
connection broke" (``_connection_lost``: the work runs again on another connection, unless the
commit was already on its way), and may publish each commit's notice to other processes
(``_publish``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import InstanceSnapshot
from sidecar.store.base import (
    CommitNotice,
    CompletedFilter,
    EntityQueryFilter,
    EntitySnapshot,
    InstanceFilter,
    InvalidStateError,
    Store,
    StoreError,
    StoreTx,
    StoreUnavailableError,
)
from sidecar.store.sql_rows import INSTANCE_COLUMNS, TERMINAL_SQL, from_us, held_rows, row_to_instance, to_us
from sidecar.store.sql_schema import STATE_TABLES
from sidecar.store.sql_tx import Row, SqlConnection, SqlFlavor, SqlTx, instance_filter_sql, marks

log = logging.getLogger("durabletask-sidecar.store")

T = TypeVar("T")

# When an entity row counts as an entity (GetEntity, and QueryEntities with transient ones): it has
# state, a lock, or a message due (one parameter: now). A row kept only for a message due later
# (a delayed signal) is not an entity yet: it becomes one when the message is due.
_ENTITY_EXISTS = (
    "(state IS NOT NULL OR locked_by IS NOT NULL OR EXISTS ("
    "SELECT 1 FROM entity_queue q WHERE q.entity_id = entities.instance_id AND q.visible_at <= ?))"
)

# The earliest moment after now (every parameter) at which work becomes due: a message or timer,
# an instance or entity whose hand-back delay ends, a lease that expires. Each branch is served by
# an index (the ``available_at > 0`` terms let the partial indexes of delayed rows apply), so the
# dispatcher's question costs the same with 100,000 instances stored as with ten.
NEXT_DUE_SQL = f"""SELECT MIN(t) AS due FROM (
    SELECT MIN(visible_at) AS t FROM inbox WHERE visible_at > ?
    UNION ALL SELECT MIN(available_at) FROM instances WHERE available_at > ? AND available_at > 0
    UNION ALL SELECT MIN(lease_expires_at) FROM instances
        WHERE lease_token IS NOT NULL AND lease_expires_at > ? AND status NOT IN {TERMINAL_SQL}
    UNION ALL SELECT MIN(visible_at) FROM activity_tasks WHERE visible_at > ?
    UNION ALL SELECT MIN(lease_expires_at) FROM activity_tasks
        WHERE lease_token IS NOT NULL AND lease_expires_at > ?
    UNION ALL SELECT MIN(visible_at) FROM entity_queue WHERE visible_at > ?
    UNION ALL SELECT MIN(available_at) FROM entities WHERE available_at > ? AND available_at > 0
    UNION ALL SELECT MIN(lease_expires_at) FROM entities
        WHERE lease_token IS NOT NULL AND lease_expires_at > ?) AS due_times"""

MAX_ATTEMPTS = 8
# Times one transaction or read is run again on another connection after its connection broke.
MAX_RECONNECTS = 2


class Failure(Enum):
    """What a database error means to the store."""

    RETRY = "retry"  # lost a race (deadlock, serialization, duplicate key): run the transaction again
    OTHER = "other"  # not a database condition: let it through unchanged


class SqlStore(Store):
    """:class:`Store` over a SQL database; the SQL is written once here and in ``sql_tx``."""

    flavor = SqlFlavor(index_hints=True)

    # --- hooks ---

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[SqlConnection]:
        """A connection inside a transaction that commits when the block ends without an error."""

    @abstractmethod
    def _reader(self) -> AbstractContextManager[SqlConnection]:
        """A connection for one or more reads."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> Failure | StoreError:
        """RETRY, OTHER, or the StoreError that describes a database failure."""

    def _publish(self, db: SqlConnection, notice: CommitNotice) -> None:  # noqa: B027 - optional hook
        """Tell other processes about a commit, inside its transaction (nothing to do by default)."""

    def _connection_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` says the connection broke (another connection may work at once)."""
        return False

    def _on_connection_lost(self) -> None:  # noqa: B027 - optional hook
        """Called when a transaction is run again because its connection broke."""

    # --- transactions ---

    def run(self, fn: Callable[[StoreTx], T]) -> T:
        reconnects = 0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            committing = False
            try:
                with self._transaction() as db:
                    tx = SqlTx(db, self.flavor)
                    result = fn(tx)
                    if tx.notice:
                        self._publish(db, tx.notice)
                    committing = True
                self._notify(tx.notice)
                return result
            except StoreError:
                raise
            except Exception as exc:
                verdict = self._classify(exc)
                if verdict is Failure.RETRY and attempt < MAX_ATTEMPTS:
                    log.debug("transaction lost a race (%s); running it again", exc)
                    continue
                # A connection that broke before the commit was sent committed nothing: run the
                # transaction again on another one. One that broke during the commit may have
                # committed: the caller gets the error (a retry could apply the change twice).
                if (
                    isinstance(verdict, StoreUnavailableError)
                    and not committing
                    and reconnects < MAX_RECONNECTS
                    and attempt < MAX_ATTEMPTS
                    and self._connection_lost(exc)
                ):
                    reconnects += 1
                    self._on_connection_lost()
                    log.info("the connection to the database broke (%s); running the transaction again", exc)
                    continue
                if isinstance(verdict, StoreError):
                    raise verdict from exc
                raise
        raise AssertionError("unreachable")

    def _read(self, sql: str, params: Collection[Any] = ()) -> list[Row]:
        return self._read_with(lambda tx: tx.db.query(sql, list(params)))

    def _read_with(self, fn: Callable[[SqlTx], T]) -> T:
        for attempt in range(MAX_RECONNECTS + 1):
            try:
                with self._reader() as db:
                    return fn(SqlTx(db, self.flavor))
            except StoreError:
                raise
            except Exception as exc:
                verdict = self._classify(exc)
                if isinstance(verdict, StoreUnavailableError) and attempt < MAX_RECONNECTS and (
                    self._connection_lost(exc)
                ):
                    self._on_connection_lost()
                    log.info("the connection to the database broke (%s); reading again", exc)
                    continue
                if isinstance(verdict, StoreError):
                    raise verdict from exc
                raise
        raise AssertionError("unreachable")

    def reset(self) -> None:
        def wipe(tx: StoreTx) -> None:
            assert isinstance(tx, SqlTx)
            for table in STATE_TABLES:
                tx.db.execute(f"DELETE FROM {table}")
            tx.notice.reset = True

        self.run(wipe)

    # --- reads ---

    def get_instance(self, instance_id: str) -> InstanceSnapshot | None:
        return self._read_with(lambda tx: tx.instance(instance_id))

    def get_history(self, instance_id: str) -> list[pb.HistoryEvent] | None:
        def read(tx: SqlTx) -> list[pb.HistoryEvent] | None:
            if tx.instance(instance_id) is None:
                return None
            return tx.history(instance_id)

        return self._read_with(read)

    def query_instances(
        self, query: InstanceFilter, page_size: int, continuation: str | None
    ) -> tuple[list[InstanceSnapshot], str | None]:
        where, params = instance_filter_sql(query)
        if continuation:
            where.append("instance_id > ?")
            params.append(continuation)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {INSTANCE_COLUMNS} FROM instances {clause} ORDER BY instance_id LIMIT ?", [*params, page_size + 1]
        )
        items = [row_to_instance(r) for r in rows[:page_size]]
        token = items[-1].instance_id if len(rows) > page_size and items else None
        return items, token

    def list_instance_ids(
        self, query: CompletedFilter, page_size: int, last_key: str | None
    ) -> tuple[list[str], str | None]:
        where = [f"status IN {TERMINAL_SQL}", "completed_at IS NOT NULL"]
        params: list[Any] = []
        if query.statuses:
            statuses = sorted(set(query.statuses))
            where.append(f"status IN ({marks(statuses)})")
            params.extend(statuses)
        if query.completed_from is not None:
            where.append("completed_at >= ?")
            params.append(to_us(query.completed_from))
        if query.completed_to is not None:
            where.append("completed_at <= ?")
            params.append(to_us(query.completed_to))
        if last_key:
            stamp, _, after_id = last_key.partition(":")
            try:
                params.extend([int(stamp), after_id])
            except ValueError:
                shown = last_key if len(last_key) <= 80 else last_key[:80] + "..."
                raise InvalidStateError(f"lastInstanceKey '{shown}' is not a key returned by this sidecar") from None
            where.append("(completed_at, instance_id) > (?, ?)")
        rows = self._read(
            f"SELECT instance_id, completed_at FROM instances WHERE {' AND '.join(where)}"
            " ORDER BY completed_at, instance_id LIMIT ?",
            [*params, page_size + 1],
        )
        page = rows[:page_size]
        key = f"{page[-1]['completed_at']}:{page[-1]['instance_id']}" if len(rows) > page_size and page else None
        return [r["instance_id"] for r in page], key

    def _entity_snapshot(self, db: SqlConnection, row: Row, now: datetime, include_state: bool) -> EntitySnapshot:
        backlog = db.query(
            "SELECT COUNT(*) AS n FROM entity_queue WHERE entity_id = ? AND visible_at <= ?",
            (row["instance_id"], to_us(now)),
        )[0]["n"]
        return EntitySnapshot(
            instance_id=row["instance_id"],
            state=row["state"] if include_state else None,
            has_state=row["state"] is not None,
            locked_by=row["locked_by"],
            critical_section_id=row["lock_section"],
            backlog=int(backlog),
            last_modified_at=from_us(row["last_modified_at"]),
        )

    def get_entity(self, entity_id: str, now: datetime, include_state: bool = True) -> EntitySnapshot | None:
        def read(tx: SqlTx) -> EntitySnapshot | None:
            rows = tx.db.query(
                f"SELECT * FROM entities WHERE instance_id = ? AND {_ENTITY_EXISTS}", (entity_id, to_us(now))
            )
            return self._entity_snapshot(tx.db, rows[0], now, include_state) if rows else None

        return self._read_with(read)

    def query_entities(
        self, query: EntityQueryFilter, page_size: int, continuation: str | None, now: datetime
    ) -> tuple[list[EntitySnapshot], str | None]:
        where: list[str] = []
        params: list[Any] = []
        if query.instance_id_prefix:
            where.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(query.instance_id_prefix), query.instance_id_prefix])
        if query.modified_from is not None:
            where.append("last_modified_at >= ?")
            params.append(to_us(query.modified_from))
        if query.modified_to is not None:
            where.append("last_modified_at < ?")
            params.append(to_us(query.modified_to))
        if not query.include_transient:
            where.append("state IS NOT NULL")
        else:
            where.append(_ENTITY_EXISTS)
            params.append(to_us(now))
        if continuation:
            where.append("instance_id > ?")
            params.append(continuation)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def read(tx: SqlTx) -> tuple[list[Row], list[EntitySnapshot]]:
            rows = tx.db.query(f"SELECT * FROM entities {clause} ORDER BY instance_id LIMIT ?", [*params, page_size + 1])
            return rows, [self._entity_snapshot(tx.db, r, now, query.include_state) for r in rows[:page_size]]

        rows, items = self._read_with(read)
        token = items[-1].instance_id if len(rows) > page_size and items else None
        return items, token

    def next_due_at(self, now: datetime) -> datetime | None:
        n = to_us(now)
        rows = self._read(NEXT_DUE_SQL, (n,) * NEXT_DUE_SQL.count("?"))
        value = rows[0]["due"]
        return None if value is None else from_us(value)

    def renew_leases(self, tokens: Collection[str], until: datetime) -> None:
        items = sorted(set(tokens))
        if not items:
            return

        def renew(tx: StoreTx) -> None:
            assert isinstance(tx, SqlTx)
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                for table in ("instances", "activity_tasks", "entities"):
                    tx.db.execute(
                        f"UPDATE {table} SET lease_expires_at = ? WHERE lease_token IN ({marks(chunk)})",
                        [to_us(until), *chunk],
                    )
                # The inbox rows a renewed turn holds stay out of sight until its new end.
                rows = tx.db.query(
                    f"SELECT lease_inbox, lease_visible FROM instances WHERE lease_token IN ({marks(chunk)})", chunk
                )
                held = [seq for r in rows for _, seq in held_rows(r["lease_inbox"], r["lease_visible"])]
                tx.db.executemany("UPDATE inbox SET visible_at = ? WHERE seq = ?", [(to_us(until), seq) for seq in held])

        self.run(renew)

    # --- inspection ---

    def inbox_of(self, instance_id: str) -> list[tuple[pb.HistoryEvent, datetime, str | None]]:
        rows = self._read(
            "SELECT event, visible_at, execution_id FROM inbox WHERE instance_id = ? ORDER BY COALESCE(ord, seq)",
            (instance_id,),
        )
        return [(pb.HistoryEvent.FromString(bytes(r["event"])), from_us(r["visible_at"]), r["execution_id"]) for r in rows]

    def activity_tasks_of(self, instance_id: str) -> list[tuple[int, str, bool]]:
        rows = self._read(
            "SELECT task_id, name, lease_token FROM activity_tasks WHERE instance_id = ? ORDER BY id", (instance_id,)
        )
        return [(r["task_id"], r["name"], r["lease_token"] is not None) for r in rows]

    def entity_queue_of(self, entity_id: str) -> list[tuple[str, str, datetime]]:
        rows = self._read(
            "SELECT kind, sender, visible_at FROM entity_queue WHERE entity_id = ? ORDER BY seq", (entity_id,)
        )
        return [(r["kind"], r["sender"], from_us(r["visible_at"])) for r in rows]

    def backlog(self, now: datetime) -> dict[str, int]:
        # Each count starts from the rows due now (the visibility indexes), never from every
        # instance or entity ever stored: metrics scrapes and the dashboard run this often.
        at = to_us(now)
        free = "(lease_token IS NULL OR lease_expires_at <= ?)"
        rows = self._read(
            "SELECT "
            "(SELECT COUNT(DISTINCT i.instance_id) FROM inbox i JOIN instances s ON s.instance_id = i.instance_id "
            f"WHERE i.visible_at <= ? AND {free.replace('lease_', 's.lease_')}) AS orchestration, "
            f"(SELECT COUNT(*) FROM activity_tasks WHERE visible_at <= ? AND {free}) AS activity, "
            "(SELECT COUNT(DISTINCT q.entity_id) FROM entity_queue q JOIN entities e ON e.instance_id = q.entity_id "
            f"WHERE q.visible_at <= ? AND {free.replace('lease_', 'e.lease_')}) AS entity",
            [at] * 6,
        )
        return {kind: int(rows[0][kind]) for kind in ("orchestration", "activity", "entity")}
