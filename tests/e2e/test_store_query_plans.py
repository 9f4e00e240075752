"""The dispatcher's store questions read indexes, not whole tables (SQLite's query plans).

Their cost must not grow with what is stored: finished instances (the next due time), the tasks
of a large fan-out already out on leases (the next batch of activity tasks), or the turns out on
leases (the next turn).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.model import ActivityTaskSpec, InstanceSnapshot
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


def claim_steps(path: Path, turns_out: int) -> int:
    """SQLite VM steps of a lease that finds nothing, with ``turns_out`` turns out on leases."""
    store = SqliteStore(path)
    hub = TaskHub(store)
    try:
        for n in range(turns_out):
            iid = f"i{n}"
            instance = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e", name="o",
                                        status=pb.ORCHESTRATION_STATUS_PENDING, created_at=T0, last_updated_at=T0)
            start = engine_events.new_execution_started(name="o", instance_id=iid, execution_id=f"{iid}-e", now=T0)
            hub.create_instance(instance, start, T0, T0)
        assert len(hub.lease_orchestrations(T0, timedelta(minutes=5), limit=turns_out)) == turns_out
        assert store._db is not None
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        store._db.set_progress_handler(count, 10)
        assert hub.lease_orchestrations(T0 + timedelta(seconds=1), timedelta(minutes=5), limit=1) == []
        store._db.set_progress_handler(None, 0)
        return steps[0]
    finally:
        store.close()


def test_a_turn_claim_does_not_pass_over_the_turns_out_on_leases(tmp_path: Path) -> None:
    # The inbox rows of a leased turn are out of sight until its lease ends; before, every claim
    # walked the visible rows of all the turns out (a worker holds up to 100 per core).
    few, many = claim_steps(tmp_path / "few.db", 1), claim_steps(tmp_path / "many.db", 300)
    assert many < 2 * few + 50, (few, many)


def test_a_turns_commit_reads_no_history_while_its_lease_holds(tmp_path: Path) -> None:
    # The view the turn was built from is the stored history while its token holds: the commit
    # appends after it without reading the history again (nor its last sequence number).
    store = SqliteStore(tmp_path / "turns.db")
    hub = TaskHub(store)
    statements: list[str] = []
    try:
        instance = InstanceSnapshot(instance_id="a", execution_id="a-e", name="o",
                                    status=pb.ORCHESTRATION_STATUS_PENDING, created_at=T0, last_updated_at=T0)
        start = engine_events.new_execution_started(name="o", instance_id="a", execution_id="a-e", now=T0)
        hub.create_instance(instance, start, T0, T0)
        for step in range(3):
            item = hub.lease_orchestration(T0, timedelta(minutes=5))
            assert item is not None
            assert store._db is not None
            store._db.set_trace_callback(statements.append)
            action = pb.OrchestratorAction(id=step + 1, createTimer=pb.CreateTimerAction(
                fireAt=engine_events.to_timestamp(T0)))
            hub.complete_orchestration(item.token, pb.OrchestratorResponse(
                instanceId="a", completionToken=item.token, actions=[action]), T0)
            store._db.set_trace_callback(None)
    finally:
        store.close()
    assert statements and not [s for s in statements if "FROM history" in s], statements
