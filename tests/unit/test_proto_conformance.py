"""Our wire contract matches Microsoft's official ``durabletask`` package, fact by fact.

The official package cannot be imported here (its import name is ours too), so a
snapshot of its descriptor's facts is committed at ``tests/unit/data/official_descriptor.json``;
``compat/dump_official_descriptor.py`` regenerates it and ``make compat`` checks it is current.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).resolve().parent / "data" / "official_descriptor.json"


def _load_facts_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compat_descriptor_facts", ROOT / "compat" / "descriptor_facts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


facts_module = _load_facts_module()


@pytest.fixture(scope="module")
def official() -> dict[str, Any]:
    data = json.loads(SNAPSHOT.read_text())
    assert data["source"] == "durabletask==1.12.0"
    return data["facts"]


def _our_facts() -> dict[str, Any]:
    return facts_module.facts(facts_module.file_proto(pb.DESCRIPTOR))


def test_snapshot_is_substantial(official: dict[str, Any]) -> None:
    assert "TaskHubSidecarService" in official["services"]
    assert len(official["services"]["TaskHubSidecarService"]) >= 25
    assert ".HistoryEvent" in official["messages"] and ".OrchestratorAction" in official["messages"]
    assert official["package"] == ""


def test_every_official_fact_holds_in_ours(official: dict[str, Any]) -> None:
    assert facts_module.compare(official, _our_facts()) == []


def test_comparison_reports_a_changed_field_number(official: dict[str, Any]) -> None:
    proto = facts_module.file_proto(pb.DESCRIPTOR)
    message = next(m for m in proto.message_type if m.name == "HistoryEvent")
    field = next(f for f in message.field if f.name == "timerFired")
    field.number = 99
    problems = facts_module.compare(official, facts_module.facts(proto))
    assert problems == ["field .HistoryEvent.timerFired: number is 99, official 13"]


def test_comparison_reports_missing_and_renumbered_facts(official: dict[str, Any]) -> None:
    proto = facts_module.file_proto(pb.DESCRIPTOR)
    service = proto.service[0]
    method = next(m for m in service.method if m.name == "GetWorkItems")
    method.server_streaming = False
    enum = next(e for e in proto.enum_type if e.name == "OrchestrationStatus")
    next(v for v in enum.value if v.name == "ORCHESTRATION_STATUS_SUSPENDED").number = 8
    action = next(m for m in proto.message_type if m.name == "OrchestratorAction")
    renamed = next(f for f in action.field if f.name == "createTimer")
    renamed.name = "makeTimer"
    problems = facts_module.compare(official, facts_module.facts(proto))
    assert "rpc TaskHubSidecarService.GetWorkItems: server_streaming is False, official True" in problems
    assert "enum value .OrchestrationStatus.ORCHESTRATION_STATUS_SUSPENDED: 8, official 7" in problems
    assert "field .OrchestratorAction.createTimer: missing (number 4 is 'makeTimer' in ours)" in problems
    assert "field .OrchestratorAction.makeTimer: reuses number 4 of official field 'createTimer'" in problems
    assert len(problems) == 4


def test_comparison_reports_a_changed_type_and_oneof(official: dict[str, Any]) -> None:
    ours = _our_facts()
    changed = copy.deepcopy(ours)
    changed["messages"][".WorkItem"]["fields"]["completionToken"]["type"] = "TYPE_BYTES"
    changed["messages"][".WorkItem"]["fields"]["healthPing"]["oneof"] = None
    changed["package"] = "durabletask"
    assert facts_module.compare(official, changed) == [
        "file package: 'durabletask', official ''",
        "field .WorkItem.completionToken: type is 'TYPE_BYTES', official 'TYPE_STRING'",
        "field .WorkItem.healthPing: oneof is None, official 'request'",
    ]
