"""Clients for schedules: ``ScheduledTaskClient`` / ``ScheduleClient`` and their async twins.

Changes (create, update, pause, resume, delete) run as a short orchestration that
calls the schedule entity, and wait for it (``operation_timeout`` seconds), so a
failure comes back as an exception: ScheduleNotFoundError for an unknown schedule,
ScheduleInvalidTransitionError for e.g. pausing a paused schedule,
ScheduleClientValidationError for invalid options, RuntimeError for anything else
(the worker must have called ``configure_scheduled_tasks()``). Reads (describe,
get, list) query the entity directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import durabletask.scheduled._codec as codec
import durabletask.scheduled.transitions as transitions
from durabletask.client import (
    AsyncTaskHubGrpcClient,
    EntityQuery,
    OrchestrationState,
    OrchestrationStatus,
    TaskHubGrpcClient,
)
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.internal.operation_runner import run_operation, run_operation_async
from durabletask.scheduled.exceptions import (
    ScheduleClientValidationError,
    ScheduleError,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
)
from durabletask.scheduled.models import (
    ScheduleCreationOptions,
    ScheduleDescription,
    ScheduleQuery,
    ScheduleState,
    ScheduleUpdateOptions,
)
from durabletask.scheduled.orchestrator import (
    ScheduleOperationRequest,
    execute_schedule_operation_orchestrator,
)
from durabletask.scheduled.schedule_entity import DELETE_OPERATION, ENTITY_NAME
from durabletask.scheduled.schedule_status import ScheduleStatus
from durabletask.task import FailureDetails

logger = logging.getLogger("durabletask.scheduled")

T = TypeVar("T")

_TRANSITION_TEXT = re.compile(r"from '([\w.]+)' to '([\w.]+)'")


class _RejectedOptionsError(ScheduleClientValidationError, RuntimeError):
    """The schedule entity refused the options (also a RuntimeError, as the official client raises)."""


# --- shared by the sync and async clients ---------------------------------------------------------


def _entity_id(schedule_id: str) -> EntityInstanceId:
    return EntityInstanceId(ENTITY_NAME, codec.check_schedule_id(schedule_id))


def _request(entity_id: EntityInstanceId, operation: str, input: Any | None) -> ScheduleOperationRequest:
    return ScheduleOperationRequest(entity_id=str(entity_id), operation_name=operation, input=input)


def _check_create(schedule_id: str, options: Any) -> None:
    if not isinstance(options, ScheduleCreationOptions):
        raise ScheduleClientValidationError(
            schedule_id, f"create needs ScheduleCreationOptions, not {type(options).__name__}"
        )
    if options.schedule_id != schedule_id:
        raise ScheduleClientValidationError(
            schedule_id, f"the options are for schedule '{options.schedule_id}', not '{schedule_id}'"
        )


def _check_update(schedule_id: str, options: Any) -> None:
    if not isinstance(options, ScheduleUpdateOptions):
        raise ScheduleClientValidationError(
            schedule_id, f"update needs ScheduleUpdateOptions, not {type(options).__name__}"
        )


def _failure_chain(failure: FailureDetails | None) -> list[FailureDetails]:
    chain: list[FailureDetails] = []
    while failure is not None and len(chain) < 16:
        chain.append(failure)
        failure = failure.inner_failure
    return chain


def _error_from_failure(schedule_id: str, operation: str, failure: FailureDetails | None) -> ScheduleError | None:
    """The schedule error an operation's failure stands for, if it is one."""
    for item in _failure_chain(failure):
        kind = item.error_type.rsplit(".", 1)[-1]
        if kind == "ScheduleNotFoundError":
            return ScheduleNotFoundError(schedule_id)
        if kind == "ScheduleInvalidTransitionError":
            found = _TRANSITION_TEXT.findall(item.message)
            from_status = found[-1][0] if found else "?"
            to_status = found[-1][1] if found else "?"
            return ScheduleInvalidTransitionError(
                schedule_id, _as_status(from_status), _as_status(to_status), operation
            )
        if kind == "ScheduleClientValidationError":
            prefix = f"invalid schedule '{schedule_id}': "
            reason = item.message[len(prefix):] if item.message.startswith(prefix) else item.message
            return _RejectedOptionsError(schedule_id, reason)
    return None


def _as_status(text: str) -> object:
    """A status named in an error message: by value ('Paused') or by member ('ScheduleStatus.PAUSED')."""
    for status in ScheduleStatus:
        if text in (status.value, status.name, f"ScheduleStatus.{status.name}"):
            return status
    return text


def _raise_unless_completed(schedule_id: str, operation: str, state: OrchestrationState | None) -> None:
    if state is not None and state.runtime_status == OrchestrationStatus.COMPLETED:
        return
    if state is None:
        raise RuntimeError(f"Failed to '{operation}' schedule '{schedule_id}': the operation's orchestration is gone")
    failure = state.failure_details
    error = _error_from_failure(schedule_id, operation, failure)
    if error is not None:
        raise error
    detail = failure.message if failure is not None else f"the operation ended as {state.runtime_status.name}"
    raise RuntimeError(f"Failed to '{operation}' schedule '{schedule_id}': {detail}")


