"""Sagas inside orchestrators: register a compensation after each step, undo on failure.

::

    saga = Saga(ctx)
    try:
        yield ctx.call_activity(book_flight, input=trip)
        saga.add_compensation(cancel_flight, input=trip)
        yield ctx.call_activity(book_hotel, input=trip)
        saga.add_compensation(cancel_hotel, input=trip)
    except TaskFailedError as err:
        yield from saga.compensate_and_raise(err)

In an ``async def`` orchestrator the same calls are awaited: ``await saga.compensate_and_raise(err)``.

Compensations run newest first (or all at once with ``parallel=True``), each as an ordinary
activity call with its own optional retry policy. Every compensation is attempted even when an
earlier one fails; failures are collected and raised together with the original error as a
:class:`SagaFailedError`, never dropped. The saga only yields tasks of the orchestration context,
so it replays deterministically like any other orchestrator code.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from durabletask import task

SAGA_ERROR_TYPE = "durabletask.saga.SagaFailedError"
R = TypeVar("R")


class SagaSteps(Generic[R]):
    """The tasks a saga operation yields: ``yield from`` them in a generator orchestrator, ``await`` them
    in an ``async def`` one; either way the operation's value is the result (or its error is raised)."""

    def __init__(self, steps: Generator[task.Task[Any], Any, R]) -> None:
        self._steps = steps

    def __iter__(self) -> Generator[task.Task[Any], Any, R]:
        return self._steps

    def __await__(self) -> Generator[task.Task[Any], Any, R]:
        return self._steps


@dataclass(frozen=True)
class Compensation:
    """One registered undo action: an activity (name or function), its input and retry policy."""

    activity: str | Callable[..., Any]
    input: Any = None
    retry_policy: task.RetryPolicy | None = None

    @property
    def name(self) -> str:
        """The activity's registration name."""
        return self.activity if isinstance(self.activity, str) else task.get_name(self.activity)


@dataclass(frozen=True)
class CompensationFailure:
    """A compensation that failed: which activity, with which input, and why."""

    activity: str
    input: Any
    details: task.FailureDetails

    def describe(self) -> str:
        """``activity (ErrorType: message)``."""
        kind = self.details.error_type.rsplit(".", 1)[-1] or "Error"
        return f"{self.activity} ({kind}: {self.details.message})"


@dataclass(frozen=True)
class CompensationReport:
    """What a successful compensation run did: activity names and results, in the order run."""

    compensated: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)


def _original_details(original: BaseException | task.FailureDetails | None) -> task.FailureDetails | None:
    if original is None or isinstance(original, task.FailureDetails):
        return original
    if isinstance(original, task.TaskFailedError):
        return original.details
    return task.FailureDetails(str(original), f"{type(original).__module__}.{type(original).__qualname__}", None)


class SagaFailedError(task.TaskFailedError):
    """The saga failed: the original error (if any) and every compensation that failed too.

    ``original`` is the failure that triggered compensation (None when the compensations were
    run for another reason, e.g. a cancellation); ``compensation_failures`` lists the failed
    compensations in the order they ran; ``compensation_results`` holds the results of the
    compensations that succeeded.
    """

    def __init__(
        self,
        original: BaseException | task.FailureDetails | None,
        compensation_failures: list[CompensationFailure] | None = None,
        compensation_results: list[Any] | None = None,
    ) -> None:
        self.original = _original_details(original)
        self.compensation_failures = list(compensation_failures or [])
        self.compensation_results = list(compensation_results or [])
        parts = []
        if self.original is not None:
            parts.append(f"saga failed: {self.original.message}")
        if self.compensation_failures:
            listed = "; ".join(failure.describe() for failure in self.compensation_failures)
            parts.append(f"{len(self.compensation_failures)} compensation(s) failed: {listed}")
        elif self.original is not None:
            parts.append("every compensation succeeded")
        message = "; ".join(parts) or "saga failed"
        super().__init__(message, task.FailureDetails(message, SAGA_ERROR_TYPE, None, self.original))


