"""External events: buffered before the wait, raced against a timer, and sent between instances."""

from __future__ import annotations

import compat_functions as fn
from compat_support import completed, new_id

from durabletask import history
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient


def test_events_buffered_before_the_wait(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.two_events)
    hub.raise_orchestration_event(instance_id, "second", data={"n": 2})
    hub.raise_orchestration_event(instance_id, "first", data={"n": 1})
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == [{"n": 1}, {"n": 2}]
    raised = [e for e in hub.get_orchestration_history(instance_id) if isinstance(e, history.EventRaisedEvent)]
    assert sorted(e.name for e in raised) == ["first", "second"]


def test_event_wins_over_timeout(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.event_or_timeout, input=60)
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    hub.raise_orchestration_event(instance_id, "approval", data="Jane")
    state = completed(hub, instance_id)
    assert state.get_output() == "approved by Jane"


def test_timeout_wins_over_event(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.event_or_timeout, input=0.5)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == "timed out"


def test_event_names_are_case_insensitive(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="Approval")
    hub.raise_orchestration_event(instance_id, "APPROVAL", data="yes")
    assert completed(hub, instance_id).get_output() == "yes"


def test_send_event_between_instances(hub: TaskHubGrpcClient) -> None:
    receiver = hub.schedule_new_orchestration(fn.wait_named, input="ping", instance_id=new_id("receiver"))
    assert hub.wait_for_orchestration_start(receiver, timeout=30) is not None
    sender_id = hub.schedule_new_orchestration(fn.sender, input=receiver)
    assert completed(hub, sender_id).get_output() == "sent"
    state = completed(hub, receiver)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == {"from": sender_id}
    sent = [e for e in hub.get_orchestration_history(sender_id) if isinstance(e, history.EventSentEvent)]
    assert len(sent) == 1 and sent[0].instance_id == receiver and sent[0].name == "ping"
