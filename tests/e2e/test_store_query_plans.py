"""The dispatcher's store questions read indexes, not whole tables (SQLite's query plans).

Their cost must not grow with what is stored: finished instances (the next due time), or the
tasks of a large fan-out already out on leases (the next batch of activity tasks).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sidecar.model import ActivityTaskSpec
from sidecar.store import SqliteStore
from sidecar.store.sql_store import NEXT_DUE_SQL

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def plan(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[str]:
    """The steps of SQLite's plan for ``sql``, from a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        db.close()


def table_reads(steps: list[str]) -> list[str]:
    return [step for step in steps if step.startswith(("SEARCH", "SCAN")) and "due_times" not in step]


def test_the_next_due_time_reads_indexes_only(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    SqliteStore(path).close()
    steps = plan(path, NEXT_DUE_SQL, (0,) * NEXT_DUE_SQL.count("?"))
    reads = table_reads(steps)
    assert len(reads) == 8, steps
    assert all(" USING " in step and "INDEX" in step for step in reads), steps


def test_an_activity_claim_reads_only_ready_and_expired_tasks(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    statements: list[str] = []
    try:
        store.run(lambda tx: tx.add_activity_tasks(
            [ActivityTaskSpec("i", "e", n, "act", None, None) for n in range(5)], T0
        ))
        assert store._db is not None
        store._db.set_trace_callback(statements.append)
        claimed = store.run(lambda tx: tx.claim_activities(T0, T0 + timedelta(minutes=1), "t-", 3, ["act"], None))
        store._db.set_trace_callback(None)
    finally:
        store.close()
    assert len(claimed) == 3
    claims = [s for s in statements if s.lstrip().startswith("UPDATE activity_tasks")]
    assert len(claims) == 2, statements  # expired leases, then tasks never leased
    for claim, index in zip(claims, ("activity_leased", "activity_ready"), strict=True):
        reads = table_reads(plan(path, claim))
        assert any(f"INDEX {index} " in step for step in reads), reads
        # Apart from the index, only single rows by their id: no pass over the leased tasks.
        assert all(f"INDEX {index} " in step or "PRIMARY KEY" in step for step in reads), reads
