"""Rewind: reopening a FAILED instance, and bringing back the sub-orchestrations it waits for.

Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.engine_events import status_name
from sidecar.engine_rewind import rewound_event
from sidecar.hub.delivery import deliver_to_instance, pending_instance
from sidecar.model import InstanceSnapshot, NewInstanceSpec, ParentRef, RewindPlan
from sidecar.quoting import log_text
from sidecar.store.base import InvalidStateError, StoreTx

log = logging.getLogger("durabletask-sidecar.hub")

_FAILED = pb.ORCHESTRATION_STATUS_FAILED


def begin_rewind(
    tx: StoreTx, inst: InstanceSnapshot, event: pb.HistoryEvent, now: datetime, parent: ParentRef | None = None
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
    tx.clear_inbox(iid)
    tx.delete_activity_tasks(iid)
    inst.status = pb.ORCHESTRATION_STATUS_RUNNING
    inst.output = None
    inst.failure = None
    inst.completed_at = None
    inst.last_updated_at = now
    if parent is not None:
        inst.parent = parent
    tx.update_instance(inst, end_lease=True)
    tx.add_inbox(iid, event, now)


def rewind_children(tx: StoreTx, parent_id: str, plan: RewindPlan, now: datetime) -> None:
    """Bring back the sub-orchestrations a rewound parent still waits for (see ``RewindPlan``)."""
    for spec in plan.children:
        assert spec.parent is not None
        child = tx.instance(spec.instance_id, lock=True)
        if child is None:
            _recreate(tx, spec, now)
            continue
        if child.parent is None or child.parent.instance_id != parent_id:
            log.warning(
                "rewind of '%s': instance '%s' now belongs to another parent; leaving it alone",
                log_text(parent_id), log_text(spec.instance_id),
            )
            continue
        if child.status == _FAILED:
            event = rewound_event(now, plan.reason, spec.parent.execution_id)
            begin_rewind(tx, child, event, now, parent=_relinked(child.parent, spec.parent))
        elif child.is_terminal:
            # It finished, but the parent failed before taking the outcome: report it again.
            child.parent = _relinked(child.parent, spec.parent)
            message = engine.parent_notification(child, child.status, child.output, child.failure, now)
            tx.relink_parent(child.instance_id, spec.parent.execution_id, spec.parent.task_scheduled_id)
            if message is not None:
                deliver_to_instance(tx, message, now)
        else:
            tx.relink_parent(child.instance_id, spec.parent.execution_id, spec.parent.task_scheduled_id)


def _relinked(current: ParentRef, new: ParentRef) -> ParentRef:
    """The stored parent reference with the new execution and task (name and version kept)."""
    return ParentRef(
        instance_id=current.instance_id,
        execution_id=new.execution_id,
        task_scheduled_id=new.task_scheduled_id,
        name=current.name,
        version=current.version,
    )


def _recreate(tx: StoreTx, spec: NewInstanceSpec, now: datetime) -> None:
    """A child that was purged runs again from the start, as it was first created."""
    tx.insert_instance(pending_instance(spec, now))
    tx.add_inbox(spec.instance_id, spec.start_event, now)
