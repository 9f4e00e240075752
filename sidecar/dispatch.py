"""Work-item dispatch: streams, capacities, completion tokens, health pings, re-queueing.

One dispatcher thread leases work from the store for streams with free capacity and
pushes it to their queues. It wakes at once when a commit creates work, otherwise at
the next moment work becomes visible (timers, delayed starts, back-offs, lease
expiries), with a slow safety-net poll. The store owns every lease; the dispatcher only
remembers which stream holds which token, to count capacity, renew leases while the
stream lives (each kind by its own lease length, up to a maximum hold time, after which
the lease runs out and the item goes out again: a completion lost on a live stream must
not pin the item) and give the work back when the stream ends.

A stream that hands an orchestration turn back (a worker rejecting its version) is
remembered until it closes or the instance moves on: while another open stream could
take the instance, the rejecting one is not offered it, and a stream that has not
rejected it is offered it at once, without waiting for the store's back-off.

Completions and hand-backs are settled by the methods of
:class:`~sidecar.dispatch_completions.CompletionSettling` (no failure pins a work item until its
lease runs out). A dispatch pass that fails (the store is down) is retried after the safety-net
poll.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from datetime import datetime, timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dispatch_completions import CompletionSettling
from sidecar.dispatch_follow_on import FollowOnLeasing
from sidecar.dispatch_state import (
    DispatchOptions,
    Held,
    HeldTurn,
    Rejection,
    forget_turn,
    raise_if_failed,
    utcnow,
)
from sidecar.group_commit import GroupCommitter
from sidecar.hub import TaskHub
from sidecar.metrics import SidecarMetrics
from sidecar.model import TERMINAL_STATUSES
from sidecar.quoting import log_text, quoted
from sidecar.store.base import (
    ActivityWorkItem,
    CommitNotice,
    EntityWorkItem,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
)
from sidecar.work_streams import (
    ACTIVITY,
    ENTITY,
    ORCHESTRATION,
    ReplayMark,
    StreamView,
    WorkKind,
    WorkStream,
    declared_names,
    declared_versions,
    entity_names_of,
    failed_activity,
    failed_entity_batch,
    failed_turn,
    fits,
    history_streamed_work_item,
    replay_identity,
    streams_history,
    takes,
    to_work_item,
    too_large,
    view_of,
)

log = logging.getLogger("durabletask-sidecar.dispatch")

# Activities, and orchestration turns, leased in one transaction for one stream.
_ACTIVITY_BATCH = 16
_TURN_BATCH = 8

# Dispatch passes per cycle (the cycle's upkeep, such as lease renewals, runs between them).
_PASSES_PER_CYCLE = 32

class Dispatcher(CompletionSettling, FollowOnLeasing):
    """Pushes leased work items to open streams and settles completions by token."""

    def __init__(
        self, hub: TaskHub, options: DispatchOptions | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.hub = hub
        self.options = options or DispatchOptions()
        self.clock = clock
        self._lock = threading.Condition()
        self._wake = False
        self._stopped = False
        self._streams: dict[int, WorkStream] = {}
        self._tokens: dict[str, Held] = {}
        self._releases: list[tuple[float, str, WorkKind]] = []
        self._rejected: dict[str, Rejection] = {}  # instance ID -> the streams that handed it back
        self._ids = itertools.count(1)
        # Commits that made work of each kind available, counted to re-ask kinds found empty.
        self._work_signals: dict[WorkKind, int] = dict.fromkeys(WorkKind, 0)
        # (stream, kind) found empty -> the work signal count then; forgotten when the loop
        # wakes by its timer (a timer or a back-off may have come due) and every safety poll.
        self._found_empty: dict[tuple[int, WorkKind], int] = {}
        # (stream, kind) the loop found no free slot on: freeing one (a settlement, a follow-on's
        # reservation given back) wakes the loop; otherwise freeing one needs no pass.
        self._room_wanted: set[tuple[int, WorkKind]] = set()
        self._last_full_pass = time.monotonic()
        # Instances whose turn one of this sidecar's streams holds and has not begun to settle:
        # inbox events for them are work no one can lease until the turn ends (and its end is
        # a commit that signals orchestration work).
        self._turns_out: dict[str, str] = {}  # instance ID -> the token of its turn out
        self._last_renew = time.monotonic()
        self._last_sweep = time.monotonic()
        self._store_failure: str | None = None  # the last store error of the dispatch loop, until it passes
        # Tokens whose completion and hand-back both failed -> (when their lease has surely run out,
        # their kind); their hand-back is tried again every safety poll.
        self._dead_tokens: dict[str, tuple[float, WorkKind]] = {}
        self._last_dead_retry = time.monotonic()
        # Items whose result held a value the store cannot keep: (when to hand back, token, kind),
        # unless the worker's replacement result (same token) settles them first.
        self._awaiting_replacement: list[tuple[float, str, WorkKind]] = []
        self._thread: threading.Thread | None = None
        self.metrics = SidecarMetrics()
        # Activity results that arrive together are committed in one transaction.
        # Each commit leases the work it made in its own transaction (see dispatch_follow_on).
        self._activity_results: GroupCommitter[tuple[str, pb.ActivityResponse, datetime]] = GroupCommitter(
            self.metrics.timed_commit(
                ACTIVITY.value, lambda batch: self._with_follow_on(lambda then: hub.complete_activities(batch, then))),
            self.metrics.timed_commit(
                ACTIVITY.value, lambda c: raise_if_failed(self._with_follow_on(lambda then: hub.complete_activities([c], then)))),
            shared_failure=lambda exc: isinstance(exc, (StoreUnavailableError, StoreFullError)),
        )
        # Turns completed together (a worker's batched CompleteOrchestratorTasks) likewise.
        self._turn_results: GroupCommitter[tuple[str, pb.OrchestratorResponse, datetime]] = GroupCommitter(
            self.metrics.timed_commit(
                ORCHESTRATION.value,
                lambda batch: self._turns_with_follow_on(
                    lambda then: hub.complete_orchestrations(batch, then), [token for token, _, _ in batch])),
            self.metrics.timed_commit(
                ORCHESTRATION.value,
                lambda c: raise_if_failed(self._turns_with_follow_on(
                    lambda then: hub.complete_orchestrations([c], then), [c[0]]))),
            shared_failure=lambda exc: isinstance(exc, (StoreUnavailableError, StoreFullError)),
        )
        hub.add_listener(self._on_change)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sidecar-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            streams = list(self._streams.values())
            self._lock.notify_all()
        self.hub.remove_listener(self._on_change)
        for stream in streams:
            stream.queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        with self._lock:
            self._wake = True
            self._lock.notify_all()

    def _on_change(self, notice: CommitNotice) -> None:
        if notice.work_available or notice.reset or notice.resync:
            with self._lock:
                # Work visible only later: a pass learns when it comes due.
                signalled = notice.first_visible_at is not None and notice.first_visible_at > self.clock()
                for kind in WorkKind:
                    # Events for turns in flight, or work a follow-on leased: leasing now would find nothing.
                    if not notice.unsettled(kind.value, self._turns_out):
                        continue
                    self._work_signals[kind] += 1
                    signalled = True
                if signalled:
                    self._wake = True
                    self._lock.notify_all()

    # --- streams ----------------------------------------------------------------------------

    def open_stream(self, request: pb.GetWorkItemsRequest) -> WorkStream:
        """Register a stream with its limits (defaults when 0) and name filters."""
        filters = request.workItemFilters
        stream = WorkStream(
            id=next(self._ids),
            max_orchestrations=request.maxConcurrentOrchestrationWorkItems or self.options.default_max_orchestrations,
            max_activities=request.maxConcurrentActivityWorkItems or self.options.default_max_activities,
            orchestration_names=declared_names(request, list(filters.orchestrations)),
            activity_names=declared_names(request, list(filters.activities)),
            capabilities=frozenset(request.capabilities),
            worker_id=request.worker_instance_id,
            max_entities=request.maxConcurrentEntityWorkItems or self.options.default_max_entities,
            entity_names=entity_names_of(request),
            orchestration_versions=declared_versions(list(filters.orchestrations)),
            activity_versions=declared_versions(list(filters.activities)),
        )
        with self._lock:
            if self._stopped:
                stream.closed = True
                stream.queue.put(None)
                return stream
            self._streams[stream.id] = stream
            self._wake = True
            self._lock.notify_all()
        log.debug("stream %d opened (worker %r)", stream.id, log_text(stream.worker_id))
        return stream

    def open_streams(self) -> int:
        """How many streams are open."""
        with self._lock:
            return len(self._streams)

    def stream_views(self) -> list[StreamView]:
        """A read-only picture of every open stream (the dashboard's connected workers)."""
        with self._lock:
            return [view_of(stream) for stream in self._streams.values()]

    def close_stream(self, stream: WorkStream) -> None:
        """Forget a stream; its unfinished work goes back to the queue after the grace period."""
        with self._lock:
            if stream.closed:
                return
            stream.closed = True
            self._streams.pop(stream.id, None)
            self._room_wanted = {key for key in self._room_wanted if key[0] != stream.id}
            for instance_id, rejection in list(self._rejected.items()):
                rejection.streams.discard(stream.id)
                if not rejection.streams:
                    del self._rejected[instance_id]
            due = time.monotonic() + self.options.stream_grace
            for token, kind in stream.outstanding.items():
                self._releases.append((due, token, kind))
            self._lock.notify_all()
        stream.queue.put(None)
        log.debug("stream %d closed with %d items in flight", stream.id, len(stream.outstanding))

    def iterate(self, stream: WorkStream, is_active: Callable[[], bool]) -> Iterator[pb.WorkItem]:
        """The work items of a stream: a health ping first, then items, and pings while idle."""
        try:
            yield pb.WorkItem(healthPing=pb.HealthPing())
            while True:
                try:
                    item = stream.queue.get(timeout=self.options.health_ping_interval)
                except queue.Empty:
                    if not is_active() or stream.closed:
                        return
                    yield pb.WorkItem(healthPing=pb.HealthPing())
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.close_stream(stream)

    async def aiterate(self, stream: WorkStream) -> AsyncGenerator[pb.WorkItem, None]:
        """:meth:`iterate` for an event loop: awaits items without holding a thread; closes the stream at the end.

        A client that goes away cancels the awaiting task, which closes the stream too.
        """
        try:
            yield pb.WorkItem(healthPing=pb.HealthPing())
            while True:
                try:
                    item = await stream.queue.aget(timeout=self.options.health_ping_interval)
                except queue.Empty:
                    if stream.closed:
                        return
                    yield pb.WorkItem(healthPing=pb.HealthPing())
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.close_stream(stream)

    async def aiterate_batches(self, stream: WorkStream, limit: int) -> AsyncGenerator[list[pb.WorkItem], None]:
        """:meth:`aiterate` in batches: each holds every item that was ready (one at least, at most ``limit``)."""
        try:
            yield [pb.WorkItem(healthPing=pb.HealthPing())]
            while True:
                try:
                    items = await stream.queue.aget_many(limit, timeout=self.options.health_ping_interval)
                except queue.Empty:
                    if stream.closed:
                        return
                    yield [pb.WorkItem(healthPing=pb.HealthPing())]
                    continue
                ended = None in items
                ready = [item for item in items if item is not None]
                if ready:
                    yield ready
                if ended:
                    return
        finally:
            self.close_stream(stream)

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                self._wake = False
            failed = True
            try:
                timeout = self._cycle()
                failed = False
            except StoreError as exc:  # the database is down or full: try again after the safety poll
                if str(exc) != self._store_failure:
                    log.warning("dispatching paused: %s (retrying every %g s)", exc, self.options.safety_poll)
                    self._store_failure = str(exc)
            except Exception:  # keep dispatching whatever one cycle hit
                log.exception("dispatch cycle failed")
            if failed:
                # Wake-ups do not shorten the pause: a failing store is not asked again at once.
                self._pause(self.options.safety_poll)
                continue
            if self._store_failure is not None:
                log.info("dispatching resumed: the store answers again")
                self._store_failure = None
            with self._lock:
                if not self._wake and not self._stopped and timeout > 0:
                    self._lock.wait(timeout)
                    if not self._wake:
                        self._found_empty.clear()  # woken by the timer: something may have come due

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            while not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._lock.wait(remaining)

    def _cycle(self) -> float:
        """One pass: releases, hold limits, renewals, leasing. Returns how long to sleep before the next."""
        self._process_releases()
        self._hand_back_unreplaced()
        self._retry_dead_tokens()
        self._end_expired_holds()
        self._renew_if_due()
        self._forget_stale_rejections()
        if self._dispatch_all():
            return 0.0
        now = self.clock()
        timeout = self.options.safety_poll
        due = self.hub.next_due_at(now)
        if due is not None:
            timeout = min(timeout, max(0.0, (due - now).total_seconds()))
        with self._lock:
            waits = [r[0] for r in self._releases] + [r[0] for r in self._awaiting_replacement]
            if waits:
                timeout = min(timeout, max(0.0, min(waits) - time.monotonic()))
            if self._tokens:
                deadline = min(held.deadline for held in self._tokens.values())
                timeout = min(timeout, max(0.0, (deadline - now).total_seconds()))
                next_renewal = self._last_renew + self._renew_interval() - time.monotonic()
                timeout = min(timeout, max(0.0, next_renewal))
        return timeout

    def _process_releases(self) -> None:
        with self._lock:
            now = time.monotonic()
            due = [r for r in self._releases if r[0] <= now]
            self._releases = [r for r in self._releases if r[0] > now]
            expired = []
            for _, token, kind in due:
                held = self._tokens.pop(token, None)
                if held is not None:
                    expired.append((token, kind))
                    if held.turn is not None:
                        forget_turn(self._turns_out, held.turn.instance_id, token)
        for token, kind in expired:
            if self._release(token, kind):
                self.metrics.count_redispatch(kind.value, "stream_closed")
                log.info("re-queued %s work item %s of a closed stream", kind.value, token)

    def _hand_back_unreplaced(self) -> None:
        """Hand back the items whose result the store could not keep and whose worker sent no replacement."""
        with self._lock:
            now = time.monotonic()
            due = [r for r in self._awaiting_replacement if r[0] <= now]
            self._awaiting_replacement = [r for r in self._awaiting_replacement if r[0] > now]
        for _, token, kind in due:
            # A replacement that committed meanwhile left nothing to hand back (logged at info).
            self._hand_back(kind, token, "its result held a value the store cannot keep, and no replacement came")

    def _retry_dead_tokens(self) -> None:
        """Try again to hand back items whose hand-back failed; forget those whose lease has run out."""
        now = time.monotonic()
        with self._lock:
            for token in [t for t, (until, _) in self._dead_tokens.items() if until <= now]:
                del self._dead_tokens[token]  # the store refuses them by itself now
            if not self._dead_tokens or now - self._last_dead_retry < self.options.safety_poll:
                return
            self._last_dead_retry = now
            dead = list(self._dead_tokens.items())
        for token, (_, kind) in dead:
            try:
                self._abandon_of(kind)(token, self.clock())
            except LeaseNotFoundError:
                pass  # its lease ran out, or the completion had committed after all
            except Exception as exc:
                log.debug("%s work item %s: handing it back failed again (%s)", kind.value, token, exc)
                continue
            else:
                log.info("%s work item %s: handed back after the store recovered", kind.value, token)
            with self._lock:
                self._dead_tokens.pop(token, None)

    def _end_expired_holds(self) -> None:
        """Forget tokens held past their maximum hold time: their leases ran out, the items go out again."""
        now = self.clock()
        with self._lock:
            expired = [(token, held) for token, held in self._tokens.items() if held.deadline <= now]
            for token, held in expired:
                del self._tokens[token]
                held.stream.outstanding.pop(token, None)
                if held.turn is not None:
                    # Its lease runs out in the store, which signals nothing: look again.
                    forget_turn(self._turns_out, held.turn.instance_id, token)
                    self._work_signals[ORCHESTRATION] += 1
        for token, held in expired:
            self.metrics.count_lease_expiries(held.kind.value)
            log.warning(
                "%s work item %s was held by stream %d (worker %r) for %s without a completion: "
                "its lease ran out and it will be dispatched again",
                held.kind.value, token, held.stream.id, log_text(held.stream.worker_id), self.options.max_hold_of(held.kind),
            )

    def _renew_interval(self) -> float:
        leases = (self.options.orchestration_lease, self.options.activity_lease, self.options.entity_lease)
        return min(leases).total_seconds() / 3

    def _renew_if_due(self) -> None:
        """Extend the leases of held items, each kind by its own lease, never past its hold deadline."""
        if time.monotonic() - self._last_renew < self._renew_interval():
            return
        self._last_renew = time.monotonic()
        now = self.clock()
        batches: dict[datetime, list[str]] = {}
        with self._lock:
            for token, held in self._tokens.items():
                until = min(now + self.options.lease_of(held.kind), held.deadline)
                if until > held.renewed_until:
                    held.renewed_until = until
                    batches.setdefault(until, []).append(token)
        for until, tokens in batches.items():
            self.hub.renew_leases(tokens, until)

    def _forget_stale_rejections(self) -> None:
        """Drop rejections of instances that finished, vanished or started another execution."""
        if time.monotonic() - self._last_sweep < self.options.safety_poll:
            return
        self._last_sweep = time.monotonic()
        with self._lock:
            rejections = list(self._rejected.items())
        for instance_id, rejection in rejections:
            instance = self.hub.get_instance(instance_id)
            if (
                instance is None
                or instance.status in TERMINAL_STATUSES
                or instance.execution_id != rejection.turn.execution_id
            ):
                with self._lock:
                    if self._rejected.get(instance_id) is rejection:
                        del self._rejected[instance_id]

    def _dispatch_all(self) -> bool:
        """Lease work for every stream with free capacity. True if anything was sent.

        In passes of one item per stream and kind, so that no kind of work waits for another
        to run dry: a backlog of new orchestrations does not hold back activities, whose tasks
        appear while the backlog drains. A kind found empty for a stream is asked again only
        after a commit made work available.
        """
        with self._lock:
            streams = list(self._streams.values())
            if time.monotonic() - self._last_full_pass >= self.options.safety_poll:
                self._found_empty.clear()
            if not self._found_empty:
                self._last_full_pass = time.monotonic()
        sent = False
        empty = self._found_empty
        for _ in range(_PASSES_PER_CYCLE):
            progress = False
            for kind in (ORCHESTRATION, ACTIVITY, ENTITY):
                for stream in streams:
                    signals = self._work_signals[kind]
                    if stream.closed or empty.get((stream.id, kind)) == signals or not self._has_room(stream, kind):
                        continue
                    leased = self._lease_for(stream, kind)
                    if leased:
                        progress = sent = True
                    elif leased is not None:
                        empty[(stream.id, kind)] = signals
            if not progress:
                break
        return sent

    def _has_room(self, stream: WorkStream, kind: WorkKind) -> bool:
        """Whether ``stream`` has a free slot of ``kind``; if not, freeing one will wake the loop."""
        with self._lock:
            if stream.free(kind) > 0:
                self._room_wanted.discard((stream.id, kind))
                return True
            self._room_wanted.add((stream.id, kind))
            return False

    def _lease_for(self, stream: WorkStream, kind: WorkKind) -> bool | None:
        """Lease work of ``kind`` for ``stream``: True if any was sent, False if none was found, None: no room."""
        now = self.clock()
        lease_for = min(self.options.lease_of(kind), self.options.max_hold_of(kind))
        if kind == ENTITY:
            entity = self.hub.lease_entity(
                now,
                lease_for,
                stream.entity_names,
                self.options.entity_batch_size,
                self.options.entity_payload_limit,
            )
            return entity is not None and self._hand_over(stream, kind, entity, now, lease_for)
        count = self._reserve(stream, kind, _ACTIVITY_BATCH if kind == ACTIVITY else _TURN_BATCH, wanted=True)
        if not count:
            return None  # a follow-on lease holds the free slots
        try:
            if kind == ACTIVITY:
                activities = self.hub.lease_activities(
                    now, lease_for, stream.activity_names, versions=stream.activity_versions, limit=count
                )
                return any([self._hand_over(stream, kind, leased, now, lease_for) for leased in activities])
            exclude, skip_delay = self._rejections_for(stream)
            turns = self.hub.lease_orchestrations(
                now,
                lease_for,
                stream.orchestration_names,
                versions=stream.orchestration_versions,
                exclude=exclude,
                skip_delay=skip_delay,
                limit=count,
            )
            return any([self._hand_turn_over(stream, leased, now, lease_for) for leased in turns])
        finally:
            self._unreserve(stream, kind, count)

    def _hand_turn_over(
        self, stream: WorkStream, item: OrchestrationWorkItem, now: datetime, lease_for: timedelta
    ) -> bool:
        """:meth:`_hand_over` for a turn: which instance it is, and what its worker has seen of it."""
        inst = item.instance
        turn = HeldTurn(inst.instance_id, inst.name, inst.version, inst.execution_id)
        mark: ReplayMark | None = None
        omitted = 0
        if stream.keeps_replay_state:
            with self._lock:
                omitted = stream.omittable(item)
            mark = (*replay_identity(item), len(item.past_events) + len(item.new_events))
        return self._hand_over(stream, ORCHESTRATION, item, now, lease_for, turn, mark, omitted)

    def _hand_over(
        self,
        stream: WorkStream,
        kind: WorkKind,
        item: OrchestrationWorkItem | ActivityWorkItem | EntityWorkItem,
        now: datetime,
        lease_for: timedelta,
        turn: HeldTurn | None = None,
        mark: ReplayMark | None = None,
        omitted: int = 0,
    ) -> bool:
        """Put a leased item on the stream, or hand its lease back if the stream closed meanwhile.

        An item too large to send is sent without its past events or failed (see :meth:`_oversize`).
        """
        work: pb.WorkItem | None = to_work_item(item, omitted)
        limit = self.options.max_message_size
        if limit is not None and work is not None and not fits(work, limit):
            work = self._oversize(stream, kind, item, work, limit)
            if work is None:
                return True  # settled: failed in the store
        with self._lock:
            if turn is not None:
                rejection = self._rejected.get(turn.instance_id)
                if rejection is not None and rejection.turn != turn:
                    del self._rejected[turn.instance_id]  # rejections of an earlier execution
            if not stream.closed:
                stream.outstanding[item.token] = kind
                if turn is not None:
                    self._turns_out[turn.instance_id] = item.token
                deadline = now + self.options.max_hold_of(kind)
                self._tokens[item.token] = Held(stream, kind, deadline, now + lease_for, turn, mark)
                stream.queue.put(work)
                self.metrics.count_dispatched(kind.value)
                return True
        # The stream closed meanwhile: hand the lease straight back (or let it run out).
        try:
            self._release(item.token, kind)
        except StoreError as exc:
            log.info("could not hand back %s work item %s of a closed stream (%s); its lease runs out", kind.value,
                     item.token, exc)
        return False

    def _oversize(
        self,
        stream: WorkStream,
        kind: WorkKind,
        item: OrchestrationWorkItem | ActivityWorkItem | EntityWorkItem,
        work: pb.WorkItem,
        limit: int,
    ) -> pb.WorkItem | None:
        """A work item larger than the message limit: what to send instead, or None when it was failed.

        A turn goes without its past events to a worker that reads them with
        StreamInstanceHistory, when the rest fits and so does each past event (history chunks
        are cut by size). Otherwise the work fails, with a failure that names the size, the
        limit and how to raise it: the orchestration ends FAILED, the activity fails (its
        orchestration sees the failure), the entity batch's operations fail (state unchanged).
        """
        size = work.ByteSize()
        now = self.clock()
        settle: Callable[[], None]
        if isinstance(item, OrchestrationWorkItem):
            if streams_history(stream):
                streamed = history_streamed_work_item(item, stream)
                if fits(streamed, limit) and all(fits(e, limit) for e in item.past_events):
                    log.info("the turn of orchestration %s (%d bytes) is sent without its past events, "
                             "which the worker streams", quoted(item.instance.instance_id), size)
                    return streamed
            failure = too_large(f"the next turn of orchestration {quoted(item.instance.instance_id)}", size, limit)
            response = failed_turn(item, failure)
            settle = lambda: self.hub.complete_orchestration(item.token, response, now)  # noqa: E731
        elif isinstance(item, ActivityWorkItem):
            task = item.task
            failure = too_large(f"activity {quoted(task.name)} (task {task.task_id} of orchestration "
                                f"{quoted(task.instance_id)}) with its input", size, limit)
            result = failed_activity(item, failure)
            settle = lambda: self.hub.complete_activity(item.token, result, now)  # noqa: E731
        else:
            failure = too_large(f"a batch of {len(item.operations)} operation(s) of entity "
                                f"{quoted(item.instance_id)}", size, limit)
            batch = failed_entity_batch(item, failure)
            settle = lambda: self.hub.complete_entity(  # noqa: E731
                item.token, batch, now, self.options.entity_payload_limit)
        try:
            settle()
        except Exception as exc:
            log.warning("%s work item %s is too large to send and failing it failed too (%s): %s",
                        kind.value, item.token, log_text(exc), log_text(failure.errorMessage))
            try:
                self._release(item.token, kind)
            except Exception as release_error:
                log.info("could not release %s work item %s (%s); its lease runs out", kind.value, item.token,
                         release_error)
            return None
        log.warning("%s work item failed: %s", kind.value, log_text(failure.errorMessage))
        return None

    def _release(self, token: str, kind: WorkKind) -> bool:
        if kind == ORCHESTRATION:
            return self.hub.release_orchestration(token)
        if kind == ACTIVITY:
            return self.hub.release_activity(token)
        return self.hub.release_entity(token)

    def _rejections_for(self, stream: WorkStream) -> tuple[list[str], list[str]]:
        """(instances not to offer this stream, instances to offer it without waiting for their back-off).

        A stream that handed an instance back is not offered it while another open stream that
        has not could take it; when every open stream that could take it has handed it back,
        they are all offered it again after the store's back-off (a worker may have handed it
        back for a passing reason). A stream that has not handed it back is offered it at once.
        """
        exclude: list[str] = []
        skip_delay: list[str] = []
        with self._lock:
            for instance_id, rejection in self._rejected.items():
                name, version = rejection.turn.name, rejection.turn.version
                if stream.id not in rejection.streams:
                    if takes(stream, name, version):
                        skip_delay.append(instance_id)
                elif any(
                    other.id not in rejection.streams and not other.closed and takes(other, name, version)
                    for other in self._streams.values()
                ):
                    exclude.append(instance_id)
        return exclude, skip_delay


__all__ = [
    "ACTIVITY",
    "ENTITY",
    "ORCHESTRATION",
    "DispatchOptions",
    "Dispatcher",
    "utcnow",
    "LeaseNotFoundError",
    "WorkKind",
    "WorkStream",
]
