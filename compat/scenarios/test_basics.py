"""Activity chains, fan-out/fan-in, timers, failures, history and custom status through the official SDK."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import compat_functions as fn
import pytest
from compat_support import completed, new_id, wait_until

from durabletask import history
from durabletask.client import OrchestrationFailedError, OrchestrationStatus, TaskHubGrpcClient


def test_activity_chain(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["Tokyo", "Seattle", "London"])
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == ["Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"]
    assert state.get_input() == ["Tokyo", "Seattle", "London"]
    assert state.name == "chain" and state.instance_id == instance_id
    assert state.failure_details is None


def test_fan_out_fan_in(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.fan_out, input=20)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == sum(i * i for i in range(1, 21))


def test_explicit_instance_id_and_state_fields(hub: TaskHubGrpcClient) -> None:
    instance_id = new_id("explicit")
    assert hub.schedule_new_orchestration(fn.chain, input=["Oslo"], instance_id=instance_id) == instance_id
    state = completed(hub, instance_id)
    assert state.get_output() == ["Hello, Oslo!"]
    assert state.created_at <= state.last_updated_at


def test_durable_timer(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.timer_wait, input=1.0)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() >= 1.0
    events = hub.get_orchestration_history(instance_id)
    created = [e for e in events if isinstance(e, history.TimerCreatedEvent)]
    fired = [e for e in events if isinstance(e, history.TimerFiredEvent)]
    assert len(created) == 1 and len(fired) == 1
    assert fired[0].timer_id == created[0].event_id
    assert fired[0].fire_at == created[0].fire_at


def test_scheduled_start(hub: TaskHubGrpcClient) -> None:
    start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["later"], start_at=start_at)
    state = completed(hub, instance_id)
    assert state.get_output() == ["Hello, later!"]
    events = hub.get_orchestration_history(instance_id)
    first_turn = next(e for e in events if isinstance(e, history.OrchestratorStartedEvent))
    assert first_turn.timestamp >= start_at - timedelta(milliseconds=5)


def test_orchestration_failure(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.failing, input="it broke")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "it broke" in state.failure_details.message
    assert state.failure_details.error_type.endswith("ValueError")
    with pytest.raises(OrchestrationFailedError):
        state.raise_if_failed()


def test_activity_failure_is_caught(hub: TaskHubGrpcClient) -> None:
    key = new_id("catch")
    state = completed(hub, hub.schedule_new_orchestration(fn.catch_activity_failure, input=key))
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    output = state.get_output()
    assert f"boom {key}" in output["message"]
    assert output["error_type"].endswith("ValueError")


def test_history(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["A", "B"])
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    events = hub.get_orchestration_history(instance_id)
    started = events[0] if not isinstance(events[0], history.OrchestratorStartedEvent) else events[1]
    assert isinstance(started, history.ExecutionStartedEvent)
    assert started.name == "chain" and started.input == '["A", "B"]'
    assert started.orchestration_instance is not None
    assert started.orchestration_instance.instance_id == instance_id
    scheduled = [e for e in events if isinstance(e, history.TaskScheduledEvent)]
    done = [e for e in events if isinstance(e, history.TaskCompletedEvent)]
    assert [e.name for e in scheduled] == ["hello", "hello"]
    assert [e.task_scheduled_id for e in done] == [e.event_id for e in scheduled]
    assert [e.result for e in done] == ['"Hello, A!"', '"Hello, B!"']
    assert any(isinstance(e, history.OrchestratorStartedEvent) for e in events)
    turn_markers = (history.OrchestratorStartedEvent, history.OrchestratorCompletedEvent)
    last = [e for e in events if not isinstance(e, turn_markers)][-1]
    assert isinstance(last, history.ExecutionCompletedEvent)
    assert last.orchestration_status == OrchestrationStatus.COMPLETED.value
    assert last.result == '["Hello, A!", "Hello, B!"]'


def test_custom_status(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.with_status)

    def status_published() -> bool:
        state = hub.get_orchestration_state(instance_id)
        return state is not None and state.get_custom_status() == {"stage": "waiting"}

    wait_until(status_published, "the first custom status")
    hub.raise_orchestration_event(instance_id, "go", data=42)
    state = completed(hub, instance_id)
    assert state.get_output() == 42
    assert state.get_custom_status() == "done"


def test_unknown_instance(hub: TaskHubGrpcClient) -> None:
    assert hub.get_orchestration_state(new_id("missing")) is None


def test_wait_for_start_and_fetch_payloads(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="release")
    state = hub.wait_for_orchestration_start(instance_id, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.RUNNING
    full = hub.get_orchestration_state(instance_id, fetch_payloads=True)
    assert full is not None and full.get_input() == "release"
    bare = hub.get_orchestration_state(instance_id, fetch_payloads=False)
    assert bare is not None and bare.serialized_input is None
    hub.raise_orchestration_event(instance_id, "release", data="ok")
    assert completed(hub, instance_id).get_output() == "ok"


def test_wait_for_unknown_instance(hub: TaskHubGrpcClient) -> None:
    """Our sidecar waits for the instance to appear and answers DEADLINE_EXCEEDED at the deadline
    (the official in-memory backend answers 'not found' there, and the client returns None)."""
    with pytest.raises(TimeoutError):
        hub.wait_for_orchestration_completion(new_id("nobody"), timeout=1)
