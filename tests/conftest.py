"""Fixtures shared by unit and end-to-end tests.

``postgres_url`` (session scope): the URL of a fresh PostgreSQL database created for this test
session and dropped at its end (see ``tests/pg_support.py``). Tests using it are skipped when
the server is unreachable, or fail when ``DURABLETASK_REQUIRE_POSTGRES=1``. Tests that need a
database of their own call ``create_database``/``drop_database`` from ``tests.pg_support``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_support import create_database, drop_database, require_postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at its end); skips if unreachable."""
    require_postgres()
    url = create_database("durabletask_test")
    try:
        yield url
    finally:
        drop_database(url)
