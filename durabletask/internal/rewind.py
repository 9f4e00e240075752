"""Rewind on the worker side: a failed history in, the history to resume from out.

When a backend rewinds a FAILED instance it sends a turn whose past events end with
``executionCompleted`` and whose new events are ``orchestratorStarted`` and
``executionRewound``. The worker answers with a single ``rewindOrchestration`` action
carrying the rewritten history; the backend replaces the history with it and runs the
instance again. The rewrite follows the shape the other Durable Task SDKs produce (the
backends rely on it):

- ``taskFailed`` events go, with the ``taskScheduled`` they answer, so replay schedules
  those activities again;
- ``subOrchestrationInstanceFailed`` events go, but their ``subOrchestrationInstanceCreated``
  stays, so the backend rewinds those children;
- ``executionCompleted`` goes; the new events (with ``executionRewound``) are appended;
- ``executionStarted`` gets a fresh execution ID (and, for a child rewound by its parent,
  the parent's new execution ID).

Beyond that shape, calls made with a ``RetryPolicy`` are handled as a whole (found by
replaying the history): a call whose retries ended in failure loses all its attempts and
the retry timers between them, so it starts over with a fresh retry budget; a call that
was retried and then succeeded (or is still retrying) keeps its history untouched.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb

# Replays a history: (the task each result event resolved, the tasks still pending), both by task id.
ReplayTasks = Callable[
    [Sequence[pb.HistoryEvent]],
    tuple[dict[int, task.CompletableTask[Any]], dict[int, task.CompletableTask[Any]]],
]


def is_rewind_request(old_events: Sequence[pb.HistoryEvent], new_events: Sequence[pb.HistoryEvent]) -> bool:
    """True when a finished history receives an ``executionRewound`` event."""
    return any(e.HasField("executionRewound") for e in new_events) and any(
        e.HasField("executionCompleted") for e in old_events
    )


def was_rewound(events: Sequence[pb.HistoryEvent]) -> bool:
    """True when the history was rewritten by a rewind (it holds an ``executionRewound``)."""
    return any(e.HasField("executionRewound") for e in events)


def rewind_action(
    replay_tasks: ReplayTasks,
    instance_id: str,
    old_events: Sequence[pb.HistoryEvent],
    new_events: Sequence[pb.HistoryEvent],
    logger: logging.Logger,
) -> pb.OrchestratorAction:
    """The ``rewindOrchestration`` action answering a rewind request (see the module docstring).

    ``replay_tasks`` replays the failed history with the orchestrator's code, to find its retried calls.
    """
    rewound = next(e.executionRewound for e in new_events if e.HasField("executionRewound"))
    logger.info("%s: rewinding the failed orchestration", instance_id)
    drop, keep = _retried_calls(replay_tasks, instance_id, old_events, logger)
    failed_tasks = {e.taskFailed.taskScheduledId for e in old_events if e.HasField("taskFailed")} - keep
    execution_id = uuid.uuid4().hex

    history: list[pb.HistoryEvent] = []
    for event in itertools.chain(old_events, new_events):
        kind = event.WhichOneof("eventType")
        if kind == "executionCompleted":
            continue
        if kind in ("taskFailed", "subOrchestrationInstanceFailed"):
            if getattr(event, kind).taskScheduledId not in keep:
                continue
        elif kind == "taskScheduled" and event.eventId in failed_tasks:
            continue
        elif _call_id(event, kind) in drop:
            continue
        if kind == "executionStarted":
            event = _restarted(event, execution_id, rewound)
        history.append(event)
    return pb.OrchestratorAction(id=-1, rewindOrchestration=pb.RewindOrchestrationAction(newHistory=history))


def _call_id(event: pb.HistoryEvent, kind: str | None) -> int | None:
    """The action id a scheduling or result event belongs to, or None for other events."""
    if kind in ("taskScheduled", "timerCreated", "subOrchestrationInstanceCreated"):
        return event.eventId
    if kind == "timerFired":
        return event.timerFired.timerId
    if kind in ("taskCompleted", "subOrchestrationInstanceCompleted"):
        return int(getattr(event, kind).taskScheduledId)
    return None


def _restarted(event: pb.HistoryEvent, execution_id: str, rewound: pb.ExecutionRewoundEvent) -> pb.HistoryEvent:
    copy = pb.HistoryEvent()
    copy.CopyFrom(event)
    started = copy.executionStarted
    started.orchestrationInstance.executionId.value = execution_id
    if rewound.parentExecutionId.value and started.HasField("parentInstance"):
        started.parentInstance.orchestrationInstance.executionId.value = rewound.parentExecutionId.value
    return copy


def _retried_calls(
    replay_tasks: ReplayTasks,
    instance_id: str,
    old_events: Sequence[pb.HistoryEvent],
    logger: logging.Logger,
) -> tuple[set[int], set[int]]:
    """Action ids of retried calls: (of those that ended failed, of those that did not).

    Found by replaying the history; when that is not possible (the orchestrator is not
    registered here, the code no longer replays), no call gets special treatment.
    """
    try:
        resolved, pending_tasks = replay_tasks([e for e in old_events if not e.HasField("executionCompleted")])
    except Exception as exc:  # the rewrite falls back to the plain shape
        logger.info("%s: rewinding without replay (%s: %s)", instance_id, type(exc).__name__, exc)
        return set(), set()

    ids_by_call: dict[int, list[int]] = {}
    calls: dict[int, task.RetryableTask[Any]] = {}
    tracked = itertools.chain(resolved.items(), pending_tasks.items())
    for action_id, pending in tracked:
        owner = pending._retryable_parent if isinstance(pending, task.TimerTask) else pending
        if isinstance(owner, task.RetryableTask):
            calls[id(owner)] = owner
            ids_by_call.setdefault(id(owner), []).append(action_id)
    drop: set[int] = set()
    keep: set[int] = set()
    for key, call in calls.items():
        if call.attempt_count <= 1:
            continue  # never retried: the plain shape handles it
        (drop if call.is_failed else keep).update(ids_by_call[key])
    return drop, keep
