"""The worker: runs registered orchestrators and activities for work items pulled from the sidecar."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any, overload

import grpc
from packaging.version import InvalidVersion, Version

from durabletask import serialization
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.exception_properties import ExceptionPropertiesProvider
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.internal import grpc_channel
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entity_executor import DEFAULT_MAXIMUM_ENTITY_STATE_SIZE, EntityStateTooLargeError
from durabletask.internal.protocol_extensions import KEEPS_REPLAY_STATE
from durabletask.internal.registry import (
    ActivityNotRegisteredError,
    EntityNotRegisteredError,
    OrchestratorNotRegisteredError,
    Registry,
)
from durabletask.internal.replay_cache import DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS, ReplayCache
from durabletask.internal.worker_dispatch import DispatchLimits, VersionVerdict, WorkItemDispatcher
from durabletask.internal.worker_stream import WorkItemStream
from durabletask.payload.store import PayloadStore
from durabletask.task import get_entity_name

__all__ = [
    "ActivityNotRegisteredError",
    "ActivityWorkItemFilter",
    "ConcurrencyOptions",
    "EntityNotRegisteredError",
    "EntityStateTooLargeError",
    "EntityWorkItemFilter",
    "OrchestrationWorkItemFilter",
    "OrchestratorNotRegisteredError",
    "TaskHubGrpcWorker",
    "VersionFailureStrategy",
    "VersionMatchStrategy",
    "VersioningOptions",
    "WorkItemFilters",
]

LOGGER_NAME = "durabletask-worker"
DEFAULT_MAXIMUM_TIMER_INTERVAL = timedelta(days=3)
# How long stop() lets running work items finish before giving up on them.
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0
# Reconnect faster than GrpcWorkerResiliencyOptions' defaults when none are given.
_DEFAULT_RESILIENCY = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.5, reconnect_backoff_cap_seconds=15.0
)


class ConcurrencyOptions:
    """Caps on concurrently processed work items, and the size of the worker's thread pool.

    Work-item caps default to 100 per CPU; the thread pool defaults to CPU count + 4.
    The caps are enforced locally and also sent to the sidecar with the stream request.
    """

    def __init__(
        self,
        maximum_concurrent_activity_work_items: int | None = None,
        maximum_concurrent_orchestration_work_items: int | None = None,
        maximum_concurrent_entity_work_items: int | None = None,
        maximum_thread_pool_workers: int | None = None,
    ) -> None:
        cpus = os.cpu_count() or 1

        def pick(value: int | None, default: int, label: str) -> int:
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, not {value!r}")
            return value

        self.maximum_concurrent_activity_work_items = pick(
            maximum_concurrent_activity_work_items, 100 * cpus, "maximum_concurrent_activity_work_items"
        )
        self.maximum_concurrent_orchestration_work_items = pick(
            maximum_concurrent_orchestration_work_items, 100 * cpus, "maximum_concurrent_orchestration_work_items"
        )
        self.maximum_concurrent_entity_work_items = pick(
            maximum_concurrent_entity_work_items, 100 * cpus, "maximum_concurrent_entity_work_items"
        )
        self.maximum_thread_pool_workers = pick(
            maximum_thread_pool_workers, cpus + 4, "maximum_thread_pool_workers"
        )

    def __repr__(self) -> str:
        return (
            "ConcurrencyOptions("
            f"maximum_concurrent_activity_work_items={self.maximum_concurrent_activity_work_items}, "
            f"maximum_concurrent_orchestration_work_items={self.maximum_concurrent_orchestration_work_items}, "
            f"maximum_concurrent_entity_work_items={self.maximum_concurrent_entity_work_items}, "
            f"maximum_thread_pool_workers={self.maximum_thread_pool_workers})"
        )


class VersionMatchStrategy(Enum):
    """How an orchestration's version is compared with the worker's version."""

    NONE = 1
    STRICT = 2
    CURRENT_OR_OLDER = 3


class VersionFailureStrategy(Enum):
    """What happens to an orchestration whose version does not match."""

    REJECT = 1
    FAIL = 2


class VersioningOptions:
    """The worker's version, the default version for new sub-orchestrations, and the matching rules."""

    def __init__(
        self,
        version: str | None = None,
        default_version: str | None = None,
        match_strategy: VersionMatchStrategy | None = None,
        failure_strategy: VersionFailureStrategy | None = None,
    ) -> None:
        self.version = version
        self.default_version = default_version
        self.match_strategy = match_strategy
        self.failure_strategy = failure_strategy

    def __repr__(self) -> str:
        return (
            f"VersioningOptions(version={self.version!r}, default_version={self.default_version!r}, "
            f"match_strategy={self.match_strategy}, failure_strategy={self.failure_strategy})"
        )


