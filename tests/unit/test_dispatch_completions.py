"""The worker's handling of completions the sidecar does not take, against the scripted gRPC sidecar.

Transient failures (including a full store) are retried and then handed back; a result refused
as too large or invalid is replaced by a failure naming the problem; a stale token is dropped without a hand-back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.worker_completions import (
    DEFAULT_RETRY_DELAYS,
    REFUSED_ERROR_TYPE,
    TOO_LARGE_ERROR_TYPE,
    Refusal,
)
from durabletask.internal.worker_dispatch import _failure_action_id, _next_action_id
from durabletask.worker import TaskHubGrpcWorker
from tests.unit.test_worker_transport import (
    FAST_RECONNECT,
    WAIT,
    ScriptedSidecar,
    activity_item,
    orchestration_item,
)

TOO_LARGE = (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER: Received message larger than max (200016 vs. 100000)")


def double(ctx: Any, value: int) -> int:
    return value * 2


def orch(ctx: Any, _: Any) -> str:
    return "done"


def counter(ctx: Any, value: Any) -> int:
    ctx.set_state(ctx.get_state(int, 0) + 1)
    return int(ctx.get_state(int, 0))


@pytest.fixture
def sidecar() -> Iterator[ScriptedSidecar]:
    scripted = ScriptedSidecar()
    scripted.serve()
    yield scripted
    scripted.shutdown()


@pytest.fixture
def worker(sidecar: ScriptedSidecar) -> Iterator[TaskHubGrpcWorker]:
    """A started worker with an activity, an orchestrator and an entity, its stream open."""
    started = TaskHubGrpcWorker(host_address=sidecar.address, resiliency_options=FAST_RECONNECT)
    started.add_activity(double)
    started.add_orchestrator(orch)
    started.add_entity(counter)
    started.start()
    sidecar.wait_streams(1)
    yield started
    started.stop(timeout=5)


def settle(worker: TaskHubGrpcWorker) -> None:
    """Wait until the worker holds no work item (every completion and hand-back was sent)."""
    assert worker._dispatcher is not None and worker._dispatcher.wait_for_outstanding(0, WAIT)


def test_transient_failures_are_retried_then_the_item_is_handed_back(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    attempts = len(DEFAULT_RETRY_DELAYS) + 1
    sidecar.completion_failures = [(grpc.StatusCode.UNAVAILABLE, "sidecar restarting")] * attempts
    sidecar.items.put(activity_item("double", 1, token="given-up"))
    abandoned = sidecar.wait_calls("AbandonTaskActivityWorkItem", 1, timeout=WAIT + sum(DEFAULT_RETRY_DELAYS))
    assert [a.completionToken for a in abandoned] == ["given-up"]
    assert len(sidecar.named("CompleteActivityTask:rejected")) == attempts
    assert sidecar.named("CompleteActivityTask") == []


STORE_FULL = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "the SQLite store file 'x.db' is full (database or disk is full): free disk space; the work is kept",
)


def test_a_full_store_is_transient_the_result_is_sent_again_unchanged(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [STORE_FULL, STORE_FULL]
    sidecar.items.put(activity_item("double", 21, token="kept", task_id=3))
    [sent] = sidecar.wait_calls("CompleteActivityTask", 1, timeout=WAIT + sum(DEFAULT_RETRY_DELAYS))
    assert json.loads(sent.result.value) == 42 and not sent.HasField("failureDetails")
    assert len(sidecar.named("CompleteActivityTask:rejected")) == 2
    settle(worker)
    assert sidecar.named("AbandonTaskActivityWorkItem") == []


def test_a_store_full_for_long_hands_the_turn_back_and_never_fails_the_instance(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    attempts = len(DEFAULT_RETRY_DELAYS) + 1
    sidecar.completion_failures = [STORE_FULL] * attempts
    sidecar.items.put(orchestration_item("on-full-disk", None, token="turn"))
    [abandoned] = sidecar.wait_calls("AbandonTaskOrchestratorWorkItem", 1, timeout=WAIT + sum(DEFAULT_RETRY_DELAYS))
    assert abandoned.completionToken == "turn"
    refused = sidecar.named("CompleteOrchestratorTask:rejected")
    assert len(refused) == attempts
    statuses = {a.completeOrchestration.orchestrationStatus for r in refused for a in r.actions}
    assert statuses == {pb.ORCHESTRATION_STATUS_COMPLETED}  # never replaced by a failure
    settle(worker)


def test_an_activity_result_too_large_is_sent_again_as_a_failure_naming_the_limit(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [TOO_LARGE]
    sidecar.items.put(activity_item("double", 21, token="big", task_id=7))
    [refused] = sidecar.wait_calls("CompleteActivityTask:rejected", 1)
    assert json.loads(refused.result.value) == 42
    [sent] = sidecar.wait_calls("CompleteActivityTask", 1)
    assert (sent.completionToken, sent.taskId, sent.instanceId) == ("big", 7, "inst")
    assert not sent.HasField("result")
    details = sent.failureDetails
    assert details.errorType == TOO_LARGE_ERROR_TYPE and details.isNonRetriable
    assert "'double'" in details.errorMessage and "200016 bytes" in details.errorMessage
    assert "maximum message size of 100000 bytes" in details.errorMessage
    settle(worker)
    assert sidecar.named("AbandonTaskActivityWorkItem") == []


def test_an_invalid_activity_result_is_sent_again_as_a_failure_naming_the_reason(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [(grpc.StatusCode.INVALID_ARGUMENT, "result is not acceptable")]
    sidecar.items.put(activity_item("double", 1, token="odd"))
    [sent] = sidecar.wait_calls("CompleteActivityTask", 1)
    assert sent.failureDetails.errorType == REFUSED_ERROR_TYPE
    assert "result is not acceptable" in sent.failureDetails.errorMessage
    settle(worker)


def test_an_orchestrator_response_too_large_fails_the_instance(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [TOO_LARGE]
    sidecar.items.put(orchestration_item("big-output", None, token="turn"))
    [refused] = sidecar.wait_calls("CompleteOrchestratorTask:rejected", 1)
    [completion] = refused.actions
    assert completion.completeOrchestration.result.value == json.dumps("done")
    [sent] = sidecar.wait_calls("CompleteOrchestratorTask", 1)
    assert (sent.instanceId, sent.completionToken) == ("big-output", "turn")
    [action] = sent.actions
    assert action.id == completion.id  # the id the orchestrator's own completion had
    complete = action.completeOrchestration
    assert complete.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert complete.failureDetails.errorType == TOO_LARGE_ERROR_TYPE
    assert "'big-output'" in complete.failureDetails.errorMessage
    assert "maximum message size of 100000 bytes" in complete.failureDetails.errorMessage
    settle(worker)


def test_an_entity_batch_result_too_large_fails_its_operations_and_keeps_the_state(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [TOO_LARGE]
    item = pb.WorkItem(completionToken="batch")
    request = item.entityRequestV2
    request.instanceId = "@counter@a"
    request.entityState.value = "7"
    for request_id in ("r1", "r2"):
        request.operationRequests.add().entityOperationSignaled.SetInParent()
        request.operationRequests[-1].entityOperationSignaled.requestId = request_id
        request.operationRequests[-1].entityOperationSignaled.operation = "add"
    sidecar.items.put(item)
    [refused] = sidecar.wait_calls("CompleteEntityTask:rejected", 1)
    assert refused.entityState.value == "9" and all(r.HasField("success") for r in refused.results)
    [sent] = sidecar.wait_calls("CompleteEntityTask", 1)
    assert sent.completionToken == "batch" and sent.entityState.value == "7" and not sent.actions
    assert [i.requestId for i in sent.operationInfos] == ["r1", "r2"]
    assert len(sent.results) == 2
    for result in sent.results:
        assert result.failure.failureDetails.errorType == TOO_LARGE_ERROR_TYPE
        assert "'@counter@a'" in result.failure.failureDetails.errorMessage
    settle(worker)


def test_a_stale_token_is_dropped_without_retry_or_hand_back(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [(grpc.StatusCode.NOT_FOUND, "completion token 'gone' is unknown or stale")]
    sidecar.items.put(activity_item("double", 1, token="gone"))
    sidecar.wait_calls("CompleteActivityTask:rejected", 1)
    settle(worker)
    assert len(sidecar.named("CompleteActivityTask:rejected")) == 1
    assert sidecar.named("CompleteActivityTask") == []
    assert sidecar.named("AbandonTaskActivityWorkItem") == []


def test_another_failure_hands_the_item_back_at_once(sidecar: ScriptedSidecar, worker: TaskHubGrpcWorker) -> None:
    sidecar.completion_failures = [(grpc.StatusCode.INTERNAL, "commit failed")]
    sidecar.items.put(activity_item("double", 1, token="broken"))
    [abandoned] = sidecar.wait_calls("AbandonTaskActivityWorkItem", 1)
    assert abandoned.completionToken == "broken"
    settle(worker)
    assert len(sidecar.named("CompleteActivityTask:rejected")) == 1


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (TOO_LARGE[1], "the message of 200016 bytes exceeds the maximum message size of 100000 bytes"),
        ("CLIENT: Sent message larger than max (5000 vs. 4000)", "maximum message size of 4000 bytes"),
        ("message too large for the queue", "is too large to deliver (message too large for the queue)"),
    ],
)
def test_too_large_failure_messages_name_the_sizes_when_known(details: str, expected: str) -> None:
    failure = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, details).failure_details("the result of activity 'a'")
    assert failure.errorMessage.startswith("the result of activity 'a'")
    assert expected in failure.errorMessage


def test_a_failure_replacing_a_turn_without_completion_takes_an_unused_action_id() -> None:
    req = pb.OrchestratorRequest(instanceId="i")
    req.pastEvents.add(eventId=3).taskScheduled.name = "a"
    response = pb.OrchestratorResponse(instanceId="i")
    response.actions.add(id=4).scheduleTask.name = "b"
    response.actions.add(id=9).scheduleTask.name = "c"
    first_free = _next_action_id(req.pastEvents)
    assert _failure_action_id(first_free, response) == 10
    assert _failure_action_id(first_free, pb.OrchestratorResponse()) == 4
    response.actions.add(id=6).completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_COMPLETED
    assert _failure_action_id(first_free, response) == 6
