"""Writes shared by the SQLite store's transactions: apply a change set, create, terminate, purge.

Every function here runs inside a transaction opened by the caller on ``db`` and
records what it touched in ``changes``; none commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.entities import message_kind
from sidecar.model import (
    TERMINAL_STATUSES,
    ActivityTaskSpec,
    InstanceSnapshot,
    OutboundMessage,
    TurnResult,
)
from sidecar.store import sqlite_entities as entity_store
from sidecar.store.base import ChangeSet
from sidecar.store.sqlite_rows import (
    INSTANCE_COLUMNS,
    TERMINAL_SQL,
    event_kind,
    instance_values,
    row_to_instance,
    to_us,
)

_SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED
_RUNNING = pb.ORCHESTRATION_STATUS_RUNNING


def load_instance(db: sqlite3.Connection, instance_id: str) -> InstanceSnapshot | None:
    row = db.execute(f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
    return None if row is None else row_to_instance(row)


def load_history(db: sqlite3.Connection, instance_id: str) -> list[pb.HistoryEvent]:
    rows = db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
    return [pb.HistoryEvent.FromString(r[0]) for r in rows]


def insert_inbox(
    db: sqlite3.Connection,
    instance_id: str,
    event: pb.HistoryEvent,
    visible_at: datetime,
    execution_id: str | None = None,
    ord_: int | None = None,
) -> None:
    db.execute(
        "INSERT INTO inbox (ord, instance_id, execution_id, kind, event, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
        (ord_, instance_id, execution_id, event_kind(event), event.SerializeToString(), to_us(visible_at)),
    )


def insert_instance(
    db: sqlite3.Connection, inst: InstanceSnapshot, start_event: pb.HistoryEvent, visible_at: datetime
) -> None:
    """Insert a fresh instance row and its executionStarted event (caller removed any old one)."""
    placeholders = ", ".join("?" for _ in INSTANCE_COLUMNS.split(","))
    db.execute(f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ({placeholders})", instance_values(inst))
    insert_inbox(db, inst.instance_id, start_event, visible_at)


def delete_instance_state(db: sqlite3.Connection, instance_id: str) -> None:
    """Remove every row of an instance: the instance, its history, inbox and activity tasks."""
    for table in ("instances", "history", "inbox", "activity_tasks"):
        db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))


def _insert_tasks(db: sqlite3.Connection, tasks: Iterable[ActivityTaskSpec], now: datetime) -> bool:
    any_task = False
    for task in tasks:
        db.execute(
            "INSERT INTO activity_tasks (instance_id, execution_id, task_id, name, version, input, tags, visible_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.instance_id,
                task.execution_id,
                task.task_id,
                task.name,
                task.version,
                task.input,
                json.dumps(task.tags or {}),
                to_us(now),
            ),
        )
        any_task = True
    return any_task


def deliver_message(db: sqlite3.Connection, msg: OutboundMessage, now: datetime, changes: ChangeSet) -> bool:
    """Put a message in its target's inbox unless the target is missing, finished or moved on."""
    row = db.execute(
        "SELECT status, execution_id FROM instances WHERE instance_id = ?", (msg.target_instance_id,)
    ).fetchone()
    if row is None or row["status"] in TERMINAL_STATUSES:
        return False
    if msg.target_execution_id is not None and row["execution_id"] != msg.target_execution_id:
        return False
    insert_inbox(db, msg.target_instance_id, msg.event, msg.visible_at or now, msg.target_execution_id)
    changes.work_available = True
    return True


def _merged_status(result_status: int, row_status: int) -> int:
    # The row is authoritative for suspension: Suspend/Resume RPCs change it while a turn runs.
    if result_status in TERMINAL_STATUSES:
        return result_status
    if row_status == _SUSPENDED:
        return _SUSPENDED
    if result_status == _SUSPENDED:
        return _RUNNING
    return result_status


