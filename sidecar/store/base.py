"""The sidecar's store interface: persistence only.

A store keeps rows and runs transactions; it decides nothing. Which events a turn sees,
how a worker's actions change state, where a message goes, how entity locks move and when
a child instance may be created are decided above it (``sidecar.hub``), written once
against :class:`StoreTx`, the primitive reads and writes available inside one
transaction. The store's own guarantees:

- ``Store.run(fn)`` runs ``fn(tx)`` as ONE transaction: everything ``fn`` wrote commits
  together or not at all. A transaction that loses a race to another sidecar (deadlock,
  serialization failure, duplicate key) is rolled back and ``fn`` runs again, so ``fn``
  must only act through ``tx``.
- Every lease is taken by one conditional statement (``StoreTx.claim_*``) that is
  race-free under READ COMMITTED: two sidecars never hold the same item at once. A lease
  is a token and an expiry in the item's row; an expired lease can be taken by anyone.
- Writes that complete leased work are fenced by the token: ``*_by_lease`` finds (and
  locks) the row only while the token still holds it.
- After each commit that changed something, listeners get a :class:`CommitNotice`; a
  store shared by several sidecars also relays the notices of the others.

Errors: :class:`StoreUnavailableError` (the database cannot be reached: UNAVAILABLE),
:class:`StoreFullError` (no space: RESOURCE_EXHAUSTED), :class:`StoreValueError` (a value
the store cannot keep: INVALID_ARGUMENT) and :class:`SchemaVersionError` (at open).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import ActivityTaskSpec, InstanceSnapshot
from sidecar.quoting import quoted

T = TypeVar("T")

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


# --- errors ------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base class of the errors the store and the hub report to the transport layer."""


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
            f"completion token {quoted(token)} is unknown or stale (the work item was completed, "
            "abandoned, its lease expired or the instance was terminated)"
        )
        self.token = token


class StoreUnavailableError(StoreError):
    """The database cannot be reached or failed to answer. Maps to UNAVAILABLE."""


class StoreFullError(StoreError):
    """The database has no room for the write (disk or quota full). Maps to RESOURCE_EXHAUSTED."""


class StoreValueError(StoreError):
    """A value the store cannot keep (e.g. a NUL character in PostgreSQL text). Maps to INVALID_ARGUMENT."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of the sidecar (or its schema is unknown)."""


# --- records -----------------------------------------------------------------------------------


