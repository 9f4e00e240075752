"""Names, identifiers and small helpers shared by the history-export modules (not public API).

The entity name, the orchestrator name and the orchestrator's instance-ID pattern are part of
the durable state a job leaves behind, so they match the official extension exactly: a job
created by either SDK can be read, waited for and deleted by the other.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

ENTITY_NAME = "ExportJobEntity"
ORCHESTRATOR_NAME = "export_job_orchestrator"
ORCHESTRATOR_INSTANCE_ID_PREFIX = "export-job-"
LIST_TERMINAL_INSTANCES_ACTIVITY = "list_terminal_instances"
EXPORT_INSTANCE_HISTORY_ACTIVITY = "export_instance_history"

logger = logging.getLogger("durabletask.extensions.history_export")


def orchestrator_instance_id_for(job_id: str) -> str:
    """The instance ID of the orchestrator that drives export job ``job_id``."""
    if not job_id:
        raise ValueError("job_id must be a non-empty string")
    return ORCHESTRATOR_INSTANCE_ID_PREFIX + job_id


def dt_to_iso(value: datetime | None) -> str | None:
    """``value`` as an ISO-8601 string in UTC (a naive value is taken as UTC); None stays None."""
    if value is None:
        return None
    utc = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return utc.isoformat()


def dt_from_iso(value: str | None) -> datetime | None:
    """Parse an ISO-8601 string (a value without offset is taken as UTC); None stays None."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
