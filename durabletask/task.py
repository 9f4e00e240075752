"""User-facing types of orchestrations and activities: contexts, tasks, retry policies, errors."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeAlias, TypeVar, Union

# Entity types are importable from here too, as in the reference SDK.
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId, EntityLock
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.failure_details import FailureDetails
from durabletask.internal.naming import get_name

T = TypeVar("T")
TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")


# ------------------------------------------------------------------- errors


class TaskFailedError(Exception):
    """A task (activity, sub-orchestration, ...) failed; ``details`` says why."""

    def __init__(self, message: str, details: pb.TaskFailureDetails | Exception | FailureDetails):
        super().__init__(message)
        if isinstance(details, FailureDetails):
            self._failure_details = ph.failure_details_to_pb(details)
        elif isinstance(details, BaseException):
            self._failure_details = ph.new_failure_details(details)
        else:
            self._failure_details = details
        self._details = ph.failure_details_from_pb(self._failure_details)

    @property
    def details(self) -> FailureDetails:
        """The failure's type, message and stack trace."""
        return self._details


class NonDeterminismError(Exception):
    """The orchestrator code no longer matches the instance's history."""


class OrchestrationStateError(Exception):
    """The orchestration history or state is not what the engine can work with."""


class TaskCancelledError(Exception):
    """The task was cancelled before it completed."""


# -------------------------------------------------------------------- tasks


class Task(ABC, Generic[T]):
    """A unit of work an orchestrator can yield."""

    def __init__(self) -> None:
        self._is_complete = False
        self._result: Any = None
        self._exception: TaskFailedError | None = None
        self._parents: list[CompositeTask[Any]] = []

    @property
    def is_complete(self) -> bool:
        """True once the task has a result, an error, or was cancelled."""
        return self._is_complete

    @property
    def is_failed(self) -> bool:
        """True if the task completed with an error."""
        return self._exception is not None

    @property
    def result(self) -> T:
        """Same as :meth:`get_result`."""
        return self.get_result()

    def get_result(self) -> T:
        """The task's result; raises its error if it failed."""
        if not self._is_complete:
            raise ValueError("the task has not completed")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def get_exception(self) -> TaskFailedError:
        """The error the task failed with."""
        if self._exception is None:
            raise ValueError("the task has not failed")
        return self._exception

    def __await__(self) -> Generator[Task[T], Any, T]:
        """``await task`` in an ``async def`` orchestrator: the engine resumes it with the result (or error)."""
        return (yield self)  # type: ignore[no-any-return]

    def _notify_parents(self) -> None:
        parents, self._parents = self._parents, []
        for parent in parents:
            parent.on_child_completed(self)


class CompletableTask(Task[T]):
    """A task completed from outside (by the engine when its result arrives)."""

    def __init__(self, expected_type: type | None = None) -> None:
        super().__init__()
        self._expected_type = expected_type

    def complete(self, result: T) -> None:
        """Complete the task with a result."""
        if self._is_complete:
            raise ValueError("the task has already completed")
        self._result = result
        self._is_complete = True
        self._notify_parents()

    def fail(self, message: str, details: Exception | pb.TaskFailureDetails) -> None:
        """Complete the task with an error."""
        if self._is_complete:
            raise ValueError("the task has already completed")
        self._exception = TaskFailedError(message, details)
        self._is_complete = True
        self._notify_parents()


class CancellableTask(CompletableTask[T]):
    """A task that can be cancelled (timers, external-event waits)."""

    def __init__(self, expected_type: type | None = None) -> None:
        super().__init__(expected_type)
        self._is_cancelled = False
        self._cancel_handler: Callable[[], None] | None = None

    @property
    def is_cancelled(self) -> bool:
        """True if :meth:`cancel` took effect."""
        return self._is_cancelled

    def get_result(self) -> T:
        """The result; raises TaskCancelledError if the task was cancelled."""
        if self._is_cancelled:
            raise TaskCancelledError("the task was cancelled")
        return super().get_result()

    def set_cancel_handler(self, cancel_handler: Callable[[], None]) -> None:
        """Set the callback that withdraws the task's pending work on cancel."""
        self._cancel_handler = cancel_handler

    def cancel(self) -> bool:
        """Cancel the task; False if it had already completed."""
        if self._is_complete:
            return False
        if self._cancel_handler is not None:
            self._cancel_handler()
        self._is_cancelled = True
        self._is_complete = True
        self._notify_parents()
        return True


