"""What an entity operation sees: its ID, the operation, the state, and outgoing messages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from durabletask.entities.entity_instance_id import EntityInstanceId, as_entity_id
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.naming import get_name

if TYPE_CHECKING:
    from durabletask.serialization import DataConverter

TState = TypeVar("TState")


class EntityStateHolder(Protocol):
    """The running batch's state and outgoing actions (the worker's entity executor provides it)."""

    def get_state(self, intended_type: Any = None, default: Any = None) -> Any:
        """The decoded state, or ``default`` when there is none."""

    def set_state(self, value: Any) -> None:
        """Replace the state (None deletes it)."""

    def add_action(self, action: pb.OperationAction) -> None:
        """Queue an outgoing signal or orchestration start of the running operation."""


class EntityContext:
    """The context of one entity operation.

    State changes and outgoing messages (signals, new orchestrations) take effect
    only if the operation returns; an exception rolls them back.
    """

    def __init__(
        self,
        orchestration_id: str,
        operation: str,
        state: EntityStateHolder,
        entity_id: EntityInstanceId,
        data_converter: DataConverter,
    ) -> None:
        self._orchestration_id = orchestration_id
        self._operation = operation
        self._state = state
        self._entity_id = entity_id
        self._data_converter = data_converter

    @property
    def orchestration_id(self) -> str:
        """The instance ID the operation runs under (the entity's ``@name@key``)."""
        return self._orchestration_id

    @property
    def operation(self) -> str:
        """The name of the operation being run."""
        return self._operation

    @property
    def entity_id(self) -> EntityInstanceId:
        """The ID of this entity."""
        return self._entity_id

    @overload
    def get_state(self, intended_type: type[TState], default: TState) -> TState: ...

    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...

    @overload
    def get_state(self, intended_type: None = None, default: Any = None) -> Any: ...

    def get_state(self, intended_type: Any = None, default: Any = None) -> Any:
        """The entity's state (decoded as ``intended_type`` when given), or ``default`` if it has none."""
        return self._state.get_state(intended_type, default)

    def set_state(self, new_state: Any) -> None:
        """Replace the entity's state; ``None`` deletes it."""
        self._state.set_state(new_state)

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation: str,
        input: Any | None = None,
        signal_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to an entity (possibly this one), optionally delayed."""
        target = as_entity_id(entity_instance_id)
        if not operation:
            raise ValueError("signal_entity needs an operation name")
        action = pb.OperationAction(
            sendSignal=pb.SendSignalAction(
                instanceId=str(target),
                name=operation,
                input=ph.string_value(self._data_converter.serialize(input)),
                scheduledTime=ph.new_timestamp(signal_time) if signal_time is not None else None,
            )
        )
        self._state.add_action(action)

    def schedule_new_orchestration(
        self,
        orchestration_name: str | Callable[..., Any],
        input: Any | None = None,
        instance_id: str | None = None,
    ) -> str:
        """Start an orchestration once the operation succeeds; returns its instance ID."""
        name = orchestration_name if isinstance(orchestration_name, str) else get_name(orchestration_name)
        if not name:
            raise ValueError("schedule_new_orchestration needs an orchestration name")
        new_id = instance_id or uuid.uuid4().hex
        action = pb.OperationAction(
            startNewOrchestration=pb.StartNewOrchestrationAction(
                instanceId=new_id,
                name=name,
                input=ph.string_value(self._data_converter.serialize(input)),
            )
        )
        self._state.add_action(action)
        return new_id
