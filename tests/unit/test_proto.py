"""The wire contract: generated code is current, and the easy-to-break facts hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_package_so_method_paths_are_bare() -> None:
    assert pb.DESCRIPTOR.package == ""
    service = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
    assert service.full_name == "TaskHubSidecarService"
    source = Path(pb_grpc.__file__).read_text()
    assert "'/TaskHubSidecarService/GetWorkItems'" in source


def test_status_values() -> None:
    assert [pb.OrchestrationStatus.Value(n) for n in (
        "ORCHESTRATION_STATUS_RUNNING",
        "ORCHESTRATION_STATUS_COMPLETED",
        "ORCHESTRATION_STATUS_CONTINUED_AS_NEW",
        "ORCHESTRATION_STATUS_FAILED",
        "ORCHESTRATION_STATUS_CANCELED",
        "ORCHESTRATION_STATUS_TERMINATED",
        "ORCHESTRATION_STATUS_PENDING",
        "ORCHESTRATION_STATUS_SUSPENDED",
    )] == list(range(8))


def _numbers(message: type, oneof: str) -> dict[str, int]:
    desc = message.DESCRIPTOR  # type: ignore[attr-defined]
    return {f.name: f.number for f in desc.oneofs_by_name[oneof].fields}


def test_oneof_field_numbers() -> None:
    history = _numbers(pb.HistoryEvent, "eventType")
    assert history["executionStarted"] == 3 and history["executionRewound"] == 30
    assert sorted(history.values()) == list(range(3, 31))
    actions = _numbers(pb.OrchestratorAction, "orchestratorActionType")
    assert actions == {
        "scheduleTask": 2,
        "createSubOrchestration": 3,
        "createTimer": 4,
        "sendEvent": 5,
        "completeOrchestration": 6,
        "terminateOrchestration": 7,
        "sendEntityMessage": 8,
        "rewindOrchestration": 9,
    }
    work = _numbers(pb.WorkItem, "request")
    assert work == {
        "orchestratorRequest": 1,
        "activityRequest": 2,
        "entityRequest": 3,
        "healthPing": 4,
        "entityRequestV2": 5,
    }
    assert pb.WorkItem.DESCRIPTOR.fields_by_name["completionToken"].number == 10
