"""Leasing inside a completion's transaction (the dispatcher's follow-on), on every store."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.wrappers_pb2 import StringValue

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.hub import TaskHub
from sidecar.store.base import StoreTx
from tests.contract.test_store_instances import LEASE, T0, action, start


def test_a_claim_restricted_to_some_instances_takes_only_those(hub: TaskHub) -> None:
    for iid in ("a", "b", "c"):
        start(hub, iid)

    def claim(tx: StoreTx) -> list[str]:
        leased = hub.lease_orchestrations_in(tx, T0, LEASE, limit=5, only=["c", "missing"])
        none = hub.lease_orchestrations_in(tx, T0, LEASE, limit=5, only=[])
        assert none == []
        return [item.instance.instance_id for item, _ in leased]

    assert hub.store.run(claim) == ["c"]
    rest = hub.lease_orchestrations(T0, LEASE, limit=5)
    assert sorted(item.instance.instance_id for item in rest) == ["a", "b"]


def test_a_turns_completion_leases_the_activity_it_scheduled_in_the_same_transaction(hub: TaskHub) -> None:
    start(hub, "a")
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None
    leased: list[int] = []

    def then(tx: StoreTx) -> None:
        assert "activity" in tx.notice.work_kinds
        leased.extend(a.task.task_id for a in hub.lease_activities_in(tx, T0, LEASE, limit=4))

    scheduled = action(7, scheduleTask=pb.ScheduleTaskAction(name="act"))
    outcomes = hub.complete_orchestrations([(turn.token, pb.OrchestratorResponse(
        instanceId="a", completionToken=turn.token, actions=[scheduled]), T0)], then)
    assert outcomes == [None] and leased == [7]
    assert hub.lease_activity(T0, LEASE) is None, "the task is leased already"


def test_an_activity_result_leases_the_turn_it_unblocked_in_the_same_transaction(hub: TaskHub) -> None:
    start(hub, "a")
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None
    scheduled = action(1, scheduleTask=pb.ScheduleTaskAction(name="act"))
    hub.complete_orchestration(turn.token, pb.OrchestratorResponse(
        instanceId="a", completionToken=turn.token, actions=[scheduled]), T0)
    activity = hub.lease_activity(T0, LEASE)
    assert activity is not None
    turns: list[str] = []

    def then(tx: StoreTx) -> None:
        assert tx.notice.inbox_instances == {"a"}
        leased = hub.lease_orchestrations_in(tx, T0, LEASE, only=tx.notice.inbox_instances)
        turns.extend(item.instance.instance_id for item in hub.keep_leased_turns(leased))

    response = pb.ActivityResponse(instanceId="a", taskId=1, completionToken=activity.token)
    assert hub.complete_activities([(activity.token, response, T0)], then) == [None]
    assert turns == ["a"]
    assert hub.lease_orchestration(T0, LEASE) is None, "its turn is leased already"


def test_a_claim_without_expired_leases_takes_only_tasks_never_leased(hub: TaskHub) -> None:
    start(hub, "a")
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None
    tasks = [action(n, scheduleTask=pb.ScheduleTaskAction(name="act")) for n in (1, 2)]
    hub.complete_orchestration(turn.token, pb.OrchestratorResponse(
        instanceId="a", completionToken=turn.token, actions=tasks), T0)
    first = hub.lease_activity(T0, LEASE)
    assert first is not None and first.task.task_id == 1
    later = T0 + LEASE + timedelta(seconds=1)  # task 1's lease has run out

    def ready_only(tx: StoreTx) -> list[int]:
        return [a.task.task_id for a in hub.lease_activities_in(tx, later, LEASE, limit=5, expired=False)]

    assert hub.store.run(ready_only) == [2]
    again = hub.lease_activity(later, LEASE)
    assert again is not None and again.task.task_id == 1, "a claim with expired leases takes the task back"


def test_a_turn_that_schedules_many_tasks_stores_each_task_and_event_in_order(hub: TaskHub) -> None:
    # 120 tasks: more than one multi-row INSERT's worth where the store batches rows (PostgreSQL).
    start(hub, "a")
    turn = hub.lease_orchestration(T0, LEASE)
    assert turn is not None
    ids = list(range(1, 121))
    tasks = [action(n, scheduleTask=pb.ScheduleTaskAction(name="act", input=StringValue(value=f'"{n}"')))
             for n in ids]
    hub.complete_orchestration(turn.token, pb.OrchestratorResponse(
        instanceId="a", completionToken=turn.token, actions=tasks), T0)
    scheduled = [e.eventId for e in hub.get_history("a") if e.HasField("taskScheduled")]
    assert scheduled == ids
    leased = hub.lease_activities(T0, LEASE, limit=500)
    assert [a.task.task_id for a in leased] == ids
    assert [a.task.input for a in leased] == [f'"{n}"' for n in ids]
