"""Durable state of the sidecar: the store interface, its implementations, and the factory that picks one."""

from __future__ import annotations

import os

from sidecar.store.base import (
    ActivityWorkItem,
    CommitNotice,
    CompletedFilter,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    SchemaVersionError,
    Store,
    StoreError,
    StoreFullError,
    StoreTx,
    StoreUnavailableError,
    StoreValueError,
)
from sidecar.store.sqlite import MEMORY, SqliteStore, StoreLockedError

# The environment variable that names the store when ``--store`` is not given.
STORE_VARIABLE = "DURABLETASK_SIDECAR_STORE"

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(spec: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return spec.lower().startswith(POSTGRES_SCHEMES)


def open_store(spec: str | os.PathLike[str]) -> Store:
    """Open the store a spec names: ``memory``, a SQLite file path, or a ``postgresql://`` URL.

    Raises StoreError (or OSError for a file that cannot be created) naming the store.
    """
    text = str(spec)
    if is_postgres_url(text):
        from sidecar.store.postgres import PostgresStore  # imported here: psycopg is an optional extra

        return PostgresStore(text)
    return SqliteStore(text)


__all__ = [
    "MEMORY",
    "STORE_VARIABLE",
    "ActivityWorkItem",
    "CommitNotice",
    "CompletedFilter",
    "InstanceExistsError",
    "InstanceFilter",
    "InstanceNotFoundError",
    "InvalidStateError",
    "LeaseNotFoundError",
    "OrchestrationWorkItem",
    "SchemaVersionError",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreTx",
    "StoreUnavailableError",
    "StoreValueError",
    "is_postgres_url",
    "open_store",
]
