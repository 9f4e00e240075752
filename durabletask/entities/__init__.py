"""Durable entities: addressable units of state that process operations one at a time.

``EntityInstanceId`` names an entity; entities are functions ``(ctx: EntityContext, input)``
or ``DurableEntity`` subclasses. Orchestrations call, signal and lock them; clients signal
and query them.
"""

from durabletask.entities.durable_entity import DurableEntity
from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.entities.entity_lock import EntityLock
from durabletask.entities.entity_metadata import EntityMetadata
from durabletask.entities.entity_operation_failed_exception import EntityOperationFailedException

__all__ = [
    "DurableEntity",
    "EntityContext",
    "EntityInstanceId",
    "EntityLock",
    "EntityMetadata",
    "EntityOperationFailedException",
]

PACKAGE_NAME = "durabletask.entities"
