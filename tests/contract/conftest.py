"""The store contract: every test in this folder runs once per store the sidecar can use.

Tests are written against :class:`sidecar.hub.TaskHub` and the :class:`sidecar.store.Store`
interface only (no SQL, no store-specific attributes), so the same rules are checked on each
store:

- ``sqlite-memory``: ``open_store("memory")``;
- ``sqlite-file``: a SQLite file under the test's ``tmp_path``;
- ``postgresql``: the session's database (``postgres_url`` in ``tests/conftest.py``), emptied with
  ``reset()`` before each test. Skipped when the server cannot be reached (fails instead when
  ``DURABLETASK_REQUIRE_POSTGRES=1``).

``hub`` is a TaskHub over a fresh, empty store, closed after the test. ``open_same_store`` opens
another store on the same database (only PostgreSQL allows it: a SQLite file has one owner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.hub import TaskHub
from sidecar.store import MEMORY, Store, open_store

SQLITE_MEMORY = "sqlite-memory"
SQLITE_FILE = "sqlite-file"
POSTGRESQL = "postgresql"
STORES = [SQLITE_MEMORY, SQLITE_FILE, POSTGRESQL]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store this run of the test uses."""
    return str(request.param)


@pytest.fixture
def store_spec(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``open_store`` is given for this run of the test."""
    if store_kind == SQLITE_MEMORY:
        return MEMORY
    if store_kind == SQLITE_FILE:
        return str(tmp_path / "store.db")
    # Asked for here, not as a parameter: only the PostgreSQL runs need (or skip without) a server.
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_spec: str) -> Iterator[Store]:
    """A fresh, empty store of this run's kind; closed after the test."""
    s = open_store(store_spec)
    try:
        s.reset()  # the PostgreSQL database is shared by the session's tests
        yield s
    finally:
        s.close()


@pytest.fixture
def hub(store: Store) -> TaskHub:
    """A task hub over this run's store (default back-off: 0.1 s, doubling)."""
    return TaskHub(store)


@pytest.fixture
def open_same_store(store_kind: str, store_spec: str) -> Iterator[Callable[[], Store]]:
    """Opens further stores on the same database as ``store`` (closed after the test).

    Skips for SQLite: one file is owned by one store at a time (a second one is refused).
    """
    if store_kind != POSTGRESQL:
        pytest.skip("a SQLite store is owned by one sidecar: a second store cannot open the same file")
    opened: list[Store] = []

    def open_another() -> Store:
        s = open_store(store_spec)
        opened.append(s)
        return s

    try:
        yield open_another
    finally:
        for s in opened:
            s.close()
