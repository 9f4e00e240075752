"""What the sync and async clients share: their settings, failure accounting, and every operation.

Each operation is written once here as a generator that yields the RPCs it needs
(``RpcCall``) and gets their responses back (see ``operation_runner``): requests are built,
pages followed, errors interpreted and log lines written in one place. ``TaskHubGrpcClient``
and ``AsyncTaskHubGrpcClient`` only send the calls, blocking or awaiting.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.history import HistoryEvent
from durabletask.internal import grpc_channel, tracing
from durabletask.internal import orchestrator_service_pb2 as pb
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
from durabletask.internal.client_responses import (
    entity_metadata_from_pb,
    history_from_chunks,
    new_instance_id_page,
    new_orchestration_state,
    new_purge_instances_result,
    parse_orchestration_state,
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
from durabletask.payload.store import PayloadStore
from durabletask.serialization import DataConverter, default_converter

T = TypeVar("T")

# How long a replaced channel stays open so calls already running on it can finish.
RETIRED_CHANNEL_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class RpcCall:
    """One call an operation needs sent: a unary RPC, or a server stream read to its end."""

    method: str
    request: Any
    timeout: float | None = None
    instance_id: str | None = None
    extra_metadata: tuple[tuple[str, str], ...] = ()
    streaming: bool = False


ClientOperation: TypeAlias = Generator[RpcCall, Any, T]


class ClientCore:
    """Settings, failure accounting and the operations of a client; subclasses send the calls."""

    _logger: logging.Logger
    _data_converter: DataConverter
    _host_address: str
    _secure_channel: bool
    _interceptors: list[Any] | None
    _channel_options: GrpcChannelOptions | None
    _metadata: tuple[tuple[str, str], ...] | None
    _resiliency: GrpcClientResiliencyOptions
    _failures: FailureTracker
    _emit_trace_spans: bool
    _payload_store: PayloadStore | None
    default_version: str | None

    def _configure(
        self,
        *,
        host_address: str | None,
        metadata: list[tuple[str, str]] | None,
        log_handler: logging.Handler | None,
        log_formatter: logging.Formatter | None,
        logger: logging.Logger | None,
        secure_channel: bool,
        interceptors: Sequence[Any] | None,
        channel_options: GrpcChannelOptions | None,
        resiliency_options: GrpcClientResiliencyOptions | None,
        default_version: str | None,
        payload_store: PayloadStore | None,
        data_converter: DataConverter | None,
        emit_trace_spans: bool,
    ) -> None:
        """Take the constructor options both clients have."""
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

    @property
    def emit_trace_spans(self) -> bool:
        """Whether lifecycle trace spans were requested (accepted for compatibility)."""
        return self._emit_trace_spans

    def _grpc_options(self) -> list[tuple[str, Any]] | None:
        return self._channel_options.to_grpc_options() if self._channel_options else None

    # ------------------------------------------------------------ transport bookkeeping

    def _call_metadata(self, call: RpcCall) -> tuple[tuple[str, str], ...] | None:
        return (*(self._metadata or ()), *call.extra_metadata) or None

    def _failed(self, call: RpcCall, error: grpc.RpcError) -> grpc.RpcError:
        """Count a failed call; the error to raise (NOT_FOUND of a per-instance call names the instance)."""
        self._record_failure(call.method, error)
        return name_instance(error, call.method, call.instance_id)

    def _record_failure(self, method: str, error: grpc.RpcError) -> None:
        if not is_transport_failure(method, status_code(error)):
            self._failures.record_success()
        elif self._failures.record_failure():
            self._recreate_channel()

    def _recreate_channel(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ orchestrations

    def _schedule_new_orchestration(
        self,
        orchestrator: task.Orchestrator[Any, Any] | str,
        input: Any | None,
        instance_id: str | None,
        start_at: datetime | None,
        reuse_id_policy: pb.OrchestrationIdReusePolicy | None,
        tags: dict[str, str] | None,
        version: str | None,
    ) -> ClientOperation[str]:
        req = build_schedule_new_orchestration_req(
            orchestrator, input=input, instance_id=instance_id, start_at=start_at,
            reuse_id_policy=reuse_id_policy, tags=tags, version=version or self.default_version,
            data_converter=self._data_converter,
        )
        self._logger.info("Starting new '%s' instance with ID = '%s'.", req.name, req.instanceId)
        with tracing.creating_orchestration(req, self._emit_trace_spans):
            res: pb.CreateInstanceResponse = yield RpcCall("StartInstance", req)
        return res.instanceId or req.instanceId

    def _get_orchestration_state(
        self, instance_id: str, fetch_payloads: bool
    ) -> ClientOperation[OrchestrationState | None]:
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = yield RpcCall("GetInstance", req)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    def _get_orchestration_history(
        self, instance_id: str, execution_id: str | None, for_work_item_processing: bool
    ) -> ClientOperation[list[HistoryEvent]]:
        self._logger.info("Retrieving history for instance '%s'.", instance_id)
        req = build_history_req(instance_id, execution_id, for_work_item_processing)
        chunks: list[pb.HistoryChunk] = yield RpcCall("StreamInstanceHistory", req, streaming=True)
        return history_from_chunks(chunks)

    def _list_instance_ids(
        self,
        runtime_status: list[OrchestrationStatus] | None,
        completed_time_from: datetime | None,
        completed_time_to: datetime | None,
        page_size: int | None,
        continuation_token: str | None,
    ) -> ClientOperation[Page[str]]:
        req = build_list_instance_ids_req(
            runtime_status, completed_time_from, completed_time_to, page_size, continuation_token
        )
        return new_instance_id_page((yield RpcCall("ListInstanceIds", req)))

    def _query_instances_page(
        self, query: OrchestrationQuery, versions: list[str] | None, token: wrappers_pb2.StringValue | None
    ) -> ClientOperation[tuple[list[OrchestrationState], wrappers_pb2.StringValue | None]]:
        """One QueryInstances page: the states passing the version filter, and the next token."""
        resp: pb.QueryInstancesResponse = yield RpcCall(
            "QueryInstances", build_query_instances_req(query, token),
            extra_metadata=query_versions_metadata(versions),
        )
        page = (parse_orchestration_state(s, self._data_converter) for s in resp.orchestrationState)
        return [s for s in page if version_matches(s, versions)], response_token(resp)

    def _get_all_orchestration_states(
        self, orchestration_query: OrchestrationQuery | None
    ) -> ClientOperation[list[OrchestrationState]]:
        query = orchestration_query or OrchestrationQuery()
        self._logger.info("Querying orchestration instances with query: %s", query)
        versions = query_versions(query)
        states: list[OrchestrationState] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            found, next_token = yield from self._query_instances_page(query, versions, token)
            states.extend(found)
            if not check_continuation_token(next_token, token, self._logger):
                return states
            token = next_token

    def _get_orchestration_state_page(
        self, orchestration_query: OrchestrationQuery | None, continuation_token: str | None
    ) -> ClientOperation[Page[OrchestrationState]]:
        query = orchestration_query or OrchestrationQuery()
        token = wrappers_pb2.StringValue(value=continuation_token) if continuation_token else None
        found, next_token = yield from self._query_instances_page(query, query_versions(query), token)
        return Page(items=found,
                    continuation_token=next_token.value if next_token is not None and next_token.value else None)

    def _wait_for_orchestration_start(
        self, instance_id: str, fetch_payloads: bool, timeout: float
    ) -> ClientOperation[OrchestrationState | None]:
        self._logger.info("Waiting up to %ss for instance '%s' to start.", timeout, instance_id)
        return (yield from self._wait("WaitForInstanceStart", instance_id, fetch_payloads, timeout, "start"))

    def _wait_for_orchestration_completion(
        self, instance_id: str, fetch_payloads: bool, timeout: float
    ) -> ClientOperation[OrchestrationState | None]:
        self._logger.info("Waiting up to %ss for instance '%s' to complete.", timeout, instance_id)
        state = yield from self._wait("WaitForInstanceCompletion", instance_id, fetch_payloads, timeout, "complete")
        log_completion_state(self._logger, instance_id, state)
        return state

    def _wait(self, method: str, instance_id: str, fetch_payloads: bool, timeout: float,
              what: str) -> ClientOperation[OrchestrationState | None]:
        req = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
        try:
            res: pb.GetInstanceResponse = yield RpcCall(method, req, timeout=timeout)
        except grpc.RpcError as error:
            if status_code(error) == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(
                    f"Timed out after {timeout}s waiting for instance '{instance_id}' to {what}"
                ) from None
            raise
        return new_orchestration_state(instance_id, res, self._data_converter)

    def _raise_orchestration_event(self, instance_id: str, event_name: str, data: Any | None) -> ClientOperation[None]:
        self._logger.info("Raising event '%s' for instance '%s'.", event_name, instance_id)
        req = build_raise_event_req(instance_id, event_name, data, self._data_converter)
        with tracing.raising_event(event_name, instance_id, self._emit_trace_spans):
            yield RpcCall("RaiseEvent", req, instance_id=instance_id)

    def _terminate_orchestration(self, instance_id: str, output: Any | None, recursive: bool) -> ClientOperation[None]:
        self._logger.info("Terminating instance '%s'.", instance_id)
        req = build_terminate_req(instance_id, output, recursive, self._data_converter)
        yield RpcCall("TerminateInstance", req, instance_id=instance_id)

    def _suspend_orchestration(self, instance_id: str, reason: str | None) -> ClientOperation[None]:
        self._logger.info("Suspending instance '%s'.", instance_id)
        yield RpcCall("SuspendInstance", build_suspend_req(instance_id, reason), instance_id=instance_id)

    def _resume_orchestration(self, instance_id: str, reason: str | None) -> ClientOperation[None]:
        self._logger.info("Resuming instance '%s'.", instance_id)
        yield RpcCall("ResumeInstance", build_resume_req(instance_id, reason), instance_id=instance_id)

    def _rewind_orchestration(self, instance_id: str, reason: str | None) -> ClientOperation[None]:
        self._logger.info("Rewinding instance '%s'.", instance_id)
        yield RpcCall("RewindInstance", build_rewind_req(instance_id, reason), instance_id=instance_id)

    def _restart_orchestration(self, instance_id: str, restart_with_new_instance_id: bool) -> ClientOperation[str]:
        self._logger.info("Restarting instance '%s'.", instance_id)
        req = build_restart_req(instance_id, restart_with_new_instance_id)
        res: pb.RestartInstanceResponse = yield RpcCall("RestartInstance", req, instance_id=instance_id)
        return res.instanceId

    def _purge_orchestration(self, instance_id: str, recursive: bool) -> ClientOperation[PurgeInstancesResult]:
        self._logger.info("Purging instance '%s'.", instance_id)
        res = yield RpcCall("PurgeInstances", build_purge_instance_req(instance_id, recursive))
        return new_purge_instances_result(res)

    def _purge_orchestrations_by(
        self,
        created_time_from: datetime | None,
        created_time_to: datetime | None,
        runtime_status: list[OrchestrationStatus] | None,
        recursive: bool,
        timeout: timedelta | None,
    ) -> ClientOperation[PurgeInstancesResult]:
        self._logger.info("Purging instances created in [%s, %s] with status %s.",
                          created_time_from, created_time_to, runtime_status)
        req = build_purge_by_filter_req(created_time_from, created_time_to, runtime_status, recursive, timeout)
        return new_purge_instances_result((yield RpcCall("PurgeInstances", req)))

    # ------------------------------------------------------------ entities

    def _signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any | None,
        signal_time: datetime | None,
    ) -> ClientOperation[None]:
        self._logger.info("Signaling entity '%s' operation '%s'.", entity_instance_id, operation_name)
        req = build_signal_entity_req(entity_instance_id, operation_name, input, signal_time, self._data_converter)
        tracing.carry_current_context(req)
        yield RpcCall("SignalEntity", req)

    def _get_entity(
        self, entity_instance_id: EntityInstanceId, include_state: bool
    ) -> ClientOperation[EntityMetadata | None]:
        self._logger.info("Getting entity '%s'.", entity_instance_id)
        res: pb.GetEntityResponse = yield RpcCall("GetEntity", build_get_entity_req(entity_instance_id, include_state))
        if not res.exists:
            return None
        return entity_metadata_from_pb(res.entity, include_state, self._data_converter)

    def _get_all_entities(self, entity_query: EntityQuery | None) -> ClientOperation[list[EntityMetadata]]:
        query = entity_query or EntityQuery()
        self._logger.info("Querying entities with query: %s", query)
        entities: list[EntityMetadata] = []
        token: wrappers_pb2.StringValue | None = None
        while True:
            resp: pb.QueryEntitiesResponse = yield RpcCall("QueryEntities", build_query_entities_req(query, token))
            entities.extend(entity_metadata_from_pb(e, query.include_state, self._data_converter)
                            for e in resp.entities)
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return entities
            token = next_token

    def _clean_entity_storage(
        self, remove_empty_entities: bool, release_orphaned_locks: bool
    ) -> ClientOperation[CleanEntityStorageResult]:
        self._logger.info("Cleaning entity storage.")
        removed = released = 0
        token: wrappers_pb2.StringValue | None = None
        while True:
            req = build_clean_entity_storage_req(remove_empty_entities, release_orphaned_locks, token)
            resp: pb.CleanEntityStorageResponse = yield RpcCall("CleanEntityStorage", req)
            removed += resp.emptyEntitiesRemoved
            released += resp.orphanedLocksReleased
            next_token = response_token(resp)
            if not check_continuation_token(next_token, token, self._logger):
                return CleanEntityStorageResult(removed, released)
            token = next_token
