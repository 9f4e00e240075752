"""``AsyncTaskHubGrpcClient``: the client's methods as coroutines, over a ``grpc.aio`` channel."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.client import (
    RETIRED_CHANNEL_GRACE_SECONDS,
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
    entity_metadata_from_pb,
    history_from_chunks,
    new_instance_id_page,
    new_orchestration_state,
    new_purge_instances_result,
    parse_orchestration_state,
)
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
    is_transport_failure,
    log_completion_state,
    name_instance,
    query_versions,
    query_versions_metadata,
    response_token,
    status_code,
    version_matches,
)
from durabletask.payload.store import PayloadStore
from durabletask.serialization import DataConverter, default_converter

if TYPE_CHECKING:
    from durabletask.entities import EntityInstanceId, EntityMetadata
    from durabletask.history import HistoryEvent

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")


class AsyncTaskHubGrpcClient:
    """Asyncio client for a Durable Task sidecar; the channel is opened on first use."""

    def __init__(
        self,
        *,
        host_address: str | None = None,
        metadata: list[tuple[str, str]] | None = None,
        log_handler: logging.Handler | None = None,
        log_formatter: logging.Formatter | None = None,
        logger: logging.Logger | None = None,
        channel: grpc.aio.Channel | None = None,
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
        self._closed = False
        self._last_recreate = float("-inf")
        self._retired: dict[grpc.aio.Channel, asyncio.TimerHandle] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._owns_channel = channel is None
        self._channel: grpc.aio.Channel | None = channel
        self._stub: Any = stubs.TaskHubSidecarServiceStub(channel) if channel is not None else None

    @property
    def emit_trace_spans(self) -> bool:
        """Whether lifecycle trace spans were requested (accepted for compatibility)."""
        return self._emit_trace_spans

    def _new_channel(self) -> grpc.aio.Channel:
        options = self._channel_options.to_grpc_options() if self._channel_options else None
        return grpc_channel.new_aio_channel(self._host_address, self._secure_channel, self._interceptors, options)

    def _get_stub(self) -> Any:
        """The stub, opening the channel on the running event loop the first time."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._stub is None:
            self._channel = self._new_channel()
            self._stub = stubs.TaskHubSidecarServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel this client created (a channel passed in is left to its owner)."""
        if self._closed:
            return
        self._closed = True
        retired = list(self._retired.items())
        self._retired.clear()
        for old, handle in retired:
            handle.cancel()
            await old.close()
        if self._closing_tasks:
            await asyncio.gather(*self._closing_tasks, return_exceptions=True)
        if self._owns_channel and self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncTaskHubGrpcClient:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()

    # ------------------------------------------------------------ transport

    async def _call(self, method: str, request: Any, *, timeout: float | None = None,
                    instance_id: str | None = None, extra_metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        stub = self._get_stub()
        metadata = (*(self._metadata or ()), *extra_metadata) or None
        await payload_rpc.prepare_request_async(method, request, self._payload_store)
        try:
            response = await getattr(stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            self._record_failure(method, error)
            named = name_instance(error, method, instance_id)
            if named is error:
                raise
            raise named from error
        self._failures.record_success()
        await payload_rpc.resolve_response_async(method, response, self._payload_store)
        return response

    async def _call_stream(self, method: str, request: Any) -> list[Any]:
        stub = self._get_stub()
        try:
            items = [item async for item in getattr(stub, method)(request, metadata=self._metadata)]
        except grpc.RpcError as error:
            self._record_failure(method, error)
            raise
        self._failures.record_success()
        for item in items:
            await payload_rpc.resolve_response_async(method, item, self._payload_store)
        return items

    def _record_failure(self, method: str, error: grpc.RpcError) -> None:
        if not is_transport_failure(method, status_code(error)):
            self._failures.record_success()
        elif self._failures.record_failure():
            self._recreate_channel()

    def _recreate_channel(self) -> None:
        """Swap in a fresh channel; the old one closes after a grace period."""
        now = time.monotonic()
        if not self._owns_channel or self._closed or self._channel is None:
            return
        if now - self._last_recreate < self._resiliency.min_recreate_interval_seconds:
            return
        old = self._channel
        self._channel = self._new_channel()
        self._stub = stubs.TaskHubSidecarServiceStub(self._channel)
        self._last_recreate = now
        self._failures.record_success()
        loop = asyncio.get_running_loop()
        self._retired[old] = loop.call_later(RETIRED_CHANNEL_GRACE_SECONDS, self._close_retired, old)
        self._logger.warning("Recreated the gRPC channel to %s after repeated transport failures.",
                             self._host_address)

    def _close_retired(self, channel: grpc.aio.Channel) -> None:
        if self._retired.pop(channel, None) is None:
            return
        closing = asyncio.ensure_future(channel.close())
        self._closing_tasks.add(closing)
        closing.add_done_callback(self._closing_tasks.discard)

    # ------------------------------------------------------------ orchestrations

    async def schedule_new_orchestration(
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
            res: pb.CreateInstanceResponse = await self._call("StartInstance", req)
        return res.instanceId or req.instanceId

    async def get_orchestration_state(
        self, instance_id: str, *, fetch_payloads: bool = True
    ) -> OrchestrationState | None:
        """The instance's current state, or None when it does not exist."""
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = await self._call("GetInstance", req)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    async def get_orchestration_history(
        self, instance_id: str, *, execution_id: str | None = None, for_work_item_processing: bool = False
    ) -> list[HistoryEvent]:
        """The instance's history events, oldest first."""
        self._logger.info("Retrieving history for instance '%s'.", instance_id)
        req = build_history_req(instance_id, execution_id, for_work_item_processing)
        return history_from_chunks(await self._call_stream("StreamInstanceHistory", req))

    async def list_instance_ids(
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
        return new_instance_id_page(await self._call("ListInstanceIds", req))

    async def get_all_orchestration_states(
        self, orchestration_query: OrchestrationQuery | None = None
    ) -> list[OrchestrationState]:
        """Every instance matching the query, following continuation tokens."""
        query = orchestration_query or OrchestrationQuery()
        self._logger.info("Querying orchestration instances with query: %s", query)
        versions = query_versions(query)
        states: list[OrchestrationState] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            resp: pb.QueryInstancesResponse = await self._call(
                "QueryInstances", build_query_instances_req(query, token),
                extra_metadata=query_versions_metadata(versions),
            )
            page = (parse_orchestration_state(s, self._data_converter) for s in resp.orchestrationState)
            states.extend(s for s in page if version_matches(s, versions))
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return states
            token = next_token

    async def wait_for_orchestration_start(
        self, instance_id: str, *, fetch_payloads: bool = False, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance leaves PENDING; raises TimeoutError after ``timeout`` seconds."""
        self._logger.info("Waiting up to %ss for instance '%s' to start.", timeout, instance_id)
        return await self._wait("WaitForInstanceStart", instance_id, fetch_payloads, timeout, "start")

    async def wait_for_orchestration_completion(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance finishes; raises TimeoutError after ``timeout`` seconds."""
        self._logger.info("Waiting up to %ss for instance '%s' to complete.", timeout, instance_id)
        state = await self._wait("WaitForInstanceCompletion", instance_id, fetch_payloads, timeout, "complete")
        log_completion_state(self._logger, instance_id, state)
        return state

    async def _wait(self, method: str, instance_id: str, fetch_payloads: bool, timeout: float,
                    what: str) -> OrchestrationState | None:
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = await self._call(method, req, timeout=timeout)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(
                    f"Timed out after {timeout}s waiting for instance '{instance_id}' to {what}"
                ) from None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    async def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any | None = None
    ) -> None:
        """Send an external event to an instance."""
        self._logger.info("Raising event '%s' for instance '%s'.", event_name, instance_id)
        req = build_raise_event_req(instance_id, event_name, data, self._data_converter)
        with tracing.raising_event(event_name, instance_id, self._emit_trace_spans):
            await self._call("RaiseEvent", req, instance_id=instance_id)

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any | None = None, recursive: bool = True
    ) -> None:
        """Terminate an instance (and, when recursive, its sub-orchestrations)."""
        self._logger.info("Terminating instance '%s'.", instance_id)
        req = build_terminate_req(instance_id, output, recursive, self._data_converter)
        await self._call("TerminateInstance", req, instance_id=instance_id)

    async def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Suspend an instance: it gets no turns until resumed."""
        self._logger.info("Suspending instance '%s'.", instance_id)
        await self._call("SuspendInstance", build_suspend_req(instance_id, reason), instance_id=instance_id)

    async def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        self._logger.info("Resuming instance '%s'.", instance_id)
        await self._call("ResumeInstance", build_resume_req(instance_id, reason), instance_id=instance_id)

    async def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Rewind a failed instance: failed work is retried, successful work is kept."""
        self._logger.info("Rewinding instance '%s'.", instance_id)
        await self._call("RewindInstance", build_rewind_req(instance_id, reason), instance_id=instance_id)

    async def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """Start the instance again with its original input; returns the (possibly new) instance ID."""
        self._logger.info("Restarting instance '%s'.", instance_id)
        req = build_restart_req(instance_id, restart_with_new_instance_id)
        res: pb.RestartInstanceResponse = await self._call("RestartInstance", req, instance_id=instance_id)
        return res.instanceId

    async def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """Delete an instance's state and history."""
        self._logger.info("Purging instance '%s'.", instance_id)
        res = await self._call("PurgeInstances", build_purge_instance_req(instance_id, recursive))
        return new_purge_instances_result(res)

    async def purge_orchestrations_by(
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
        return new_purge_instances_result(await self._call("PurgeInstances", req))

    # ------------------------------------------------------------ entities

    async def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed until ``signal_time``."""
        self._logger.info("Signaling entity '%s' operation '%s'.", entity_instance_id, operation_name)
        req = build_signal_entity_req(entity_instance_id, operation_name, input, signal_time, self._data_converter)
        await self._call("SignalEntity", req)

    async def get_entity(
        self, entity_instance_id: EntityInstanceId, include_state: bool = True
    ) -> EntityMetadata | None:
        """An entity's metadata (and state), or None when it does not exist."""
        self._logger.info("Getting entity '%s'.", entity_instance_id)
        req = build_get_entity_req(entity_instance_id, include_state)
        res: pb.GetEntityResponse = await self._call("GetEntity", req)
        if not res.exists:
            return None
        return entity_metadata_from_pb(res.entity, include_state, self._data_converter)  # type: ignore[no-any-return]

    async def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """Every entity matching the query, following continuation tokens."""
        query = entity_query or EntityQuery()
        self._logger.info("Querying entities with query: %s", query)
        entities: list[EntityMetadata] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            resp: pb.QueryEntitiesResponse = await self._call(
                "QueryEntities", build_query_entities_req(query, token)
            )
            entities.extend(entity_metadata_from_pb(e, query.include_state, self._data_converter)
                            for e in resp.entities)
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return entities
            token = next_token

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Remove empty entities and release locks held by finished orchestrations."""
        self._logger.info("Cleaning entity storage.")
        removed = released = 0
        token: wrappers_pb2.StringValue | None = None
        while True:
            req = build_clean_entity_storage_req(remove_empty_entities, release_orphaned_locks, token)
            resp: pb.CleanEntityStorageResponse = await self._call("CleanEntityStorage", req)
            removed += resp.emptyEntitiesRemoved
            released += resp.orphanedLocksReleased
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return CleanEntityStorageResult(removed, released)
            token = next_token
