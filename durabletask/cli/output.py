"""Plain-text tables, JSON output, time formatting and the stderr progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from durabletask.client import OrchestrationState

EMPTY = "-"


def format_time(value: datetime | None) -> str:
    """A UTC time as ``2024-05-01 12:00:00`` (naive times are taken as UTC)."""
    if value is None:
        return EMPTY
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def iso_time(value: datetime | None) -> str | None:
    """A UTC time in ISO 8601 with a ``Z`` (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def format_duration(delta: timedelta) -> str:
    """A short duration: ``0.125s``, ``42.0s``, ``3m05s``, ``2h03m``, ``1d02h``."""
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.3f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def shorten(text: str | None, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    if text is None:
        return EMPTY
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned text table with a header line; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def write(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` and a newline to stdout (or ``stream``)."""
    print(text, file=stream or sys.stdout)


def write_json(value: Any) -> None:
    """Print ``value`` as indented JSON."""
    write(json.dumps(value, indent=2, sort_keys=False, default=str))


def payload(text: str | None) -> Any:
    """A serialized payload for JSON output: decoded when it is JSON, else the raw text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def state_to_json(state: OrchestrationState) -> dict[str, Any]:
    """An instance's state as a JSON object (payloads decoded when they are JSON)."""
    failure = state.failure_details
    return {
        "instanceId": state.instance_id,
        "name": state.name,
        "status": state.runtime_status.name,
        "version": state.version,
        "createdAt": iso_time(state.created_at),
        "lastUpdatedAt": iso_time(state.last_updated_at),
        "completedAt": iso_time(state.completed_at),
        "parentInstanceId": state.parent_instance_id,
        "input": payload(state.serialized_input),
        "output": payload(state.serialized_output),
        "customStatus": payload(state.serialized_custom_status),
        "tags": dict(state.tags or {}),
        "failure": None if failure is None else {
            "errorType": failure.error_type, "message": failure.message, "stackTrace": failure.stack_trace,
        },
    }


class ProgressBar:
    """A one-line progress bar redrawn on a stream (stderr); it draws nothing for a total of 0."""

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items as done and redraw."""
        self.done = min(self.total, self.done + count)
        if self.total <= 0:
            return
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self.total > 0:
            self._stream.write("\n")
            self._stream.flush()
