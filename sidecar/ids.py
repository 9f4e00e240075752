"""Where the sidecar's fresh identifiers come from (tokens, execution IDs, request IDs)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

IdFactory = Callable[[], str]


def random_id() -> str:
    """A fresh random identifier (32 hex digits)."""
    return uuid.uuid4().hex
