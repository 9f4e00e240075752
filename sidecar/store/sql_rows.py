"""Conversions between SQL rows and model objects, shared by every SQL store.

Times are stored as integer microseconds since the Unix epoch (UTC); events as
serialized ``HistoryEvent`` bytes. Rows are mappings from column name to value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import EPOCH, TERMINAL_STATUSES, ActivityTaskSpec, InstanceSnapshot, ParentRef

TERMINAL_SQL = "(" + ",".join(str(s) for s in sorted(TERMINAL_STATUSES)) + ")"

INSTANCE_COLUMNS = (
    "instance_id, execution_id, name, version, status, input, output, custom_status, failure, "
    "created_at, last_updated_at, completed_at, scheduled_start_at, parent_instance_id, "
    "parent_execution_id, parent_task_id, parent_name, parent_version, tags, trace_context"
)



def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


def opt_us(when: datetime | None) -> int | None:
    return None if when is None else to_us(when)


def opt_dt(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def event_kind(event: pb.HistoryEvent) -> str:
    """The name of the event's oneof field (``executionStarted``, ``timerFired``...)."""
    return event.WhichOneof("eventType") or ""


def instance_values(inst: InstanceSnapshot) -> tuple[object, ...]:
    """The values of INSTANCE_COLUMNS for an instance."""
    parent = inst.parent
    return (
        inst.instance_id,
        inst.execution_id,
        inst.name,
        inst.version,
        inst.status,
        inst.input,
        inst.output,
        inst.custom_status,
        inst.failure.SerializeToString() if inst.failure is not None else None,
        to_us(inst.created_at),
        to_us(inst.last_updated_at),
        opt_us(inst.completed_at),
        opt_us(inst.scheduled_start_at),
        parent.instance_id if parent else None,
        parent.execution_id if parent else None,
        parent.task_scheduled_id if parent else None,
        parent.name if parent else None,
        parent.version if parent else None,
        json.dumps(inst.tags or {}),
        inst.trace_context.SerializeToString() if inst.trace_context is not None else None,
    )


def row_to_instance(row: Mapping[str, Any]) -> InstanceSnapshot:
    """An InstanceSnapshot from a row that has (at least) INSTANCE_COLUMNS."""
    parent = None
    if row["parent_instance_id"] is not None:
        parent = ParentRef(
            instance_id=row["parent_instance_id"],
            execution_id=row["parent_execution_id"],
            task_scheduled_id=row["parent_task_id"] if row["parent_task_id"] is not None else -1,
            name=row["parent_name"],
            version=row["parent_version"],
        )
    failure = None
    if row["failure"] is not None:
        failure = pb.TaskFailureDetails.FromString(row["failure"])
    return InstanceSnapshot(
        instance_id=row["instance_id"],
        execution_id=row["execution_id"],
        name=row["name"],
        status=row["status"],
        created_at=from_us(row["created_at"]),
        last_updated_at=from_us(row["last_updated_at"]),
        version=row["version"],
        input=row["input"],
        output=row["output"],
        custom_status=row["custom_status"],
        failure=failure,
        completed_at=opt_dt(row["completed_at"]),
        scheduled_start_at=opt_dt(row["scheduled_start_at"]),
        parent=parent,
        tags=json.loads(row["tags"] or "{}"),
        trace_context=(
            pb.OrchestrationTraceContext.FromString(row["trace_context"]) if row["trace_context"] else None
        ),
    )


def row_to_task(row: Mapping[str, Any]) -> ActivityTaskSpec:
    """An ActivityTaskSpec from an activity_tasks row."""
    return ActivityTaskSpec(
        instance_id=row["instance_id"],
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        name=row["name"],
        version=row["version"],
        input=row["input"],
        tags=json.loads(row["tags"] or "{}"),
        trace_context=pb.TraceContext.FromString(row["trace_context"]) if row["trace_context"] else None,
    )


def pack_events(events: list[pb.HistoryEvent]) -> bytes:
    """Serialize a list of events as one blob."""
    return pb.HistoryChunk(events=events).SerializeToString()


def unpack_events(blob: bytes | None) -> list[pb.HistoryEvent]:
    """The events of a blob written by pack_events."""
    if not blob:
        return []
    return list(pb.HistoryChunk.FromString(blob).events)


# A turn's lease holds its inbox rows out of sight (their visible_at is the lease's end) and keeps
# when each was visible before (instances.lease_inbox and lease_visible, parallel JSON lists).
RESTORE_HELD_ROW_SQL = "UPDATE inbox SET visible_at = ? WHERE seq = ?"


def held_rows(lease_inbox: str | None, lease_visible: str | None) -> list[tuple[int, int]]:
    """(visible time in microseconds, inbox seq) of each row a turn lease holds, to restore them."""
    if not lease_inbox or not lease_visible:  # none held, or leased before lease_visible existed
        return []
    return list(zip(json.loads(lease_visible), json.loads(lease_inbox), strict=True))
