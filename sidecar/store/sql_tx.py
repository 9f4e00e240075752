"""The primitive reads and writes of one SQL transaction, written once for every SQL database.

SQL here uses ``?`` placeholders; the connection wrapper of each database converts them.
Row locks (``FOR UPDATE``, ``SKIP LOCKED``) come from the database's :class:`SqlFlavor`;
SQLite has one writer at a time and needs none.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import ENTITY_OPERATION_KINDS, ActivityTaskSpec, InstanceSnapshot
from sidecar.store.base import (
    CommitNotice,
    EntityMessageRow,
    EntityRecord,
    InboxRow,
    InstanceFilter,
    StoreTx,
    TurnLease,
    VersionFilter,
)
from sidecar.store.sql_rows import (
    INSTANCE_COLUMNS,
    RESTORE_HELD_ROW_SQL,
    TERMINAL_SQL,
    event_kind,
    from_us,
    held_rows,
    instance_values,
    pack_events,
    row_to_instance,
    row_to_task,
    to_us,
    unpack_events,
)

Row = Mapping[str, Any]

_SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED
_OPS_SQL = "(" + ",".join(f"'{k}'" for k in sorted(ENTITY_OPERATION_KINDS)) + ")"
_INSTANCE_COLUMN_LIST = [c.strip() for c in INSTANCE_COLUMNS.split(",")]


class SqlConnection(Protocol):
    """What the transaction needs of a database connection (``?`` placeholders)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


