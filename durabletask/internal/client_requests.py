"""Request building, failure bookkeeping and logging shared by the sync and async clients.

Nothing here performs I/O: the clients build a request with these helpers, send it,
and hand the response to the parsers in ``durabletask.internal.client_responses``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.proto_helpers import new_timestamp, string_value

if TYPE_CHECKING:
    from durabletask.internal.client_types import (
        EntityQuery,
        OrchestrationQuery,
        OrchestrationState,
        OrchestrationStatus,
    )
    from durabletask.serialization import DataConverter

CLIENT_LOGGER_NAME = "durabletask-client"

# Long polls end with DEADLINE_EXCEEDED when the caller's own timeout passes: not a transport fault.
LONG_POLL_METHODS = frozenset({"WaitForInstanceStart", "WaitForInstanceCompletion"})

# Calls whose NOT_FOUND must name the instance the caller asked about.
INSTANCE_METHODS = frozenset({"RaiseEvent", "TerminateInstance", "SuspendInstance", "ResumeInstance",
                              "RewindInstance", "RestartInstance"})


# ---------------------------------------------------------------- small conversions

def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A proto timestamp for an optional datetime; naive datetimes are taken as UTC."""
    return None if value is None else new_timestamp(value)


def has_failure(details: pb.TaskFailureDetails) -> bool:
    """True when a state's failureDetails field carries a failure."""
    return bool(details.errorMessage or details.errorType)


def status_values(statuses: Iterable[OrchestrationStatus] | None) -> list[pb.OrchestrationStatus]:
    """Wire values of a status filter; None or empty means no filter."""
    return [status.value for status in statuses or []]


def _serialize(value: Any, converter: DataConverter | None) -> str | None:
    if converter is None:
        from durabletask.serialization import default_converter

        converter = default_converter()
    return converter.serialize(value)


# ---------------------------------------------------------------- request builders

def build_schedule_new_orchestration_req(
    orchestrator: task.Orchestrator[Any, Any] | str,
    *,
    input: Any | None,
    instance_id: str | None,
    start_at: datetime | None,
    reuse_id_policy: pb.OrchestrationIdReusePolicy | None,
    tags: dict[str, str] | None,
    version: str | None,
    data_converter: DataConverter,
) -> pb.CreateInstanceRequest:
    """A StartInstance request; the instance ID defaults to a new UUID4 hex string."""
    name = orchestrator if isinstance(orchestrator, str) else task.get_name(orchestrator)
    return pb.CreateInstanceRequest(
        name=name,
        instanceId=instance_id or uuid.uuid4().hex,
        input=string_value(data_converter.serialize(input)),
        scheduledStartTimestamp=to_timestamp(start_at),
        version=string_value(version or None),
        orchestrationIdReusePolicy=reuse_id_policy,
        tags=tags or None,
        requestTime=to_timestamp(datetime.now(timezone.utc)),
    )


def build_query_instances_req(
    orchestration_query: OrchestrationQuery,
    continuation_token: wrappers_pb2.StringValue | None,
) -> pb.QueryInstancesRequest:
    """One page of a QueryInstances call."""
    query = orchestration_query
    return pb.QueryInstancesRequest(
        query=pb.InstanceQuery(
            runtimeStatus=status_values(query.runtime_status),
            createdTimeFrom=to_timestamp(query.created_time_from),
            createdTimeTo=to_timestamp(query.created_time_to),
            instanceIdPrefix=string_value(getattr(query, "instance_id_prefix", None)),
            maxInstanceCount=query.max_instance_count or 0,
            fetchInputsAndOutputs=query.fetch_inputs_and_outputs,
            continuationToken=continuation_token,
        )
    )


# Beyond the protocol: InstanceQuery has no version field. The versions a query filters on
# travel in this metadata header (a JSON list); our sidecar filters by it, other backends
# ignore it, and the client filters the answers again so the result is right either way.
QUERY_VERSIONS_HEADER = "x-durabletask-query-versions"