class Saga:
    """Compensations registered by an orchestrator, run in reverse (or in parallel) on demand.

    ``parallel=True`` starts every compensation at once instead of one after the other, newest
    first. Create one per orchestration execution, inside the orchestrator function.
    """

    def __init__(self, ctx: task.OrchestrationContext, *, parallel: bool = False) -> None:
        if not isinstance(ctx, task.OrchestrationContext):
            raise TypeError(f"Saga needs the orchestration context, not {type(ctx).__name__}")
        self._ctx = ctx
        self._parallel = bool(parallel)
        self._pending: list[Compensation] = []

    @property
    def pending(self) -> list[Compensation]:
        """The compensations registered and not yet run, oldest first (a copy)."""
        return list(self._pending)

    def add_compensation(
        self,
        activity: str | Callable[..., Any],
        input: Any = None,
        *,
        retry_policy: task.RetryPolicy | None = None,
    ) -> None:
        """Register the activity that undoes the step that just succeeded."""
        if isinstance(activity, str):
            if not activity.strip():
                raise ValueError("a compensation needs an activity name, not an empty string")
        elif callable(activity):
            task.get_name(activity)
        else:
            raise TypeError(f"a compensation is an activity function or name, not {type(activity).__name__}")
        if retry_policy is not None and not isinstance(retry_policy, task.RetryPolicy):
            raise TypeError(f"retry_policy must be a RetryPolicy, not {type(retry_policy).__name__}")
        self._pending.append(Compensation(activity, input, retry_policy))

    def compensate(self, original: BaseException | task.FailureDetails | None = None) -> SagaSteps[CompensationReport]:
        """Run every pending compensation (``yield from saga.compensate(err)``, or ``await`` it); clears them.

        Returns a report when all succeeded. If any failed, raises :class:`SagaFailedError`
        carrying ``original`` and every failure, after all of them were attempted.
        """
        return SagaSteps(self._compensate(original))

    def _compensate(
        self, original: BaseException | task.FailureDetails | None
    ) -> Generator[task.Task[Any], Any, CompensationReport]:
        batch = list(reversed(self._pending))
        self._pending.clear()
        if self._parallel:
            outcomes = yield from self._run_parallel(batch)
        else:
            outcomes = yield from self._run_sequential(batch)
        report = CompensationReport()
        failures: list[CompensationFailure] = []
        for compensation, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                report.compensated.append(compensation.name)
                report.results.append(value)
            else:
                failures.append(CompensationFailure(compensation.name, compensation.input, value))
        if failures:
            raise SagaFailedError(original, failures, report.results)
        return report

    def compensate_and_raise(self, original: BaseException | task.FailureDetails) -> SagaSteps[None]:
        """Run the compensations, then raise :class:`SagaFailedError` with ``original`` (always)."""
        return SagaSteps(self._compensate_and_raise(original))

    def _compensate_and_raise(
        self, original: BaseException | task.FailureDetails
    ) -> Generator[task.Task[Any], Any, None]:
        report = yield from self._compensate(original)
        raise SagaFailedError(original, [], report.results)

    def _call(self, compensation: Compensation) -> task.Task[Any]:
        return self._ctx.call_activity(
            compensation.activity, input=compensation.input, retry_policy=compensation.retry_policy
        )

    def _run_sequential(
        self, batch: list[Compensation]
    ) -> Generator[task.Task[Any], Any, list[tuple[bool, Any]]]:
        outcomes: list[tuple[bool, Any]] = []
        for compensation in batch:
            try:
                outcomes.append((True, (yield self._call(compensation))))
            except task.TaskFailedError as err:
                outcomes.append((False, err.details))
        return outcomes

    def _run_parallel(
        self, batch: list[Compensation]
    ) -> Generator[task.Task[Any], Any, list[tuple[bool, Any]]]:
        calls = [self._call(compensation) for compensation in batch]
        if calls:
            try:
                yield task.when_all(calls)
            except task.TaskFailedError:
                pass  # each call's own outcome is read below
        return [
            (False, call.get_exception().details) if call.is_failed else (True, call.get_result())
            for call in calls
        ]
