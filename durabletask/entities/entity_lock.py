"""The object a granted ``lock_entities`` task yields: leaving its ``with`` block releases the locks."""

from __future__ import annotations

from typing import Any


class EntityLock:
    """Context manager for a critical section: ``with (yield ctx.lock_entities([...])):``."""

    def __init__(self, context: object) -> None:
        self._context = context

    def __enter__(self) -> EntityLock:
        return self

    def __exit__(self, *args: object) -> None:
        release: Any = getattr(self._context, "_exit_critical_section", None)
        if release is not None:
            release()
