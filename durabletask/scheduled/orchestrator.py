"""The orchestration through which clients change a schedule.

A client starts ``execute_schedule_operation_orchestrator`` with a
``ScheduleOperationRequest`` and waits for it: the orchestration calls the schedule
entity (a two-way call), so the client learns whether the operation succeeded,
and why not.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from durabletask import task
from durabletask.entities import EntityInstanceId
from durabletask.scheduled.schedule_entity import ENTITY_NAME


@dataclass
class ScheduleOperationRequest:
    """One operation on one schedule entity.

    ``entity_id`` is the entity's ``@schedule@<id>`` form; ``input`` is the
    operation's input as JSON-ready data (options objects are written with their
    ``to_json``).
    """

    entity_id: str
    operation_name: str
    input: Any | None = None


def execute_schedule_operation_orchestrator(
    ctx: task.OrchestrationContext, request: ScheduleOperationRequest
) -> Generator[task.Task[Any], Any, Any]:
    """Run ``request`` against its schedule entity and return the operation's result."""
    if not isinstance(request, ScheduleOperationRequest):
        raise ValueError(f"expected a ScheduleOperationRequest, got {type(request).__name__}")
    entity_id = EntityInstanceId.parse(request.entity_id)
    if entity_id.entity != ENTITY_NAME:
        raise ValueError(f"'{request.entity_id}' is not a schedule entity (its name must be '{ENTITY_NAME}')")
    result = yield ctx.call_entity(entity_id, request.operation_name, request.input)
    return result
