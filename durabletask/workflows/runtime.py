"""Running a WorkflowDefinition as an ordinary generator orchestration, and registering it on a worker.

Each step's activity gets ``{"context": initial_context, "results": {step: result, ...}}`` (or
what the step's ``input`` builder returns); each compensation gets ``{"step": name, "result":
the step's result, "context": initial_context}``. The custom status (and, once done, the output)
is the workflow's status document built by :meth:`WorkflowRun.snapshot`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from durabletask import task
from durabletask.saga import Saga, SagaFailedError
from durabletask.workflows.definition import WorkflowDefinition, WorkflowStep, WorkflowView

if TYPE_CHECKING:
    from durabletask.worker import TaskHubGrpcWorker

CANCEL_EVENT = "durabletask.workflow.cancel"
"""The external event ``cancel_workflow`` raises; the workflow waits on it beside every step."""

STATUS_MARKER = "workflow"


def _failure(step: str, what: str, exc: BaseException) -> task.FailureDetails:
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return task.FailureDetails(f"step '{step}': {what} raised {type(exc).__name__}: {exc}", kind, None)


class WorkflowRun:
    """One execution of a workflow inside an orchestration (rebuilt on every replay)."""

    def __init__(self, definition: WorkflowDefinition, ctx: task.OrchestrationContext, initial_context: Any) -> None:
        self.definition = definition
        self.ctx = ctx
        self.initial_context = initial_context
        self.state = "running"
        self.results: dict[str, Any] = {}
        self.completed: list[str] = []
        self.skipped: list[str] = []
        self.current: list[str] = []
        self.compensating = False
        self.compensated: list[str] = []
        self.compensation_failures: list[dict[str, Any]] = []
        self.failed_step: str | None = None
        self.error: str | None = None
        self.saga = Saga(ctx)

    def snapshot(self) -> dict[str, Any]:
        """The status document kept as custom status (and returned as output at the end)."""
        return {
            STATUS_MARKER: self.definition.name,
            "state": self.state,
            "current_steps": list(self.current),
            "results": dict(self.results),
            "completed_steps": list(self.completed),
            "skipped_steps": list(self.skipped),
            "compensating": self.compensating,
            "compensated_steps": list(self.compensated),
            "compensation_failures": list(self.compensation_failures),
            "failed_step": self.failed_step,
            "error": self.error,
        }

    def publish(self) -> None:
        """Store the current snapshot as the instance's custom status."""
        self.ctx.set_custom_status(self.snapshot())

    def view(self) -> WorkflowView:
        """A read-only view for conditions and input builders."""
        return WorkflowView(self.definition.name, self.ctx.instance_id, self.initial_context, self.results)

    def _select(self, stage: tuple[WorkflowStep, ...]) -> list[tuple[WorkflowStep, Any]] | task.FailureDetails:
        """The steps of a stage that run, with their inputs; or the failure of a condition/input builder."""
        view = self.view()
        chosen: list[tuple[WorkflowStep, Any]] = []
        for step in stage:
            if step.condition is not None:
                try:
                    runs = bool(step.condition(view))
                except Exception as exc:
                    self.failed_step = step.name
                    return _failure(step.name, "its condition", exc)
                if not runs:
                    self.skipped.append(step.name)
                    continue
            try:
                step_input = step.input(view) if step.input is not None else {
                    "context": self.initial_context,
                    "results": dict(self.results),
                }
            except Exception as exc:
                self.failed_step = step.name
                return _failure(step.name, "its input builder", exc)
            chosen.append((step, step_input))
        return chosen

    def _record(self, step: WorkflowStep, result: Any) -> None:
        self.results[step.name] = result
        self.completed.append(step.name)
        if step.compensation is not None:
            self.saga.add_compensation(
                step.compensation,
                {"step": step.name, "result": result, "context": self.initial_context},
                retry_policy=self.definition.retry_policy_for(step),
            )

    def run(self) -> Generator[task.Task[Any], Any, dict[str, Any]]:
        """Run the stages in order; compensate on failure or cancellation."""
        cancel = self.ctx.wait_for_external_event(CANCEL_EVENT)
        failure: task.FailureDetails | None = None
        cancelled = False
        self.publish()
        for stage in self.definition.stages:
            if cancel.is_complete:
                cancelled = True
                break
            selected = self._select(stage)
            if isinstance(selected, task.FailureDetails):
                failure = selected
                break
            if not selected:
                continue
            self.current = [step.name for step, _ in selected]
            self.publish()
            calls: list[task.Task[Any]] = [
                self.ctx.call_activity(step.activity, input=step_input, retry_policy=self.definition.retry_policy_for(step))
                for step, step_input in selected
            ]
            work: task.Task[Any] = calls[0] if len(calls) == 1 else task.when_all(calls)
            winner = yield task.when_any([work, cancel])
            if winner is not work:
                cancelled = True
                if not work.is_complete:  # a step already started is let finish, then compensated
                    try:
                        yield work
                    except task.TaskFailedError:
                        pass
            for (step, _), call in zip(selected, calls, strict=True):
                if not call.is_failed:
                    self._record(step, call.get_result())
                elif failure is None and not cancelled:
                    self.failed_step = step.name
                    details = call.get_exception().details
                    failure = task.FailureDetails(
                        f"step '{step.name}' failed: {details.message}", details.error_type, details.stack_trace
                    )
            self.current = []
            if failure is not None or cancelled:
                break
        if not cancel.is_complete:
            cancel.cancel()
        if failure is None and not cancelled:
            self.state = "completed"
            self.publish()
            return self.snapshot()
        return (yield from self._compensate(failure, cancelled))

    def _compensate(
        self, failure: task.FailureDetails | None, cancelled: bool
    ) -> Generator[task.Task[Any], Any, dict[str, Any]]:
        self.error = failure.message if failure is not None else None
        to_undo = [step for step in reversed(self.definition.steps) if step.name in self.completed and step.compensation]
        self.compensating = bool(to_undo)
        self.publish()
        try:
            yield from self.saga.compensate(failure)
        except SagaFailedError as err:
            failed = {f.input["step"] for f in err.compensation_failures}
            self.compensated = [step.name for step in to_undo if step.name not in failed]
            self.compensation_failures = [
                {"step": f.input["step"], "activity": f.activity, "error": f.details.message}
                for f in err.compensation_failures
            ]
            self.compensating = False
            self.state = "failed"
            self.error = str(err)
            self.publish()
            raise
        self.compensated = [step.name for step in to_undo]
        self.compensating = False
        self.state = "cancelled" if cancelled else "compensated"
        self.publish()
        return self.snapshot()


