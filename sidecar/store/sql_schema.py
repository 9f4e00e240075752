"""Schemas of the SQL stores, their version, and the migrations between versions.

The version of a database is the one row of ``schema_version``. A database without that
table but with an ``instances`` table was written before versions existed (version 0, SQLite
only). Opening a store brings an older database up to :data:`SCHEMA_VERSION` in one
transaction; a newer one is refused with both versions named.

Tables: ``instances`` (one row per instance, with its turn lease), ``history``, ``inbox``
(events waiting for the next turn; timers are rows that become visible at their fire time;
``ord`` puts rows before others, else ``seq`` orders them), ``activity_tasks`` (with
leases), ``entities`` and ``entity_queue`` (state, lock holder, messages with their parent trace
contexts, batch leases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.store.base import SchemaVersionError

SCHEMA_VERSION = 6

_TABLES = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    status INTEGER NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    failure {blob},
    created_at BIGINT NOT NULL,
    last_updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    scheduled_start_at BIGINT,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT,
    parent_version TEXT,
    tags TEXT NOT NULL DEFAULT '{{}}',
    lease_token TEXT UNIQUE,
    lease_expires_at BIGINT,
    lease_inbox TEXT,
    lease_visible TEXT,
    lease_new_events {blob},
    available_at BIGINT NOT NULL DEFAULT 0,
    abandon_count INTEGER NOT NULL DEFAULT 0,
    history_key TEXT,
    trace_context {blob}
);
CREATE INDEX IF NOT EXISTS instances_parent ON instances(parent_instance_id);
CREATE INDEX IF NOT EXISTS instances_completed ON instances(completed_at, instance_id);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created_at);
CREATE INDEX IF NOT EXISTS instances_delayed ON instances(available_at) WHERE available_at > 0;
CREATE INDEX IF NOT EXISTS instances_leased ON instances(lease_expires_at) WHERE lease_token IS NOT NULL;

CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event {blob} NOT NULL,
    PRIMARY KEY (instance_id, seq)
){without_rowid};

CREATE TABLE IF NOT EXISTS inbox (
    seq {serial},
    ord BIGINT,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    kind TEXT NOT NULL,
    event {blob} NOT NULL,
    visible_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, ord);
CREATE INDEX IF NOT EXISTS inbox_visible ON inbox(visible_at);
CREATE INDEX IF NOT EXISTS inbox_visible_starts ON inbox(visible_at, seq) WHERE kind = 'executionStarted';
CREATE INDEX IF NOT EXISTS inbox_visible_others ON inbox(visible_at, seq) WHERE kind != 'executionStarted';

CREATE TABLE IF NOT EXISTS activity_tasks (
    id {serial},
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    input TEXT,
    tags TEXT NOT NULL DEFAULT '{{}}',
    visible_at BIGINT NOT NULL,
    lease_token TEXT UNIQUE,
    lease_expires_at BIGINT,
    abandon_count INTEGER NOT NULL DEFAULT 0,
    trace_context {blob}
);
CREATE INDEX IF NOT EXISTS activity_visible ON activity_tasks(visible_at);
CREATE INDEX IF NOT EXISTS activity_instance ON activity_tasks(instance_id);
CREATE INDEX IF NOT EXISTS activity_leased ON activity_tasks(lease_expires_at) WHERE lease_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS activity_ready ON activity_tasks(visible_at, id) WHERE lease_token IS NULL;

CREATE TABLE IF NOT EXISTS entities (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT,
    locked_by TEXT,
    lock_section TEXT,
    created_at BIGINT NOT NULL,
    last_modified_at BIGINT NOT NULL,
    lease_token TEXT UNIQUE,
    lease_expires_at BIGINT,
    lease_batch TEXT,
    available_at BIGINT NOT NULL DEFAULT 0,
    abandon_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entities_locked_by ON entities(locked_by);
CREATE INDEX IF NOT EXISTS entities_delayed ON entities(available_at) WHERE available_at > 0;
CREATE INDEX IF NOT EXISTS entities_leased ON entities(lease_expires_at) WHERE lease_token IS NOT NULL;

CREATE TABLE IF NOT EXISTS entity_queue (
    seq {serial},
    entity_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    event {blob} NOT NULL,
    visible_at BIGINT NOT NULL,
    trace_context {blob}
);
CREATE INDEX IF NOT EXISTS entity_queue_entity ON entity_queue(entity_id, seq);
CREATE INDEX IF NOT EXISTS entity_queue_visible ON entity_queue(visible_at);
CREATE INDEX IF NOT EXISTS entity_queue_sender ON entity_queue(sender, kind);

CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""

# Every table holding state, in an order that deletes cleanly.
STATE_TABLES = ("instances", "history", "inbox", "activity_tasks", "entities", "entity_queue")


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases in DDL."""

    name: str
    blob: str
    serial: str
    without_rowid: str

    def create_tables(self) -> str:
        """The DDL of the current schema (idempotent)."""
        return _TABLES.format(blob=self.blob, serial=self.serial, without_rowid=self.without_rowid)


