"""Rewind on every store: reopening a failed instance, the rewind turn, and its sub-orchestrations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.engine_rewind import rewound_event
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot, InvalidTurnError
from sidecar.store import InstanceNotFoundError, InvalidStateError

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]


def start(hub: TaskHub, iid: str, name: str = "orch", now: datetime = T0) -> None:
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e1", name=name, status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=now, last_updated_at=now, input='"in"', version="1.0")
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=f"{iid}-e1", now=now,
                                                input='"in"', version="1.0")
    hub.create_instance(inst, event, now, now)


def respond(hub: TaskHub, token: str, *actions: pb.OrchestratorAction, now: datetime = T0) -> None:
    hub.complete_orchestration(token, pb.OrchestratorResponse(completionToken=token, actions=actions), now)


def schedule(action_id: int, name: str = "act") -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, scheduleTask=pb.ScheduleTaskAction(name=name))


def child(action_id: int, child_id: str) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.createSubOrchestration.name = "kid_orch"
    a.createSubOrchestration.instanceId = child_id
    a.createSubOrchestration.input.value = '"kid-in"'
    return a


def finish(action_id: int, status: int) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.completeOrchestration.orchestrationStatus = status  # type: ignore[assignment]
    if status == S.ORCHESTRATION_STATUS_FAILED:
        a.completeOrchestration.failureDetails.errorMessage = "boom"
    else:
        a.completeOrchestration.result.value = '"done"'
    return a


def turn(hub: TaskHub, iid: str, *actions: pb.OrchestratorAction, now: datetime = T0) -> list[pb.HistoryEvent]:
    """Lease ``iid``'s next turn, answer it with ``actions``; returns the turn's new events."""
    inst = hub.get_instance(iid)
    assert inst is not None
    item = hub.lease_orchestration(now, LEASE, names=[inst.name])
    assert item is not None and item.instance.instance_id == iid, item
    respond(hub, item.token, *actions, now=now)
    return item.new_events


def failed_instance(hub: TaskHub, iid: str = "a") -> None:
    start(hub, iid)
    turn(hub, iid, finish(1, S.ORCHESTRATION_STATUS_FAILED))


def answer_rewind(hub: TaskHub, iid: str, *, drop_failure: bool = True, now: datetime = T0) -> list[pb.HistoryEvent]:
    """Lease the rewind request and answer as a worker does; returns the rewritten history."""
    item = hub.lease_orchestration(now, LEASE, names=["orch"])
    assert item is not None and item.instance.instance_id == iid
    assert kinds(item.new_events) == ["orchestratorStarted", "executionRewound"]
    history = [e for e in item.past_events if not e.HasField("executionCompleted")]
    if drop_failure:
        history = [e for e in history if not e.HasField("subOrchestrationInstanceFailed")]
    for event in history:
        if event.HasField("executionStarted"):
            event.executionStarted.orchestrationInstance.executionId.value = f"{iid}-e2"
    history.extend(item.new_events)
    action = pb.OrchestratorAction(id=-1)
    action.rewindOrchestration.newHistory.extend(history)
    respond(hub, item.token, action, now=now)
    return history


def test_rewind_reopens_a_failed_instance_with_the_request_alone_in_its_inbox(hub: TaskHub) -> None:
    failed_instance(hub)
    hub.rewind_instance("a", rewound_event(T0, "why"), T0 + timedelta(seconds=1))
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_RUNNING
    assert (inst.failure, inst.output, inst.completed_at) == (None, None, None)
    assert inst.last_updated_at == T0 + timedelta(seconds=1)
    assert kinds([e for e, _, _ in hub.store.inbox_of("a")]) == ["executionRewound"]


@pytest.mark.parametrize("status", ["pending", "completed", "terminated"])
def test_only_failed_instances_can_be_rewound_and_a_refusal_changes_nothing(hub: TaskHub, status: str) -> None:
    start(hub, "a")
    if status == "completed":
        turn(hub, "a", finish(1, S.ORCHESTRATION_STATUS_COMPLETED))
    elif status == "terminated":
        hub.terminate_instance("a", None, False, T0)
    before = hub.get_instance("a")
    inbox = hub.store.inbox_of("a")
    with pytest.raises(InvalidStateError, match=rf"'a': it is {status.upper()}; only a FAILED instance"):
        hub.rewind_instance("a", rewound_event(T0, None), T0)
    assert hub.get_instance("a") == before and hub.store.inbox_of("a") == inbox


def test_rewinding_an_unknown_instance(hub: TaskHub) -> None:
    with pytest.raises(InstanceNotFoundError, match="'ghost'"):
        hub.rewind_instance("ghost", rewound_event(T0, None), T0)


def test_the_rewind_turn_replaces_history_and_the_replay_turn_follows(hub: TaskHub) -> None:
    failed_instance(hub)
    hub.rewind_instance("a", rewound_event(T0, None), T0)
    hub.raise_event("a", engine_events.new_event(T0), T0)  # arrives while the rewind is pending
    history = answer_rewind(hub, "a")
    assert hub.get_history("a") == history
    inst = hub.get_instance("a")
    assert inst is not None and inst.execution_id == "a-e2" and inst.status == S.ORCHESTRATION_STATUS_RUNNING
    item = hub.lease_orchestration(T0 + timedelta(seconds=1), LEASE)
    assert item is not None
    # The wake-up orchestratorStarted is the turn's own (not doubled); the later event follows it.
    assert kinds(item.new_events) == ["orchestratorStarted", ""]
    respond(hub, item.token, finish(2, S.ORCHESTRATION_STATUS_COMPLETED))
    assert hub.get_instance("a").status == S.ORCHESTRATION_STATUS_COMPLETED  # type: ignore[union-attr]


def test_an_invalid_rewind_answer_changes_nothing(hub: TaskHub) -> None:
    failed_instance(hub)
    hub.rewind_instance("a", rewound_event(T0, None), T0)
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    history_before = hub.get_history("a")
    with pytest.raises(InvalidTurnError, match="rewindOrchestration action"):
        respond(hub, item.token, schedule(5))
    assert hub.get_history("a") == history_before
    assert kinds([e for e, _, _ in hub.store.inbox_of("a")]) == ["executionRewound"]


def parent_with_failed_child(hub: TaskHub) -> None:
    start(hub, "p")
    turn(hub, "p", child(1, "kid"))
    turn(hub, "kid", finish(1, S.ORCHESTRATION_STATUS_FAILED))
    events = turn(hub, "p", finish(2, S.ORCHESTRATION_STATUS_FAILED))
    assert "subOrchestrationInstanceFailed" in kinds(events)


def test_a_failed_child_is_rewound_and_relinked_to_the_new_parent_execution(hub: TaskHub) -> None:
    parent_with_failed_child(hub)
    hub.rewind_instance("p", rewound_event(T0, "fix"), T0)
    answer_rewind(hub, "p")
    kid = hub.get_instance("kid")
    assert kid is not None and kid.status == S.ORCHESTRATION_STATUS_RUNNING
    assert kid.parent is not None and kid.parent.execution_id == "p-e2"
    [(request, _, _)] = hub.store.inbox_of("kid")
    assert request.executionRewound.reason.value == "fix"
    assert request.executionRewound.parentExecutionId.value == "p-e2"


def test_a_purged_child_is_created_again(hub: TaskHub) -> None:
    parent_with_failed_child(hub)
    assert hub.purge_instances(["kid"], recursive=False) == 1
    hub.rewind_instance("p", rewound_event(T0, None), T0)
    answer_rewind(hub, "p")
    kid = hub.get_instance("kid")
    assert kid is not None and kid.status == S.ORCHESTRATION_STATUS_PENDING
    assert (kid.name, kid.input) == ("kid_orch", '"kid-in"')
    assert kid.parent is not None and (kid.parent.instance_id, kid.parent.execution_id) == ("p", "p-e2")
    assert kinds([e for e, _, _ in hub.store.inbox_of("kid")]) == ["executionStarted"]


def parent_failed_while_child_runs(hub: TaskHub) -> None:
    start(hub, "p")
    turn(hub, "p", child(1, "kid"))
    assert hub.lease_orchestration(T0, LEASE, names=["orch"]) is None  # the parent waits for its child
    hub.raise_event("p", engine_events.new_event(T0), T0)
    turn(hub, "p", finish(2, S.ORCHESTRATION_STATUS_FAILED))  # ...and fails on its own


def test_a_child_that_completed_after_its_parent_failed_reports_again(hub: TaskHub) -> None:
    parent_failed_while_child_runs(hub)
    turn(hub, "kid", finish(1, S.ORCHESTRATION_STATUS_COMPLETED))  # its result to the failed parent is dropped
    assert hub.store.inbox_of("p") == []
    hub.rewind_instance("p", rewound_event(T0, None), T0)
    answer_rewind(hub, "p")
    events = [e for e, _, _ in hub.store.inbox_of("p")]
    assert kinds(events) == ["orchestratorStarted", "subOrchestrationInstanceCompleted"]
    assert events[1].subOrchestrationInstanceCompleted.taskScheduledId == 1
    assert events[1].subOrchestrationInstanceCompleted.result.value == '"done"'


def test_a_running_child_is_relinked_and_its_result_reaches_the_rewound_parent(hub: TaskHub) -> None:
    parent_failed_while_child_runs(hub)
    hub.rewind_instance("p", rewound_event(T0, None), T0)
    answer_rewind(hub, "p")
    kid = hub.get_instance("kid")
    assert kid is not None and kid.parent is not None and kid.parent.execution_id == "p-e2"
    turn(hub, "kid", finish(1, S.ORCHESTRATION_STATUS_COMPLETED))
    pending = kinds([e for e, _, _ in hub.store.inbox_of("p")])
    assert pending == ["orchestratorStarted", "subOrchestrationInstanceCompleted"]
