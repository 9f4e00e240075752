"""The sidecar's pure entity scheduler: which queued messages an entity handles next, and how.

No I/O here. The store hands in an entity's lock holder and its queue of visible messages
(oldest first) and applies what comes back, in one transaction.

An entity's queue holds four kinds of messages, each with its sender (the orchestration,
entity or client that sent it; "" for a client):

- ``signal`` / ``call``: operations, run by a worker in batches;
- ``lock``: one hop of a critical section's lock request (``lockSet[position]`` is this entity);
- ``unlock``: the critical section releases this entity.

Rules:

- Messages are handled in queue order. While the entity is locked, only the holder's
  operations are eligible; everyone else's messages wait in place, in order.
- Lock and unlock messages are handled by the sidecar itself (no worker), but only once
  every eligible operation queued before them has run, so that a lock is taken after the
  operations sent before the request and released after the holder's operations sent
  before the unlock.
- Taking the lock on ``lockSet[position]`` forwards the request to ``lockSet[position + 1]``;
  taking the last one sends ``entityLockGranted`` to the orchestration. Because every
  requester walks its (sorted) set in the same order, two overlapping sets cannot deadlock.
- A lock request whose sender is no longer running is dropped; an unlock that does not
  match the holder is dropped.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import new_event
from sidecar.model import ENTITY_OPERATION_KINDS
from sidecar.quoting import quoted

SIGNAL = "signal"
CALL = "call"
LOCK = "lock"
UNLOCK = "unlock"
OPERATION_KINDS = ENTITY_OPERATION_KINDS

# Most operations sent to a worker in one batch.
DEFAULT_MAX_BATCH = 100

_KIND_BY_EVENT = {
    "entityOperationSignaled": SIGNAL,
    "entityOperationCalled": CALL,
    "entityLockRequested": LOCK,
    "entityUnlockSent": UNLOCK,
}


class EntityIdError(ValueError):
    """An entity instance ID is not of the form ``@name@key``. Maps to INVALID_ARGUMENT."""


@dataclass(frozen=True)
class EntityId:
    """A parsed entity instance ID: the (lower-cased) entity name and the key."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"


def parse_entity_id(value: str) -> EntityId:
    """Parse ``@name@key`` (name lower-cased). Raises EntityIdError naming the ID."""
    if not value.startswith("@"):
        raise EntityIdError(f"entity instance ID {quoted(value)} is invalid: it must have the form '@name@key'")
    parts = value[1:].split("@")
    if len(parts) != 2:
        raise EntityIdError(
            f"entity instance ID {quoted(value)} is invalid: it must have the form '@name@key' "
            "(exactly two '@': the name and the key must not contain '@')"
        )
    name, key = parts
    if not name:
        raise EntityIdError(f"entity instance ID {quoted(value)} is invalid: the entity name is empty")
    if not key:
        raise EntityIdError(f"entity instance ID {quoted(value)} is invalid: the entity key is empty")
    return EntityId(name.lower(), key)


def normalize_entity_id(value: str) -> str:
    """The canonical form of an entity instance ID (entity name lower-cased)."""
    return str(parse_entity_id(value))


def is_entity_id(value: str) -> bool:
    """True when ``value`` addresses an entity (instance IDs starting with '@' are reserved for them)."""
    return value.startswith("@")


def normalize_prefix(prefix: str) -> str:
    """An instance-ID prefix for entity queries: '@' added when missing, the name part lower-cased."""
    if not prefix.startswith("@"):
        prefix = "@" + prefix
    separator = prefix.find("@", 1)
    if separator == -1:
        return prefix.lower()
    return prefix[:separator].lower() + prefix[separator:]


def message_kind(event: pb.HistoryEvent) -> str | None:
    """The queue kind of an entity message event, or None when it is not one."""
    return _KIND_BY_EVENT.get(event.WhichOneof("eventType") or "")


def critical_section_of(event: pb.HistoryEvent) -> str:
    """The critical section ID of a lock or unlock message ('' for operations)."""
    if event.HasField("entityLockRequested"):
        return event.entityLockRequested.criticalSectionId
    if event.HasField("entityUnlockSent"):
        return event.entityUnlockSent.criticalSectionId
    return ""


@dataclass(frozen=True)
class LockHolder:
    """The orchestration holding an entity's lock, and the critical section it holds it for."""

    instance_id: str
    critical_section_id: str


