"""Data models of the history-export extension and their JSON forms.

Every model that is stored (in the export-job entity's state) or passed between the
orchestrator and its activities converts to and from plain JSON values with ``to_dict`` and
``from_dict``. Field names, enum values and the ``schema_version`` of the stored state are the
official extension's, so a job's state is readable by either SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from durabletask.client import OrchestrationStatus
from durabletask.extensions.history_export._common import dt_from_iso, dt_to_iso

STATE_SCHEMA_VERSION = "1.0"
"""Version written into the stored job state; states of any other version are refused."""

MAX_INSTANCES_PER_BATCH_LIMIT = 1000


class ExportMode(Enum):
    """How a job selects instances."""

    BATCH = "Batch"
    """Export the instances completed inside a closed time window, then complete."""

    CONTINUOUS = "Continuous"
    """Keep exporting instances as they complete, until the job is deleted or failed."""


class ExportFormatKind(Enum):
    """How one instance's history is written."""

    JSON = "Json"
    """One JSON document per instance."""

    JSONL_GZIP = "JsonlGzip"
    """Gzip-compressed JSON lines: a metadata line, then one line per history event."""


class ExportJobStatus(Enum):
    """Lifecycle status of an export job (also the ``status`` value of its stored state)."""

    ACTIVE = "Active"
    COMPLETED = "Completed"
    FAILED = "Failed"


TERMINAL_RUNTIME_STATUSES: tuple[OrchestrationStatus, ...] = (
    OrchestrationStatus.COMPLETED,
    OrchestrationStatus.FAILED,
    OrchestrationStatus.TERMINATED,
)


def _runtime_status(value: Any) -> OrchestrationStatus:
    """A stored runtime status: the enum's integer value (or its text), or the member's name."""
    if isinstance(value, OrchestrationStatus):
        return value
    if isinstance(value, bool):
        raise TypeError(f"not a runtime status: {value!r}")
    if isinstance(value, int):
        return OrchestrationStatus(value)
    if isinstance(value, str):
        if value.lstrip("-").isdigit():
            return OrchestrationStatus(int(value))
        try:
            return OrchestrationStatus[value]
        except KeyError:
            raise ValueError(f"unknown runtime status {value!r}") from None
    raise TypeError(f"cannot read a runtime status from a {type(value).__name__}")


def _required_time(data: Mapping[str, Any], key: str, what: str) -> datetime:
    value = dt_from_iso(data.get(key))
    if value is None:
        raise ValueError(f"{what} requires {key!r}")
    return value


@dataclass
class ExportFormat:
    """The output format: its kind and the schema version written into each file."""

    kind: ExportFormatKind = ExportFormatKind.JSONL_GZIP
    schema_version: str = "1.0"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "schema_version": self.schema_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportFormat:
        return cls(kind=ExportFormatKind(data["kind"]), schema_version=str(data.get("schema_version", "1.0")))


@dataclass
class ExportDestination:
    """Where files go: a container (required) and an optional name prefix ("folder")."""

    container: str
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not self.container:
            raise ValueError("destination.container must be a non-empty string")

    def to_dict(self) -> dict[str, Any]:
        return {"container": self.container, "prefix": self.prefix}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportDestination:
        return cls(container=data["container"], prefix=data.get("prefix"))


