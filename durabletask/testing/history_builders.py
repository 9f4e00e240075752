"""Builders for synthetic histories: one function per kind of history event.

Each returns the ``durabletask.history`` event that ``get_orchestration_history``
would return. Payload arguments (inputs, results, event data) are Python values,
encoded as JSON as the default data converter does; ``None`` means no payload.
Timestamps default to ``DEFAULT_TIME``; scheduling events take the task id (the
action id the orchestrator code gives the call: 1 for its first call, and so on),
which is also their event ID.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from durabletask import history
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.serialization import default_converter
from durabletask.task import FailureDetails

DEFAULT_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
DEFAULT_INSTANCE_ID = "test-instance"

_STATUS_NAMES = {
    "completed": pb.ORCHESTRATION_STATUS_COMPLETED,
    "failed": pb.ORCHESTRATION_STATUS_FAILED,
    "terminated": pb.ORCHESTRATION_STATUS_TERMINATED,
    "continued_as_new": pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
}


def _time(timestamp: datetime | None) -> datetime:
    if timestamp is None:
        return DEFAULT_TIME
    if not isinstance(timestamp, datetime):
        raise TypeError(f"timestamp must be a datetime, not {type(timestamp).__name__}")
    return timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=timezone.utc)


def _payload(value: Any) -> str | None:
    return default_converter().serialize(value)


def _task_id(task_id: int) -> int:
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
        raise ValueError(f"a task id is a non-negative int, not {task_id!r:.40}")
    return task_id


def _failure(error: BaseException | FailureDetails | str, error_type: str | None) -> FailureDetails:
    if isinstance(error, FailureDetails):
        return error
    if isinstance(error, BaseException):
        return ph.failure_details_from_pb(ph.new_failure_details(error))
    if isinstance(error, str):
        return FailureDetails(message=error, error_type=error_type or "builtins.Exception", stack_trace=None)
    raise TypeError(f"a failure is an exception, a FailureDetails or a message, not {type(error).__name__}")


# ------------------------------------------------------------------- turns


def orchestrator_started(timestamp: datetime | None = None) -> history.OrchestratorStartedEvent:
    """Start of a turn; its timestamp is the orchestration's current time in that turn."""
    return history.OrchestratorStartedEvent(-1, _time(timestamp))


def orchestrator_completed(timestamp: datetime | None = None) -> history.OrchestratorCompletedEvent:
    """End of a turn."""
    return history.OrchestratorCompletedEvent(-1, _time(timestamp))


# --------------------------------------------------------------- lifecycle


def execution_started(
    name: str,
    input: Any = None,
    *,
    instance_id: str = DEFAULT_INSTANCE_ID,
    version: str | None = None,
    parent_instance_id: str | None = None,
    tags: dict[str, str] | None = None,
    timestamp: datetime | None = None,
) -> history.ExecutionStartedEvent:
    """The first event of an execution: orchestrator ``name`` starts with ``input``."""
    if not isinstance(name, str) or not name:
        raise ValueError("execution_started needs the orchestrator's name")
    parent = None
    if parent_instance_id is not None:
        parent = history.ParentInstanceInfo(
            task_scheduled_id=-1, orchestration_instance=history.OrchestrationInstance(parent_instance_id)
        )
    return history.ExecutionStartedEvent(
        -1, _time(timestamp),
        name=name,
        version=version,
        input=_payload(input),
        orchestration_instance=history.OrchestrationInstance(instance_id),
        parent_instance=parent,
        tags=tags,
    )


def execution_completed(
    status: str = "completed",
    result: Any = None,
    *,
    failure: BaseException | FailureDetails | str | None = None,
    timestamp: datetime | None = None,
) -> history.ExecutionCompletedEvent:
    """The execution finished; ``status`` is completed, failed, terminated or continued_as_new."""
    if status not in _STATUS_NAMES:
        raise ValueError(f"unknown completion status {status!r:.40}; use one of {sorted(_STATUS_NAMES)}")
    details = _failure(failure, None) if failure is not None else None
    return history.ExecutionCompletedEvent(
        -1, _time(timestamp), orchestration_status=int(_STATUS_NAMES[status]), result=_payload(result),
        failure_details=details,
    )