def _state_of(metadata: EntityMetadata | None) -> ScheduleState | None:
    """The schedule state in an entity's metadata; None for no schedule (deleted or never created)."""
    if metadata is None:
        return None
    try:
        state = metadata.get_typed_state(ScheduleState)
    except (TypeError, ValueError) as err:
        logger.warning("entity '%s' does not hold a readable schedule state: %s", metadata.id, err)
        return None
    if state is None or state.status == ScheduleStatus.UNINITIALIZED or state.schedule_configuration is None:
        return None
    return state  # type: ignore[no-any-return]


def _entity_query(schedule_query: ScheduleQuery | None) -> EntityQuery:
    prefix = schedule_query.schedule_id_prefix if schedule_query and schedule_query.schedule_id_prefix else ""
    page_size = schedule_query.page_size if schedule_query and schedule_query.page_size else None
    return EntityQuery(
        instance_id_starts_with=f"@{ENTITY_NAME}@{prefix}",
        include_state=True,
        page_size=page_size or ScheduleQuery.DEFAULT_PAGE_SIZE,
    )


def _matches(state: ScheduleState, schedule_query: ScheduleQuery | None) -> bool:
    if schedule_query is None:
        return True
    if schedule_query.status is not None and state.status != schedule_query.status:
        return False
    created = state.schedule_created_at
    if schedule_query.created_from is not None and not (created is not None and created > schedule_query.created_from):
        return False
    return schedule_query.created_to is None or (created is not None and created < schedule_query.created_to)


def _descriptions(entities: list[EntityMetadata], schedule_query: ScheduleQuery | None) -> list[ScheduleDescription]:
    found = []
    for metadata in entities:
        state = _state_of(metadata)
        if state is not None and _matches(state, schedule_query):
            found.append(state.to_description())
    return found


@dataclass(frozen=True)
class _ClientCall:
    """A call a schedule operation needs made on the task hub client (sync or async)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


_ScheduleOperation: TypeAlias = Generator[_ClientCall, Any, T]


def _change(
    entity_id: EntityInstanceId, schedule_id: str, operation: str, input: Any | None, timeout: float
) -> _ScheduleOperation[None]:
    """Run ``operation`` on the schedule entity through its orchestration and wait for it."""
    instance_id = yield _ClientCall(
        "schedule_new_orchestration", (execute_schedule_operation_orchestrator,),
        {"input": _request(entity_id, operation, input)},
    )
    state = yield _ClientCall("wait_for_orchestration_completion", (instance_id,), {"timeout": timeout})
    _raise_unless_completed(schedule_id, operation, state)


def _describe(entity_id: EntityInstanceId, schedule_id: str) -> _ScheduleOperation[ScheduleDescription]:
    state = _state_of((yield _ClientCall("get_entity", (entity_id,), {"include_state": True})))
    if state is None:
        raise ScheduleNotFoundError(schedule_id)
    return state.to_description()


def _list(schedule_query: ScheduleQuery | None) -> _ScheduleOperation[list[ScheduleDescription]]:
    entities = yield _ClientCall("get_all_entities", (_entity_query(schedule_query),))
    return _descriptions(entities, schedule_query)


def _run_sync(client: TaskHubGrpcClient, operation: _ScheduleOperation[T]) -> T:
    return run_operation(operation, lambda call: getattr(client, call.method)(*call.args, **call.kwargs))


async def _run_async(client: AsyncTaskHubGrpcClient, operation: _ScheduleOperation[T]) -> T:
    async def call_client(call: _ClientCall) -> Any:
        return await getattr(client, call.method)(*call.args, **call.kwargs)

    return await run_operation_async(operation, call_client)


# --- synchronous -----------------------------------------------------------------------------------


class ScheduleClient:
    """Manages one schedule."""

    def __init__(self, client: TaskHubGrpcClient, schedule_id: str, *, operation_timeout: float = 60) -> None:
        self._entity_id = _entity_id(schedule_id)
        self._client = client
        self._schedule_id = schedule_id
        self._operation_timeout = operation_timeout

    @property
    def schedule_id(self) -> str:
        """The ID of the schedule this client manages."""
        return self._schedule_id

    def _run(self, operation: str, input: Any | None = None) -> None:
        change = _change(self._entity_id, self._schedule_id, operation, input, self._operation_timeout)
        _run_sync(self._client, change)

    def create(self, options: ScheduleCreationOptions) -> None:
        """Create the schedule (or replace the configuration of an existing one and activate it)."""
        _check_create(self._schedule_id, options)
        self._run(transitions.CREATE_SCHEDULE, options)

    def update(self, options: ScheduleUpdateOptions) -> None:
        """Change the fields set in ``options``."""
        _check_update(self._schedule_id, options)
        self._run(transitions.UPDATE_SCHEDULE, options)

    def pause(self) -> None:
        """Stop the schedule's runs until it is resumed."""
        self._run(transitions.PAUSE_SCHEDULE)

    def resume(self) -> None:
        """Start running a paused schedule again, from the next due time."""
        self._run(transitions.RESUME_SCHEDULE)

    def delete(self) -> None:
        """Remove the schedule; runs already started are not affected."""
        self._run(DELETE_OPERATION)

    def describe(self) -> ScheduleDescription:
        """The schedule's configuration and run bookkeeping; raises ScheduleNotFoundError."""
        return _run_sync(self._client, _describe(self._entity_id, self._schedule_id))