class RetryableTask(CompletableTask[T]):
    """An activity or sub-orchestration call that is retried by a RetryPolicy."""

    def __init__(
        self,
        retry_policy: RetryPolicy,
        action: pb.OrchestratorAction,
        start_time: datetime,
        is_sub_orch: bool,
        expected_type: type | None = None,
    ) -> None:
        super().__init__(expected_type)
        self._retry_policy = retry_policy
        self._action = action
        self._start_time = start_time
        self._is_sub_orch = is_sub_orch
        self._attempt_count = 1

    @property
    def attempt_count(self) -> int:
        """The number of the current attempt (1 for the first)."""
        return self._attempt_count

    def increment_attempt_count(self) -> None:
        """Count one more attempt."""
        self._attempt_count += 1

    def compute_next_delay(self, now: datetime | None = None) -> timedelta | None:
        """The delay before the next attempt, or None when no attempt is left.

        ``now`` is the orchestration's current time (deterministic); the retry
        timeout is measured from the first attempt's scheduling time.
        """
        policy = self._retry_policy
        if self._attempt_count >= policy.max_number_of_attempts:
            return None
        if policy.retry_timeout is not None and now is not None:
            if now >= self._start_time + policy.retry_timeout:
                return None
        coefficient = policy.backoff_coefficient if policy.backoff_coefficient is not None else 1.0
        seconds = policy.first_retry_interval.total_seconds() * math.pow(coefficient, self._attempt_count - 1)
        if policy.max_retry_interval is not None:
            seconds = min(seconds, policy.max_retry_interval.total_seconds())
        return timedelta(seconds=seconds)


class TimerTask(CancellableTask[None]):
    """A durable timer; long timers are carried out as a chain of shorter ones."""

    def __init__(
        self, final_fire_at: datetime | None = None, maximum_timer_interval: timedelta | None = None
    ) -> None:
        super().__init__()
        self._final_fire_at = final_fire_at
        self._maximum_timer_interval = maximum_timer_interval
        self._retryable_parent: RetryableTask[Any] | None = None
        self._armed_fire_at: datetime | None = None

    @property
    def fire_at(self) -> datetime | None:
        """When the timer (its last chunk) is due."""
        return self._final_fire_at

    def set_retryable_parent(self, retryable_task: RetryableTask[Any]) -> None:
        """Mark this timer as the wait before another attempt of ``retryable_task``."""
        self._retryable_parent = retryable_task

    def _next_chunk_fire_at(self, now: datetime) -> datetime | None:
        """The due time of the next chunk after ``now``, or None once the final time is reached."""
        final = self._final_fire_at
        if final is None or now >= final:
            return None
        step = self._maximum_timer_interval
        if step is not None and step > timedelta(0) and now + step < final:
            return now + step
        return final


class CompositeTask(Task[T]):
    """A task that completes based on its children."""

    def __init__(self, tasks: list[Task[Any]]):
        super().__init__()
        self._tasks = list(tasks)
        # How many slots each child fills (a task may be passed more than once); a child is
        # removed the first time it is reported.
        self._slots: dict[int, int] = {}
        for child in self._tasks:
            self._slots[id(child)] = self._slots.get(id(child), 0) + 1
        self._completed_tasks = 0
        self._failed_tasks = 0
        for child in self._tasks:
            if self._is_complete:
                break
            if child.is_complete:
                self.on_child_completed(child)
            elif self not in child._parents:
                child._parents.append(self)

    def get_tasks(self) -> list[Task[Any]]:
        """The child tasks, in the order given."""
        return self._tasks

    def _first_time(self, child: Task[Any]) -> int:
        """How many slots ``child`` fills, the first time it is reported; 0 afterwards."""
        return self._slots.pop(id(child), 0)

    def _complete_composite(self) -> None:
        self._is_complete = True
        for child in self._tasks:
            if self in child._parents:
                child._parents.remove(self)
        self._notify_parents()

    @abstractmethod
    def on_child_completed(self, task: Task[Any]) -> None:
        """Called when a child task completes."""


def _child_failure(child: Task[Any]) -> TaskFailedError | None:
    if child.is_failed:
        return child.get_exception()
    if isinstance(child, CancellableTask) and child.is_cancelled:
        return TaskFailedError("a task awaited by when_all was cancelled", TaskCancelledError("cancelled"))
    return None


class WhenAllTask(CompositeTask[list[T]]):
    """Completes when every child has completed; its result is the list of results."""

    def __init__(self, tasks: list[Task[T]]):
        self._first_failure: TaskFailedError | None = None
        super().__init__(list(tasks))
        if not self._tasks:
            self._result = []
            self._is_complete = True

    @property
    def pending_tasks(self) -> int:
        """How many children have not completed yet."""
        return len(self._tasks) - self._completed_tasks

    def get_completed_tasks(self) -> int:
        """How many children have completed."""
        return self._completed_tasks

    def on_child_completed(self, task: Task[Any]) -> None:
        if self._is_complete:
            return
        slots = self._first_time(task)
        if not slots:
            return
        self._completed_tasks += slots
        failure = _child_failure(task)
        if failure is not None:
            self._failed_tasks += slots
            if self._first_failure is None:
                self._first_failure = failure
        if self._completed_tasks < len(self._tasks):
            return
        if self._first_failure is not None:
            self._exception = self._first_failure
        else:
            self._result = [child.get_result() for child in self._tasks]
        self._complete_composite()


