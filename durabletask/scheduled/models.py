"""Schedule options, descriptions and queries, and the state the schedule entity keeps.

The entity state is written in the shape the .NET and official Python SDKs use
(PascalCase keys, the status as its .NET ordinal, the interval as ``TimeSpan`` text,
the orchestration input as a JSON string), so tools reading one SDK's schedules can
read ours. A cron schedule stores ``CronExpression`` and no ``Interval``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import durabletask.scheduled._codec as codec
from durabletask.scheduled.exceptions import ScheduleClientValidationError
from durabletask.scheduled.schedule_status import ScheduleStatus

MINIMUM_INTERVAL = codec.MINIMUM_INTERVAL


def _check_recurrence(schedule_id: str, interval: Any, cron: Any, *, required: bool) -> None:
    if interval is not None and cron is not None:
        raise ScheduleClientValidationError(schedule_id, "give either interval or cron, not both")
    if interval is None and cron is None:
        if required:
            raise ScheduleClientValidationError(schedule_id, "an interval or a cron expression is required")
        return
    if interval is not None:
        codec.check_interval(schedule_id, interval)
    else:
        codec.check_cron(schedule_id, cron)


def _optional_bool(schedule_id: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ScheduleClientValidationError(schedule_id, f"{name} must be a bool, not {type(value).__name__}")


@dataclass
class ScheduleCreationOptions:
    """What a new schedule runs and when.

    Exactly one of ``interval`` (at least one second) and ``cron`` (a 5-field
    expression in UTC; beyond the official SDK) says when it recurs. Runs start at
    ``start_at`` (default: when the schedule is created) and stop after ``end_at``.
    ``start_immediately_if_late``: a schedule that has never run and whose start
    (``start_at``, else the creation time) has passed runs at once instead of
    waiting for the next due time. Invalid values raise
    ScheduleClientValidationError (a ValueError).
    """

    schedule_id: str
    orchestration_name: str
    interval: timedelta | None = None
    orchestration_input: Any | None = None
    orchestration_instance_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    start_immediately_if_late: bool = False
    cron: str | None = None

    def __post_init__(self) -> None:
        codec.check_schedule_id(self.schedule_id)
        sid = self.schedule_id
        codec.check_orchestration_name(sid, self.orchestration_name)
        _check_recurrence(sid, self.interval, self.cron, required=True)
        self.orchestration_instance_id = codec.check_instance_id(sid, self.orchestration_instance_id)
        self.start_at = codec.check_datetime(sid, "start_at", self.start_at)
        self.end_at = codec.check_datetime(sid, "end_at", self.end_at)
        codec.check_window(sid, self.start_at, self.end_at)
        _optional_bool(sid, "start_immediately_if_late", self.start_immediately_if_late)

    def to_json(self) -> dict[str, Any]:
        """The wire form (the official SDK's keys, plus ``cron`` when set)."""
        data: dict[str, Any] = {
            "schedule_id": self.schedule_id,
            "orchestration_name": self.orchestration_name,
            "interval_seconds": self.interval.total_seconds() if self.interval is not None else None,
            "orchestration_input": self.orchestration_input,
            "orchestration_instance_id": self.orchestration_instance_id,
            "start_at": codec.iso(self.start_at),
            "end_at": codec.iso(self.end_at),
            "start_immediately_if_late": self.start_immediately_if_late,
        }
        if self.cron is not None:
            data["cron"] = self.cron
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleCreationOptions:
        """Rebuild from ``to_json`` output (validating it)."""
        if not isinstance(data, dict):
            raise ScheduleClientValidationError("", f"expected schedule options as an object, got {type(data).__name__}")
        seconds = data.get("interval_seconds")
        return cls(
            schedule_id=data.get("schedule_id"),  # type: ignore[arg-type]
            orchestration_name=data.get("orchestration_name"),  # type: ignore[arg-type]
            interval=codec.parse_timespan(seconds),
            orchestration_input=data.get("orchestration_input"),
            orchestration_instance_id=data.get("orchestration_instance_id"),
            start_at=codec.parse_iso(data.get("start_at")),
            end_at=codec.parse_iso(data.get("end_at")),
            start_immediately_if_late=bool(data.get("start_immediately_if_late", False)),
            cron=data.get("cron"),
        )


@dataclass
class ScheduleUpdateOptions:
    """Changes to a schedule: only the fields that are set (not None) are applied.

    Setting ``cron`` turns an interval schedule into a cron schedule and setting
    ``interval`` does the reverse; giving both is an error.
    """

    orchestration_name: str | None = None
    orchestration_input: Any | None = None
    orchestration_instance_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    interval: timedelta | None = None
    start_immediately_if_late: bool | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if self.orchestration_name == "":
            self.orchestration_name = None
        if self.orchestration_name is not None:
            codec.check_orchestration_name("", self.orchestration_name)
        self.orchestration_instance_id = codec.check_instance_id("", self.orchestration_instance_id)
        _check_recurrence("", self.interval, self.cron, required=False)
        self.start_at = codec.check_datetime("", "start_at", self.start_at)
        self.end_at = codec.check_datetime("", "end_at", self.end_at)
        codec.check_window("", self.start_at, self.end_at)
        _optional_bool("", "start_immediately_if_late", self.start_immediately_if_late)

    def to_json(self) -> dict[str, Any]:
        """The wire form (the official SDK's keys, plus ``cron`` when set)."""
        data: dict[str, Any] = {
            "orchestration_name": self.orchestration_name,
            "orchestration_input": self.orchestration_input,
            "orchestration_instance_id": self.orchestration_instance_id,
            "start_at": codec.iso(self.start_at),
            "end_at": codec.iso(self.end_at),
            "interval_seconds": self.interval.total_seconds() if self.interval is not None else None,
            "start_immediately_if_late": self.start_immediately_if_late,
        }
        if self.cron is not None:
            data["cron"] = self.cron
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleUpdateOptions:
        """Rebuild from ``to_json`` output (validating it)."""
        if not isinstance(data, dict):
            raise ScheduleClientValidationError("", f"expected update options as an object, got {type(data).__name__}")
        return cls(
            orchestration_name=data.get("orchestration_name"),
            orchestration_input=data.get("orchestration_input"),
            orchestration_instance_id=data.get("orchestration_instance_id"),
            start_at=codec.parse_iso(data.get("start_at")),
            end_at=codec.parse_iso(data.get("end_at")),
            interval=codec.parse_timespan(data.get("interval_seconds")),
            start_immediately_if_late=data.get("start_immediately_if_late"),
            cron=data.get("cron"),
        )


@dataclass
class ScheduleQuery:
    """Filters for ``list_schedules``.

    ``schedule_id_prefix`` is applied by the sidecar; ``status`` and the creation
    window (both bounds exclusive, as in the official SDK) are applied to each page
    fetched. ``page_size`` is the number of schedules fetched per request.
    """

    DEFAULT_PAGE_SIZE: ClassVar[int] = 100

    status: ScheduleStatus | None = None
    schedule_id_prefix: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    page_size: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not isinstance(self.status, ScheduleStatus):
            try:
                self.status = ScheduleStatus(self.status)
            except ValueError:
                allowed = ", ".join(s.value for s in ScheduleStatus)
                raise ScheduleClientValidationError(
                    "", f"status must be a ScheduleStatus ({allowed}), not {self.status!r}"
                ) from None
        if self.schedule_id_prefix is not None and not isinstance(self.schedule_id_prefix, str):
            raise ScheduleClientValidationError("", "schedule_id_prefix must be a string")
        self.created_from = codec.check_datetime("", "created_from", self.created_from)
        self.created_to = codec.check_datetime("", "created_to", self.created_to)
        if self.page_size is not None and (
            isinstance(self.page_size, bool) or not isinstance(self.page_size, int) or self.page_size <= 0
        ):
            raise ScheduleClientValidationError("", f"page_size must be a positive integer, got {self.page_size!r}")


@dataclass
class ScheduleDescription:
    """A snapshot of a schedule: its configuration and where it is in its run cycle."""

    schedule_id: str
    orchestration_name: str | None = None
    orchestration_input: Any | None = None
    orchestration_instance_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    interval: timedelta | None = None
    start_immediately_if_late: bool | None = None
    status: ScheduleStatus = ScheduleStatus.UNINITIALIZED
    execution_token: str = ""
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    cron: str | None = None


class ScheduleConfiguration:
    """The configuration part of the entity state (what runs, and when)."""

    def __init__(
        self, schedule_id: str, orchestration_name: str, interval: timedelta | None, cron: str | None = None
    ) -> None:
        codec.check_schedule_id(schedule_id)
        self.schedule_id = schedule_id
        self.orchestration_name = codec.check_orchestration_name(schedule_id, orchestration_name)
        _check_recurrence(schedule_id, interval, cron, required=True)
        self.interval: timedelta | None = interval
        self.cron: str | None = cron
        self.orchestration_input: Any | None = None
        self.orchestration_instance_id: str | None = None
        self.start_at: datetime | None = None
        self.end_at: datetime | None = None
        self.start_immediately_if_late: bool = False

    @staticmethod
    def from_create_options(options: ScheduleCreationOptions) -> ScheduleConfiguration:
        """The configuration a creation request asks for."""
        config = ScheduleConfiguration(options.schedule_id, options.orchestration_name, options.interval, options.cron)
        config.orchestration_input = options.orchestration_input
        config.orchestration_instance_id = options.orchestration_instance_id
        config.start_at = codec.to_utc(options.start_at)
        config.end_at = codec.to_utc(options.end_at)
        config.start_immediately_if_late = options.start_immediately_if_late
        codec.check_window(config.schedule_id, config.start_at, config.end_at)
        return config

    def update(self, options: ScheduleUpdateOptions) -> set[str]:
        """Apply the set fields of ``options``; returns the names of the fields that changed.

        Raises ScheduleClientValidationError (and changes nothing) when the result
        would be invalid, e.g. an ``end_at`` before the existing ``start_at``.
        """
        wanted: dict[str, Any] = {}
        if options.orchestration_name:
            wanted["orchestration_name"] = options.orchestration_name
        if options.orchestration_input is not None:
            wanted["orchestration_input"] = options.orchestration_input
        if options.orchestration_instance_id:
            wanted["orchestration_instance_id"] = options.orchestration_instance_id
        if options.start_at is not None:
            wanted["start_at"] = codec.to_utc(options.start_at)
        if options.end_at is not None:
            wanted["end_at"] = codec.to_utc(options.end_at)
        if options.interval is not None:
            wanted["interval"], wanted["cron"] = options.interval, None
        if options.cron is not None:
            wanted["cron"], wanted["interval"] = options.cron, None
        if options.start_immediately_if_late is not None:
            wanted["start_immediately_if_late"] = options.start_immediately_if_late
        changed = {name for name, value in wanted.items() if getattr(self, name) != value}
        codec.check_window(
            self.schedule_id, wanted.get("start_at", self.start_at), wanted.get("end_at", self.end_at)
        )
        for name in changed:
            setattr(self, name, wanted[name])
        return changed

    def to_json(self) -> dict[str, Any]:
        """The stored form (keys and value shapes of the .NET SDK, plus ``CronExpression``)."""
        data: dict[str, Any] = {
            "ScheduleId": self.schedule_id,
            "OrchestrationName": self.orchestration_name,
            "Interval": codec.format_timespan(self.interval),
            "OrchestrationInput": codec.encode_input(self.orchestration_input),
            "OrchestrationInstanceId": self.orchestration_instance_id,
            "StartAt": codec.iso(self.start_at),
            "EndAt": codec.iso(self.end_at),
            "StartImmediatelyIfLate": self.start_immediately_if_late,
        }
        if self.cron is not None:
            data["CronExpression"] = self.cron
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleConfiguration:
        """Rebuild from the stored form."""
        if not isinstance(data, dict):
            raise ValueError(f"a schedule configuration must be an object, got {type(data).__name__}")
        config = cls(
            data.get("ScheduleId"),  # type: ignore[arg-type]
            data.get("OrchestrationName"),  # type: ignore[arg-type]
            codec.parse_timespan(data.get("Interval")),
            data.get("CronExpression"),
        )
        config.orchestration_input = codec.decode_input(data.get("OrchestrationInput"))
        config.orchestration_instance_id = data.get("OrchestrationInstanceId") or None
        config.start_at = codec.parse_iso(data.get("StartAt"))
        config.end_at = codec.parse_iso(data.get("EndAt"))
        config.start_immediately_if_late = bool(data.get("StartImmediatelyIfLate", False))
        return config


def new_execution_token() -> str:
    """A fresh token naming the one run signal of a schedule that is current."""
    return uuid.uuid4().hex


class ScheduleState:
    """The whole entity state: status, run bookkeeping and configuration."""

    def __init__(self) -> None:
        self.status: ScheduleStatus = ScheduleStatus.UNINITIALIZED
        self.execution_token: str = new_execution_token()
        self.last_run_at: datetime | None = None
        self.next_run_at: datetime | None = None
        self.schedule_created_at: datetime | None = None
        self.schedule_last_modified_at: datetime | None = None
        self.schedule_configuration: ScheduleConfiguration | None = None

    def refresh_execution_token(self) -> None:
        """Invalidate every run signal sent so far."""
        self.execution_token = new_execution_token()

    def to_json(self) -> dict[str, Any]:
        """The stored form (keys and value shapes of the .NET SDK)."""
        config = self.schedule_configuration
        return {
            "Status": self.status.to_dotnet_ordinal(),
            "ExecutionToken": self.execution_token,
            "LastRunAt": codec.iso(self.last_run_at),
            "NextRunAt": codec.iso(self.next_run_at),
            "ScheduleCreatedAt": codec.iso(self.schedule_created_at),
            "ScheduleLastModifiedAt": codec.iso(self.schedule_last_modified_at),
            "ScheduleConfiguration": config.to_json() if config is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleState:
        """Rebuild from the stored form."""
        if not isinstance(data, dict):
            raise ValueError(f"a schedule state must be an object, got {type(data).__name__}")
        state = cls()
        state.status = ScheduleStatus.from_dotnet(data.get("Status"))
        token = data.get("ExecutionToken")
        if isinstance(token, str) and token:
            state.execution_token = token
        state.last_run_at = codec.parse_iso(data.get("LastRunAt"))
        state.next_run_at = codec.parse_iso(data.get("NextRunAt"))
        state.schedule_created_at = codec.parse_iso(data.get("ScheduleCreatedAt"))
        state.schedule_last_modified_at = codec.parse_iso(data.get("ScheduleLastModifiedAt"))
        config = data.get("ScheduleConfiguration")
        state.schedule_configuration = ScheduleConfiguration.from_json(config) if config is not None else None
        return state

    def to_description(self) -> ScheduleDescription:
        """The public snapshot of this state."""
        config = self.schedule_configuration
        if config is None:
            return ScheduleDescription(
                schedule_id="", status=self.status, execution_token=self.execution_token,
                last_run_at=self.last_run_at, next_run_at=self.next_run_at,
            )
        return ScheduleDescription(
            schedule_id=config.schedule_id,
            orchestration_name=config.orchestration_name,
            orchestration_input=config.orchestration_input,
            orchestration_instance_id=config.orchestration_instance_id,
            start_at=config.start_at,
            end_at=config.end_at,
            interval=config.interval,
            start_immediately_if_late=config.start_immediately_if_late,
            status=self.status,
            execution_token=self.execution_token,
            last_run_at=self.last_run_at,
            next_run_at=self.next_run_at,
            cron=config.cron,
        )
