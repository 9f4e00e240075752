"""Payload conversion between Python values and the strings the sidecar stores.

PLACEHOLDER: minimal JSON converter so other modules can be written against the
interface. To be replaced by the full type-directed converter.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class DataConverter(ABC):
    """Turns values into payload strings and back."""

    @abstractmethod
    def serialize(self, value: Any) -> str | None:
        """Encode a value; None stays None (no payload)."""

    @abstractmethod
    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        """Decode a payload, shaped as ``target_type`` when given."""

    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        """Shape an already-decoded value as ``target_type``."""
        return value

    def can_reconstruct(self, target_type: Any) -> bool:
        """True when ``target_type`` can be rebuilt from decoded JSON."""
        return False


class JsonDataConverter(DataConverter):
    """JSON payloads."""

    def serialize(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        return None if data is None or data == "" else json.loads(data)


def default_converter() -> DataConverter:
    """The converter used when none is configured."""
    return JsonDataConverter()
