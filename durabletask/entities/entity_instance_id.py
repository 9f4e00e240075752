"""The identity of an entity: its (lower-cased) name and a key, written ``@name@key``."""

from __future__ import annotations

from functools import total_ordering


@total_ordering
class EntityInstanceId:
    """Names one entity instance. Neither part may be empty or contain ``@``.

    The entity name is stored lower-cased (entity names are case-insensitive);
    the key is kept as given. Instances compare, hash and sort by their string
    form, which is how lock sets are put into their global order.
    """

    __slots__ = ("entity", "key")

    entity: str
    key: str

    def __init__(self, entity: str, key: str) -> None:
        EntityInstanceId.validate_entity_name(entity)
        EntityInstanceId.validate_key(key)
        self.entity = entity.lower()
        self.key = key

    def __str__(self) -> str:
        return f"@{self.entity}@{self.key}"

    def __repr__(self) -> str:
        return f"EntityInstanceId(entity={self.entity!r}, key={self.key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityInstanceId):
            return False
        return self.entity == other.entity and self.key == other.key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, EntityInstanceId):
            return NotImplemented
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash((self.entity, self.key))

    @staticmethod
    def parse(entity_id: str) -> EntityInstanceId:
        """Read ``@name@key``; a malformed string raises ValueError naming it."""
        if not isinstance(entity_id, str):
            raise TypeError(f"an entity ID must be a string like '@name@key', not {type(entity_id).__name__}")
        if not entity_id.startswith("@"):
            raise ValueError(f"invalid entity ID {entity_id!r}: it must look like '@name@key'")
        parts = entity_id.split("@", 2)
        if len(parts) != 3:
            raise ValueError(f"invalid entity ID {entity_id!r}: it must look like '@name@key'")
        return EntityInstanceId(entity=parts[1], key=parts[2])

    @staticmethod
    def validate_entity_name(name: str) -> None:
        """Raise ValueError unless ``name`` is a usable entity name (non-empty, no '@')."""
        if not isinstance(name, str):
            raise TypeError(f"an entity name must be a string, not {type(name).__name__}")
        if not name:
            raise ValueError("an entity name must not be empty")
        if "@" in name:
            raise ValueError(f"an entity name must not contain '@': {name!r}")

    @staticmethod
    def validate_key(key: str) -> None:
        """Raise ValueError unless ``key`` is a usable entity key (non-empty, no '@')."""
        if not isinstance(key, str):
            raise TypeError(f"an entity key must be a string, not {type(key).__name__}")
        if not key:
            raise ValueError("an entity key must not be empty")
        if "@" in key:
            raise ValueError(f"an entity key must not contain '@': {key!r}")


def as_entity_id(value: EntityInstanceId | str) -> EntityInstanceId:
    """Accept an EntityInstanceId or its ``@name@key`` string form."""
    if isinstance(value, EntityInstanceId):
        return value
    if isinstance(value, str):
        return EntityInstanceId.parse(value)
    raise TypeError(f"expected an EntityInstanceId or an '@name@key' string, not {type(value).__name__}")
