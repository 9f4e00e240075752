"""The one store interface of the sidecar: every durable state change goes through it.

Each mutating method is a single transaction. Leases (orchestration turns, activity
tasks) are rows with an owner token and an expiry, so a store shared by several
sidecars (PostgreSQL) fits the same interface. After each commit the store calls its
listeners with a :class:`ChangeSet`, which drives wake-ups of waiters and dispatchers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import ActivityTaskSpec, InstanceSnapshot

DEFAULT_PAGE_SIZE = 100
MAX_ABANDON_DELAY = timedelta(seconds=30)


@dataclass(frozen=True)
class Backoff:
    """Delay before a handed-back work item is offered again: ``first``, doubling per hand-back, at most ``cap``."""

    first: timedelta = timedelta(seconds=0.1)
    cap: timedelta = MAX_ABANDON_DELAY

    def delay(self, abandon_count: int) -> timedelta:
        """The delay after the item was handed back ``abandon_count`` times before."""
        return min(self.first * (2 ** min(abandon_count, 20)), self.cap)


def abandon_delay(abandon_count: int) -> timedelta:
    """The default back-off: 0.1 s * 2^n, capped at 30 s."""
    return Backoff().delay(abandon_count)


class StoreError(Exception):
    """Base class of the errors the store reports to the transport layer."""


class InstanceNotFoundError(StoreError):
    """No instance with this ID exists. Maps to NOT_FOUND."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no orchestration instance with ID '{instance_id}'")
        self.instance_id = instance_id


class InstanceExistsError(StoreError):
    """The ID is taken by an instance whose status may not be replaced. Maps to ALREADY_EXISTS."""

    def __init__(self, instance_id: str, status: int) -> None:
        name = pb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")  # type: ignore[arg-type]
        super().__init__(f"an orchestration instance with ID '{instance_id}' already exists (status {name})")
        self.instance_id = instance_id
        self.status = status


class InvalidStateError(StoreError):
    """The instance is not in a state that allows the operation. Maps to FAILED_PRECONDITION."""


class LeaseNotFoundError(StoreError):
    """The completion token is unknown or no longer valid (stale). Maps to NOT_FOUND."""

    def __init__(self, token: str) -> None:
        super().__init__(
            f"completion token '{token}' is unknown or stale (the work item was completed, "
            "abandoned, its lease expired or the instance was terminated)"
        )
        self.token = token


class StoreLockedError(StoreError):
    """Another sidecar process already owns this store."""


@dataclass
class ChangeSet:
    """What a committed transaction touched: instances whose state changed, and whether work appeared."""

    instances: set[str] = field(default_factory=set)
    work_available: bool = False
    reset: bool = False


@dataclass
class OrchestrationWorkItem:
    """A leased orchestration turn: the token, the instance and the events sent to the worker."""

    token: str
    instance: InstanceSnapshot
    past_events: list[pb.HistoryEvent]
    new_events: list[pb.HistoryEvent]


@dataclass
class ActivityWorkItem:
    """A leased activity task."""

    token: str
    task: ActivityTaskSpec


@dataclass
class InstanceFilter:
    """Filters shared by QueryInstances and PurgeInstances (by filter)."""

    statuses: Collection[int] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None
    instance_id_prefix: str | None = None
    # Only instances with one of these versions ("" matches an instance without a version).
    versions: Collection[str] = ()


@dataclass
class CompletedFilter:
    """Filters of ListInstanceIds: terminal instances by completion time."""

    statuses: Collection[int] = ()
    completed_from: datetime | None = None
    completed_to: datetime | None = None


@dataclass
class EntitySnapshot:
    """The stored record of one entity: state, lock holder and the number of queued messages."""

    instance_id: str
    state: str | None  # None when it has no state or the state was not asked for
    has_state: bool
    locked_by: str | None  # the orchestration instance holding the lock
    critical_section_id: str | None
    backlog: int
    last_modified_at: datetime


