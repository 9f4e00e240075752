"""Prints the public API of the importable ``durabletask`` package as JSON (standard library only).

Run by either environment's interpreter with ``-P``: for each public module (its own modules and
subpackages, not ``internal`` or generated code) every public class and function that belongs to
the ``durabletask`` package, with parameter names, kinds and defaults (as ``repr``), and each
class's public methods, properties and enum members. Modules named in the JSON read from standard input are
dumped even if they are not found by walking the package (the comparison gives ours the
official package's modules, and the names it expects, on standard input). Modules that fail to import are reported with the error.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import pkgutil
import sys
from typing import Any

import durabletask

SKIPPED_PARTS = ("internal", "_pb2", "proto")


def parameters(obj: Any) -> list[dict[str, Any]] | str:
    """``obj``'s parameters as ``{name, kind, default}`` dicts, or why they cannot be read."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError) as err:
        return f"no signature: {err}"
    result = []
    for param in signature.parameters.values():
        entry: dict[str, Any] = {"name": param.name, "kind": param.kind.name}
        if param.default is not inspect.Parameter.empty:
            entry["default"] = repr(param.default)
        result.append(entry)
    return result


def describe_class(cls: type) -> dict[str, Any]:
    """A class's constructor, public methods, properties and (for enums) members."""
    members: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(raw, property):
            members[name] = {"kind": "property"}
        elif isinstance(raw, (staticmethod, classmethod)):
            members[name] = {"kind": type(raw).__name__, "parameters": parameters(getattr(cls, name))}
        elif inspect.isfunction(raw) or inspect.ismethoddescriptor(raw):
            members[name] = {"kind": "method", "parameters": parameters(raw)}
        elif isinstance(cls, enum.EnumMeta) and isinstance(getattr(cls, name), cls):
            members[name] = {"kind": "enum member"}
        elif inspect.isclass(raw):
            members[name] = {"kind": "class"}
        else:
            members[name] = {"kind": "attribute"}
    init = cls.__dict__.get("__init__") or getattr(cls, "__init__", None)
    return {
        "kind": "enum" if isinstance(cls, enum.EnumMeta) else "class",
        "init": parameters(init) if init is not None and init is not object.__init__ else [],
        "members": members,
    }


def describe_module(module: Any, probe: list[str]) -> dict[str, Any]:
    """Every public class and function of ``module`` that comes from the ``durabletask`` package.

    ``home`` is the module that defines it (another one for a name imported from there).
    """
    names: dict[str, Any] = {}
    # ``probe``: names to look up with getattr too (a module's __getattr__ may provide them lazily).
    candidates = {name: vars(module)[name] for name in vars(module)}
    for name in probe:
        if name not in candidates and hasattr(module, name):
            candidates[name] = getattr(module, name)
    for name in sorted(candidates):
        if name.startswith("_"):
            continue
        obj = candidates[name]
        origin = getattr(obj, "__module__", "") or ""
        if not origin.startswith("durabletask"):
            continue
        if inspect.isclass(obj):
            names[name] = {**describe_class(obj), "home": origin}
        elif callable(obj):
            names[name] = {"kind": "function", "parameters": parameters(obj), "home": origin}
    return names


def public_modules() -> list[str]:
    """The package and its public modules and subpackages."""
    found = ["durabletask"]
    for info in pkgutil.walk_packages(durabletask.__path__, "durabletask."):
        if not any(part in info.name for part in SKIPPED_PARTS) and not info.name.rsplit(".", 1)[-1].startswith("_"):
            found.append(info.name)
    return found


def main() -> None:
    """Dumps the package's modules plus those of the JSON ``{module: [names to probe]}`` on stdin, if any."""
    wanted: dict[str, list[str]] = json.loads(sys.stdin.read() or "{}")
    modules = sorted(set(public_modules()) | set(wanted))
    surface: dict[str, Any] = {}
    for name in modules:
        try:
            surface[name] = describe_module(importlib.import_module(name), wanted.get(name, []))
        except Exception as err:  # an optional extra's dependency may be missing
            surface[name] = {"__import_error__": f"{type(err).__name__}: {err}"}
    json.dump({"package": durabletask.__file__, "modules": surface}, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
