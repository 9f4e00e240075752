"""The SQLite store: each transaction's effects, leases, restarts, ordering, execution scoping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.model import InstanceSnapshot, InvalidTurnError
from sidecar.store import (
    ChangeSet,
    CompletedFilter,
    InstanceExistsError,
    InstanceFilter,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseNotFoundError,
    SqliteStore,
    StoreLockedError,
)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]


def start(store: SqliteStore, iid: str, now: datetime = T0, name: str = "orch", *, at: datetime | None = None,
          replaceable: list[int] | None = None, execution_id: str | None = None) -> None:
    exec_id = execution_id or f"{iid}-e1"
    inst = InstanceSnapshot(instance_id=iid, execution_id=exec_id, name=name, status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=now, last_updated_at=now, input='"in"', scheduled_start_at=at)
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=exec_id, now=now,
                                                input='"in"', scheduled_start_at=at)
    store.create_instance(inst, event, at or now, now, replaceable)


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


def respond(store: SqliteStore, token: str, iid: str, actions: list[pb.OrchestratorAction], now: datetime) -> None:
    store.complete_orchestration(token, pb.OrchestratorResponse(instanceId=iid, completionToken=token,
                                                                actions=actions), now)


def raised(name: str, now: datetime = T0) -> pb.HistoryEvent:
    event = engine_events.new_event(now)
    event.eventRaised.name = name
    return event


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore("memory")
    yield s
    s.close()


def test_create_instance_is_pending_with_execution_started_in_inbox(store: SqliteStore) -> None:
    start(store, "a")
    inst = store.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_PENDING and inst.input == '"in"'
    assert store.get_history("a") == []
    assert kinds([e for e, _, _ in store.pending_events("a")]) == ["executionStarted"]


def test_live_instance_id_is_taken_unless_policy_replaces_it(store: SqliteStore) -> None:
    start(store, "a")
    with pytest.raises(InstanceExistsError, match="'a' already exists"):
        start(store, "a")
    with pytest.raises(InstanceExistsError):
        start(store, "a", replaceable=[S.ORCHESTRATION_STATUS_COMPLETED])
    start(store, "a", replaceable=[S.ORCHESTRATION_STATUS_PENDING], execution_id="second")
    inst = store.get_instance("a")
    assert inst is not None and inst.execution_id == "second" and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert kinds([e for e, _, _ in store.pending_events("a")]) == ["executionStarted"]


def test_terminal_instance_is_replaced_by_default(store: SqliteStore) -> None:
    start(store, "a")
    assert store.terminate_instance("a", None, False, T0)
    start(store, "a", execution_id="again")
    inst = store.get_instance("a")
    assert inst is not None and inst.execution_id == "again" and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert store.get_history("a") == []


def test_turn_schedules_activity_and_result_comes_back(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None and item.instance.instance_id == "a"
    assert kinds(item.new_events) == ["orchestratorStarted", "executionStarted"]
    assert store.lease_orchestration(T0, LEASE) is None, "a leased instance is not offered twice"

    t1 = T0 + timedelta(seconds=1)
    respond(store, item.token, "a", [schedule(1)], t1)
    inst = store.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_RUNNING
    assert "taskScheduled" in kinds(store.get_history("a"))
    assert store.pending_events("a") == []
    assert store.activity_tasks("a") == [(1, "act", False)]

    task = store.lease_activity(t1, LEASE)
    assert task is not None and task.task.task_id == 1 and task.task.execution_id == "a-e1"
    assert store.lease_activity(t1, LEASE) is None
    store.complete_activity(task.token, pb.ActivityResponse(instanceId="a", taskId=1, completionToken=task.token), t1)
    assert store.activity_tasks("a") == []
    pending = store.pending_events("a")
    assert kinds([e for e, _, _ in pending]) == ["taskCompleted"] and pending[0][2] == "a-e1"
    with pytest.raises(LeaseNotFoundError):
        store.complete_activity(task.token, pb.ActivityResponse(completionToken=task.token), t1)

    item2 = store.lease_orchestration(t1, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "taskCompleted"]
    respond(store, item2.token, "a", [complete(2)], t1)
    done = store.get_instance("a")
    assert done is not None and done.status == S.ORCHESTRATION_STATUS_COMPLETED and done.output == '"ok"'
    with pytest.raises(LeaseNotFoundError):
        respond(store, item2.token, "a", [complete(2)], t1)


def test_invalid_turn_changes_nothing_and_backs_off(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    bad = pb.OrchestratorAction(id=1)  # no action kind set
    with pytest.raises(InvalidTurnError):
        respond(store, item.token, "a", [bad], T0)
    inst = store.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_PENDING
    assert store.get_history("a") == []
    assert kinds([e for e, _, _ in store.pending_events("a")]) == ["executionStarted"]
    with pytest.raises(LeaseNotFoundError):
        respond(store, item.token, "a", [complete(1)], T0)
    assert store.lease_orchestration(T0, LEASE) is None, "offered again only after the back-off"
    due = store.next_due_at(T0)
    assert due is not None and T0 < due <= T0 + timedelta(seconds=1)
    assert store.lease_orchestration(due, LEASE) is not None


def test_expired_lease_is_taken_over_and_old_token_is_stale(store: SqliteStore) -> None:
    start(store, "a")
    first = store.lease_orchestration(T0, LEASE)
    assert first is not None
    assert store.next_due_at(T0) == T0 + LEASE
    later = T0 + LEASE + timedelta(seconds=1)
    second = store.lease_orchestration(later, LEASE)
    assert second is not None and second.token != first.token
    with pytest.raises(LeaseNotFoundError):
        respond(store, first.token, "a", [complete(1)], later)
    respond(store, second.token, "a", [complete(1)], later)
    inst = store.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_COMPLETED


def test_renewed_lease_does_not_expire(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    store.renew_leases([item.token], T0 + 2 * LEASE)
    assert store.lease_orchestration(T0 + LEASE + timedelta(seconds=1), LEASE) is None


def test_activity_lease_expires_and_abandon_backs_off(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(store, item.token, "a", [schedule(1)], T0)
    task = store.lease_activity(T0, LEASE)
    assert task is not None
    again = store.lease_activity(T0 + LEASE, LEASE)
    assert again is not None and again.token != task.token
    store.abandon_activity(again.token, T0 + LEASE)
    assert store.lease_activity(T0 + LEASE, LEASE) is None
    third = store.lease_activity(T0 + LEASE + timedelta(seconds=1), LEASE)
    assert third is not None
    with pytest.raises(LeaseNotFoundError):
        store.abandon_activity(again.token, T0)


def test_release_gives_work_back_at_once(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    assert store.release_orchestration(item.token)
    assert not store.release_orchestration(item.token)
    again = store.lease_orchestration(T0, LEASE)
    assert again is not None and kinds(again.new_events) == ["orchestratorStarted", "executionStarted"]


def test_scheduled_start_is_honoured(store: SqliteStore) -> None:
    at = T0 + timedelta(seconds=30)
    start(store, "a", at=at)
    store.raise_event("a", raised("early"), T0)
    assert store.lease_orchestration(T0, LEASE) is None
    assert store.next_due_at(T0) == at
    item = store.lease_orchestration(at, LEASE)
    assert item is not None and kinds(item.new_events) == ["orchestratorStarted", "executionStarted", "eventRaised"]


def test_timer_becomes_visible_at_fire_time(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    fire = T0 + timedelta(seconds=10)
    respond(store, item.token, "a", [timer(1, fire)], T0)
    assert store.lease_orchestration(T0 + timedelta(seconds=9), LEASE) is None
    assert store.next_due_at(T0) == fire
    item2 = store.lease_orchestration(fire, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "timerFired"]


def test_events_arriving_during_a_turn_wait_for_the_next(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    store.raise_event("a", raised("during"), T0)
    respond(store, item.token, "a", [], T0)
    item2 = store.lease_orchestration(T0, LEASE)
    assert item2 is not None and kinds(item2.new_events) == ["orchestratorStarted", "eventRaised"]


def test_continue_as_new_prepends_start_and_carryover_before_waiting_events(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(store, item.token, "a", [schedule(1)], T0)
    item = store.lease_orchestration(T0, LEASE)
    assert item is None
    task = store.lease_activity(T0, LEASE)
    assert task is not None
    store.raise_event("a", raised("first"), T0)
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    store.raise_event("a", raised("waiting"), T0)
    old_exec = item.instance.execution_id
    respond(store, item.token, "a",
            [complete(2, S.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, '"next"', carryover=[raised("carried")])], T0)
    inst = store.get_instance("a")
    assert inst is not None and inst.execution_id != old_exec and inst.input == '"next"'
    pending = store.pending_events("a")
    assert kinds([e for e, _, _ in pending]) == ["executionStarted", "eventRaised", "eventRaised"]
    assert [e.eventRaised.name for e, _, _ in pending[1:]] == ["carried", "waiting"]
    # The old execution's activity task went with it; its late result is rejected and dropped.
    assert store.activity_tasks("a") == []
    with pytest.raises(LeaseNotFoundError):
        store.complete_activity(task.token, pb.ActivityResponse(taskId=1, completionToken=task.token), T0)
    assert len(store.pending_events("a")) == 3
    nxt = store.lease_orchestration(T0, LEASE)
    assert nxt is not None and nxt.past_events == []
    assert kinds(nxt.new_events) == ["orchestratorStarted", "executionStarted", "eventRaised", "eventRaised"]


def test_suspended_instance_gets_no_turn_until_resumed(store: SqliteStore) -> None:
    start(store, "a")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    respond(store, item.token, "a", [], T0)
    suspend = engine_events.new_event(T0)
    suspend.executionSuspended.SetInParent()
    assert store.suspend_instance("a", suspend, T0)
    assert not store.suspend_instance("a", suspend, T0)
    store.raise_event("a", raised("x"), T0)
    inst = store.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_SUSPENDED
    assert store.lease_orchestration(T0, LEASE) is None
    resume = engine_events.new_event(T0)
    resume.executionResumed.SetInParent()
    assert store.resume_instance("a", resume, T0)
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    assert kinds(item.new_events) == ["orchestratorStarted", "executionSuspended", "eventRaised", "executionResumed"]


def test_suspend_and_resume_of_unknown_or_finished_instances(store: SqliteStore) -> None:
    event = engine_events.new_event(T0)
    event.executionSuspended.SetInParent()
    with pytest.raises(InstanceNotFoundError):
        store.suspend_instance("nope", event, T0)
    start(store, "a")
    store.terminate_instance("a", None, False, T0)
    with pytest.raises(InvalidStateError, match="already finished"):
        store.suspend_instance("a", event, T0)


def test_raise_event_unknown_and_finished(store: SqliteStore) -> None:
    with pytest.raises(InstanceNotFoundError, match="'ghost'"):
        store.raise_event("ghost", raised("x"), T0)
    start(store, "a")
    assert store.raise_event("a", raised("x"), T0)
    store.terminate_instance("a", '"bye"', False, T0)
    assert not store.raise_event("a", raised("late"), T0)
    assert store.pending_events("a") == []


def test_terminate_recursive_reaches_children_and_cancels_turn(store: SqliteStore) -> None:
    start(store, "parent")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(store, item.token, "parent", [sub], T0)
    child = store.get_instance("child")
    assert child is not None and child.parent is not None and child.parent.instance_id == "parent"
    child_turn = store.lease_orchestration(T0, LEASE)
    assert child_turn is not None and child_turn.instance.instance_id == "child"

    assert store.terminate_instance("parent", '"stop"', True, T0)
    for iid in ("parent", "child"):
        inst = store.get_instance(iid)
        assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_TERMINATED, iid
    assert store.pending_events("parent") == []
    with pytest.raises(LeaseNotFoundError):
        respond(store, child_turn.token, "child", [complete(1)], T0)
    assert not store.terminate_instance("parent", None, True, T0), "already terminal: no-op"
    with pytest.raises(InstanceNotFoundError):
        store.terminate_instance("ghost", None, False, T0)


def test_child_completion_reaches_parent_inbox(store: SqliteStore) -> None:
    start(store, "parent")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(store, item.token, "parent", [sub], T0)
    child_turn = store.lease_orchestration(T0, LEASE)
    assert child_turn is not None and child_turn.instance.instance_id == "child"
    respond(store, child_turn.token, "child", [complete(1, result='"c"')], T0)
    pending = [e for e, _, _ in store.pending_events("parent")]
    assert kinds(pending) == ["subOrchestrationInstanceCompleted"]
    assert pending[0].subOrchestrationInstanceCompleted.taskScheduledId == 1


def test_purge_requires_terminal_and_recurses(store: SqliteStore) -> None:
    start(store, "parent")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    sub = action(1, createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="child", name="sub"))
    respond(store, item.token, "parent", [sub], T0)
    with pytest.raises(InvalidStateError, match="'parent'"):
        store.purge_instances(["parent"], True)
    assert store.get_instance("parent") is not None
    store.terminate_instance("parent", None, True, T0)
    assert store.purge_instances(["parent", "unknown"], True) == 2
    assert store.get_instance("parent") is None and store.get_instance("child") is None
    with pytest.raises(InstanceNotFoundError):
        store.get_history("parent")


def test_purge_by_filter_skips_live_instances(store: SqliteStore) -> None:
    for iid in ("a", "b", "c"):
        start(store, iid)
    store.terminate_instance("a", None, False, T0)
    store.terminate_instance("b", None, False, T0)
    n = store.purge_by_filter(InstanceFilter(statuses=[S.ORCHESTRATION_STATUS_TERMINATED,
                                                       S.ORCHESTRATION_STATUS_PENDING]), False)
    assert n == 2
    assert store.get_instance("c") is not None


def test_query_pages_with_continuation_and_filters(store: SqliteStore) -> None:
    for i in range(5):
        start(store, f"q-{i}", T0 + timedelta(seconds=i))
    start(store, "other")
    seen: list[str] = []
    token = None
    while True:
        items, token = store.query_instances(InstanceFilter(instance_id_prefix="q-"), 2, token)
        seen += [i.instance_id for i in items]
        if token is None:
            break
    assert seen == [f"q-{i}" for i in range(5)]
    items, _ = store.query_instances(InstanceFilter(created_from=T0 + timedelta(seconds=3),
                                                    created_to=T0 + timedelta(seconds=4)), 10, None)
    assert [i.instance_id for i in items] == ["q-3", "q-4"]
    items, _ = store.query_instances(InstanceFilter(statuses=[S.ORCHESTRATION_STATUS_COMPLETED]), 10, None)
    assert items == []


def test_list_instance_ids_pages_terminal_instances_by_completion(store: SqliteStore) -> None:
    for i in range(5):
        start(store, f"l-{i}")
        store.terminate_instance(f"l-{i}", None, False, T0 + timedelta(seconds=10 - i))
    start(store, "live")
    seen: list[str] = []
    key = None
    while True:
        ids, key = store.list_instance_ids(CompletedFilter(), 2, key)
        seen += ids
        if key is None:
            break
    assert seen == [f"l-{i}" for i in reversed(range(5))]
    ids, _ = store.list_instance_ids(CompletedFilter(completed_to=T0 + timedelta(seconds=7)), 10, None)
    assert ids == ["l-4", "l-3"]


def test_execution_scoped_message_dropped_for_other_execution(store: SqliteStore) -> None:
    start(store, "a")
    from sidecar.model import OutboundMessage
    from sidecar.store import sqlite_commit

    with store._tx() as (db, changes):
        assert not sqlite_commit.deliver_message(db, OutboundMessage("a", raised("x"), target_execution_id="old"),
                                                 T0, changes)
        assert sqlite_commit.deliver_message(db, OutboundMessage("a", raised("y"), target_execution_id="a-e1"),
                                             T0, changes)
    pending = store.pending_events("a")
    assert [e.eventRaised.name for e, _, _ in pending[1:]] == ["y"] and pending[1][2] == "a-e1"


def test_listeners_hear_every_commit(store: SqliteStore) -> None:
    heard: list[ChangeSet] = []
    store.add_listener(heard.append)
    start(store, "a")
    assert heard[-1].instances == {"a"} and heard[-1].work_available
    store.reset()
    assert heard[-1].reset
    assert store.get_instance("a") is None


def test_file_store_clears_stale_leases_on_reopen_and_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    start(first, "a")
    item = first.lease_orchestration(T0, LEASE)
    assert item is not None
    first.close()
    second = SqliteStore(path)
    try:
        assert second.cleared_leases == 1
        again = second.lease_orchestration(T0, LEASE)
        assert again is not None and again.token != item.token
        assert kinds(again.new_events) == ["orchestratorStarted", "executionStarted"]
    finally:
        second.close()


def test_second_store_on_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    try:
        with pytest.raises(StoreLockedError, match="another sidecar"):
            SqliteStore(path)
    finally:
        first.close()
    SqliteStore(path).close()
