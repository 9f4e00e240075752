"""The client's value types: statuses, instance states, queries, pages and results.

Public as ``durabletask.client.*``; a leaf module so that request building, response parsing
and both clients can share them without importing ``durabletask.client``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar, overload

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failure_details import FailureDetails
from durabletask.serialization import DataConverter, default_converter

T = TypeVar("T")
TItem = TypeVar("TItem")


class OrchestrationStatus(Enum):
    """Runtime status of an orchestration instance; values are the wire values."""

    RUNNING = pb.ORCHESTRATION_STATUS_RUNNING
    COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
    FAILED = pb.ORCHESTRATION_STATUS_FAILED
    TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED
    CONTINUED_AS_NEW = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    PENDING = pb.ORCHESTRATION_STATUS_PENDING
    SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED

    def __str__(self) -> str:
        return self.name


class OrchestrationFailedError(Exception):
    """Raised by ``OrchestrationState.raise_if_failed`` for a failed instance."""

    def __init__(self, message: str, failure_details: FailureDetails) -> None:
        super().__init__(message)
        self._failure_details = failure_details

    @property
    def failure_details(self) -> FailureDetails:
        """Why the orchestration failed."""
        return self._failure_details


@dataclass
class OrchestrationState:
    """A snapshot of one orchestration instance as the sidecar reports it."""

    instance_id: str
    name: str
    runtime_status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None
    serialized_output: str | None
    serialized_custom_status: str | None
    failure_details: FailureDetails | None
    _data_converter: DataConverter = field(default_factory=default_converter, compare=False, repr=False)
    version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    completed_at: datetime | None = None
    parent_instance_id: str | None = None

    @overload
    def get_input(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_input(self, expected_type: None = ...) -> Any: ...

    def get_input(self, expected_type: type | None = None) -> Any:
        """The decoded input (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_input, expected_type)

    @overload
    def get_output(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_output(self, expected_type: None = ...) -> Any: ...

    def get_output(self, expected_type: type | None = None) -> Any:
        """The decoded output (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_output, expected_type)

    @overload
    def get_custom_status(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_custom_status(self, expected_type: None = ...) -> Any: ...

    def get_custom_status(self, expected_type: type | None = None) -> Any:
        """The decoded custom status (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_custom_status, expected_type)

    def raise_if_failed(self) -> None:
        """Raise ``OrchestrationFailedError`` when the instance carries failure details."""
        if self.failure_details is not None:
            raise OrchestrationFailedError(
                f"Orchestration '{self.instance_id}' failed: {self.failure_details.message}",
                self.failure_details,
            )

    def _decode(self, data: str | None, expected_type: type | None) -> Any:
        if data is None:
            return None
        return self._data_converter.deserialize(data, expected_type)


@dataclass
class OrchestrationQuery:
    """Filters for ``get_all_orchestration_states``."""

    created_time_from: datetime | None = None
    created_time_to: datetime | None = None
    runtime_status: list[OrchestrationStatus] | None = None
    # Some backends treat 0 as "none", so "no limit" is the largest int32.
    max_instance_count: int | None = (1 << 31) - 1
    fetch_inputs_and_outputs: bool = False
    instance_id_prefix: str | None = None
    # Beyond the official SDK: only instances of this version (or of any of these versions;
    # "" matches instances without a version).
    version: str | list[str] | None = None


@dataclass
class EntityQuery:
    """Filters for ``get_all_entities``."""

    instance_id_starts_with: str | None = None
    last_modified_from: datetime | None = None
    last_modified_to: datetime | None = None
    include_state: bool = True
    include_transient: bool = False
    page_size: int | None = None


@dataclass
class PurgeInstancesResult:
    """Outcome of a purge; ``is_complete`` is None when the backend does not say."""

    deleted_instance_count: int
    is_complete: bool | None


@dataclass
class Page(Generic[TItem]):
    """One page of results; pass ``continuation_token`` back for the next (None: no more)."""

    items: list[TItem]
    continuation_token: str | None


@dataclass
class CleanEntityStorageResult:
    """Outcome of ``clean_entity_storage``."""

    empty_entities_removed: int
    orphaned_locks_released: int
