"""Builders for the protobuf messages the replay engine reads and writes.

Used by the replay engine, the worker and tests (synthetic histories). Every
builder takes already-encoded payload strings: serialization is the caller's
job. Datetimes may be naive (taken as UTC) or aware (converted to UTC).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failure_details import FailureDetails
from durabletask.internal.naming import qualified_name

_MAX_INNER_FAILURES = 10


# ---------------------------------------------------------------- primitives


def to_utc_naive(value: datetime) -> datetime:
    """Naive UTC form of a datetime (aware values are converted, naive ones kept)."""
    if value.utcoffset() is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.replace(tzinfo=None)


def new_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for a datetime (naive means UTC)."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(to_utc_naive(value))
    return ts


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """The naive UTC datetime of a protobuf Timestamp."""
    return ts.ToDatetime()


def string_value(value: str | None) -> wrappers_pb2.StringValue | None:
    """Wrap an optional string (None stays unset)."""
    return None if value is None else wrappers_pb2.StringValue(value=value)


def is_empty(value: wrappers_pb2.StringValue | None) -> bool:
    """True when an optional payload is unset or the empty string."""
    return value is None or value.value == ""


def _event(event_id: int, timestamp: datetime | None, **kind: Any) -> pb.HistoryEvent:
    ts = new_timestamp(timestamp) if timestamp is not None else timestamp_pb2.Timestamp()
    return pb.HistoryEvent(eventId=event_id, timestamp=ts, **kind)


# ----------------------------------------------------------- failure details


def _to_value(value: Any) -> struct_pb2.Value:
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NullValue.NULL_VALUE)
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=float(value))
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    if isinstance(value, Mapping):
        return struct_pb2.Value(
            struct_value=struct_pb2.Struct(fields={str(k): _to_value(v) for k, v in value.items()})
        )
    if isinstance(value, (list, tuple)):
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[_to_value(v) for v in value]))
    return struct_pb2.Value(string_value=str(value))


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return {k: _from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    return None


def new_failure_details(
    exc: BaseException,
    *,
    non_retriable: bool = False,
    properties_provider: Any = None,
    logger: logging.Logger | None = None,
    _depth: int = 0,
) -> pb.TaskFailureDetails:
    """Failure details for an exception: qualified type, message, stack trace, and its cause.

    ``properties_provider`` (an ``ExceptionPropertiesProvider``) adds each exception's custom properties.
    """
    details = pb.TaskFailureDetails(
        errorType=qualified_name(type(exc)),
        errorMessage=str(exc),
        stackTrace=wrappers_pb2.StringValue(value="".join(traceback.format_tb(exc.__traceback__))),
        isNonRetriable=non_retriable,
    )
    if properties_provider is not None:
        for key, value in _provided_properties(exc, properties_provider, logger).items():
            details.properties[key].CopyFrom(value)
    inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if inner is not None and inner is not exc and _depth < _MAX_INNER_FAILURES:
        details.innerFailure.CopyFrom(
            new_failure_details(inner, properties_provider=properties_provider, logger=logger, _depth=_depth + 1)
        )
    return details


def _provided_properties(
    exc: BaseException, provider: Any, logger: logging.Logger | None
) -> dict[str, struct_pb2.Value]:
    """What ``provider`` gives for ``exc``, as protobuf values; nothing (logged) if it fails or gives a non-mapping."""
    log = logger or logging.getLogger("durabletask-worker")
    try:
        provided = provider.get_exception_properties(exc)
        if provided is None:
            return {}
        if not isinstance(provided, Mapping):
            raise TypeError(f"get_exception_properties() returned {type(provided).__name__}, not a mapping or None")
        return {str(key): _to_value(value) for key, value in provided.items()}
    except Exception:
        log.warning("the exception properties provider failed on %s; no properties recorded",
                    qualified_name(type(exc)), exc_info=True)
        return {}


def failure_details_from_pb(details: pb.TaskFailureDetails) -> FailureDetails:
    """The public FailureDetails of a protobuf TaskFailureDetails."""
    return FailureDetails(
        message=details.errorMessage,
        error_type=details.errorType,
        stack_trace=details.stackTrace.value if details.HasField("stackTrace") else None,
        inner_failure=(
            failure_details_from_pb(details.innerFailure) if details.HasField("innerFailure") else None
        ),
        properties={k: _from_value(v) for k, v in details.properties.items()} or None,
        is_non_retriable=details.isNonRetriable,
    )


def failure_details_to_pb(details: FailureDetails) -> pb.TaskFailureDetails:
    """The protobuf form of a public FailureDetails."""
    result = pb.TaskFailureDetails(
        errorType=details.error_type,
        errorMessage=details.message,
        stackTrace=string_value(details.stack_trace),
        isNonRetriable=details.is_non_retriable,
    )
    if details.inner_failure is not None:
        result.innerFailure.CopyFrom(failure_details_to_pb(details.inner_failure))
    for key, value in (details.properties or {}).items():
        result.properties[key].CopyFrom(_to_value(value))
    return result


def _as_failure_details(failure: BaseException | pb.TaskFailureDetails) -> pb.TaskFailureDetails:
    if isinstance(failure, pb.TaskFailureDetails):
        return failure
    return new_failure_details(failure)


# ------------------------------------------------------------- history events


def new_orchestrator_started_event(timestamp: datetime | None = None) -> pb.HistoryEvent:
    """Start of a turn; its timestamp is the turn's deterministic time."""
    return _event(-1, timestamp, orchestratorStarted=pb.OrchestratorStartedEvent())