def compare_versions(left: str | None, right: str | None) -> int:
    """-1, 0 or 1. Missing versions sort first; PEP 440 ordering, else plain string ordering."""
    if not left and not right:
        return 0
    if not left:
        return -1
    if not right:
        return 1
    a: Any
    b: Any
    try:
        a, b = Version(left), Version(right)
    except InvalidVersion:
        a, b = left, right
    return (a > b) - (a < b)


def version_mismatch(options: VersioningOptions | None, version: str | None) -> str | None:
    """Why an orchestration with ``version`` may not run under ``options``, or None if it may."""
    if options is None or options.match_strategy in (None, VersionMatchStrategy.NONE):
        return None
    order = compare_versions(version, options.version)
    if options.match_strategy == VersionMatchStrategy.STRICT:
        if order != 0:
            return f"The orchestration version '{version}' does not match the worker version '{options.version}'."
        return None
    if options.match_strategy == VersionMatchStrategy.CURRENT_OR_OLDER:
        if order > 0:
            return f"The orchestration version '{version}' is greater than the worker version '{options.version}'."
        return None
    return f"The version match strategy '{options.match_strategy}' is unknown."


@dataclass(frozen=True)
class OrchestrationWorkItemFilter:
    """Ask for work of the orchestration ``name`` (and, when given, only these versions)."""

    name: str
    versions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ActivityWorkItemFilter:
    """Ask for work of the activity ``name`` (and, when given, only these versions)."""

    name: str
    versions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EntityWorkItemFilter:
    """Ask for work of the entity ``name`` (lower-cased, like entity names everywhere)."""

    name: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an entity name must not be empty")
        if "@" in self.name:
            raise ValueError(f"an entity name must not contain '@': {self.name!r}")
        object.__setattr__(self, "name", self.name.lower())


@dataclass(frozen=True)
class WorkItemFilters:
    """The work a worker asks the sidecar for; empty lists mean no work of that kind."""

    orchestrations: list[OrchestrationWorkItemFilter] = field(default_factory=list)
    activities: list[ActivityWorkItemFilter] = field(default_factory=list)
    entities: list[EntityWorkItemFilter] = field(default_factory=list)

    @classmethod
    def _from_registry(cls, registry: Registry, versioning: VersioningOptions | None = None) -> WorkItemFilters:
        """Filters naming everything registered; with STRICT versioning, only the worker's version."""
        versions: list[str] = []
        if versioning and versioning.match_strategy == VersionMatchStrategy.STRICT and versioning.version:
            versions = [versioning.version]
        return cls(
            orchestrations=[OrchestrationWorkItemFilter(n, list(versions)) for n in registry.orchestrators],
            activities=[ActivityWorkItemFilter(n, list(versions)) for n in registry.activities],
            entities=[EntityWorkItemFilter(n) for n in registry.entities],
        )

    def _to_grpc(self) -> pb.WorkItemFilters:
        """The wire form sent in ``GetWorkItemsRequest.workItemFilters``."""
        message = pb.WorkItemFilters()
        for o in self.orchestrations:
            message.orchestrations.append(pb.OrchestrationFilter(name=o.name, versions=o.versions))
        for a in self.activities:
            message.activities.append(pb.ActivityFilter(name=a.name, versions=a.versions))
        for e in self.entities:
            message.entities.append(pb.EntityFilter(name=e.name))
        return message


_DERIVE_FILTERS: Any = object()