@dataclass
class EntityWorkItem:
    """A leased batch of operations for one entity (``operations`` are the queued message events)."""

    token: str
    instance_id: str
    state: str | None
    operations: list[pb.HistoryEvent]


@dataclass
class EntityQueryFilter:
    """Filters of QueryEntities. ``modified_to`` is exclusive; transient entities have no state."""

    instance_id_prefix: str | None = None
    modified_from: datetime | None = None
    modified_to: datetime | None = None
    include_state: bool = True
    include_transient: bool = False


ChangeListener = Callable[[ChangeSet], None]

# Work-item filters by version: name -> the versions accepted (empty: any version).
# "" stands for "no version".
VersionFilter = Mapping[str, Collection[str]]


class Store(ABC):
    """Durable state of the sidecar: instances, histories, inboxes, the activity queue, leases."""

    def __init__(self, abandon_backoff: Backoff | None = None) -> None:
        self._listeners: list[ChangeListener] = []
        self.abandon_backoff = abandon_backoff or Backoff()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every committed transaction that changed something."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener`` (a server that shut down while the store lives on)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, changes: ChangeSet) -> None:
        if not (changes.instances or changes.work_available or changes.reset):
            return
        for listener in list(self._listeners):
            listener(changes)

    # --- lifecycle -------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources (connections, lock files)."""

    @abstractmethod
    def reset(self) -> None:
        """Delete all state (tests, DeleteTaskHub)."""

    @abstractmethod
    def clear_leases(self) -> int:
        """Release every lease (startup after a crash of the previous owner). Returns how many."""

    # --- client side -----------------------------------------------------------------

    @abstractmethod
    def create_instance(
        self,
        instance: InstanceSnapshot,
        start_event: pb.HistoryEvent,
        visible_at: datetime,
        now: datetime,
        replaceable: Collection[int] | None = None,
    ) -> None:
        """Create an instance (PENDING) with ``start_event`` in its inbox, visible at ``visible_at``.

        An existing instance with the same ID is replaced when ``replaceable`` is None and
        it is terminal, or when its status is in ``replaceable`` (a non-terminal one is
        terminated first). Otherwise raises InstanceExistsError.
        """

    @abstractmethod
    def get_instance(self, instance_id: str) -> InstanceSnapshot | None:
        """The instance row, or None."""

    @abstractmethod
    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]:
        """The history of the instance's current execution (raises InstanceNotFoundError)."""

    @abstractmethod
    def raise_event(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Put an event in the instance's inbox. False when dropped because the instance finished."""

    @abstractmethod
    def terminate_instance(self, instance_id: str, output: str | None, recursive: bool, now: datetime) -> bool:
        """Terminate an instance (and its non-terminal children when ``recursive``). False if already terminal."""

    @abstractmethod
    def suspend_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Mark SUSPENDED and queue ``event`` (executionSuspended). False if it already was suspended."""

    @abstractmethod
    def resume_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Mark RUNNING and queue ``event`` (executionResumed). False if it was not suspended."""

    @abstractmethod
    def rewind_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> None:
        """Make a FAILED instance runnable again with ``event`` (executionRewound) in its inbox.

        Raises InstanceNotFoundError, or InvalidStateError when the instance is not FAILED.
        The worker answers the next turn with the rewritten history (rewindOrchestration).
        """

    @abstractmethod
    def query_instances(
        self, query: InstanceFilter, page_size: int, continuation: str | None
    ) -> tuple[list[InstanceSnapshot], str | None]:
        """A page of instances ordered by ID, and the token of the next page (None at the end)."""

    @abstractmethod
    def list_instance_ids(
        self, query: CompletedFilter, page_size: int, last_key: str | None
    ) -> tuple[list[str], str | None]:
        """A page of terminal instance IDs ordered by completion time, and the key of the next page."""

    @abstractmethod
    def purge_instances(self, instance_ids: Collection[str], recursive: bool) -> int:
        """Delete terminal instances by ID (InvalidStateError if one is not terminal; unknown IDs are skipped)."""

    @abstractmethod
    def purge_by_filter(self, query: InstanceFilter, recursive: bool) -> int:
        """Delete the terminal instances that match the filter. Returns how many instances were deleted."""

    # --- worker side -----------------------------------------------------------------

    @abstractmethod
    def lease_orchestration(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        exclude: Collection[str] = (),
        skip_delay: Collection[str] = (),
    ) -> OrchestrationWorkItem | None:
        """Lease one instance that has deliverable inbox events.

        Optionally only instances of these ``names`` (and, for a name listed in ``versions``
        with a non-empty set, only those versions), and none of the ``exclude``d instance IDs.
        The ``skip_delay`` instances are offered even while their hand-back delay runs.
        """

    @abstractmethod
    def complete_orchestration(self, token: str, response: pb.OrchestratorResponse, now: datetime) -> None:
        """Apply a turn's response (via the engine) and release the lease, in one transaction."""

    @abstractmethod
    def abandon_orchestration(self, token: str, now: datetime) -> None:
        """Release a turn lease; the instance is offered again after a growing delay (``abandon_backoff``)."""

    @abstractmethod
    def release_orchestration(self, token: str) -> bool:
        """Release a turn lease at once (its stream ended). False if the token no longer holds it."""

    @abstractmethod
    def lease_activity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
    ) -> ActivityWorkItem | None:
        """Lease one visible activity task (optionally only these names and versions, as above)."""

    @abstractmethod
    def complete_activity(self, token: str, response: pb.ActivityResponse, now: datetime) -> None:
        """Remove the task and put its result event in the instance's inbox, in one transaction."""

    @abstractmethod
    def abandon_activity(self, token: str, now: datetime) -> None:
        """Release an activity lease; the task is offered again after a growing delay."""

    @abstractmethod
    def release_activity(self, token: str) -> bool:
        """Release an activity lease at once. False if the token no longer holds it."""

    @abstractmethod
    def renew_leases(self, tokens: Collection[str], until: datetime) -> None:
        """Extend the leases held by these tokens (those still valid) until ``until``."""

    @abstractmethod
    def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest future moment at which new work becomes visible (timers, delays, lease expiry)."""

    # --- entities ------------------------------------------------------------------------

    @abstractmethod
    def signal_entity(self, entity_id: str, event: pb.HistoryEvent, visible_at: datetime, now: datetime) -> None:
        """Queue a client's signal (``entityOperationSignaled``) for the entity, visible at ``visible_at``."""

    @abstractmethod
    def get_entity(self, entity_id: str, now: datetime, include_state: bool = True) -> EntitySnapshot | None:
        """The entity's record, or None when it does not exist."""

    @abstractmethod
    def query_entities(
        self, query: EntityQueryFilter, page_size: int, continuation: str | None, now: datetime
    ) -> tuple[list[EntitySnapshot], str | None]:
        """A page of entities ordered by ID, and the token of the next page (None at the end)."""

    @abstractmethod
    def clean_entity_storage(self, remove_empty: bool, release_orphaned: bool, now: datetime) -> tuple[int, int]:
        """Release locks whose holder is gone or finished, and delete empty entities. Returns (removed, released)."""

    @abstractmethod
    def lease_entity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        max_operations: int = 100,
        max_bytes: int | None = None,
    ) -> EntityWorkItem | None:
        """Lease the next batch of one entity that has operations ready (optionally only these entity names)."""

    @abstractmethod
    def complete_entity(
        self, token: str, result: pb.EntityBatchResult, now: datetime, max_state_size: int | None = None
    ) -> None:
        """Apply a batch result and release the lease in one transaction (LeaseNotFoundError when stale)."""

    @abstractmethod
    def abandon_entity(self, token: str, now: datetime) -> None:
        """Release a batch lease; the entity is offered again after a growing delay."""

    @abstractmethod
    def release_entity(self, token: str) -> bool:
        """Release a batch lease at once. False if the token no longer holds it."""
