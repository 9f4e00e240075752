"""The sidecar's gRPC transport: the TaskHubSidecarService servicer and the server that hosts it.

The servicer validates requests, calls the store and the dispatcher, and maps errors to
gRPC status codes. Choices where the protocol leaves room:

- A stale or unknown completion token is rejected with NOT_FOUND and changes nothing.
- RaiseEvent to a finished instance succeeds and the event is dropped (as other backends do).
- TerminateInstance of a finished instance is a successful no-op.
- SuspendInstance of a suspended instance and ResumeInstance of a non-suspended one are
  successful no-ops; either on a finished instance is FAILED_PRECONDITION.
- StartInstance with an ID in use: a finished instance is replaced; a live one gives
  ALREADY_EXISTS unless ``orchestrationIdReusePolicy.replaceableStatus`` lists its status.
  Replacing a live instance terminates it first, so a policy that lists a live status
  (RUNNING, PENDING, SUSPENDED) must list TERMINATED too: otherwise INVALID_ARGUMENT, as the
  official backends answer (whatever the instance's status, or if it does not exist).
- RestartInstance under the same ID needs a finished instance (FAILED_PRECONDITION otherwise);
  under a new ID any instance can be restarted and the original is left as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar import engine_events
from sidecar.dashboard import DashboardServer, ssl_context_from_pem
from sidecar.dispatch import Dispatcher, DispatchOptions, utcnow
from sidecar.engine_rewind import rewound_event
from sidecar.group_commit import GroupCommitter
from sidecar.grpc_auth import TokenInterceptor
from sidecar.hub import TaskHub
from sidecar.hub.instances import NewInstance
from sidecar.hub.task_hub import new_events_budget
from sidecar.model import TERMINAL_STATUSES, InstanceSnapshot
from sidecar.notify import InstanceWatcher
from sidecar.quoting import log_text, quoted
from sidecar.security import AccessToken, ServerTls
from sidecar.servicer_entities import EntityServicerMixin
from sidecar.servicer_util import (
    BadRequest,
    RpcFailure,
    check_execution_id,
    check_instance_id,
    check_name,
    check_orchestration_id,
    check_page_size,
    check_statuses,
    check_token,
    check_trace_context,
    check_version,
    check_work_items_request,
    error_status,
    mapped_errors,
    optional_string,
    optional_time,
    query_versions,
    to_state,
)
from sidecar.store import Store, open_store
from sidecar.store.base import (
    DEFAULT_PAGE_SIZE,
    CompletedFilter,
    InstanceFilter,
    InstanceNotFoundError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
)
from sidecar.transport import LoopServer
from sidecar.work_streams import ENVELOPE_BYTES

log = logging.getLogger("durabletask-sidecar")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# Threads running unary RPCs (store calls) at once; streams and long polls need none.
DEFAULT_MAX_WORKERS = 64
HISTORY_CHUNK_SIZE = 100
_PENDING = pb.ORCHESTRATION_STATUS_PENDING


MAX_TERMINATION_BATCH = 1000


LIVE_STATUSES: tuple[int, ...] = (
    pb.ORCHESTRATION_STATUS_RUNNING, pb.ORCHESTRATION_STATUS_PENDING, pb.ORCHESTRATION_STATUS_SUSPENDED,
)


def check_reuse_policy(replaceable: list[int]) -> None:
    """BadRequest when a reuse policy lets a live instance be replaced but not a TERMINATED one.

    Replacing a live instance terminates it, so such a policy contradicts itself.
    """
    live = [engine_events.status_name(s) for s in LIVE_STATUSES if s in replaceable]
    if live and pb.ORCHESTRATION_STATUS_TERMINATED not in replaceable:
        raise BadRequest(
            "orchestrationIdReusePolicy: Invalid reusable statuses: cannot exclude 'Terminated' while also "
            f"allowing reuse of running instances (replaceableStatus lists {', '.join(live)} but not TERMINATED, "
            "and replacing a live instance terminates it)"
        )


class SidecarServicer(EntityServicerMixin, pb_grpc.TaskHubSidecarServiceServicer):
    """Implements every RPC of TaskHubSidecarService on top of the task hub and a dispatcher."""

    def __init__(
        self,
        hub: TaskHub,
        dispatcher: Dispatcher,
        watcher: InstanceWatcher,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.hub = hub
        self.dispatcher = dispatcher
        self.watcher = watcher
        self.clock = clock
        # New instances that arrive together (StartInstance calls from several clients at once) are
        # created in one transaction; each call is answered once the transaction with its instance
        # has committed.
        self._creations: GroupCommitter[NewInstance] = GroupCommitter(
            lambda batch: hub.create_instances(batch),
            lambda one: hub.create_instance(*one),
            shared_failure=lambda exc: isinstance(exc, (StoreUnavailableError, StoreFullError)),
        )

    # --- health and task hub ------------------------------------------------------------------

    def Hello(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    @mapped_errors
    def CreateTaskHub(self, request: pb.CreateTaskHubRequest, context: grpc.ServicerContext) -> Any:
        if request.recreateIfExists:
            self.hub.reset()
        return pb.CreateTaskHubResponse()

    @mapped_errors
    def DeleteTaskHub(self, request: pb.DeleteTaskHubRequest, context: grpc.ServicerContext) -> Any:
        self.hub.reset()
        return pb.DeleteTaskHubResponse()

    # --- instances ------------------------------------------------------------------------------

    @mapped_errors
    def StartInstance(self, request: pb.CreateInstanceRequest, context: grpc.ServicerContext) -> Any:
        check_name(request.name, "name", "the orchestrator to run")
        instance_id = check_orchestration_id(request.instanceId)
        version = check_version(request)
        execution_id = check_execution_id(request) or uuid.uuid4().hex
        now = self.clock()
        start_at = optional_time(request, "scheduledStartTimestamp")
        replaceable = None
        if request.HasField("orchestrationIdReusePolicy") and request.orchestrationIdReusePolicy.replaceableStatus:
            replaceable = check_statuses(
                request.orchestrationIdReusePolicy.replaceableStatus, "orchestrationIdReusePolicy.replaceableStatus"
            )
            check_reuse_policy(replaceable)
        self._create(
            instance_id=instance_id,
            execution_id=execution_id,
            name=request.name,
            version=version,
            input=optional_string(request, "input"),
            tags=dict(request.tags),
            start_at=start_at,
            now=now,
            replaceable=replaceable,
            trace=check_trace_context(request),
        )
        return pb.CreateInstanceResponse(instanceId=instance_id)

    def _create(
        self,
        *,
        instance_id: str,
        execution_id: str,
        name: str,
        version: str | None,
        input: str | None,
        tags: dict[str, str],
        start_at: datetime | None,
        now: datetime,
        replaceable: Any,
        trace: pb.TraceContext | None = None,
    ) -> None:
        instance = InstanceSnapshot(
            instance_id=instance_id,
            execution_id=execution_id,
            name=name,
            status=_PENDING,
            created_at=now,
            last_updated_at=now,
            version=version,
            input=input,
            scheduled_start_at=start_at,
            tags=tags,
        )
        event = engine_events.new_execution_started(
            name=name,
            instance_id=instance_id,
            execution_id=execution_id,
            now=now,
            version=version,
            input=input,
            tags=tags,
            scheduled_start_at=start_at,
            parent_trace_context=trace,
        )
        visible_at = start_at if start_at is not None and start_at > now else now
        self._creations.submit(NewInstance(instance, event, visible_at, now, replaceable))

    @mapped_errors
    def GetInstance(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        inst = self.hub.get_instance(check_instance_id(request.instanceId))
        if inst is None:
            return pb.GetInstanceResponse(exists=False)
        return pb.GetInstanceResponse(exists=True, orchestrationState=to_state(inst, request.getInputsAndOutputs))

    # The long polls: RPC name -> when the wait is over. The asyncio transport serves them with
    # an async wait (see sidecar.transport); these synchronous forms block a thread each.
    # WAIT_STATUSES: the statuses that end each wait (a commit that leaves another wakes no one).
    WAIT_STATUSES: dict[str, Callable[[int], bool]] = {
        "WaitForInstanceStart": lambda status: status != _PENDING,
        "WaitForInstanceCompletion": lambda status: status in TERMINAL_STATUSES,
    }
    WAITS: dict[str, Callable[[InstanceSnapshot], bool]] = {
        "WaitForInstanceStart": lambda inst: inst.status != _PENDING,
        "WaitForInstanceCompletion": lambda inst: inst.status in TERMINAL_STATUSES,
    }

    def _wait(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext, rpc: str) -> pb.GetInstanceResponse:
        # An instance that does not exist yet may be created while we wait (a child about to
        # be started): like the official backends, wait for it rather than answer NOT_FOUND.
        instance_id = check_instance_id(request.instanceId)
        done = self.WAITS[rpc]
        final = self.watcher.wait_for(
            instance_id,
            read=lambda: self.hub.get_instance(instance_id),
            done=lambda inst: inst is not None and done(inst),
            timeout=context.time_remaining(),
            is_active=context.is_active,
        )
        return self.waited(request, final, rpc)

    def waited(self, request: pb.GetInstanceRequest, final: InstanceSnapshot | None, rpc: str) -> pb.GetInstanceResponse:
        """The answer to long poll ``rpc`` whose last read gave ``final``: DEADLINE_EXCEEDED unless it is over."""
        if final is None or not self.WAITS[rpc](final):
            raise RpcFailure(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"timed out waiting for orchestration instance {quoted(request.instanceId)}",
            )
        return pb.GetInstanceResponse(exists=True, orchestrationState=to_state(final, request.getInputsAndOutputs))

    @mapped_errors
    def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        return self._wait(request, context, "WaitForInstanceStart")

    @mapped_errors
    def WaitForInstanceCompletion(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        return self._wait(request, context, "WaitForInstanceCompletion")

    @mapped_errors
    def RaiseEvent(self, request: pb.RaiseEventRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        check_name(request.name, "name", "the event name")
        now = self.clock()
        event = engine_events.new_event(now)
        event.eventRaised.name = request.name
        if request.HasField("input"):
            event.eventRaised.input.CopyFrom(request.input)
        if not self.hub.raise_event(instance_id, event, now):
            log.info("event '%s' for finished instance '%s' dropped", log_text(request.name), log_text(instance_id))
        return pb.RaiseEventResponse()

    @mapped_errors
    def TerminateInstance(self, request: pb.TerminateRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        output = optional_string(request, "output")
        self.hub.terminate_instance(instance_id, output, request.recursive, self.clock())
        return pb.TerminateResponse()

    @mapped_errors
    def SuspendInstance(self, request: pb.SuspendRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        now = self.clock()
        event = engine_events.new_event(now)
        event.executionSuspended.SetInParent()
        if request.HasField("reason"):
            event.executionSuspended.input.CopyFrom(request.reason)
        self.hub.suspend_instance(instance_id, event, now)
        return pb.SuspendResponse()

    @mapped_errors
    def ResumeInstance(self, request: pb.ResumeRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        now = self.clock()
        event = engine_events.new_event(now)
        event.executionResumed.SetInParent()
        if request.HasField("reason"):
            event.executionResumed.input.CopyFrom(request.reason)
        self.hub.resume_instance(instance_id, event, now)
        return pb.ResumeResponse()

    @mapped_errors
    def RestartInstance(self, request: pb.RestartInstanceRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        inst = self.hub.get_instance(instance_id)
        if inst is None:
            raise InstanceNotFoundError(instance_id)
        # Under a new ID the original is left as it is, so only a same-ID restart waits for the end.
        if not inst.is_terminal and not request.restartWithNewInstanceId:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"cannot restart orchestration instance '{instance_id}' under the same ID: it has not "
                f"finished (status {engine_events.status_name(inst.status)}); restart it with a new "
                "instance ID, or wait for it to finish",
            )
        new_id = uuid.uuid4().hex if request.restartWithNewInstanceId else instance_id
        self._create(
            instance_id=new_id,
            execution_id=uuid.uuid4().hex,
            name=inst.name,
            version=inst.version,
            input=inst.input,
            tags=dict(inst.tags),
            start_at=None,
            now=self.clock(),
            replaceable=TERMINAL_STATUSES,
        )
        return pb.RestartInstanceResponse(instanceId=new_id)

    @mapped_errors
    def QueryInstances(self, request: pb.QueryInstancesRequest, context: grpc.ServicerContext) -> Any:
        q = request.query
        query = InstanceFilter(
            statuses=check_statuses(q.runtimeStatus, "query.runtimeStatus"),
            created_from=optional_time(q, "createdTimeFrom"),
            created_to=optional_time(q, "createdTimeTo"),
            instance_id_prefix=optional_string(q, "instanceIdPrefix"),
            versions=query_versions(context.invocation_metadata()),
        )
        page_size = check_page_size(q.maxInstanceCount, "query.maxInstanceCount", DEFAULT_PAGE_SIZE)
        items, token = self.hub.query_instances(query, page_size, optional_string(q, "continuationToken"))
        response = pb.QueryInstancesResponse(
            orchestrationState=[to_state(i, q.fetchInputsAndOutputs) for i in items]
        )
        if token is not None:
            response.continuationToken.value = token
        return response

    @mapped_errors
    def ListInstanceIds(self, request: pb.ListInstanceIdsRequest, context: grpc.ServicerContext) -> Any:
        query = CompletedFilter(
            statuses=check_statuses(request.runtimeStatus, "runtimeStatus"),
            completed_from=optional_time(request, "completedTimeFrom"),
            completed_to=optional_time(request, "completedTimeTo"),
        )
        page_size = check_page_size(request.pageSize, "pageSize", DEFAULT_PAGE_SIZE)
        last_key = optional_string(request, "lastInstanceKey")
        try:
            ids, key = self.hub.list_instance_ids(query, page_size, last_key)
        except StoreError as exc:
            raise BadRequest(str(exc)) from None
        response = pb.ListInstanceIdsResponse(instanceIds=ids)
        if key is not None:
            response.lastInstanceKey.value = key
        return response

    @mapped_errors
    def PurgeInstances(self, request: pb.PurgeInstancesRequest, context: grpc.ServicerContext) -> Any:
        which = request.WhichOneof("request")
        if which == "instanceId":
            count = self.hub.purge_instances([check_instance_id(request.instanceId)], request.recursive)
        elif which == "instanceBatch":
            ids = [check_instance_id(i, "instanceBatch.instanceIds") for i in request.instanceBatch.instanceIds]
            count = self.hub.purge_instances(ids, request.recursive)
        elif which == "purgeInstanceFilter":
            f = request.purgeInstanceFilter
            query = InstanceFilter(
                statuses=check_statuses(f.runtimeStatus, "purgeInstanceFilter.runtimeStatus"),
                created_from=optional_time(f, "createdTimeFrom"),
                created_to=optional_time(f, "createdTimeTo"),
            )
            count = self.hub.purge_by_filter(query, request.recursive)
        else:
            raise BadRequest("one of instanceId, purgeInstanceFilter or instanceBatch is required")
        response = pb.PurgeInstancesResponse(deletedInstanceCount=count)
        response.isComplete.value = True
        return response

    def StreamInstanceHistory(
        self, request: pb.StreamInstanceHistoryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.HistoryChunk]:
        try:
            instance_id = check_instance_id(request.instanceId)
            inst = self.hub.get_instance(instance_id)
            if inst is None:
                raise InstanceNotFoundError(instance_id)
            execution_id = check_execution_id(request)
            if execution_id and execution_id != inst.execution_id:
                raise RpcFailure(
                    grpc.StatusCode.NOT_FOUND,
                    f"orchestration instance {quoted(instance_id)} has no execution {quoted(execution_id)} "
                    f"(its current execution is {quoted(inst.execution_id)})",
                )
            events = self.hub.get_history(instance_id)
        except Exception as exc:
            context.abort(*error_status(exc, "StreamInstanceHistory"))
        yield from history_chunks(events, self.dispatcher.options.max_message_size)

    @mapped_errors
    def RewindInstance(self, request: pb.RewindInstanceRequest, context: grpc.ServicerContext) -> Any:
        instance_id = check_instance_id(request.instanceId)
        now = self.clock()
        self.hub.rewind_instance(instance_id, rewound_event(now, optional_string(request, "reason")), now)
        return pb.RewindInstanceResponse()

    @mapped_errors
    def SkipGracefulOrchestrationTerminations(
        self, request: pb.SkipGracefulOrchestrationTerminationsRequest, context: grpc.ServicerContext
    ) -> Any:
        # Our terminations never wait for a graceful turn, so this is a batch of plain
        # (non-recursive) terminations; the answer lists the IDs that were not terminated:
        # unknown instances and instances that had already finished.
        ids = list(request.instanceBatch.instanceIds)
        if not ids:
            raise BadRequest("instanceBatch.instanceIds is required: at least one instance ID")
        if len(ids) > MAX_TERMINATION_BATCH:
            raise BadRequest(f"instanceBatch holds {len(ids)} IDs; at most {MAX_TERMINATION_BATCH} are allowed")
        for instance_id in ids:
            check_instance_id(instance_id, "instanceBatch.instanceIds")
        reason = optional_string(request, "reason")
        not_terminated: list[str] = []
        for instance_id in dict.fromkeys(ids):
            try:
                if not self.hub.terminate_instance(instance_id, reason, False, self.clock()):
                    not_terminated.append(instance_id)
            except InstanceNotFoundError:
                not_terminated.append(instance_id)
        return pb.SkipGracefulOrchestrationTerminationsResponse(unterminatedInstanceIds=not_terminated)

    # --- work items -------------------------------------------------------------------------------

    def GetWorkItems(self, request: pb.GetWorkItemsRequest, context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        try:
            check_work_items_request(request)
        except BadRequest as exc:
            context.abort(*error_status(exc, "GetWorkItems"))
        stream = self.dispatcher.open_stream(request)
        context.add_callback(lambda: self.dispatcher.close_stream(stream))
        yield from self.dispatcher.iterate(stream, context.is_active)

    @mapped_errors
    def CompleteOrchestratorTask(self, request: pb.OrchestratorResponse, context: grpc.ServicerContext) -> Any:
        check_token(request.completionToken)
        self.dispatcher.complete_orchestration(request)
        return pb.CompleteTaskResponse()

    @mapped_errors
    def CompleteActivityTask(self, request: pb.ActivityResponse, context: grpc.ServicerContext) -> Any:
        check_token(request.completionToken)
        self.dispatcher.complete_activity(request)
        return pb.CompleteTaskResponse()

    @mapped_errors
    def AbandonTaskOrchestratorWorkItem(
        self, request: pb.AbandonOrchestrationTaskRequest, context: grpc.ServicerContext
    ) -> Any:
        self.dispatcher.abandon_orchestration(check_token(request.completionToken))
        return pb.AbandonOrchestrationTaskResponse()

    @mapped_errors
    def AbandonTaskActivityWorkItem(self, request: pb.AbandonActivityTaskRequest, context: grpc.ServicerContext) -> Any:
        self.dispatcher.abandon_activity(check_token(request.completionToken))
        return pb.AbandonActivityTaskResponse()


def history_chunks(events: list[pb.HistoryEvent], max_bytes: int | None) -> Iterator[pb.HistoryChunk]:
    """``events`` in chunks of at most HISTORY_CHUNK_SIZE events, each under ``max_bytes`` when given.

    An event too large for a chunk of its own still goes alone (the transport refuses it); one
    chunk, empty, for no events.
    """
    chunk: list[pb.HistoryEvent] = []
    size = ENVELOPE_BYTES
    for event in events:
        grows = event.ByteSize() + ENVELOPE_BYTES
        if chunk and (len(chunk) == HISTORY_CHUNK_SIZE or (max_bytes is not None and size + grows > max_bytes)):
            yield pb.HistoryChunk(events=chunk)
            chunk, size = [], ENVELOPE_BYTES
        chunk.append(event)
        size += grows
    if chunk or not events:
        yield pb.HistoryChunk(events=chunk)


class SidecarServer:
    """A gRPC server hosting the sidecar on a store: used by the CLI, tests and ``durabletask.testing``.

    It serves with ``grpc.aio`` on an event loop in a thread of its own (see
    :mod:`sidecar.transport`): open GetWorkItems streams and long polls hold no thread.
    ``max_workers`` is the size of the thread pool that runs the unary RPCs (the store calls);
    it bounds how many of those run at once, not how many calls may be open. With ``tls`` it
    serves TLS (mutual TLS when that names a client CA); with ``token`` every call must carry
    ``authorization: Bearer <token>`` (see :mod:`sidecar.grpc_auth`).
    """

    def __init__(
        self,
        store: Store | TaskHub | str = "memory",
        *,
        host: str = "127.0.0.1",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_workers: int = DEFAULT_MAX_WORKERS,
        dispatch_options: DispatchOptions | None = None,
        owns_store: bool | None = None,
        tls: ServerTls | None = None,
        token: AccessToken | None = None,
        dashboard_port: int | None = None,
        dashboard_host: str = "127.0.0.1",
    ) -> None:
        if isinstance(store, TaskHub):
            self.hub = store
        else:
            self.hub = TaskHub(open_store(store) if isinstance(store, str) else store)
        self.store: Store = self.hub.store
        self._owns_store = isinstance(store, str) if owns_store is None else owns_store
        self.host = host
        self.tls = tls
        self.token = token
        self.max_message_size = max_message_size
        self.max_workers = max_workers
        self.watcher = InstanceWatcher()
        self.hub.add_listener(self.watcher.on_change)
        options = dispatch_options or DispatchOptions()
        if options.entity_payload_limit is None:
            options = dataclasses.replace(options, entity_payload_limit=max_message_size // 2)
        if options.max_message_size is None:
            options = dataclasses.replace(options, max_message_size=max_message_size)
        self.hub.new_events_budget = new_events_budget(options.max_message_size or max_message_size)
        self.dispatcher = Dispatcher(self.hub, options)
        self.servicer = SidecarServicer(self.hub, self.dispatcher, self.watcher)
        self._server: LoopServer | None = None
        self.port: int | None = None
        # The dashboard and metrics (sidecar.dashboard): off unless a port is given (0 picks one).
        self.dashboard_port = dashboard_port
        self.dashboard_host = dashboard_host
        self.dashboard: DashboardServer | None = None

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (after start)."""
        return f"{self.host}:{self.port}"

    def start(self, port: int = 0) -> int:
        """Bind ``host:port`` (0 picks a free port), start serving and dispatching. Returns the port."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_size),
            ("grpc.max_send_message_length", self.max_message_size),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.so_reuseport", 0),
        ]
        transport = LoopServer(
            self.servicer,
            pool_size=self.max_workers,
            options=options,
            credentials=self.tls.server_credentials() if self.tls is not None else None,
            interceptors=[TokenInterceptor(self.token)] if self.token is not None else (),
        )
        target = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        try:
            bound = transport.start(target)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {target}: {exc} (is another process using the port?)") from None
        if not bound:
            raise OSError(f"cannot listen on {target} (is another process using the port?)")
        self.port = bound
        self._server = transport
        self.dispatcher.start()
        log.info("sidecar listening on %s", self.address)
        if self.dashboard_port is not None:
            self._start_dashboard(self.dashboard_port)
        return bound

    def _start_dashboard(self, port: int) -> None:
        tls = self.tls
        context = ssl_context_from_pem(tls.certificate_chain, tls.private_key, tls.client_ca) if tls else None
        dashboard = DashboardServer(self.servicer, host=self.dashboard_host, token=self.token, ssl_context=context)
        try:
            dashboard.start(port)
        except OSError:
            self.dispatcher.stop()
            if self._server is not None:
                self._server.stop(0)
                self._server = None
            raise
        self.dashboard = dashboard

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving: end streams and waits, then shut the server down; close the store if owned."""
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        self.dispatcher.stop()
        self.hub.remove_listener(self.watcher.on_change)
        self.watcher.close()
        if self._server is not None:
            self._server.stop(grace)
            self._server = None
        if self._owns_store:
            self.hub.close()

    def reset(self) -> None:
        """Empty the store."""
        self.hub.reset()
