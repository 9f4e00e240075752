"""The SQLite store: one file (WAL mode) owned by one sidecar process, or ``memory`` for tests.

All access goes through a single connection guarded by a lock; each public mutating
method is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine, engine_events
from sidecar.model import TERMINAL_STATUSES, InstanceSnapshot, InvalidTurnError, OutboundMessage, TurnInput
from sidecar.store import sqlite_commit as commit
from sidecar.store import sqlite_rewind
from sidecar.store.base import (
    ActivityWorkItem,
    Backoff,
    ChangeSet,
    CompletedFilter,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    Store,
    StoreLockedError,
    VersionFilter,
)
from sidecar.store.sqlite_entities import SqliteEntityStore
from sidecar.store.sqlite_rows import (
    INSTANCE_COLUMNS,
    SCHEMA,
    TERMINAL_SQL,
    from_us,
    pack_events,
    row_to_instance,
    row_to_task,
    to_us,
    unpack_events,
)

MEMORY = "memory"
_SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED
_CANDIDATES = 16


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
                "a SQLite store is owned by one sidecar at a time"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _name_version_match(
    name_col: str, version_col: str, names: Collection[str], versions: VersionFilter | None
) -> tuple[str, list[Any]]:
    """SQL matching rows whose name is in ``names`` and, where ``versions`` lists some, whose version is one of them."""
    any_version: list[str] = []
    parts: list[str] = []
    params: list[Any] = []
    for name in sorted(set(names)):
        wanted = sorted(set(versions.get(name, ()))) if versions else []
        if not wanted:
            any_version.append(name)
            continue
        parts.append(f"({name_col} = ? AND COALESCE({version_col}, '') IN ({','.join('?' for _ in wanted)}))")
        params.extend([name, *wanted])
    if any_version:
        parts.insert(0, f"{name_col} IN ({','.join('?' for _ in any_version)})")
        params[:0] = any_version
    return f"({' OR '.join(parts)})", params


class SqliteStore(SqliteEntityStore, Store):
    """SQLite implementation of :class:`Store`. ``path`` is a file path or ``"memory"``."""

    def __init__(self, path: str | os.PathLike[str] = MEMORY, *, abandon_backoff: Backoff | None = None) -> None:
        super().__init__(abandon_backoff)
        self.path = str(path)
        self._lock = threading.RLock()
        self._file_lock: _FileLock | None = None
        if self.path == MEMORY:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = _FileLock(self.path + ".lock")
            try:
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            except Exception:
                self._file_lock.release()
                raise
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        self.cleared_leases = self.clear_leases()

    # --- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[tuple[sqlite3.Connection, ChangeSet]]:
        changes = ChangeSet()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db, changes
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._notify(changes)

    def _read(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._file_lock is not None:
                self._file_lock.release()
                self._file_lock = None

    def reset(self) -> None:
        with self._tx() as (db, changes):
            for table in ("instances", "history", "inbox", "activity_tasks", "entities", "entity_queue"):
                db.execute(f"DELETE FROM {table}")
            changes.reset = True

    def clear_leases(self) -> int:
        with self._tx() as (db, _):
            n = db.execute(
                "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL,"
                " lease_new_events = NULL WHERE lease_token IS NOT NULL"
            ).rowcount
            n += db.execute(
                "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL WHERE lease_token IS NOT NULL"
            ).rowcount
            n += db.execute(
                "UPDATE entities SET lease_token = NULL, lease_expires_at = NULL, lease_batch = NULL"
                " WHERE lease_token IS NOT NULL"
            ).rowcount
        return n

    def pending_events(self, instance_id: str) -> list[tuple[pb.HistoryEvent, datetime, str | None]]:
        """The instance's inbox in delivery order: (event, visible_at, execution_id). For tests and tools."""
        rows = self._read(
            "SELECT event, visible_at, execution_id FROM inbox WHERE instance_id = ? ORDER BY ord", (instance_id,)
        )
        return [(pb.HistoryEvent.FromString(r[0]), from_us(r[1]), r[2]) for r in rows]

    def activity_tasks(self, instance_id: str) -> list[tuple[int, str, bool]]:
        """The instance's queued activity tasks: (task_id, name, leased). For tests and tools."""
        rows = self._read(
            "SELECT task_id, name, lease_token IS NOT NULL FROM activity_tasks WHERE instance_id = ? ORDER BY id",
            (instance_id,),
        )
        return [(r[0], r[1], bool(r[2])) for r in rows]

    # --- client side -------------------------------------------------------------------

    def create_instance(
        self,
        instance: InstanceSnapshot,
        start_event: pb.HistoryEvent,
        visible_at: datetime,
        now: datetime,
        replaceable: Collection[int] | None = None,
    ) -> None:
        with self._tx() as (db, changes):
            existing = commit.load_instance(db, instance.instance_id)
            if existing is not None:
                if replaceable is None:
                    allowed = existing.is_terminal
                else:
                    allowed = existing.status in set(replaceable)
                if not allowed:
                    raise InstanceExistsError(existing.instance_id, existing.status)
                if not existing.is_terminal:
                    commit.terminate(db, existing.instance_id, None, False, now, changes)
                commit.delete_instance_state(db, existing.instance_id)
            commit.insert_instance(db, instance, start_event, visible_at)
            changes.instances.add(instance.instance_id)
            changes.work_available = True

    def get_instance(self, instance_id: str) -> InstanceSnapshot | None:
        with self._lock:
            return commit.load_instance(self._db, instance_id)

    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]:
        with self._lock:
            if commit.load_instance(self._db, instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            return commit.load_history(self._db, instance_id)

    def raise_event(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        with self._tx() as (db, changes):
            if commit.load_instance(db, instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            return commit.deliver_message(db, OutboundMessage(instance_id, event), now, changes)

    def terminate_instance(self, instance_id: str, output: str | None, recursive: bool, now: datetime) -> bool:
        with self._tx() as (db, changes):
            if commit.load_instance(db, instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            return commit.terminate(db, instance_id, output, recursive, now, changes)

    def _set_suspension(self, instance_id: str, event: pb.HistoryEvent, now: datetime, suspend: bool) -> bool:
        with self._tx() as (db, changes):
            inst = commit.load_instance(db, instance_id)
            if inst is None:
                raise InstanceNotFoundError(instance_id)
            verb = "suspend" if suspend else "resume"
            if inst.is_terminal:
                raise InvalidStateError(
                    f"cannot {verb} orchestration instance '{instance_id}': it has already finished "
                    f"(status {engine_events.status_name(inst.status)})"
                )
            if (inst.status == _SUSPENDED) == suspend:
                return False
            new_status = _SUSPENDED if suspend else pb.ORCHESTRATION_STATUS_RUNNING
            db.execute(
                "UPDATE instances SET status = ?, last_updated_at = ? WHERE instance_id = ?",
                (new_status, to_us(now), instance_id),
            )
            commit.insert_inbox(db, instance_id, event, now)
            changes.instances.add(instance_id)
            changes.work_available = True
            return True

    def suspend_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        return self._set_suspension(instance_id, event, now, True)

    def rewind_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> None:
        with self._tx() as (db, changes):
            inst = commit.load_instance(db, instance_id)
            if inst is None:
                raise InstanceNotFoundError(instance_id)
            sqlite_rewind.begin_rewind(db, inst, event, now, changes)

    def resume_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        return self._set_suspension(instance_id, event, now, False)

    @staticmethod
    def _filter_sql(query: InstanceFilter) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if query.statuses:
            statuses = sorted(set(query.statuses))
            where.append(f"status IN ({','.join('?' for _ in statuses)})")
            params.extend(statuses)
        if query.created_from is not None:
            where.append("created_at >= ?")
            params.append(to_us(query.created_from))
        if query.created_to is not None:
            where.append("created_at <= ?")
            params.append(to_us(query.created_to))
        if query.instance_id_prefix:
            where.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(query.instance_id_prefix), query.instance_id_prefix])
        if query.versions:
            versions = sorted(set(query.versions))
            where.append(f"COALESCE(version, '') IN ({','.join('?' for _ in versions)})")
            params.extend(versions)
        return where, params

    def query_instances(
        self, query: InstanceFilter, page_size: int, continuation: str | None
    ) -> tuple[list[InstanceSnapshot], str | None]:
        where, params = self._filter_sql(query)
        if continuation:
            where.append("instance_id > ?")
            params.append(continuation)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {INSTANCE_COLUMNS} FROM instances {clause} ORDER BY instance_id LIMIT ?",
            [*params, page_size + 1],
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
            where.append(f"status IN ({','.join('?' for _ in statuses)})")
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
                where.append("(completed_at, instance_id) > (?, ?)")
                params.extend([int(stamp), after_id])
            except ValueError:
                raise InvalidStateError(f"lastInstanceKey '{last_key}' is not a key returned by this sidecar") from None
        rows = self._read(
            f"SELECT instance_id, completed_at FROM instances WHERE {' AND '.join(where)}"
            " ORDER BY completed_at, instance_id LIMIT ?",
            [*params, page_size + 1],
        )
        page = rows[:page_size]
        key = f"{page[-1][1]}:{page[-1][0]}" if len(rows) > page_size and page else None
        return [r[0] for r in page], key

    def purge_instances(self, instance_ids: Collection[str], recursive: bool) -> int:
        with self._tx() as (db, changes):
            for iid in instance_ids:
                row = db.execute("SELECT status FROM instances WHERE instance_id = ?", (iid,)).fetchone()
                if row is not None and row["status"] not in TERMINAL_STATUSES:
                    raise InvalidStateError(
                        f"cannot purge orchestration instance '{iid}': it has not finished "
                        f"(status {engine_events.status_name(row['status'])}); terminate it first"
                    )
            return sum(commit.purge(db, iid, recursive, changes) for iid in dict.fromkeys(instance_ids))

    def purge_by_filter(self, query: InstanceFilter, recursive: bool) -> int:
        where, params = self._filter_sql(query)
        where.append(f"status IN {TERMINAL_SQL}")
        with self._tx() as (db, changes):
            ids = [r[0] for r in db.execute(f"SELECT instance_id FROM instances WHERE {' AND '.join(where)}", params)]
            return sum(commit.purge(db, iid, recursive, changes) for iid in ids)

    # --- orchestration work items ------------------------------------------------------

    def lease_orchestration(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        exclude: Collection[str] = (),
        skip_delay: Collection[str] = (),
    ) -> OrchestrationWorkItem | None:
        if names is not None and not names:
            return None
        now_us = to_us(now)
        name_clause = ""
        name_params: list[Any] = []
        if names is not None:
            match, name_params = _name_version_match("i.name", "i.version", names, versions)
            name_clause = f"AND {match}"
        if exclude:
            excluded = sorted(set(exclude))
            name_clause += f" AND i.instance_id NOT IN ({','.join('?' for _ in excluded)})"
            name_params = [*name_params, *excluded]
        available = "i.available_at <= ?"
        available_params: list[Any] = [now_us]
        if skip_delay:
            early = sorted(set(skip_delay))
            available = f"({available} OR i.instance_id IN ({','.join('?' for _ in early)}))"
            available_params.extend(early)
        sql = f"""
            SELECT m.instance_id, MIN(m.ord) AS first FROM inbox m JOIN instances i ON i.instance_id = m.instance_id
            WHERE m.visible_at <= ? AND i.status NOT IN {TERMINAL_SQL}
              AND (i.lease_token IS NULL OR i.lease_expires_at <= ?) AND {available}
              AND (m.execution_id IS NULL OR m.execution_id = i.execution_id)
              AND (i.status != {_SUSPENDED} OR m.kind IN ('executionResumed', 'executionTerminated'))
              AND (EXISTS (SELECT 1 FROM history h WHERE h.instance_id = i.instance_id)
                   OR EXISTS (SELECT 1 FROM inbox s WHERE s.instance_id = i.instance_id
                              AND s.kind = 'executionStarted' AND s.visible_at <= ?))
              {name_clause}
            GROUP BY m.instance_id ORDER BY first LIMIT {_CANDIDATES}
        """
        # A candidate whose visible events were all dropped as duplicates yields nothing; look again.
        for _ in range(4):
            with self._tx() as (db, changes):
                params = [now_us, now_us, *available_params, now_us, *name_params]
                candidates = [r[0] for r in db.execute(sql, params)]
                if not candidates:
                    return None
                for iid in candidates:
                    item = self._try_lease(db, iid, now, lease_for, changes)
                    if item is not None:
                        return item
        return None

    def _try_lease(
        self, db: sqlite3.Connection, iid: str, now: datetime, lease_for: timedelta, changes: ChangeSet
    ) -> OrchestrationWorkItem | None:
        inst = commit.load_instance(db, iid)
        assert inst is not None
        rows = db.execute(
            "SELECT seq, event FROM inbox WHERE instance_id = ? AND visible_at <= ?"
            " AND (execution_id IS NULL OR execution_id = ?) ORDER BY ord",
            (iid, to_us(now), inst.execution_id),
        ).fetchall()
        inbox = [pb.HistoryEvent.FromString(r["event"]) for r in rows]
        past = commit.load_history(db, iid)
        deliver, drop = engine.select_new_events(past, inbox)
        if drop:
            db.executemany("DELETE FROM inbox WHERE seq = ?", [(rows[i]["seq"],) for i in drop])
        if not deliver:
            return None
        # A rewind request is answered in a turn of its own; later events wait for the next turn.
        deliver = next(([i] for i in deliver if inbox[i].HasField("executionRewound")), deliver)
        token = uuid.uuid4().hex
        new_events = [inbox[i] for i in deliver]
        # A wake-up orchestratorStarted already at the front (after a rewind) is the turn's own.
        if not new_events[0].HasField("orchestratorStarted"):
            new_events.insert(0, engine_events.new_orchestrator_started(now))
        consumed = [rows[i]["seq"] for i in deliver] + [rows[i]["seq"] for i in drop]
        db.execute(
            "UPDATE instances SET lease_token = ?, lease_expires_at = ?, lease_inbox = ?, lease_new_events = ?"
            " WHERE instance_id = ?",
            (token, to_us(now + lease_for), json.dumps(consumed), pack_events(new_events), iid),
        )
        return OrchestrationWorkItem(token=token, instance=inst, past_events=past, new_events=new_events)

    def complete_orchestration(self, token: str, response: pb.OrchestratorResponse, now: datetime) -> None:
        failure: InvalidTurnError | None = None
        with self._tx() as (db, changes):
            row = db.execute(
                "SELECT instance_id, status, lease_inbox, lease_new_events, abandon_count FROM instances"
                " WHERE lease_token = ?",
                (token,),
            ).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            iid = row["instance_id"]
            inst = commit.load_instance(db, iid)
            assert inst is not None
            turn = TurnInput(
                instance=inst,
                past_events=commit.load_history(db, iid),
                new_events=unpack_events(row["lease_new_events"]),
                response=response,
                now=now,
            )
            try:
                result = engine.apply_turn(turn)
            except InvalidTurnError as exc:
                failure = exc
                self._release(db, iid, now + self.abandon_backoff.delay(row["abandon_count"]), row["abandon_count"] + 1)
                changes.work_available = True
            else:
                consumed = json.loads(row["lease_inbox"] or "[]")
                commit.apply_result(db, result, now, changes, row_status=row["status"], consumed_inbox=consumed)
                if result.rewind is not None:
                    sqlite_rewind.rewind_children(db, iid, result.rewind, now, changes)
        if failure is not None:
            raise failure

    @staticmethod
    def _release(db: sqlite3.Connection, iid: str, available_at: datetime | None, abandon_count: int | None) -> None:
        db.execute(
            "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL,"
            " lease_new_events = NULL, available_at = COALESCE(?, available_at),"
            " abandon_count = COALESCE(?, abandon_count) WHERE instance_id = ?",
            (None if available_at is None else to_us(available_at), abandon_count, iid),
        )

    def abandon_orchestration(self, token: str, now: datetime) -> None:
        with self._tx() as (db, changes):
            row = db.execute("SELECT instance_id, abandon_count FROM instances WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            count = row["abandon_count"]
            self._release(db, row["instance_id"], now + self.abandon_backoff.delay(count), count + 1)
            changes.work_available = True

    def release_orchestration(self, token: str) -> bool:
        with self._tx() as (db, changes):
            row = db.execute("SELECT instance_id FROM instances WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                return False
            self._release(db, row["instance_id"], None, None)
            changes.work_available = True
            return True

    # --- activity work items -------------------------------------------------------------

    def lease_activity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
    ) -> ActivityWorkItem | None:
        if names is not None and not names:
            return None
        now_us = to_us(now)
        name_clause = ""
        params: list[Any] = [now_us, now_us]
        if names is not None:
            match, name_params = _name_version_match("name", "version", names, versions)
            name_clause = f"AND {match}"
            params.extend(name_params)
        with self._tx() as (db, _):
            row = db.execute(
                "SELECT * FROM activity_tasks WHERE visible_at <= ? AND (lease_token IS NULL OR lease_expires_at <= ?)"
                f" {name_clause} ORDER BY visible_at, id LIMIT 1",
                params,
            ).fetchone()
            if row is None:
                return None
            token = uuid.uuid4().hex
            db.execute(
                "UPDATE activity_tasks SET lease_token = ?, lease_expires_at = ? WHERE id = ?",
                (token, to_us(now + lease_for), row["id"]),
            )
            return ActivityWorkItem(token=token, task=row_to_task(row))

    def complete_activity(self, token: str, response: pb.ActivityResponse, now: datetime) -> None:
        with self._tx() as (db, changes):
            row = db.execute("SELECT * FROM activity_tasks WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            db.execute("DELETE FROM activity_tasks WHERE id = ?", (row["id"],))
            event = engine_events.activity_result_event(row["task_id"], response, now)
            commit.deliver_message(
                db, OutboundMessage(row["instance_id"], event, target_execution_id=row["execution_id"]), now, changes
            )

    def abandon_activity(self, token: str, now: datetime) -> None:
        with self._tx() as (db, changes):
            row = db.execute("SELECT id, abandon_count FROM activity_tasks WHERE lease_token = ?", (token,)).fetchone()
            if row is None:
                raise LeaseNotFoundError(token)
            count = row["abandon_count"]
            db.execute(
                "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL, visible_at = ?,"
                " abandon_count = ? WHERE id = ?",
                (to_us(now + self.abandon_backoff.delay(count)), count + 1, row["id"]),
            )
            changes.work_available = True

    def release_activity(self, token: str) -> bool:
        with self._tx() as (db, changes):
            n = db.execute(
                "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL WHERE lease_token = ?", (token,)
            ).rowcount
            changes.work_available = n > 0
            return n > 0

    # --- leases and timing -----------------------------------------------------------------

    def renew_leases(self, tokens: Collection[str], until: datetime) -> None:
        items = list(tokens)
        if not items:
            return
        with self._tx() as (db, _):
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                marks = ",".join("?" for _ in chunk)
                for table in ("instances", "activity_tasks", "entities"):
                    db.execute(
                        f"UPDATE {table} SET lease_expires_at = ? WHERE lease_token IN ({marks})", [to_us(until), *chunk]
                    )

    def next_due_at(self, now: datetime) -> datetime | None:
        n = to_us(now)
        row = self._read(
            f"""SELECT MIN(t) FROM (
                SELECT MIN(visible_at) AS t FROM inbox WHERE visible_at > ?
                UNION ALL SELECT MIN(available_at) FROM instances WHERE available_at > ?
                UNION ALL SELECT MIN(lease_expires_at) FROM instances
                    WHERE lease_token IS NOT NULL AND lease_expires_at > ? AND status NOT IN {TERMINAL_SQL}
                UNION ALL SELECT MIN(visible_at) FROM activity_tasks WHERE visible_at > ?
                UNION ALL SELECT MIN(lease_expires_at) FROM activity_tasks
                    WHERE lease_token IS NOT NULL AND lease_expires_at > ?
                UNION ALL SELECT MIN(visible_at) FROM entity_queue WHERE visible_at > ?
                UNION ALL SELECT MIN(available_at) FROM entities WHERE available_at > ?
                UNION ALL SELECT MIN(lease_expires_at) FROM entities
                    WHERE lease_token IS NOT NULL AND lease_expires_at > ?)""",
            (n, n, n, n, n, n, n, n),
        )
        value = row[0][0]
        return None if value is None else from_us(value)