@dataclass
class CommitNotice:
    """What a committed transaction touched: instances whose state changed, and whether work appeared.

    ``reset``: every row was deleted. ``resync``: notices may have been missed (a lost
    connection to the shared database); everyone re-reads what they wait for.
    """

    instances: set[str] = field(default_factory=set)
    work_available: bool = False
    reset: bool = False
    resync: bool = False
    # Which kinds of work appeared ("orchestration", "activity", "entity"); empty with
    # work_available set: not known (every kind may have).
    work_kinds: set[str] = field(default_factory=set)
    # The instances that got inbox events, and whether orchestration work of another sort
    # appeared too (a new instance, a released turn): see :meth:`orchestration_work_only_for`.
    inbox_instances: set[str] = field(default_factory=set)
    other_orchestration_work: bool = False
    # The activity tasks this commit queued, (instance ID, task ID); whether activity work of
    # another sort appeared too (a task handed back).
    new_activity_tasks: set[tuple[str, int]] = field(default_factory=set)
    other_activity_work: bool = False
    # Filled by a lease in the same transaction (the dispatcher's follow-on), for this process only:
    # instances whose orchestration work it leased or found none of, and whether it leased every
    # activity task the commit queued. Work so settled needs no dispatcher to look for it.
    settled_instances: set[str] = field(default_factory=set)
    activities_settled: bool = False
    # The earliest visible time of the inbox events the commit wrote: one still to come (a timer,
    # a scheduled start) makes the dispatcher learn when it comes due, even where a follow-on
    # settled the instance.
    first_visible_at: datetime | None = None
    # The state this commit left each instance in, where it wrote the whole row and nothing else
    # about the instance's existence (for this process's long polls: a wait that the state's status
    # cannot end need not read the instance again, and one it ends is answered with the state).
    states: dict[str, InstanceSnapshot] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.instances or self.work_available or self.reset or self.resync)

    def add_work(self, kind: str, *, inbox_of: str | None = None) -> None:
        """Record that work of ``kind`` became available (``inbox_of``: an event for that instance's inbox)."""
        self.work_available = True
        self.work_kinds.add(kind)
        if kind == "orchestration":
            if inbox_of is None:
                self.other_orchestration_work = True
            else:
                self.inbox_instances.add(inbox_of)
        elif kind == "activity":
            self.other_activity_work = True

    def add_visible_at(self, visible_at: datetime) -> None:
        """Record that an inbox event written by the commit becomes visible at ``visible_at``."""
        if self.first_visible_at is None or visible_at < self.first_visible_at:
            self.first_visible_at = visible_at

    def add_activity_tasks(self, tasks: Collection[tuple[str, int]]) -> None:
        """Record that these activity tasks (instance ID, task ID) were queued."""
        self.work_available = True
        self.work_kinds.add("activity")
        self.new_activity_tasks.update(tasks)

    def unsettled(self, kind: str, turns_out: Collection[str]) -> bool:
        """True when this commit's work of ``kind`` may still need leasing (besides the turns out in this process)."""
        if not self.may_have_work(kind):
            return False
        if kind == "activity":
            return not self.activities_settled
        if kind == "orchestration":
            only_for = self.orchestration_work_only_for()
            return only_for is None or any(i not in turns_out and i not in self.settled_instances for i in only_for)
        return True

    def orchestration_work_only_for(self) -> set[str] | None:
        """The instances whose inbox events are all the orchestration work this commit made; None: not only those.

        None too when it is not known (a notice from another process, a reset, a resync).
        """
        if self.reset or self.resync or self.other_orchestration_work or not self.inbox_instances:
            return None
        return self.inbox_instances

    def may_have_work(self, kind: str) -> bool:
        """True when this commit may have made work of ``kind`` available."""
        if self.reset or self.resync:
            return True
        return self.work_available and (not self.work_kinds or kind in self.work_kinds)


@dataclass
class InboxRow:
    """An event waiting in an instance's inbox (``id`` orders nothing; the store returns rows in order)."""

    id: int
    event: pb.HistoryEvent
    visible_at: datetime
    execution_id: str | None


@dataclass
class TurnLease:
    """The lease of an orchestration turn: what was sent and which inbox rows it consumes."""

    instance: InstanceSnapshot
    new_events: list[pb.HistoryEvent]
    consumed_inbox: list[int]
    abandon_count: int


@dataclass
class EntityRecord:
    """The stored row of an entity: state, lock holder, and its batch lease."""

    instance_id: str
    name: str
    state: str | None
    locked_by: str | None
    lock_section: str | None
    last_modified_at: datetime
    lease_batch: list[int] = field(default_factory=list)
    abandon_count: int = 0


@dataclass
class EntityMessageRow:
    """A message in an entity's queue (``seq`` orders the queue); ``kind`` is given by the writer."""

    seq: int
    kind: str
    sender: str
    event: pb.HistoryEvent
    size: int
    # The sender's trace context (a client's or an entity's signal), handed to the worker with the operation.
    trace_context: pb.TraceContext | None = None


@dataclass
class OrchestrationWorkItem:
    """A leased orchestration turn: the token, the instance and the events sent to the worker."""

    token: str
    instance: InstanceSnapshot
    past_events: Sequence[pb.HistoryEvent]
    new_events: list[pb.HistoryEvent]
    # The stored sequence number of past_events[0], and the history's key (StoreTx.history_key):
    # both unchanged while the history only grows.
    history_first_seq: int = 0
    history_key: str | None = None
    # The turn whose events end past_events, when this sidecar applied it: (its lease token, how
    # many of past_events its worker had processed). Lets a worker still known to hold that
    # token's turn be sent only the rest before the sidecar settled the turn.
    prior_turn: tuple[str, int] | None = None


@dataclass
class ActivityWorkItem:
    """A leased activity task."""

    token: str
    task: ActivityTaskSpec


