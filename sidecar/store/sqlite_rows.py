"""Schema of the SQLite store and conversions between rows and model objects.

Times are stored as integer microseconds since the Unix epoch (UTC); events as
serialized ``HistoryEvent`` blobs.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import TERMINAL_STATUSES, ActivityTaskSpec, InstanceSnapshot, ParentRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    status INTEGER NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    failure BLOB,
    created_at INTEGER NOT NULL,
    last_updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    scheduled_start_at INTEGER,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT,
    parent_version TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    lease_token TEXT UNIQUE,
    lease_expires_at INTEGER,
    lease_inbox TEXT,
    lease_new_events BLOB,
    available_at INTEGER NOT NULL DEFAULT 0,
    abandon_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_parent ON instances(parent_instance_id);
CREATE INDEX IF NOT EXISTS instances_completed ON instances(completed_at, instance_id);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created_at);

CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ord INTEGER,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    kind TEXT NOT NULL,
    event BLOB NOT NULL,
    visible_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, ord);
CREATE INDEX IF NOT EXISTS inbox_visible ON inbox(visible_at);
CREATE TRIGGER IF NOT EXISTS inbox_default_ord AFTER INSERT ON inbox WHEN NEW.ord IS NULL
BEGIN
    UPDATE inbox SET ord = NEW.seq WHERE seq = NEW.seq;
END;

CREATE TABLE IF NOT EXISTS activity_tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    input TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    visible_at INTEGER NOT NULL,
    lease_token TEXT UNIQUE,
    lease_expires_at INTEGER,
    abandon_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS activity_visible ON activity_tasks(visible_at);
CREATE INDEX IF NOT EXISTS activity_instance ON activity_tasks(instance_id);

CREATE TABLE IF NOT EXISTS entities (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT,
    locked_by TEXT,
    lock_section TEXT,
    created_at INTEGER NOT NULL,
    last_modified_at INTEGER NOT NULL,
    lease_token TEXT UNIQUE,
    lease_expires_at INTEGER,
    lease_batch TEXT,
    available_at INTEGER NOT NULL DEFAULT 0,
    abandon_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entities_locked_by ON entities(locked_by);

CREATE TABLE IF NOT EXISTS entity_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    event BLOB NOT NULL,
    visible_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entity_queue_entity ON entity_queue(entity_id, seq);
CREATE INDEX IF NOT EXISTS entity_queue_visible ON entity_queue(visible_at);
CREATE INDEX IF NOT EXISTS entity_queue_sender ON entity_queue(sender, kind);
"""

TERMINAL_SQL = "(" + ",".join(str(s) for s in sorted(TERMINAL_STATUSES)) + ")"

INSTANCE_COLUMNS = (
    "instance_id, execution_id, name, version, status, input, output, custom_status, failure, "
    "created_at, last_updated_at, completed_at, scheduled_start_at, parent_instance_id, "
    "parent_execution_id, parent_task_id, parent_name, parent_version, tags"
)


def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch."""
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)


def opt_us(when: datetime | None) -> int | None:
    return None if when is None else to_us(when)


def opt_dt(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def event_kind(event: pb.HistoryEvent) -> str:
    """The name of the event's oneof field (``executionStarted``, ``timerFired``...)."""
    return event.WhichOneof("eventType") or ""


def instance_values(inst: InstanceSnapshot) -> tuple[object, ...]:
    """The values of INSTANCE_COLUMNS for an instance."""
    parent = inst.parent
    return (
        inst.instance_id,
        inst.execution_id,
        inst.name,
        inst.version,
        inst.status,
        inst.input,
        inst.output,
        inst.custom_status,
        inst.failure.SerializeToString() if inst.failure is not None else None,
        to_us(inst.created_at),
        to_us(inst.last_updated_at),
        opt_us(inst.completed_at),
        opt_us(inst.scheduled_start_at),
        parent.instance_id if parent else None,
        parent.execution_id if parent else None,
        parent.task_scheduled_id if parent else None,
        parent.name if parent else None,
        parent.version if parent else None,
        json.dumps(inst.tags or {}),
    )


def row_to_instance(row: sqlite3.Row) -> InstanceSnapshot:
    """An InstanceSnapshot from a row that has (at least) INSTANCE_COLUMNS."""
    parent = None
    if row["parent_instance_id"] is not None:
        parent = ParentRef(
            instance_id=row["parent_instance_id"],
            execution_id=row["parent_execution_id"],
            task_scheduled_id=row["parent_task_id"] if row["parent_task_id"] is not None else -1,
            name=row["parent_name"],
            version=row["parent_version"],
        )
    failure = None
    if row["failure"] is not None:
        failure = pb.TaskFailureDetails.FromString(row["failure"])
    return InstanceSnapshot(
        instance_id=row["instance_id"],
        execution_id=row["execution_id"],
        name=row["name"],
        status=row["status"],
        created_at=from_us(row["created_at"]),
        last_updated_at=from_us(row["last_updated_at"]),
        version=row["version"],
        input=row["input"],
        output=row["output"],
        custom_status=row["custom_status"],
        failure=failure,
        completed_at=opt_dt(row["completed_at"]),
        scheduled_start_at=opt_dt(row["scheduled_start_at"]),
        parent=parent,
        tags=json.loads(row["tags"] or "{}"),
    )


def row_to_task(row: sqlite3.Row) -> ActivityTaskSpec:
    """An ActivityTaskSpec from an activity_tasks row."""
    return ActivityTaskSpec(
        instance_id=row["instance_id"],
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        name=row["name"],
        version=row["version"],
        input=row["input"],
        tags=json.loads(row["tags"] or "{}"),
    )


def pack_events(events: list[pb.HistoryEvent]) -> bytes:
    """Serialize a list of events as one blob."""
    return pb.HistoryChunk(events=events).SerializeToString()


def unpack_events(blob: bytes | None) -> list[pb.HistoryEvent]:
    """The events of a blob written by pack_events."""
    if not blob:
        return []
    return list(pb.HistoryChunk.FromString(blob).events)
