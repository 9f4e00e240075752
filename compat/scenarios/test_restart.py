"""Restart through the official client: same instance ID and a new one, and the refusals."""

from __future__ import annotations

import compat_functions as fn
import grpc
import pytest
from compat_support import completed, new_id

from durabletask import history
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient


def _started_events(hub: TaskHubGrpcClient, instance_id: str) -> list[history.ExecutionStartedEvent]:
    return [e for e in hub.get_orchestration_history(instance_id) if isinstance(e, history.ExecutionStartedEvent)]


def test_restart_with_the_same_instance_id(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["Ada"], instance_id=new_id("restart-same"))
    first = completed(hub, instance_id)
    assert first.runtime_status == OrchestrationStatus.COMPLETED
    first_execution = _started_events(hub, instance_id)
    assert len(first_execution) == 1

    assert hub.restart_orchestration(instance_id) == instance_id
    again = completed(hub, instance_id)
    assert again.runtime_status == OrchestrationStatus.COMPLETED
    assert again.get_input() == ["Ada"] and again.get_output() == ["Hello, Ada!"]
    assert again.created_at >= first.created_at
    started = _started_events(hub, instance_id)
    assert len(started) == 1, "the restarted instance keeps only its new execution's history"
    old_execution = first_execution[0].orchestration_instance
    new_execution = started[0].orchestration_instance
    assert old_execution is not None and new_execution is not None
    assert new_execution.execution_id != old_execution.execution_id


def test_restart_with_a_new_instance_id(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.failing, input="first run fails", instance_id=new_id("restart-new"))
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.FAILED

    copy_id = hub.restart_orchestration(instance_id, restart_with_new_instance_id=True)
    assert copy_id != instance_id
    copy = completed(hub, copy_id)
    assert copy.name == "failing" and copy.get_input() == "first run fails"
    assert copy.runtime_status == OrchestrationStatus.FAILED
    assert copy.failure_details is not None and "first run fails" in copy.failure_details.message
    original = hub.get_orchestration_state(instance_id)
    assert original is not None and original.runtime_status == OrchestrationStatus.FAILED


def test_restart_a_terminated_instance(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="go", instance_id=new_id("restart-term"))
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    hub.terminate_orchestration(instance_id, output="stopped")
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.TERMINATED

    assert hub.restart_orchestration(instance_id) == instance_id
    state = hub.wait_for_orchestration_start(instance_id, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.RUNNING
    hub.raise_orchestration_event(instance_id, "go", data="second life")
    assert completed(hub, instance_id).get_output() == "second life"


def test_restart_refusals(hub: TaskHubGrpcClient) -> None:
    running = hub.schedule_new_orchestration(fn.wait_named, input="finish", instance_id=new_id("restart-running"))
    assert hub.wait_for_orchestration_start(running, timeout=30) is not None
    try:
        with pytest.raises(grpc.RpcError) as refused:
            hub.restart_orchestration(running)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert running in (refused.value.details() or "")
    finally:
        hub.raise_orchestration_event(running, "finish", data=1)
    assert completed(hub, running).get_output() == 1

    ghost = new_id("restart-ghost")
    with pytest.raises(grpc.RpcError) as missing:
        hub.restart_orchestration(ghost)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert ghost in (missing.value.details() or "")