SQLITE = Dialect("sqlite", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT", without_rowid=" WITHOUT ROWID")
POSTGRES = Dialect("postgresql", blob="BYTEA", serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                   without_rowid="")

# Statements that bring a database from version N-1 to N, per dialect.
MIGRATIONS: dict[int, dict[str, list[str]]] = {
    # 1: the version table; inbox order no longer set by a trigger (rows without ``ord`` sort by ``seq``).
    1: {
        "sqlite": [
            "DROP TRIGGER IF EXISTS inbox_default_ord",
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        ],
        "postgresql": [],
    },
    # 2: partial indexes of visible inbox rows, new instances apart from the rest (fair leasing);
    # instances.history_key, a new random value whenever a history starts over.
    2: {
        "sqlite": ["ALTER TABLE instances ADD COLUMN history_key TEXT"],
        "postgresql": ["ALTER TABLE instances ADD COLUMN IF NOT EXISTS history_key TEXT"],
    },
    # 3: trace contexts (OpenTelemetry): the orchestration's kept between turns, an activity's parent.
    3: {
        "sqlite": [
            "ALTER TABLE instances ADD COLUMN trace_context BLOB",
            "ALTER TABLE activity_tasks ADD COLUMN trace_context BLOB",
        ],
        "postgresql": [
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS trace_context BYTEA",
            "ALTER TABLE activity_tasks ADD COLUMN IF NOT EXISTS trace_context BYTEA",
        ],
    },
    # 4: an entity message's parent trace context (a client's or an entity's signal), handed to the
    # worker as OperationRequest.traceContext.
    4: {
        "sqlite": ["ALTER TABLE entity_queue ADD COLUMN trace_context BLOB"],
        "postgresql": ["ALTER TABLE entity_queue ADD COLUMN IF NOT EXISTS trace_context BYTEA"],
    },
    # 5: partial indexes of leased and delayed instances, activity tasks and entities, so that the
    # next due time is found without reading every row, and of activity tasks not leased, so that
    # a claim does not read the tasks out on leases (the tables' own DDL creates them).
    5: {"sqlite": [], "postgresql": []},
    # 6: instances.lease_visible, when each inbox row a turn holds became visible: the rows are
    # pushed out of sight until the lease ends, and a released turn puts them back.
    6: {
        "sqlite": ["ALTER TABLE instances ADD COLUMN lease_visible TEXT"],
        "postgresql": ["ALTER TABLE instances ADD COLUMN IF NOT EXISTS lease_visible TEXT"],
    },
}


def newer_schema_message(found: int, where: str) -> str:
    """The error of a database written by a newer sidecar."""
    return (
        f"the database {where} has schema version {found}, newer than this sidecar's schema version "
        f"{SCHEMA_VERSION}: upgrade the sidecar (an older one must not write to it)"
    )


class _Executes(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...


def bring_up_to_date(db: _Executes, dialect: Dialect, found: int | None, where: str) -> None:
    """Inside the caller's transaction: refuse a newer schema, run the migrations after ``found``
    (None: an empty database), create what is missing and record SCHEMA_VERSION. A database at
    SCHEMA_VERSION is left alone."""
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaVersionError(newer_schema_message(found, where))
    if found == SCHEMA_VERSION:
        return  # no DDL: even "IF NOT EXISTS" locks tables that running sidecars are writing
    if found is not None:
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version][dialect.name]:
                db.execute(statement)
    for statement in dialect.create_tables().split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("DELETE FROM schema_version")
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