@dataclass
class QueuedMessage:
    """One visible message in an entity's queue (``seq`` orders the queue)."""

    seq: int
    kind: str
    sender: str
    event: pb.HistoryEvent
    size: int = 0
    # The sender's trace context (client and entity signals only; the protocol gives orchestrations' none).
    trace_context: pb.TraceContext | None = None

    @property
    def critical_section_id(self) -> str:
        return critical_section_of(self.event)

    def eligible_under(self, holder: LockHolder | None) -> bool:
        """True for an operation that may run while ``holder`` holds the lock."""
        return self.kind in OPERATION_KINDS and (holder is None or self.sender == holder.instance_id)

    def held_by(self, holder: LockHolder | None) -> bool:
        """True for a lock/unlock message of exactly the holder's critical section."""
        return (
            holder is not None
            and self.sender == holder.instance_id
            and self.critical_section_id == holder.critical_section_id
        )


@dataclass
class LockForward:
    """A lock request to deliver to the next entity of its set."""

    target: str
    sender: str
    event: pb.HistoryEvent


@dataclass
class LockGrant:
    """All locks of a critical section are held: tell the orchestration."""

    instance_id: str
    event: pb.HistoryEvent


@dataclass
class Settlement:
    """What the sidecar-handled messages at the head of a queue do."""

    holder: LockHolder | None
    consumed: list[int] = field(default_factory=list)
    forwards: list[LockForward] = field(default_factory=list)
    grants: list[LockGrant] = field(default_factory=list)
    dropped: list[QueuedMessage] = field(default_factory=list)


def settle(
    entity_id: str,
    holder: LockHolder | None,
    queue: Sequence[QueuedMessage],
    live_senders: Container[str],
    now: datetime,
) -> Settlement:
    """Apply the lock and unlock messages that are due, in queue order.

    ``queue`` is the entity's visible messages, oldest first; ``live_senders`` holds the
    orchestrations (among lock requesters) that are still running.
    """
    result = Settlement(holder=holder)
    pending = list(queue)
    while True:
        step = _next_control(result.holder, pending)
        if step is None:
            return result
        message = pending.pop(step)
        result.consumed.append(message.seq)
        if message.kind == UNLOCK:
            if message.held_by(result.holder):
                result.holder = None
            else:
                result.dropped.append(message)
        elif message.sender not in live_senders or message.held_by(result.holder):
            # A requester that has finished, or a repeated request for a lock already held.
            result.dropped.append(message)
        else:
            result.holder = LockHolder(message.sender, message.critical_section_id)
            _take_lock(entity_id, message, now, result)


def _next_control(holder: LockHolder | None, pending: list[QueuedMessage]) -> int | None:
    """Index of the lock/unlock message to handle now, or None."""
    for index, message in enumerate(pending):
        if message.kind in OPERATION_KINDS:
            if message.eligible_under(holder):
                return None  # an operation runs first
            continue
        if message.kind == UNLOCK:
            return index  # applied or dropped, either way handled now
        if holder is None or message.held_by(holder):
            return index
        # A lock request of someone else waits for the release.
    return None


def _take_lock(entity_id: str, message: QueuedMessage, now: datetime, result: Settlement) -> None:
    request = message.event.entityLockRequested
    lock_set = list(request.lockSet)
    position = request.position
    if position + 1 < len(lock_set):
        event = new_event(now)
        event.entityLockRequested.CopyFrom(request)
        event.entityLockRequested.position = position + 1
        result.forwards.append(LockForward(target=lock_set[position + 1], sender=message.sender, event=event))
        return
    granted = new_event(now)
    granted.entityLockGranted.criticalSectionId = request.criticalSectionId
    result.grants.append(LockGrant(instance_id=message.sender, event=granted))


def select_batch(
    holder: LockHolder | None,
    queue: Sequence[QueuedMessage],
    max_operations: int = DEFAULT_MAX_BATCH,
    max_bytes: int | None = None,
) -> list[QueuedMessage]:
    """The operations to send to a worker next, in queue order (call after :func:`settle`).

    Stops before a lock/unlock message that would become due (it must wait for the
    operations before it, and those after it must wait for it), at ``max_operations``, and
    before the operation that would take the batch over ``max_bytes`` (the first one is
    always taken).
    """
    batch: list[QueuedMessage] = []
    total = 0
    for message in queue:
        if message.kind in OPERATION_KINDS:
            if not message.eligible_under(holder):
                continue
            if len(batch) >= max_operations:
                break
            if batch and max_bytes is not None and total + message.size > max_bytes:
                break
            batch.append(message)
            total += message.size
            continue
        # Unlocks are due once the operations before them ran; so is a lock request when the
        # entity is free. A lock request of someone else waits, and later operations pass it.
        if message.kind == UNLOCK or holder is None or message.held_by(holder):
            break
    return batch