def apply_result(
    db: sqlite3.Connection,
    result: TurnResult,
    now: datetime,
    changes: ChangeSet,
    row_status: int,
    consumed_inbox: Iterable[int] = (),
) -> None:
    """Commit one change set (a turn or a termination): history, row, inbox, tasks, messages."""
    inst = result.instance
    iid = inst.instance_id
    old_exec = db.execute("SELECT execution_id FROM instances WHERE instance_id = ?", (iid,)).fetchone()[0]
    status = _merged_status(inst.status, row_status)
    terminal = status in TERMINAL_STATUSES

    if result.reset_history is not None:
        db.execute("DELETE FROM history WHERE instance_id = ?", (iid,))
        events, start = result.reset_history, 0
    else:
        events = result.history_append
        start = db.execute(
            "SELECT COALESCE(MAX(seq), -1) + 1 FROM history WHERE instance_id = ?", (iid,)
        ).fetchone()[0]
    db.executemany(
        "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
        [(iid, start + i, e.SerializeToString()) for i, e in enumerate(events)],
    )

    values = list(instance_values(inst))
    values[4] = status
    values[10] = to_us(now)  # last_updated_at
    assignments = ", ".join(f"{c.strip()} = ?" for c in INSTANCE_COLUMNS.split(",")[1:])
    db.execute(
        f"UPDATE instances SET {assignments}, lease_token = NULL, lease_expires_at = NULL,"
        " lease_inbox = NULL, lease_new_events = NULL, available_at = 0, abandon_count = 0 WHERE instance_id = ?",
        (*values[1:], iid),
    )
    db.executemany("DELETE FROM inbox WHERE seq = ?", [(s,) for s in consumed_inbox])

    if terminal:
        db.execute("DELETE FROM inbox WHERE instance_id = ?", (iid,))
        db.execute("DELETE FROM activity_tasks WHERE instance_id = ?", (iid,))
    else:
        if inst.execution_id != old_exec:
            db.execute(
                "DELETE FROM inbox WHERE instance_id = ? AND execution_id IS NOT NULL AND execution_id != ?",
                (iid, inst.execution_id),
            )
            db.execute("DELETE FROM activity_tasks WHERE instance_id = ? AND execution_id != ?", (iid, inst.execution_id))
        _prepend_inbox(db, iid, result.inbox_prepend, now)
        if _insert_tasks(db, result.activity_tasks, now):
            changes.work_available = True
        if result.inbox_prepend:
            changes.work_available = True

    for spec in result.new_instances:
        existing = load_instance(db, spec.instance_id)
        if existing is not None and not existing.is_terminal:
            continue
        if existing is not None:
            delete_instance_state(db, spec.instance_id)
        child = InstanceSnapshot(
            instance_id=spec.instance_id,
            execution_id=spec.execution_id,
            name=spec.name,
            status=pb.ORCHESTRATION_STATUS_PENDING,
            created_at=now,
            last_updated_at=now,
            version=spec.version,
            input=spec.input,
            parent=spec.parent,
            tags=dict(spec.tags),
        )
        insert_instance(db, child, spec.start_event, now)
        changes.instances.add(spec.instance_id)
        changes.work_available = True

    for msg in result.messages:
        if message_kind(msg.event) is not None:  # a signal, call, lock request or unlock for an entity
            entity_store.deliver(db, msg.target_instance_id, iid, msg.event, msg.visible_at, now, changes)
        else:
            deliver_message(db, msg, now, changes)

    for term in result.terminations:
        terminate(db, term.instance_id, term.output, term.recurse, now, changes)

    if terminal:
        # Entity locks held by a finished orchestration are released in its final commit.
        entity_store.release_holder(db, iid, now, changes)

    changes.instances.add(iid)


def _prepend_inbox(db: sqlite3.Connection, iid: str, events: list[pb.HistoryEvent], now: datetime) -> None:
    if not events:
        return
    first = db.execute("SELECT MIN(ord) FROM inbox WHERE instance_id = ?", (iid,)).fetchone()[0]
    if first is None:
        for event in events:
            insert_inbox(db, iid, event, now)
        return
    base = first - len(events)
    for i, event in enumerate(events):
        insert_inbox(db, iid, event, now, ord_=base + i)


def terminate(
    db: sqlite3.Connection,
    instance_id: str,
    output: str | None,
    recurse: bool,
    now: datetime,
    changes: ChangeSet,
    _seen: set[str] | None = None,
) -> bool:
    """Terminate a non-terminal instance through the engine; recurse into live children. False if skipped."""
    seen = _seen if _seen is not None else set()
    if instance_id in seen:
        return False
    seen.add(instance_id)
    inst = load_instance(db, instance_id)
    if inst is None or inst.is_terminal:
        return False
    result = engine.terminate(inst, output, now)
    apply_result(db, result, now, changes, row_status=inst.status)
    if recurse:
        children = [
            r[0]
            for r in db.execute(
                f"SELECT instance_id FROM instances WHERE parent_instance_id = ? AND status NOT IN {TERMINAL_SQL}",
                (instance_id,),
            )
        ]
        for child in children:
            terminate(db, child, output, True, now, changes, seen)
    return True


def purge(db: sqlite3.Connection, instance_id: str, recursive: bool, changes: ChangeSet) -> int:
    """Delete a terminal instance (and, when recursive, its terminal descendants). Returns the count."""
    row = db.execute("SELECT status FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
    if row is None or row["status"] not in TERMINAL_STATUSES:
        return 0
    count = 0
    if recursive:
        children = [r[0] for r in db.execute("SELECT instance_id FROM instances WHERE parent_instance_id = ?", (instance_id,))]
        for child in children:
            if child != instance_id:
                count += purge(db, child, True, changes)
    delete_instance_state(db, instance_id)
    changes.instances.add(instance_id)
    return count + 1
