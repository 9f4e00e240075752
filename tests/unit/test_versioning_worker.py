"""Worker and client sides of versioning: comparisons that never crash, the FAIL answer, query filters."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from durabletask import serialization, task
from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.client_requests import (
    QUERY_VERSIONS_HEADER,
    build_query_instances_req,
    query_versions,
    query_versions_metadata,
    version_matches,
)
from durabletask.internal.registry import Registry
from durabletask.internal.worker_dispatch import (
    DispatchLimits,
    VersionVerdict,
    WorkItemDispatcher,
    _next_action_id,
)
from durabletask.worker import VersioningOptions, VersionMatchStrategy, compare_versions, version_mismatch
from sidecar import servicer_util

T0 = datetime(2030, 1, 1)
ODD_VERSIONS = ["", "1.0", "v2", "banana", "1.0.0-final", "not a version!", "10", "2024.01.01", "☃", "1" * 300]


@pytest.mark.parametrize("left", ODD_VERSIONS)
@pytest.mark.parametrize("right", ODD_VERSIONS)
def test_any_pair_of_version_strings_compares_without_error_and_consistently(left: str, right: str) -> None:
    forward, backward = compare_versions(left, right), compare_versions(right, left)
    assert forward in (-1, 0, 1) and forward == -backward


def test_mixed_parseable_and_unparseable_versions_compare_as_strings() -> None:
    assert compare_versions("1.0", "banana") == -1  # "1" < "b"
    assert compare_versions("banana", "10.0") == 1
    assert compare_versions("10.0", "2.0") == 1  # both parse: PEP 440 order, not string order


def test_unparseable_versions_in_every_strategy() -> None:
    for strategy in VersionMatchStrategy:
        rules = VersioningOptions("main", match_strategy=strategy)
        for version in ("main", "zzz", "aaa", None, "1.0"):
            reason = version_mismatch(rules, version)
            assert reason is None or "version" in reason


def test_a_strategy_the_worker_does_not_know_is_a_mismatch() -> None:
    rules = VersioningOptions("1.0", match_strategy="sometimes")  # type: ignore[arg-type]
    assert "unknown" in (version_mismatch(rules, "1.0") or "")


def test_the_fail_answer_uses_an_action_id_the_history_does_not() -> None:
    req = pb.OrchestratorRequest(instanceId="i")
    assert _next_action_id([*req.pastEvents, *req.newEvents]) == 1
    req.pastEvents.append(ph.new_task_scheduled_event(4, "a"))
    req.pastEvents.append(ph.new_timer_created_event(7, T0))
    req.newEvents.append(ph.new_orchestrator_started_event())
    assert _next_action_id([*req.pastEvents, *req.newEvents]) == 8
    assert _next_action_id([*req.pastEvents, *req.newEvents], floor=12) == 12


class RecordingStub:
    """Stands in for the sidecar stub: records what the dispatcher sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        def call(request: Any, **_: Any) -> None:
            self.sent.append((method, request))

        return call


def orchestrator(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity("act")


def dispatcher(stub: RecordingStub, verdict: VersionVerdict | None) -> WorkItemDispatcher:
    registry = Registry()
    registry.add_orchestrator(orchestrator)
    return WorkItemDispatcher(
        registry=registry,
        stub_provider=lambda: stub,
        limits=DispatchLimits(orchestrations=1, activities=1, entities=1, thread_pool_workers=1),
        logger=logging.getLogger("test-versioning-worker"),
        data_converter=serialization.default_converter(),
        maximum_timer_interval=timedelta(days=3),
        version_gate=lambda version: verdict,
    )


MISMATCH = pb.TaskFailureDetails(errorType="VersionMismatch", errorMessage="nope", isNonRetriable=True)


def started_request() -> pb.OrchestratorRequest:
    req = pb.OrchestratorRequest(instanceId="i")
    req.pastEvents.extend([
        ph.new_execution_started_event("orchestrator", "i", version="2"),
        ph.new_task_scheduled_event(1, "act"),
    ])
    req.newEvents.append(ph.new_orchestrator_started_event())
    return req


def test_fail_completes_the_instance_as_failed_with_version_mismatch() -> None:
    stub = RecordingStub()
    dispatcher(stub, VersionVerdict(reject=False, details=MISMATCH))._run_orchestration(started_request(), "tok", lambda: None)
    [(method, response)] = stub.sent
    assert method == "CompleteOrchestratorTask"
    [action] = response.actions
    assert action.id == 2 and action.completeOrchestration.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert action.completeOrchestration.failureDetails.errorType == "VersionMismatch"


def test_reject_hands_the_turn_back() -> None:
    stub = RecordingStub()
    dispatcher(stub, VersionVerdict(reject=True, details=MISMATCH))._run_orchestration(started_request(), "tok", lambda: None)
    [(method, request)] = stub.sent
    assert method == "AbandonTaskOrchestratorWorkItem" and request.completionToken == "tok"


def test_fail_still_answers_a_rewind_request_with_the_rewritten_history() -> None:
    req = started_request()
    req.pastEvents.append(ph.new_execution_completed_event(pb.ORCHESTRATION_STATUS_FAILED, None, MISMATCH))
    req.newEvents.append(pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent()))
    stub = RecordingStub()
    dispatcher(stub, VersionVerdict(reject=False, details=MISMATCH))._run_orchestration(req, "tok", lambda: None)
    [(method, response)] = stub.sent
    assert method == "CompleteOrchestratorTask"
    [action] = response.actions
    assert action.HasField("rewindOrchestration")


def state(version: str | None) -> OrchestrationState:
    return OrchestrationState("i", "o", OrchestrationStatus.COMPLETED, T0, T0, None, None, None, None,
                              version=version)


def test_query_version_filter_helpers() -> None:
    assert query_versions(OrchestrationQuery()) is None
    assert query_versions(OrchestrationQuery(version=[])) is None
    assert query_versions(OrchestrationQuery(version="1.0")) == ["1.0"]
    assert query_versions(OrchestrationQuery(version=["1.0", ""])) == ["1.0", ""]
    with pytest.raises(TypeError, match="string or a list of strings"):
        query_versions(OrchestrationQuery(version=[1.0]))  # type: ignore[list-item]
    assert query_versions_metadata(None) == ()
    assert query_versions_metadata(["1.0", "☃"]) == ((QUERY_VERSIONS_HEADER, '["1.0", "\\u2603"]'),)
    assert QUERY_VERSIONS_HEADER == servicer_util.QUERY_VERSIONS_HEADER
    assert version_matches(state("1.0"), None) and version_matches(state(None), None)
    assert version_matches(state("1.0"), ["1.0"]) and not version_matches(state("2.0"), ["1.0"])
    assert version_matches(state(None), [""]) and not version_matches(state(None), ["1.0"])
    # The wire query has no version field: the filter does not change the request.
    plain = build_query_instances_req(OrchestrationQuery(), None)
    assert build_query_instances_req(OrchestrationQuery(version="1.0"), None) == plain
