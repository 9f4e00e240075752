"""Entities in the SQLite store: state, per-entity message queues, locks and batch leases.

Tables (schema in ``sqlite_rows``): ``entities`` (one row per existing entity: state, lock
holder, batch lease) and ``entity_queue`` (messages in arrival order, ``seq``; a delayed
signal becomes visible at its ``visible_at``). The scheduling decisions are made by the pure
``sidecar.entities`` / ``sidecar.entity_batch``; this module loads their inputs and writes
their results. The module-level functions run inside a transaction opened by the caller;
:class:`SqliteEntityStore` holds the store's public entity methods (mixed into SqliteStore).

An entity row exists while the entity has state, queued messages or a lock; it is deleted
as soon as it has none of them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import entities as sched
from sidecar.entity_batch import BatchOutcome, InvalidBatchResultError, NewOrchestration, apply_batch_result
from sidecar.model import OutboundMessage
from sidecar.store import sqlite_commit as commit
from sidecar.store.base import (
    Backoff,
    ChangeSet,
    EntityQueryFilter,
    EntitySnapshot,
    EntityWorkItem,
    LeaseNotFoundError,
)
from sidecar.store.sqlite_rows import TERMINAL_SQL, from_us, to_us

log = logging.getLogger("durabletask-sidecar.entities")

_CANDIDATES = 16
_OPS_SQL = "('signal', 'call')"


# --- transaction-level helpers ---------------------------------------------------------------


def _entity_row(db: sqlite3.Connection, entity_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute("SELECT * FROM entities WHERE instance_id = ?", (entity_id,)).fetchone()
    return row


def _holder(row: sqlite3.Row) -> sched.LockHolder | None:
    if row["locked_by"] is None:
        return None
    return sched.LockHolder(row["locked_by"], row["lock_section"] or "")


def _ensure_entity(db: sqlite3.Connection, entity_id: str, now: datetime) -> None:
    name = sched.parse_entity_id(entity_id).name
    db.execute(
        "INSERT OR IGNORE INTO entities (instance_id, name, created_at, last_modified_at) VALUES (?, ?, ?, ?)",
        (entity_id, name, to_us(now), to_us(now)),
    )


def _message(row: sqlite3.Row) -> sched.QueuedMessage:
    blob = row["event"]
    return sched.QueuedMessage(
        seq=row["seq"], kind=row["kind"], sender=row["sender"], event=pb.HistoryEvent.FromString(blob), size=len(blob)
    )


def _load_queue(db: sqlite3.Connection, entity_id: str, now: datetime) -> list[sched.QueuedMessage]:
    """The entity's visible messages, oldest first."""
    rows = db.execute(
        "SELECT seq, kind, sender, event FROM entity_queue WHERE entity_id = ? AND visible_at <= ? ORDER BY seq",
        (entity_id, to_us(now)),
    )
    return [_message(r) for r in rows]


def _load_batch(db: sqlite3.Connection, seqs: list[int]) -> list[sched.QueuedMessage]:
    """The messages of a leased batch, in order."""
    if not seqs:
        return []
    marks = ",".join("?" for _ in seqs)
    rows = db.execute(f"SELECT seq, kind, sender, event FROM entity_queue WHERE seq IN ({marks}) ORDER BY seq", seqs)
    return [_message(r) for r in rows]


def _running(db: sqlite3.Connection, instance_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(instance_ids))
    if not ids:
        return set()
    rows = db.execute(
        f"SELECT instance_id FROM instances WHERE instance_id IN ({','.join('?' for _ in ids)})"
        f" AND status NOT IN {TERMINAL_SQL}",
        ids,
    )
    return {r[0] for r in rows}


def _delete_if_empty(db: sqlite3.Connection, entity_id: str) -> bool:
    n: int = db.execute(
        "DELETE FROM entities WHERE instance_id = ? AND state IS NULL AND locked_by IS NULL AND lease_token IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM entity_queue q WHERE q.entity_id = entities.instance_id)",
        (entity_id,),
    ).rowcount
    return n > 0


