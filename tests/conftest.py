"""Fixtures shared by unit and end-to-end tests.

``postgres_url`` (session scope): the URL of a fresh PostgreSQL database created for this test
session and dropped at its end (see ``tests/pg_support.py``). Tests using it are skipped when
the server is unreachable, or fail when ``DURABLETASK_REQUIRE_POSTGRES=1``. ``fresh_postgres``:
the same for one test only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_support import create_database, drop_database, require_postgres


def _own_database() -> Iterator[str]:
    require_postgres()
    url = create_database("durabletask_test")
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at its end); skips if unreachable."""
    yield from _own_database()


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped after it); skips if unreachable."""
    yield from _own_database()