@dataclass
class EntityWorkItem:
    """A leased batch of operations for one entity (``operations`` are the queued message events)."""

    token: str
    instance_id: str
    state: str | None
    operations: list[pb.HistoryEvent]
    # Each operation's parent trace context (None where it has none), in the order of ``operations``.
    trace_contexts: list[pb.TraceContext | None] = field(default_factory=list)


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
class EntityQueryFilter:
    """Filters of QueryEntities. ``modified_to`` is exclusive; transient entities have no state.

    With ``include_transient`` an entity is listed as GetEntity finds it: with state, a lock or a
    message due by then; without, only entities with state.
    """

    instance_id_prefix: str | None = None
    modified_from: datetime | None = None
    modified_to: datetime | None = None
    include_state: bool = True
    include_transient: bool = False


ChangeListener = Callable[[CommitNotice], None]

# Work-item filters by version: name -> the versions accepted (empty: any version).
# "" stands for "no version".
VersionFilter = Mapping[str, Collection[str]]


# --- one transaction -----------------------------------------------------------------------------


class StoreTx(ABC):
    """The primitive reads and writes of one store transaction.

    Reads see the transaction's own writes. ``lock=True`` reads lock the row until the
    transaction ends (another sidecar's transaction touching it waits). Writes note what
    they touched in ``notice``. Nothing here checks a domain rule: callers decide.
    """

    notice: CommitNotice

    # --- instances ---

    @abstractmethod
    def instance(self, instance_id: str, *, lock: bool = False) -> InstanceSnapshot | None:
        """The instance row, or None."""

    @abstractmethod
    def insert_instance(self, instance: InstanceSnapshot) -> None:
        """Insert a new instance row (no row with this ID may exist)."""

    @abstractmethod
    def update_instance(self, instance: InstanceSnapshot, *, end_lease: bool) -> None:
        """Write every column of the instance row; ``end_lease`` also drops its turn lease and back-off."""

    @abstractmethod
    def relink_parent(self, instance_id: str, execution_id: str | None, task_id: int) -> None:
        """Point a sub-orchestration at its parent's (new) execution and task."""

    @abstractmethod
    def delete_instance(self, instance_id: str) -> None:
        """Delete an instance and everything it owns: history, inbox, activity tasks."""

    @abstractmethod
    def child_ids(self, parent_id: str, *, live_only: bool) -> list[str]:
        """IDs of the instances whose parent is ``parent_id`` (only non-terminal ones when ``live_only``)."""

    @abstractmethod
    def live_ids(self, instance_ids: Collection[str]) -> set[str]:
        """Those of ``instance_ids`` that exist and have not finished."""

    @abstractmethod
    def terminal_ids(self, query: InstanceFilter) -> list[str]:
        """IDs of the finished instances matching ``query``."""

    # --- history and inbox ---

    @abstractmethod
    def history(self, instance_id: str) -> list[pb.HistoryEvent]:
        """The instance's history, oldest first."""

    @abstractmethod
    def history_rows(self, instance_id: str, from_seq: int = 0) -> list[tuple[int, pb.HistoryEvent]]:
        """``(seq, event)`` of the history events with ``seq >= from_seq``, oldest first.

        Within one execution a history's sequence numbers are consecutive and never reused: an
        append continues after the last one, and a replaced history starts after the old last one.
        """

    @abstractmethod
    def history_key(self, instance_id: str) -> str | None:
        """The identity of the instance's history: new whenever the history starts over (the
        instance row is created or its history replaced); None for rows older than the key."""

    @abstractmethod
    def append_history(self, instance_id: str, events: list[pb.HistoryEvent]) -> None:
        """Append events to the history."""

    def note_history_end(self, instance_id: str, next_seq: int) -> None:  # noqa: B027 - a hint, no-op by default
        """The history's next sequence number, as the caller knows it for sure (a turn's lease keeps
        the history unchanged): an append in this transaction need not read it."""

    @abstractmethod
    def replace_history(self, instance_id: str, events: list[pb.HistoryEvent]) -> None:
        """Replace the whole history; the new events are numbered after the old last one."""

    @abstractmethod
    def add_inbox(
        self, instance_id: str, event: pb.HistoryEvent, visible_at: datetime, execution_id: str | None = None
    ) -> None:
        """Append an event to the inbox, deliverable from ``visible_at`` (to ``execution_id`` only, if set)."""

    @abstractmethod
    def prepend_inbox(self, instance_id: str, events: list[pb.HistoryEvent], visible_at: datetime) -> None:
        """Put events at the front of the inbox, before everything waiting there, in this order."""

    @abstractmethod
    def visible_inbox(self, instance_id: str, now: datetime, execution_id: str) -> list[InboxRow]:
        """Inbox rows visible at ``now`` for ``execution_id`` (or unscoped), in delivery order."""

    @abstractmethod
    def delete_inbox(self, row_ids: Collection[int]) -> None:
        """Delete inbox rows by ID."""

    @abstractmethod
    def clear_inbox(self, instance_id: str, *, keep_execution: str | None = None) -> None:
        """Delete the instance's inbox; with ``keep_execution``, only rows scoped to other executions."""

    def clear_finished(self, instance_id: str) -> None:
        """An instance finished: delete its whole inbox and all its activity tasks (a store may do both at once)."""
        self.clear_inbox(instance_id)
        self.delete_activity_tasks(instance_id)

    # --- orchestration turn leases ---

    @abstractmethod
    def claim_orchestration(
        self,
        now: datetime,
        lease_until: datetime,
        token: str,
        names: Collection[str] | None,
        versions: VersionFilter | None,
        exclude: Collection[str],
        skip_delay: Collection[str],
        starts: bool | None = None,
        only: Collection[str] | None = None,
    ) -> InstanceSnapshot | None:
        """Lease one non-terminal, unleased (or expired) instance with a visible inbox row.

        The instance whose deliverable row became visible first wins. Suspended instances only
        count resume/terminate events; an instance that has no history yet needs its
        executionStarted visible. Filters as in ``Store``-level leasing: ``names`` (None: all),
        per-name ``versions``, ``exclude``d IDs, ``skip_delay`` IDs offered during their back-off;
        ``starts`` True counts only executionStarted rows, False only the other rows; ``only``
        (None: any instance) restricts the choice to these IDs.
        """

    @abstractmethod
    def record_turn(
        self, instance_id: str, token: str, new_events: list[pb.HistoryEvent], consumed: list[int],
        visible_since: list[datetime],
    ) -> None:
        """Remember what the turn held by ``token`` was sent and which inbox rows it consumes
        (``visible_since``: when each of them became visible).

        Those rows are visible again only when the lease runs out, or from their own times again at
        :meth:`release_turn`, so that claims do not pass over the rows of every turn out on a lease.
        """

    @abstractmethod
    def turn_by_lease(self, token: str) -> TurnLease | None:
        """The turn held by ``token`` (row locked), or None when the token does not hold one."""

    @abstractmethod
    def release_turn(self, instance_id: str, available_at: datetime | None, abandon_count: int | None) -> None:
        """Drop the instance's turn lease; optionally delay its next offer and set its hand-back count.

        The inbox rows the turn held are visible again from when they were before it.
        """

    @abstractmethod
    def turn_lease_of(self, token: str) -> tuple[str, int] | None:
        """(instance ID, hand-back count) of the turn held by ``token`` (row locked), or None."""

    # --- activities ---

    @abstractmethod
    def add_activity_tasks(self, tasks: Collection[ActivityTaskSpec], visible_at: datetime) -> None:
        """Queue activity tasks."""

    @abstractmethod
    def delete_activity_tasks(self, instance_id: str, *, keep_execution: str | None = None) -> None:
        """Delete the instance's activity tasks; with ``keep_execution``, only those of other executions."""

    @abstractmethod
    def claim_activities(
        self, now: datetime, lease_until: datetime, token_prefix: str, limit: int, names: Collection[str] | None,
        versions: VersionFilter | None, *, expired: bool = True,
    ) -> list[tuple[str, ActivityTaskSpec]]:
        """Lease up to ``limit`` of the oldest visible, unleased (or expired) activity tasks matching the filters.

        Returns (token, task) pairs, oldest first; each token is ``token_prefix`` followed by
        something that makes it the task's own. ``expired=False`` leaves the tasks whose lease ran
        out to a later claim.
        """

    @abstractmethod
    def take_activity(self, token: str, task_id: int | None = None) -> ActivityTaskSpec | None:
        """Delete and return the task held by ``token``, or None when the token does not hold one
        (or, with ``task_id``, holds another task than that one)."""

    @abstractmethod
    def leased_activity(self, token: str) -> ActivityTaskSpec | None:
        """The task held by ``token`` (left in place), or None."""

    @abstractmethod
    def release_activity(self, token: str, visible_at: datetime | None, *, count_hand_back: bool) -> bool:
        """Drop the task's lease (delaying it to ``visible_at`` if set). False when the token holds none."""

    @abstractmethod
    def activity_hand_backs(self, token: str) -> int | None:
        """How often the task held by ``token`` was handed back, or None when the token holds none."""

    # --- entities ---

    @abstractmethod
    def entity(self, entity_id: str, *, lock: bool = False) -> EntityRecord | None:
        """The entity row, or None."""

    @abstractmethod
    def ensure_entity(self, entity_id: str, name: str, now: datetime) -> None:
        """Create the entity row if it does not exist."""

    @abstractmethod
    def set_entity_lock(self, entity_id: str, holder: str | None, section: str | None, now: datetime) -> None:
        """Set (or clear, with None) the orchestration holding the entity's lock."""

    @abstractmethod
    def clear_locks_held_by(self, instance_id: str, now: datetime) -> None:
        """Clear the lock of every entity held by ``instance_id``."""

    @abstractmethod
    def entities_locked_by(self, instance_id: str) -> list[str]:
        """IDs of the entities whose lock ``instance_id`` holds."""

    def lock_holdings(self, instance_id: str) -> tuple[list[str], list[str]]:
        """:meth:`entities_locked_by` and :meth:`lock_requests_from` of ``instance_id`` (a store may read both at once)."""
        return self.entities_locked_by(instance_id), self.lock_requests_from(instance_id)

    @abstractmethod
    def orphaned_lock_holders(self) -> list[str]:
        """Lock holders that no longer exist or have finished."""

    @abstractmethod
    def enqueue_entity_message(
        self,
        entity_id: str,
        kind: str,
        sender: str,
        event: pb.HistoryEvent,
        visible_at: datetime,
        trace_context: pb.TraceContext | None = None,
    ) -> None:
        """Append a message (with its sender's trace context, if any) to the entity's queue."""

    @abstractmethod
    def entity_queue(self, entity_id: str, now: datetime) -> list[EntityMessageRow]:
        """The entity's messages visible at ``now``, oldest first."""

    @abstractmethod
    def entity_messages(self, seqs: Collection[int]) -> list[EntityMessageRow]:
        """Queued messages by sequence number, oldest first (those still queued)."""

    @abstractmethod
    def delete_entity_messages(self, seqs: Collection[int]) -> None:
        """Delete queued messages by sequence number."""

    @abstractmethod
    def lock_requests_from(self, sender: str) -> list[str]:
        """IDs of the entities with a queued lock request from ``sender``."""

    @abstractmethod
    def delete_lock_requests_from(self, sender: str) -> None:
        """Delete every queued lock request from ``sender``."""

    @abstractmethod
    def delete_entity_if_empty(self, entity_id: str) -> bool:
        """Delete the entity row if it has no state, lock, lease or queued message. True if deleted."""

    @abstractmethod
    def delete_empty_entities(self) -> int:
        """Delete every entity row with no state, lock, lease or queued message. Returns how many."""

    @abstractmethod
    def claim_entity(
        self, now: datetime, lease_until: datetime, token: str, names: Collection[str] | None,
        exclude: Collection[str],
    ) -> EntityRecord | None:
        """Lease one unleased (or expired) entity whose queue has work due now, oldest first.

        Work is an operation the entity may run (it is unlocked, or the operation comes from the
        lock holder), an unlock message, or a lock request while the entity is unlocked.
        """

    @abstractmethod
    def record_entity_batch(self, entity_id: str, seqs: list[int]) -> None:
        """Remember which queued messages the entity's leased batch holds."""

    @abstractmethod
    def entity_by_lease(self, token: str) -> EntityRecord | None:
        """The entity whose batch ``token`` holds (row locked), or None."""

    @abstractmethod
    def finish_entity_batch(self, entity_id: str, state: str | None, now: datetime) -> None:
        """Store the entity's new state and drop its batch lease and back-off."""

    @abstractmethod
    def release_entity(self, entity_id: str, available_at: datetime | None, abandon_count: int | None) -> None:
        """Drop the entity's batch lease; optionally delay its next offer and set its hand-back count."""


