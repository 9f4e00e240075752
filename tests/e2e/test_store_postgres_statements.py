"""How the PostgreSQL store sends statements: one cursor per transaction, INSERTs of many rows as
multi-row INSERTs (``sidecar.store.postgres._Connection``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.hub import TaskHub
from sidecar.store.postgres import _INSERT_CHUNK, PostgresStore
from tests.contract.test_store_instances import LEASE, T0, action, start


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(postgres_url)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("count", [0, 1, _INSERT_CHUNK, 2 * _INSERT_CHUNK + 7])
def test_an_insert_of_many_rows_stores_every_row_in_order(store: PostgresStore, count: int) -> None:
    with store._transaction() as db:
        db.execute("CREATE TEMP TABLE numbers (id SERIAL PRIMARY KEY, n INTEGER, s TEXT) ON COMMIT DROP")
        db.executemany("INSERT INTO numbers (n, s) VALUES (?, ?)", [(n, f"'{n}'?") for n in range(count)])
        rows = db.query("SELECT id, n, s FROM numbers ORDER BY id")
    assert [(r["n"], r["s"]) for r in rows] == [(n, f"'{n}'?") for n in range(count)]


def test_other_statements_of_many_rows_run_once_per_row(store: PostgresStore) -> None:
    with store._transaction() as db:
        db.execute("CREATE TEMP TABLE numbers (n INTEGER PRIMARY KEY, doubled INTEGER) ON COMMIT DROP")
        db.executemany("INSERT INTO numbers (n) VALUES (?) ON CONFLICT DO NOTHING", [(1,), (2,), (2,)])
        db.executemany("UPDATE numbers SET doubled = ? WHERE n = ?", [(2, 1), (4, 2)])
        rows = db.query("SELECT n, doubled FROM numbers ORDER BY n")
    assert [(r["n"], r["doubled"]) for r in rows] == [(1, 2), (2, 4)]


def test_a_query_of_a_statement_without_rows_returns_none_and_counts_still_count(store: PostgresStore) -> None:
    with store._transaction() as db:
        db.execute("CREATE TEMP TABLE numbers (n INTEGER) ON COMMIT DROP")
        assert db.query("INSERT INTO numbers (n) VALUES (?)", (1,)) == []
        assert db.execute("UPDATE numbers SET n = n + 1") == 1
        assert db.query("SELECT n FROM numbers") == [{"n": 2}]


def test_rows_of_another_width_are_refused(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="needs 2 values"), store._transaction() as db:
        db.execute("CREATE TEMP TABLE numbers (n INTEGER, s TEXT) ON COMMIT DROP")
        db.executemany("INSERT INTO numbers (n, s) VALUES (?, ?)", [(1, "a"), (2, "b", "c"), (3,)])


def test_a_turns_history_and_tasks_go_as_multi_row_inserts(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's own INSERTs of many rows match the rewrite (psycopg's executemany is not used for them)."""
    store.reset()
    hub = TaskHub(store)
    start(hub, "a")
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None
    many: list[str] = []
    executemany = psycopg.Cursor.executemany

    def recording(self: psycopg.Cursor[Any], query: Any, params_seq: Any, **kwargs: Any) -> None:
        many.append(str(query))
        executemany(self, query, params_seq, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "executemany", recording)
    tasks = [action(n, scheduleTask=pb.ScheduleTaskAction(name="act")) for n in (1, 2, 3)]
    hub.complete_orchestration(turn.token, pb.OrchestratorResponse(
        instanceId="a", completionToken=turn.token, actions=tasks), T0)
    assert [e.eventId for e in hub.get_history("a") if e.HasField("taskScheduled")] == [1, 2, 3]
    assert not [q for q in many if q.lstrip().upper().startswith("INSERT")], many
