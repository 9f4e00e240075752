"""Base class of class-based entities: each public method is an operation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, overload

from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId

TState = TypeVar("TState")


class DurableEntity:
    """Subclass this and write operations as methods taking an optional input.

    A fresh object serves every operation, so keep data in the entity's state
    (``get_state``/``set_state``), not in attributes. ``delete`` is provided:
    it clears the state.
    """

    entity_context: EntityContext

    def _initialize_entity_context(self, context: EntityContext) -> None:
        self.entity_context = context

    @overload
    def get_state(self, intended_type: type[TState], default: TState) -> TState: ...

    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...

    @overload
    def get_state(self, intended_type: None = None, default: Any = None) -> Any: ...

    def get_state(self, intended_type: Any = None, default: Any = None) -> Any:
        """The entity's state (decoded as ``intended_type`` when given), or ``default``."""
        return self.entity_context.get_state(intended_type, default)

    def set_state(self, state: Any) -> None:
        """Replace the entity's state; ``None`` deletes it."""
        self.entity_context.set_state(state)

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity, optionally delayed."""
        self.entity_context.signal_entity(entity_instance_id, operation, input, signal_time)

    def schedule_new_orchestration(
        self,
        orchestration_name: str | Callable[..., Any],
        input: Any | None = None,
        instance_id: str | None = None,
    ) -> str:
        """Start an orchestration once the operation succeeds; returns its instance ID."""
        return self.entity_context.schedule_new_orchestration(orchestration_name, input, instance_id=instance_id)

    def delete(self, input: Any = None) -> None:
        """The default ``delete`` operation: clear the state (the input is ignored)."""
        self.set_state(None)
