"""Plain data shared by the sidecar's layers: engine (pure), store and dispatch.

Payloads (inputs, outputs, custom status) are opaque strings. History and inbox
events are protobuf ``HistoryEvent`` messages. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.ids import IdFactory, random_id

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""The Unix epoch, aware (UTC): what stored microseconds and wire Timestamps count from."""

# Statuses in which an instance takes no more turns.
TERMINAL_STATUSES: frozenset[int] = frozenset({
    pb.ORCHESTRATION_STATUS_COMPLETED,
    pb.ORCHESTRATION_STATUS_FAILED,
    pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CANCELED,
})

# Kinds of entity queue messages that a worker runs (the others, lock and unlock, the sidecar settles).
ENTITY_OPERATION_KINDS: frozenset[str] = frozenset({"signal", "call"})


@dataclass
class ParentRef:
    """The orchestration that started this one as a sub-orchestration."""

    instance_id: str
    execution_id: str | None
    task_scheduled_id: int
    name: str | None = None
    version: str | None = None


@dataclass
class InstanceSnapshot:
    """The stored row of one orchestration instance (its current execution)."""

    instance_id: str
    execution_id: str
    name: str
    status: int  # pb.OrchestrationStatus value
    created_at: datetime
    last_updated_at: datetime
    version: str | None = None
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: pb.TaskFailureDetails | None = None
    completed_at: datetime | None = None
    scheduled_start_at: datetime | None = None
    parent: ParentRef | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # The worker's span ID and start time of the execution, handed back on every turn (tracing).
    trace_context: pb.OrchestrationTraceContext | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass
class ActivityTaskSpec:
    """An activity invocation to put in the activity queue."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    version: str | None
    input: str | None
    tags: dict[str, str] = field(default_factory=dict)
    # The parentTraceContext of the scheduling action, sent on with the ActivityRequest.
    trace_context: pb.TraceContext | None = None


@dataclass
class OutboundMessage:
    """An event for an instance's inbox, delivered only if the target exists and is not finished.

    ``visible_at`` None means at once; timers use their fire time. When
    ``target_execution_id`` is set, the event belongs to that execution only and is
    dropped if the instance has moved on (continue-as-new, restart).
    """

    target_instance_id: str
    event: pb.HistoryEvent
    visible_at: datetime | None = None
    target_execution_id: str | None = None


@dataclass
class NewInstanceSpec:
    """An instance to create (a sub-orchestration). ``start_event`` is its executionStarted."""

    instance_id: str
    execution_id: str
    name: str
    version: str | None
    input: str | None
    parent: ParentRef | None
    start_event: pb.HistoryEvent
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TerminateSpec:
    """Terminate another instance (terminateOrchestration action or recursive terminate)."""

    instance_id: str
    output: str | None
    recurse: bool


@dataclass
class TurnInput:
    """Everything the engine needs to turn a worker's response into state changes."""

    instance: InstanceSnapshot
    past_events: Sequence[pb.HistoryEvent]  # not copied: a cached history's own events
    # Exactly the events sent to the worker as newEvents (first is orchestratorStarted).
    new_events: list[pb.HistoryEvent]
    response: pb.OrchestratorResponse
    now: datetime
    # Source of the execution IDs the turn creates (continue-as-new, sub-orchestrations).
    new_id: IdFactory = random_id


@dataclass
class RewindPlan:
    """What a rewind turn asks of the store beyond the new history: its unfinished sub-orchestrations.

    Each child is rewound when it FAILED, created afresh from its spec when it no longer
    exists (purged), re-reports its outcome when it finished otherwise, and is re-linked
    to the parent's new execution when still running.
    """

    reason: str | None
    children: list[NewInstanceSpec] = field(default_factory=list)


@dataclass
class TurnResult:
    """The change set of one turn; the store commits it in one transaction."""

    instance: InstanceSnapshot  # the instance row after the turn
    # Events appended to the current history (ignored when reset_history is set).
    history_append: list[pb.HistoryEvent] = field(default_factory=list)
    # Continue-as-new / rewind: the whole new history, replacing the old one.
    reset_history: list[pb.HistoryEvent] | None = None
    # Events to place at the FRONT of the instance's own inbox, before anything waiting
    # there (continue-as-new: the new executionStarted, then carried-over events).
    inbox_prepend: list[pb.HistoryEvent] = field(default_factory=list)
    activity_tasks: list[ActivityTaskSpec] = field(default_factory=list)
    # Timer firings and messages to other instances (events, results to the parent).
    messages: list[OutboundMessage] = field(default_factory=list)
    new_instances: list[NewInstanceSpec] = field(default_factory=list)
    terminations: list[TerminateSpec] = field(default_factory=list)
    rewind: RewindPlan | None = None
    # Actions the worker listed after its completeOrchestration: ignored (see sidecar.engine),
    # each described as "<kind> <id>" for the log.
    ignored_actions: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """True when the instance reached a terminal status in this turn."""
        return self.instance.is_terminal


class InvalidTurnError(ValueError):
    """The worker's response cannot be applied (bad actions). Maps to INVALID_ARGUMENT."""


class MismatchedResultError(ValueError):
    """A worker's activity result names another task than its completion token holds.

    Maps to INVALID_ARGUMENT. Unlike :class:`InvalidTurnError` the work item is handed back
    (offered again after a short delay) rather than left to its lease.
    """
