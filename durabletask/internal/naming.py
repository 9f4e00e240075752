"""Names of types and functions: qualified type names, resolving them, registration names.

A leaf module (it imports nothing from the package), so the task types, the protobuf
builders and the entity context can all use it.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable
from typing import Any


def qualified_name(t: type) -> str:
    """``module.QualName`` of a type, e.g. ``builtins.ValueError``."""
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
    return f"{module}.{name}" if module else str(name)


def resolve_loaded_type(name: str) -> type | None:
    """The type a qualified (or builtin) name refers to, if its module is already loaded.

    Never imports anything: a payload's type name must not trigger code loading.
    """
    if not name:
        return None
    parts = name.split(".")
    if len(parts) == 1:
        found = getattr(builtins, name, None)
        return found if isinstance(found, type) else None
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type):
            return obj
    return None


def get_name(fn: Callable[..., Any]) -> str:
    """The registration name of a function: its ``__name__``; lambdas are refused."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"cannot infer a name from {fn!r}: pass a named function or the name as a string")
    if name == "<lambda>":
        raise ValueError("cannot infer a name from a lambda: define a named function or pass a name")
    return name
