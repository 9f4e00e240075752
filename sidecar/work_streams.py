"""Work-item streams as the dispatcher sees them: kinds of work, a stream's limits and filters,
the replay marks of workers that keep state between turns, and the work items sent."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.protocol_extensions import KEEPS_REPLAY_STATE, mark_omitted
from sidecar.store.base import ActivityWorkItem, EntityWorkItem, OrchestrationWorkItem
from sidecar.work_queue import WorkQueue

# Instances per stream whose replay state the sidecar tracks (the worker bounds its own cache).
_MAX_REPLAYED_PER_STREAM = 10_000


class WorkKind(str, Enum):
    """The three kinds of work item a stream receives."""

    ORCHESTRATION = "orchestration"
    ACTIVITY = "activity"
    ENTITY = "entity"


ORCHESTRATION = WorkKind.ORCHESTRATION
ACTIVITY = WorkKind.ACTIVITY
ENTITY = WorkKind.ENTITY


# Which history a worker replayed, and how far: (execution ID, history key, first history seq,
# events seen). The first three name the stored history; they change when it starts over.
ReplayMark = tuple[str, str | None, int, int]


def replay_identity(item: OrchestrationWorkItem) -> tuple[str, str | None, int]:
    """The identity of the history a turn carries: (execution ID, history key, first seq)."""
    return (item.instance.execution_id, item.history_key, item.history_first_seq)


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
    # Filled by the dispatcher thread (None: the stream ends), read by the stream's RPC.
    queue: WorkQueue[pb.WorkItem | None] = field(default_factory=WorkQueue)
    outstanding: dict[str, WorkKind] = field(default_factory=dict)
    # Slots promised to leases in progress (changed under the dispatcher's lock).
    reserved: dict[WorkKind, int] = field(default_factory=lambda: dict.fromkeys(WorkKind, 0))
    closed: bool = False
    # Instances whose replayed state the stream's worker keeps (see protocol_extensions):
    # instance ID -> the turn it last completed (see ReplayMark).
    replayed: OrderedDict[str, ReplayMark] = field(default_factory=OrderedDict)
    opened_at: float = field(default_factory=time.time)  # epoch seconds, shown by the dashboard

    @property
    def keeps_replay_state(self) -> bool:
        """True when the worker declared that it keeps orchestrations' replayed state between turns."""
        return KEEPS_REPLAY_STATE in self.capabilities

    def omittable(self, item: OrchestrationWorkItem) -> int:
        """How many past events of ``item`` the worker has processed already (0: send them all)."""
        if not self.keeps_replay_state:
            return 0
        if item.history_key is None:  # a history without a key: nothing proves it is the same one
            return 0
        if item.prior_turn is not None and item.prior_turn[0] in self.outstanding:
            # The history ends in a turn this stream's worker ran, committed but not settled yet
            # (its mark below is the turn before's).
            seen = item.prior_turn[1]
        else:
            mark = self.replayed.get(item.instance.instance_id)
            if mark is None:
                return 0
            if mark[:3] != replay_identity(item):
                return 0
            seen = mark[3]
        return seen if seen <= len(item.past_events) else 0

    def remember_replayed(self, instance_id: str, mark: ReplayMark | None) -> None:
        """Record (or, with None, forget) the turn the worker last completed for an instance."""
        if mark is None:
            self.replayed.pop(instance_id, None)
            return
        self.replayed[instance_id] = mark
        self.replayed.move_to_end(instance_id)
        while len(self.replayed) > _MAX_REPLAYED_PER_STREAM:
            self.replayed.popitem(last=False)

    def free(self, kind: WorkKind) -> int:
        # A copy first: completions change ``outstanding`` from other threads (list() does not let them in).
        used = sum(1 for k in list(self.outstanding.values()) if k == kind)
        limit = {
            WorkKind.ORCHESTRATION: self.max_orchestrations,
            WorkKind.ACTIVITY: self.max_activities,
            WorkKind.ENTITY: self.max_entities,
        }[kind]
        return limit - used - self.reserved[kind]


@dataclass(frozen=True)
class StreamView:
    """A read-only picture of an open stream, for the dashboard: its worker, filters and work in flight."""

    id: int
    worker_id: str
    opened_at: float
    limits: dict[str, int]
    in_flight: dict[str, int]
    # kind -> the names the stream takes (None: every name); name -> versions, where restricted.
    names: dict[str, list[str] | None]
    versions: dict[str, dict[str, list[str]]]
    capabilities: list[int]


