"""The task hub: every operation of the sidecar on durable state, each one store transaction.

This is what the transport and the dispatcher call. Each method reads what it needs in the
transaction, lets the pure engines decide (``sidecar.engine``, ``sidecar.entity_scheduler``,
``sidecar.entity_batch``) and writes the outcome through the store's primitives, so the same
rules hold on every store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sidecar.hub.instances as instances
import sidecar.hub.rewind as rewind
from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine, engine_events
from sidecar import entity_scheduler as sched
from sidecar.entity_batch import InvalidBatchResultError, apply_batch_result
from sidecar.hub.entity_routing import (
    apply_batch_outcome,
    deliver_to_entity,
    holder_of,
    queued,
    release_holder,
    settle,
)
from sidecar.hub.history_cache import HistoryCache, HistoryView, TurnNote
from sidecar.ids import IdFactory, random_id
from sidecar.model import (
    InstanceSnapshot,
    InvalidTurnError,
    MismatchedResultError,
    OutboundMessage,
    TurnInput,
)
from sidecar.quoting import log_text
from sidecar.store.base import (
    ActivityWorkItem,
    Backoff,
    ChangeListener,
    CompletedFilter,
    EntityQueryFilter,
    EntitySnapshot,
    EntityWorkItem,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    Store,
    StoreTx,
    VersionFilter,
)

log = logging.getLogger("durabletask-sidecar.hub")

# A turn leased inside a transaction, with the history view to remember once it commits.
LeasedTurn = tuple[OrchestrationWorkItem, HistoryView]


@dataclass
class _TurnDone:
    """A turn applied in a transaction: its instance, then its history view (None: read it again) or its refusal."""

    instance_id: str
    outcome: HistoryView | InvalidTurnError | None
    ignored: list[str] = field(default_factory=list)  # actions listed after its completeOrchestration

# Candidates tried per lease call before giving up for this round.
_LEASE_ATTEMPTS = 16


# An event's framing inside a work item (field tag and length), counted against the budget.
_EVENT_FRAMING_BYTES = 8


def events_within(events: Sequence[pb.HistoryEvent], budget: int) -> int:
    """How many of ``events``, from the first, fit in ``budget`` bytes (always one at least)."""
    size = 0
    for count, event in enumerate(events):
        size += event.ByteSize() + _EVENT_FRAMING_BYTES
        if size > budget:
            return max(count, 1)
    return len(events)


def new_events_budget(max_message_size: int) -> int:
    """The bytes of new events a turn may carry under a message limit: the limit less room for the
    rest of the work item (at most 64 KiB, at most half the limit)."""
    return max(max_message_size // 2, max_message_size - 64 * 1024)


class TaskHub:
    """Durable state of the sidecar and the rules that change it, over any :class:`Store`."""

    def __init__(self, store: Store, *, abandon_backoff: Backoff | None = None, new_id: IdFactory = random_id) -> None:
        self.store = store
        self.abandon_backoff = abandon_backoff or Backoff()
        self.new_id = new_id
        self.histories = HistoryCache()
        self._starts_first = False
        self.new_events_budget: int | None = None
        """The most bytes of new events one turn delivers (the first always goes); the others wait
        for the next turn. None: no bound. The sidecar sets it from its message limit."""

    # --- lifecycle and notices ---

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every commit that changed something (also other sidecars' commits)."""
        self.store.add_listener(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        self.store.remove_listener(listener)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def reset(self) -> None:
        """Delete all state (tests, DeleteTaskHub)."""
        self.store.reset()
        self.histories.clear()

    # --- client side ---

    def create_instance(
        self,
        instance: InstanceSnapshot,
        start_event: pb.HistoryEvent,
        visible_at: datetime,
        now: datetime,
        replaceable: Collection[int] | None = None,
    ) -> None:
        """Create an instance, replacing a finished one (or one whose status is ``replaceable``)."""
        self.store.run(lambda tx: instances.create_instance(tx, instance, start_event, visible_at, now, replaceable))

    def create_instances(self, requests: Sequence[instances.NewInstance]) -> list[InstanceExistsError | None]:
        """Create several instances in one transaction, in order (see ``instances.create_instances``):
        one whose ID is in use and may not be replaced fails alone, with its InstanceExistsError."""
        return self.store.run(lambda tx: instances.create_instances(tx, requests))

    def get_instance(self, instance_id: str) -> InstanceSnapshot | None:
        """The instance row, or None."""
        return self.store.get_instance(instance_id)

    def get_history(self, instance_id: str) -> list[pb.HistoryEvent]:
        """The history of the instance's current execution (raises InstanceNotFoundError)."""
        history = self.store.get_history(instance_id)
        if history is None:
            raise InstanceNotFoundError(instance_id)
        return history

    def raise_event(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Put an event in the instance's inbox. False when dropped because the instance finished."""

        def fn(tx: StoreTx) -> bool:
            instances.existing(tx, instance_id)
            return instances.route_message(tx, "", OutboundMessage(instance_id, event), now)

        return self.store.run(fn)

    def terminate_instance(self, instance_id: str, output: str | None, recursive: bool, now: datetime) -> bool:
        """Terminate an instance (and its live children when ``recursive``). False if already finished."""

        def fn(tx: StoreTx) -> bool:
            instances.existing(tx, instance_id)
            return instances.terminate(tx, instance_id, output, recursive, now)

        return self.store.run(fn)

    def suspend_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Mark SUSPENDED and queue ``event``. False if it already was suspended."""
        return self.store.run(lambda tx: instances.set_suspension(tx, instance_id, event, now, True))

    def resume_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> bool:
        """Mark RUNNING and queue ``event``. False if it was not suspended."""
        return self.store.run(lambda tx: instances.set_suspension(tx, instance_id, event, now, False))

    def rewind_instance(self, instance_id: str, event: pb.HistoryEvent, now: datetime) -> None:
        """Make a FAILED instance runnable again with ``event`` (executionRewound) in its inbox."""
        self.store.run(lambda tx: rewind.begin_rewind(tx, instances.existing(tx, instance_id), event, now))

    def query_instances(
        self, query: InstanceFilter, page_size: int, continuation: str | None
    ) -> tuple[list[InstanceSnapshot], str | None]:
        """A page of instances ordered by ID, and the token of the next page."""
        return self.store.query_instances(query, page_size, continuation)

    def list_instance_ids(
        self, query: CompletedFilter, page_size: int, last_key: str | None
    ) -> tuple[list[str], str | None]:
        """A page of finished instance IDs ordered by completion time, and the key of the next page."""
        return self.store.list_instance_ids(query, page_size, last_key)

    def purge_instances(self, instance_ids: Collection[str], recursive: bool) -> int:
        """Delete finished instances by ID (InvalidStateError if one has not finished; unknown IDs are skipped)."""

        def fn(tx: StoreTx) -> int:
            instances.check_purgeable(tx, instance_ids)
            return sum(instances.purge(tx, iid, recursive) for iid in dict.fromkeys(instance_ids))

        return self.store.run(fn)

    def purge_by_filter(self, query: InstanceFilter, recursive: bool) -> int:
        """Delete the finished instances that match the filter. Returns how many were deleted."""
        return self.store.run(lambda tx: sum(instances.purge(tx, iid, recursive) for iid in tx.terminal_ids(query)))

    # --- orchestration turns ---

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
        """Lease one instance with deliverable events and build its turn (None when there is none).

        Filters: ``names`` (and per-name ``versions``), ``exclude``d instance IDs, and
        ``skip_delay`` instances offered even while their hand-back delay runs.
        """
        leased = self.lease_orchestrations(
            now, lease_for, names, versions=versions, exclude=exclude, skip_delay=skip_delay, limit=1
        )
        return leased[0] if leased else None

    def lease_orchestrations(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        exclude: Collection[str] = (),
        skip_delay: Collection[str] = (),
        limit: int = 1,
    ) -> list[OrchestrationWorkItem]:
        """Lease up to ``limit`` instances with deliverable events and build their turns, in one transaction.

        Filters as for :meth:`lease_orchestration`.
        """
        if (names is not None and not names) or limit < 1:
            return []
        leased = self.store.run(
            lambda tx: self.lease_orchestrations_in(
                tx, now, lease_for, names, versions=versions, exclude=exclude, skip_delay=skip_delay, limit=limit
            )
        )
        return self.keep_leased_turns(leased)

    def lease_orchestrations_in(
        self,
        tx: StoreTx,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        exclude: Collection[str] = (),
        skip_delay: Collection[str] = (),
        limit: int = 1,
        only: Collection[str] | None = None,
    ) -> list[LeasedTurn]:
        """:meth:`lease_orchestrations` inside the caller's transaction (``only``: among these instances).

        After the transaction commits, pass the result to :meth:`keep_leased_turns`.
        """
        leased: list[LeasedTurn] = []
        if (names is not None and not names) or limit < 1 or (only is not None and not only):
            return leased
        tried: list[str] = list(exclude)
        misses = 0  # instances claimed that had nothing to deliver after all
        exhausted: set[bool | None] = set()  # kinds (new instances or not) found without work in this batch
        while len(leased) < limit and misses < _LEASE_ATTEMPTS:
            # New instances and the rest take turns, so that a backlog of starts does not hold
            # back the instances already running (nor the other way round).
            token = self.new_id()
            inst = None
            if only is not None:  # a few named instances: one claim looks at both kinds
                kinds: tuple[bool | None, ...] = (None,)
            else:
                self._starts_first = not self._starts_first
                kinds = (True, False) if self._starts_first else (False, True)
            for starts in kinds:
                if starts in exhausted:
                    continue
                inst = tx.claim_orchestration(
                    now, now + lease_for, token, names, versions, tried, skip_delay, starts=starts, only=only
                )
                if inst is not None:
                    break
                exhausted.add(starts)
            if inst is None:
                break
            tried.append(inst.instance_id)
            built = self._build_turn(tx, inst, token, now)
            if built is None:
                misses += 1
            else:
                leased.append(built)
        return leased

    def keep_leased_turns(self, leased: Sequence[LeasedTurn]) -> list[OrchestrationWorkItem]:
        """After the leasing transaction committed: remember the turns' history views; the work items."""
        for item, view in leased:
            self.histories.put(item.instance.instance_id, view)
            self.histories.lease(item.token, view)
        return [item for item, _ in leased]

    def _build_turn(
        self, tx: StoreTx, inst: InstanceSnapshot, token: str, now: datetime
    ) -> LeasedTurn | None:
        rows = tx.visible_inbox(inst.instance_id, now, inst.execution_id)
        view = self.histories.load(tx, inst.instance_id, inst.execution_id)
        deliver, drop = engine.select_new_events(view.summary, [r.event for r in rows])
        tx.delete_inbox([rows[i].id for i in drop])
        if not deliver:
            tx.release_turn(inst.instance_id, None, None)
            return None
        # A rewind request is answered in a turn of its own; later events wait for the next turn.
        deliver = next(([i] for i in deliver if rows[i].event.HasField("executionRewound")), deliver)
        if self.new_events_budget is not None:
            deliver = deliver[:events_within([rows[i].event for i in deliver], self.new_events_budget)]
        new_events = [rows[i].event for i in deliver]
        # A wake-up orchestratorStarted already at the front (after a rewind) is the turn's own.
        if not new_events[0].HasField("orchestratorStarted"):
            new_events.insert(0, engine_events.new_orchestrator_started(now))
        tx.record_turn(
            inst.instance_id, token, new_events, [rows[i].id for i in deliver], [rows[i].visible_at for i in deliver]
        )
        prior = self.histories.prior_turn(inst.instance_id, view)
        item = OrchestrationWorkItem(
            token=token,
            instance=inst,
            past_events=view.events,
            new_events=new_events,
            history_first_seq=view.first_seq,
            history_key=view.key,
            prior_turn=None if prior is None else (prior.token, prior.seen),
        )
        return item, view

    def complete_orchestration(self, token: str, response: pb.OrchestratorResponse, now: datetime) -> None:
        """Apply a turn's response and release the lease in one transaction.

        Raises LeaseNotFoundError (stale token) or InvalidTurnError (nothing applied; the turn
        is offered again after the hand-back delay).
        """
        failure = self._after_turn(self.store.run(lambda tx: self._complete_turn(tx, token, response, now)))
        if failure is not None:
            raise failure

    def complete_orchestrations(
        self,
        completions: Sequence[tuple[str, pb.OrchestratorResponse, datetime]],
        then: Callable[[StoreTx], None] | None = None,
    ) -> list[LeaseNotFoundError | InvalidTurnError | None]:
        """Apply several turns in one transaction; a stale token or an invalid turn fails only its own.

        Returns, per turn, None or its LeaseNotFoundError or InvalidTurnError (that turn is
        offered again after the hand-back delay). Any other error fails them all (nothing applied).
        ``then`` runs in the same transaction after the turns (to lease the work they made).
        """

        def fn(tx: StoreTx) -> list[_TurnDone | LeaseNotFoundError]:
            done: list[_TurnDone | LeaseNotFoundError] = []
            for token, response, now in completions:
                try:
                    done.append(self._complete_turn(tx, token, response, now))
                except LeaseNotFoundError as exc:  # raised before the turn wrote anything
                    done.append(exc)
            if then is not None:
                then(tx)
            return done

        return [d if isinstance(d, LeaseNotFoundError) else self._after_turn(d) for d in self.store.run(fn)]

    def _complete_turn(self, tx: StoreTx, token: str, response: pb.OrchestratorResponse, now: datetime) -> _TurnDone:
        lease = tx.turn_by_lease(token)
        if lease is None:
            raise LeaseNotFoundError(token)
        inst = lease.instance
        # The view this turn was built from is the stored history while the token holds (only a
        # turn's commit appends to it, and a termination ends the lease); unless the history
        # started over since (a new key), or the view is not remembered: then it is loaded.
        view = self.histories.leased_view(token)
        if view is None or view.key is None or view.key != tx.history_key(inst.instance_id) \
                or view.execution_id != inst.execution_id:
            view = self.histories.load(tx, inst.instance_id, inst.execution_id)
        else:
            tx.note_history_end(inst.instance_id, view.next_seq)
        turn = TurnInput(
            instance=inst,
            past_events=view.events,
            new_events=lease.new_events,
            response=response,
            now=now,
            new_id=self.new_id,
        )
        try:
            result = engine.apply_turn(turn)
        except InvalidTurnError as exc:
            delay = self.abandon_backoff.delay(lease.abandon_count)
            tx.release_turn(inst.instance_id, now + delay, lease.abandon_count + 1)
            return _TurnDone(inst.instance_id, exc)
        instances.apply_turn_result(tx, result, now, row=inst, consumed_inbox=lease.consumed_inbox)
        ignored = list(result.ignored_actions)
        if result.rewind is not None:
            rewind.rewind_children(tx, inst.instance_id, result.rewind, now)
        if result.instance.is_terminal or result.instance.execution_id != inst.execution_id:
            return _TurnDone(inst.instance_id, None, ignored)
        if result.reset_history is not None:
            return _TurnDone(inst.instance_id, None, ignored)  # a new key: read again next turn
        appended = tuple(result.history_append)
        self.histories.note_turn(inst.instance_id, TurnNote(
            token, view.key, view.execution_id, view.first_seq, len(view.events), appended, len(lease.new_events),
        ))
        return _TurnDone(inst.instance_id, view.extended(appended), ignored)

    def _after_turn(self, done: _TurnDone) -> InvalidTurnError | None:
        """After a turn's transaction committed: log ignored actions, keep or drop its history view."""
        instance_id, outcome, ignored = done.instance_id, done.outcome, done.ignored
        if ignored:
            log.warning(
                "orchestration '%s': %d action(s) listed after its completeOrchestration ignored (%s)",
                log_text(instance_id), len(ignored), log_text(", ".join(ignored[:10]) + (", ..." if len(ignored) > 10 else "")),
            )
        if isinstance(outcome, HistoryView):
            self.histories.put(instance_id, outcome)
        elif outcome is None:
            self.histories.discard(instance_id)
        else:
            return outcome
        return None

    def abandon_orchestration(self, token: str, now: datetime) -> None:
        """Release a turn lease; the instance is offered again after a growing delay."""

        def fn(tx: StoreTx) -> None:
            held = tx.turn_lease_of(token)
            if held is None:
                raise LeaseNotFoundError(token)
            iid, count = held
            tx.release_turn(iid, now + self.abandon_backoff.delay(count), count + 1)

        self.store.run(fn)

    def release_orchestration(self, token: str) -> bool:
        """Release a turn lease at once (its stream ended). False if the token no longer holds it."""

        def fn(tx: StoreTx) -> bool:
            held = tx.turn_lease_of(token)
            if held is None:
                return False
            tx.release_turn(held[0], None, None)
            return True

        return self.store.run(fn)

    # --- activities ---

    def lease_activity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
    ) -> ActivityWorkItem | None:
        """Lease one visible activity task (optionally only these names and versions)."""
        leased = self.lease_activities(now, lease_for, names, versions=versions, limit=1)
        return leased[0] if leased else None

    def lease_activities(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        limit: int = 1,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``limit`` visible activity tasks in one transaction, oldest first."""
        if (names is not None and not names) or limit < 1:
            return []
        return self.store.run(lambda tx: self.lease_activities_in(tx, now, lease_for, names, versions=versions,
                                                                  limit=limit))

    def lease_activities_in(
        self,
        tx: StoreTx,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        *,
        versions: VersionFilter | None = None,
        limit: int = 1,
        expired: bool = True,
    ) -> list[ActivityWorkItem]:
        """:meth:`lease_activities` inside the caller's transaction (``expired``: see ``StoreTx.claim_activities``)."""
        if (names is not None and not names) or limit < 1:
            return []
        claimed = tx.claim_activities(
            now, now + lease_for, f"{self.new_id()}-", limit, names, versions, expired=expired
        )
        return [ActivityWorkItem(token=token, task=task) for token, task in claimed]

    def complete_activity(self, token: str, response: pb.ActivityResponse, now: datetime) -> None:
        """Remove the task and put its result event in the instance's inbox, in one transaction."""
        failure = self.complete_activities([(token, response, now)])[0]
        if failure is not None:
            raise failure

    def complete_activities(
        self,
        completions: Sequence[tuple[str, pb.ActivityResponse, datetime]],
        then: Callable[[StoreTx], None] | None = None,
    ) -> list[LeaseNotFoundError | MismatchedResultError | None]:
        """Commit several activity results in one transaction; a bad one fails only itself.

        Returns, per completion, None, the LeaseNotFoundError of a stale token, or the
        MismatchedResultError of a result whose taskId names another task than its token's
        (that task stays leased, for the caller to hand back). ``then`` runs in the same
        transaction after the results (to lease the turns they made).
        """

        def fn(tx: StoreTx) -> list[LeaseNotFoundError | MismatchedResultError | None]:
            outcomes: list[LeaseNotFoundError | MismatchedResultError | None] = []
            for token, response, now in completions:
                # A taskId of 0 is any task's (see engine_events.activity_result_event).
                task = tx.take_activity(token, response.taskId or None)
                if task is None:
                    held = tx.leased_activity(token) if response.taskId else None
                    mismatch = None if held is None else engine_events.result_mismatch(held.task_id, response)
                    outcomes.append(mismatch or LeaseNotFoundError(token))
                    continue
                event = engine_events.activity_result_event(task.task_id, response, now)
                msg = OutboundMessage(task.instance_id, event, target_execution_id=task.execution_id)
                instances.route_message(tx, "", msg, now)
                outcomes.append(None)
            if then is not None:
                then(tx)
            return outcomes

        return self.store.run(fn)

    def abandon_activity(self, token: str, now: datetime) -> None:
        """Release an activity lease; the task is offered again after a growing delay."""

        def fn(tx: StoreTx) -> None:
            count = tx.activity_hand_backs(token)
            if count is None:
                raise LeaseNotFoundError(token)
            tx.release_activity(token, now + self.abandon_backoff.delay(count), count_hand_back=True)

        self.store.run(fn)

    def release_activity(self, token: str) -> bool:
        """Release an activity lease at once. False if the token no longer holds it."""
        return self.store.run(lambda tx: tx.release_activity(token, None, count_hand_back=False))

    # --- leases and timing ---

    def renew_leases(self, tokens: Collection[str], until: datetime) -> None:
        """Extend the leases held by these tokens until ``until``."""
        self.store.renew_leases(tokens, until)

    def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest future moment at which new work becomes visible."""
        return self.store.next_due_at(now)

    # --- entities ---

    def signal_entity(
        self,
        entity_id: str,
        event: pb.HistoryEvent,
        visible_at: datetime,
        now: datetime,
        trace_context: pb.TraceContext | None = None,
    ) -> None:
        """Queue a client's signal (``entityOperationSignaled``) for the entity, visible at ``visible_at``,
        with the client's trace context (handed to the worker with the operation)."""
        self.store.run(lambda tx: deliver_to_entity(tx, entity_id, "", event, visible_at, now, trace_context))

    def get_entity(self, entity_id: str, now: datetime, include_state: bool = True) -> EntitySnapshot | None:
        """The entity's record, or None when it does not exist."""
        return self.store.get_entity(entity_id, now, include_state)

    def query_entities(
        self, query: EntityQueryFilter, page_size: int, continuation: str | None, now: datetime
    ) -> tuple[list[EntitySnapshot], str | None]:
        """A page of entities ordered by ID, and the token of the next page."""
        return self.store.query_entities(query, page_size, continuation, now)

    def clean_entity_storage(self, remove_empty: bool, release_orphaned: bool, now: datetime) -> tuple[int, int]:
        """Release locks whose holder is gone or finished, and delete empty entities. Returns (removed, released)."""

        def fn(tx: StoreTx) -> tuple[int, int]:
            released = 0
            if release_orphaned:
                for holder in tx.orphaned_lock_holders():
                    released += release_holder(tx, holder, now)
            removed = tx.delete_empty_entities() if remove_empty else 0
            return removed, released

        return self.store.run(fn)

    def lease_entity(
        self,
        now: datetime,
        lease_for: timedelta,
        names: Collection[str] | None = None,
        max_operations: int = sched.DEFAULT_MAX_BATCH,
        max_bytes: int | None = None,
    ) -> EntityWorkItem | None:
        """Lease the next batch of one entity that has operations ready (optionally only these entity names)."""
        if names is not None and not names:
            return None
        wanted = None if names is None else {n.lower() for n in names}

        def fn(tx: StoreTx) -> EntityWorkItem | None:
            tried: list[str] = []
            for _ in range(_LEASE_ATTEMPTS):
                token = self.new_id()
                record = tx.claim_entity(now, now + lease_for, token, wanted, tried)
                if record is None:
                    return None
                entity_id = record.instance_id
                queue = queued(tx.entity_queue(entity_id, now))
                if any(m.kind not in sched.OPERATION_KINDS for m in queue):
                    # Locks and unlocks are settled when they arrive; settling again here is a safety net.
                    settle(tx, entity_id, now)
                    queue = queued(tx.entity_queue(entity_id, now))
                current = tx.entity(entity_id)
                batch = sched.select_batch(holder_of(current), queue, max_operations, max_bytes) if current else []
                if batch:
                    tx.record_entity_batch(entity_id, [m.seq for m in batch])
                    return EntityWorkItem(
                        token=token, instance_id=entity_id, state=record.state, operations=[m.event for m in batch],
                        trace_contexts=[m.trace_context for m in batch],
                    )
                if current is not None:
                    tx.release_entity(entity_id, None, None)
                    tx.delete_entity_if_empty(entity_id)  # the settle above may have emptied it
                tried.append(entity_id)
            return None

        return self.store.run(fn)

    def complete_entity(
        self, token: str, result: pb.EntityBatchResult, now: datetime, max_state_size: int | None = None
    ) -> None:
        """Apply a batch result and release the lease in one transaction.

        Raises LeaseNotFoundError for a stale token, InvalidBatchResultError (nothing applied;
        the batch is offered again after a delay) for a result that cannot be applied.
        """

        def fn(tx: StoreTx) -> InvalidBatchResultError | None:
            record = tx.entity_by_lease(token)
            if record is None:
                raise LeaseNotFoundError(token)
            entity_id = record.instance_id
            batch = queued(tx.entity_messages(record.lease_batch))
            retry_at = now + self.abandon_backoff.delay(record.abandon_count)
            try:
                outcome = apply_batch_result(entity_id, record.state, batch, result, now, max_state_size, self.new_id)
            except InvalidBatchResultError as exc:
                tx.release_entity(entity_id, retry_at, record.abandon_count + 1)
                return exc
            if outcome.retry:
                log.warning(
                    "entity '%s': batch not applied (%s); it will run again",
                    log_text(entity_id), log_text(outcome.retry_reason),
                )
                tx.release_entity(entity_id, retry_at, record.abandon_count + 1)
            else:
                apply_batch_outcome(tx, entity_id, outcome, now)
            return None

        failure = self.store.run(fn)
        if failure is not None:
            raise failure

    def abandon_entity(self, token: str, now: datetime) -> None:
        """Give a batch back; the entity is offered again after a growing delay."""

        def fn(tx: StoreTx) -> None:
            record = tx.entity_by_lease(token)
            if record is None:
                raise LeaseNotFoundError(token)
            delay = self.abandon_backoff.delay(record.abandon_count)
            tx.release_entity(record.instance_id, now + delay, record.abandon_count + 1)

        self.store.run(fn)

    def release_entity(self, token: str) -> bool:
        """Release a batch lease at once (its stream ended). False if the token no longer holds it."""

        def fn(tx: StoreTx) -> bool:
            record = tx.entity_by_lease(token)
            if record is None:
                return False
            tx.release_entity(record.instance_id, None, None)
            return True

        return self.store.run(fn)



__all__ = ["TaskHub"]
