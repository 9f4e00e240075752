"""The protocol a worker's ``exception_properties_provider=`` follows, under the official module name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ExceptionPropertiesProvider(Protocol):
    """Gives custom properties to record in the failure details of an exception."""

    def get_exception_properties(self, exception: Exception) -> Mapping[str, Any] | None:
        """The properties for ``exception`` (None or empty: none)."""
        ...
