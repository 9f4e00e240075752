"""A SQLite file as the release before schema versions left it (version 0), for migration tests."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events

# The SQLite schema before versions existed (version 0), from the release before the version
# table (sidecar/store/sqlite_rows.py at 542f852): kept verbatim as a fixture.
SCHEMA_V0 = """
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


def to_us(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))


def write_v0_database(path: Path, instance_id: str) -> None:
    """A version-0 file as the previous release left it: one PENDING instance, its start event and a
    raised event waiting in the inbox (``ord`` filled in by the old trigger), and a stale lease."""
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    started = engine_events.new_execution_started(
        name="orch", instance_id=instance_id, execution_id="e1", now=now, input='"old"'
    )
    raised = engine_events.new_event(now)
    raised.eventRaised.name = "go"
    raised.eventRaised.input.value = '"event"'
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_V0)
        db.execute(
            "INSERT INTO instances (instance_id, execution_id, name, status, input, created_at, last_updated_at,"
            " lease_token, lease_expires_at) VALUES (?, 'e1', 'orch', ?, '\"old\"', ?, ?, 'stale-token', ?)",
            (
                instance_id,
                pb.ORCHESTRATION_STATUS_PENDING,
                to_us(now),
                to_us(now),
                to_us(now + timedelta(hours=1)),
            ),
        )
        for event in (started, raised):
            db.execute(
                "INSERT INTO inbox (instance_id, kind, event, visible_at) VALUES (?, ?, ?, ?)",
                (instance_id, event.WhichOneof("eventType"), event.SerializeToString(), to_us(now)),
            )
        assert [r[0] for r in db.execute("SELECT ord FROM inbox ORDER BY seq")] == [1, 2]  # the old trigger
    finally:
        db.close()