def _make_logger(
    log_handler: logging.Handler | None, log_formatter: logging.Formatter | None, logger: logging.Logger | None
) -> logging.Logger:
    if logger is not None:
        if log_handler is not None or log_formatter is not None:
            raise ValueError("'logger' cannot be combined with 'log_handler' or 'log_formatter'")
        return logger
    named = logging.getLogger(LOGGER_NAME)
    if log_handler is not None or log_formatter is not None:
        handler = log_handler or logging.StreamHandler()
        if log_formatter is not None:
            handler.setFormatter(log_formatter)
        if handler not in named.handlers:
            named.addHandler(handler)
    return named


def _channel_option_list(options: GrpcChannelOptions | Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    if options is None:
        return []
    if isinstance(options, GrpcChannelOptions):
        return options.to_grpc_options()
    return list(options)


class TaskHubGrpcWorker:
    """Pulls work items from the sidecar over gRPC and runs the registered functions.

    Register orchestrators, activities and entities, then ``start()``: the worker
    runs in background threads until ``stop()``. As a context manager, leaving the
    block stops it.
    """

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
        resiliency_options: GrpcWorkerResiliencyOptions | None = None,
        concurrency_options: ConcurrencyOptions | None = None,
        maximum_timer_interval: timedelta | None = DEFAULT_MAXIMUM_TIMER_INTERVAL,
        payload_store: PayloadStore | None = None,
        data_converter: serialization.DataConverter | None = None,
        exception_properties_provider: ExceptionPropertiesProvider | None = None,
        emit_trace_spans: bool = True,
        maximum_entity_state_size: int | None = DEFAULT_MAXIMUM_ENTITY_STATE_SIZE,
        maximum_cached_orchestrations: int = DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS,
        **_ignored: Any,
    ) -> None:
        self._registry = Registry()
        self._host_address = host_address or grpc_channel.get_default_host_address()
        self._metadata = list(metadata) if metadata else None
        self._logger = _make_logger(log_handler, log_formatter, logger)
        self._channel = channel
        self._secure_channel = secure_channel
        self._interceptors = list(interceptors) if interceptors else None
        self._channel_options = _channel_option_list(channel_options)
        self._resiliency = resiliency_options if resiliency_options is not None else _DEFAULT_RESILIENCY
        self._concurrency_options = concurrency_options if concurrency_options is not None else ConcurrencyOptions()
        self._maximum_timer_interval = maximum_timer_interval
        self._data_converter = data_converter if data_converter is not None else serialization.default_converter()
        self._payload_store = payload_store
        self._exception_properties_provider = exception_properties_provider
        self._emit_trace_spans = emit_trace_spans
        if maximum_entity_state_size is not None and (
            isinstance(maximum_entity_state_size, bool)
            or not isinstance(maximum_entity_state_size, int)
            or maximum_entity_state_size < 1
        ):
            raise ValueError(
                f"maximum_entity_state_size must be a positive number of bytes or None, not {maximum_entity_state_size!r}"
            )
        self._maximum_entity_state_size = maximum_entity_state_size
        ReplayCache(maximum_cached_orchestrations)  # validates the size
        self._maximum_cached_orchestrations = maximum_cached_orchestrations
        self._versioning: VersioningOptions | None = None
        self._work_item_filters: WorkItemFilters | None = None
        self._derive_filters = False
        self._capabilities: set[int] = set()
        self._worker_instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lifecycle = threading.Lock()
        self._is_running = False
        self._stream: WorkItemStream | None = None
        self._dispatcher: WorkItemDispatcher | None = None
        self.stop_timeout_seconds = DEFAULT_STOP_TIMEOUT_SECONDS
        """How long ``stop()`` waits for running work items before handing the rest back."""

    # ----- properties -----

    @property
    def concurrency_options(self) -> ConcurrencyOptions:
        """The concurrency caps in effect."""
        return self._concurrency_options

    @property
    def maximum_timer_interval(self) -> timedelta | None:
        """Timers longer than this are split into chunks."""
        return self._maximum_timer_interval

    @property
    def emit_trace_spans(self) -> bool:
        """Whether the worker records OpenTelemetry spans (trace contexts are passed on either way)."""
        return self._emit_trace_spans

    @property
    def maximum_entity_state_size(self) -> int | None:
        """Largest serialized entity state (bytes) an operation may store; larger fails the operation."""
        return self._maximum_entity_state_size

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._is_running

    def __enter__(self) -> TaskHubGrpcWorker:
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()

    # ----- registration -----

    def _ensure_stopped(self, what: str) -> None:
        if self._is_running:
            raise RuntimeError(f"{what} cannot be changed while the worker is running")

    def add_orchestrator(self, fn: Callable[..., Any]) -> str:
        """Register an orchestrator function under its ``__name__``; returns the name."""
        self._ensure_stopped("Orchestrators")
        return self._registry.add_orchestrator(fn)

    def add_activity(self, fn: Callable[..., Any]) -> str:
        """Register an activity function (sync or ``async def``) under its ``__name__``."""
        self._ensure_stopped("Activities")
        return self._registry.add_activity(fn)

    def add_entity(self, fn: Any, name: str | None = None) -> str:
        """Register an entity function or ``DurableEntity`` class; returns its (lower-cased) name.

        The name defaults to the function's or class's ``__name__`` (or its
        ``__durable_entity_name__``); it must not be empty or contain ``@``.
        """
        self._ensure_stopped("Entities")
        if fn is None:
            raise ValueError("add_entity needs an entity function or DurableEntity class")
        if not callable(fn):
            raise TypeError(f"an entity must be a function or a DurableEntity class, not {type(fn).__name__}")
        entity_name = name or get_entity_name(fn)
        EntityInstanceId.validate_entity_name(entity_name)
        return self._registry.add_entity(fn, entity_name)

    def add_capability(self, capability: int) -> None:
        """Advertise a ``pb.WORKER_CAPABILITY_*`` value to the sidecar."""
        self._ensure_stopped("Capabilities")
        self._capabilities.add(int(capability))

    def configure_scheduled_tasks(self) -> None:
        """Register the schedule entity and its orchestrator and advertise the capability."""
        self._ensure_stopped("Scheduled tasks")
        try:
            from durabletask.scheduled.orchestrator import execute_schedule_operation_orchestrator
            from durabletask.scheduled.schedule_entity import ENTITY_NAME, Schedule
        except ImportError as ex:
            raise RuntimeError(f"scheduled tasks are not available in this build: {ex}") from ex
        self.add_entity(Schedule, ENTITY_NAME)
        self.add_orchestrator(execute_schedule_operation_orchestrator)
        self.add_capability(pb.WORKER_CAPABILITY_SCHEDULED_TASKS)

    def use_versioning(self, version: VersioningOptions | None) -> None:
        """Set the worker's versioning rules (applied to each orchestration turn); None clears them."""
        self._ensure_stopped("Versioning")
        if version is not None and not isinstance(version, VersioningOptions):
            raise TypeError(
                f"use_versioning() takes a VersioningOptions (or None), not {type(version).__name__} {version!r}; "
                "for example VersioningOptions(version=...)"
            )
        self._versioning = version

    @overload
    def use_work_item_filters(self) -> None: ...

    @overload
    def use_work_item_filters(self, filters: WorkItemFilters | None) -> None: ...

    def use_work_item_filters(self, filters: Any = _DERIVE_FILTERS) -> None:
        """Ask only for matching work. No argument: filters derived from what is registered
        (at ``start()``); ``None``: no filters (all work)."""
        self._ensure_stopped("Work item filters")
        if filters is _DERIVE_FILTERS:
            self._derive_filters, self._work_item_filters = True, None
        elif filters is None:
            self._derive_filters, self._work_item_filters = False, None
        elif isinstance(filters, WorkItemFilters):
            self._derive_filters, self._work_item_filters = False, filters
        else:
            raise TypeError("filters must be a WorkItemFilters, None, or omitted")

    # ----- running -----

    def _effective_filters(self) -> WorkItemFilters | None:
        if self._derive_filters:
            return WorkItemFilters._from_registry(self._registry, self._versioning)
        return self._work_item_filters

    def _all_capabilities(self) -> set[int]:
        """The capabilities added by the user, the replay cache's when it is on, large payloads with a store."""
        capabilities = set(self._capabilities)
        if self._maximum_cached_orchestrations > 0:
            capabilities.add(KEEPS_REPLAY_STATE)
        if self._payload_store is not None:
            capabilities.add(pb.WORKER_CAPABILITY_LARGE_PAYLOADS)
        return capabilities

    def _build_request(self) -> pb.GetWorkItemsRequest:
        options = self._concurrency_options
        request = pb.GetWorkItemsRequest(
            maxConcurrentOrchestrationWorkItems=options.maximum_concurrent_orchestration_work_items,
            maxConcurrentActivityWorkItems=options.maximum_concurrent_activity_work_items,
            maxConcurrentEntityWorkItems=options.maximum_concurrent_entity_work_items,
            capabilities=sorted(self._all_capabilities()),  # type: ignore[arg-type]
            worker_instance_id=self._worker_instance_id,
        )
        filters = self._effective_filters()
        if filters is not None:
            request.workItemFilters.CopyFrom(filters._to_grpc())
        return request

    def _version_gate(self, version: str | None) -> VersionVerdict | None:
        reason = version_mismatch(self._versioning, version)
        if reason is None:
            return None
        details = pb.TaskFailureDetails(errorType="VersionMismatch", errorMessage=reason, isNonRetriable=True)
        fail = self._versioning is not None and self._versioning.failure_strategy == VersionFailureStrategy.FAIL
        return VersionVerdict(reject=not fail, details=details)

    def start(self) -> None:
        """Connect in the background and start processing work items; returns at once."""
        with self._lifecycle:
            if self._is_running:
                raise RuntimeError("The worker is already running.")
            options = self._concurrency_options
            stream_holder: list[WorkItemStream] = []
            dispatcher = WorkItemDispatcher(
                registry=self._registry,
                stub_provider=lambda: stream_holder[0].stub() if stream_holder else None,
                limits=DispatchLimits(
                    orchestrations=options.maximum_concurrent_orchestration_work_items,
                    activities=options.maximum_concurrent_activity_work_items,
                    entities=options.maximum_concurrent_entity_work_items,
                    thread_pool_workers=options.maximum_thread_pool_workers,
                ),
                logger=self._logger,
                data_converter=self._data_converter,
                maximum_timer_interval=self._maximum_timer_interval,
                metadata=self._metadata,
                version_gate=self._version_gate if self._versioning is not None else None,
                default_version=self._versioning.default_version if self._versioning is not None else None,
                maximum_entity_state_size=self._maximum_entity_state_size,
                maximum_cached_orchestrations=self._maximum_cached_orchestrations,
                batch_stub_provider=lambda: stream_holder[0].batch_stub() if stream_holder else None,
                exception_properties_provider=self._exception_properties_provider,
                emit_trace_spans=self._emit_trace_spans,
                payload_store=self._payload_store,
            )
            stream = WorkItemStream(
                host_address=self._host_address,
                make_request=self._build_request,
                on_work_item=dispatcher.dispatch,
                logger=self._logger,
                resiliency=self._resiliency,
                channel=self._channel,
                secure_channel=self._secure_channel,
                interceptors=self._interceptors,
                channel_options=self._channel_options,
                metadata=self._metadata,
            )
            stream_holder.append(stream)
            self._logger.info("starting the worker; sidecar at %s", self._host_address)
            dispatcher.start()
            stream.start()
            self._dispatcher, self._stream = dispatcher, stream
            self._is_running = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking work, finish (or hand back) what is held, close the stream and return.

        Running work items get up to ``timeout`` seconds (default ``stop_timeout_seconds``).
        """
        with self._lifecycle:
            if not self._is_running:
                return
            grace = self.stop_timeout_seconds if timeout is None else timeout
            stream, dispatcher = self._stream, self._dispatcher
            self._logger.info("stopping the worker")
            if dispatcher is not None:
                # Work items that arrive while the stream finishes go back to the sidecar at once.
                dispatcher.refuse_new_work()
            if stream is not None:
                stream.stop(timeout=10.0)
            if dispatcher is not None:
                dispatcher.stop(grace)
            if stream is not None:
                stream.close()
            self._stream = self._dispatcher = None
            self._is_running = False
            self._logger.info("the worker has stopped")
