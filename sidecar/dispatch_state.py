"""The dispatcher's options and the records it keeps of the work items its streams hold."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sidecar.entity_scheduler import DEFAULT_MAX_BATCH
from sidecar.work_streams import ReplayMark, WorkKind, WorkStream


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DispatchOptions:
    """Timing and capacity knobs of the dispatcher (tests shorten them)."""

    orchestration_lease: timedelta = timedelta(seconds=30)
    activity_lease: timedelta = timedelta(seconds=30)
    health_ping_interval: float = 30.0
    stream_grace: float = 2.0
    safety_poll: float = 1.0
    default_max_orchestrations: int = 100
    default_max_activities: int = 100
    entity_lease: timedelta = timedelta(seconds=30)
    default_max_entities: int = 100
    entity_batch_size: int = DEFAULT_MAX_BATCH
    # Largest entity state, and largest sum of operation sizes in one batch (bytes); the
    # server sets half its maximum message size, so that both fit in one work item.
    entity_payload_limit: int | None = None
    # The largest message a stream may send (bytes; the server sets its maximum message size):
    # a larger work item goes without its past events to a worker that can stream the history,
    # or else fails its orchestration, activity or entity operations with a failure naming the
    # limit. None: no check.
    max_message_size: int | None = None
    # Longest a stream holds one work item: its lease is renewed while the stream lives, up
    # to this long after it was handed out; then the lease runs out and the item goes to a
    # worker again (its old token becomes stale once the item is leased again).
    orchestration_max_hold: timedelta = timedelta(minutes=10)
    activity_max_hold: timedelta = timedelta(hours=1)
    entity_max_hold: timedelta = timedelta(minutes=10)

    def lease_of(self, kind: WorkKind) -> timedelta:
        """The lease length of a work item of ``kind``."""
        return {
            WorkKind.ORCHESTRATION: self.orchestration_lease,
            WorkKind.ACTIVITY: self.activity_lease,
            WorkKind.ENTITY: self.entity_lease,
        }[kind]

    def max_hold_of(self, kind: WorkKind) -> timedelta:
        """The maximum hold time of a work item of ``kind``."""
        return {
            WorkKind.ORCHESTRATION: self.orchestration_max_hold,
            WorkKind.ACTIVITY: self.activity_max_hold,
            WorkKind.ENTITY: self.entity_max_hold,
        }[kind]


@dataclass
class Outcome:
    """Whether a completion committed."""

    completed: bool = False


@dataclass(frozen=True)
class HeldTurn:
    """The orchestration a turn token belongs to."""

    instance_id: str
    name: str
    version: str | None
    execution_id: str


@dataclass(eq=False)
class Held:
    """A token handed to a stream: until when its lease may be renewed, and how far it is."""

    stream: WorkStream
    kind: WorkKind
    deadline: datetime  # the clock time at which the stream's hold ends
    renewed_until: datetime
    turn: HeldTurn | None = None
    # What the worker has seen once it completes the turn.
    replay_mark: ReplayMark | None = None
    handed_out: float = field(default_factory=time.monotonic)  # for the turn-duration metric


def raise_if_failed(errors: Sequence[BaseException | None]) -> None:
    """Raise the error of a lone completion settled with the batch methods, if it failed."""
    if errors[0] is not None:
        raise errors[0]


def forget_turn(turns_out: dict[str, str], instance_id: str, token: str) -> None:
    """The turn held by ``token`` is no longer out: forget it, unless a later turn of the instance is."""
    if turns_out.get(instance_id) == token:
        del turns_out[instance_id]


@dataclass(eq=False)
class Rejection:
    """The open streams that handed a turn of an instance back (its execution, name and version)."""

    turn: HeldTurn
    streams: set[int] = field(default_factory=set)
