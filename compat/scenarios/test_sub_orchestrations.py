"""Sub-orchestrations, continue-as-new and retry policies through the official SDK."""

from __future__ import annotations

import compat_functions as fn
from compat_support import completed, new_id

from durabletask import history
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient


def test_sub_orchestrations(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.parent, input=4, instance_id=new_id("parent"))
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == {"total": 1 + 4 + 9 + 16, "greetings": ["Hello, Ada!"]}
    child = hub.get_orchestration_state(f"{instance_id}-child")
    assert child is not None and child.runtime_status == OrchestrationStatus.COMPLETED
    assert child.name == "chain" and child.get_output() == ["Hello, Ada!"]
    events = hub.get_orchestration_history(instance_id)
    created = [e for e in events if isinstance(e, history.SubOrchestrationInstanceCreatedEvent)]
    done = [e for e in events if isinstance(e, history.SubOrchestrationInstanceCompletedEvent)]
    assert [e.name for e in created] == ["fan_out", "chain"]
    assert created[1].instance_id == f"{instance_id}-child"
    assert [e.task_scheduled_id for e in done] == [e.event_id for e in created]


def test_child_knows_its_parent(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.parent_of_reporter)
    assert completed(hub, instance_id).get_output() == instance_id


def test_child_failure_reaches_parent(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.parent_of_failing, input="bad input")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert "bad input" in state.get_output()
    assert state.get_output().startswith("child failed: ")


def test_continue_as_new(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.counter, input=0)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 5
    assert state.get_input() == 5
    events = hub.get_orchestration_history(instance_id)
    started = [e for e in events if isinstance(e, history.ExecutionStartedEvent)]
    assert len(started) == 1 and started[0].input == "5"


def test_retry_policy_outlasts_transient_failures(hub: TaskHubGrpcClient) -> None:
    key = new_id("flaky")
    state = completed(hub, hub.schedule_new_orchestration(fn.retry_activity, input=key))
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 3
    assert fn.attempts_of(key) == 3


def test_retry_policy_gives_up(hub: TaskHubGrpcClient) -> None:
    key = new_id("doomed")
    state = completed(hub, hub.schedule_new_orchestration(fn.retry_exhausted, input=key))
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None and f"boom {key}" in state.failure_details.message
    assert fn.attempts_of(key) == 2


def test_retry_policy_on_a_sub_orchestration(hub: TaskHubGrpcClient) -> None:
    key = new_id("flaky-child")
    instance_id = hub.schedule_new_orchestration(fn.retry_sub_orchestration, input=key)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 3
    assert fn.attempts_of(key) == 3
    events = hub.get_orchestration_history(instance_id)
    failed = [e for e in events if isinstance(e, history.SubOrchestrationInstanceFailedEvent)]
    created = [e for e in events if isinstance(e, history.SubOrchestrationInstanceCreatedEvent)]
    assert len(failed) == 2 and len(created) == 3
