"""Helpers for tests that need a PostgreSQL server: reachability, throw-away databases, skip/fail.

The server is named by ``DURABLETASK_TEST_POSTGRES`` (a ``postgresql://`` URL of a role allowed to
create databases; default ``postgresql://postgres@127.0.0.1:5432/test``). Tests never write to that
database: ``create_database(prefix)`` makes a fresh, uniquely named one next to it and returns its
URL, ``drop_database(url)`` removes it again.

When the server cannot be reached, ``require_postgres()`` skips the test, or fails it when
``DURABLETASK_REQUIRE_POSTGRES=1`` (CI sets it, so a broken database setup cannot pass silently).
"""

from __future__ import annotations

import os
import re
import secrets
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

ADMIN_URL_VARIABLE = "DURABLETASK_TEST_POSTGRES"
REQUIRE_VARIABLE = "DURABLETASK_REQUIRE_POSTGRES"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_SECONDS = 3
MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL truncates longer names


def admin_url() -> str:
    """URL of the server and the database the helpers connect to for CREATE/DROP DATABASE."""
    return os.environ.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def database_name(url: str) -> str:
    """The database a ``postgresql://`` URL names (its path)."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise ValueError(f"no database name in {redact(url)!r}")
    return name


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (user, host, port and parameters kept)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _connect(url: str, **kwargs: object):  # -> psycopg.Connection
    import psycopg

    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs)  # type: ignore[arg-type]


def postgres_available() -> str | None:
    """None when the server at ``admin_url()`` answers a query, else why not (a readable reason)."""
    url = admin_url()
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with _connect(url) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return f"PostgreSQL at {redact(url)} is not reachable ({ADMIN_URL_VARIABLE} names it): {detail}"
    return None


def require_postgres() -> str:
    """For fixtures: returns the admin URL, or skips the test (fails it under CI) when unreachable."""
    reason = postgres_available()
    if reason is not None:
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{reason} (and {REQUIRE_VARIABLE}=1)", pytrace=False)
        pytest.skip(reason)
    return admin_url()


def create_database(prefix: str) -> str:
    """Create a fresh database named ``<prefix>_<pid>_<random hex>``; returns its URL."""
    from psycopg import sql

    clean = re.sub(r"[^a-z0-9_]", "_", prefix.lower()) or "test"
    suffix = f"_{os.getpid()}_{secrets.token_hex(4)}"
    name = clean[: MAX_IDENTIFIER_LENGTH - len(suffix)] + suffix
    url = admin_url()
    with _connect(url, autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(url, name)


def drop_database(url: str) -> None:
    """Drop the database ``url`` names, ending every other session connected to it first.

    Refuses to drop the admin database itself. Dropping one that does not exist is not an error.
    """
    from psycopg import sql

    name = database_name(url)
    admin = admin_url()
    if name == database_name(admin):
        raise ValueError(f"refusing to drop the admin database {name!r}")
    with _connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        # WITH (FORCE) (PostgreSQL 13+) also ends sessions that connected after the line above.
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))