class WhenAnyTask(CompositeTask[Task[T]]):
    """Completes when the first child completes; its result is that child task."""

    def __init__(self, tasks: list[Task[T]]):
        super().__init__(list(tasks))

    def on_child_completed(self, task: Task[Any]) -> None:
        if self._is_complete:
            return
        self._completed_tasks += 1
        self._result = task
        self._complete_composite()


def when_all(tasks: list[Task[T]]) -> WhenAllTask[T]:
    """A task whose result is the list of all the tasks' results, in order.

    It waits for every task; if any failed it then raises the first failure.
    """
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[T]]) -> WhenAnyTask[T]:
    """A task whose result is the first of ``tasks`` to complete (the task, not its value)."""
    return WhenAnyTask(list(tasks))


# -------------------------------------------------------------- retry policy


class RetryPolicy:
    """How a failed activity or sub-orchestration call is retried.

    The delay before attempt k+1 is ``first_retry_interval * backoff_coefficient**(k-1)``,
    capped by ``max_retry_interval``; no retry starts once ``retry_timeout`` has passed
    since the first attempt. Beyond the reference SDK: ``non_retryable_errors``
    (exception types or type names, matched with FailureDetails.is_caused_by) and
    ``handle`` (a callable given the failure's FailureDetails that returns whether to retry).
    """

    def __init__(
        self,
        *,
        first_retry_interval: timedelta,
        max_number_of_attempts: int,
        backoff_coefficient: float | None = 1.0,
        max_retry_interval: timedelta | None = None,
        retry_timeout: timedelta | None = None,
        non_retryable_errors: Sequence[type[BaseException] | str] | None = None,
        handle: Callable[[FailureDetails], bool] | None = None,
    ):
        if first_retry_interval < timedelta(0):
            raise ValueError("first_retry_interval must be >= 0")
        if max_number_of_attempts < 1:
            raise ValueError("max_number_of_attempts must be >= 1")
        if backoff_coefficient is not None and backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be >= 1")
        if max_retry_interval is not None and max_retry_interval < timedelta(0):
            raise ValueError("max_retry_interval must be >= 0")
        if retry_timeout is not None and retry_timeout < timedelta(0):
            raise ValueError("retry_timeout must be >= 0")
        for err in non_retryable_errors or ():
            if not isinstance(err, str) and not (isinstance(err, type) and issubclass(err, BaseException)):
                raise TypeError(f"non_retryable_errors takes exception types or type names, not {err!r}")
        if handle is not None and not callable(handle):
            raise TypeError("handle must be callable")
        self._first_retry_interval = first_retry_interval
        self._max_number_of_attempts = max_number_of_attempts
        self._backoff_coefficient = backoff_coefficient
        self._max_retry_interval = max_retry_interval
        self._retry_timeout = retry_timeout
        self._non_retryable_errors = tuple(non_retryable_errors or ())
        self._handle = handle

    @property
    def first_retry_interval(self) -> timedelta:
        """Delay before the first retry."""
        return self._first_retry_interval

    @property
    def max_number_of_attempts(self) -> int:
        """Total number of attempts, the first included."""
        return self._max_number_of_attempts

    @property
    def backoff_coefficient(self) -> float | None:
        """Factor applied to the delay after each retry."""
        return self._backoff_coefficient

    @property
    def max_retry_interval(self) -> timedelta | None:
        """Upper bound of any delay."""
        return self._max_retry_interval

    @property
    def retry_timeout(self) -> timedelta | None:
        """No retry starts once this much time has passed since the first attempt."""
        return self._retry_timeout

    @property
    def non_retryable_errors(self) -> tuple[type[BaseException] | str, ...]:
        """Error types (or names) that are never retried."""
        return self._non_retryable_errors

    @property
    def handle(self) -> Callable[[FailureDetails], bool] | None:
        """Optional per-failure decision: return False to stop retrying."""
        return self._handle

    def is_retryable(self, details: FailureDetails) -> bool:
        """Whether this policy allows retrying a failure (attempts and timing aside)."""
        if any(details.is_caused_by(err) for err in self._non_retryable_errors):
            return False
        if self._handle is not None:
            return bool(self._handle(details))
        return True


# ----------------------------------------------------------------- contexts


class ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that says nothing while the orchestrator is replaying."""

    def __init__(self, logger: logging.Logger, is_replaying: Callable[[], bool]) -> None:
        super().__init__(logger, {})
        self._is_replaying = is_replaying

    def isEnabledFor(self, level: int) -> bool:
        """False during replay, otherwise the wrapped logger's answer."""
        if self._is_replaying():
            return False
        return self.logger.isEnabledFor(level)