class ScheduledTaskClient:
    """Creates, finds and lists schedules."""

    def __init__(self, client: TaskHubGrpcClient, *, operation_timeout: float = 60) -> None:
        self._client = client
        self._operation_timeout = operation_timeout

    def get_schedule_client(self, schedule_id: str) -> ScheduleClient:
        """A client for the schedule with this ID (which need not exist yet)."""
        return ScheduleClient(self._client, schedule_id, operation_timeout=self._operation_timeout)

    def create_schedule(self, options: ScheduleCreationOptions) -> ScheduleClient:
        """Create a schedule and return its client."""
        if not isinstance(options, ScheduleCreationOptions):
            raise ScheduleClientValidationError("", f"create_schedule needs ScheduleCreationOptions, not {type(options).__name__}")
        schedule = self.get_schedule_client(options.schedule_id)
        schedule.create(options)
        return schedule

    def get_schedule(self, schedule_id: str) -> ScheduleDescription | None:
        """The schedule's description, or None when it does not exist."""
        try:
            return self.get_schedule_client(schedule_id).describe()
        except ScheduleNotFoundError:
            return None

    def list_schedules(self, schedule_query: ScheduleQuery | None = None) -> list[ScheduleDescription]:
        """Every schedule matching the query (all of them without one)."""
        return _run_sync(self._client, _list(schedule_query))

    @staticmethod
    def matches_filter(state: ScheduleState, schedule_query: ScheduleQuery | None) -> bool:
        """True if a schedule's state passes the status and creation-time filters of the query."""
        return _matches(state, schedule_query)


# --- asynchronous ----------------------------------------------------------------------------------


class AsyncScheduleClient:
    """Manages one schedule (asyncio)."""

    def __init__(self, client: AsyncTaskHubGrpcClient, schedule_id: str, *, operation_timeout: float = 60) -> None:
        self._entity_id = _entity_id(schedule_id)
        self._client = client
        self._schedule_id = schedule_id
        self._operation_timeout = operation_timeout

    @property
    def schedule_id(self) -> str:
        """The ID of the schedule this client manages."""
        return self._schedule_id

    async def _run(self, operation: str, input: Any | None = None) -> None:
        change = _change(self._entity_id, self._schedule_id, operation, input, self._operation_timeout)
        await _run_async(self._client, change)

    async def create(self, options: ScheduleCreationOptions) -> None:
        """Create the schedule (or replace the configuration of an existing one and activate it)."""
        _check_create(self._schedule_id, options)
        await self._run(transitions.CREATE_SCHEDULE, options)

    async def update(self, options: ScheduleUpdateOptions) -> None:
        """Change the fields set in ``options``."""
        _check_update(self._schedule_id, options)
        await self._run(transitions.UPDATE_SCHEDULE, options)

    async def pause(self) -> None:
        """Stop the schedule's runs until it is resumed."""
        await self._run(transitions.PAUSE_SCHEDULE)

    async def resume(self) -> None:
        """Start running a paused schedule again, from the next due time."""
        await self._run(transitions.RESUME_SCHEDULE)

    async def delete(self) -> None:
        """Remove the schedule; runs already started are not affected."""
        await self._run(DELETE_OPERATION)

    async def describe(self) -> ScheduleDescription:
        """The schedule's configuration and run bookkeeping; raises ScheduleNotFoundError."""
        return await _run_async(self._client, _describe(self._entity_id, self._schedule_id))


class AsyncScheduledTaskClient:
    """Creates, finds and lists schedules (asyncio)."""

    def __init__(self, client: AsyncTaskHubGrpcClient, *, operation_timeout: float = 60) -> None:
        self._client = client
        self._operation_timeout = operation_timeout

    def get_schedule_client(self, schedule_id: str) -> AsyncScheduleClient:
        """A client for the schedule with this ID (which need not exist yet)."""
        return AsyncScheduleClient(self._client, schedule_id, operation_timeout=self._operation_timeout)

    async def create_schedule(self, options: ScheduleCreationOptions) -> AsyncScheduleClient:
        """Create a schedule and return its client."""
        if not isinstance(options, ScheduleCreationOptions):
            raise ScheduleClientValidationError("", f"create_schedule needs ScheduleCreationOptions, not {type(options).__name__}")
        schedule = self.get_schedule_client(options.schedule_id)
        await schedule.create(options)
        return schedule

    async def get_schedule(self, schedule_id: str) -> ScheduleDescription | None:
        """The schedule's description, or None when it does not exist."""
        try:
            return await self.get_schedule_client(schedule_id).describe()
        except ScheduleNotFoundError:
            return None

    async def list_schedules(self, schedule_query: ScheduleQuery | None = None) -> list[ScheduleDescription]:
        """Every schedule matching the query (all of them without one)."""
        return await _run_async(self._client, _list(schedule_query))
