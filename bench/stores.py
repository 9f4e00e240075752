"""The stores a benchmark runs on: a SQLite file, and a throw-away PostgreSQL database when one is reachable.

``DURABLETASK_BENCH_POSTGRES`` names the PostgreSQL server (a URL of a role that may create
databases; default ``postgresql://postgres@127.0.0.1:5432/postgres``); ``none`` leaves it out.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_VARIABLE = "DURABLETASK_BENCH_POSTGRES"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str | None:
    """The server to create benchmark databases on, or None when left out or unreachable."""
    url = os.environ.get(POSTGRES_VARIABLE, DEFAULT_POSTGRES)
    if url.lower() == "none":
        return None
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return url
    except Exception as exc:  # unreachable, no driver: the benchmark runs on SQLite only
        print(f"(PostgreSQL left out: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})")
        return None


@contextmanager
def store_spec(kind: str) -> Iterator[str]:
    """A fresh store of ``kind`` (``sqlite`` or ``postgresql``) for one benchmark run, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield str(Path(tmp) / "bench.db")
        return
    admin = postgres_admin_url()
    if admin is None:
        raise RuntimeError("no PostgreSQL server for the benchmark")
    import psycopg

    name = f"durabletask_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(admin)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {name}")


def kinds(requested: str | None) -> list[str]:
    """The store kinds to run: the one asked for, else SQLite and (when reachable) PostgreSQL."""
    if requested:
        return [requested]
    return ["sqlite", "postgresql"] if postgres_admin_url() is not None else ["sqlite"]
