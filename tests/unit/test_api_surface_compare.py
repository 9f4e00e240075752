"""The API-surface comparison of ``make compat`` (compat/api_surface) finds what it is meant to find."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat" / "api_surface"))
sys.path.insert(0, str(ROOT / "compat"))

import compare_api_surface as surface  # noqa: E402

SELF = {"name": "self", "kind": "POSITIONAL_OR_KEYWORD"}
REASON = {"name": "reason", "kind": "KEYWORD_ONLY", "default": "None"}


def _function(*params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "function", "parameters": list(params), "home": "durabletask.client"}


def test_equal_signatures_and_added_optional_keywords_pass() -> None:
    extra = {"name": "timeout", "kind": "KEYWORD_ONLY", "default": "None"}
    assert surface.compare_parameters("f", [SELF, REASON], [SELF, REASON]) == []
    assert surface.compare_parameters("f", [SELF, REASON], [SELF, REASON, extra]) == []


def test_missing_required_reordered_and_narrowed_parameters_are_found() -> None:
    required_extra = {"name": "extra", "kind": "KEYWORD_ONLY"}
    assert surface.compare_parameters("f", [SELF, REASON], [SELF]) == [("f(reason)", "parameter 'reason' missing")]
    assert surface.compare_parameters("f", [SELF], [SELF, required_extra])[0][0] == "f(extra)"
    assert surface.compare_parameters("f", [SELF, REASON], [SELF, {"name": "reason", "kind": "KEYWORD_ONLY"}])
    a, b = ({"name": n, "kind": "POSITIONAL_OR_KEYWORD"} for n in "ab")
    assert len(surface.compare_parameters("f", [a, b], [b, a])) == 2


def test_missing_names_and_modules_are_found_but_internal_imports_are_not() -> None:
    official = {
        "durabletask.client": {
            "suspend": _function(REASON),
            "helper": {**_function(), "home": "durabletask.internal.helpers"},
        },
        "durabletask.extra": {"thing": _function()},
    }
    ours = {"durabletask.client": {}, "durabletask.extra": {"__import_error__": "ModuleNotFoundError"}}
    keys = [key for key, _ in surface.compare(official, ours)]
    assert keys == ["durabletask.client.suspend", "durabletask.extra"]


def test_allow_list_entries_cover_their_subtree_and_patterns() -> None:
    assert surface._covers("durabletask.payload", "durabletask.payload.store.PayloadStore")
    assert surface._covers("durabletask.testing*.Backend.[A-Z]*", "durabletask.testing.x.Backend.Hello")
    assert not surface._covers("durabletask.testing*.Backend.[A-Z]*", "durabletask.testing.Backend.start")
    assert not surface._covers("durabletask.payload", "durabletask.payloads")
