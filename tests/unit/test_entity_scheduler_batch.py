"""Applying an entity batch result: state, results routed to callers, signals, new orchestrations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import to_timestamp
from sidecar.entity_batch import InvalidBatchResultError, apply_batch_result
from tests.unit.entity_queue_builders import NOW, call, signal

ENTITY = "@counter@a"


def success(value: str | None = None) -> pb.OperationResult:
    result = pb.OperationResult(success=pb.OperationResultSuccess())
    if value is not None:
        result.success.result.value = value
    return result


def failure(error_type: str = "ValueError", message: str = "boom") -> pb.OperationResult:
    return pb.OperationResult(
        failure=pb.OperationResultFailure(failureDetails=pb.TaskFailureDetails(errorType=error_type, errorMessage=message))
    )


def batch_result(*results: pb.OperationResult, state: str | None = None,
                 actions: list[pb.OperationAction] | None = None) -> pb.EntityBatchResult:
    result = pb.EntityBatchResult(results=results, actions=actions or [], completionToken="t")
    if state is not None:
        result.entityState.value = state
    return result


def test_results_go_back_to_callers_by_request_id() -> None:
    batch = [
        call("orch-1", "get", request_id="r1", seq=1, execution_id="e1"),
        signal("client", "add", seq=2),
        call("orch-2", "bad", request_id="r2", seq=3),
    ]
    outcome = apply_batch_result(ENTITY, "1", batch, batch_result(success("5"), success(), failure(), state="6"), NOW)
    assert outcome.state == "6" and outcome.consumed == [1, 2, 3] and not outcome.retry
    ok, failed = outcome.replies
    assert ok.target_instance_id == "orch-1" and ok.target_execution_id == "e1"
    assert ok.event.entityOperationCompleted.requestId == "r1"
    assert ok.event.entityOperationCompleted.output.value == "5"
    assert failed.target_instance_id == "orch-2" and failed.target_execution_id is None
    assert failed.event.entityOperationFailed.requestId == "r2"
    assert failed.event.entityOperationFailed.failureDetails.errorType == "ValueError"
    assert not outcome.failed_signals


def test_failed_signal_is_reported_for_the_log_only() -> None:
    batch = [signal("", "add", seq=1), signal("orch-1", "add", seq=2)]
    result = batch_result(failure("EntityNotRegisteredError", "nope"), failure("EntityNotRegisteredError", "nope"))
    outcome = apply_batch_result(ENTITY, "1", batch, result, NOW)
    assert outcome.replies == [] and outcome.consumed == [1, 2] and outcome.state is None
    from_client, from_orchestration = outcome.failed_signals
    assert "'add'" in from_client and ENTITY in from_client and "EntityNotRegisteredError: nope" in from_client
    assert "a client" in from_client and "'orch-1'" in from_orchestration


def test_empty_state_deletes_it() -> None:
    outcome = apply_batch_result(ENTITY, "1", [signal("c", seq=1)], batch_result(success(), state=""), NOW)
    assert outcome.state is None


def test_partial_results_consume_only_the_operations_that_ran() -> None:
    batch = [signal("c", "a", seq=1), signal("c", "b", seq=2), signal("c", "c", seq=3)]
    outcome = apply_batch_result(ENTITY, None, batch, batch_result(success(), state="x"), NOW)
    assert outcome.consumed == [1] and outcome.state == "x"


def test_no_results_means_retry_with_nothing_applied() -> None:
    result = batch_result(state="ignored")
    result.failureDetails.errorType = "Crash"
    result.failureDetails.errorMessage = "worker exploded"
    outcome = apply_batch_result(ENTITY, "old", [signal("c", seq=1)], result, NOW)
    assert outcome.retry and outcome.state == "old" and outcome.consumed == []
    assert "Crash: worker exploded" in outcome.retry_reason


TRACED = pb.TraceContext(traceParent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def test_signals_and_new_orchestrations_from_operations() -> None:
    later = NOW + timedelta(minutes=5)
    actions = [
        pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@Other@k", name="ping")),
        pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@other@k", name="later",
                                                          scheduledTime=to_timestamp(later), parentTraceContext=TRACED)),
        pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="job-1", name="job")),
        pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(
            name="job", scheduledTime=to_timestamp(later))),
    ]
    actions[0].sendSignal.input.value = '"hi"'
    actions[2].startNewOrchestration.input.value = "42"
    outcome = apply_batch_result(ENTITY, None, [signal("c", seq=1)], batch_result(success(), actions=actions), NOW)
    now_signal, late_signal = outcome.signals
    assert now_signal.target == "@other@k" and now_signal.sender == ENTITY and now_signal.visible_at is None
    body = now_signal.event.entityOperationSignaled
    assert body.operation == "ping" and body.input.value == '"hi"' and body.requestId
    assert body.targetInstanceId.value == "@other@k"
    assert late_signal.visible_at == later
    assert now_signal.trace_context is None and late_signal.trace_context == TRACED
    job, scheduled = outcome.orchestrations
    assert job.instance.instance_id == "job-1" and job.instance.name == "job" and job.instance.input == "42"
    assert job.instance.status == pb.ORCHESTRATION_STATUS_PENDING and job.visible_at == NOW
    assert job.start_event.executionStarted.orchestrationInstance.instanceId == "job-1"
    assert job.start_event.executionStarted.input.value == "42"
    assert scheduled.instance.instance_id and scheduled.instance.instance_id != "job-1"
    assert scheduled.visible_at == later and scheduled.instance.scheduled_start_at == later


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (batch_result(success(), success()), "2 operation results, but the batch had 1 operations"),
        (batch_result(pb.OperationResult()), "results[0] has neither success nor failure"),
        (batch_result(success(), actions=[pb.OperationAction()]), "actions[0] has no action kind"),
        (batch_result(success(), actions=[pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="nope", name="x"))]),
         "entity instance ID 'nope' is invalid"),
        (batch_result(success(), actions=[pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@a@b"))]),
         "has no operation name"),
        (batch_result(success(), actions=[pb.OperationAction(
            startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="x"))]), "has no orchestration name"),
        (batch_result(success(), actions=[pb.OperationAction(
            startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="@a@b", name="o"))]), "reserved for entities"),
        (batch_result(success(), actions=[pb.OperationAction(
            startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="x" * 300, name="o"))]), "at most 256"),
        (batch_result(success(), actions=[pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(
            instanceId="x", name="o", version=StringValue(value="v" * 5000)))]), "version is 5000 characters long"),
        (batch_result(success(), actions=[pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(
            instanceId="x", name="o", version=StringValue(value="1\x00")))]), "version contains a control character"),
        (batch_result(success(), actions=[pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(
            instanceId="x", name="o", parentTraceContext=pb.TraceContext(traceParent="00-" + "a" * 5000)))]),
         "parentTraceContext.traceParent is 5003 characters long"),
        (batch_result(success(), actions=[pb.OperationAction(sendSignal=pb.SendSignalAction(
            instanceId="@a@b", name="x", parentTraceContext=pb.TraceContext(traceParent="00-ab\n")))]),
         "(sendSignal): parentTraceContext.traceParent contains a control character"),
    ],
)
def test_invalid_results_are_rejected_naming_the_problem(result: pb.EntityBatchResult, words: str) -> None:
    with pytest.raises(InvalidBatchResultError) as err:
        apply_batch_result(ENTITY, None, [signal("c", seq=1)], result, NOW)
    assert words in str(err.value) and ENTITY in str(err.value)


def test_state_over_the_limit_fails_the_operations_that_ran_and_keeps_the_old_state() -> None:
    batch = [call("orch-1", "set", request_id="r1", seq=1), signal("c", "set", seq=2), call("orch-2", "get", seq=3)]
    start = pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="o", name="orch"))
    send = pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@other@k", name="ping"))
    result = batch_result(success(), success(), state="x" * 101, actions=[start, send])
    outcome = apply_batch_result(ENTITY, "old", batch, result, NOW, max_state_size=100)
    assert outcome.state == "old" and outcome.consumed == [1, 2] and not outcome.retry
    assert outcome.signals == [] and outcome.orchestrations == []
    (reply,) = outcome.replies
    assert reply.target_instance_id == "orch-1"
    details = reply.event.entityOperationFailed.failureDetails
    assert reply.event.entityOperationFailed.requestId == "r1"
    assert details.errorType == "EntityStateTooLargeError"
    assert "101 bytes" in details.errorMessage and "limit of 100 bytes" in details.errorMessage
    assert ENTITY in details.errorMessage
    (line,) = outcome.failed_signals
    assert "EntityStateTooLargeError" in line and "limit of 100 bytes" in line
    exact = apply_batch_result(ENTITY, None, [signal("c", seq=1)], batch_result(success(), state="x" * 100), NOW,
                               max_state_size=100)
    assert exact.state == "x" * 100 and exact.failed_signals == []


def test_state_over_the_limit_counts_utf8_bytes() -> None:
    outcome = apply_batch_result(ENTITY, None, [call("o", "set", request_id="r", seq=1)],
                                 batch_result(success(), state="\u00e9" * 51), NOW, max_state_size=100)
    assert outcome.state is None
    assert "102 bytes" in outcome.replies[0].event.entityOperationFailed.failureDetails.errorMessage


def test_an_otherwise_invalid_result_over_the_limit_is_still_rejected() -> None:
    bad = pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="nope", name="x"))
    with pytest.raises(InvalidBatchResultError, match="'nope'"):
        apply_batch_result(ENTITY, None, [signal("c", seq=1)], batch_result(success(), state="x" * 101, actions=[bad]),
                           NOW, max_state_size=100)


def test_state_over_the_limit_with_no_results_is_retried() -> None:
    outcome = apply_batch_result(ENTITY, "old", [signal("c", seq=1)], batch_result(state="x" * 101), NOW,
                                 max_state_size=100)
    assert outcome.retry and outcome.state == "old" and outcome.consumed == []
