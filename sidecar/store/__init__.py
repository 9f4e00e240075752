"""Durable state of the sidecar: the store interface and its implementations."""

from __future__ import annotations

from sidecar.store.base import (
    ActivityWorkItem,
    ChangeSet,
    CompletedFilter,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    Store,
    StoreError,
    StoreLockedError,
)
from sidecar.store.sqlite import MEMORY, SqliteStore


def open_store(spec: str) -> Store:
    """Open a store from a CLI-style spec: ``memory`` or a path to a SQLite file."""
    return SqliteStore(spec)


__all__ = [
    "MEMORY",
    "ActivityWorkItem",
    "ChangeSet",
    "CompletedFilter",
    "InstanceExistsError",
    "InstanceFilter",
    "InstanceNotFoundError",
    "InvalidStateError",
    "LeaseNotFoundError",
    "OrchestrationWorkItem",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreLockedError",
    "open_store",
]
