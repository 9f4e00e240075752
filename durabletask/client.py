"""The client: start, query, signal and manage orchestration instances through the sidecar.

``TaskHubGrpcClient`` is synchronous; ``AsyncTaskHubGrpcClient`` (same methods, ``async def``)
lives in ``durabletask.internal.async_client`` and is importable from here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import grpc
from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.internal import grpc_channel, payload_rpc, tracing
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.internal.client_requests import (
    FailureTracker,
    build_clean_entity_storage_req,
    build_get_entity_req,
    build_history_req,
    build_list_instance_ids_req,
    build_purge_by_filter_req,
    build_purge_instance_req,
    build_query_entities_req,
    build_query_instances_req,
    build_raise_event_req,
    build_restart_req,
    build_resume_req,
    build_rewind_req,
    build_schedule_new_orchestration_req,
    build_signal_entity_req,
    build_suspend_req,
    build_terminate_req,
    check_continuation_token,
    get_client_logger,
    has_failure,
    is_transport_failure,
    log_completion_state,
    name_instance,
    query_versions,
    query_versions_metadata,
    response_token,
    status_code,
    version_matches,
)
from durabletask.internal.proto_helpers import failure_details_from_pb
from durabletask.payload.store import PayloadStore
from durabletask.serialization import DataConverter, JsonDataConverter, default_converter

if TYPE_CHECKING:
    from durabletask.entities import EntityInstanceId, EntityMetadata
    from durabletask.history import HistoryEvent
    from durabletask.internal.async_client import AsyncTaskHubGrpcClient

__all__ = [
    "AsyncTaskHubGrpcClient",
    "CleanEntityStorageResult",
    "DataConverter",
    "EntityInstanceId",
    "EntityMetadata",
    "EntityQuery",
    "FailureTracker",
    "JsonDataConverter",
    "OrchestrationFailedError",
    "OrchestrationQuery",
    "OrchestrationState",
    "OrchestrationStatus",
    "Page",
    "PurgeInstancesResult",
    "TaskHubGrpcClient",
    "build_purge_by_filter_req",
    "build_query_entities_req",
    "build_query_instances_req",
    "build_raise_event_req",
    "build_schedule_new_orchestration_req",
    "build_signal_entity_req",
    "build_terminate_req",
    "check_continuation_token",
    "log_completion_state",
    "new_orchestration_state",
    "new_purge_instances_result",
    "parse_orchestration_state",
]

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")
TItem = TypeVar("TItem")
T = TypeVar("T")

# How long a replaced channel stays open so calls already running on it can finish.
RETIRED_CHANNEL_GRACE_SECONDS = 30.0


class OrchestrationStatus(Enum):
    """Runtime status of an orchestration instance; values are the wire values."""

    RUNNING = pb.ORCHESTRATION_STATUS_RUNNING
    COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
    FAILED = pb.ORCHESTRATION_STATUS_FAILED
    TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED
    CONTINUED_AS_NEW = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    PENDING = pb.ORCHESTRATION_STATUS_PENDING
    SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED

    def __str__(self) -> str:
        return self.name


class OrchestrationFailedError(Exception):
    """Raised by ``OrchestrationState.raise_if_failed`` for a failed instance."""

    def __init__(self, message: str, failure_details: task.FailureDetails) -> None:
        super().__init__(message)
        self._failure_details = failure_details

    @property
    def failure_details(self) -> task.FailureDetails:
        """Why the orchestration failed."""
        return self._failure_details


@dataclass
class OrchestrationState:
    """A snapshot of one orchestration instance as the sidecar reports it."""

    instance_id: str
    name: str
    runtime_status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None
    serialized_output: str | None
    serialized_custom_status: str | None
    failure_details: task.FailureDetails | None
    _data_converter: DataConverter = field(default_factory=default_converter, compare=False, repr=False)
    version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    completed_at: datetime | None = None
    parent_instance_id: str | None = None

    @overload
    def get_input(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_input(self, expected_type: None = ...) -> Any: ...

    def get_input(self, expected_type: type | None = None) -> Any:
        """The decoded input (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_input, expected_type)

    @overload
    def get_output(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_output(self, expected_type: None = ...) -> Any: ...

    def get_output(self, expected_type: type | None = None) -> Any:
        """The decoded output (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_output, expected_type)

    @overload
    def get_custom_status(self, expected_type: type[T]) -> T | None: ...

    @overload
    def get_custom_status(self, expected_type: None = ...) -> Any: ...

    def get_custom_status(self, expected_type: type | None = None) -> Any:
        """The decoded custom status (None without one), shaped as ``expected_type`` when given."""
        return self._decode(self.serialized_custom_status, expected_type)

    def raise_if_failed(self) -> None:
        """Raise ``OrchestrationFailedError`` when the instance carries failure details."""
        if self.failure_details is not None:
            raise OrchestrationFailedError(
                f"Orchestration '{self.instance_id}' failed: {self.failure_details.message}",
                self.failure_details,
            )

    def _decode(self, data: str | None, expected_type: type | None) -> Any:
        if data is None:
            return None
        return self._data_converter.deserialize(data, expected_type)


@dataclass
class OrchestrationQuery:
    """Filters for ``get_all_orchestration_states``."""

    created_time_from: datetime | None = None
    created_time_to: datetime | None = None
    runtime_status: list[OrchestrationStatus] | None = None
    # Some backends treat 0 as "none", so "no limit" is the largest int32.
    max_instance_count: int | None = (1 << 31) - 1
    fetch_inputs_and_outputs: bool = False
    instance_id_prefix: str | None = None
    # Beyond the official SDK: only instances of this version (or of any of these versions;
    # "" matches instances without a version).
    version: str | list[str] | None = None


@dataclass
class EntityQuery:
    """Filters for ``get_all_entities``."""

    instance_id_starts_with: str | None = None
    last_modified_from: datetime | None = None
    last_modified_to: datetime | None = None
    include_state: bool = True
    include_transient: bool = False
    page_size: int | None = None


@dataclass
class PurgeInstancesResult:
    """Outcome of a purge; ``is_complete`` is None when the backend does not say."""

    deleted_instance_count: int
    is_complete: bool | None


@dataclass
class Page(Generic[TItem]):
    """One page of results; pass ``continuation_token`` back for the next (None: no more)."""

    items: list[TItem]
    continuation_token: str | None


@dataclass
class CleanEntityStorageResult:
    """Outcome of ``clean_entity_storage``."""

    empty_entities_removed: int
    orphaned_locks_released: int


# ---------------------------------------------------------------- response parsing

def parse_orchestration_state(
    state: pb.OrchestrationState, data_converter: DataConverter | None = None
) -> OrchestrationState:
    """Convert a wire OrchestrationState."""

    def optional(name: str) -> str | None:
        return getattr(state, name).value if state.HasField(name) else None

    return OrchestrationState(
        state.instanceId,
        state.name,
        OrchestrationStatus(state.orchestrationStatus),
        state.createdTimestamp.ToDatetime(),
        state.lastUpdatedTimestamp.ToDatetime(),
        optional("input"),
        optional("output"),
        optional("customStatus"),
        failure_details_from_pb(state.failureDetails) if has_failure(state.failureDetails) else None,
        data_converter if data_converter is not None else default_converter(),
        version=optional("version"),
        tags=dict(state.tags),
        completed_at=state.completedTimestamp.ToDatetime() if state.HasField("completedTimestamp") else None,
        parent_instance_id=optional("parentInstanceId"),
    )


def new_orchestration_state(
    instance_id: str, res: pb.GetInstanceResponse, data_converter: DataConverter | None = None
) -> OrchestrationState | None:
    """The state in a GetInstance-style response, or None when the instance does not exist."""
    if not res.exists:
        return None
    parsed = parse_orchestration_state(res.orchestrationState, data_converter)
    parsed.instance_id = instance_id
    return parsed


def new_purge_instances_result(response: pb.PurgeInstancesResponse) -> PurgeInstancesResult:
    """Convert a PurgeInstancesResponse, keeping 'not reported' distinct from False."""
    is_complete = response.isComplete.value if response.HasField("isComplete") else None
    return PurgeInstancesResult(response.deletedInstanceCount, is_complete)


def new_instance_id_page(response: pb.ListInstanceIdsResponse) -> Page[str]:
    """Convert a ListInstanceIdsResponse."""
    token = response.lastInstanceKey.value if response.HasField("lastInstanceKey") else None
    return Page(items=list(response.instanceIds), continuation_token=token or None)


def entity_metadata_from_pb(entity: pb.EntityMetadata, include_state: bool, converter: DataConverter) -> Any:
    """Convert a wire EntityMetadata with ``durabletask.entities.EntityMetadata``."""
    from durabletask.entities import EntityMetadata as _EntityMetadata

    return _EntityMetadata.from_entity_metadata(entity, include_state, converter)


def history_from_chunks(chunks: Sequence[pb.HistoryChunk]) -> list[Any]:
    """Flatten history chunks into ``durabletask.history`` events, oldest first."""
    from durabletask import history

    return [history.from_protobuf(event) for chunk in chunks for event in chunk.events]


# ---------------------------------------------------------------- the synchronous client

class TaskHubGrpcClient:
    """Synchronous client for a Durable Task sidecar (default ``localhost:4001``)."""

    def __init__(
        self,
        *,
        host_address: str | None = None,
        metadata: list[tuple[str, str]] | None = None,
        log_handler: logging.Handler | None = None,
        log_formatter: logging.Formatter | None = None,
        logger: logging.Logger | None = None,
        channel: grpc.Channel | None = None,
        secure_channel: bool = False,
        interceptors: Sequence[Any] | None = None,
        channel_options: GrpcChannelOptions | None = None,
        resiliency_options: GrpcClientResiliencyOptions | None = None,
        default_version: str | None = None,
        payload_store: PayloadStore | None = None,
        data_converter: DataConverter | None = None,
        emit_trace_spans: bool = True,
    ) -> None:
        self._logger = get_client_logger(log_handler, log_formatter, logger)
        self._data_converter = data_converter if data_converter is not None else default_converter()
        self._host_address = host_address or grpc_channel.get_default_host_address()
        self._secure_channel = secure_channel
        self._interceptors = list(interceptors) if interceptors else None
        self._channel_options = channel_options
        self._metadata = tuple(metadata) if metadata else None
        self._resiliency = resiliency_options or GrpcClientResiliencyOptions()
        self._failures = FailureTracker(threshold=self._resiliency.channel_recreate_failure_threshold)
        self._emit_trace_spans = emit_trace_spans
        self.default_version = default_version
        self._payload_store = payload_store
        self._lock = threading.Lock()
        self._closed = False
        self._last_recreate = float("-inf")
        self._retired: dict[grpc.Channel, threading.Timer] = {}
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else self._new_channel()
        self._stub = stubs.TaskHubSidecarServiceStub(self._channel)

    @property
    def emit_trace_spans(self) -> bool:
        """Whether lifecycle trace spans were requested (accepted for compatibility)."""
        return self._emit_trace_spans

    def _new_channel(self) -> grpc.Channel:
        options = self._channel_options.to_grpc_options() if self._channel_options else None
        return grpc_channel.new_channel(self._host_address, self._secure_channel, self._interceptors, options)

    def close(self) -> None:
        """Close the channel this client created (a channel passed in is left to its owner)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            retired = list(self._retired.items())
            self._retired.clear()
        for old, timer in retired:
            timer.cancel()
            old.close()
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> TaskHubGrpcClient:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def _call(self, method: str, request: Any, *, timeout: float | None = None,
              instance_id: str | None = None, extra_metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        metadata = (*(self._metadata or ()), *extra_metadata) or None
        payload_rpc.prepare_request(method, request, self._payload_store)
        try:
            response = getattr(self._stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            self._record_failure(method, error)
            named = name_instance(error, method, instance_id)
            if named is error:
                raise
            raise named from error
        self._failures.record_success()
        payload_rpc.resolve_response(method, response, self._payload_store)
        return response

    def _call_stream(self, method: str, request: Any) -> list[Any]:
        try:
            items = list(getattr(self._stub, method)(request, metadata=self._metadata))
        except grpc.RpcError as error:
            self._record_failure(method, error)
            raise
        self._failures.record_success()
        for item in items:
            payload_rpc.resolve_response(method, item, self._payload_store)
        return items

    def _record_failure(self, method: str, error: grpc.RpcError) -> None:
        if not is_transport_failure(method, status_code(error)):
            self._failures.record_success()
        elif self._failures.record_failure():
            self._recreate_channel()

    def _recreate_channel(self) -> None:
        """Swap in a fresh channel; the old one closes after a grace period."""
        if not self._owns_channel:
            return
        with self._lock:
            now = time.monotonic()
            if self._closed or now - self._last_recreate < self._resiliency.min_recreate_interval_seconds:
                return
            old = self._channel
            self._channel = self._new_channel()
            self._stub = stubs.TaskHubSidecarServiceStub(self._channel)
            self._last_recreate = now
            self._failures.record_success()
            timer = threading.Timer(RETIRED_CHANNEL_GRACE_SECONDS, self._close_retired, args=(old,))
            timer.daemon = True
            self._retired[old] = timer
            timer.start()
        self._logger.warning("Recreated the gRPC channel to %s after repeated transport failures.",
                             self._host_address)

    def _close_retired(self, channel: grpc.Channel) -> None:
        with self._lock:
            if self._retired.pop(channel, None) is None:
                return
        channel.close()

    # ------------------------------------------------------------ orchestrations

    def schedule_new_orchestration(
        self,
        orchestrator: task.Orchestrator[TInput, TOutput] | str,
        *,
        input: TInput | None = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        reuse_id_policy: pb.OrchestrationIdReusePolicy | None = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
    ) -> str:
        """Start a new instance; returns its ID (a new UUID4 hex string unless given)."""
        req = build_schedule_new_orchestration_req(
            orchestrator, input=input, instance_id=instance_id, start_at=start_at,
            reuse_id_policy=reuse_id_policy, tags=tags, version=version or self.default_version,
            data_converter=self._data_converter,
        )
        self._logger.info("Starting new '%s' instance with ID = '%s'.", req.name, req.instanceId)
        with tracing.creating_orchestration(req, self._emit_trace_spans):
            res: pb.CreateInstanceResponse = self._call("StartInstance", req)
        return res.instanceId or req.instanceId

    def get_orchestration_state(self, instance_id: str, *, fetch_payloads: bool = True) -> OrchestrationState | None:
        """The instance's current state, or None when it does not exist."""
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = self._call("GetInstance", req)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    def get_orchestration_history(
        self, instance_id: str, *, execution_id: str | None = None, for_work_item_processing: bool = False
    ) -> list[HistoryEvent]:
        """The instance's history events, oldest first."""
        self._logger.info("Retrieving history for instance '%s'.", instance_id)
        req = build_history_req(instance_id, execution_id, for_work_item_processing)
        return history_from_chunks(self._call_stream("StreamInstanceHistory", req))

    def list_instance_ids(
        self,
        runtime_status: list[OrchestrationStatus] | None = None,
        completed_time_from: datetime | None = None,
        completed_time_to: datetime | None = None,
        page_size: int | None = None,
        continuation_token: str | None = None,
    ) -> Page[str]:
        """One page of IDs of instances in a terminal state matching the filters."""
        req = build_list_instance_ids_req(
            runtime_status, completed_time_from, completed_time_to, page_size, continuation_token
        )
        return new_instance_id_page(self._call("ListInstanceIds", req))

    def get_all_orchestration_states(
        self, orchestration_query: OrchestrationQuery | None = None
    ) -> list[OrchestrationState]:
        """Every instance matching the query, following continuation tokens."""
        query = orchestration_query or OrchestrationQuery()
        self._logger.info("Querying orchestration instances with query: %s", query)
        versions = query_versions(query)
        states: list[OrchestrationState] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            resp: pb.QueryInstancesResponse = self._call(
                "QueryInstances", build_query_instances_req(query, token),
                extra_metadata=query_versions_metadata(versions),
            )
            page = (parse_orchestration_state(s, self._data_converter) for s in resp.orchestrationState)
            states.extend(s for s in page if version_matches(s, versions))
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return states
            token = next_token

    def get_orchestration_state_page(
        self, orchestration_query: OrchestrationQuery | None = None, continuation_token: str | None = None
    ) -> Page[OrchestrationState]:
        """One page of instances matching the query (beyond the official SDK).

        ``max_instance_count`` is the page size; pass the returned ``continuation_token`` back
        for the next page (None: this was the last).
        """
        query = orchestration_query or OrchestrationQuery()
        versions = query_versions(query)
        token = wrappers_pb2.StringValue(value=continuation_token) if continuation_token else None
        resp: pb.QueryInstancesResponse = self._call(
            "QueryInstances", build_query_instances_req(query, token),
            extra_metadata=query_versions_metadata(versions),
        )
        page = (parse_orchestration_state(s, self._data_converter) for s in resp.orchestrationState)
        next_token = response_token(resp)
        return Page(items=[s for s in page if version_matches(s, versions)],
                    continuation_token=next_token.value if next_token is not None and next_token.value else None)

    def wait_for_orchestration_start(
        self, instance_id: str, *, fetch_payloads: bool = False, timeout: float = 60
    ) -> OrchestrationState | None:
        """Block until the instance leaves PENDING; raises TimeoutError after ``timeout`` seconds."""
        self._logger.info("Waiting up to %ss for instance '%s' to start.", timeout, instance_id)
        return self._wait("WaitForInstanceStart", instance_id, fetch_payloads, timeout, "start")

    def wait_for_orchestration_completion(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float = 60
    ) -> OrchestrationState | None:
        """Block until the instance finishes; raises TimeoutError after ``timeout`` seconds."""
        self._logger.info("Waiting up to %ss for instance '%s' to complete.", timeout, instance_id)
        state = self._wait("WaitForInstanceCompletion", instance_id, fetch_payloads, timeout, "complete")
        log_completion_state(self._logger, instance_id, state)
        return state

    def _wait(self, method: str, instance_id: str, fetch_payloads: bool, timeout: float,
              what: str) -> OrchestrationState | None:
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = self._call(method, req, timeout=timeout)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(
                    f"Timed out after {timeout}s waiting for instance '{instance_id}' to {what}"
                ) from None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        """Send an external event to an instance."""
        self._logger.info("Raising event '%s' for instance '%s'.", event_name, instance_id)
        req = build_raise_event_req(instance_id, event_name, data, self._data_converter)
        with tracing.raising_event(event_name, instance_id, self._emit_trace_spans):
            self._call("RaiseEvent", req, instance_id=instance_id)

    def terminate_orchestration(self, instance_id: str, *, output: Any | None = None, recursive: bool = True) -> None:
        """Terminate an instance (and, when recursive, its sub-orchestrations)."""
        self._logger.info("Terminating instance '%s'.", instance_id)
        req = build_terminate_req(instance_id, output, recursive, self._data_converter)
        self._call("TerminateInstance", req, instance_id=instance_id)

    def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Suspend an instance: it gets no turns until resumed."""
        self._logger.info("Suspending instance '%s'.", instance_id)
        self._call("SuspendInstance", build_suspend_req(instance_id, reason), instance_id=instance_id)

    def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        self._logger.info("Resuming instance '%s'.", instance_id)
        self._call("ResumeInstance", build_resume_req(instance_id, reason), instance_id=instance_id)

    def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Rewind a failed instance: failed work is retried, successful work is kept."""
        self._logger.info("Rewinding instance '%s'.", instance_id)
        self._call("RewindInstance", build_rewind_req(instance_id, reason), instance_id=instance_id)

    def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """Start the instance again with its original input; returns the (possibly new) instance ID."""
        self._logger.info("Restarting instance '%s'.", instance_id)
        req = build_restart_req(instance_id, restart_with_new_instance_id)
        res: pb.RestartInstanceResponse = self._call("RestartInstance", req, instance_id=instance_id)
        return res.instanceId

    def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """Delete an instance's state and history."""
        self._logger.info("Purging instance '%s'.", instance_id)
        res = self._call("PurgeInstances", build_purge_instance_req(instance_id, recursive))
        return new_purge_instances_result(res)

    def purge_orchestrations_by(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: list[OrchestrationStatus] | None = None,
        recursive: bool = False,
        timeout: timedelta | None = None,
    ) -> PurgeInstancesResult:
        """Delete every instance matching the filter."""
        self._logger.info("Purging instances created in [%s, %s] with status %s.",
                          created_time_from, created_time_to, runtime_status)
        req = build_purge_by_filter_req(created_time_from, created_time_to, runtime_status, recursive, timeout)
        return new_purge_instances_result(self._call("PurgeInstances", req))

    # ------------------------------------------------------------ entities

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed until ``signal_time``."""
        self._logger.info("Signaling entity '%s' operation '%s'.", entity_instance_id, operation_name)
        req = build_signal_entity_req(entity_instance_id, operation_name, input, signal_time, self._data_converter)
        self._call("SignalEntity", req)

    def get_entity(self, entity_instance_id: EntityInstanceId, include_state: bool = True) -> EntityMetadata | None:
        """An entity's metadata (and state), or None when it does not exist."""
        self._logger.info("Getting entity '%s'.", entity_instance_id)
        res: pb.GetEntityResponse = self._call("GetEntity", build_get_entity_req(entity_instance_id, include_state))
        if not res.exists:
            return None
        return entity_metadata_from_pb(res.entity, include_state, self._data_converter)  # type: ignore[no-any-return]

    def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """Every entity matching the query, following continuation tokens."""
        query = entity_query or EntityQuery()
        self._logger.info("Querying entities with query: %s", query)
        entities: list[EntityMetadata] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            resp: pb.QueryEntitiesResponse = self._call("QueryEntities", build_query_entities_req(query, token))
            entities.extend(entity_metadata_from_pb(e, query.include_state, self._data_converter)
                            for e in resp.entities)
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return entities
            token = next_token

    def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Remove empty entities and release locks held by finished orchestrations."""
        self._logger.info("Cleaning entity storage.")
        removed = released = 0
        token: wrappers_pb2.StringValue | None = None
        while True:
            req = build_clean_entity_storage_req(remove_empty_entities, release_orphaned_locks, token)
            resp: pb.CleanEntityStorageResponse = self._call("CleanEntityStorage", req)
            removed += resp.emptyEntitiesRemoved
            released += resp.orphanedLocksReleased
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return CleanEntityStorageResult(removed, released)
            token = next_token


def __getattr__(name: str) -> Any:
    # Resolved on first access to avoid import cycles (these modules import this one).
    if name == "AsyncTaskHubGrpcClient":
        from durabletask.internal.async_client import AsyncTaskHubGrpcClient

        return AsyncTaskHubGrpcClient
    if name in ("EntityInstanceId", "EntityMetadata"):
        from durabletask import entities

        return getattr(entities, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