def new_orchestrator_completed_event(timestamp: datetime | None = None) -> pb.HistoryEvent:
    """End of a turn."""
    return _event(-1, timestamp, orchestratorCompleted=pb.OrchestratorCompletedEvent())


def new_execution_started_event(
    name: str,
    instance_id: str,
    encoded_input: str | None = None,
    *,
    version: str | None = None,
    tags: dict[str, str] | None = None,
    execution_id: str | None = None,
    parent_instance_id: str | None = None,
    parent_name: str | None = None,
    parent_task_scheduled_id: int = -1,
    scheduled_start: datetime | None = None,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """executionStarted for an orchestration (with parent info for a sub-orchestration)."""
    started = pb.ExecutionStartedEvent(
        name=name,
        version=string_value(version),
        input=string_value(encoded_input),
        orchestrationInstance=pb.OrchestrationInstance(
            instanceId=instance_id, executionId=string_value(execution_id)
        ),
        tags=tags,
    )
    if parent_instance_id is not None:
        started.parentInstance.CopyFrom(
            pb.ParentInstanceInfo(
                taskScheduledId=parent_task_scheduled_id,
                name=string_value(parent_name),
                orchestrationInstance=pb.OrchestrationInstance(instanceId=parent_instance_id),
            )
        )
    if scheduled_start is not None:
        started.scheduledStartTimestamp.CopyFrom(new_timestamp(scheduled_start))
    return _event(-1, timestamp, executionStarted=started)


def new_execution_completed_event(
    status: pb.OrchestrationStatus,
    encoded_result: str | None = None,
    failure_details: pb.TaskFailureDetails | None = None,
    *,
    event_id: int = -1,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """executionCompleted with the final status, output or failure."""
    return _event(
        event_id,
        timestamp,
        executionCompleted=pb.ExecutionCompletedEvent(
            orchestrationStatus=status, result=string_value(encoded_result), failureDetails=failure_details
        ),
    )


def new_execution_terminated_event(
    encoded_output: str | None = None, *, recurse: bool = False, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """executionTerminated: a request to stop the instance with the given output."""
    return _event(
        -1,
        timestamp,
        executionTerminated=pb.ExecutionTerminatedEvent(input=string_value(encoded_output), recurse=recurse),
    )


def new_execution_suspended_event(
    reason: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """executionSuspended."""
    return _event(-1, timestamp, executionSuspended=pb.ExecutionSuspendedEvent(input=string_value(reason)))


def new_execution_resumed_event(
    reason: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """executionResumed."""
    return _event(-1, timestamp, executionResumed=pb.ExecutionResumedEvent(input=string_value(reason)))


def new_task_scheduled_event(
    event_id: int,
    name: str,
    encoded_input: str | None = None,
    *,
    version: str | None = None,
    tags: dict[str, str] | None = None,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """taskScheduled; ``event_id`` is the scheduleTask action's id."""
    return _event(
        event_id,
        timestamp,
        taskScheduled=pb.TaskScheduledEvent(
            name=name, version=string_value(version), input=string_value(encoded_input), tags=tags
        ),
    )


def new_task_completed_event(
    task_scheduled_id: int, encoded_output: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """taskCompleted for the activity scheduled with ``task_scheduled_id``."""
    return _event(
        -1,
        timestamp,
        taskCompleted=pb.TaskCompletedEvent(
            taskScheduledId=task_scheduled_id, result=string_value(encoded_output)
        ),
    )


def new_task_failed_event(
    task_scheduled_id: int,
    failure: BaseException | pb.TaskFailureDetails,
    *,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """taskFailed for the activity scheduled with ``task_scheduled_id``."""
    return _event(
        -1,
        timestamp,
        taskFailed=pb.TaskFailedEvent(
            taskScheduledId=task_scheduled_id, failureDetails=_as_failure_details(failure)
        ),
    )


def new_sub_orchestration_created_event(
    event_id: int,
    name: str,
    instance_id: str,
    encoded_input: str | None = None,
    *,
    version: str | None = None,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """subOrchestrationInstanceCreated; ``event_id`` is the action's id."""
    return _event(
        event_id,
        timestamp,
        subOrchestrationInstanceCreated=pb.SubOrchestrationInstanceCreatedEvent(
            instanceId=instance_id, name=name, version=string_value(version), input=string_value(encoded_input)
        ),
    )


def new_sub_orchestration_completed_event(
    task_scheduled_id: int, encoded_output: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """subOrchestrationInstanceCompleted for the child created by action ``task_scheduled_id``."""
    return _event(
        -1,
        timestamp,
        subOrchestrationInstanceCompleted=pb.SubOrchestrationInstanceCompletedEvent(
            taskScheduledId=task_scheduled_id, result=string_value(encoded_output)
        ),
    )


def new_sub_orchestration_failed_event(
    task_scheduled_id: int,
    failure: BaseException | pb.TaskFailureDetails,
    *,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """subOrchestrationInstanceFailed for the child created by action ``task_scheduled_id``."""
    return _event(
        -1,
        timestamp,
        subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
            taskScheduledId=task_scheduled_id, failureDetails=_as_failure_details(failure)
        ),
    )


def new_timer_created_event(
    timer_id: int, fire_at: datetime, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """timerCreated; ``timer_id`` is the createTimer action's id."""
    return _event(timer_id, timestamp, timerCreated=pb.TimerCreatedEvent(fireAt=new_timestamp(fire_at)))


def new_timer_fired_event(
    timer_id: int, fire_at: datetime, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """timerFired for the timer created by action ``timer_id``."""
    return _event(
        -1, timestamp, timerFired=pb.TimerFiredEvent(fireAt=new_timestamp(fire_at), timerId=timer_id)
    )


def new_event_raised_event(
    name: str, encoded_input: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """eventRaised: an external event delivered to the instance."""
    return _event(-1, timestamp, eventRaised=pb.EventRaisedEvent(name=name, input=string_value(encoded_input)))


def new_event_sent_event(
    event_id: int,
    instance_id: str,
    name: str,
    encoded_input: str | None = None,
    *,
    timestamp: datetime | None = None,
) -> pb.HistoryEvent:
    """eventSent; ``event_id`` is the sendEvent action's id."""
    return _event(
        event_id,
        timestamp,
        eventSent=pb.EventSentEvent(instanceId=instance_id, name=name, input=string_value(encoded_input)),
    )


# ------------------------------------------------------------------- actions


def new_schedule_task_action(
    id: int,
    name: str,
    encoded_input: str | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    version: str | None = None,
) -> pb.OrchestratorAction:
    """scheduleTask: run an activity."""
    return pb.OrchestratorAction(
        id=id,
        scheduleTask=pb.ScheduleTaskAction(
            name=name,
            version=string_value(version),
            input=string_value(encoded_input),
            tags=dict(tags) if tags else None,
        ),
    )


def new_create_sub_orchestration_action(
    id: int,
    name: str,
    instance_id: str,
    encoded_input: str | None = None,
    *,
    version: str | None = None,
) -> pb.OrchestratorAction:
    """createSubOrchestration: start a child orchestration."""
    return pb.OrchestratorAction(
        id=id,
        createSubOrchestration=pb.CreateSubOrchestrationAction(
            instanceId=instance_id,
            name=name,
            version=string_value(version),
            input=string_value(encoded_input),
        ),
    )


def new_create_timer_action(id: int, fire_at: datetime) -> pb.OrchestratorAction:
    """createTimer: a durable timer due at ``fire_at``."""
    return pb.OrchestratorAction(id=id, createTimer=pb.CreateTimerAction(fireAt=new_timestamp(fire_at)))


def new_send_event_action(
    id: int, instance_id: str, event_name: str, encoded_data: str | None = None
) -> pb.OrchestratorAction:
    """sendEvent: a one-way event to another instance."""
    return pb.OrchestratorAction(
        id=id,
        sendEvent=pb.SendEventAction(
            instance=pb.OrchestrationInstance(instanceId=instance_id),
            name=event_name,
            data=string_value(encoded_data),
        ),
    )


def new_terminate_orchestration_action(
    id: int, instance_id: str, *, reason: str | None = None, recurse: bool = True
) -> pb.OrchestratorAction:
    """terminateOrchestration: stop another instance."""
    return pb.OrchestratorAction(
        id=id,
        terminateOrchestration=pb.TerminateOrchestrationAction(
            instanceId=instance_id, reason=string_value(reason), recurse=recurse
        ),
    )


def new_complete_orchestration_action(
    id: int,
    status: pb.OrchestrationStatus,
    result: str | None = None,
    failure_details: pb.TaskFailureDetails | None = None,
    *,
    carryover_events: Iterable[pb.HistoryEvent] | None = None,
    new_version: str | None = None,
) -> pb.OrchestratorAction:
    """completeOrchestration: COMPLETED, FAILED, TERMINATED or CONTINUED_AS_NEW."""
    return pb.OrchestratorAction(
        id=id,
        completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=status,
            result=string_value(result),
            failureDetails=failure_details,
            newVersion=string_value(new_version),
            carryoverEvents=list(carryover_events) if carryover_events is not None else None,
        ),
    )


# ------------------------------------------------------------------ entities
# Entity IDs are passed in their string form, ``@name@key``.


def new_call_entity_action(
    id: int,
    parent_instance_id: str,
    entity_id: str,
    operation: str,
    encoded_input: str | None,
    request_id: str,
) -> pb.OrchestratorAction:
    """sendEntityMessage/entityOperationCalled: a two-way operation; the answer comes by ``request_id``."""
    return pb.OrchestratorAction(id=id, sendEntityMessage=pb.SendEntityMessageAction(
        entityOperationCalled=pb.EntityOperationCalledEvent(
            requestId=request_id,
            operation=operation,
            input=string_value(encoded_input),
            parentInstanceId=string_value(parent_instance_id),
            targetInstanceId=string_value(entity_id),
        )
    ))


def new_signal_entity_action(
    id: int,
    entity_id: str,
    operation: str,
    encoded_input: str | None,
    request_id: str,
    signal_time: datetime | None = None,
) -> pb.OrchestratorAction:
    """sendEntityMessage/entityOperationSignaled: a one-way operation, delivered at ``signal_time`` if given."""
    return pb.OrchestratorAction(id=id, sendEntityMessage=pb.SendEntityMessageAction(
        entityOperationSignaled=pb.EntityOperationSignaledEvent(
            requestId=request_id,
            operation=operation,
            scheduledTime=new_timestamp(signal_time) if signal_time is not None else None,
            input=string_value(encoded_input),
            targetInstanceId=string_value(entity_id),
        )
    ))


def new_lock_entities_action(
    id: int, critical_section_id: str, parent_instance_id: str, lock_set: Iterable[str]
) -> pb.OrchestratorAction:
    """sendEntityMessage/entityLockRequested: take the (sorted) ``lock_set``, starting at position 0."""
    return pb.OrchestratorAction(id=id, sendEntityMessage=pb.SendEntityMessageAction(
        entityLockRequested=pb.EntityLockRequestedEvent(
            criticalSectionId=critical_section_id,
            lockSet=list(lock_set),
            position=0,
            parentInstanceId=string_value(parent_instance_id),
        )
    ))


def new_unlock_entity_action(
    id: int, critical_section_id: str, parent_instance_id: str, entity_id: str
) -> pb.OrchestratorAction:
    """sendEntityMessage/entityUnlockSent: release one entity's lock held by a critical section."""
    return pb.OrchestratorAction(id=id, sendEntityMessage=pb.SendEntityMessageAction(
        entityUnlockSent=pb.EntityUnlockSentEvent(
            criticalSectionId=critical_section_id,
            parentInstanceId=string_value(parent_instance_id),
            targetInstanceId=string_value(entity_id),
        )
    ))


def new_entity_message_event(action: pb.OrchestratorAction, *, timestamp: datetime | None = None) -> pb.HistoryEvent:
    """The history event recording a sendEntityMessage action (event id = action id)."""
    message = action.sendEntityMessage
    kind = message.WhichOneof("EntityMessageType")
    if kind is None:
        raise ValueError("the sendEntityMessage action has no message")
    return _event(action.id, timestamp, **{kind: getattr(message, kind)})


def new_entity_operation_completed_event(
    request_id: str, encoded_output: str | None = None, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """entityOperationCompleted: the result of a called entity operation."""
    return _event(-1, timestamp, entityOperationCompleted=pb.EntityOperationCompletedEvent(
        requestId=request_id, output=string_value(encoded_output)
    ))


def new_entity_operation_failed_event(
    request_id: str, failure: BaseException | pb.TaskFailureDetails, *, timestamp: datetime | None = None
) -> pb.HistoryEvent:
    """entityOperationFailed: a called entity operation raised."""
    return _event(-1, timestamp, entityOperationFailed=pb.EntityOperationFailedEvent(
        requestId=request_id, failureDetails=_as_failure_details(failure)
    ))


def new_entity_lock_granted_event(critical_section_id: str, *, timestamp: datetime | None = None) -> pb.HistoryEvent:
    """entityLockGranted: every lock of the critical section is held."""
    return _event(-1, timestamp, entityLockGranted=pb.EntityLockGrantedEvent(criticalSectionId=critical_section_id))
