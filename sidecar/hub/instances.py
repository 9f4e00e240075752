"""Orchestration instances: creating, routing messages, committing a turn, terminating, purging.

Every function runs inside the caller's transaction (``tx``), decides from what it reads
there, and writes through ``tx``; none commits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import NamedTuple

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine
from sidecar.engine_events import status_name
from sidecar.entity_scheduler import message_kind
from sidecar.hub.delivery import deliver_to_instance, pending_instance, start_instance_unless_live
from sidecar.hub.entity_routing import deliver_to_entity, release_holder
from sidecar.model import TERMINAL_STATUSES, InstanceSnapshot, OutboundMessage, TurnResult
from sidecar.store.base import InstanceExistsError, InstanceNotFoundError, InvalidStateError, StoreTx

_SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED
_RUNNING = pb.ORCHESTRATION_STATUS_RUNNING


def existing(tx: StoreTx, instance_id: str, *, lock: bool = True) -> InstanceSnapshot:
    """The instance, or InstanceNotFoundError."""
    inst = tx.instance(instance_id, lock=lock)
    if inst is None:
        raise InstanceNotFoundError(instance_id)
    return inst


class NewInstance(NamedTuple):
    """What :func:`create_instance` needs of one new instance (one StartInstance, or one restart)."""

    instance: InstanceSnapshot
    start_event: pb.HistoryEvent
    visible_at: datetime
    now: datetime
    replaceable: Collection[int] | None = None


def create_instance(
    tx: StoreTx,
    instance: InstanceSnapshot,
    start_event: pb.HistoryEvent,
    visible_at: datetime,
    now: datetime,
    replaceable: Collection[int] | None,
) -> None:
    """Create an instance (PENDING) with ``start_event`` in its inbox, visible at ``visible_at``.

    An existing instance with the same ID is replaced when ``replaceable`` is None and it is
    terminal, or when its status is in ``replaceable`` (a live one is terminated first).
    Otherwise raises InstanceExistsError, before anything is written.
    """
    old = tx.instance(instance.instance_id, lock=True)
    if old is not None:
        allowed = old.is_terminal if replaceable is None else old.status in set(replaceable)
        if not allowed:
            raise InstanceExistsError(old.instance_id, old.status)
        if not old.is_terminal:
            terminate(tx, old.instance_id, None, False, now)
        tx.delete_instance(old.instance_id)
    tx.insert_instance(instance)
    tx.add_inbox(instance.instance_id, start_event, visible_at)


def create_instances(tx: StoreTx, requests: Sequence[NewInstance]) -> list[InstanceExistsError | None]:
    """Create each of ``requests`` in order, as :func:`create_instance` would one at a time.

    An ID in use that may not be replaced fails only its own request: its InstanceExistsError
    is returned in its place (None for each one created), since nothing was written for it.
    A later request sees the earlier ones, so two with the same ID fare as they would in turn.
    """
    outcomes: list[InstanceExistsError | None] = []
    for request in requests:
        try:
            create_instance(tx, *request)
        except InstanceExistsError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


def route_message(tx: StoreTx, sender: str, msg: OutboundMessage, now: datetime) -> bool:
    """Send a message to an entity (signal, call, lock, unlock) or to an orchestration's inbox."""
    if message_kind(msg.event) is not None:
        return deliver_to_entity(tx, msg.target_instance_id, sender, msg.event, msg.visible_at, now)
    return deliver_to_instance(tx, msg, now)


def merged_status(result_status: int, row_status: int) -> int:
    """The status to store after a turn: the row is authoritative for suspension (Suspend/Resume
    RPCs change it while a turn runs), the turn for finishing."""
    if result_status in TERMINAL_STATUSES:
        return result_status
    if row_status == _SUSPENDED:
        return _SUSPENDED
    if result_status == _SUSPENDED:
        return _RUNNING
    return result_status


