"""The client: start, query, signal and manage orchestration instances through the sidecar.

``TaskHubGrpcClient`` is synchronous; ``AsyncTaskHubGrpcClient`` (same methods, ``async def``)
lives in ``durabletask.internal.async_client`` and is importable from here. Both send the
calls of the operations written once in ``durabletask.internal.client_core``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any, TypeVar

import grpc

from durabletask import task
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.history import HistoryEvent
from durabletask.internal import grpc_channel, payload_rpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.internal.async_client import AsyncTaskHubGrpcClient
from durabletask.internal.client_core import (
    RETIRED_CHANNEL_GRACE_SECONDS,
    ClientCore,
    ClientOperation,
    RpcCall,
)
from durabletask.internal.client_requests import (
    FailureTracker,
    build_purge_by_filter_req,
    build_query_entities_req,
    build_query_instances_req,
    build_raise_event_req,
    build_schedule_new_orchestration_req,
    build_signal_entity_req,
    build_terminate_req,
    check_continuation_token,
    log_completion_state,
)
from durabletask.internal.client_responses import (
    new_orchestration_state,
    new_purge_instances_result,
    parse_orchestration_state,
)
from durabletask.internal.client_types import (
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationFailedError,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
)
from durabletask.internal.operation_runner import run_operation
from durabletask.payload.store import PayloadStore
from durabletask.serialization import DataConverter, JsonDataConverter

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


class TaskHubGrpcClient(ClientCore):
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
        self._configure(
            host_address=host_address, metadata=metadata, log_handler=log_handler, log_formatter=log_formatter,
            logger=logger, secure_channel=secure_channel, interceptors=interceptors,
            channel_options=channel_options, resiliency_options=resiliency_options,
            default_version=default_version, payload_store=payload_store, data_converter=data_converter,
            emit_trace_spans=emit_trace_spans,
        )
        self._lock = threading.Lock()
        self._closed = False
        self._last_recreate = float("-inf")
        self._retired: dict[grpc.Channel, threading.Timer] = {}
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else self._new_channel()
        self._stub = stubs.TaskHubSidecarServiceStub(self._channel)

    def _new_channel(self) -> grpc.Channel:
        return grpc_channel.new_channel(self._host_address, self._secure_channel, self._interceptors,
                                        self._grpc_options())

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

    def _run(self, operation: ClientOperation[T]) -> T:
        return run_operation(operation, self._send)

    def _send(self, call: RpcCall) -> Any:
        method, request = call.method, call.request
        if not call.streaming:
            payload_rpc.prepare_request(method, request, self._payload_store)
        try:
            if call.streaming:
                response = list(getattr(self._stub, method)(request, metadata=self._call_metadata(call)))
            else:
                response = getattr(self._stub, method)(request, timeout=call.timeout,
                                                       metadata=self._call_metadata(call))
        except grpc.RpcError as error:
            named = self._failed(call, error)
            if named is error:
                raise
            raise named from error
        self._failures.record_success()
        for message in response if call.streaming else [response]:
            payload_rpc.resolve_response(method, message, self._payload_store)
        return response

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
        return self._run(self._schedule_new_orchestration(
            orchestrator, input, instance_id, start_at, reuse_id_policy, tags, version))

    def get_orchestration_state(self, instance_id: str, *, fetch_payloads: bool = True) -> OrchestrationState | None:
        """The instance's current state, or None when it does not exist."""
        return self._run(self._get_orchestration_state(instance_id, fetch_payloads))

    def get_orchestration_history(
        self, instance_id: str, *, execution_id: str | None = None, for_work_item_processing: bool = False
    ) -> list[HistoryEvent]:
        """The instance's history events, oldest first."""
        return self._run(self._get_orchestration_history(instance_id, execution_id, for_work_item_processing))

    def list_instance_ids(
        self,
        runtime_status: list[OrchestrationStatus] | None = None,
        completed_time_from: datetime | None = None,
        completed_time_to: datetime | None = None,
        page_size: int | None = None,
        continuation_token: str | None = None,
    ) -> Page[str]:
        """One page of IDs of instances in a terminal state matching the filters."""
        return self._run(self._list_instance_ids(
            runtime_status, completed_time_from, completed_time_to, page_size, continuation_token))

    def get_all_orchestration_states(
        self, orchestration_query: OrchestrationQuery | None = None
    ) -> list[OrchestrationState]:
        """Every instance matching the query, following continuation tokens."""
        return self._run(self._get_all_orchestration_states(orchestration_query))

    def get_orchestration_state_page(
        self, orchestration_query: OrchestrationQuery | None = None, continuation_token: str | None = None
    ) -> Page[OrchestrationState]:
        """One page of instances matching the query (beyond the official SDK).

        ``max_instance_count`` is the page size; pass the returned ``continuation_token`` back
        for the next page (None: this was the last).
        """
        return self._run(self._get_orchestration_state_page(orchestration_query, continuation_token))

    def wait_for_orchestration_start(
        self, instance_id: str, *, fetch_payloads: bool = False, timeout: float = 60
    ) -> OrchestrationState | None:
        """Block until the instance leaves PENDING; raises TimeoutError after ``timeout`` seconds."""
        return self._run(self._wait_for_orchestration_start(instance_id, fetch_payloads, timeout))

    def wait_for_orchestration_completion(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout: float = 60
    ) -> OrchestrationState | None:
        """Block until the instance finishes; raises TimeoutError after ``timeout`` seconds."""
        return self._run(self._wait_for_orchestration_completion(instance_id, fetch_payloads, timeout))

    def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        """Send an external event to an instance."""
        self._run(self._raise_orchestration_event(instance_id, event_name, data))

    def terminate_orchestration(self, instance_id: str, *, output: Any | None = None, recursive: bool = True) -> None:
        """Terminate an instance (and, when recursive, its sub-orchestrations)."""
        self._run(self._terminate_orchestration(instance_id, output, recursive))

    def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Suspend an instance: it gets no turns until resumed."""
        self._run(self._suspend_orchestration(instance_id, reason))

    def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        self._run(self._resume_orchestration(instance_id, reason))

    def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Rewind a failed instance: failed work is retried, successful work is kept."""
        self._run(self._rewind_orchestration(instance_id, reason))

    def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """Start the instance again with its original input; returns the (possibly new) instance ID."""
        return self._run(self._restart_orchestration(instance_id, restart_with_new_instance_id))

    def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """Delete an instance's state and history."""
        return self._run(self._purge_orchestration(instance_id, recursive))

    def purge_orchestrations_by(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: list[OrchestrationStatus] | None = None,
        recursive: bool = False,
        timeout: timedelta | None = None,
    ) -> PurgeInstancesResult:
        """Delete every instance matching the filter."""
        return self._run(self._purge_orchestrations_by(
            created_time_from, created_time_to, runtime_status, recursive, timeout))

    # ------------------------------------------------------------ entities

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed until ``signal_time``."""
        self._run(self._signal_entity(entity_instance_id, operation_name, input, signal_time))

    def get_entity(self, entity_instance_id: EntityInstanceId, include_state: bool = True) -> EntityMetadata | None:
        """An entity's metadata (and state), or None when it does not exist."""
        return self._run(self._get_entity(entity_instance_id, include_state))

    def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """Every entity matching the query, following continuation tokens."""
        return self._run(self._get_all_entities(entity_query))

    def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Remove empty entities and release locks held by finished orchestrations."""
        return self._run(self._clean_entity_storage(remove_empty_entities, release_orphaned_locks))


# Helpers that were importable from this module before the client was split; still found here.
_MOVED_HELPERS: dict[str, str] = {
    "build_clean_entity_storage_req": "durabletask.internal.client_requests",
    "build_get_entity_req": "durabletask.internal.client_requests",
    "build_history_req": "durabletask.internal.client_requests",
    "build_list_instance_ids_req": "durabletask.internal.client_requests",
    "build_purge_instance_req": "durabletask.internal.client_requests",
    "build_restart_req": "durabletask.internal.client_requests",
    "build_resume_req": "durabletask.internal.client_requests",
    "build_rewind_req": "durabletask.internal.client_requests",
    "build_suspend_req": "durabletask.internal.client_requests",
    "get_client_logger": "durabletask.internal.client_requests",
    "has_failure": "durabletask.internal.client_requests",
    "is_transport_failure": "durabletask.internal.client_requests",
    "name_instance": "durabletask.internal.client_requests",
    "query_versions": "durabletask.internal.client_requests",
    "query_versions_metadata": "durabletask.internal.client_requests",
    "response_token": "durabletask.internal.client_requests",
    "status_code": "durabletask.internal.client_requests",
    "version_matches": "durabletask.internal.client_requests",
    "entity_metadata_from_pb": "durabletask.internal.client_responses",
    "history_from_chunks": "durabletask.internal.client_responses",
    "new_instance_id_page": "durabletask.internal.client_responses",
    "failure_details_from_pb": "durabletask.internal.proto_helpers",
    "default_converter": "durabletask.serialization",
}


def __getattr__(name: str) -> Any:
    module = _MOVED_HELPERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
