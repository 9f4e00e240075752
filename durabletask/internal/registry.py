"""The worker's table of registered orchestrators, activities and entities."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class OrchestratorNotRegisteredError(ValueError):
    """Raised when a work item names an orchestrator the worker does not know."""


class ActivityNotRegisteredError(ValueError):
    """Raised when a work item names an activity the worker does not know."""


class EntityNotRegisteredError(ValueError):
    """Raised when a work item names an entity the worker does not know."""


# Reported (in failure details' error type) under the module users import them from.
for _error in (OrchestratorNotRegisteredError, ActivityNotRegisteredError, EntityNotRegisteredError):
    _error.__module__ = "durabletask.worker"


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        raise ValueError("a lambda or unnamed callable cannot be registered: give the function a name")
    return str(name)


class Registry:
    """Name -> function maps. Names are the function's ``__name__`` unless given."""

    def __init__(self) -> None:
        self.orchestrators: dict[str, Callable[..., Any]] = {}
        self.activities: dict[str, Callable[..., Any]] = {}
        self.entities: dict[str, Any] = {}

    def add_orchestrator(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an orchestrator (generator, ``async def`` or plain function); returns its name."""
        key = name or _callable_name(fn)
        if inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"orchestrator '{key}' is an async generator (async def with yield): write either a generator "
                "function that yields tasks or an async def function that awaits them"
            )
        if key in self.orchestrators:
            raise ValueError(f"an orchestrator named '{key}' is already registered")
        self.orchestrators[key] = fn
        return key

    def add_activity(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an activity function; returns its name."""
        key = name or _callable_name(fn)
        if key in self.activities:
            raise ValueError(f"an activity named '{key}' is already registered")
        self.activities[key] = fn
        return key

    def add_entity(self, fn: Any, name: str | None = None) -> str:
        """Register an entity (function or DurableEntity class); names are lower-cased."""
        key = (name or _callable_name(fn)).lower()
        if key in self.entities:
            raise ValueError(f"an entity named '{key}' is already registered")
        self.entities[key] = fn
        return key

    def get_orchestrator(self, name: str) -> Callable[..., Any] | None:
        return self.orchestrators.get(name)

    def get_activity(self, name: str) -> Callable[..., Any] | None:
        return self.activities.get(name)

    def get_entity(self, name: str) -> Any | None:
        return self.entities.get(name.lower())