def view_of(stream: WorkStream) -> StreamView:
    """The :class:`StreamView` of ``stream`` (the caller holds the dispatcher's lock)."""
    in_flight = dict.fromkeys((k.value for k in WorkKind), 0)
    for kind in list(stream.outstanding.values()):
        in_flight[kind.value] += 1

    def names(declared: frozenset[str] | None) -> list[str] | None:
        return None if declared is None else sorted(declared)

    return StreamView(
        id=stream.id,
        worker_id=stream.worker_id,
        opened_at=stream.opened_at,
        limits={ORCHESTRATION.value: stream.max_orchestrations, ACTIVITY.value: stream.max_activities,
                ENTITY.value: stream.max_entities},
        in_flight=in_flight,
        names={ORCHESTRATION.value: names(stream.orchestration_names), ACTIVITY.value: names(stream.activity_names),
               ENTITY.value: names(stream.entity_names)},
        versions={
            ORCHESTRATION.value: {n: sorted(v) for n, v in stream.orchestration_versions.items()},
            ACTIVITY.value: {n: sorted(v) for n, v in stream.activity_versions.items()},
        },
        capabilities=sorted(stream.capabilities),
    )


def declared_names(
    request: pb.GetWorkItemsRequest, filters: list[pb.OrchestrationFilter] | list[pb.ActivityFilter]
) -> frozenset[str] | None:
    """None (all work) without filters; with filters, the names declared (an empty list: none of this kind)."""
    return frozenset(f.name for f in filters) if request.HasField("workItemFilters") else None


def declared_versions(filters: list[pb.OrchestrationFilter] | list[pb.ActivityFilter]) -> dict[str, frozenset[str]]:
    """name -> accepted versions, for names whose filters all list versions (one without: any version)."""
    accepted: dict[str, set[str]] = {}
    unrestricted: set[str] = set()
    for f in filters:
        if f.versions:
            accepted.setdefault(f.name, set()).update(f.versions)
        else:
            unrestricted.add(f.name)
    return {name: frozenset(v) for name, v in accepted.items() if name not in unrestricted}


def entity_names_of(request: pb.GetWorkItemsRequest) -> frozenset[str] | None:
    """Entity names a stream asked for (lower-cased): None without filters, else the names declared."""
    if not request.HasField("workItemFilters"):
        return None
    return frozenset(f.name.lower() for f in request.workItemFilters.entities)


def takes(stream: WorkStream, name: str, version: str | None) -> bool:
    """Whether a stream's filters let it take a turn of orchestration ``name`` at ``version``."""
    if stream.orchestration_names is None:
        return True
    if name not in stream.orchestration_names:
        return False
    versions = stream.orchestration_versions.get(name)
    return not versions or (version or "") in versions


def to_work_item(item: OrchestrationWorkItem | ActivityWorkItem | EntityWorkItem, omitted: int = 0) -> pb.WorkItem:
    """The work item sent to a worker; for a turn, without the first ``omitted`` past events."""
    if isinstance(item, EntityWorkItem):
        if any(ctx is not None for ctx in item.trace_contexts):
            return pb.WorkItem(entityRequest=entity_batch_request(item), completionToken=item.token)
        entity = pb.EntityRequest(instanceId=item.instance_id, operationRequests=item.operations)
        if item.state is not None:
            entity.entityState.value = item.state
        return pb.WorkItem(entityRequestV2=entity, completionToken=item.token)
    if isinstance(item, OrchestrationWorkItem):
        request = pb.OrchestratorRequest(
            instanceId=item.instance.instance_id,
            pastEvents=item.past_events[omitted:] if omitted else item.past_events,
            newEvents=item.new_events,
        )
        request.executionId.value = item.instance.execution_id
        if item.instance.trace_context is not None:
            request.orchestrationTraceContext.CopyFrom(item.instance.trace_context)
        if omitted:
            mark_omitted(request, omitted)
        return pb.WorkItem(orchestratorRequest=request, completionToken=item.token)
    task = item.task
    activity = pb.ActivityRequest(name=task.name, taskId=task.task_id, tags=task.tags)
    if task.version is not None:
        activity.version.value = task.version
    if task.input is not None:
        activity.input.value = task.input
    activity.orchestrationInstance.instanceId = task.instance_id
    activity.orchestrationInstance.executionId.value = task.execution_id
    if task.trace_context is not None:
        activity.parentTraceContext.CopyFrom(task.trace_context)
    return pb.WorkItem(activityRequest=activity, completionToken=item.token)


