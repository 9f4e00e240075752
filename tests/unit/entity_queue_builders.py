"""Builders of queued entity messages for the pure entity scheduler's unit tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import entity_scheduler as sched

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

_seqs = itertools.count(1)


def next_seq() -> int:
    return next(_seqs)


def signal(sender: str, operation: str = "op", target: str = "@e@k", seq: int | None = None,
           data: str | None = None) -> sched.QueuedMessage:
    event = pb.HistoryEvent(eventId=-1)
    event.entityOperationSignaled.requestId = f"s{seq}-{operation}"
    event.entityOperationSignaled.operation = operation
    event.entityOperationSignaled.targetInstanceId.value = target
    if data is not None:
        event.entityOperationSignaled.input.value = data
    return _wrap(event, sched.SIGNAL, sender, seq)


def call(sender: str, operation: str = "op", request_id: str = "r", target: str = "@e@k",
         seq: int | None = None, execution_id: str | None = None) -> sched.QueuedMessage:
    event = pb.HistoryEvent(eventId=-1)
    called = event.entityOperationCalled
    called.requestId = request_id
    called.operation = operation
    called.targetInstanceId.value = target
    called.parentInstanceId.value = sender
    if execution_id is not None:
        called.parentExecutionId.value = execution_id
    return _wrap(event, sched.CALL, sender, seq)


def lock(sender: str, section: str, lock_set: list[str], position: int = 0,
         seq: int | None = None) -> sched.QueuedMessage:
    event = pb.HistoryEvent(eventId=-1)
    request = event.entityLockRequested
    request.criticalSectionId = section
    request.lockSet.extend(lock_set)
    request.position = position
    request.parentInstanceId.value = sender
    return _wrap(event, sched.LOCK, sender, seq)


def unlock(sender: str, section: str, target: str = "@e@k", seq: int | None = None) -> sched.QueuedMessage:
    event = pb.HistoryEvent(eventId=-1)
    event.entityUnlockSent.criticalSectionId = section
    event.entityUnlockSent.parentInstanceId.value = sender
    event.entityUnlockSent.targetInstanceId.value = target
    return _wrap(event, sched.UNLOCK, sender, seq)


def _wrap(event: pb.HistoryEvent, kind: str, sender: str, seq: int | None) -> sched.QueuedMessage:
    size = len(event.SerializeToString())
    return sched.QueuedMessage(seq=seq if seq is not None else next_seq(), kind=kind, sender=sender, event=event,
                               size=size)


def ops(batch: list[sched.QueuedMessage]) -> list[tuple[str, str]]:
    """(sender, operation) of each operation in a batch."""
    out = []
    for m in batch:
        body = m.event.entityOperationSignaled if m.kind == sched.SIGNAL else m.event.entityOperationCalled
        out.append((m.sender, body.operation))
    return out