@dataclass
class ExportFilter:
    """Which instances a job exports: completed in [from, to), with one of the given statuses.

    ``runtime_status`` None means every terminal status (COMPLETED, FAILED, TERMINATED).
    """

    completed_time_from: datetime
    completed_time_to: datetime | None = None
    runtime_status: list[OrchestrationStatus] | None = None

    def effective_runtime_status(self) -> list[OrchestrationStatus]:
        """The statuses to select, the default applied."""
        return list(TERMINAL_RUNTIME_STATUSES if self.runtime_status is None else self.runtime_status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed_time_from": dt_to_iso(self.completed_time_from),
            "completed_time_to": dt_to_iso(self.completed_time_to),
            # stored by value (the wire enum's number), as the official extension does
            "runtime_status": None if self.runtime_status is None else [s.value for s in self.runtime_status],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportFilter:
        statuses = data.get("runtime_status")
        return cls(
            completed_time_from=_required_time(data, "completed_time_from", "an export filter"),
            completed_time_to=dt_from_iso(data.get("completed_time_to")),
            runtime_status=None if statuses is None else [_runtime_status(s) for s in statuses],
        )


@dataclass
class ExportCheckpoint:
    """Where a job resumes: the continuation token of the instance listing (None: the start)."""

    last_instance_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"last_instance_key": self.last_instance_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportCheckpoint:
        return cls(last_instance_key=data.get("last_instance_key"))


@dataclass
class ExportFailure:
    """An instance whose history could not be exported, with the last error."""

    instance_id: str
    reason: str
    attempt_count: int
    last_attempt: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "reason": self.reason,
            "attempt_count": self.attempt_count,
            "last_attempt": dt_to_iso(self.last_attempt),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportFailure:
        return cls(
            instance_id=str(data["instance_id"]),
            reason=str(data["reason"]),
            attempt_count=int(data["attempt_count"]),
            last_attempt=_required_time(data, "last_attempt", "an export failure"),
        )


@dataclass
class ExportJobConfiguration:
    """A job's complete, validated configuration (checked when built: bad values raise ValueError)."""

    mode: ExportMode
    filter: ExportFilter
    destination: ExportDestination
    format: ExportFormat = field(default_factory=ExportFormat)
    max_instances_per_batch: int = 100
    max_parallel_exports: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.max_instances_per_batch <= MAX_INSTANCES_PER_BATCH_LIMIT:
            raise ValueError(
                f"max_instances_per_batch must be in [1, {MAX_INSTANCES_PER_BATCH_LIMIT}]; "
                f"got {self.max_instances_per_batch}"
            )
        if self.max_parallel_exports <= 0:
            raise ValueError(f"max_parallel_exports must be positive; got {self.max_parallel_exports}")
        window_end = self.filter.completed_time_to
        if self.mode is ExportMode.BATCH and window_end is None:
            raise ValueError("completed_time_to is required for batch mode exports")
        if self.mode is ExportMode.CONTINUOUS and window_end is not None:
            raise ValueError("completed_time_to is not allowed for continuous mode exports (they have no end)")
        if window_end is not None and window_end <= self.filter.completed_time_from:
            raise ValueError("completed_time_to must be strictly greater than completed_time_from")
        if self.filter.runtime_status is not None:
            others = sorted(s.name for s in self.filter.runtime_status if s not in TERMINAL_RUNTIME_STATUSES)
            if others:
                raise ValueError(
                    "runtime_status may only contain terminal statuses (COMPLETED, FAILED, TERMINATED); "
                    f"got {', '.join(others)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "filter": self.filter.to_dict(),
            "destination": self.destination.to_dict(),
            "format": self.format.to_dict(),
            "max_instances_per_batch": self.max_instances_per_batch,
            "max_parallel_exports": self.max_parallel_exports,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportJobConfiguration:
        fmt = data.get("format")
        return cls(
            mode=ExportMode(data["mode"]),
            filter=ExportFilter.from_dict(data["filter"]),
            destination=ExportDestination.from_dict(data["destination"]),
            format=ExportFormat() if fmt is None else ExportFormat.from_dict(fmt),
            max_instances_per_batch=int(data.get("max_instances_per_batch", 100)),
            max_parallel_exports=int(data.get("max_parallel_exports", 32)),
        )


@dataclass
class ExportJobQuery:
    """Filters of ``list_jobs``: statuses, a last-modified window, and the listing's page size."""

    status: list[ExportJobStatus] | None = None
    last_modified_from: datetime | None = None
    last_modified_to: datetime | None = None
    page_size: int | None = None


@dataclass
class ExportJobCreationOptions:
    """What ``create_job`` takes (the job ID is a separate argument of ``create_job``)."""

    mode: ExportMode
    completed_time_from: datetime
    destination: ExportDestination
    completed_time_to: datetime | None = None
    runtime_status: list[OrchestrationStatus] | None = None
    format: ExportFormat = field(default_factory=ExportFormat)
    max_instances_per_batch: int = 100
    max_parallel_exports: int = 32

    def to_configuration(self) -> ExportJobConfiguration:
        """The validated configuration these options describe (raises ValueError when invalid)."""
        return ExportJobConfiguration(
            mode=self.mode,
            filter=ExportFilter(self.completed_time_from, self.completed_time_to, self.runtime_status),
            destination=self.destination,
            format=self.format,
            max_instances_per_batch=self.max_instances_per_batch,
            max_parallel_exports=self.max_parallel_exports,
        )


@dataclass
class ExportJobState:
    """The export-job entity's state; ``to_dict`` is exactly what is stored."""

    status: ExportJobStatus
    config: ExportJobConfiguration
    created_at: datetime
    last_modified_at: datetime
    orchestrator_instance_id: str | None = None
    checkpoint: ExportCheckpoint = field(default_factory=ExportCheckpoint)
    last_checkpoint_time: datetime | None = None
    last_error: str | None = None
    scanned_instances: int = 0
    exported_instances: int = 0
    failed_instances: int = 0
    failures: list[ExportFailure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "status": self.status.value,
            "config": self.config.to_dict(),
            "checkpoint": self.checkpoint.to_dict(),
            "created_at": dt_to_iso(self.created_at),
            "last_modified_at": dt_to_iso(self.last_modified_at),
            "last_checkpoint_time": dt_to_iso(self.last_checkpoint_time),
            "last_error": self.last_error,
            "scanned_instances": self.scanned_instances,
            "exported_instances": self.exported_instances,
            "failed_instances": self.failed_instances,
            "orchestrator_instance_id": self.orchestrator_instance_id,
            "failures": [f.to_dict() for f in self.failures],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportJobState:
        version = data.get("schema_version", STATE_SCHEMA_VERSION)
        if version != STATE_SCHEMA_VERSION:
            raise ValueError(
                f"Unsupported export job state schema_version={version!r}; expected {STATE_SCHEMA_VERSION!r}"
            )
        config = data.get("config")
        if not config:
            raise ValueError("export job state is missing 'config'")
        checkpoint = data.get("checkpoint")
        return cls(
            status=ExportJobStatus(data["status"]),
            config=ExportJobConfiguration.from_dict(config),
            created_at=_required_time(data, "created_at", "export job state"),
            last_modified_at=_required_time(data, "last_modified_at", "export job state"),
            orchestrator_instance_id=data.get("orchestrator_instance_id"),
            checkpoint=ExportCheckpoint() if checkpoint is None else ExportCheckpoint.from_dict(checkpoint),
            last_checkpoint_time=dt_from_iso(data.get("last_checkpoint_time")),
            last_error=data.get("last_error"),
            scanned_instances=int(data.get("scanned_instances", 0)),
            exported_instances=int(data.get("exported_instances", 0)),
            failed_instances=int(data.get("failed_instances", 0)),
            failures=[ExportFailure.from_dict(f) for f in data.get("failures") or []],
        )

    @classmethod
    def new(
        cls, config: ExportJobConfiguration, *, created_at: datetime, orchestrator_instance_id: str | None = None
    ) -> ExportJobState:
        """The state of a job just created: ACTIVE, nothing counted yet."""
        return cls(
            status=ExportJobStatus.ACTIVE,
            config=config,
            created_at=created_at,
            last_modified_at=created_at,
            orchestrator_instance_id=orchestrator_instance_id,
        )


@dataclass
class ExportJobDescription:
    """What the clients report about a job."""

    job_id: str
    status: ExportJobStatus
    created_at: datetime | None
    last_modified_at: datetime | None
    config: ExportJobConfiguration | None
    orchestrator_instance_id: str | None
    scanned_instances: int
    exported_instances: int
    failed_instances: int
    last_error: str | None
    checkpoint: ExportCheckpoint | None
    last_checkpoint_time: datetime | None
    failures: list[ExportFailure] = field(default_factory=list)

    @classmethod
    def from_state(cls, job_id: str, state: ExportJobState) -> ExportJobDescription:
        return cls(
            job_id=job_id,
            status=state.status,
            created_at=state.created_at,
            last_modified_at=state.last_modified_at,
            config=state.config,
            orchestrator_instance_id=state.orchestrator_instance_id,
            scanned_instances=state.scanned_instances,
            exported_instances=state.exported_instances,
            failed_instances=state.failed_instances,
            last_error=state.last_error,
            checkpoint=state.checkpoint,
            last_checkpoint_time=state.last_checkpoint_time,
            failures=list(state.failures),
        )

    @classmethod
    def from_state_dict(cls, job_id: str, state: Mapping[str, Any]) -> ExportJobDescription:
        """The description of a job from its stored state."""
        return cls.from_state(job_id, ExportJobState.from_dict(state))


__all__ = [
    "STATE_SCHEMA_VERSION",
    "ExportCheckpoint",
    "ExportDestination",
    "ExportFailure",
    "ExportFilter",
    "ExportFormat",
    "ExportFormatKind",
    "ExportJobConfiguration",
    "ExportJobCreationOptions",
    "ExportJobDescription",
    "ExportJobQuery",
    "ExportJobState",
    "ExportJobStatus",
    "ExportMode",
    "OrchestrationStatus",
    "dt_from_iso",
    "dt_to_iso",
]
