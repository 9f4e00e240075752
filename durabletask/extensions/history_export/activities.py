"""The two activities of an export job, and how a worker gets them.

``list_terminal_instances`` reads one page of IDs of terminal instances matching the job's
filter (``list_instance_ids``); ``export_instance_history`` reads one instance's state and
history, writes the file through the ``HistoryWriter`` and reports ``{"instance_id",
"success", "error"}`` (it reports failures rather than raising them, so the orchestrator can
retry the page and record what failed).

The client and writer cannot travel in activity inputs, so the activities obtain them from a
``HistoryExportContext`` returned by a resolver called once per execution: a host may build
them per call. ``run_list_terminal_instances`` and ``run_export_instance_history`` are the
bodies with the context passed explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.extensions.history_export._common import (
    EXPORT_INSTANCE_HISTORY_ACTIVITY,
    LIST_TERMINAL_INSTANCES_ACTIVITY,
    dt_from_iso,
)
from durabletask.extensions.history_export.models import (
    TERMINAL_RUNTIME_STATUSES,
    ExportFormat,
    ExportFormatKind,
)
from durabletask.extensions.history_export.serialization import (
    content_encoding_for,
    content_type_for,
    file_extension_for,
    orchestration_state_to_dict,
    serialize_history,
)
from durabletask.extensions.history_export.writer import HistoryWriter
from durabletask.worker import TaskHubGrpcWorker


@dataclass
class HistoryExportContext:
    """What the activities need at run time: a client of the task hub and the destination writer."""

    client: TaskHubGrpcClient
    writer: HistoryWriter


HistoryExportContextResolver = Callable[[], HistoryExportContext]
"""Returns the context for one activity execution."""


def build_list_activity_input(
    *,
    runtime_status_names: list[str] | None,
    completed_time_from: datetime,
    completed_time_to: datetime | None,
    page_size: int,
    continuation_token: str | None,
) -> dict[str, Any]:
    """The input of ``list_terminal_instances`` (statuses by enum name, times as ISO strings)."""
    return {
        "runtime_status": runtime_status_names,
        "completed_time_from": completed_time_from.isoformat(),
        "completed_time_to": None if completed_time_to is None else completed_time_to.isoformat(),
        "page_size": page_size,
        "continuation_token": continuation_token,
    }


def run_list_terminal_instances(context: HistoryExportContext, input: Mapping[str, Any]) -> dict[str, Any]:
    """One page of matching instance IDs: ``{"instance_ids": [...], "continuation_token": ...}``."""
    completed_from = dt_from_iso(input.get("completed_time_from"))
    if completed_from is None:
        raise ValueError("list_terminal_instances requires 'completed_time_from'")
    names = input.get("runtime_status")
    try:
        statuses = None if names is None else [OrchestrationStatus[str(n)] for n in names]
    except KeyError as unknown:
        raise ValueError(f"list_terminal_instances: unknown runtime status {unknown}") from None
    page_size = input.get("page_size")
    token = input.get("continuation_token")
    page = context.client.list_instance_ids(
        runtime_status=statuses,
        completed_time_from=completed_from,
        completed_time_to=dt_from_iso(input.get("completed_time_to")),
        page_size=None if page_size is None else int(page_size),
        continuation_token=None if token is None else str(token),
    )
    return {"instance_ids": list(page.items), "continuation_token": page.continuation_token}


def _result(instance_id: str, error: str | None) -> dict[str, Any]:
    return {"instance_id": instance_id, "success": error is None, "error": error}


def run_export_instance_history(context: HistoryExportContext, input: Mapping[str, Any]) -> dict[str, Any]:
    """Write one instance's history; returns ``{"instance_id", "success", "error"}``."""
    instance_id = str(input["instance_id"])
    fmt_data = input.get("format") or {"kind": ExportFormatKind.JSONL_GZIP.value, "schema_version": "1.0"}
    if not isinstance(fmt_data, Mapping):
        raise TypeError("export_instance_history: 'format' must be a mapping")
    fmt = ExportFormat.from_dict(fmt_data)
    destination = input.get("destination") or {}
    container = destination.get("container")
    if not container:
        raise ValueError("export_instance_history: destination.container is required")
    prefix = destination.get("prefix")
    try:
        state = context.client.get_orchestration_state(instance_id, fetch_payloads=True)
        if state is None:
            return _result(instance_id, f"instance {instance_id!r} no longer exists or has been purged")
        if state.runtime_status not in TERMINAL_RUNTIME_STATUSES:
            return _result(
                instance_id,
                f"instance {instance_id!r} is no longer terminal (runtime_status={state.runtime_status.name})",
            )
        events = context.client.get_orchestration_history(instance_id)
        payload = serialize_history(
            events, instance_id=instance_id, fmt=fmt, metadata=orchestration_state_to_dict(state)
        )
        context.writer.write(
            instance_id=instance_id,
            container=str(container),
            blob_name=blob_name_for(instance_id, state.last_updated_at, None if prefix is None else str(prefix), fmt),
            payload=payload,
            content_type=content_type_for(fmt),
            content_encoding=content_encoding_for(fmt),
            metadata={"instance_id": instance_id},
        )
    except Exception as err:  # reported to the orchestrator, which retries the page
        return _result(instance_id, f"{type(err).__name__}: {err}")
    return _result(instance_id, None)


