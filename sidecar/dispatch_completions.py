"""Settling completions and hand-backs of work items, for :class:`sidecar.dispatch.Dispatcher`.

No failure of a completion pins its work item until a lease runs out. A completion that fails
for any reason but a stale token or a refused result (the store is full or unreachable, or an
unexpected error) hands its item back with the hand-back delay, so it is offered again within
moments rather than when its lease runs out. A result with a value the store cannot keep keeps
its item for the stream grace period, for the worker's replacement under the same token; without
one, the item is handed back then. A hand-back that fails too (the store is down) is tried again
every safety-net poll until it succeeds or the lease has run out (see the dispatch loop).

Results that arrive together (a worker's batched call, or calls at the same moment) are
committed in one transaction through a :class:`~sidecar.group_commit.GroupCommitter`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dispatch_state import DispatchOptions, Held, Outcome, Rejection, forget_turn, raise_if_failed
from sidecar.entity_batch import InvalidBatchResultError
from sidecar.group_commit import GroupCommitter
from sidecar.hub import TaskHub
from sidecar.metrics import SidecarMetrics
from sidecar.model import InvalidTurnError
from sidecar.store.base import LeaseNotFoundError, StoreValueError
from sidecar.work_streams import ACTIVITY, ENTITY, ORCHESTRATION, WorkKind, WorkStream

log = logging.getLogger("durabletask-sidecar.dispatch")

# Completion failures that leave nothing to hand back: a stale token; a result the hub refused
# (it already released the item with the hand-back delay).
_NOT_HANDED_BACK = (LeaseNotFoundError, InvalidTurnError, InvalidBatchResultError)


class CompletionSettling:
    """The completion and hand-back methods of the dispatcher (a mixin: the state is the dispatcher's)."""

    hub: TaskHub
    options: DispatchOptions
    clock: Callable[[], datetime]
    _lock: threading.Condition
    _wake: bool
    _room_freed: Callable[[WorkStream, WorkKind], None]
    _tokens: dict[str, Held]
    _rejected: dict[str, Rejection]
    _turns_out: dict[str, str]
    _dead_tokens: dict[str, tuple[float, WorkKind]]
    _awaiting_replacement: list[tuple[float, str, WorkKind]]
    _activity_results: GroupCommitter[tuple[str, pb.ActivityResponse, datetime]]
    metrics: SidecarMetrics
    _turn_results: GroupCommitter[tuple[str, pb.OrchestratorResponse, datetime]]

    def _settling(self, token: str) -> None:
        """A held turn begins to settle: commits from now on may make its instance leasable again."""
        with self._lock:
            held = self._tokens.get(token)
            if held is not None and held.turn is not None:
                forget_turn(self._turns_out, held.turn.instance_id, token)

    def _settled(self, token: str, completed: bool = False) -> None:
        """The item is done with: free its slot. A completion's commit has signalled the work it made,
        so the dispatcher is woken only if it wants the slot; any other end wakes it."""
        with self._lock:
            held = self._tokens.pop(token, None)
            if held is not None:
                if completed:
                    self.metrics.count_completed(held.kind.value, time.monotonic() - held.handed_out)
                held.stream.outstanding.pop(token, None)
                if held.turn is not None:
                    forget_turn(self._turns_out, held.turn.instance_id, token)
                    if completed:
                        self._rejected.pop(held.turn.instance_id, None)
                    held.stream.remember_replayed(held.turn.instance_id, held.replay_mark if completed else None)
                self._room_freed(held.stream, held.kind)
            if not completed or held is None:
                self._wake = True
                self._lock.notify_all()

    def complete_orchestration(self, response: pb.OrchestratorResponse) -> None:
        """Commit a turn. Raises LeaseNotFoundError (stale token) or InvalidTurnError (bad actions).

        Any other failure (the store is full or unreachable) hands the turn back (see
        ``_after_failure``); the error still reaches the caller. Turns completed at the same
        moment share a transaction.
        """
        raise_if_failed(self.complete_orchestrations([response]))

    def _turn_settling(self, response: pb.OrchestratorResponse) -> None:
        token = response.completionToken
        self._settling(token)
        if any(a.HasField("completeOrchestration") for a in response.actions):
            # The execution ends (or continues as new): the worker keeps no state for it.
            with self._lock:
                held = self._tokens.get(token)
                if held is not None:
                    held.replay_mark = None

    def complete_orchestrations(self, responses: list[pb.OrchestratorResponse]) -> list[Exception | None]:
        """Commit several turns in one transaction (and with others arriving meanwhile).

        Returns each one's error or None; each turn is settled as :meth:`complete_orchestration` would.
        """
        for response in responses:
            self._turn_settling(response)
        return self._complete_together(ORCHESTRATION, self._turn_results, responses)

    def complete_activity(self, response: pb.ActivityResponse) -> None:
        """Commit an activity result. Raises LeaseNotFoundError for a stale token; other failures hand it back."""
        raise_if_failed(self.complete_activities([response]))

    def complete_activities(self, responses: list[pb.ActivityResponse]) -> list[Exception | None]:
        """Commit several activity results in one transaction (and with others arriving meanwhile).

        Returns each one's error or None; each result is settled as :meth:`complete_activity` would.
        """
        return self._complete_together(ACTIVITY, self._activity_results, responses)

    def _complete_together(
        self, kind: WorkKind, committer: GroupCommitter[tuple[str, Any, datetime]], responses: list[Any]
    ) -> list[Exception | None]:
        now = self.clock()
        outcomes: list[Exception | None] = [None] * len(responses)
        live: list[int] = []
        for i, response in enumerate(responses):
            if self._is_dead(response.completionToken):
                outcomes[i] = LeaseNotFoundError(response.completionToken)
            else:
                live.append(i)
        errors: list[BaseException | None]
        try:
            errors = committer.submit_many([(responses[i].completionToken, responses[i], now) for i in live])
        except Exception as exc:  # every result failed with it: each is handed back below
            errors = [exc] * len(live)
        interrupted: BaseException | None = None
        completed = [False] * len(responses)
        for i, error in zip(live, errors, strict=True):
            if error is None:
                completed[i] = True
                continue
            self._after_failure(kind, responses[i].completionToken, error)
            if isinstance(error, Exception):
                outcomes[i] = error
            else:
                interrupted = error  # not an Exception: a KeyboardInterrupt, say
        for response, done in zip(responses, completed, strict=True):
            self._settled(response.completionToken, completed=done)
        if interrupted is not None:
            raise interrupted
        return outcomes

    def complete_entity(self, result: pb.EntityBatchResult) -> None:
        """Commit an entity batch. Raises LeaseNotFoundError (stale token) or InvalidBatchResultError.

        Other failures hand the batch back, as for turns.
        """
        token = result.completionToken
        with self._completing(ENTITY, token) as outcome:
            self.metrics.timed_commit(ENTITY.value, self.hub.complete_entity)(
                token, result, self.clock(), self.options.entity_payload_limit
            )
            outcome.completed = True

    @contextmanager
    def _completing(self, kind: WorkKind, token: str) -> Iterator[Outcome]:
        """Settle a completion: forget the token whatever happens; hand the item back when it failed.

        A completion that fails for another reason than a stale token or a refused result (the
        hub already released those), whatever the error, hands its item back with the hand-back
        delay, so that it is offered again shortly rather than when its lease runs out (a value
        the store cannot keep waits for the worker's replacement first, see ``_after_failure``).
        When the hand-back fails too, the token is dead: a later completion with it (a worker's
        retry) is refused as stale, and the hand-back is tried again every safety poll.
        """
        outcome = Outcome()
        try:
            if self._is_dead(token):
                raise LeaseNotFoundError(token)
            yield outcome
        except BaseException as exc:  # whatever it was, the item must not wait for its lease
            self._after_failure(kind, token, exc)
            raise
        finally:
            self._settled(token, completed=outcome.completed)

    def _after_failure(self, kind: WorkKind, token: str, failure: BaseException) -> None:
        """What a failed completion leaves to do: nothing, wait for a replacement, or hand the item back."""
        if isinstance(failure, _NOT_HANDED_BACK):
            return  # a stale token, or the hub released the item itself
        if isinstance(failure, StoreValueError):
            # The worker may send a replacement (a failure) under the same token: wait for it a while.
            with self._lock:
                self._awaiting_replacement.append((time.monotonic() + self.options.stream_grace, token, kind))
                self._lock.notify_all()
            return
        self._hand_back(kind, token, failure)

    def _is_dead(self, token: str) -> bool:
        with self._lock:
            return token in self._dead_tokens

    def abandon_orchestration(self, token: str) -> None:
        """Hand a turn back; its stream is remembered as one that rejected the instance."""
        # Remembered before the store commits: the commit wakes the dispatch loop.
        self._settling(token)
        with self._lock:
            held = self._tokens.get(token)
            if held is not None and held.turn is not None and not held.stream.closed:
                rejection = self._rejected.get(held.turn.instance_id)
                if rejection is None or rejection.turn != held.turn:
                    rejection = self._rejected[held.turn.instance_id] = Rejection(held.turn)
                rejection.streams.add(held.stream.id)
        try:
            self.hub.abandon_orchestration(token, self.clock())
            self.metrics.count_redispatch(ORCHESTRATION.value, "abandoned")
        finally:
            self._settled(token)

    def abandon_entity(self, token: str) -> None:
        try:
            self.hub.abandon_entity(token, self.clock())
            self.metrics.count_redispatch(ENTITY.value, "abandoned")
        finally:
            self._settled(token)

    def abandon_activity(self, token: str) -> None:
        try:
            self.hub.abandon_activity(token, self.clock())
            self.metrics.count_redispatch(ACTIVITY.value, "abandoned")
        finally:
            self._settled(token)

    def _hand_back(self, kind: WorkKind, token: str, failure: BaseException | str) -> None:
        """Give back a work item whose completion failed, with the hand-back delay.

        When that fails too (the database is still down), the token is marked dead and the
        item's lease (no longer renewed) runs out instead; it is offered again then.
        """
        try:
            self._abandon_of(kind)(token, self.clock())
        except LeaseNotFoundError:
            # Nothing to give back: the completion committed after all (its answer was lost),
            # or the lease ran out or the instance ended meanwhile.
            log.info("%s work item %s: completion failed (%s); the store no longer holds it", kind.value, token, failure)
            return
        except Exception as exc:
            with self._lock:
                self._dead_tokens[token] = (time.monotonic() + self.options.lease_of(kind).total_seconds(), kind)
            log.warning(
                "%s work item %s: completion failed (%s) and handing it back failed too (%s); "
                "the hand-back is tried again every %g s until its lease runs out",
                kind.value, token, failure, exc, self.options.safety_poll,
            )
            return
        self.metrics.count_redispatch(kind.value, "completion_failed")
        log.warning("%s work item %s: completion failed (%s); handed it back, it is offered again shortly",
                    kind.value, token, failure)

    def _abandon_of(self, kind: WorkKind) -> Callable[[str, datetime], None]:
        """The hub's hand-back (with the growing delay) of a work item of ``kind``."""
        return {
            ORCHESTRATION: self.hub.abandon_orchestration,
            ACTIVITY: self.hub.abandon_activity,
            ENTITY: self.hub.abandon_entity,
        }[kind]