def query_versions(query: OrchestrationQuery) -> list[str] | None:
    """The versions a query asks for (None, also for an empty list: any version)."""
    version = getattr(query, "version", None)
    if version is None:
        return None
    if isinstance(version, str):
        versions = [version]
    elif isinstance(version, (list, tuple, set, frozenset)):
        versions = list(version)
    else:
        versions = [version]
    for v in versions:
        if not isinstance(v, str):
            raise TypeError(f"OrchestrationQuery.version takes a string or a list of strings, not {v!r}")
    return versions or None


def query_versions_metadata(versions: list[str] | None) -> tuple[tuple[str, str], ...]:
    """The metadata that tells our sidecar which versions to return (nothing without a filter)."""
    if not versions:
        return ()
    return ((QUERY_VERSIONS_HEADER, json.dumps(versions)),)


def version_matches(state: OrchestrationState, versions: list[str] | None) -> bool:
    """True when ``state`` passes the version filter ("" stands for "no version")."""
    return versions is None or (state.version or "") in versions


def build_list_instance_ids_req(
    runtime_status: list[OrchestrationStatus] | None,
    completed_time_from: datetime | None,
    completed_time_to: datetime | None,
    page_size: int | None,
    continuation_token: str | None,
) -> pb.ListInstanceIdsRequest:
    """One page of a ListInstanceIds call."""
    return pb.ListInstanceIdsRequest(
        runtimeStatus=status_values(runtime_status),
        completedTimeFrom=to_timestamp(completed_time_from),
        completedTimeTo=to_timestamp(completed_time_to),
        pageSize=page_size or 0,
        lastInstanceKey=string_value(continuation_token),
    )


def build_purge_instance_req(instance_id: str, recursive: bool) -> pb.PurgeInstancesRequest:
    """Purge one orchestration (and, when recursive, its sub-orchestrations)."""
    return pb.PurgeInstancesRequest(instanceId=instance_id, recursive=recursive, isOrchestration=True)


def build_purge_by_filter_req(
    created_time_from: datetime | None,
    created_time_to: datetime | None,
    runtime_status: list[OrchestrationStatus] | None,
    recursive: bool,
    timeout: timedelta | None = None,
) -> pb.PurgeInstancesRequest:
    """Purge every orchestration matching a filter; ``timeout`` bounds the work the backend does."""
    if timeout is not None and timeout <= timedelta(0):
        raise ValueError("timeout must be a positive duration")
    purge_filter = pb.PurgeInstanceFilter(
        createdTimeFrom=to_timestamp(created_time_from),
        createdTimeTo=to_timestamp(created_time_to),
        runtimeStatus=status_values(runtime_status),
    )
    if timeout is not None:
        duration = duration_pb2.Duration()
        duration.FromTimedelta(timeout)
        purge_filter.timeout.CopyFrom(duration)
    return pb.PurgeInstancesRequest(purgeInstanceFilter=purge_filter, recursive=recursive)


def build_raise_event_req(
    instance_id: str,
    event_name: str,
    data: Any | None = None,
    data_converter: DataConverter | None = None,
) -> pb.RaiseEventRequest:
    """Deliver a named external event with an optional payload."""
    return pb.RaiseEventRequest(
        instanceId=instance_id, name=event_name, input=string_value(_serialize(data, data_converter))
    )


def build_terminate_req(
    instance_id: str,
    output: Any | None = None,
    recursive: bool = True,
    data_converter: DataConverter | None = None,
) -> pb.TerminateRequest:
    """Terminate an instance, recording ``output`` as its result."""
    return pb.TerminateRequest(
        instanceId=instance_id, output=string_value(_serialize(output, data_converter)), recursive=recursive
    )


def build_suspend_req(instance_id: str, reason: str | None) -> pb.SuspendRequest:
    """Suspend an instance."""
    return pb.SuspendRequest(instanceId=instance_id, reason=string_value(reason))


def build_resume_req(instance_id: str, reason: str | None) -> pb.ResumeRequest:
    """Resume a suspended instance."""
    return pb.ResumeRequest(instanceId=instance_id, reason=string_value(reason))


