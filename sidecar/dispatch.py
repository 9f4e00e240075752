"""Work-item dispatch: streams, capacities, completion tokens, health pings, re-queueing.

One dispatcher thread leases work from the store for streams with free capacity and
pushes it to their queues. It wakes at once when a commit creates work, otherwise at
the next moment work becomes visible (timers, delayed starts, back-offs, lease
expiries), with a slow safety-net poll. The store owns every lease; the dispatcher only
remembers which stream holds which token, to count capacity, renew leases while the
stream lives and give the work back when the stream ends.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.entities import DEFAULT_MAX_BATCH
from sidecar.store.base import (
    ActivityWorkItem,
    ChangeSet,
    EntityWorkItem,
    LeaseNotFoundError,
    OrchestrationWorkItem,
    Store,
)

log = logging.getLogger("durabletask-sidecar.dispatch")

ORCHESTRATION = "orchestration"
ACTIVITY = "activity"
ENTITY = "entity"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DispatchOptions:
    """Timing and capacity knobs of the dispatcher (tests shorten them)."""

    orchestration_lease: timedelta = timedelta(minutes=5)
    activity_lease: timedelta = timedelta(minutes=5)
    health_ping_interval: float = 30.0
    stream_grace: float = 2.0
    safety_poll: float = 1.0
    default_max_orchestrations: int = 100
    default_max_activities: int = 100
    entity_lease: timedelta = timedelta(minutes=5)
    default_max_entities: int = 100
    entity_batch_size: int = DEFAULT_MAX_BATCH
    # Largest entity state, and largest sum of operation sizes in one batch (bytes); the
    # server sets half its maximum message size, so that both fit in one work item.
    entity_payload_limit: int | None = None
    # A stream that handed an orchestration turn back (a worker rejecting its version) is
    # not offered that instance again for this long, so that another worker can take it.
    reject_memory: float = 10.0


@dataclass(eq=False)
class WorkStream:
    """One open GetWorkItems call: its limits, filters and the items on their way to it."""

    id: int
    max_orchestrations: int
    max_activities: int
    orchestration_names: frozenset[str] | None
    activity_names: frozenset[str] | None
    capabilities: frozenset[int]
    worker_id: str = ""
    max_entities: int = 0
    entity_names: frozenset[str] | None = None
    # name -> the only versions this stream takes (names not listed here: any version).
    orchestration_versions: dict[str, frozenset[str]] = field(default_factory=dict)
    activity_versions: dict[str, frozenset[str]] = field(default_factory=dict)
    queue: queue.SimpleQueue[pb.WorkItem | None] = field(default_factory=queue.SimpleQueue)
    outstanding: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def free(self, kind: str) -> int:
        used = sum(1 for k in self.outstanding.values() if k == kind)
        limit = {ORCHESTRATION: self.max_orchestrations, ACTIVITY: self.max_activities}.get(kind, self.max_entities)
        return limit - used


def _declared_names(
    request: pb.GetWorkItemsRequest, filters: list[pb.OrchestrationFilter] | list[pb.ActivityFilter]
) -> frozenset[str] | None:
    """None (all work) without filters; with filters, the names declared (an empty list: none of this kind)."""
    return frozenset(f.name for f in filters) if request.HasField("workItemFilters") else None


def _declared_versions(filters: list[pb.OrchestrationFilter] | list[pb.ActivityFilter]) -> dict[str, frozenset[str]]:
    """name -> accepted versions, for names whose filters all list versions (one without: any version)."""
    accepted: dict[str, set[str]] = {}
    unrestricted: set[str] = set()
    for f in filters:
        if f.versions:
            accepted.setdefault(f.name, set()).update(f.versions)
        else:
            unrestricted.add(f.name)
    return {name: frozenset(v) for name, v in accepted.items() if name not in unrestricted}


class Dispatcher:
    """Pushes leased work items to open streams and settles completions by token."""

    def __init__(
        self, store: Store, options: DispatchOptions | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.options = options or DispatchOptions()
        self.clock = clock
        self._lock = threading.Condition()
        self._wake = False
        self._stopped = False
        self._streams: dict[int, WorkStream] = {}
        self._tokens: dict[str, tuple[WorkStream, str]] = {}
        self._releases: list[tuple[float, str, str]] = []
        self._token_instances: dict[str, str] = {}  # orchestration token -> instance ID
        self._rejected: dict[str, dict[int, float]] = {}  # instance ID -> stream ID -> until (monotonic)
        self._rejected_work: dict[str, tuple[str, str | None]] = {}  # instance ID -> (name, version)
        self._ids = itertools.count(1)
        self._last_renew = time.monotonic()
        self._thread: threading.Thread | None = None
        store.add_listener(self._on_change)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sidecar-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            streams = list(self._streams.values())
            self._lock.notify_all()
        self.store.remove_listener(self._on_change)
        for stream in streams:
            stream.queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        with self._lock:
            self._wake = True
            self._lock.notify_all()

    def _on_change(self, changes: ChangeSet) -> None:
        if changes.work_available or changes.reset:
            self.wake()

    # --- streams ----------------------------------------------------------------------------

    def open_stream(self, request: pb.GetWorkItemsRequest) -> WorkStream:
        """Register a stream with its limits (defaults when 0) and name filters."""
        filters = request.workItemFilters
        stream = WorkStream(
            id=next(self._ids),
            max_orchestrations=request.maxConcurrentOrchestrationWorkItems or self.options.default_max_orchestrations,
            max_activities=request.maxConcurrentActivityWorkItems or self.options.default_max_activities,
            orchestration_names=_declared_names(request, list(filters.orchestrations)),
            activity_names=_declared_names(request, list(filters.activities)),
            capabilities=frozenset(request.capabilities),
            worker_id=request.worker_instance_id,
            max_entities=request.maxConcurrentEntityWorkItems or self.options.default_max_entities,
            entity_names=_entity_names(request),
            orchestration_versions=_declared_versions(list(filters.orchestrations)),
            activity_versions=_declared_versions(list(filters.activities)),
        )
        with self._lock:
            if self._stopped:
                stream.closed = True
                stream.queue.put(None)
                return stream
            self._streams[stream.id] = stream
            self._wake = True
            self._lock.notify_all()
        log.debug("stream %d opened (worker %r)", stream.id, stream.worker_id)
        return stream

    def close_stream(self, stream: WorkStream) -> None:
        """Forget a stream; its unfinished work goes back to the queue after the grace period."""
        with self._lock:
            if stream.closed:
                return
            stream.closed = True
            self._streams.pop(stream.id, None)
            for by_stream in self._rejected.values():
                by_stream.pop(stream.id, None)
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

    # --- completions ------------------------------------------------------------------------

    def _settled(self, token: str, completed: bool = False) -> None:
        with self._lock:
            owner = self._tokens.pop(token, None)
            if owner is not None:
                owner[0].outstanding.pop(token, None)
            instance_id = self._token_instances.pop(token, None)
            if completed and instance_id is not None:
                self._rejected.pop(instance_id, None)
                self._rejected_work.pop(instance_id, None)
            self._wake = True
            self._lock.notify_all()

    def complete_orchestration(self, response: pb.OrchestratorResponse) -> None:
        """Commit a turn. Raises LeaseNotFoundError (stale token) or InvalidTurnError (bad actions)."""
        try:
            self.store.complete_orchestration(response.completionToken, response, self.clock())
        finally:
            self._settled(response.completionToken, completed=True)

    def complete_activity(self, response: pb.ActivityResponse) -> None:
        """Commit an activity result. Raises LeaseNotFoundError for a stale token."""
        try:
            self.store.complete_activity(response.completionToken, response, self.clock())
        finally:
            self._settled(response.completionToken)

    def abandon_orchestration(self, token: str) -> None:
        # Remembered before the store commits: the commit wakes the dispatch loop.
        with self._lock:
            owner = self._tokens.get(token)
            instance_id = self._token_instances.get(token)
            if owner is not None and instance_id is not None:
                until = time.monotonic() + self.options.reject_memory
                self._rejected.setdefault(instance_id, {})[owner[0].id] = until
        try:
            self.store.abandon_orchestration(token, self.clock())
        finally:
            self._settled(token)

    def complete_entity(self, result: pb.EntityBatchResult) -> None:
        """Commit an entity batch. Raises LeaseNotFoundError (stale token) or InvalidBatchResultError."""
        try:
            self.store.complete_entity(
                result.completionToken, result, self.clock(), self.options.entity_payload_limit
            )
        finally:
            self._settled(result.completionToken)

    def abandon_entity(self, token: str) -> None:
        try:
            self.store.abandon_entity(token, self.clock())
        finally:
            self._settled(token)

    def abandon_activity(self, token: str) -> None:
        try:
            self.store.abandon_activity(token, self.clock())
        finally:
            self._settled(token)

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                self._wake = False
            try:
                timeout = self._cycle()
            except Exception:  # keep dispatching whatever one cycle hit
                log.exception("dispatch cycle failed")
                timeout = self.options.safety_poll
            with self._lock:
                if not self._wake and not self._stopped and timeout > 0:
                    self._lock.wait(timeout)

    def _cycle(self) -> float:
        """One pass: releases, renewals, leasing. Returns how long to sleep before the next."""
        self._process_releases()
        self._renew_if_due()
        if self._dispatch_all():
            return 0.0
        now = self.clock()
        timeout = self.options.safety_poll
        due = self.store.next_due_at(now)
        if due is not None:
            timeout = min(timeout, max(0.0, (due - now).total_seconds()))
        with self._lock:
            if self._releases:
                timeout = min(timeout, max(0.0, min(r[0] for r in self._releases) - time.monotonic()))
        return timeout

    def _process_releases(self) -> None:
        with self._lock:
            now = time.monotonic()
            due = [r for r in self._releases if r[0] <= now]
            self._releases = [r for r in self._releases if r[0] > now]
            expired = [(token, kind) for _, token, kind in due if self._tokens.pop(token, None) is not None]
            for _, token, _ in due:
                self._token_instances.pop(token, None)
        for token, kind in expired:
            if self._release(token, kind):
                log.info("re-queued %s work item %s of a closed stream", kind, token)

    def _renew_if_due(self) -> None:
        leases = (self.options.orchestration_lease, self.options.activity_lease, self.options.entity_lease)
        interval = min(leases).total_seconds() / 3
        if time.monotonic() - self._last_renew < interval:
            return
        self._last_renew = time.monotonic()
        with self._lock:
            tokens = list(self._tokens)
        if tokens:
            lease = max(leases)
            self.store.renew_leases(tokens, self.clock() + lease)

    def _dispatch_all(self) -> bool:
        """Lease work for every stream with free capacity, round-robin. True if anything was sent."""
        with self._lock:
            streams = list(self._streams.values())
        sent = False
        for kind in (ORCHESTRATION, ACTIVITY, ENTITY):
            exhausted: set[int] = set()
            progress = True
            while progress:
                progress = False
                for stream in streams:
                    if stream.id in exhausted or stream.closed or stream.free(kind) <= 0:
                        continue
                    if self._lease_for(stream, kind):
                        progress = sent = True
                    else:
                        exhausted.add(stream.id)
        return sent

    def _lease_for(self, stream: WorkStream, kind: str) -> bool:
        now = self.clock()
        item: OrchestrationWorkItem | ActivityWorkItem | EntityWorkItem | None
        if kind == ENTITY:
            item = self.store.lease_entity(
                now,
                self.options.entity_lease,
                stream.entity_names,
                self.options.entity_batch_size,
                self.options.entity_payload_limit,
            )
        elif kind == ORCHESTRATION:
            item = self.store.lease_orchestration(
                now,
                self.options.orchestration_lease,
                stream.orchestration_names,
                versions=stream.orchestration_versions,
                exclude=self._rejected_by(stream),
            )
        else:
            item = self.store.lease_activity(
                now, self.options.activity_lease, stream.activity_names, versions=stream.activity_versions
            )
        if item is None:
            return False
        work = _to_work_item(item)
        with self._lock:
            if not stream.closed:
                stream.outstanding[item.token] = kind
                self._tokens[item.token] = (stream, kind)
                if isinstance(item, OrchestrationWorkItem):
                    self._token_instances[item.token] = item.instance.instance_id
                    self._rejected_work[item.instance.instance_id] = (item.instance.name, item.instance.version)
                stream.queue.put(work)
                return True
        # The stream closed meanwhile: hand the lease straight back.
        self._release(item.token, kind)
        return False

    def _release(self, token: str, kind: str) -> bool:
        if kind == ORCHESTRATION:
            return self.store.release_orchestration(token)
        if kind == ACTIVITY:
            return self.store.release_activity(token)
        return self.store.release_entity(token)


    def _rejected_by(self, stream: WorkStream) -> list[str]:
        """Instances this stream handed back recently and another open stream could take instead.

        When no other stream could, the rejecting one is offered the instance again after the
        store's back-off (a worker that handed a turn back for another reason retries it).
        """
        now = time.monotonic()
        with self._lock:
            excluded: list[str] = []
            for instance_id, by_stream in list(self._rejected.items()):
                for stream_id, until in list(by_stream.items()):
                    if until <= now:
                        del by_stream[stream_id]
                if not by_stream:
                    del self._rejected[instance_id]
                    self._rejected_work.pop(instance_id, None)
                    continue
                if stream.id not in by_stream:
                    continue
                name, version = self._rejected_work.get(instance_id, ("", None))
                if any(
                    other.id not in by_stream and not other.closed and _takes(other, name, version)
                    for other in self._streams.values()
                ):
                    excluded.append(instance_id)
            return excluded


def _entity_names(request: pb.GetWorkItemsRequest) -> frozenset[str] | None:
    """Entity names a stream asked for (lower-cased): None without filters, else the names declared."""
    if not request.HasField("workItemFilters"):
        return None
    return frozenset(f.name.lower() for f in request.workItemFilters.entities)


def _takes(stream: WorkStream, name: str, version: str | None) -> bool:
    """Whether a stream's filters let it take a turn of orchestration ``name`` at ``version``."""
    if stream.orchestration_names is None:
        return True
    if name not in stream.orchestration_names:
        return False
    versions = stream.orchestration_versions.get(name)
    return not versions or (version or "") in versions