def execution_terminated(output: Any = None, *, recurse: bool = False, timestamp: datetime | None = None,
                         ) -> history.ExecutionTerminatedEvent:
    """A terminate request reached the instance; ``output`` becomes its output."""
    return history.ExecutionTerminatedEvent(-1, _time(timestamp), input=_payload(output), recurse=recurse)


def execution_suspended(reason: str | None = None, *, timestamp: datetime | None = None,
                        ) -> history.ExecutionSuspendedEvent:
    """The instance was suspended."""
    return history.ExecutionSuspendedEvent(-1, _time(timestamp), input=reason)


def execution_resumed(reason: str | None = None, *, timestamp: datetime | None = None) -> history.ExecutionResumedEvent:
    """The instance was resumed."""
    return history.ExecutionResumedEvent(-1, _time(timestamp), input=reason)


def continue_as_new(input: Any = None, *, timestamp: datetime | None = None) -> history.ContinueAsNewEvent:
    """The record of a restart with new input."""
    return history.ContinueAsNewEvent(-1, _time(timestamp), input=_payload(input))


def generic_event(data: str | None = None, *, timestamp: datetime | None = None) -> history.GenericEvent:
    """A free-form event (replay ignores it)."""
    return history.GenericEvent(-1, _time(timestamp), data=data)


def execution_rewound(reason: str | None = None, *, timestamp: datetime | None = None) -> history.ExecutionRewoundEvent:
    """The instance was rewound."""
    return history.ExecutionRewoundEvent(-1, _time(timestamp), reason=reason)


# -------------------------------------------------------------- activities


def task_scheduled(task_id: int, name: str, input: Any = None, *, version: str | None = None,
                   tags: dict[str, str] | None = None, timestamp: datetime | None = None,
                   ) -> history.TaskScheduledEvent:
    """The orchestration called activity ``name`` (``ctx.call_activity``) as task ``task_id``."""
    return history.TaskScheduledEvent(
        _task_id(task_id), _time(timestamp), name=name, version=version, input=_payload(input), tags=tags
    )


def task_completed(task_id: int, result: Any = None, *, timestamp: datetime | None = None,
                   ) -> history.TaskCompletedEvent:
    """Activity task ``task_id`` returned ``result``."""
    return history.TaskCompletedEvent(-1, _time(timestamp), task_scheduled_id=_task_id(task_id),
                                      result=_payload(result))


def task_failed(task_id: int, error: BaseException | FailureDetails | str, *, error_type: str | None = None,
                timestamp: datetime | None = None) -> history.TaskFailedEvent:
    """Activity task ``task_id`` failed with ``error`` (a message gets ``error_type``, default Exception)."""
    return history.TaskFailedEvent(-1, _time(timestamp), task_scheduled_id=_task_id(task_id),
                                   failure_details=_failure(error, error_type))


# ------------------------------------------------------------------ timers


def timer_created(task_id: int, fire_at: datetime, *, timestamp: datetime | None = None) -> history.TimerCreatedEvent:
    """The orchestration created a timer (``ctx.create_timer``) due at ``fire_at``."""
    return history.TimerCreatedEvent(_task_id(task_id), _time(timestamp), fire_at=_time(fire_at))


def timer_fired(task_id: int, fire_at: datetime, *, timestamp: datetime | None = None) -> history.TimerFiredEvent:
    """Timer ``task_id`` became due."""
    return history.TimerFiredEvent(-1, _time(timestamp), fire_at=_time(fire_at), timer_id=_task_id(task_id))


# ------------------------------------------------------- sub-orchestrations


def sub_orchestration_created(task_id: int, name: str, instance_id: str, input: Any = None, *,
                              version: str | None = None, timestamp: datetime | None = None,
                              ) -> history.SubOrchestrationInstanceCreatedEvent:
    """The orchestration started child ``instance_id`` running ``name`` (``ctx.call_sub_orchestrator``)."""
    return history.SubOrchestrationInstanceCreatedEvent(
        _task_id(task_id), _time(timestamp), instance_id=instance_id, name=name, version=version,
        input=_payload(input),
    )


def sub_orchestration_completed(task_id: int, result: Any = None, *, timestamp: datetime | None = None,
                                ) -> history.SubOrchestrationInstanceCompletedEvent:
    """Child orchestration task ``task_id`` completed with ``result``."""
    return history.SubOrchestrationInstanceCompletedEvent(
        -1, _time(timestamp), task_scheduled_id=_task_id(task_id), result=_payload(result)
    )


