"""What the sidecar reports about an entity: ID, last change, backlog, lock holder, state."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, overload

from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb

if TYPE_CHECKING:
    from durabletask.serialization import DataConverter

TState = TypeVar("TState")


class EntityMetadata:
    """An entity as returned by ``get_entity`` / ``get_all_entities``.

    ``last_modified`` is an aware UTC datetime. The state is kept as the raw
    serialized payload: ``get_state()`` returns it as is, ``get_state(T)``
    converts the raw string with ``T(raw)``; ``get_typed_state(T)`` decodes
    the payload with the data converter.
    """

    def __init__(
        self,
        id: EntityInstanceId,
        last_modified: datetime,
        backlog_queue_size: int,
        locked_by: str,
        includes_state: bool,
        state: Any | None,
        data_converter: DataConverter | None = None,
    ) -> None:
        self.id = id
        self.last_modified = last_modified
        self.backlog_queue_size = backlog_queue_size
        self._locked_by = locked_by
        self.includes_state = includes_state
        self._state = state
        self._data_converter = data_converter

    def __repr__(self) -> str:
        return (
            f"EntityMetadata(id={self.id!s}, last_modified={self.last_modified.isoformat()}, "
            f"backlog_queue_size={self.backlog_queue_size}, locked_by={self._locked_by or None!r}, "
            f"includes_state={self.includes_state})"
        )

    @staticmethod
    def from_entity_response(
        entity_response: pb.GetEntityResponse, includes_state: bool, data_converter: DataConverter
    ) -> EntityMetadata:
        """Build from a GetEntity response (which must say the entity exists)."""
        return EntityMetadata.from_entity_metadata(entity_response.entity, includes_state, data_converter)

    @staticmethod
    def from_entity_metadata(
        entity: pb.EntityMetadata, includes_state: bool, data_converter: DataConverter
    ) -> EntityMetadata:
        """Build from the wire ``EntityMetadata``."""
        try:
            entity_id = EntityInstanceId.parse(entity.instanceId)
        except ValueError as ex:
            raise ValueError(f"the sidecar returned an invalid entity instance ID {entity.instanceId!r}") from ex
        state = None
        if includes_state and entity.HasField("serializedState"):
            state = entity.serializedState.value
        return EntityMetadata(
            id=entity_id,
            last_modified=entity.lastModifiedTime.ToDatetime(timezone.utc),
            backlog_queue_size=entity.backlogQueueSize,
            locked_by=entity.lockedBy.value,
            includes_state=includes_state,
            state=state,
            data_converter=data_converter,
        )

    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...

    @overload
    def get_state(self, intended_type: None = None) -> Any: ...

    def get_state(self, intended_type: Any = None) -> Any:
        """The raw serialized state (None when absent or not requested).

        With ``intended_type`` the raw string is converted by calling
        ``intended_type(raw)``; a failed conversion raises TypeError.
        """
        if intended_type is None or self._state is None:
            return self._state
        if isinstance(intended_type, type) and isinstance(self._state, intended_type):
            return self._state
        try:
            return intended_type(self._state)
        except Exception as ex:
            target = getattr(intended_type, "__name__", repr(intended_type))
            raise TypeError(
                f"could not convert the state of entity '{self.id}' ({type(self._state).__name__}) to {target}"
            ) from ex

    @overload
    def get_typed_state(self, intended_type: type[TState]) -> TState | None: ...

    @overload
    def get_typed_state(self, intended_type: None = None) -> Any: ...

    def get_typed_state(self, intended_type: Any = None) -> Any:
        """The state decoded by the data converter (as ``intended_type`` when given), or None."""
        if self._state is None:
            return None
        converter = self._data_converter
        if converter is None:
            from durabletask.serialization import default_converter

            converter = default_converter()
        return converter.deserialize(self._state, intended_type)

    def get_locked_by(self) -> EntityInstanceId | str | None:
        """Who holds the entity's lock, or None when it is unlocked.

        Locks are held by orchestrations, so this is normally the holder's instance
        ID (a str); a holder written as ``@name@key`` is returned as an EntityInstanceId.
        """
        if not self._locked_by:
            return None
        if self._locked_by.startswith("@"):
            try:
                return EntityInstanceId.parse(self._locked_by)
            except ValueError:
                pass
        return self._locked_by

    @property
    def locked_by(self) -> str | None:
        """The raw lock holder (an orchestration instance ID), or None when unlocked."""
        return self._locked_by or None
