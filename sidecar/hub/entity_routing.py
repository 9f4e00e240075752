"""Entity messages and locks: queueing, lock hand-over, and committing a batch's outcome.

The decisions come from the pure entity scheduler (``sidecar.entity_scheduler``) and batch
logic (``sidecar.entity_batch``); this module feeds them what the transaction reads and
writes back what they decide. Every function runs inside the caller's transaction.

An entity row exists while the entity has state, queued messages or a lock; it is deleted
as soon as it has none of them. A writer holds the entity's row lock while it queues a
message, so that a concurrent delete (on another sidecar) cannot strand the message.

A message due at once is queued as visible since the epoch, not since the sender's clock: the
settle that must see it may run in a later transaction whose "now" was read earlier, or on a
sidecar whose clock is behind; a lock request it did not see would wait for ever.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import entity_scheduler as sched
from sidecar.entity_batch import BatchOutcome
from sidecar.hub.delivery import deliver_to_instance, start_instance_unless_live
from sidecar.model import OutboundMessage
from sidecar.quoting import LOG_TEXT_LIMIT, log_text
from sidecar.store.base import EntityMessageRow, EntityRecord, StoreTx

log = logging.getLogger("durabletask-sidecar.entities")

DUE_AT_ONCE = datetime(1970, 1, 1, tzinfo=timezone.utc)


def holder_of(record: EntityRecord) -> sched.LockHolder | None:
    """The lock holder of an entity row."""
    if record.locked_by is None:
        return None
    return sched.LockHolder(record.locked_by, record.lock_section or "")


def queued(rows: list[EntityMessageRow]) -> list[sched.QueuedMessage]:
    """Queue rows as the scheduler sees them."""
    return [
        sched.QueuedMessage(
            seq=r.seq, kind=r.kind, sender=r.sender, event=r.event, size=r.size, trace_context=r.trace_context
        )
        for r in rows
    ]


def _lock_entity(tx: StoreTx, entity_id: str, now: datetime) -> EntityRecord:
    """The entity's row, created if needed, locked for this transaction."""
    name = sched.parse_entity_id(entity_id).name
    while True:
        tx.ensure_entity(entity_id, name, now)
        record = tx.entity(entity_id, lock=True)
        if record is not None:
            return record


def deliver_to_entity(
    tx: StoreTx,
    target: str,
    sender: str,
    event: pb.HistoryEvent,
    visible_at: datetime | None,
    now: datetime,
    trace_context: pb.TraceContext | None = None,
) -> bool:
    """Queue an entity message (signal, call, lock request or unlock) for ``target``.

    Creates the entity on its first message. Lock and unlock messages are settled at once.
    ``trace_context`` (a client's or an entity's signal) is kept with the message for the worker.
    Returns False when the message was dropped (invalid target ID, unlock of an unknown entity).
    """
    kind = sched.message_kind(event)
    try:
        entity_id = sched.normalize_entity_id(target)
    except sched.EntityIdError as exc:
        log.warning("dropped an entity message from '%s': %s", log_text(sender), log_text(exc))
        return False
    if kind is None:
        log.warning(
            "dropped a message for entity '%s' from '%s': not an entity message", log_text(entity_id), log_text(sender)
        )
        return False
    if kind == sched.UNLOCK and tx.entity(entity_id, lock=True) is None:
        return False
    _lock_entity(tx, entity_id, now)
    due = visible_at if visible_at is not None and visible_at > now else DUE_AT_ONCE
    tx.enqueue_entity_message(entity_id, kind, sender, event, due, trace_context)
    if kind in (sched.LOCK, sched.UNLOCK):
        settle(tx, entity_id, now)
    return True


def settle(tx: StoreTx, entity_id: str, now: datetime) -> None:
    """Apply the lock and unlock messages that are due for this entity; forward and grant locks."""
    record = tx.entity(entity_id, lock=True)
    if record is None:
        return
    holder = holder_of(record)
    queue = queued(tx.entity_queue(entity_id, now))
    requesters = [m.sender for m in queue if m.kind == sched.LOCK]
    result = sched.settle(entity_id, holder, queue, tx.live_ids(requesters), now)
    if not result.consumed:
        return
    tx.delete_entity_messages(result.consumed)
    for dropped in result.dropped:
        log.info(
            "entity '%s': dropped a stale %s message of critical section '%s' from '%s'",
            log_text(entity_id), dropped.kind, log_text(dropped.critical_section_id), log_text(dropped.sender),
        )
    if result.holder != holder:
        new = result.holder
        tx.set_entity_lock(entity_id, new.instance_id if new else None, new.critical_section_id if new else None, now)
    for forward in result.forwards:
        deliver_to_entity(tx, forward.target, forward.sender, forward.event, None, now)
    for grant in result.grants:
        deliver_to_instance(tx, OutboundMessage(grant.instance_id, grant.event), now)
    tx.delete_entity_if_empty(entity_id)


def release_holder(tx: StoreTx, instance_id: str, now: datetime) -> int:
    """An orchestration finished: release its locks and drop its pending lock requests. Returns locks released."""
    held, waiting = tx.lock_holdings(instance_id)
    if not held and not waiting:
        return 0
    for entity_id in sorted(set(held + waiting)):
        tx.entity(entity_id, lock=True)
    tx.clear_locks_held_by(instance_id, now)
    tx.delete_lock_requests_from(instance_id)
    for entity_id in dict.fromkeys(held + waiting):
        settle(tx, entity_id, now)
        tx.delete_entity_if_empty(entity_id)
    return len(held)


def apply_batch_outcome(tx: StoreTx, entity_id: str, outcome: BatchOutcome, now: datetime) -> None:
    """Commit what a worker's batch did: state, consumed operations, replies, signals, new orchestrations."""
    tx.finish_entity_batch(entity_id, outcome.state, now)
    tx.delete_entity_messages(outcome.consumed)
    for line in outcome.failed_signals:
        log.warning("%s", log_text(line, limit=2 * LOG_TEXT_LIMIT))
    for reply in outcome.replies:
        if not deliver_to_instance(tx, reply, now):
            log.info("entity '%s': result for '%s' dropped (the instance is gone or finished)",
                     log_text(entity_id), log_text(reply.target_instance_id))
    for signal in outcome.signals:
        deliver_to_entity(tx, signal.target, signal.sender, signal.event, signal.visible_at, now, signal.trace_context)
    for new in outcome.orchestrations:
        start_instance_unless_live(tx, new.instance, new.start_event, new.visible_at, f"entity '{entity_id}'")
    settle(tx, entity_id, now)
    tx.delete_entity_if_empty(entity_id)