def build_rewind_req(instance_id: str, reason: str | None) -> pb.RewindInstanceRequest:
    """Rewind a failed instance."""
    return pb.RewindInstanceRequest(instanceId=instance_id, reason=string_value(reason))


def build_restart_req(instance_id: str, restart_with_new_instance_id: bool) -> pb.RestartInstanceRequest:
    """Restart an instance with its original input."""
    return pb.RestartInstanceRequest(
        instanceId=instance_id, restartWithNewInstanceId=restart_with_new_instance_id
    )


def build_history_req(
    instance_id: str, execution_id: str | None, for_work_item_processing: bool
) -> pb.StreamInstanceHistoryRequest:
    """Stream an instance's history."""
    return pb.StreamInstanceHistoryRequest(
        instanceId=instance_id,
        executionId=string_value(execution_id),
        forWorkItemProcessing=for_work_item_processing,
    )


def build_signal_entity_req(
    entity_instance_id: Any,
    operation_name: str,
    input: Any | None = None,
    signal_time: datetime | None = None,
    data_converter: DataConverter | None = None,
) -> pb.SignalEntityRequest:
    """A one-way operation on an entity; ``entity_instance_id`` is anything whose str() is ``@name@key``."""
    return pb.SignalEntityRequest(
        instanceId=str(entity_instance_id),
        name=operation_name,
        input=string_value(_serialize(input, data_converter)),
        requestId=str(uuid.uuid4()),
        scheduledTime=to_timestamp(signal_time),
        requestTime=to_timestamp(datetime.now(timezone.utc)),
    )


def build_get_entity_req(entity_instance_id: Any, include_state: bool) -> pb.GetEntityRequest:
    """Read one entity's metadata (and state)."""
    return pb.GetEntityRequest(instanceId=str(entity_instance_id), includeState=include_state)


def build_query_entities_req(
    entity_query: EntityQuery,
    continuation_token: wrappers_pb2.StringValue | None,
) -> pb.QueryEntitiesRequest:
    """One page of a QueryEntities call."""
    query = entity_query
    return pb.QueryEntitiesRequest(
        query=pb.EntityQuery(
            instanceIdStartsWith=string_value(query.instance_id_starts_with),
            lastModifiedFrom=to_timestamp(query.last_modified_from),
            lastModifiedTo=to_timestamp(query.last_modified_to),
            includeState=query.include_state,
            includeTransient=query.include_transient,
            pageSize=None if query.page_size is None else wrappers_pb2.Int32Value(value=query.page_size),
            continuationToken=continuation_token,
        )
    )


def build_clean_entity_storage_req(
    remove_empty_entities: bool,
    release_orphaned_locks: bool,
    continuation_token: wrappers_pb2.StringValue | None,
) -> pb.CleanEntityStorageRequest:
    """One round of entity storage cleanup."""
    return pb.CleanEntityStorageRequest(
        removeEmptyEntities=remove_empty_entities,
        releaseOrphanedLocks=release_orphaned_locks,
        continuationToken=continuation_token,
    )


# ---------------------------------------------------------------- paging and logging

def check_continuation_token(
    resp_token: wrappers_pb2.StringValue | None,
    prev_token: wrappers_pb2.StringValue | None,
    logger: logging.Logger,
) -> bool:
    """True when the response asks for another page ("" and "0" mean done; a repeat stops the loop)."""
    if resp_token is None or resp_token.value in ("", "0"):
        return False
    if prev_token is not None and prev_token.value == resp_token.value:
        logger.warning("The backend returned the same continuation token '%s' twice; stopping.", resp_token.value)
        return False
    # At INFO, as the official client logs it: its users see pages being followed in their log handler.
    logger.info("Fetching the next page (continuation token '%s').", resp_token.value)
    return True


def response_token(message: Any, field_name: str = "continuationToken") -> wrappers_pb2.StringValue | None:
    """The continuation token of a paged response, or None when unset."""
    return getattr(message, field_name) if message.HasField(field_name) else None