def new_history_key() -> str:
    """A fresh identity for a history that starts over (a new instance row, a replaced history)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class SqlFlavor:
    """Row-locking clauses of a database ("" where a single writer makes them unnecessary), and
    whether it takes index hints (SQLite's ``INDEXED BY``, for queries its planner, which keeps no
    statistics here, would otherwise answer by sorting every candidate row), and whether a WITH
    clause may write."""

    for_update: str = ""
    skip_locked: str = ""
    index_hints: bool = False
    # Data-modifying statements in WITH (PostgreSQL): two writes in one statement, one round trip.
    writing_with: bool = False

    def indexed_by(self, index: str) -> str:
        """`` INDEXED BY index`` where the database takes the hint, else nothing."""
        return f" INDEXED BY {index}" if self.index_hints else ""


def marks(values: Collection[Any]) -> str:
    """``?, ?, ...`` for the values."""
    return ",".join("?" for _ in values)


def name_version_match(
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
        parts.append(f"({name_col} = ? AND COALESCE({version_col}, '') IN ({marks(wanted)}))")
        params.extend([name, *wanted])
    if any_version:
        parts.insert(0, f"{name_col} IN ({marks(any_version)})")
        params[:0] = any_version
    return f"({' OR '.join(parts)})", params


def instance_filter_sql(query: InstanceFilter) -> tuple[list[str], list[Any]]:
    """WHERE conditions (and their parameters) of an instance filter."""
    where: list[str] = []
    params: list[Any] = []
    if query.statuses:
        statuses = sorted(set(query.statuses))
        where.append(f"status IN ({marks(statuses)})")
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
        where.append(f"COALESCE(version, '') IN ({marks(versions)})")
        params.extend(versions)
    return where, params


def row_to_entity(row: Row) -> EntityRecord:
    """An EntityRecord from an ``entities`` row."""
    return EntityRecord(
        instance_id=row["instance_id"],
        name=row["name"],
        state=row["state"],
        locked_by=row["locked_by"],
        lock_section=row["lock_section"],
        last_modified_at=from_us(row["last_modified_at"]),
        lease_batch=json.loads(row["lease_batch"] or "[]"),
        abandon_count=row["abandon_count"],
    )


def _message(row: Row) -> EntityMessageRow:
    blob = bytes(row["event"])
    trace = bytes(row["trace_context"]) if row["trace_context"] else b""
    return EntityMessageRow(
        seq=row["seq"], kind=row["kind"], sender=row["sender"], event=pb.HistoryEvent.FromString(blob),
        size=len(blob) + len(trace), trace_context=pb.TraceContext.FromString(trace) if trace else None,
    )


class SqlTx(StoreTx):
    """:class:`StoreTx` over one SQL connection inside an open transaction."""

    def __init__(self, db: SqlConnection, flavor: SqlFlavor) -> None:
        self.db = db
        self.flavor = flavor
        self.notice = CommitNotice()
        # What this transaction has read or written of an instance's history, so that a turn does
        # not read it again: the history key (from the leased row) and the next free sequence number.
        # The rows cannot change under it: history is written only under the instance's lease (or
        # by a write that ends the lease), and the transaction holds the leased row.
        self._keys: dict[str, str | None] = {}
        self._next_seq: dict[str, int] = {}

    def _lock(self, lock: bool) -> str:
        return f" {self.flavor.for_update}" if lock and self.flavor.for_update else ""

    # --- instances ---

    def instance(self, instance_id: str, *, lock: bool = False) -> InstanceSnapshot | None:
        rows = self.db.query(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?{self._lock(lock)}", (instance_id,)
        )
        return row_to_instance(rows[0]) if rows else None

    def insert_instance(self, instance: InstanceSnapshot) -> None:
        key = new_history_key()
        self.db.execute(
            f"INSERT INTO instances ({INSTANCE_COLUMNS}, history_key) VALUES ({marks(_INSTANCE_COLUMN_LIST)}, ?)",
            (*instance_values(instance), key),
        )
        self._keys[instance.instance_id] = key
        self.notice.instances.add(instance.instance_id)
        self.notice.states[instance.instance_id] = replace(instance)
        self.notice.add_work("orchestration")

    def update_instance(self, instance: InstanceSnapshot, *, end_lease: bool) -> None:
        assignments = ", ".join(f"{c} = ?" for c in _INSTANCE_COLUMN_LIST[1:])
        lease = (
            ", lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL, lease_visible = NULL,"
            " lease_new_events = NULL,"
            " available_at = 0, abandon_count = 0"
            if end_lease
            else ""
        )
        values = instance_values(instance)
        self.db.execute(
            f"UPDATE instances SET {assignments}{lease} WHERE instance_id = ?", (*values[1:], instance.instance_id)
        )
        self.notice.instances.add(instance.instance_id)
        self.notice.states[instance.instance_id] = replace(instance)
        # The only orchestration work this makes: its inbox, deliverable again once its lease ends.
        self.notice.add_work("orchestration", inbox_of=instance.instance_id)

    def relink_parent(self, instance_id: str, execution_id: str | None, task_id: int) -> None:
        self.db.execute(
            "UPDATE instances SET parent_execution_id = ?, parent_task_id = ? WHERE instance_id = ?",
            (execution_id, task_id, instance_id),
        )
        self.notice.instances.add(instance_id)
        self.notice.states.pop(instance_id, None)

    def delete_instance(self, instance_id: str) -> None:
        for table in ("instances", "history", "inbox", "activity_tasks"):
            self.db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))
        self._keys.pop(instance_id, None)
        self._next_seq.pop(instance_id, None)
        self.notice.instances.add(instance_id)
        self.notice.states.pop(instance_id, None)

    def child_ids(self, parent_id: str, *, live_only: bool) -> list[str]:
        live = f" AND status NOT IN {TERMINAL_SQL}" if live_only else ""
        rows = self.db.query(
            f"SELECT instance_id FROM instances WHERE parent_instance_id = ?{live} ORDER BY instance_id", (parent_id,)
        )
        return [r["instance_id"] for r in rows]

    def live_ids(self, instance_ids: Collection[str]) -> set[str]:
        ids = sorted(set(instance_ids))
        if not ids:
            return set()
        rows = self.db.query(
            f"SELECT instance_id FROM instances WHERE instance_id IN ({marks(ids)}) AND status NOT IN {TERMINAL_SQL}",
            ids,
        )
        return {r["instance_id"] for r in rows}

    def terminal_ids(self, query: InstanceFilter) -> list[str]:
        where, params = instance_filter_sql(query)
        where.append(f"status IN {TERMINAL_SQL}")
        rows = self.db.query(
            f"SELECT instance_id FROM instances WHERE {' AND '.join(where)} ORDER BY instance_id", params
        )
        return [r["instance_id"] for r in rows]

    # --- history and inbox ---

    def history(self, instance_id: str) -> list[pb.HistoryEvent]:
        rows = self.db.query("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [pb.HistoryEvent.FromString(bytes(r["event"])) for r in rows]

    def history_rows(self, instance_id: str, from_seq: int = 0) -> list[tuple[int, pb.HistoryEvent]]:
        rows = self.db.query(
            "SELECT seq, event FROM history WHERE instance_id = ? AND seq >= ? ORDER BY seq", (instance_id, from_seq)
        )
        found = [(int(r["seq"]), pb.HistoryEvent.FromString(bytes(r["event"]))) for r in rows]
        if found:
            self._next_seq[instance_id] = found[-1][0] + 1
        elif from_seq == 0:
            self._next_seq[instance_id] = 0
        return found

    def _next_history_seq(self, instance_id: str) -> int:
        known = self._next_seq.get(instance_id)
        if known is not None:
            return known
        return int(self.db.query(
            "SELECT COALESCE(MAX(seq), -1) + 1 AS next_seq FROM history WHERE instance_id = ?", (instance_id,)
        )[0]["next_seq"])

    def _insert_history(self, instance_id: str, start: int, events: list[pb.HistoryEvent]) -> None:
        self.db.executemany(
            "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
            [(instance_id, start + i, e.SerializeToString()) for i, e in enumerate(events)],
        )
        self._next_seq[instance_id] = start + len(events)

    def note_history_end(self, instance_id: str, next_seq: int) -> None:
        self._next_seq[instance_id] = next_seq

    def append_history(self, instance_id: str, events: list[pb.HistoryEvent]) -> None:
        if events:
            self._insert_history(instance_id, self._next_history_seq(instance_id), events)

    def history_key(self, instance_id: str) -> str | None:
        if instance_id in self._keys:
            return self._keys[instance_id]
        rows = self.db.query("SELECT history_key FROM instances WHERE instance_id = ?", (instance_id,))
        return rows[0]["history_key"] if rows else None

    def replace_history(self, instance_id: str, events: list[pb.HistoryEvent]) -> None:
        key = new_history_key()
        self.db.execute("UPDATE instances SET history_key = ? WHERE instance_id = ?", (key, instance_id))
        self._keys[instance_id] = key
        start = self._next_history_seq(instance_id)
        self.db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self._next_seq.pop(instance_id, None)
        if events:
            self._insert_history(instance_id, start, events)

    def _insert_inbox(
        self, instance_id: str, event: pb.HistoryEvent, visible_at: datetime, execution_id: str | None, ord_: int | None
    ) -> None:
        self.db.execute(
            "INSERT INTO inbox (ord, instance_id, execution_id, kind, event, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
            (ord_, instance_id, execution_id, event_kind(event), event.SerializeToString(), to_us(visible_at)),
        )
        self.notice.add_work("orchestration", inbox_of=instance_id)
        self.notice.add_visible_at(visible_at)

    def add_inbox(
        self, instance_id: str, event: pb.HistoryEvent, visible_at: datetime, execution_id: str | None = None
    ) -> None:
        self._insert_inbox(instance_id, event, visible_at, execution_id, None)

    def prepend_inbox(self, instance_id: str, events: list[pb.HistoryEvent], visible_at: datetime) -> None:
        if not events:
            return
        first = self.db.query(
            "SELECT MIN(COALESCE(ord, seq)) AS first FROM inbox WHERE instance_id = ?", (instance_id,)
        )[0]["first"]
        for i, event in enumerate(events):
            ord_ = None if first is None else first - len(events) + i
            self._insert_inbox(instance_id, event, visible_at, None, ord_)

    def visible_inbox(self, instance_id: str, now: datetime, execution_id: str) -> list[InboxRow]:
        rows = self.db.query(
            "SELECT seq, event, visible_at, execution_id FROM inbox WHERE instance_id = ? AND visible_at <= ?"
            " AND (execution_id IS NULL OR execution_id = ?) ORDER BY COALESCE(ord, seq)",
            (instance_id, to_us(now), execution_id),
        )
        return [
            InboxRow(r["seq"], pb.HistoryEvent.FromString(bytes(r["event"])), from_us(r["visible_at"]), r["execution_id"])
            for r in rows
        ]

    def delete_inbox(self, row_ids: Collection[int]) -> None:
        ids = sorted(set(row_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self.db.execute(f"DELETE FROM inbox WHERE seq IN ({marks(chunk)})", chunk)

    def clear_inbox(self, instance_id: str, *, keep_execution: str | None = None) -> None:
        if keep_execution is None:
            self.db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))
        else:
            self.db.execute(
                "DELETE FROM inbox WHERE instance_id = ? AND execution_id IS NOT NULL AND execution_id != ?",
                (instance_id, keep_execution),
            )

    def clear_finished(self, instance_id: str) -> None:
        if not self.flavor.writing_with:
            super().clear_finished(instance_id)
            return
        self.db.execute(
            "WITH tasks AS (DELETE FROM activity_tasks WHERE instance_id = ?) DELETE FROM inbox WHERE instance_id = ?",
            (instance_id, instance_id),
        )

    # --- orchestration turn leases ---

    def claim_orchestration(
        self,
        now: datetime,
        lease_until: datetime,
        token: str,
        names: Collection[str] | None,
        versions: VersionFilter | None,
        exclude: Collection[str],
        skip_delay: Collection[str],
        starts: bool | None = None,
        only: Collection[str] | None = None,
    ) -> InstanceSnapshot | None:
        now_us = to_us(now)
        # Literal, so that the partial index of each kind of row serves the scan.
        row_kind = {None: "", True: "AND m.kind = 'executionStarted'", False: "AND m.kind != 'executionStarted'"}[starts]
        extra = ""
        extra_params: list[Any] = []
        if names is not None:
            match, extra_params = name_version_match("i.name", "i.version", names, versions)
            extra = f" AND {match}"
        if exclude:
            excluded = sorted(set(exclude))
            extra += f" AND i.instance_id NOT IN ({marks(excluded)})"
            extra_params = [*extra_params, *excluded]
        if only is not None:
            if not only:
                return None
            wanted = sorted(set(only))
            extra += f" AND m.instance_id IN ({marks(wanted)})"
            extra_params = [*extra_params, *wanted]
        available = "i.available_at <= ?"
        available_params: list[Any] = [now_us]
        if skip_delay:
            early = sorted(set(skip_delay))
            available = f"(i.available_at <= ? OR i.instance_id IN ({marks(early)}))"
            available_params.extend(early)
        # Driven by the inbox's visibility index: the instance whose earliest deliverable event
        # became visible first, found without scanning every live instance.
        lock_instance = self.flavor.skip_locked.replace("FOR UPDATE", "FOR UPDATE OF i")
        sql = f"""
            UPDATE instances SET lease_token = ?, lease_expires_at = ?
            WHERE instance_id = (
                SELECT i.instance_id FROM inbox m JOIN instances i ON i.instance_id = m.instance_id
                WHERE m.visible_at <= ? {row_kind}
                  AND (m.execution_id IS NULL OR m.execution_id = i.execution_id)
                  AND (i.status != {_SUSPENDED} OR m.kind IN ('executionResumed', 'executionTerminated'))
                  AND i.status NOT IN {TERMINAL_SQL}
                  AND (i.lease_token IS NULL OR i.lease_expires_at <= ?) AND {available}
                  AND (EXISTS (SELECT 1 FROM history h WHERE h.instance_id = i.instance_id)
                       OR EXISTS (SELECT 1 FROM inbox s WHERE s.instance_id = i.instance_id
                                  AND s.kind = 'executionStarted' AND s.visible_at <= ?))
                  {extra}
                ORDER BY m.visible_at, m.seq
                LIMIT 1 {lock_instance}
            ) AND (lease_token IS NULL OR lease_expires_at <= ?)
            RETURNING {INSTANCE_COLUMNS}, history_key
        """
        params = [
            token, to_us(lease_until), now_us, now_us, *available_params, now_us, *extra_params, now_us,
        ]
        rows = self.db.query(sql, params)
        if not rows:
            return None
        self._keys[rows[0]["instance_id"]] = rows[0]["history_key"]
        return row_to_instance(rows[0])

    def record_turn(
        self, instance_id: str, token: str, new_events: list[pb.HistoryEvent], consumed: list[int],
        visible_since: list[datetime],
    ) -> None:
        record = (
            "UPDATE instances SET lease_inbox = ?, lease_visible = ?, lease_new_events = ?"
            " WHERE instance_id = ? AND lease_token = ?"
        )
        params = (json.dumps(consumed), json.dumps([to_us(t) for t in visible_since]), pack_events(new_events),
                  instance_id, token)
        # The rows this turn holds turn visible again when its lease runs out (or when it is released):
        # until then, claims walking the visibility index do not pass over them.
        chunks = [consumed[start:start + 500] for start in range(0, len(consumed), 500)]
        if self.flavor.writing_with and chunks:
            first = chunks.pop(0)
            self.db.execute(
                f"WITH lease AS ({record} RETURNING lease_expires_at)"
                f" UPDATE inbox SET visible_at = (SELECT lease_expires_at FROM lease) WHERE seq IN ({marks(first)})",
                (*params, *first),
            )
        else:
            self.db.execute(record, params)
        for chunk in chunks:
            self.db.execute(
                "UPDATE inbox SET visible_at = (SELECT lease_expires_at FROM instances WHERE instance_id = ?)"
                f" WHERE seq IN ({marks(chunk)})",
                (instance_id, *chunk),
            )

    def turn_by_lease(self, token: str) -> TurnLease | None:
        rows = self.db.query(
            f"SELECT {INSTANCE_COLUMNS}, lease_inbox, lease_new_events, abandon_count, history_key FROM instances"
            f" WHERE lease_token = ?{self._lock(True)}",
            (token,),
        )
        if not rows:
            return None
        row = rows[0]
        self._keys[row["instance_id"]] = row["history_key"]
        blob = row["lease_new_events"]
        return TurnLease(
            instance=row_to_instance(row),
            new_events=unpack_events(bytes(blob) if blob is not None else None),
            consumed_inbox=json.loads(row["lease_inbox"] or "[]"),
            abandon_count=row["abandon_count"],
        )

    def turn_lease_of(self, token: str) -> tuple[str, int] | None:
        rows = self.db.query(
            f"SELECT instance_id, abandon_count FROM instances WHERE lease_token = ?{self._lock(True)}", (token,)
        )
        return (rows[0]["instance_id"], rows[0]["abandon_count"]) if rows else None

    def release_turn(self, instance_id: str, available_at: datetime | None, abandon_count: int | None) -> None:
        rows = self.db.query("SELECT lease_inbox, lease_visible FROM instances WHERE instance_id = ?", (instance_id,))
        held = held_rows(rows[0]["lease_inbox"], rows[0]["lease_visible"]) if rows else []
        if held:  # visible again from when they were before the turn was leased
            self.db.executemany(RESTORE_HELD_ROW_SQL, held)
        self.db.execute(
            "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL, lease_inbox = NULL,"
            " lease_visible = NULL, lease_new_events = NULL, available_at = COALESCE(?, available_at),"
            " abandon_count = COALESCE(?, abandon_count) WHERE instance_id = ?",
            (None if available_at is None else to_us(available_at), abandon_count, instance_id),
        )
        self.notice.add_work("orchestration")

    # --- activities ---

    def add_activity_tasks(self, tasks: Collection[ActivityTaskSpec], visible_at: datetime) -> None:
        if not tasks:
            return
        self.db.executemany(
            "INSERT INTO activity_tasks (instance_id, execution_id, task_id, name, version, input, tags, visible_at,"
            " trace_context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (t.instance_id, t.execution_id, t.task_id, t.name, t.version, t.input, json.dumps(t.tags or {}),
                 to_us(visible_at), t.trace_context.SerializeToString() if t.trace_context is not None else None)
                for t in tasks
            ],
        )
        self.notice.add_activity_tasks([(t.instance_id, t.task_id) for t in tasks])

    def delete_activity_tasks(self, instance_id: str, *, keep_execution: str | None = None) -> None:
        if keep_execution is None:
            self.db.execute("DELETE FROM activity_tasks WHERE instance_id = ?", (instance_id,))
        else:
            self.db.execute(
                "DELETE FROM activity_tasks WHERE instance_id = ? AND execution_id != ?", (instance_id, keep_execution)
            )

    def claim_activities(
        self, now: datetime, lease_until: datetime, token_prefix: str, limit: int, names: Collection[str] | None,
        versions: VersionFilter | None, *, expired: bool = True,
    ) -> list[tuple[str, ActivityTaskSpec]]:
        now_us = to_us(now)
        name_clause = ""
        name_params: list[Any] = []
        if names is not None:
            match, name_params = name_version_match("name", "version", names, versions)
            name_clause = f"AND {match}"
        # Tasks whose lease expired first (their worker is gone; earliest expiry first), then tasks
        # not leased (in the order they became visible): each kind read in the order of a partial
        # index of its own, so that the tasks out on leases (all but a few of a large fan-out) are
        # not read again by every claim. One statement per kind for the whole batch; each task's
        # token is the prefix and its row id.
        rows: list[Row] = []
        kinds = [
            ("activity_leased", "lease_token IS NOT NULL AND lease_expires_at <= ?", "lease_expires_at, id"),
            ("activity_ready", "lease_token IS NULL AND visible_at <= ?", "visible_at, id"),
        ]
        for index, kind, order in kinds if expired else kinds[1:]:
            if len(rows) >= limit:
                break
            claimed = self.db.query(
                f"""UPDATE activity_tasks SET lease_token = ? || CAST(id AS TEXT), lease_expires_at = ?
                WHERE id IN (
                    SELECT id FROM activity_tasks{self.flavor.indexed_by(index)} WHERE {kind} AND visible_at <= ?
                    {name_clause} ORDER BY {order} LIMIT ? {self.flavor.skip_locked}
                ) AND (lease_token IS NULL OR lease_expires_at <= ?)
                RETURNING *""",
                [token_prefix, to_us(lease_until), now_us, now_us, *name_params, limit - len(rows), now_us],
            )
            rows.extend(sorted(claimed, key=lambda r: (r["visible_at"], r["id"])))
        return [(r["lease_token"], row_to_task(r)) for r in rows]

    def take_activity(self, token: str, task_id: int | None = None) -> ActivityTaskSpec | None:
        if task_id is None:
            rows = self.db.query("DELETE FROM activity_tasks WHERE lease_token = ? RETURNING *", (token,))
        else:
            rows = self.db.query(
                "DELETE FROM activity_tasks WHERE lease_token = ? AND task_id = ? RETURNING *", (token, task_id)
            )
        return row_to_task(rows[0]) if rows else None

    def leased_activity(self, token: str) -> ActivityTaskSpec | None:
        rows = self.db.query("SELECT * FROM activity_tasks WHERE lease_token = ?", (token,))
        return row_to_task(rows[0]) if rows else None

    def release_activity(self, token: str, visible_at: datetime | None, *, count_hand_back: bool) -> bool:
        n = self.db.execute(
            "UPDATE activity_tasks SET lease_token = NULL, lease_expires_at = NULL,"
            " visible_at = COALESCE(?, visible_at), abandon_count = abandon_count + ? WHERE lease_token = ?",
            (None if visible_at is None else to_us(visible_at), 1 if count_hand_back else 0, token),
        )
        if n:
            self.notice.add_work("activity")
        return n > 0

    def activity_hand_backs(self, token: str) -> int | None:
        rows = self.db.query(
            f"SELECT abandon_count FROM activity_tasks WHERE lease_token = ?{self._lock(True)}", (token,)
        )
        return rows[0]["abandon_count"] if rows else None

    # --- entities ---

    def entity(self, entity_id: str, *, lock: bool = False) -> EntityRecord | None:
        rows = self.db.query(f"SELECT * FROM entities WHERE instance_id = ?{self._lock(lock)}", (entity_id,))
        return row_to_entity(rows[0]) if rows else None

    def ensure_entity(self, entity_id: str, name: str, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO entities (instance_id, name, created_at, last_modified_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (instance_id) DO NOTHING",
            (entity_id, name, to_us(now), to_us(now)),
        )

    def set_entity_lock(self, entity_id: str, holder: str | None, section: str | None, now: datetime) -> None:
        self.db.execute(
            "UPDATE entities SET locked_by = ?, lock_section = ?, last_modified_at = ? WHERE instance_id = ?",
            (holder, section, to_us(now), entity_id),
        )
        self.notice.add_work("entity")

    def clear_locks_held_by(self, instance_id: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE entities SET locked_by = NULL, lock_section = NULL, last_modified_at = ? WHERE locked_by = ?",
            (to_us(now), instance_id),
        )
        self.notice.add_work("entity")

    def entities_locked_by(self, instance_id: str) -> list[str]:
        rows = self.db.query(
            "SELECT instance_id FROM entities WHERE locked_by = ? ORDER BY instance_id", (instance_id,)
        )
        return [r["instance_id"] for r in rows]

    def lock_holdings(self, instance_id: str) -> tuple[list[str], list[str]]:
        rows = self.db.query(
            "SELECT 1 AS held, instance_id AS entity_id FROM entities WHERE locked_by = ?"
            " UNION ALL SELECT DISTINCT 0, entity_id FROM entity_queue WHERE sender = ? AND kind = 'lock'",
            (instance_id, instance_id),
        )
        held = sorted(r["entity_id"] for r in rows if r["held"])
        return held, sorted(r["entity_id"] for r in rows if not r["held"])

    def orphaned_lock_holders(self) -> list[str]:
        rows = self.db.query(
            "SELECT DISTINCT e.locked_by AS holder FROM entities e LEFT JOIN instances i"
            " ON i.instance_id = e.locked_by WHERE e.locked_by IS NOT NULL"
            f" AND (i.instance_id IS NULL OR i.status IN {TERMINAL_SQL}) ORDER BY e.locked_by"
        )
        return [r["holder"] for r in rows]

    def enqueue_entity_message(
        self,
        entity_id: str,
        kind: str,
        sender: str,
        event: pb.HistoryEvent,
        visible_at: datetime,
        trace_context: pb.TraceContext | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO entity_queue (entity_id, kind, sender, event, visible_at, trace_context)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (entity_id, kind, sender, event.SerializeToString(), to_us(visible_at),
             trace_context.SerializeToString() if trace_context is not None else None),
        )
        self.notice.add_work("entity")

    def entity_queue(self, entity_id: str, now: datetime) -> list[EntityMessageRow]:
        rows = self.db.query(
            "SELECT seq, kind, sender, event, trace_context FROM entity_queue"
            " WHERE entity_id = ? AND visible_at <= ? ORDER BY seq",
            (entity_id, to_us(now)),
        )
        return [_message(r) for r in rows]

    def entity_messages(self, seqs: Collection[int]) -> list[EntityMessageRow]:
        ids = sorted(set(seqs))
        if not ids:
            return []
        rows = self.db.query(
            f"SELECT seq, kind, sender, event, trace_context FROM entity_queue WHERE seq IN ({marks(ids)})"
            " ORDER BY seq",
            ids,
        )
        return [_message(r) for r in rows]

    def delete_entity_messages(self, seqs: Collection[int]) -> None:
        ids = sorted(set(seqs))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self.db.execute(f"DELETE FROM entity_queue WHERE seq IN ({marks(chunk)})", chunk)

    def lock_requests_from(self, sender: str) -> list[str]:
        rows = self.db.query(
            "SELECT DISTINCT entity_id FROM entity_queue WHERE sender = ? AND kind = 'lock' ORDER BY entity_id",
            (sender,),
        )
        return [r["entity_id"] for r in rows]

    def delete_lock_requests_from(self, sender: str) -> None:
        self.db.execute("DELETE FROM entity_queue WHERE sender = ? AND kind = 'lock'", (sender,))

    def delete_entity_if_empty(self, entity_id: str) -> bool:
        # The row lock is taken first, in its own statement, so that the emptiness check below
        # sees every message committed by a writer that held the lock before us.
        if not self.db.query(f"SELECT instance_id FROM entities WHERE instance_id = ?{self._lock(True)}", (entity_id,)):
            return False
        n = self.db.execute(
            "DELETE FROM entities WHERE instance_id = ? AND state IS NULL AND locked_by IS NULL AND lease_token IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM entity_queue q WHERE q.entity_id = entities.instance_id)",
            (entity_id,),
        )
        return n > 0

    def delete_empty_entities(self) -> int:
        rows = self.db.query(
            "SELECT instance_id FROM entities WHERE state IS NULL AND locked_by IS NULL AND lease_token IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM entity_queue q WHERE q.entity_id = entities.instance_id)"
            " ORDER BY instance_id"
        )
        return sum(1 for r in rows if self.delete_entity_if_empty(r["instance_id"]))

    def claim_entity(
        self, now: datetime, lease_until: datetime, token: str, names: Collection[str] | None,
        exclude: Collection[str],
    ) -> EntityRecord | None:
        now_us = to_us(now)
        extra = ""
        extra_params: list[Any] = []
        if names is not None:
            wanted = sorted(set(names))
            if not wanted:
                return None
            extra = f" AND e.name IN ({marks(wanted)})"
            extra_params = list(wanted)
        if exclude:
            excluded = sorted(set(exclude))
            extra += f" AND e.instance_id NOT IN ({marks(excluded)})"
            extra_params.extend(excluded)
        # An operation the lock lets run, or a lock message to settle (a safety net: they are
        # settled when they arrive).
        runnable = (
            "q.entity_id = e.instance_id AND q.visible_at <= ?"
            f" AND ((q.kind IN {_OPS_SQL} AND (e.locked_by IS NULL OR q.sender = e.locked_by))"
            " OR q.kind = 'unlock' OR (q.kind = 'lock' AND e.locked_by IS NULL))"
        )
        rows = self.db.query(
            f"""UPDATE entities SET lease_token = ?, lease_expires_at = ?
            WHERE instance_id = (
                SELECT e.instance_id FROM entities e
                WHERE (e.lease_token IS NULL OR e.lease_expires_at <= ?) AND e.available_at <= ? {extra}
                  AND EXISTS (SELECT 1 FROM entity_queue q WHERE {runnable})
                ORDER BY (SELECT MIN(q.seq) FROM entity_queue q WHERE {runnable})
                LIMIT 1 {self.flavor.skip_locked}
            ) AND (lease_token IS NULL OR lease_expires_at <= ?)
            RETURNING *""",
            [token, to_us(lease_until), now_us, now_us, *extra_params, now_us, now_us, now_us],
        )
        return row_to_entity(rows[0]) if rows else None

    def record_entity_batch(self, entity_id: str, seqs: list[int]) -> None:
        self.db.execute("UPDATE entities SET lease_batch = ? WHERE instance_id = ?", (json.dumps(seqs), entity_id))

    def entity_by_lease(self, token: str) -> EntityRecord | None:
        rows = self.db.query(f"SELECT * FROM entities WHERE lease_token = ?{self._lock(True)}", (token,))
        return row_to_entity(rows[0]) if rows else None

    def finish_entity_batch(self, entity_id: str, state: str | None, now: datetime) -> None:
        self.db.execute(
            "UPDATE entities SET state = ?, last_modified_at = ?, lease_token = NULL, lease_expires_at = NULL,"
            " lease_batch = NULL, available_at = 0, abandon_count = 0 WHERE instance_id = ?",
            (state, to_us(now), entity_id),
        )
        self.notice.add_work("entity")

    def release_entity(self, entity_id: str, available_at: datetime | None, abandon_count: int | None) -> None:
        self.db.execute(
            "UPDATE entities SET lease_token = NULL, lease_expires_at = NULL, lease_batch = NULL,"
            " available_at = COALESCE(?, available_at), abandon_count = COALESCE(?, abandon_count)"
            " WHERE instance_id = ?",
            (None if available_at is None else to_us(available_at), abandon_count, entity_id),
        )
        self.notice.add_work("entity")
