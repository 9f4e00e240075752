"""Follow-on leasing: the work a completion makes is leased in the completion's own transaction.

A chain's step is latency: an activity's result commits, then the turn it unblocked is leased
and sent, then that turn's result commits, then the activity it scheduled is leased and sent.
Leasing the next piece of work inside the transaction that made it, and putting it on a stream
from the completing thread, saves a transaction and a wake-up of the dispatcher thread each way.

The follow-on takes only what the transaction itself made: the activity tasks it queued (leased
for one stream with free activity slots) and the turns of the instances whose inbox it wrote to
(leased for one stream with free turn slots, preferring a stream whose worker keeps one of them
replayed). Slots are reserved on the stream under the dispatcher's lock before the claim, so the
follow-on and the dispatcher thread never promise one slot twice. Whatever the follow-on leaves
(no stream had room, another filter, more work than slots) the dispatcher thread leases as before.
When the transaction fails, its leases vanish with it and the reservations are given back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sidecar.dispatch_state import DispatchOptions, Held, forget_turn
from sidecar.hub import TaskHub
from sidecar.hub.task_hub import LeasedTurn
from sidecar.store.base import ActivityWorkItem, OrchestrationWorkItem, StoreTx
from sidecar.work_streams import ACTIVITY, ORCHESTRATION, WorkKind, WorkStream

T = TypeVar("T")

log = logging.getLogger("durabletask-sidecar.dispatch")

# The most activities, and turns, one follow-on leases.
FOLLOW_ON_ACTIVITIES = 16
FOLLOW_ON_TURNS = 8


@dataclass
class _Grant:
    stream: WorkStream
    kind: WorkKind
    reserved: int
    lease_for: timedelta
    activities: list[ActivityWorkItem] = field(default_factory=list)
    turns: list[LeasedTurn] = field(default_factory=list)


@dataclass
class _FollowOn:
    """What one completion transaction leased, to hand over once it commits."""

    now: datetime | None = None
    grants: list[_Grant] = field(default_factory=list)
    marked: dict[str, str] = field(default_factory=dict)  # instance -> token, added to the dispatcher's turns out
    names: dict[str, str] = field(default_factory=dict)  # instance ID -> orchestration name, where known


class FollowOnLeasing:
    """The follow-on methods of the dispatcher (a mixin: the state is the dispatcher's)."""

    hub: TaskHub
    options: DispatchOptions
    clock: Callable[[], datetime]
    _lock: threading.Condition
    _stopped: bool
    _wake: bool
    _streams: dict[int, WorkStream]
    _room_wanted: set[tuple[int, WorkKind]]
    _turns_out: dict[str, str]
    _tokens: dict[str, Held]
    _hand_over: Callable[..., bool]
    _hand_turn_over: Callable[[WorkStream, OrchestrationWorkItem, datetime, timedelta], bool]
    _rejections_for: Callable[[WorkStream], tuple[list[str], list[str]]]

    def _reserve(self, stream: WorkStream, kind: WorkKind, most: int, wanted: bool = False) -> int:
        """Reserve up to ``most`` free slots of ``kind`` on ``stream`` (under the lock); how many.

        ``wanted``: when there is none, freeing one wakes the dispatcher (see :meth:`_room_freed`).
        """
        with self._lock:
            if stream.closed:
                return 0
            count = max(0, min(most, stream.free(kind)))
            stream.reserved[kind] += count
            if not count and wanted:
                self._room_wanted.add((stream.id, kind))
            return count

    def _unreserve(self, stream: WorkStream, kind: WorkKind, count: int) -> None:
        if count:
            with self._lock:
                stream.reserved[kind] -= count
                self._room_freed(stream, kind)

    def _room_freed(self, stream: WorkStream, kind: WorkKind) -> None:
        """A slot of ``kind`` on ``stream`` was freed (under the lock): wake the dispatcher if it found none."""
        if (stream.id, kind) in self._room_wanted:
            self._room_wanted.discard((stream.id, kind))
            self._wake = True
            self._lock.notify_all()

    def _with_follow_on(
        self,
        commit: Callable[[Callable[[StoreTx], None]], T],
        names: dict[str, str] | None = None,
        committed: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``commit`` (a completion that calls its argument inside its transaction), then hand the leases over.

        ``names``: orchestration names of instances known to the caller; ``committed`` runs after
        the commit and before the hand-over.
        """
        follow = _FollowOn(names=names or {})
        try:
            result = commit(lambda tx: self._lease_follow_on(tx, follow))
        except BaseException:
            self._give_back(follow)
            raise
        if committed is not None:
            committed(result)
        self._hand_follow_on(follow)
        return result

    def _turns_with_follow_on(
        self, commit: Callable[[Callable[[StoreTx], None]], Sequence[BaseException | None]], tokens: Sequence[str]
    ) -> Sequence[BaseException | None]:
        """:meth:`_with_follow_on` for turns: what each worker has replayed is known before the next turn goes out."""
        names: dict[str, str] = {}
        with self._lock:
            for token in tokens:
                held = self._tokens.get(token)
                if held is not None and held.turn is not None:
                    names[held.turn.instance_id] = held.turn.name

        def remember_replayed(errors: Sequence[BaseException | None]) -> None:
            with self._lock:  # as settling will again; a follow-on turn of the same instance needs it now
                for token, error in zip(tokens, errors, strict=True):
                    held = self._tokens.get(token)
                    if error is None and held is not None and held.turn is not None:
                        held.stream.remember_replayed(held.turn.instance_id, held.replay_mark)

        return self._with_follow_on(commit, names, remember_replayed)

    def _lease_follow_on(self, tx: StoreTx, follow: _FollowOn) -> None:
        if follow.grants or follow.marked:  # the store runs the transaction again: the last try's leases are gone
            self._give_back(follow)
        notice = tx.notice
        if notice.reset or notice.resync:
            return
        with self._lock:
            if self._stopped:
                return
            streams = [s for s in self._streams.values() if not s.closed]
            targets = {i for i in notice.inbox_instances if i not in self._turns_out}
        if not streams:
            return
        now = follow.now = self.clock()
        if ACTIVITY.value in notice.work_kinds:
            self._follow_activities(tx, follow, streams, now)
        if targets:
            self._follow_turns(tx, follow, streams, targets, now)

    def _lease_length(self, kind: WorkKind) -> timedelta:
        return min(self.options.lease_of(kind), self.options.max_hold_of(kind))

    def _follow_activities(self, tx: StoreTx, follow: _FollowOn, streams: list[WorkStream], now: datetime) -> None:
        for stream in streams:
            count = self._reserve(stream, ACTIVITY, FOLLOW_ON_ACTIVITIES)
            if not count:
                continue
            grant = _Grant(stream, ACTIVITY, count, self._lease_length(ACTIVITY))
            follow.grants.append(grant)
            # The commit's own tasks; those whose lease ran out wait for the dispatcher, which wakes
            # when a lease ends (a claim of them here would be one more statement that finds none).
            grant.activities = self.hub.lease_activities_in(
                tx, now, grant.lease_for, stream.activity_names, versions=stream.activity_versions, limit=count,
                expired=False,
            )
            notice = tx.notice
            leased = {(a.task.instance_id, a.task.task_id) for a in grant.activities}
            notice.activities_settled = not notice.other_activity_work and notice.new_activity_tasks <= leased
            return

    def _follow_turns(
        self, tx: StoreTx, follow: _FollowOn, streams: list[WorkStream], targets: set[str], now: datetime
    ) -> None:
        # A stream whose worker keeps one of the instances replayed first: it needs only the new events.
        streams = sorted(streams, key=lambda s: not any(t in s.replayed for t in targets))
        for stream in streams:
            count = self._reserve(stream, ORCHESTRATION, min(FOLLOW_ON_TURNS, len(targets)))
            if not count:
                continue
            grant = _Grant(stream, ORCHESTRATION, count, self._lease_length(ORCHESTRATION))
            follow.grants.append(grant)
            exclude, skip_delay = self._rejections_for(stream)
            grant.turns = self.hub.lease_orchestrations_in(
                tx, now, grant.lease_for, stream.orchestration_names, versions=stream.orchestration_versions,
                exclude=exclude, skip_delay=skip_delay, limit=count, only=targets,
            )
            leased = {item.instance.instance_id for item, _ in grant.turns}
            with self._lock:
                # Their inbox events are these turns': the commit's notice need not wake the dispatcher.
                for item, _ in grant.turns:
                    self._turns_out[item.instance.instance_id] = item.token
                    follow.marked[item.instance.instance_id] = item.token
            settled = tx.notice.settled_instances
            settled.update(leased)
            if len(leased) < count and not exclude and not skip_delay and not stream.orchestration_versions:
                # The claim found all there was among the targets that this stream takes: those
                # it did not lease have nothing deliverable now (later events signal again).
                names = stream.orchestration_names
                settled.update(t for t in targets if names is None or follow.names.get(t) in names)
            return

    def _hand_follow_on(self, follow: _FollowOn) -> None:
        """After the commit: put the leased items on their streams, then free the reservations.

        An item that fails to go out is logged and left to its lease (it goes out again when that
        runs out); the others still go, and every reservation and mark is given back.
        """
        try:
            for grant in follow.grants:
                assert follow.now is not None
                items: list[Any] = self.hub.keep_leased_turns(grant.turns) if grant.kind == ORCHESTRATION \
                    else list(grant.activities)
                for item in items:
                    try:
                        if grant.kind == ORCHESTRATION:
                            self._hand_turn_over(grant.stream, item, follow.now, grant.lease_for)
                        else:
                            self._hand_over(grant.stream, grant.kind, item, follow.now, grant.lease_for)
                    except Exception:
                        log.exception("%s work item %s leased by a completion could not be sent; "
                                      "it goes out again when its lease runs out", grant.kind.value, item.token)
        finally:
            self._forget_unsent_marks(follow)
            for grant in follow.grants:
                self._unreserve(grant.stream, grant.kind, grant.reserved)

    def _forget_unsent_marks(self, follow: _FollowOn) -> None:
        """Turns marked out that did not go out (the stream closed, sending failed, the transaction failed)."""
        with self._lock:
            for instance_id, token in follow.marked.items():
                if token not in self._tokens:
                    forget_turn(self._turns_out, instance_id, token)

    def _give_back(self, follow: _FollowOn) -> None:
        """The transaction failed or runs again: its leases are gone; free the reservations and the marks."""
        self._forget_unsent_marks(follow)
        for grant in follow.grants:
            self._unreserve(grant.stream, grant.kind, grant.reserved)
        follow.grants.clear()
        follow.marked.clear()
