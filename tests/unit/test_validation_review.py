"""Argument checks found in review: use_versioning's type, OrchestrationQuery.version, version rules of turns."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationQuery, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.client_requests import query_versions
from durabletask.worker import TaskHubGrpcWorker, VersioningOptions
from sidecar.engine_validate import text_problem, validate_turn
from sidecar.model import InstanceSnapshot, InvalidTurnError
from sidecar.servicer_util import BadRequest, check_version

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
# Nothing listens here: every check below must fail before any RPC is attempted.
NOWHERE = "localhost:1"


@pytest.mark.parametrize("bad", ["1.0", 2, {"version": "1.0"}])
def test_use_versioning_rejects_anything_but_versioning_options(bad: Any) -> None:
    worker = TaskHubGrpcWorker(host_address=NOWHERE)
    with pytest.raises(TypeError, match="use_versioning\\(\\) takes a VersioningOptions") as err:
        worker.use_versioning(bad)
    assert type(bad).__name__ in str(err.value)
    assert worker._versioning is None


def test_use_versioning_accepts_options_and_none() -> None:
    worker = TaskHubGrpcWorker(host_address=NOWHERE)
    options = VersioningOptions(version="1.0")
    worker.use_versioning(options)
    assert worker._versioning is options
    worker.use_versioning(None)
    assert worker._versioning is None


@pytest.mark.parametrize("bad", [123, 1.5, ["1", 2], b"1"])
def test_query_version_of_the_wrong_type_names_the_value(bad: Any) -> None:
    with pytest.raises(TypeError, match="OrchestrationQuery.version takes a string or a list of strings, not"):
        query_versions(OrchestrationQuery(version=bad))


def test_query_version_forms_that_are_accepted() -> None:
    assert query_versions(OrchestrationQuery(version="1")) == ["1"]
    assert query_versions(OrchestrationQuery(version=["1", ""])) == ["1", ""]
    assert query_versions(OrchestrationQuery(version=("1",))) == ["1"]  # type: ignore[arg-type]
    assert query_versions(OrchestrationQuery(version=[])) is None
    assert query_versions(OrchestrationQuery()) is None


def test_clients_reject_a_non_string_version_before_calling() -> None:
    with TaskHubGrpcClient(host_address=NOWHERE) as client:
        with pytest.raises(TypeError, match="not 123"):
            client.get_all_orchestration_states(OrchestrationQuery(version=123))  # type: ignore[arg-type]

    async def run() -> None:
        client = AsyncTaskHubGrpcClient(host_address=NOWHERE)
        try:
            with pytest.raises(TypeError, match="not 123"):
                await client.get_all_orchestration_states(OrchestrationQuery(version=123))  # type: ignore[arg-type]
        finally:
            await client.close()

    asyncio.run(run())


# --- version rules in the sidecar ----------------------------------------------------------------


def test_text_problem_rules() -> None:
    assert text_problem("v" * 256, "version") is None
    assert text_problem("", "version") is None
    assert text_problem("v" * 257, "version") == "version is 257 characters long; at most 256 are allowed"
    assert text_problem("a\x7fb", "version") == "version contains a control character (0x7f)"
    assert text_problem("é" * 10, "version") is None


def test_check_version_of_a_request() -> None:
    assert check_version(pb.CreateInstanceRequest()) is None
    assert check_version(pb.CreateInstanceRequest(version=StringValue(value=""))) == ""
    assert check_version(pb.CreateInstanceRequest(version=StringValue(value="1.0"))) == "1.0"
    with pytest.raises(BadRequest, match="^version is 300 characters long"):
        check_version(pb.CreateInstanceRequest(version=StringValue(value="v" * 300)))
    with pytest.raises(BadRequest, match="^version contains a control character \\(0x09\\)"):
        check_version(pb.CreateInstanceRequest(version=StringValue(value="1\t0")))


def _running() -> InstanceSnapshot:
    return InstanceSnapshot(instance_id="i", execution_id="e", name="orch", status=pb.ORCHESTRATION_STATUS_RUNNING,
                            created_at=NOW, last_updated_at=NOW)


def _turn(action: pb.OrchestratorAction) -> pb.OrchestratorResponse:
    return pb.OrchestratorResponse(instanceId="i", completionToken="t", actions=[action])


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(
            name="a", version=StringValue(value="v" * 257))), "action 1 (scheduleTask): version is 257 characters"),
        (pb.OrchestratorAction(id=2, createSubOrchestration=pb.CreateSubOrchestrationAction(
            name="c", instanceId="c1", version=StringValue(value="1\x00"))),
         "action 2 (createSubOrchestration): version contains a control character (0x00)"),
        (pb.OrchestratorAction(id=3, completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, newVersion=StringValue(value="x" * 1000))),
         "action 3 (completeOrchestration): newVersion is 1000 characters"),
    ],
)
def test_turns_with_bad_versions_are_invalid(action: pb.OrchestratorAction, words: str) -> None:
    with pytest.raises(InvalidTurnError) as err:
        validate_turn(_running(), _turn(action))
    assert words in str(err.value)


def test_turns_with_acceptable_versions_pass() -> None:
    for action in [
        pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="a", version=StringValue(value="v" * 256))),
        pb.OrchestratorAction(id=1, createSubOrchestration=pb.CreateSubOrchestrationAction(
            name="c", instanceId="c1", version=StringValue(value=""))),
        pb.OrchestratorAction(id=1, completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED, newVersion=StringValue(value="2.0"))),
    ]:
        validate_turn(_running(), _turn(action))
