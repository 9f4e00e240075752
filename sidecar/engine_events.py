"""Small pure builders of history events and timestamps used by the sidecar's engine and store.

Every builder takes the time it stamps as an argument; nothing here reads the clock.
"""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.model import EPOCH, MismatchedResultError, ParentRef


def to_timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """Convert a datetime (naive ones are UTC) to a protobuf Timestamp."""
    # Whole seconds and nanoseconds from the difference: a third of Timestamp.FromDatetime's cost.
    delta = (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)) - EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    """Convert a protobuf Timestamp to a timezone-aware UTC datetime."""
    return ts.ToDatetime(tzinfo=timezone.utc)


def string_value(value: str | None) -> wrappers_pb2.StringValue | None:
    """Wrap an optional string; None stays None (the field is left unset)."""
    return None if value is None else wrappers_pb2.StringValue(value=value)


def optional_str(message: object, field: str) -> str | None:
    """The value of a StringValue field of ``message``, or None when it is unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    value: str = getattr(message, field).value
    return value


def status_name(status: int) -> str:
    """Short name of an OrchestrationStatus value, e.g. ``COMPLETED``."""
    try:
        return pb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return str(status)


def new_event(now: datetime, event_id: int = -1) -> pb.HistoryEvent:
    """An empty history event stamped with ``now``; the caller sets its kind."""
    return pb.HistoryEvent(eventId=event_id, timestamp=to_timestamp(now))


def new_orchestrator_started(now: datetime) -> pb.HistoryEvent:
    """The ``orchestratorStarted`` event that opens a turn; its timestamp is the turn's time."""
    event = new_event(now)
    event.orchestratorStarted.SetInParent()
    return event


def new_orchestrator_completed(now: datetime) -> pb.HistoryEvent:
    """The ``orchestratorCompleted`` event that closes a turn in history."""
    event = new_event(now)
    event.orchestratorCompleted.SetInParent()
    return event


def parent_instance_info(parent: ParentRef) -> pb.ParentInstanceInfo:
    """The wire form of a parent reference, as carried by ``executionStarted``."""
    info = pb.ParentInstanceInfo(
        taskScheduledId=parent.task_scheduled_id,
        name=string_value(parent.name),
        version=string_value(parent.version),
    )
    info.orchestrationInstance.instanceId = parent.instance_id
    if parent.execution_id is not None:
        info.orchestrationInstance.executionId.value = parent.execution_id
    return info


def new_execution_started(
    *,
    name: str,
    instance_id: str,
    execution_id: str,
    now: datetime,
    version: str | None = None,
    input: str | None = None,
    tags: dict[str, str] | None = None,
    scheduled_start_at: datetime | None = None,
    parent: ParentRef | None = None,
    parent_trace_context: pb.TraceContext | None = None,
) -> pb.HistoryEvent:
    """The ``executionStarted`` event that begins an execution (StartInstance, sub-orchestration, continue-as-new)."""
    event = new_event(now)
    started = event.executionStarted
    started.name = name
    if version is not None:
        started.version.value = version
    if input is not None:
        started.input.value = input
    started.orchestrationInstance.instanceId = instance_id
    started.orchestrationInstance.executionId.value = execution_id
    if parent is not None:
        started.parentInstance.CopyFrom(parent_instance_info(parent))
    if scheduled_start_at is not None:
        started.scheduledStartTimestamp.CopyFrom(to_timestamp(scheduled_start_at))
    if parent_trace_context is not None:
        started.parentTraceContext.CopyFrom(parent_trace_context)
    if tags:
        started.tags.update(tags)
    return event


def result_mismatch(task_id: int, response: pb.ActivityResponse) -> MismatchedResultError | None:
    """The error of a result whose non-zero ``taskId`` is not ``task_id`` (its token's task), or None."""
    if response.taskId and response.taskId != task_id:
        return MismatchedResultError(
            f"ActivityResponse.taskId {response.taskId} does not match task {task_id}, "
            "the task its completionToken was issued for"
        )
    return None


def activity_result_event(task_id: int, response: pb.ActivityResponse, now: datetime) -> pb.HistoryEvent:
    """The inbox event for a finished activity: ``taskFailed`` when the response has failure details, else ``taskCompleted``.

    Raises MismatchedResultError when ``response.taskId`` names another task than ``task_id``
    (the task its completion token holds). A taskId of 0 is always accepted: it is the first
    task of the SDKs that count from 0, and what a worker that leaves the field unset sends.
    """
    mismatch = result_mismatch(task_id, response)
    if mismatch is not None:
        raise mismatch
    event = new_event(now)
    if response.HasField("failureDetails"):
        event.taskFailed.taskScheduledId = task_id
        event.taskFailed.failureDetails.CopyFrom(response.failureDetails)
    else:
        event.taskCompleted.taskScheduledId = task_id
        if response.HasField("result"):
            event.taskCompleted.result.CopyFrom(response.result)
    return event


def execution_terminated_event(output: str | None, now: datetime, recurse: bool = False) -> pb.HistoryEvent:
    """An ``executionTerminated`` event carrying the termination output as its input."""
    event = new_event(now)
    event.executionTerminated.recurse = recurse
    if output is not None:
        event.executionTerminated.input.value = output
    return event


def execution_completed_event(
    status: int,
    result: str | None,
    failure: pb.TaskFailureDetails | None,
    now: datetime,
    event_id: int = -1,
) -> pb.HistoryEvent:
    """An ``executionCompleted`` event with the final status, result and failure."""
    event = new_event(now, event_id)
    completed = event.executionCompleted
    completed.orchestrationStatus = status  # type: ignore[assignment]
    if result is not None:
        completed.result.value = result
    if failure is not None:
        completed.failureDetails.CopyFrom(failure)
    return event