def _to_work_item(item: OrchestrationWorkItem | ActivityWorkItem | EntityWorkItem) -> pb.WorkItem:
    if isinstance(item, EntityWorkItem):
        entity = pb.EntityRequest(instanceId=item.instance_id, operationRequests=item.operations)
        if item.state is not None:
            entity.entityState.value = item.state
        return pb.WorkItem(entityRequestV2=entity, completionToken=item.token)
    if isinstance(item, OrchestrationWorkItem):
        request = pb.OrchestratorRequest(
            instanceId=item.instance.instance_id,
            pastEvents=item.past_events,
            newEvents=item.new_events,
        )
        request.executionId.value = item.instance.execution_id
        return pb.WorkItem(orchestratorRequest=request, completionToken=item.token)
    task = item.task
    activity = pb.ActivityRequest(name=task.name, taskId=task.task_id, tags=task.tags)
    if task.version is not None:
        activity.version.value = task.version
    if task.input is not None:
        activity.input.value = task.input
    activity.orchestrationInstance.instanceId = task.instance_id
    activity.orchestrationInstance.executionId.value = task.execution_id
    return pb.WorkItem(activityRequest=activity, completionToken=item.token)


__all__ = ["ACTIVITY", "ENTITY", "ORCHESTRATION", "DispatchOptions", "Dispatcher", "LeaseNotFoundError", "WorkStream"]
