"""Helpers shared by the schedule models: UTC datetimes, ISO text, .NET TimeSpan text, validation."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from durabletask.scheduled.cron import CronExpression, CronExpressionError
from durabletask.scheduled.exceptions import ScheduleClientValidationError

MINIMUM_INTERVAL = timedelta(seconds=1)
"""The shortest interval a schedule may have."""

MAX_SCHEDULE_ID_LENGTH = 200
"""Leaves room for the entity prefix and the run suffix within the sidecar's 256-character IDs."""

MAX_INSTANCE_ID_LENGTH = 256

_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")


def to_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a UTC datetime (with its ``+00:00`` offset)."""
    converted = to_utc(value)
    return converted.isoformat() if converted is not None else None


def parse_iso(value: Any) -> datetime | None:
    """Read ISO 8601 text (a trailing ``Z`` is accepted) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp, got {type(value).__name__}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    return to_utc(datetime.fromisoformat(text))


def format_timespan(value: timedelta | None) -> str | None:
    """A timedelta as .NET ``TimeSpan`` text: ``[-][d.]hh:mm:ss[.fffffff]``."""
    if value is None:
        return None
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    seconds, micros = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    if days:
        text = f"{days}.{text}"
    if micros:
        text += f".{micros * 10:07d}"
    return sign + text


def parse_timespan(value: Any) -> timedelta | None:
    """Read ``TimeSpan`` text (or a number of seconds) as a timedelta."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a TimeSpan like '00:05:00', got {type(value).__name__}")
    match = _TIMESPAN.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a TimeSpan like '[d.]hh:mm:ss[.fffffff]'")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    ticks = int((fraction or "0").ljust(7, "0"))
    result = timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds),
        microseconds=ticks // 10,
    )
    return -result if sign else result


def encode_input(value: Any) -> str | None:
    """The orchestration input as stored in the entity state: a JSON document in a string."""
    if value is None:
        return None
    from durabletask.serialization import default_converter

    return default_converter().serialize(value)


def decode_input(value: Any) -> Any:
    """The inverse of ``encode_input``; text that is not JSON is returned unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


# --- validation --------------------------------------------------------------------------------


def check_schedule_id(schedule_id: Any) -> str:
    """Raise ScheduleClientValidationError unless ``schedule_id`` is usable."""
    if not isinstance(schedule_id, str):
        raise ScheduleClientValidationError("", f"schedule_id must be a string, not {type(schedule_id).__name__}")
    if not schedule_id:
        raise ScheduleClientValidationError("", "schedule_id cannot be empty")
    if len(schedule_id) > MAX_SCHEDULE_ID_LENGTH:
        raise ScheduleClientValidationError(
            schedule_id[:40] + "...",
            f"schedule_id is {len(schedule_id)} characters long; at most {MAX_SCHEDULE_ID_LENGTH} are allowed",
        )
    if "@" in schedule_id:
        raise ScheduleClientValidationError(schedule_id, "schedule_id must not contain '@'")
    if _has_control_character(schedule_id):
        raise ScheduleClientValidationError(schedule_id, "schedule_id must not contain control characters")
    return schedule_id


def check_orchestration_name(schedule_id: str, name: Any) -> str:
    """The orchestration name must be a non-empty string of at most 256 characters."""
    if not isinstance(name, str) or not name:
        raise ScheduleClientValidationError(schedule_id, "orchestration_name cannot be empty")
    if len(name) > MAX_INSTANCE_ID_LENGTH:
        raise ScheduleClientValidationError(
            schedule_id, f"orchestration_name is {len(name)} characters long; at most {MAX_INSTANCE_ID_LENGTH}"
        )
    return name


def check_instance_id(schedule_id: str, instance_id: Any) -> str | None:
    """A fixed orchestration instance ID, when given, must be a valid instance ID ('' means none)."""
    if instance_id is None or instance_id == "":
        return None
    if not isinstance(instance_id, str):
        raise ScheduleClientValidationError(
            schedule_id, f"orchestration_instance_id must be a string, not {type(instance_id).__name__}"
        )
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise ScheduleClientValidationError(
            schedule_id,
            f"orchestration_instance_id is {len(instance_id)} characters long; at most {MAX_INSTANCE_ID_LENGTH}",
        )
    if instance_id.startswith("@"):
        raise ScheduleClientValidationError(
            schedule_id, "orchestration_instance_id must not start with '@' (reserved for entities)"
        )
    if _has_control_character(instance_id):
        raise ScheduleClientValidationError(schedule_id, "orchestration_instance_id must not contain control characters")
    return instance_id


def check_interval(schedule_id: str, interval: Any) -> timedelta:
    """An interval must be a timedelta of at least one second."""
    if not isinstance(interval, timedelta):
        raise ScheduleClientValidationError(
            schedule_id, f"interval must be a datetime.timedelta, not {type(interval).__name__}"
        )
    if interval <= timedelta(0):
        raise ScheduleClientValidationError(schedule_id, f"interval must be positive, got {interval}")
    if interval < MINIMUM_INTERVAL:
        raise ScheduleClientValidationError(schedule_id, f"interval must be at least 1 second, got {interval}")
    return interval


def check_cron(schedule_id: str, cron: Any) -> CronExpression:
    """Parse a cron expression; a bad one raises ScheduleClientValidationError naming the field."""
    try:
        return CronExpression.parse(cron)
    except CronExpressionError as err:
        raise ScheduleClientValidationError(schedule_id, str(err)) from err


def check_datetime(schedule_id: str, name: str, value: Any) -> datetime | None:
    """A start or end time must be a datetime (naive ones are taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ScheduleClientValidationError(schedule_id, f"{name} must be a datetime, not {type(value).__name__}")
    return to_utc(value)


def check_window(schedule_id: str, start_at: datetime | None, end_at: datetime | None) -> None:
    """The end of a schedule cannot come before its start."""
    if start_at is not None and end_at is not None and end_at < start_at:
        raise ScheduleClientValidationError(
            schedule_id, f"end_at ({iso(end_at)}) is before start_at ({iso(start_at)})"
        )


def _has_control_character(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