class OrchestrationContext(ABC):
    """What an orchestrator function can do; the worker provides the implementation."""

    @property
    @abstractmethod
    def instance_id(self) -> str:
        """The ID of this orchestration instance."""

    @property
    @abstractmethod
    def parent_instance_id(self) -> str | None:
        """The parent's instance ID for a sub-orchestration, else None."""

    @property
    @abstractmethod
    def version(self) -> str | None:
        """The version the instance was scheduled with, or None."""

    @property
    @abstractmethod
    def current_utc_datetime(self) -> datetime:
        """The deterministic current time (naive UTC): the timestamp of the current turn."""

    @property
    @abstractmethod
    def is_replaying(self) -> bool:
        """True while the orchestrator is re-executing past turns from history."""

    @abstractmethod
    def set_custom_status(self, custom_status: Any) -> None:
        """Set the instance's custom status (any serializable value)."""

    @abstractmethod
    def create_timer(self, fire_at: datetime | timedelta) -> TimerTask:
        """A durable timer due at ``fire_at`` (or after a delay)."""

    @abstractmethod
    def call_activity(
        self,
        activity: Activity[TInput, TOutput] | str,
        *,
        input: TInput | None = None,
        retry_policy: RetryPolicy | None = None,
        tags: dict[str, str] | None = None,
        return_type: type | None = None,
    ) -> CompletableTask[Any]:
        """Schedule an activity; the task completes with its result or fails with TaskFailedError."""

    @abstractmethod
    def call_entity(
        self,
        entity: EntityInstanceId,
        operation: str,
        input: Any = None,
        *,
        return_type: type | None = None,
    ) -> CompletableTask[Any]:
        """Call an entity operation and wait for its result."""

    @abstractmethod
    def signal_entity(
        self,
        entity_id: EntityInstanceId,
        operation_name: str,
        input: Any = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed."""

    @abstractmethod
    def lock_entities(self, entities: list[EntityInstanceId]) -> CompletableTask[EntityLock]:
        """Lock entities for a critical section: ``with (yield ctx.lock_entities([...])):``."""

    @abstractmethod
    def call_sub_orchestrator(
        self,
        orchestrator: Orchestrator[TInput, TOutput] | str,
        *,
        input: TInput | None = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        return_type: type | None = None,
    ) -> CompletableTask[Any]:
        """Start a child orchestration and wait for its output."""

    @abstractmethod
    def wait_for_external_event(self, name: str, *, data_type: type | None = None) -> CancellableTask[Any]:
        """Wait for an external event (names compare case-insensitively)."""

    def send_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        """Send a one-way event to another instance."""
        raise NotImplementedError("this context does not support send_event()")

    @abstractmethod
    def continue_as_new(self, new_input: Any, *, save_events: bool = False, new_version: str | None = None) -> None:
        """Restart the orchestration with a fresh history and ``new_input``; return right after."""

    @abstractmethod
    def new_uuid(self) -> str:
        """A UUID that is the same on every replay."""

    def create_replay_safe_logger(self, logger: logging.Logger) -> ReplaySafeLogger:
        """Wrap ``logger`` so it is silent while replaying."""
        return ReplaySafeLogger(logger, lambda: self.is_replaying)


class ActivityContext:
    """What an activity knows about its invocation."""

    def __init__(
        self,
        orchestration_id: str,
        task_id: int,
        *,
        tags: dict[str, str] | None = None,
        attempt: int | None = None,
    ):
        self._orchestration_id = orchestration_id
        self._task_id = task_id
        self._tags = dict(tags) if tags else {}
        self._attempt = attempt

    @property
    def orchestration_id(self) -> str:
        """The ID of the orchestration instance that scheduled the activity."""
        return self._orchestration_id

    @property
    def task_id(self) -> int:
        """The scheduling action's ID, unique within the orchestration."""
        return self._task_id

    @property
    def tags(self) -> dict[str, str]:
        """Tags given to call_activity."""
        return self._tags

    @property
    def attempt(self) -> int | None:
        """The attempt number when known (1 for the first), else None."""
        return self._attempt


# --------------------------------------------------------------- type aliases

Orchestrator: TypeAlias = Callable[
    [OrchestrationContext, TInput], Union[Generator[Task[Any], Any, TOutput], TOutput]
]
Activity: TypeAlias = Callable[[ActivityContext, TInput], TOutput]
Entity: TypeAlias = Union[Callable[[EntityContext, TInput], TOutput], type[DurableEntity]]


def get_entity_name(fn: Entity) -> str:
    """The registration name of an entity function or class."""
    explicit = getattr(fn, "__durable_entity_name__", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return get_name(fn)
