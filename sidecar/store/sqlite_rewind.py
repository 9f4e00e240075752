"""Rewind in the SQLite store: reopening a FAILED instance, and bringing back its sub-orchestrations.

Like ``sqlite_commit``, every function runs inside a transaction opened by the caller and
records what it touched in ``changes``.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.engine_events import status_name
from sidecar.engine_rewind import rewound_event
from sidecar.model import InstanceSnapshot, NewInstanceSpec, ParentRef, RewindPlan
from sidecar.store import sqlite_commit as commit
from sidecar.store.base import ChangeSet, InvalidStateError
from sidecar.store.sqlite_rows import to_us

log = logging.getLogger("durabletask-sidecar.store")

_FAILED = pb.ORCHESTRATION_STATUS_FAILED


def begin_rewind(
    db: sqlite3.Connection,
    inst: InstanceSnapshot,
    event: pb.HistoryEvent,
    now: datetime,
    changes: ChangeSet,
    parent: ParentRef | None = None,
) -> None:
    """Mark a FAILED instance RUNNING and put ``event`` (executionRewound) alone in its inbox.

    ``parent`` re-links a sub-orchestration to its parent's new execution.
    """
    if inst.status != _FAILED:
        raise InvalidStateError(
            f"cannot rewind orchestration instance '{inst.instance_id}': it is {status_name(inst.status)}; "
            "only a FAILED instance can be rewound"
        )
    iid = inst.instance_id
    # Leftovers of the failed execution would be delivered together with the rewind request.
    db.execute("DELETE FROM inbox WHERE instance_id = ?", (iid,))
    db.execute("DELETE FROM activity_tasks WHERE instance_id = ?", (iid,))
    db.execute(
        "UPDATE instances SET status = ?, output = NULL, failure = NULL, completed_at = NULL, last_updated_at = ?,"
        " available_at = 0, abandon_count = 0 WHERE instance_id = ?",
        (pb.ORCHESTRATION_STATUS_RUNNING, to_us(now), iid),
    )
    if parent is not None:
        _relink(db, iid, parent)
    commit.insert_inbox(db, iid, event, now)
    changes.instances.add(iid)
    changes.work_available = True


def _relink(db: sqlite3.Connection, child_id: str, parent: ParentRef) -> None:
    db.execute(
        "UPDATE instances SET parent_execution_id = ?, parent_task_id = ? WHERE instance_id = ?",
        (parent.execution_id, parent.task_scheduled_id, child_id),
    )


def rewind_children(
    db: sqlite3.Connection, parent_id: str, plan: RewindPlan, now: datetime, changes: ChangeSet
) -> None:
    """Bring back the sub-orchestrations a rewound parent still waits for (see ``RewindPlan``)."""
    for spec in plan.children:
        assert spec.parent is not None
        child = commit.load_instance(db, spec.instance_id)
        if child is None:
            _recreate(db, spec, now, changes)
            continue
        if child.parent is None or child.parent.instance_id != parent_id:
            log.warning(
                "rewind of '%s': instance '%s' now belongs to another parent; leaving it alone",
                parent_id, spec.instance_id,
            )
            continue
        if child.status == _FAILED:
            event = rewound_event(now, plan.reason, spec.parent.execution_id)
            begin_rewind(db, child, event, now, changes, parent=spec.parent)
        elif child.is_terminal:
            # It finished, but the parent failed before taking the outcome: report it again.
            child.parent = spec.parent
            message = engine.parent_notification(child, child.status, child.output, child.failure, now)
            _relink(db, child.instance_id, spec.parent)
            if message is not None:
                commit.deliver_message(db, message, now, changes)
        else:
            _relink(db, child.instance_id, spec.parent)
            changes.instances.add(child.instance_id)


def _recreate(db: sqlite3.Connection, spec: NewInstanceSpec, now: datetime, changes: ChangeSet) -> None:
    """A child that was purged runs again from the start, as it was first created."""
    child = InstanceSnapshot(
        instance_id=spec.instance_id,
        execution_id=spec.execution_id,
        name=spec.name,
        status=pb.ORCHESTRATION_STATUS_PENDING,
        created_at=now,
        last_updated_at=now,
        version=spec.version,
        input=spec.input,
        parent=spec.parent,
        tags=dict(spec.tags),
    )
    commit.insert_instance(db, child, spec.start_event, now)
    changes.instances.add(spec.instance_id)
    changes.work_available = True
