"""Starting, watching and cancelling declarative workflows through our client, sync and async."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from durabletask.client import OrchestrationState, OrchestrationStatus
from durabletask.workflows.definition import WorkflowDefinition
from durabletask.workflows.runtime import CANCEL_EVENT, STATUS_MARKER

if TYPE_CHECKING:
    from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient


class UnknownWorkflowError(ValueError):
    """``execute_workflow`` was given a workflow name the facade does not know."""


class WorkflowNotFoundError(LookupError):
    """No workflow instance has this ID."""


class WorkflowStateError(ValueError):
    """The instance is not a declarative workflow, or has already ended (cannot be cancelled)."""


class WorkflowState(str, Enum):
    """Where a workflow instance is."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for the states a workflow ends in."""
        return self not in (WorkflowState.PENDING, WorkflowState.RUNNING)


@dataclass(frozen=True)
class WorkflowStatus:
    """A snapshot of one workflow instance.

    ``current_step`` is the step running now (several running in parallel are joined with
    ", "); ``step_results`` maps completed step names to their results; ``error`` says why the
    workflow failed, was compensated, or could not be compensated.
    """

    instance_id: str
    workflow_name: str
    state: WorkflowState
    current_step: str | None
    step_results: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime
    current_steps: list[str] = field(default_factory=list)
    completed_steps: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    compensating: bool = False
    compensated_steps: list[str] = field(default_factory=list)
    compensation_failures: list[dict[str, Any]] = field(default_factory=list)
    failed_step: str | None = None


_BY_RUNTIME_STATUS = {
    OrchestrationStatus.PENDING: WorkflowState.PENDING,
    OrchestrationStatus.RUNNING: WorkflowState.RUNNING,
    OrchestrationStatus.SUSPENDED: WorkflowState.RUNNING,
    OrchestrationStatus.CONTINUED_AS_NEW: WorkflowState.RUNNING,
    OrchestrationStatus.FAILED: WorkflowState.FAILED,
    OrchestrationStatus.TERMINATED: WorkflowState.FAILED,
}


def workflow_status(state: OrchestrationState) -> WorkflowStatus:
    """The workflow status of an orchestration state (its custom status is the workflow's document)."""
    document = state.get_custom_status() if state.serialized_custom_status else None
    if document is not None and not (isinstance(document, dict) and STATUS_MARKER in document):
        raise WorkflowStateError(f"instance '{state.instance_id}' is not a declarative workflow")
    document = document or {}
    runtime = state.runtime_status
    if runtime == OrchestrationStatus.COMPLETED:
        output = state.get_output() if state.serialized_output else None
        if isinstance(output, dict) and STATUS_MARKER in output:
            document = output
        workflow_state = WorkflowState(document.get("state", WorkflowState.COMPLETED.value))
    else:
        workflow_state = _BY_RUNTIME_STATUS.get(runtime, WorkflowState.RUNNING)
    error = document.get("error")
    if workflow_state == WorkflowState.FAILED and runtime == OrchestrationStatus.TERMINATED:
        error = "the orchestration was terminated"
    elif workflow_state == WorkflowState.FAILED and state.failure_details is not None:
        error = state.failure_details.message
    current = list(document.get("current_steps", []))
    return WorkflowStatus(
        instance_id=state.instance_id,
        workflow_name=document.get(STATUS_MARKER, state.name),
        state=workflow_state,
        current_step=", ".join(current) or None,
        step_results=dict(document.get("results", {})),
        error=error,
        created_at=state.created_at,
        updated_at=state.last_updated_at,
        current_steps=current,
        completed_steps=list(document.get("completed_steps", [])),
        skipped_steps=list(document.get("skipped_steps", [])),
        compensating=bool(document.get("compensating", False)),
        compensated_steps=list(document.get("compensated_steps", [])),
        compensation_failures=list(document.get("compensation_failures", [])),
        failed_step=document.get("failed_step"),
    )