def apply_turn_result(
    tx: StoreTx, result: TurnResult, now: datetime, row: InstanceSnapshot, consumed_inbox: Collection[int] = ()
) -> None:
    """Commit one turn's (or a termination's) result: history, row, inbox, tasks, messages.

    ``row`` is the instance as stored before the result (its status and execution).
    """
    inst = result.instance
    iid = inst.instance_id
    inst.status = merged_status(inst.status, row.status)
    inst.last_updated_at = now

    if result.reset_history is not None:
        tx.replace_history(iid, result.reset_history)
    else:
        tx.append_history(iid, result.history_append)
    tx.update_instance(inst, end_lease=True)

    if inst.is_terminal:
        tx.clear_finished(iid)  # the consumed inbox rows with the rest
    else:
        tx.delete_inbox(consumed_inbox)
        if inst.execution_id != row.execution_id:
            tx.clear_inbox(iid, keep_execution=inst.execution_id)
            tx.delete_activity_tasks(iid, keep_execution=inst.execution_id)
        tx.prepend_inbox(iid, result.inbox_prepend, now)
        tx.add_activity_tasks(result.activity_tasks, now)

    for spec in result.new_instances:
        start_instance_unless_live(tx, pending_instance(spec, now), spec.start_event, now, f"orchestration '{iid}'")

    for msg in result.messages:
        route_message(tx, iid, msg, now)

    for term in result.terminations:
        terminate(tx, term.instance_id, term.output, term.recurse, now)

    if inst.is_terminal:
        # Entity locks held by a finished orchestration are released in its final commit.
        release_holder(tx, iid, now)


def terminate(
    tx: StoreTx, instance_id: str, output: str | None, recurse: bool, now: datetime, _seen: set[str] | None = None
) -> bool:
    """Terminate a live instance; with ``recurse``, also its live descendants. False if it was not live."""
    seen = _seen if _seen is not None else set()
    if instance_id in seen:
        return False
    seen.add(instance_id)
    inst = tx.instance(instance_id, lock=True)
    if inst is None or inst.is_terminal:
        return False
    apply_turn_result(tx, engine.terminate(inst, output, now), now, row=inst)
    if recurse:
        for child in tx.child_ids(instance_id, live_only=True):
            terminate(tx, child, output, True, now, seen)
    return True


def purge(tx: StoreTx, instance_id: str, recursive: bool) -> int:
    """Delete a finished instance (and, when recursive, its finished descendants). Returns the count."""
    inst = tx.instance(instance_id, lock=True)
    if inst is None or not inst.is_terminal:
        return 0
    count = 0
    if recursive:
        for child in tx.child_ids(instance_id, live_only=False):
            if child != instance_id:
                count += purge(tx, child, True)
    tx.delete_instance(instance_id)
    return count + 1


def check_purgeable(tx: StoreTx, instance_ids: Collection[str]) -> None:
    """InvalidStateError naming the first instance that has not finished."""
    for iid in instance_ids:
        inst = tx.instance(iid, lock=True)
        if inst is not None and not inst.is_terminal:
            raise InvalidStateError(
                f"cannot purge orchestration instance '{iid}': it has not finished "
                f"(status {status_name(inst.status)}); terminate it first"
            )


def set_suspension(tx: StoreTx, instance_id: str, event: pb.HistoryEvent, now: datetime, suspend: bool) -> bool:
    """Mark SUSPENDED (or RUNNING) and queue ``event``. False when it already was in that state."""
    inst = existing(tx, instance_id)
    verb = "suspend" if suspend else "resume"
    if inst.is_terminal:
        raise InvalidStateError(
            f"cannot {verb} orchestration instance '{instance_id}': it has already finished "
            f"(status {status_name(inst.status)})"
        )
    if (inst.status == _SUSPENDED) == suspend:
        return False
    inst.status = _SUSPENDED if suspend else _RUNNING
    inst.last_updated_at = now
    tx.update_instance(inst, end_lease=False)
    tx.add_inbox(instance_id, event, now)
    return True
