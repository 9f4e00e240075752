"""Reading command-line values: JSON payloads, durations, times, statuses and entity IDs.

Each reader raises ``UsageError`` naming the option and the bad value.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from durabletask.cli.errors import UsageError
from durabletask.client import OrchestrationStatus
from durabletask.entities import EntityInstanceId

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Statuses an instance can be left in for good (purge takes only these).
TERMINAL_STATUSES = (OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED)


def parse_json(text: str | None, option: str) -> Any:
    """The value of a JSON option (None when the option was not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON ({exc.msg} at position {exc.pos}): {text!r}") from None


def parse_duration(text: str, option: str = "--older-than") -> timedelta:
    """A duration such as ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``."""
    cleaned = text.strip().lower()
    pos = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise UsageError(
            f"{option}: invalid duration {text!r} (use a number and a unit s, m, h, d or w, e.g. 7d or 12h)"
        )
    return timedelta(seconds=seconds)


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00:00Z``); naive times are UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: invalid time {text!r} (use ISO 8601, e.g. 2024-05-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_status(text: str, option: str = "--status") -> OrchestrationStatus:
    """A runtime status by name, in any case (``running``, ``COMPLETED``, ``continued-as-new``)."""
    name = text.strip().upper().replace("-", "_")
    try:
        return OrchestrationStatus[name]
    except KeyError:
        allowed = ", ".join(s.name.lower() for s in OrchestrationStatus)
        raise UsageError(f"{option}: unknown status {text!r} (one of: {allowed})") from None


def parse_entity_id(text: str) -> EntityInstanceId:
    """An entity ID written ``@name@key``."""
    try:
        return EntityInstanceId.parse(text)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
