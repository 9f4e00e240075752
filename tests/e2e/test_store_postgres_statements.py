"""How the PostgreSQL store sends statements: one cursor per transaction, INSERTs of many rows as
multi-row INSERTs (``sidecar.store.postgres._Connection``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.store.postgres import _INSERT_CHUNK, PostgresStore


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