def log_completion_state(logger: logging.Logger, instance_id: str, state: OrchestrationState | None) -> None:
    """Log how an awaited instance ended."""
    if state is None:
        return
    status = state.runtime_status.value
    if status == pb.ORCHESTRATION_STATUS_FAILED and state.failure_details is not None:
        details = state.failure_details
        logger.info("Instance '%s' failed: [%s] %s", instance_id, details.error_type, details.message)
    elif status == pb.ORCHESTRATION_STATUS_TERMINATED:
        logger.info("Instance '%s' was terminated.", instance_id)
    elif status == pb.ORCHESTRATION_STATUS_COMPLETED:
        logger.info("Instance '%s' completed.", instance_id)


def get_client_logger(
    log_handler: logging.Handler | None,
    log_formatter: logging.Formatter | None,
    logger: logging.Logger | None,
    name: str = CLIENT_LOGGER_NAME,
) -> logging.Logger:
    """The caller's logger, or a private logger named ``name`` writing through ``log_handler``."""
    if logger is not None:
        if log_handler is not None or log_formatter is not None:
            raise ValueError("pass either 'logger' or 'log_handler'/'log_formatter', not both")
        return logger
    result = logging.Logger(name)
    handler = log_handler if log_handler is not None else logging.StreamHandler()
    if log_handler is None:
        handler.setLevel(logging.INFO)
    handler.setFormatter(
        log_formatter
        or logging.Formatter(fmt="%(asctime)s.%(msecs)03d %(name)s %(levelname)s: %(message)s",
                             datefmt="%Y-%m-%d %H:%M:%S")
    )
    result.addHandler(handler)
    return result


# ---------------------------------------------------------------- errors and resiliency

class InstanceRpcError(grpc.RpcError):
    """A gRPC error re-raised with the instance ID in its message; ``code()``/``details()`` still work."""

    def __init__(self, instance_id: str, original: grpc.RpcError) -> None:
        self.instance_id = instance_id
        self._original = original
        self._code = _status_code(original)
        self._details = _details(original)
        super().__init__(f"instance '{instance_id}': {self._code.name if self._code else 'error'}: {self._details}")

    def code(self) -> grpc.StatusCode | None:
        """The status code of the original error."""
        return self._code

    def details(self) -> str:
        """The backend's message."""
        return self._details

    def trailing_metadata(self) -> Any:
        """Trailing metadata of the original call, when it had any."""
        getter = getattr(self._original, "trailing_metadata", None)
        return getter() if callable(getter) else None


def _status_code(error: BaseException) -> grpc.StatusCode | None:
    getter = getattr(error, "code", None)
    code = getter() if callable(getter) else None
    return code if isinstance(code, grpc.StatusCode) else None


def _details(error: BaseException) -> str:
    getter = getattr(error, "details", None)
    value = getter() if callable(getter) else None
    return str(value) if value is not None else str(error)


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code of an error, or None when it has none."""
    return _status_code(error)


def name_instance(error: grpc.RpcError, method: str, instance_id: str | None) -> grpc.RpcError:
    """The error to raise: NOT_FOUND from a per-instance call always names the instance."""
    if instance_id is None or method not in INSTANCE_METHODS:
        return error
    if _status_code(error) != grpc.StatusCode.NOT_FOUND or instance_id in _details(error):
        return error
    return InstanceRpcError(instance_id, error)


def is_transport_failure(method: str, code: grpc.StatusCode | None) -> bool:
    """True for failures that suggest a broken channel rather than a refused request."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return code == grpc.StatusCode.DEADLINE_EXCEEDED and method not in LONG_POLL_METHODS


class FailureTracker:
    """Counts consecutive transport failures; thread-safe."""

    def __init__(self, *, threshold: int, consecutive_failures: int = 0) -> None:
        self.threshold = threshold
        self.consecutive_failures = consecutive_failures
        self._lock = threading.Lock()

    def record_failure(self) -> bool:
        """Count one failure; True once the threshold is reached (never when disabled with 0)."""
        if self.threshold <= 0:
            return False
        with self._lock:
            self.consecutive_failures += 1
            return self.consecutive_failures >= self.threshold

    def record_success(self) -> None:
        """Reset the count."""
        with self._lock:
            self.consecutive_failures = 0