def entity_batch_request(item: EntityWorkItem) -> pb.EntityBatchRequest:
    """The v1 form of an entity batch (``WorkItem.entityRequest``), which alone carries each
    operation's trace context (``OperationRequest.traceContext``).

    A batch goes out in this form when one of its operations has a trace context (a client's or an
    entity's signal); otherwise in the v2 form (``entityRequestV2``, the queued events themselves).
    Both forms name the same operations in the same order, and the sidecar matches results to the
    batch it leased (``entity_batch.apply_batch_result``), not to anything the worker echoes, so
    replies to callers, locks and failures do not depend on the form.
    """
    batch = pb.EntityBatchRequest(instanceId=item.instance_id)
    if item.state is not None:
        batch.entityState.value = item.state
    for position, event in enumerate(item.operations):
        kind = event.WhichOneof("eventType")
        message = event.entityOperationCalled if kind == "entityOperationCalled" else event.entityOperationSignaled
        operation = batch.operations.add(requestId=message.requestId, operation=message.operation)
        if message.HasField("input"):
            operation.input.CopyFrom(message.input)
        ctx = item.trace_contexts[position] if position < len(item.trace_contexts) else None
        if ctx is not None:
            operation.traceContext.CopyFrom(ctx)
    return batch


# Bytes kept free under the message limit for what wraps a work item (a WorkItemBatch's field
# tag and length, a history chunk's), so that an item that fits also fits when wrapped.
ENVELOPE_BYTES = 64

TOO_LARGE_ERROR_TYPE = "WorkItemTooLarge"
_RAISE_LIMIT = "start the sidecar with a larger --max-message-size (SidecarServer(max_message_size=...))"


def streams_history(stream: WorkStream) -> bool:
    """Whether the stream's worker can read a turn's past events with StreamInstanceHistory instead."""
    return pb.WORKER_CAPABILITY_HISTORY_STREAMING in stream.capabilities or stream.keeps_replay_state


def history_streamed_work_item(item: OrchestrationWorkItem, stream: WorkStream) -> pb.WorkItem:
    """A turn without its past events, for a worker that reads them with StreamInstanceHistory.

    A worker that declared history streaming gets ``requiresHistoryStreaming``; ours (it keeps
    replay state) gets every past event marked as left out (see protocol_extensions).
    """
    work = to_work_item(item)
    request = work.orchestratorRequest
    del request.pastEvents[:]
    if pb.WORKER_CAPABILITY_HISTORY_STREAMING in stream.capabilities:
        request.requiresHistoryStreaming = True
    if stream.keeps_replay_state and item.past_events:
        mark_omitted(request, len(item.past_events))
    return work


def fits(message: pb.WorkItem | pb.HistoryEvent, limit: int) -> bool:
    """Whether ``message`` fits in a gRPC message of at most ``limit`` bytes, wrapped."""
    return message.ByteSize() + ENVELOPE_BYTES <= limit


def too_large(subject: str, size: int, limit: int) -> pb.TaskFailureDetails:
    """The failure of work that cannot be sent: it names the size, the limit and how to raise it."""
    return pb.TaskFailureDetails(
        errorType=TOO_LARGE_ERROR_TYPE,
        errorMessage=(
            f"{subject} makes a work item of {size:,} bytes, more than the sidecar's maximum message size "
            f"of {limit:,} bytes allows; {_RAISE_LIMIT}, or keep it smaller"
        ),
        isNonRetriable=True,
    )


def failed_turn(item: OrchestrationWorkItem, failure: pb.TaskFailureDetails) -> pb.OrchestratorResponse:
    """A response that ends the orchestration of ``item`` FAILED with ``failure``."""
    last_id = max((e.eventId for e in (*item.past_events, *item.new_events)), default=0)
    response = pb.OrchestratorResponse(instanceId=item.instance.instance_id, completionToken=item.token)
    action = response.actions.add(id=max(last_id, 0) + 1)
    action.completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_FAILED
    action.completeOrchestration.failureDetails.CopyFrom(failure)
    return response


def failed_activity(item: ActivityWorkItem, failure: pb.TaskFailureDetails) -> pb.ActivityResponse:
    """A result that fails the activity of ``item`` with ``failure``."""
    task = item.task
    response = pb.ActivityResponse(instanceId=task.instance_id, taskId=task.task_id, completionToken=item.token)
    response.failureDetails.CopyFrom(failure)
    return response


def failed_entity_batch(item: EntityWorkItem, failure: pb.TaskFailureDetails) -> pb.EntityBatchResult:
    """A result that fails every operation of ``item``'s batch with ``failure`` and keeps the state."""
    result = pb.EntityBatchResult(completionToken=item.token)
    for _ in item.operations:
        result.results.add().failure.failureDetails.CopyFrom(failure)
    if item.state is not None:
        result.entityState.value = item.state
    return result