# --- the store ---------------------------------------------------------------------------------


class Store(ABC):
    """Durable rows of the sidecar, and the transactions that change them (see the module docstring)."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._listeners_lock = threading.Lock()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every committed transaction that changed something."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener`` (a server that shut down while the store lives on)."""
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, notice: CommitNotice) -> None:
        if not notice:
            return
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(notice)

    # --- lifecycle ---

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for people (no password)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources (connections, lock files)."""

    @abstractmethod
    def reset(self) -> None:
        """Delete all rows (tests, DeleteTaskHub)."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version of the database."""

    # --- transactions ---

    @abstractmethod
    def run(self, fn: Callable[[StoreTx], T]) -> T:
        """Run ``fn`` in one transaction and commit; notify listeners after the commit.

        Retried from the start when the transaction lost a race with another sidecar; an
        exception from ``fn`` rolls everything back and propagates.
        """

    # --- reads (each one consistent snapshot) ---

    @abstractmethod
    def get_instance(self, instance_id: str) -> InstanceSnapshot | None:
        """The instance row, or None."""

    @abstractmethod
    def get_history(self, instance_id: str) -> list[pb.HistoryEvent] | None:
        """The instance's history, or None when the instance does not exist."""

    @abstractmethod
    def query_instances(
        self, query: InstanceFilter, page_size: int, continuation: str | None
    ) -> tuple[list[InstanceSnapshot], str | None]:
        """A page of instances ordered by ID, and the token of the next page (None at the end)."""

    @abstractmethod
    def list_instance_ids(
        self, query: CompletedFilter, page_size: int, last_key: str | None
    ) -> tuple[list[str], str | None]:
        """A page of terminal instance IDs ordered by completion time, and the key of the next page.

        Raises InvalidStateError for a ``last_key`` this store did not return.
        """

    @abstractmethod
    def get_entity(self, entity_id: str, now: datetime, include_state: bool = True) -> EntitySnapshot | None:
        """The entity's record, or None when it has no row or only messages due after ``now`` (no state, no lock)."""

    @abstractmethod
    def query_entities(
        self, query: EntityQueryFilter, page_size: int, continuation: str | None, now: datetime
    ) -> tuple[list[EntitySnapshot], str | None]:
        """A page of entities ordered by ID, and the token of the next page (None at the end)."""

    @abstractmethod
    def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest future moment at which new work becomes visible (timers, delays, lease expiry)."""

    @abstractmethod
    def renew_leases(self, tokens: Collection[str], until: datetime) -> None:
        """Extend the leases held by these tokens (those still held) until ``until``."""

    # --- inspection (tools, dashboards and tests) ---

    @abstractmethod
    def inbox_of(self, instance_id: str) -> list[tuple[pb.HistoryEvent, datetime, str | None]]:
        """The instance's inbox in delivery order: (event, visible_at, execution_id)."""

    @abstractmethod
    def activity_tasks_of(self, instance_id: str) -> list[tuple[int, str, bool]]:
        """The instance's queued activity tasks: (task_id, name, leased)."""

    @abstractmethod
    def entity_queue_of(self, entity_id: str) -> list[tuple[str, str, datetime]]:
        """The entity's queued messages in order: (kind, sender, visible_at)."""

    @abstractmethod
    def backlog(self, now: datetime) -> dict[str, int]:
        """Work waiting for a worker at ``now``, not leased, by kind ('orchestration': instances with
        visible inbox events; 'activity': tasks; 'entity': entities with visible queued messages)."""
