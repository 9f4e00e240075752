"""The error a failed entity call carries back to the calling orchestration."""

from __future__ import annotations

from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal.orchestrator_service_pb2 import TaskFailureDetails


class EntityOperationFailedException(Exception):
    """An entity operation called from an orchestration raised an exception.

    ``failure_details`` is the entity-side failure (error type, message, stack trace).
    """

    def __init__(
        self, entity_instance_id: EntityInstanceId, operation_name: str, failure_details: TaskFailureDetails
    ) -> None:
        super().__init__()
        self.entity_instance_id = entity_instance_id
        self.operation_name = operation_name
        self.failure_details = failure_details

    def __str__(self) -> str:
        return (
            f"Operation '{self.operation_name}' on entity '{self.entity_instance_id}' failed with error: "
            f"{self.failure_details.errorMessage}"
        )