def deliver(
    db: sqlite3.Connection,
    target: str,
    sender: str,
    event: pb.HistoryEvent,
    visible_at: datetime | None,
    now: datetime,
    changes: ChangeSet,
) -> bool:
    """Queue an entity message (signal, call, lock request or unlock) for ``target``.

    Creates the entity on its first message. Lock and unlock messages are settled at once.
    Returns False when the message was dropped (invalid target ID, unlock of an unknown entity).
    """
    kind = sched.message_kind(event)
    try:
        entity_id = sched.normalize_entity_id(target)
    except sched.EntityIdError as exc:
        log.warning("dropped an entity message from '%s': %s", sender, exc)
        return False
    if kind is None:
        log.warning("dropped a message for entity '%s' from '%s': not an entity message", entity_id, sender)
        return False
    if kind == sched.UNLOCK and _entity_row(db, entity_id) is None:
        return False
    _ensure_entity(db, entity_id, now)
    db.execute(
        "INSERT INTO entity_queue (entity_id, kind, sender, event, visible_at) VALUES (?, ?, ?, ?, ?)",
        (entity_id, kind, sender, event.SerializeToString(), to_us(visible_at or now)),
    )
    changes.work_available = True
    if kind in (sched.LOCK, sched.UNLOCK):
        settle(db, entity_id, now, changes)
    return True


def settle(db: sqlite3.Connection, entity_id: str, now: datetime, changes: ChangeSet) -> None:
    """Apply the lock and unlock messages that are due for this entity; forward and grant locks."""
    row = _entity_row(db, entity_id)
    if row is None:
        return
    holder = _holder(row)
    queue = _load_queue(db, entity_id, now)
    requesters = [m.sender for m in queue if m.kind == sched.LOCK]
    result = sched.settle(entity_id, holder, queue, _running(db, requesters), now)
    if not result.consumed:
        return
    db.executemany("DELETE FROM entity_queue WHERE seq = ?", [(s,) for s in result.consumed])
    for dropped in result.dropped:
        log.info(
            "entity '%s': dropped a stale %s message of critical section '%s' from '%s'",
            entity_id, dropped.kind, dropped.critical_section_id, dropped.sender,
        )
    if result.holder != holder:
        new = result.holder
        db.execute(
            "UPDATE entities SET locked_by = ?, lock_section = ?, last_modified_at = ? WHERE instance_id = ?",
            (new.instance_id if new else None, new.critical_section_id if new else None, to_us(now), entity_id),
        )
    changes.work_available = True
    for forward in result.forwards:
        deliver(db, forward.target, forward.sender, forward.event, None, now, changes)
    for grant in result.grants:
        commit.deliver_message(db, OutboundMessage(grant.instance_id, grant.event), now, changes)
    _delete_if_empty(db, entity_id)


def release_holder(db: sqlite3.Connection, instance_id: str, now: datetime, changes: ChangeSet) -> int:
    """An orchestration finished: release its locks and drop its pending lock requests. Returns locks released."""
    held = [r[0] for r in db.execute("SELECT instance_id FROM entities WHERE locked_by = ?", (instance_id,))]
    waiting = [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT entity_id FROM entity_queue WHERE sender = ? AND kind = 'lock'", (instance_id,)
        )
    ]
    if not held and not waiting:
        return 0
    db.execute(
        "UPDATE entities SET locked_by = NULL, lock_section = NULL, last_modified_at = ? WHERE locked_by = ?",
        (to_us(now), instance_id),
    )
    db.execute("DELETE FROM entity_queue WHERE sender = ? AND kind = 'lock'", (instance_id,))
    for entity_id in dict.fromkeys(held + waiting):
        settle(db, entity_id, now, changes)
        _delete_if_empty(db, entity_id)
    changes.work_available = True
    return len(held)


def _create_orchestration(
    db: sqlite3.Connection, entity_id: str, new: NewOrchestration, now: datetime, changes: ChangeSet
) -> None:
    instance = new.instance
    existing = commit.load_instance(db, instance.instance_id)
    if existing is not None and not existing.is_terminal:
        log.warning(
            "entity '%s' started orchestration '%s' with ID '%s', which is in use by a running instance; skipped",
            entity_id, instance.name, instance.instance_id,
        )
        return
    if existing is not None:
        commit.delete_instance_state(db, instance.instance_id)
    commit.insert_instance(db, instance, new.start_event, new.visible_at)
    changes.instances.add(instance.instance_id)
    changes.work_available = True


def _apply_outcome(
    db: sqlite3.Connection, entity_id: str, outcome: BatchOutcome, now: datetime, changes: ChangeSet
) -> None:
    db.execute(
        "UPDATE entities SET state = ?, last_modified_at = ?, lease_token = NULL, lease_expires_at = NULL,"
        " lease_batch = NULL, available_at = 0, abandon_count = 0 WHERE instance_id = ?",
        (outcome.state, to_us(now), entity_id),
    )
    db.executemany("DELETE FROM entity_queue WHERE seq = ?", [(s,) for s in outcome.consumed])
    for line in outcome.failed_signals:
        log.warning("%s", line)
    for reply in outcome.replies:
        if not commit.deliver_message(db, reply, now, changes):
            log.info("entity '%s': result for '%s' dropped (the instance is gone or finished)",
                     entity_id, reply.target_instance_id)
    for signal in outcome.signals:
        deliver(db, signal.target, signal.sender, signal.event, signal.visible_at, now, changes)
    for new in outcome.orchestrations:
        _create_orchestration(db, entity_id, new, now, changes)
    settle(db, entity_id, now, changes)
    _delete_if_empty(db, entity_id)
    changes.work_available = True


