"""Declarative workflows: describe steps with WorkflowBuilder, run them as an ordinary orchestration.

::

    definition = (
        WorkflowBuilder("order_processing")
        .add_step("reserve", reserve_stock, compensation=release_stock)
        .add_conditional_step("review", manual_review, condition=lambda view: view["amount"] > 1000)
        .add_parallel_steps([{"name": "charge", "activity": charge, "compensation": refund},
                             {"name": "label", "activity": print_label}])
        .with_retry_config(max_retries=2, backoff_factor=2.0)
        .build()
    )
    register_workflow(worker, definition)
    instance_id = WorkflowClient(client).execute_workflow("order_processing", {"amount": 40})

When a step fails (or the workflow is cancelled) the completed steps' compensations run newest
first, through :mod:`durabletask.saga`.
"""

from __future__ import annotations

from durabletask.workflows.client import (
    AsyncWorkflowClient,
    UnknownWorkflowError,
    WorkflowClient,
    WorkflowNotFoundError,
    WorkflowState,
    WorkflowStateError,
    WorkflowStatus,
    workflow_status,
)
from durabletask.workflows.definition import (
    RetryConfig,
    WorkflowBuilder,
    WorkflowDefinition,
    WorkflowStep,
    WorkflowView,
)
from durabletask.workflows.runtime import CANCEL_EVENT, register_workflow, workflow_orchestrator

__all__ = [
    "CANCEL_EVENT",
    "AsyncWorkflowClient",
    "RetryConfig",
    "UnknownWorkflowError",
    "WorkflowBuilder",
    "WorkflowClient",
    "WorkflowDefinition",
    "WorkflowNotFoundError",
    "WorkflowState",
    "WorkflowStateError",
    "WorkflowStatus",
    "WorkflowStep",
    "WorkflowView",
    "register_workflow",
    "workflow_orchestrator",
    "workflow_status",
]