def dotnet_round_trip_time(value: datetime) -> str:
    """``value`` as .NET's ``DateTimeOffset.ToString("O")`` writes it: seven fraction digits, ``+HH:MM``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    offset = value.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond:06d}0{sign}{hours:02d}:{mins:02d}"


def blob_name_for(instance_id: str, last_updated_at: datetime, prefix: str | None, fmt: ExportFormat) -> str:
    """The file name of one export: SHA-256 (hex) of "<last update, .NET "O" format>|<instance ID>".

    Re-exporting the same completion gives the same name; a later completion of the same ID a
    new one. A prefix becomes a "folder" (its trailing slashes dropped). The scheme is the
    official extensions' (Python and .NET), so their files and ours never collide by accident.
    """
    digest = hashlib.sha256(f"{dotnet_round_trip_time(last_updated_at)}|{instance_id}".encode()).hexdigest()
    name = digest + file_extension_for(fmt)
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


def build_activities(resolver: HistoryExportContextResolver) -> tuple[task.Activity[Any, Any], task.Activity[Any, Any]]:
    """``(list_terminal_instances, export_instance_history)`` bound to ``resolver``, under their activity names."""

    def list_terminal_instances(_: task.ActivityContext, input: Mapping[str, Any]) -> dict[str, Any]:
        return run_list_terminal_instances(resolver(), input)

    def export_instance_history(_: task.ActivityContext, input: Mapping[str, Any]) -> dict[str, Any]:
        return run_export_instance_history(resolver(), input)

    list_terminal_instances.__name__ = LIST_TERMINAL_INSTANCES_ACTIVITY
    export_instance_history.__name__ = EXPORT_INSTANCE_HISTORY_ACTIVITY
    return list_terminal_instances, export_instance_history


def register(worker_instance: TaskHubGrpcWorker, resolver: HistoryExportContextResolver) -> None:
    """Add both activities to ``worker_instance``."""
    for activity in build_activities(resolver):
        worker_instance.add_activity(activity)


__all__ = [
    "EXPORT_INSTANCE_HISTORY_ACTIVITY",
    "LIST_TERMINAL_INSTANCES_ACTIVITY",
    "HistoryExportContext",
    "HistoryExportContextResolver",
    "blob_name_for",
    "build_activities",
    "build_list_activity_input",
    "dt_from_iso",
    "register",
    "run_export_instance_history",
    "run_list_terminal_instances",
]
