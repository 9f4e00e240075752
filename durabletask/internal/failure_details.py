"""``FailureDetails``: what is known about a failure (public as ``durabletask.task.FailureDetails``).

A leaf module, so that the protobuf conversions below ``durabletask.task`` can build it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from durabletask.internal.naming import qualified_name, resolve_loaded_type


@dataclass(frozen=True)
class FailureDetails:
    """What is known about a failed activity, sub-orchestration or orchestration."""

    message: str
    error_type: str
    stack_trace: str | None
    inner_failure: FailureDetails | None = None
    properties: dict[str, Any] | None = None
    # Beyond the official SDK: the worker marked the failure as one no retry policy retries
    # (kept so a history read through the client replays as it ran). Left out of repr and of
    # history events' to_dict(), whose shape is the official SDK's.
    is_non_retriable: bool = field(default=False, repr=False, metadata={"to_dict": False})

    def is_caused_by(self, error_type: str | type[BaseException]) -> bool:
        """True if the failure's type is ``error_type`` or a subclass of it.

        ``error_type`` is an exception type or a type name (qualified like
        ``"builtins.ValueError"`` or bare like ``"ValueError"``). The recorded
        type is resolved only among already-loaded modules; nothing is imported.
        When it cannot be resolved, names are compared instead.
        """
        if isinstance(error_type, str):
            wanted = resolve_loaded_type(error_type)
            if wanted is not None and issubclass(wanted, BaseException):
                return self._caused_by_type(wanted) or _names_match(self.error_type, error_type)
            return _names_match(self.error_type, error_type)
        if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
            raise TypeError(f"is_caused_by() takes an exception type or a type name, not {error_type!r}")
        return self._caused_by_type(error_type)

    def _caused_by_type(self, target: type[BaseException]) -> bool:
        recorded = resolve_loaded_type(self.error_type)
        if recorded is not None:
            return issubclass(recorded, target)
        return any(_names_match(self.error_type, qualified_name(t)) for t in _type_and_subclasses(target))


def _names_match(recorded: str, wanted: str) -> bool:
    if not recorded or not wanted:
        return False
    if recorded == wanted:
        return True
    if "." in recorded and "." in wanted:
        return False
    return recorded.rsplit(".", 1)[-1] == wanted.rsplit(".", 1)[-1]


def _type_and_subclasses(root: type) -> Iterator[type]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        stack.extend(t.__subclasses__())
