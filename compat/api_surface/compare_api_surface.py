"""Compares the official package's public API with ours: every official name must exist here, compatibly.

Both surfaces are dumped by ``dump_api_surface.py``, each with its own environment's interpreter.
A name is compatible when it is the same kind of thing; a callable when every official parameter
exists here under the same name and kind (a keyword-only one may be positional-or-keyword here),
positional ones in the same order, with a default wherever the official one has a default, and
every parameter ours adds has a default (or is ``*args``/``**kwargs``). Differences that are
deliberate are listed in ``allowed_differences.py`` with the reason; an allowed entry that no
longer matches a difference is reported too, so the list cannot go stale.

Usage: ``python compat/api_surface/compare_api_surface.py --compat-python .venv-compat/bin/python``
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from allowed_differences import ALLOWED  # noqa: E402
from compat_sidecar import isolated_env  # noqa: E402

DUMP = HERE / "dump_api_surface.py"
VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")


def dump(python: str, wanted: dict[str, list[str]]) -> dict[str, Any]:
    """The surface as dumped by ``python``, asked for the modules and names in ``wanted`` too."""
    proc = subprocess.run(
        [python, "-P", str(DUMP)],
        input=json.dumps(wanted),
        capture_output=True,
        text=True,
        timeout=120,
        env=isolated_env(),
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{python} could not dump its API surface:\n{proc.stderr}")
    modules_found: dict[str, Any] = json.loads(proc.stdout)["modules"]
    return modules_found


def compare_parameters(where: str, official: Any, ours: Any) -> list[tuple[str, str]]:
    """Differences between two parameter lists, as ``(key, description)`` pairs."""
    if isinstance(official, str) or isinstance(ours, str):
        return [] if isinstance(official, str) else [(where, f"signature unreadable here: {ours}")]
    problems: list[tuple[str, str]] = []
    ours_by_name = {p["name"]: p for p in ours}
    ours_positional = [p["name"] for p in ours if p["kind"] in POSITIONAL]
    official_positional = [p["name"] for p in official if p["kind"] in POSITIONAL]
    for param in official:
        key = f"{where}({param['name']})"
        if param["kind"] in VARIADIC:
            if not any(p["kind"] == param["kind"] for p in ours):
                problems.append((key, f"official takes {param['kind']} *{param['name']}; ours does not"))
            continue
        mine = ours_by_name.get(param["name"])
        if mine is None:
            problems.append((key, f"parameter {param['name']!r} missing"))
            continue
        if param["kind"] in POSITIONAL:
            index = official_positional.index(param["name"])
            if mine["kind"] not in POSITIONAL or ours_positional[: index + 1][-1:] != [param["name"]]:
                problems.append((key, f"official takes it positionally at {index}; ours: {mine['kind']}"))
        elif mine["kind"] not in ("KEYWORD_ONLY", "POSITIONAL_OR_KEYWORD"):
            problems.append((key, f"official takes it by keyword; ours: {mine['kind']}"))
        if "default" in param and "default" not in mine:
            problems.append((key, f"official has default {param['default']}; ours requires it"))
    official_names = {p["name"] for p in official}
    for param in ours:
        if param["name"] in ("self", "cls") and not official:
            continue  # the official class inherits object's constructor
        if param["name"] not in official_names and param["kind"] not in VARIADIC and "default" not in param:
            problems.append((f"{where}({param['name']})", "ours requires a parameter the official one lacks"))
    return problems


def _takes(params: Any, name: str) -> bool:
    """Whether the parameter list ``params`` has one called ``name``."""
    return not isinstance(params, str) and any(p["name"] == name for p in params)


def compare_name(where: str, official: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, str]]:
    """Differences for one module-level name."""
    if official["kind"] != ours["kind"] and {official["kind"], ours["kind"]} != {"class", "enum"}:
        return [(where, f"official is a {official['kind']}, ours a {ours['kind']}")]
    if official["kind"] == "function":
        return compare_parameters(where, official["parameters"], ours["parameters"])
    problems = compare_parameters(f"{where}.__init__", official["init"], ours["init"])
    for name, member in official["members"].items():
        key = f"{where}.{name}"
        mine = ours["members"].get(name)
        if mine is None and member["kind"] == "attribute" and _takes(ours["init"], name):
            continue  # a class attribute there (a dataclass field), set by the constructor here
        if mine is None:
            problems.append((key, f"{member['kind']} missing"))
        elif "parameters" in member and "parameters" in mine:
            problems.extend(compare_parameters(key, member["parameters"], mine["parameters"]))
        elif "parameters" in member and mine["kind"] not in ("attribute", "property", "class"):
            problems.append((key, f"official {member['kind']}, ours {mine['kind']}"))
    return problems


def compare(official: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, str]]:
    """Every official name missing or incompatible here, as ``(key, description)``."""
    problems: list[tuple[str, str]] = []
    for module, names in official.items():
        if "__import_error__" in names:
            continue  # the official module itself needs an extra that is not installed
        mine = ours.get(module, {"__import_error__": "not found"})
        if "__import_error__" in mine:
            problems.append((module, f"module missing: {mine['__import_error__']}"))
            continue
        for name, entry in names.items():
            if ".internal" in entry["home"]:
                continue  # a helper the official module imports from its internals, not public API
            if name not in mine and entry["home"] != module and name in ours.get(entry["home"], {}):
                continue  # imported by the official module for its own use; ours has it where it is defined
            if name not in mine:
                problems.append((f"{module}.{name}", f"{entry['kind']} missing"))
            else:
                problems.extend(compare_name(f"{module}.{name}", entry, mine[name]))
    return problems


def _covers(entry: str, key: str) -> bool:
    """Whether the allow-list ``entry`` covers ``key`` (itself, anything under it, or a pattern match)."""
    if "*" in entry:
        return fnmatch.fnmatchcase(key, entry) or fnmatch.fnmatchcase(key, entry + ".*")
    return key == entry or key.startswith(entry + ".") or key.startswith(entry + "(")


def allowed_reason(key: str) -> str | None:
    """The allow-list's reason for ``key``, or None."""
    return next((reason for entry, reason in ALLOWED.items() if _covers(entry, key)), None)


def main(argv: list[str] | None = None) -> int:
    """Dumps both surfaces, compares them, prints what is not allowed; 0 when nothing is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compat-python", required=True)
    parser.add_argument("--our-python", default=sys.executable)
    parser.add_argument("--show-allowed", action="store_true", help="also print the allowed differences")
    args = parser.parse_args(argv)
    official = dump(args.compat_python, {})
    ours = dump(args.our_python, {module: sorted(names) for module, names in official.items()})
    problems = compare(official, ours)
    used: set[str] = set()
    failures = []
    for key, description in problems:
        reason = allowed_reason(key)
        if reason is None:
            failures.append(f"{key}: {description}")
        else:
            used.update(entry for entry in ALLOWED if _covers(entry, key))
            if args.show_allowed:
                print(f"api-surface: allowed {key}: {description} ({reason})")
    stale = sorted(set(ALLOWED) - used)
    for key in stale:
        failures.append(f"{key}: allowed in allowed_differences.py but no longer differs; remove the entry")
    for failure in failures:
        print(f"api-surface: {failure}", file=sys.stderr)
    checked = sum(len(names) for names in official.values())
    allowed_count = len(problems) - (len(failures) - len(stale))
    print(f"api-surface: {checked} official names in {len(official)} modules; {allowed_count} allowed differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