def workflow_orchestrator(definition: WorkflowDefinition) -> Callable[..., Any]:
    """The generator orchestrator that runs ``definition``; its ``__name__`` is the workflow's name."""
    if not isinstance(definition, WorkflowDefinition):
        raise TypeError(f"expected a WorkflowDefinition (from WorkflowBuilder.build()), not {type(definition).__name__}")

    def orchestrator(ctx: task.OrchestrationContext, initial_context: Any) -> Generator[task.Task[Any], Any, Any]:
        return (yield from WorkflowRun(definition, ctx, initial_context).run())

    orchestrator.__name__ = definition.name
    orchestrator.__qualname__ = f"workflow[{definition.name}]"
    orchestrator.__doc__ = f"The declarative workflow '{definition.name}'."
    return orchestrator


def register_workflow(worker: TaskHubGrpcWorker, definition: WorkflowDefinition, *, register_activities: bool = True) -> str:
    """Register the workflow's orchestrator on ``worker`` (a TaskHubGrpcWorker); returns its name.

    With ``register_activities`` the activities given as functions are registered too; one the
    worker already has (the same function, e.g. shared with another workflow) is left as is.
    Everything is checked first: on error nothing is registered.
    """
    orchestrator = workflow_orchestrator(definition)
    if worker.is_running:
        raise RuntimeError("register workflows before the worker starts")
    registry = worker._registry  # the worker has no public lookup of what is registered
    if registry.get_orchestrator(definition.name) is not None:
        raise ValueError(f"an orchestrator named '{definition.name}' is already registered")
    to_add = []
    if register_activities:
        for name, fn in definition.activity_functions().items():
            known = registry.get_activity(name)
            if known is None:
                to_add.append(fn)
            elif known is not fn:
                raise ValueError(f"workflow '{definition.name}': another activity named '{name}' is already registered")
    worker.add_orchestrator(orchestrator)
    for fn in to_add:
        worker.add_activity(fn)
    return definition.name
