"""Rules shared by every path that sends to an orchestration instance or creates one.

Each function runs inside the caller's transaction (``tx``) and decides from what it reads
there; none commits.
"""

from __future__ import annotations

import logging
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import InstanceSnapshot, NewInstanceSpec, OutboundMessage
from sidecar.quoting import log_text
from sidecar.store.base import StoreTx

log = logging.getLogger("durabletask-sidecar.hub")


def deliver_to_instance(tx: StoreTx, msg: OutboundMessage, now: datetime) -> bool:
    """Put a message in its target's inbox unless the target is missing, finished or moved on."""
    target = tx.instance(msg.target_instance_id, lock=True)
    if target is None or target.is_terminal:
        return False
    if msg.target_execution_id is not None and target.execution_id != msg.target_execution_id:
        return False
    tx.add_inbox(msg.target_instance_id, msg.event, msg.visible_at or now, msg.target_execution_id)
    return True


def start_instance_unless_live(
    tx: StoreTx, instance: InstanceSnapshot, start_event: pb.HistoryEvent, visible_at: datetime, started_by: str
) -> bool:
    """Create an instance (replacing a finished one with the same ID) unless a live instance holds the ID.

    ``started_by`` names the starter in the log line of a skipped start. False when skipped.
    """
    existing = tx.instance(instance.instance_id, lock=True)
    if existing is not None and not existing.is_terminal:
        log.warning(
            "%s started orchestration '%s' with ID '%s', which is in use by a running instance; skipped",
            log_text(started_by), log_text(instance.name), log_text(instance.instance_id),
        )
        return False
    if existing is not None:
        tx.delete_instance(instance.instance_id)
    tx.insert_instance(instance)
    tx.add_inbox(instance.instance_id, start_event, visible_at)
    return True


def pending_instance(spec: NewInstanceSpec, now: datetime) -> InstanceSnapshot:
    """The PENDING row of a sub-orchestration about to be created from its spec."""
    return InstanceSnapshot(
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
