"""``AsyncTaskHubGrpcClient``: the client's methods as coroutines, over a ``grpc.aio`` channel.

The operations are the ones of ``client_core``; this class only awaits their calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
import grpc.aio

from durabletask import task
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.history import HistoryEvent
from durabletask.internal import grpc_channel, payload_rpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.internal.client_core import (
    RETIRED_CHANNEL_GRACE_SECONDS,
    ClientCore,
    ClientOperation,
    RpcCall,
)
from durabletask.internal.client_types import (
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
)
from durabletask.internal.operation_runner import run_operation_async
from durabletask.payload.store import PayloadStore
from durabletask.serialization import DataConverter

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")
T = TypeVar("T")


class AsyncTaskHubGrpcClient(ClientCore):
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
        self._configure(
            host_address=host_address, metadata=metadata, log_handler=log_handler, log_formatter=log_formatter,
            logger=logger, secure_channel=secure_channel, interceptors=interceptors,
            channel_options=channel_options, resiliency_options=resiliency_options,
            default_version=default_version, payload_store=payload_store, data_converter=data_converter,
            emit_trace_spans=emit_trace_spans,
        )
        self._closed = False
        self._last_recreate = float("-inf")
        self._retired: dict[grpc.aio.Channel, asyncio.TimerHandle] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._owns_channel = channel is None
        self._channel: grpc.aio.Channel | None = channel
        self._stub: Any = stubs.TaskHubSidecarServiceStub(channel) if channel is not None else None

    def _new_channel(self) -> grpc.aio.Channel:
        return grpc_channel.new_aio_channel(self._host_address, self._secure_channel, self._interceptors,
                                            self._grpc_options())

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

    async def _run(self, operation: ClientOperation[T]) -> T:
        return await run_operation_async(operation, self._send)

    async def _send(self, call: RpcCall) -> Any:
        stub = self._get_stub()
        method, request = call.method, call.request
        if not call.streaming:
            await payload_rpc.prepare_request_async(method, request, self._payload_store)
        try:
            if call.streaming:
                stream = getattr(stub, method)(request, metadata=self._call_metadata(call))
                response: Any = [item async for item in stream]
            else:
                response = await getattr(stub, method)(request, timeout=call.timeout,
                                                       metadata=self._call_metadata(call))
        except grpc.RpcError as error:
            named = self._failed(call, error)
            if named is error:
                raise
            raise named from error
        self._failures.record_success()
        for message in response if call.streaming else [response]:
            await payload_rpc.resolve_response_async(method, message, self._payload_store)
        return response

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
        return await self._run(self._schedule_new_orchestration(
            orchestrator, input, instance_id, start_at, reuse_id_policy, tags, version))

    async def get_orchestration_state(
        self, instance_id: str, *, fetch_payloads: bool = True
    ) -> OrchestrationState | None:
        """The instance's current state, or None when it does not exist."""
        return await self._run(self._get_orchestration_state(instance_id, fetch_payloads))

    async def get_orchestration_history(
        self, instance_id: str, *, execution_id: str | None = None, for_work_item_processing: bool = False
    ) -> list[HistoryEvent]:
        """The instance's history events, oldest first."""
        return await self._run(self._get_orchestration_history(instance_id, execution_id, for_work_item_processing))

    async def list_instance_ids(
        self,
        runtime_status: list[OrchestrationStatus] | None = None,
        completed_time_from: datetime | None = None,
        completed_time_to: datetime | None = None,
        page_size: int | None = None,
        continuation_token: str | None = None,
    ) -> Page[str]:
        """One page of IDs of instances in a terminal state matching the filters."""
        return await self._run(self._list_instance_ids(
            runtime_status, completed_time_from, completed_time_to, page_size, continuation_token))

    async def get_all_orchestration_states(
        self, orchestration_query: OrchestrationQuery | None = None
    ) -> list[OrchestrationState]:
        """Every instance matching the query, following continuation tokens."""
        return await self._run(self._get_all_orchestration_states(orchestration_query))

    async def wait_for_orchestration_start(
        self, instance_id: str, *, fetch_payloads: bool = False, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance leaves PENDING; raises TimeoutError after ``timeout`` seconds."""
        return await self._run(self._wait_for_orchestration_start(instance_id, fetch_payloads, timeout))

    async def wait_for_orchestration_completion(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance finishes; raises TimeoutError after ``timeout`` seconds."""
        return await self._run(self._wait_for_orchestration_completion(instance_id, fetch_payloads, timeout))

    async def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any | None = None
    ) -> None:
        """Send an external event to an instance."""
        await self._run(self._raise_orchestration_event(instance_id, event_name, data))

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any | None = None, recursive: bool = True
    ) -> None:
        """Terminate an instance (and, when recursive, its sub-orchestrations)."""
        await self._run(self._terminate_orchestration(instance_id, output, recursive))

    async def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Suspend an instance: it gets no turns until resumed."""
        await self._run(self._suspend_orchestration(instance_id, reason))

    async def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        await self._run(self._resume_orchestration(instance_id, reason))

    async def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Rewind a failed instance: failed work is retried, successful work is kept."""
        await self._run(self._rewind_orchestration(instance_id, reason))

    async def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """Start the instance again with its original input; returns the (possibly new) instance ID."""
        return await self._run(self._restart_orchestration(instance_id, restart_with_new_instance_id))

    async def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """Delete an instance's state and history."""
        return await self._run(self._purge_orchestration(instance_id, recursive))

    async def purge_orchestrations_by(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: list[OrchestrationStatus] | None = None,
        recursive: bool = False,
        timeout: timedelta | None = None,
    ) -> PurgeInstancesResult:
        """Delete every instance matching the filter."""
        return await self._run(self._purge_orchestrations_by(
            created_time_from, created_time_to, runtime_status, recursive, timeout))

    # ------------------------------------------------------------ entities

    async def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed until ``signal_time``."""
        await self._run(self._signal_entity(entity_instance_id, operation_name, input, signal_time))

    async def get_entity(
        self, entity_instance_id: EntityInstanceId, include_state: bool = True
    ) -> EntityMetadata | None:
        """An entity's metadata (and state), or None when it does not exist."""
        return await self._run(self._get_entity(entity_instance_id, include_state))

    async def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """Every entity matching the query, following continuation tokens."""
        return await self._run(self._get_all_entities(entity_query))

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Remove empty entities and release locks held by finished orchestrations."""
        return await self._run(self._clean_entity_storage(remove_empty_entities, release_orphaned_locks))