def _release_lease(db: sqlite3.Connection, entity_id: str, available_at: datetime | None, count: int | None) -> None:
    db.execute(
        "UPDATE entities SET lease_token = NULL, lease_expires_at = NULL, lease_batch = NULL,"
        " available_at = COALESCE(?, available_at), abandon_count = COALESCE(?, abandon_count) WHERE instance_id = ?",
        (None if available_at is None else to_us(available_at), count, entity_id),
    )


def _snapshot(db: sqlite3.Connection, row: sqlite3.Row, now: datetime, include_state: bool) -> EntitySnapshot:
    backlog = db.execute(
        "SELECT COUNT(*) FROM entity_queue WHERE entity_id = ? AND visible_at <= ?", (row["instance_id"], to_us(now))
    ).fetchone()[0]
    return EntitySnapshot(
        instance_id=row["instance_id"],
        state=row["state"] if include_state else None,
        has_state=row["state"] is not None,
        locked_by=row["locked_by"],
        critical_section_id=row["lock_section"],
        backlog=backlog,
        last_modified_at=from_us(row["last_modified_at"]),
    )


# --- the store's entity methods ---------------------------------------------------------------


class SqliteEntityStore:
    """The entity methods of :class:`sidecar.store.sqlite.SqliteStore` (each one transaction)."""

    if TYPE_CHECKING:
        _lock: Any
        _db: sqlite3.Connection
        abandon_backoff: Backoff

        def _tx(self) -> AbstractContextManager[tuple[sqlite3.Connection, ChangeSet]]: ...

    def signal_entity(self, entity_id: str, event: pb.HistoryEvent, visible_at: datetime, now: datetime) -> None:
        """Queue a client's signal (``entityOperationSignaled``) for the entity, visible at ``visible_at``."""
        with self._tx() as (db, changes):
            deliver(db, entity_id, "", event, visible_at, now, changes)

    def get_entity(self, entity_id: str, now: datetime, include_state: bool = True) -> EntitySnapshot | None:
        """The entity's record, or None when it does not exist."""
        with self._lock:
            row = _entity_row(self._db, entity_id)
            return None if row is None else _snapshot(self._db, row, now, include_state)

    def query_entities(
        self, query: EntityQueryFilter, page_size: int, continuation: str | None, now: datetime
    ) -> tuple[list[EntitySnapshot], str | None]:
        """A page of entities ordered by ID, and the token of the next page (None at the end)."""
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
        if continuation:
            where.append("instance_id > ?")
            params.append(continuation)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM entities {clause} ORDER BY instance_id LIMIT ?", [*params, page_size + 1]
            ).fetchall()
            items = [_snapshot(self._db, r, now, query.include_state) for r in rows[:page_size]]
        token = items[-1].instance_id if len(rows) > page_size and items else None
        return items, token

    def clean_entity_storage(self, remove_empty: bool, release_orphaned: bool, now: datetime) -> tuple[int, int]:
        """Release locks whose holder is gone or finished, and delete empty entities. Returns (removed, released)."""
        released = 0
        removed = 0
        with self._tx() as (db, changes):
            if release_orphaned:
                holders = [
                    r[0]
                    for r in db.execute(
                        "SELECT DISTINCT e.locked_by FROM entities e LEFT JOIN instances i"
                        " ON i.instance_id = e.locked_by WHERE e.locked_by IS NOT NULL"
                        f" AND (i.instance_id IS NULL OR i.status IN {TERMINAL_SQL})"
                    )
                ]
                for holder in holders:
                    released += release_holder(db, holder, now, changes)
            if remove_empty:
                removed = db.execute(
                    "DELETE FROM entities WHERE state IS NULL AND locked_by IS NULL AND lease_token IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM entity_queue q WHERE q.entity_id = entities.instance_id)"
                ).rowcount
        return removed, released

    def lease_entity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        max_operations: int = sched.DEFAULT_MAX_BATCH,
        max_bytes: int | None = None,
    ) -> EntityWorkItem | None:
        """Lease the next batch of one entity that has operations ready (optionally only these entity names)."""
        if names is not None and not names:
            return None
        now_us = to_us(now)
        name_clause, name_params = "", []
        if names is not None:
            wanted = sorted({n.lower() for n in names})
            name_clause = f"AND e.name IN ({','.join('?' for _ in wanted)})"
            name_params = wanted
        sql = f"""
            SELECT q.entity_id, MIN(q.seq) AS first FROM entity_queue q JOIN entities e ON e.instance_id = q.entity_id
            WHERE q.visible_at <= ? AND q.kind IN {_OPS_SQL} AND (e.locked_by IS NULL OR q.sender = e.locked_by)
              AND (e.lease_token IS NULL OR e.lease_expires_at <= ?) AND e.available_at <= ? {name_clause}
            GROUP BY q.entity_id ORDER BY first LIMIT {_CANDIDATES}
        """
        with self._tx() as (db, changes):
            for entity_id in [r[0] for r in db.execute(sql, [now_us, now_us, now_us, *name_params])]:
                queue = _load_queue(db, entity_id, now)
                if any(m.kind not in sched.OPERATION_KINDS for m in queue):
                    # Locks and unlocks are settled when they arrive; settling again here is a safety net.
                    settle(db, entity_id, now, changes)
                    queue = _load_queue(db, entity_id, now)
                row = _entity_row(db, entity_id)
                if row is None:
                    continue
                batch = sched.select_batch(_holder(row), queue, max_operations, max_bytes)
                if not batch:
                    continue
                token = uuid.uuid4().hex
                db.execute(
                    "UPDATE entities SET lease_token = ?, lease_expires_at = ?, lease_batch = ? WHERE instance_id = ?",
                    (token, to_us(now + lease_for), json.dumps([m.seq for m in batch]), entity_id),
                )
                return EntityWorkItem(
                    token=token, instance_id=entity_id, state=row["state"], operations=[m.event for m in batch]
                )
        return None

    def complete_entity(
        self, token: str, result: pb.EntityBatchResult, now: datetime, max_state_size: int | None = None
    ) -> None:
        """Apply a batch result (state, results, signals, new orchestrations) and release the lease, atomically.

        Raises LeaseNotFoundError for a stale token, InvalidBatchResultError (nothing applied; the
        batch is offered again after a delay) for a result that cannot be applied.
        """
        failure: InvalidBatchResultError | None = None
        with self._tx() as (db, changes):
            row = db.execute("SELECT * FROM entities WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            entity_id = row["instance_id"]
            seqs = json.loads(row["lease_batch"] or "[]")
            batch = _load_batch(db, seqs)
            count = row["abandon_count"]
            try:
                outcome = apply_batch_result(entity_id, row["state"], batch, result, now, max_state_size)
            except InvalidBatchResultError as exc:
                failure = exc
                _release_lease(db, entity_id, now + self.abandon_backoff.delay(count), count + 1)
                changes.work_available = True
            else:
                if outcome.retry:
                    log.warning("entity '%s': batch not applied (%s); it will run again", entity_id,
                                outcome.retry_reason)
                    _release_lease(db, entity_id, now + self.abandon_backoff.delay(count), count + 1)
                    changes.work_available = True
                else:
                    _apply_outcome(db, entity_id, outcome, now, changes)
        if failure is not None:
            raise failure

    def abandon_entity(self, token: str, now: datetime) -> None:
        """Give a batch back; the entity is offered again after a growing delay."""
        with self._tx() as (db, changes):
            row = db.execute("SELECT instance_id, abandon_count FROM entities WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            count = row["abandon_count"]
            _release_lease(db, row["instance_id"], now + self.abandon_backoff.delay(count), count + 1)
            changes.work_available = True

    def release_entity(self, token: str) -> bool:
        """Release a batch lease at once (its stream ended). False if the token no longer holds it."""
        with self._tx() as (db, changes):
            row = db.execute("SELECT instance_id FROM entities WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                return False
            _release_lease(db, row["instance_id"], None, None)
            changes.work_available = True
            return True

    def entity_queue(self, entity_id: str) -> list[tuple[str, str, datetime]]:
        """The entity's queued messages in order: (kind, sender, visible_at). For tests and tools."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, sender, visible_at FROM entity_queue WHERE entity_id = ? ORDER BY seq", (entity_id,)
            ).fetchall()
        return [(r[0], r[1], from_us(r[2])) for r in rows]



__all__ = ["SqliteEntityStore", "deliver", "release_holder", "settle"]
