"""File formats of exported histories.

``JSON``: one document ``{"schema_version", "instance_id", "events": [...], "metadata": {...}}``.
``JSONL_GZIP``: gzip of newline-terminated lines; the first is
``{"kind": "metadata", "schema_version", "instance_id", "metadata": {...}}``, each further line
one event. An event is its ``to_dict()`` plus ``"event_type"`` (the event class's name);
``metadata`` describes the instance (status, times, input, output, failure). Keys are sorted and
separators compact, and the gzip header carries no time, so the same history always gives the
same bytes (the official extension's layout, byte for byte).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any

from durabletask import history, task
from durabletask.client import OrchestrationState
from durabletask.extensions.history_export._common import dt_to_iso
from durabletask.extensions.history_export.models import ExportFormat, ExportFormatKind

_CONTENT_TYPES = {ExportFormatKind.JSON: "application/json", ExportFormatKind.JSONL_GZIP: "application/x-ndjson"}
_EXTENSIONS = {ExportFormatKind.JSON: ".json", ExportFormatKind.JSONL_GZIP: ".jsonl.gz"}


def event_to_dict(event: history.HistoryEvent) -> dict[str, Any]:
    """One history event as JSON values, with its class name under ``event_type``."""
    return {"event_type": type(event).__name__, **event.to_dict()}


def failure_details_to_dict(failure: task.FailureDetails) -> dict[str, Any]:
    """Failure details (and their inner failures) as JSON values."""
    inner = failure.inner_failure
    return {
        "message": failure.message,
        "error_type": failure.error_type,
        "stack_trace": failure.stack_trace,
        "inner_failure": None if inner is None else failure_details_to_dict(inner),
        "properties": failure.properties,
    }


def orchestration_state_to_dict(state: OrchestrationState) -> dict[str, Any]:
    """The instance description written beside its events."""
    failure = state.failure_details
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "runtime_status": state.runtime_status.name,
        "created_at": dt_to_iso(state.created_at),
        "last_updated_at": dt_to_iso(state.last_updated_at),
        "serialized_input": state.serialized_input,
        "serialized_output": state.serialized_output,
        "serialized_custom_status": state.serialized_custom_status,
        "failure_details": None if failure is None else failure_details_to_dict(failure),
    }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def serialize_history(
    events: Sequence[history.HistoryEvent],
    *,
    instance_id: str,
    fmt: ExportFormat,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """The file for one instance's ``events`` in format ``fmt``."""
    if fmt.kind is ExportFormatKind.JSON:
        document: dict[str, Any] = {
            "schema_version": fmt.schema_version,
            "instance_id": instance_id,
            "events": [event_to_dict(e) for e in events],
        }
        if metadata is not None:
            document["metadata"] = dict(metadata)
        return _json(document).encode("utf-8")
    if fmt.kind is ExportFormatKind.JSONL_GZIP:
        header: dict[str, Any] = {"schema_version": fmt.schema_version, "instance_id": instance_id, "kind": "metadata"}
        if metadata is not None:
            header["metadata"] = dict(metadata)
        lines = [_json(header), *(_json(event_to_dict(e)) for e in events)]
        return gzip.compress("".join(line + "\n" for line in lines).encode("utf-8"), mtime=0)
    raise ValueError(f"Unsupported export format kind: {fmt.kind!r}")


def _lookup(table: Mapping[ExportFormatKind, str], fmt: ExportFormat) -> str:
    try:
        return table[fmt.kind]
    except KeyError:
        raise ValueError(f"Unsupported export format kind: {fmt.kind!r}") from None


def content_type_for(fmt: ExportFormat) -> str:
    """The content type of files in format ``fmt``."""
    return _lookup(_CONTENT_TYPES, fmt)


def content_encoding_for(fmt: ExportFormat) -> str | None:
    """``"gzip"`` for the compressed format, else None."""
    return "gzip" if fmt.kind is ExportFormatKind.JSONL_GZIP else None


def file_extension_for(fmt: ExportFormat) -> str:
    """The file-name extension of format ``fmt`` (with its dot)."""
    return _lookup(_EXTENSIONS, fmt)


__all__ = [
    "content_encoding_for",
    "content_type_for",
    "dt_to_iso",
    "event_to_dict",
    "failure_details_to_dict",
    "file_extension_for",
    "orchestration_state_to_dict",
    "serialize_history",
]