def sub_orchestration_failed(task_id: int, error: BaseException | FailureDetails | str, *,
                             error_type: str | None = None, timestamp: datetime | None = None,
                             ) -> history.SubOrchestrationInstanceFailedEvent:
    """Child orchestration task ``task_id`` failed with ``error``."""
    return history.SubOrchestrationInstanceFailedEvent(
        -1, _time(timestamp), task_scheduled_id=_task_id(task_id), failure_details=_failure(error, error_type)
    )


# --------------------------------------------------------- external events


def event_raised(name: str, data: Any = None, *, timestamp: datetime | None = None) -> history.EventRaisedEvent:
    """External event ``name`` arrived with ``data``."""
    return history.EventRaisedEvent(-1, _time(timestamp), name=name, input=_payload(data))


def event_sent(task_id: int, instance_id: str, name: str, data: Any = None, *,
               timestamp: datetime | None = None) -> history.EventSentEvent:
    """The orchestration sent event ``name`` to ``instance_id`` (``ctx.send_event``)."""
    return history.EventSentEvent(_task_id(task_id), _time(timestamp), instance_id=instance_id, name=name,
                                  input=_payload(data))


# ---------------------------------------------------------------- entities


def entity_operation_called(task_id: int, entity_id: EntityInstanceId | str, operation: str, request_id: str,
                            input: Any = None, *, timestamp: datetime | None = None,
                            ) -> history.EntityOperationCalledEvent:
    """The orchestration called ``operation`` on an entity (``ctx.call_entity``); answers carry ``request_id``."""
    return history.EntityOperationCalledEvent(
        _task_id(task_id), _time(timestamp), request_id=request_id, operation=operation, input=_payload(input),
        target_instance_id=str(entity_id),
    )


def entity_operation_signaled(task_id: int, entity_id: EntityInstanceId | str, operation: str, request_id: str,
                              input: Any = None, *, scheduled_time: datetime | None = None,
                              timestamp: datetime | None = None) -> history.EntityOperationSignaledEvent:
    """The orchestration signalled ``operation`` on an entity (``ctx.signal_entity``)."""
    return history.EntityOperationSignaledEvent(
        _task_id(task_id), _time(timestamp), request_id=request_id, operation=operation,
        scheduled_time=_time(scheduled_time) if scheduled_time is not None else None,
        input=_payload(input), target_instance_id=str(entity_id),
    )


def entity_operation_completed(request_id: str, output: Any = None, *, timestamp: datetime | None = None,
                               ) -> history.EntityOperationCompletedEvent:
    """The entity call ``request_id`` returned ``output``."""
    return history.EntityOperationCompletedEvent(-1, _time(timestamp), request_id=request_id, output=_payload(output))


def entity_operation_failed(request_id: str, error: BaseException | FailureDetails | str, *,
                            error_type: str | None = None, timestamp: datetime | None = None,
                            ) -> history.EntityOperationFailedEvent:
    """The entity call ``request_id`` failed with ``error``."""
    return history.EntityOperationFailedEvent(-1, _time(timestamp), request_id=request_id,
                                              failure_details=_failure(error, error_type))


def entity_lock_requested(task_id: int, critical_section_id: str, lock_set: Sequence[EntityInstanceId | str], *,
                          position: int = 0, timestamp: datetime | None = None,
                          ) -> history.EntityLockRequestedEvent:
    """The orchestration asked for the locks of ``lock_set`` (``ctx.lock_entities``), sorted as the SDK sends them."""
    return history.EntityLockRequestedEvent(
        _task_id(task_id), _time(timestamp), critical_section_id=critical_section_id,
        lock_set=[str(e) for e in lock_set], position=position,
    )


def entity_lock_granted(critical_section_id: str, *, timestamp: datetime | None = None,
                        ) -> history.EntityLockGrantedEvent:
    """Every lock of the critical section was granted."""
    return history.EntityLockGrantedEvent(-1, _time(timestamp), critical_section_id=critical_section_id)


def entity_unlock_sent(task_id: int, critical_section_id: str, entity_id: EntityInstanceId | str, *,
                       timestamp: datetime | None = None) -> history.EntityUnlockSentEvent:
    """The lock on ``entity_id`` held by the critical section was released."""
    return history.EntityUnlockSentEvent(
        _task_id(task_id), _time(timestamp), critical_section_id=critical_section_id,
        target_instance_id=str(entity_id),
    )
