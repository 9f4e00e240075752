"""Instances on every store: each transaction's effects, leases, ordering, execution scoping, notices."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.hub.instances import route_message
from sidecar.model import InstanceSnapshot, InvalidTurnError, OutboundMessage
from sidecar.store import (
    CommitNotice,
    CompletedFilter,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    Store,
    StoreTx,
)
from sidecar.store.sql_schema import SCHEMA_VERSION

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]


def start(hub: TaskHub, iid: str, now: datetime = T0, name: str = "orch", *, at: datetime | None = None,
          replaceable: list[int] | None = None, execution_id: str | None = None) -> None:
    exec_id = execution_id or f"{iid}-e1"
    inst = InstanceSnapshot(instance_id=iid, execution_id=exec_id, name=name, status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=now, last_updated_at=now, input='"in"', scheduled_start_at=at)
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=exec_id, now=now,
                                                input='"in"', scheduled_start_at=at)
    hub.create_instance(inst, event, at or now, now, replaceable)


def action(action_id: int, **kind: object) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, **kind)  # type: ignore[arg-type]


def schedule(action_id: int, name: str = "act") -> pb.OrchestratorAction:
    return action(action_id, scheduleTask=pb.ScheduleTaskAction(name=name))


def complete(action_id: int, status: int = S.ORCHESTRATION_STATUS_COMPLETED, result: str | None = '"ok"',
             carryover: list[pb.HistoryEvent] | None = None) -> pb.OrchestratorAction:
    c = pb.CompleteOrchestrationAction(orchestrationStatus=status, carryoverEvents=carryover or [])  # type: ignore[arg-type]
    if result is not None:
        c.result.value = result
    return action(action_id, completeOrchestration=c)


def timer(action_id: int, fire_at: datetime) -> pb.OrchestratorAction:
    return action(action_id, createTimer=pb.CreateTimerAction(fireAt=engine_events.to_timestamp(fire_at)))


def respond(hub: TaskHub, token: str, iid: str, actions: list[pb.OrchestratorAction], now: datetime) -> None:
    hub.complete_orchestration(token, pb.OrchestratorResponse(instanceId=iid, completionToken=token,
                                                              actions=actions), now)


def raised(name: str, now: datetime = T0) -> pb.HistoryEvent:
    event = engine_events.new_event(now)
    event.eventRaised.name = name
    return event


def test_create_instance_is_pending_with_execution_started_in_inbox(hub: TaskHub) -> None:
    start(hub, "a")
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_PENDING and inst.input == '"in"'
    assert hub.get_history("a") == []
    assert kinds([e for e, _, _ in hub.store.inbox_of("a")]) == ["executionStarted"]


def test_live_instance_id_is_taken_unless_policy_replaces_it(hub: TaskHub) -> None:
    start(hub, "a")
    with pytest.raises(InstanceExistsError, match="'a' already exists"):
        start(hub, "a")
    with pytest.raises(InstanceExistsError):
        start(hub, "a", replaceable=[S.ORCHESTRATION_STATUS_COMPLETED])
    start(hub, "a", replaceable=[S.ORCHESTRATION_STATUS_PENDING], execution_id="second")
    inst = hub.get_instance("a")
    assert inst is not None and inst.execution_id == "second" and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert kinds([e for e, _, _ in hub.store.inbox_of("a")]) == ["executionStarted"]


def test_terminal_instance_is_replaced_by_default(hub: TaskHub) -> None:
    start(hub, "a")
    assert hub.terminate_instance("a", None, False, T0)
    start(hub, "a", execution_id="again")
    inst = hub.get_instance("a")
    assert inst is not None and inst.execution_id == "again" and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert hub.get_history("a") == []


def test_turn_schedules_activity_and_result_comes_back(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None and item.instance.instance_id == "a"
    assert kinds(item.new_events) == ["orchestratorStarted", "executionStarted"]
    assert hub.lease_orchestration(T0, LEASE) is None, "a leased instance is not offered twice"

    t1 = T0 + timedelta(seconds=1)
    respond(hub, item.token, "a", [schedule(1)], t1)
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_RUNNING
    assert "taskScheduled" in kinds(hub.get_history("a"))
    assert hub.store.inbox_of("a") == []
    assert hub.store.activity_tasks_of("a") == [(1, "act", False)]

    task = hub.lease_activity(t1, LEASE)
    assert task is not None and task.task.task_id == 1 and task.task.execution_id == "a-e1"
    assert hub.lease_activity(t1, LEASE) is None
    hub.complete_activity(task.token, pb.ActivityResponse(instanceId="a", taskId=1, completionToken=task.token), t1)
    assert hub.store.activity_tasks_of("a") == []
    pending = hub.store.inbox_of("a")
    assert kinds([e for e, _, _ in pending]) == ["taskCompleted"] and pending[0][2] == "a-e1"
    with pytest.raises(LeaseNotFoundError):
        hub.complete_activity(task.token, pb.ActivityResponse(completionToken=task.token), t1)

    item2 = hub.lease_orchestration(t1, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "taskCompleted"]
    respond(hub, item2.token, "a", [complete(2)], t1)
    done = hub.get_instance("a")
    assert done is not None and done.status == S.ORCHESTRATION_STATUS_COMPLETED and done.output == '"ok"'
    with pytest.raises(LeaseNotFoundError):
        respond(hub, item2.token, "a", [complete(2)], t1)


def test_invalid_turn_changes_nothing_and_backs_off(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    bad = pb.OrchestratorAction(id=1)  # no action kind set
    with pytest.raises(InvalidTurnError):
        respond(hub, item.token, "a", [bad], T0)
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert hub.get_history("a") == []
    assert kinds([e for e, _, _ in hub.store.inbox_of("a")]) == ["executionStarted"]
    with pytest.raises(LeaseNotFoundError):
        respond(hub, item.token, "a", [complete(1)], T0)
    assert hub.lease_orchestration(T0, LEASE) is None, "offered again only after the back-off"
    due = hub.next_due_at(T0)
    assert due is not None and T0 < due <= T0 + timedelta(seconds=1)
    assert hub.lease_orchestration(due, LEASE) is not None


def test_expired_lease_is_taken_over_and_old_token_is_stale(hub: TaskHub) -> None:
    start(hub, "a")
    first = hub.lease_orchestration(T0, LEASE)
    assert first is not None
    assert hub.next_due_at(T0) == T0 + LEASE
    later = T0 + LEASE + timedelta(seconds=1)
    second = hub.lease_orchestration(later, LEASE)
    assert second is not None and second.token != first.token
    with pytest.raises(LeaseNotFoundError):
        respond(hub, first.token, "a", [complete(1)], later)
    respond(hub, second.token, "a", [complete(1)], later)
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_COMPLETED


def test_renewed_lease_does_not_expire(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    hub.renew_leases([item.token], T0 + 2 * LEASE)
    assert hub.lease_orchestration(T0 + LEASE + timedelta(seconds=1), LEASE) is None
    assert hub.next_due_at(T0) == T0 + 2 * LEASE
    # Renewed until T0 + 2 * LEASE, not for ever: after that, anyone may take the turn over.
    later = T0 + 2 * LEASE + timedelta(seconds=1)
    again = hub.lease_orchestration(later, LEASE)
    assert again is not None and again.token != item.token
    with pytest.raises(LeaseNotFoundError):
        respond(hub, item.token, "a", [complete(1)], later)


def test_a_leased_turns_inbox_rows_wait_out_of_sight_until_the_lease_ends_or_is_released(hub: TaskHub) -> None:
    """The rows a turn holds are not visible to claims while it runs; a release restores their times."""
    start(hub, "a")
    start(hub, "b", T0 + timedelta(seconds=1))
    item = hub.lease_orchestration(T0 + timedelta(seconds=2), LEASE)
    assert item is not None and item.instance.instance_id == "a"
    [(_, held_until, _)] = hub.store.inbox_of("a")
    assert held_until == T0 + timedelta(seconds=2) + LEASE
    hub.raise_event("a", raised("during"), T0 + timedelta(seconds=3))  # arrives during the turn: not held
    assert [t for _, t, _ in hub.store.inbox_of("a")] == [held_until, T0 + timedelta(seconds=3)]
    assert hub.release_orchestration(item.token)
    assert [t for _, t, _ in hub.store.inbox_of("a")] == [T0, T0 + timedelta(seconds=3)]
    # Visible from their own times again: "a" (visible first) before "b", with both of its events.
    again = hub.lease_orchestration(T0 + timedelta(seconds=4), LEASE)
    assert again is not None and again.instance.instance_id == "a"
    assert kinds(again.new_events) == ["orchestratorStarted", "executionStarted", "eventRaised"]
    # An abandoned turn's rows come back too, once the hand-back delay has passed.
    hub.abandon_orchestration(again.token, T0 + timedelta(seconds=5))
    assert [t for _, t, _ in hub.store.inbox_of("a")] == [T0, T0 + timedelta(seconds=3)]
    # A lease that runs out lets its rows be seen when it ends, by whoever claims next.
    other = hub.lease_orchestration(T0 + timedelta(seconds=6), LEASE, exclude=["a"])
    assert other is not None and other.instance.instance_id == "b"
    assert hub.lease_orchestration(T0 + timedelta(seconds=5) + LEASE, LEASE, exclude=["a"]) is None
    taken_over = hub.lease_orchestration(T0 + timedelta(seconds=6) + LEASE, LEASE, exclude=["a"])
    assert taken_over is not None and taken_over.instance.instance_id == "b" and taken_over.token != other.token
    assert kinds(taken_over.new_events) == ["orchestratorStarted", "executionStarted"]


def test_renewing_activity_leases_and_unknown_tokens(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [schedule(1)], T0)
    task = hub.lease_activity(T0, LEASE)
    assert task is not None
    hub.renew_leases([task.token, "no-such-token"], T0 + 2 * LEASE)
    hub.renew_leases([], T0 + 3 * LEASE)
    assert hub.lease_activity(T0 + LEASE + timedelta(seconds=1), LEASE) is None
    assert hub.store.activity_tasks_of("a") == [(1, "act", True)]
    again = hub.lease_activity(T0 + 2 * LEASE + timedelta(seconds=1), LEASE)
    assert again is not None and again.token != task.token


def test_activity_lease_expires_and_abandon_backs_off(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [schedule(1)], T0)
    task = hub.lease_activity(T0, LEASE)
    assert task is not None
    again = hub.lease_activity(T0 + LEASE, LEASE)
    assert again is not None and again.token != task.token
    hub.abandon_activity(again.token, T0 + LEASE)
    assert hub.lease_activity(T0 + LEASE, LEASE) is None
    third = hub.lease_activity(T0 + LEASE + timedelta(seconds=1), LEASE)
    assert third is not None
    with pytest.raises(LeaseNotFoundError):
        hub.abandon_activity(again.token, T0)


def test_activity_batch_claims_expired_leases_first_then_new_tasks_never_live_leases(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [schedule(n) for n in range(1, 7)], T0)
    early = hub.lease_activities(T0, LEASE, limit=2)  # tasks 1, 2: their leases expire first
    later = hub.lease_activities(T0 + timedelta(minutes=1), LEASE, limit=2)  # tasks 3, 4: still live below
    assert [w.task.task_id for w in early + later] == [1, 2, 3, 4]
    now = T0 + LEASE + timedelta(seconds=1)
    batch = hub.lease_activities(now, LEASE, limit=3)
    assert [w.task.task_id for w in batch] == [1, 2, 5]
    assert not {w.token for w in batch} & {w.token for w in early + later}
    assert [w.task.task_id for w in hub.lease_activities(now, LEASE, limit=10)] == [6]
    assert hub.lease_activities(now, LEASE, limit=10) == []


def test_release_gives_work_back_at_once(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    assert hub.release_orchestration(item.token)
    assert not hub.release_orchestration(item.token)
    again = hub.lease_orchestration(T0, LEASE)
    assert again is not None and kinds(again.new_events) == ["orchestratorStarted", "executionStarted"]


def test_scheduled_start_is_honoured(hub: TaskHub) -> None:
    at = T0 + timedelta(seconds=30)
    start(hub, "a", at=at)
    hub.raise_event("a", raised("early"), T0)
    assert hub.lease_orchestration(T0, LEASE) is None
    assert hub.next_due_at(T0) == at
    item = hub.lease_orchestration(at, LEASE)
    assert item is not None and kinds(item.new_events) == ["orchestratorStarted", "executionStarted", "eventRaised"]


def test_timer_becomes_visible_at_fire_time(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    fire = T0 + timedelta(seconds=10)
    respond(hub, item.token, "a", [timer(1, fire)], T0)
    assert hub.lease_orchestration(T0 + timedelta(seconds=9), LEASE) is None
    assert hub.next_due_at(T0) == fire
    item2 = hub.lease_orchestration(fire, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "timerFired"]


def test_events_arriving_during_a_turn_wait_for_the_next(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    hub.raise_event("a", raised("during"), T0)
    respond(hub, item.token, "a", [], T0)
    item2 = hub.lease_orchestration(T0, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "eventRaised"]


def test_a_finished_orchestration_leaves_no_inbox_rows_or_activity_tasks_and_others_keep_theirs(
    hub: TaskHub,
) -> None:
    """Its final commit drops what waits for it (an event that came during the turn, a task still
    queued), with the turn's own inbox rows; another instance's rows and tasks stay."""
    start(hub, "a")
    start(hub, "b")
    for _ in range(2):
        item = hub.lease_orchestration(T0, LEASE)
        assert item is not None
        respond(hub, item.token, item.instance.instance_id, [schedule(1), schedule(2)], T0)
    hub.raise_event("a", raised("go"), T0)
    final = hub.lease_orchestration(T0, LEASE)
    assert final is not None and final.instance.instance_id == "a"
    hub.raise_event("a", raised("late"), T0)
    hub.raise_event("b", raised("other"), T0)
    respond(hub, final.token, "a", [complete(3)], T0)
    assert hub.store.inbox_of("a") == [] and hub.store.activity_tasks_of("a") == []
    assert [kinds([e for e, _, _ in hub.store.inbox_of("b")]), sorted(t for t, _, _ in hub.store.activity_tasks_of("b"))] \
        == [["eventRaised"], [1, 2]]


def test_a_turn_delivers_new_events_up_to_its_budget_and_the_rest_in_the_next(hub: TaskHub) -> None:
    """Under a message limit a turn carries the waiting events that fit (the first always), in
    order; the others stay for the next turn, so no turn is too large to send."""
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [], T0)
    hub.new_events_budget = 700
    for name in ("one", "two", "three"):
        event = raised(name)
        event.eventRaised.input.value = "x" * 300
        hub.raise_event("a", event, T0)
    names: list[list[str]] = []
    for _ in range(2):
        turn = hub.lease_orchestration(T0, LEASE)
        assert turn is not None
        names.append([e.eventRaised.name for e in turn.new_events if e.HasField("eventRaised")])
        respond(hub, turn.token, "a", [], T0)
    assert names == [["one", "two"], ["three"]]
    hub.new_events_budget = 100  # smaller than any one event: each still goes, alone
    for name in ("four", "five"):
        event = raised(name)
        event.eventRaised.input.value = "x" * 300
        hub.raise_event("a", event, T0)
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None and [e.eventRaised.name for e in turn.new_events if e.HasField("eventRaised")] == ["four"]


def test_continue_as_new_prepends_start_and_carryover_before_waiting_events(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [schedule(1)], T0)
    item = hub.lease_orchestration(T0, LEASE)
    assert item is None
    task = hub.lease_activity(T0, LEASE)
    assert task is not None
    hub.raise_event("a", raised("first"), T0)
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    hub.raise_event("a", raised("waiting"), T0)
    old_exec = item.instance.execution_id
    respond(hub, item.token, "a",
            [complete(2, S.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, '"next"', carryover=[raised("carried")])], T0)
    inst = hub.get_instance("a")
    assert inst is not None and inst.execution_id != old_exec and inst.input == '"next"'
    pending = hub.store.inbox_of("a")
    assert kinds([e for e, _, _ in pending]) == ["executionStarted", "eventRaised", "eventRaised"]
    assert [e.eventRaised.name for e, _, _ in pending[1:]] == ["carried", "waiting"]
    # The old execution's activity task went with it; its late result is rejected and dropped.
    assert hub.store.activity_tasks_of("a") == []
    with pytest.raises(LeaseNotFoundError):
        hub.complete_activity(task.token, pb.ActivityResponse(taskId=1, completionToken=task.token), T0)
    assert len(hub.store.inbox_of("a")) == 3
    nxt = hub.lease_orchestration(T0, LEASE)
    assert nxt is not None and nxt.past_events == []
    assert kinds(nxt.new_events) == ["orchestratorStarted", "executionStarted", "eventRaised", "eventRaised"]


def test_suspended_instance_gets_no_turn_until_resumed(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [], T0)
    suspend = engine_events.new_event(T0)
    suspend.executionSuspended.SetInParent()
    assert hub.suspend_instance("a", suspend, T0)
    assert not hub.suspend_instance("a", suspend, T0)
    hub.raise_event("a", raised("x"), T0)
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_SUSPENDED
    assert hub.lease_orchestration(T0, LEASE) is None
    resume = engine_events.new_event(T0)
    resume.executionResumed.SetInParent()
    assert hub.resume_instance("a", resume, T0)
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    assert kinds(item.new_events) == ["orchestratorStarted", "executionSuspended", "eventRaised", "executionResumed"]


def test_suspend_and_resume_of_unknown_or_finished_instances(hub: TaskHub) -> None:
    event = engine_events.new_event(T0)
    event.executionSuspended.SetInParent()
    with pytest.raises(InstanceNotFoundError):
        hub.suspend_instance("nope", event, T0)
    start(hub, "a")
    hub.terminate_instance("a", None, False, T0)
    with pytest.raises(InvalidStateError, match="already finished"):
        hub.suspend_instance("a", event, T0)


def test_raise_event_unknown_and_finished(hub: TaskHub) -> None:
    with pytest.raises(InstanceNotFoundError, match="'ghost'"):
        hub.raise_event("ghost", raised("x"), T0)
    start(hub, "a")
    assert hub.raise_event("a", raised("x"), T0)
    hub.terminate_instance("a", '"bye"', False, T0)
    assert not hub.raise_event("a", raised("late"), T0)
    assert hub.store.inbox_of("a") == []


def test_terminate_recursive_reaches_children_and_cancels_turn(hub: TaskHub) -> None:
    start(hub, "parent")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(hub, item.token, "parent", [sub], T0)
    child = hub.get_instance("child")
    assert child is not None and child.parent is not None and child.parent.instance_id == "parent"
    child_turn = hub.lease_orchestration(T0, LEASE)
    assert child_turn is not None and child_turn.instance.instance_id == "child"

    assert hub.terminate_instance("parent", '"stop"', True, T0)
    for iid in ("parent", "child"):
        inst = hub.get_instance(iid)
        assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_TERMINATED, iid
    assert hub.store.inbox_of("parent") == []
    with pytest.raises(LeaseNotFoundError):
        respond(hub, child_turn.token, "child", [complete(1)], T0)
    assert not hub.terminate_instance("parent", None, True, T0), "already terminal: no-op"
    with pytest.raises(InstanceNotFoundError):
        hub.terminate_instance("ghost", None, False, T0)


def test_child_completion_reaches_parent_inbox(hub: TaskHub) -> None:
    start(hub, "parent")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(hub, item.token, "parent", [sub], T0)
    child_turn = hub.lease_orchestration(T0, LEASE)
    assert child_turn is not None and child_turn.instance.instance_id == "child"
    respond(hub, child_turn.token, "child", [complete(1, result='"c"')], T0)
    pending = [e for e, _, _ in hub.store.inbox_of("parent")]
    assert kinds(pending) == ["subOrchestrationInstanceCompleted"]
    assert pending[0].subOrchestrationInstanceCompleted.taskScheduledId == 1


def test_purge_requires_terminal_and_recurses(hub: TaskHub) -> None:
    start(hub, "parent")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(hub, item.token, "parent", [sub], T0)
    with pytest.raises(InvalidStateError, match="'parent'"):
        hub.purge_instances(["parent"], True)
    assert hub.get_instance("parent") is not None
    hub.terminate_instance("parent", None, True, T0)
    assert hub.purge_instances(["parent", "unknown"], True) == 2
    assert hub.get_instance("parent") is None and hub.get_instance("child") is None
    with pytest.raises(InstanceNotFoundError):
        hub.get_history("parent")


def test_purge_by_filter_skips_live_instances(hub: TaskHub) -> None:
    for iid in ("a", "b", "c"):
        start(hub, iid)
    hub.terminate_instance("a", None, False, T0)
    hub.terminate_instance("b", None, False, T0)
    n = hub.purge_by_filter(InstanceFilter(statuses=[S.ORCHESTRATION_STATUS_TERMINATED,
                                                       S.ORCHESTRATION_STATUS_PENDING]), False)
    assert n == 2
    assert hub.get_instance("c") is not None


def test_query_pages_with_continuation_and_filters(hub: TaskHub) -> None:
    for i in range(5):
        start(hub, f"q-{i}", T0 + timedelta(seconds=i))
    start(hub, "other")
    seen: list[str] = []
    token = None
    while True:
        items, token = hub.query_instances(InstanceFilter(instance_id_prefix="q-"), 2, token)
        seen += [i.instance_id for i in items]
        if token is None:
            break
    assert seen == [f"q-{i}" for i in range(5)]
    items, _ = hub.query_instances(InstanceFilter(created_from=T0 + timedelta(seconds=3),
                                                    created_to=T0 + timedelta(seconds=4)), 10, None)
    assert [i.instance_id for i in items] == ["q-3", "q-4"]
    items, _ = hub.query_instances(InstanceFilter(statuses=[S.ORCHESTRATION_STATUS_COMPLETED]), 10, None)
    assert items == []


def test_list_instance_ids_pages_terminal_instances_by_completion(hub: TaskHub) -> None:
    for i in range(5):
        start(hub, f"l-{i}")
        hub.terminate_instance(f"l-{i}", None, False, T0 + timedelta(seconds=10 - i))
    start(hub, "live")
    seen: list[str] = []
    key = None
    while True:
        ids, key = hub.list_instance_ids(CompletedFilter(), 2, key)
        seen += ids
        if key is None:
            break
    assert seen == [f"l-{i}" for i in reversed(range(5))]
    ids, _ = hub.list_instance_ids(CompletedFilter(completed_to=T0 + timedelta(seconds=7)), 10, None)
    assert ids == ["l-4", "l-3"]


def test_execution_scoped_message_dropped_for_other_execution(hub: TaskHub) -> None:
    start(hub, "a")

    def deliver_both(tx: StoreTx) -> list[bool]:
        return [
            route_message(tx, "", OutboundMessage("a", raised("x"), target_execution_id="old"), T0),
            route_message(tx, "", OutboundMessage("a", raised("y"), target_execution_id="a-e1"), T0),
        ]

    assert hub.store.run(deliver_both) == [False, True]
    pending = hub.store.inbox_of("a")
    assert [e.eventRaised.name for e, _, _ in pending[1:]] == ["y"] and pending[1][2] == "a-e1"


def test_listeners_hear_every_commit(hub: TaskHub) -> None:
    heard: list[CommitNotice] = []
    hub.add_listener(heard.append)
    start(hub, "a")
    own = [n for n in heard if not n.resync]  # a shared store may also announce a resync at any time
    assert own and own[-1].instances == {"a"} and own[-1].work_available
    hub.reset()
    assert heard[-1].reset
    assert hub.get_instance("a") is None
    hub.remove_listener(heard.append)
    start(hub, "b")
    assert not any("b" in n.instances for n in heard), "a removed listener hears nothing more"


def test_fresh_store_has_the_current_schema_version(hub: TaskHub) -> None:
    assert hub.store.schema_version() == SCHEMA_VERSION
    assert hub.store.describe()


def test_reset_empties_everything(hub: TaskHub) -> None:
    start(hub, "a")
    start(hub, "later", at=T0 + timedelta(hours=1))
    start(hub, "done")
    hub.terminate_instance("done", None, False, T0)
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None and item.instance.instance_id == "a"
    respond(hub, item.token, "a", [schedule(1), timer(2, T0 + timedelta(minutes=1))], T0)
    hub.raise_event("a", raised("waiting"), T0)
    signal = engine_events.new_event(T0)
    signal.entityOperationSignaled.requestId = "r1"
    signal.entityOperationSignaled.operation = "add"
    hub.signal_entity("@counter@x", signal, T0 + timedelta(minutes=2), T0)
    assert hub.store.inbox_of("a") and hub.store.activity_tasks_of("a") and hub.store.entity_queue_of("@counter@x")

    hub.reset()
    for iid in ("a", "later", "done"):
        assert hub.get_instance(iid) is None, iid
        assert hub.store.get_history(iid) is None, iid
        assert hub.store.inbox_of(iid) == [], iid
    assert hub.store.activity_tasks_of("a") == []
    assert hub.store.entity_queue_of("@counter@x") == []
    assert hub.get_entity("@counter@x", T0) is None
    assert hub.query_instances(InstanceFilter(), 10, None) == ([], None)
    assert hub.list_instance_ids(CompletedFilter(), 10, None) == ([], None)
    later = T0 + timedelta(days=1)
    assert hub.lease_orchestration(later, LEASE) is None
    assert hub.lease_activity(later, LEASE) is None
    assert hub.lease_entity(later, LEASE) is None
    assert hub.next_due_at(T0) is None
    assert hub.store.schema_version() == SCHEMA_VERSION, "reset deletes rows, not the schema"
    start(hub, "a")  # the store is usable again
    assert hub.lease_orchestration(T0, LEASE) is not None


def test_two_hubs_on_one_database_never_lease_the_same_turn(
    hub: TaskHub, open_same_store: Callable[[], Store]
) -> None:
    ids = [f"race-{i:02d}" for i in range(50)]
    for iid in ids:
        start(hub, iid)
    hubs = [hub, TaskHub(open_same_store())]
    leased: list[list[tuple[str, str]]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(hubs))

    all_leased = threading.Event()
    counted = threading.Lock()
    total = [0]

    def drain(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            deadline = time.monotonic() + 30
            # None can mean "the rest is locked by the other hub right now": look again until
            # every instance is leased by one hub or the other (or the deadline, reported below).
            while not all_leased.is_set() and time.monotonic() < deadline:
                item = hubs[n].lease_orchestration(T0, LEASE)
                if item is None:
                    all_leased.wait(0.01)
                    continue
                leased[n].append((item.instance.instance_id, item.token))
                with counted:
                    total[0] += 1
                    if total[0] >= len(ids):
                        all_leased.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(n,), name=f"hub-{n}") for n in range(len(hubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "leasing did not finish"
    assert errors == []
    counts = Counter(iid for per_hub in leased for iid, _ in per_hub)
    assert {iid: n for iid, n in counts.items() if n != 1} == {}, "leased more than once"
    assert sorted(counts) == ids, "every instance was leased"
    tokens = [token for per_hub in leased for _, token in per_hub]
    assert len(set(tokens)) == len(tokens)
    assert all(h.lease_orchestration(T0, LEASE) is None for h in hubs)


def test_activities_are_leased_and_completed_in_batches(hub: TaskHub) -> None:
    start(hub, "a")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(hub, item.token, "a", [schedule(i) for i in (1, 2, 3)], T0)
    leased = hub.lease_activities(T0, LEASE, limit=2)
    assert [w.task.task_id for w in leased] == [1, 2]
    assert len({w.token for w in leased}) == 2
    rest = hub.lease_activities(T0, LEASE, limit=5)
    assert [w.task.task_id for w in rest] == [3]
    assert hub.lease_activities(T0, LEASE, limit=5) == []
    assert hub.lease_activities(T0, LEASE, limit=0) == []

    stale = leased[0].token
    hub.complete_activity(stale, pb.ActivityResponse(instanceId="a", taskId=1, completionToken=stale), T0)
    outcomes = hub.complete_activities([
        (t, pb.ActivityResponse(instanceId="a", taskId=n, completionToken=t), T0)
        for t, n in ((stale, 1), (leased[1].token, 2), (rest[0].token, 3))
    ])
    assert isinstance(outcomes[0], LeaseNotFoundError) and outcomes[1:] == [None, None]
    assert hub.store.activity_tasks_of("a") == []
    results = [e.taskCompleted.taskScheduledId for e, _, _ in hub.store.inbox_of("a")]
    assert results == [1, 2, 3], "each result once; the stale completion added nothing"