class _Facade:
    """What the sync and async facades share: known workflows and argument checks."""

    def __init__(self, definitions: Iterable[WorkflowDefinition] | None) -> None:
        self._known: set[str] | None = None
        if definitions is not None:
            self._known = set()
            for definition in definitions:
                if not isinstance(definition, WorkflowDefinition):
                    raise TypeError(f"definitions must be WorkflowDefinitions, not {type(definition).__name__}")
                self._known.add(definition.name)

    def _workflow_name(self, workflow_id: object) -> str:
        if isinstance(workflow_id, WorkflowDefinition):
            workflow_id = workflow_id.name
        if not isinstance(workflow_id, str) or not workflow_id.strip():
            raise UnknownWorkflowError(f"a workflow ID must be a non-empty string, not {workflow_id!r}")
        if self._known is not None and workflow_id not in self._known:
            raise UnknownWorkflowError(f"unknown workflow '{workflow_id}'; known: {sorted(self._known)}")
        return workflow_id

    @staticmethod
    def _status(instance_id: str, state: OrchestrationState | None) -> WorkflowStatus:
        if state is None:
            raise WorkflowNotFoundError(f"no workflow instance '{instance_id}'")
        return workflow_status(state)

    @staticmethod
    def _check_cancellable(status: WorkflowStatus) -> None:
        if status.state.is_finished:
            raise WorkflowStateError(f"workflow instance '{status.instance_id}' has already ended ({status.state.value})")


class WorkflowClient(_Facade):
    """Runs declarative workflows through a TaskHubGrpcClient.

    ``definitions`` (optional) are the workflows the workers know; given them, starting any
    other name raises UnknownWorkflowError at once instead of failing on the worker.
    """

    def __init__(self, client: TaskHubGrpcClient, definitions: Iterable[WorkflowDefinition] | None = None) -> None:
        super().__init__(definitions)
        self._client = client

    def execute_workflow(
        self, workflow_id: str | WorkflowDefinition, initial_context: Any = None, *, instance_id: str | None = None
    ) -> str:
        """Start the workflow named ``workflow_id`` with ``initial_context``; returns the instance ID."""
        name = self._workflow_name(workflow_id)
        return self._client.schedule_new_orchestration(name, input=initial_context, instance_id=instance_id)

    def get_status(self, instance_id: str) -> WorkflowStatus:
        """The workflow's current status; WorkflowNotFoundError for an unknown ID."""
        return self._status(instance_id, self._client.get_orchestration_state(instance_id))

    def wait_for_workflow(self, instance_id: str, *, timeout: float = 60) -> WorkflowStatus:
        """Wait until the workflow has ended (TimeoutError otherwise) and return its status."""
        return self._status(instance_id, self._client.wait_for_orchestration_completion(instance_id, timeout=timeout))

    def cancel_workflow(self, instance_id: str) -> None:
        """Ask the workflow to stop: it lets a running step finish, compensates, ends as cancelled."""
        self._check_cancellable(self.get_status(instance_id))
        self._client.raise_orchestration_event(instance_id, CANCEL_EVENT)


class AsyncWorkflowClient(_Facade):
    """The async twin of WorkflowClient, over an AsyncTaskHubGrpcClient."""

    def __init__(
        self, client: AsyncTaskHubGrpcClient, definitions: Iterable[WorkflowDefinition] | None = None
    ) -> None:
        super().__init__(definitions)
        self._client = client

    async def execute_workflow(
        self, workflow_id: str | WorkflowDefinition, initial_context: Any = None, *, instance_id: str | None = None
    ) -> str:
        """Start the workflow named ``workflow_id`` with ``initial_context``; returns the instance ID."""
        name = self._workflow_name(workflow_id)
        return await self._client.schedule_new_orchestration(name, input=initial_context, instance_id=instance_id)

    async def get_status(self, instance_id: str) -> WorkflowStatus:
        """The workflow's current status; WorkflowNotFoundError for an unknown ID."""
        return self._status(instance_id, await self._client.get_orchestration_state(instance_id))

    async def wait_for_workflow(self, instance_id: str, *, timeout: float = 60) -> WorkflowStatus:
        """Wait until the workflow has ended (TimeoutError otherwise) and return its status."""
        state = await self._client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        return self._status(instance_id, state)

    async def cancel_workflow(self, instance_id: str) -> None:
        """Ask the workflow to stop: it lets a running step finish, compensates, ends as cancelled."""
        self._check_cancellable(await self.get_status(instance_id))
        await self._client.raise_orchestration_event(instance_id, CANCEL_EVENT)
