"""History sequence numbers and keys, and the task hub's history cache, on every store.

``history_rows`` reads the history with its sequence numbers; ``replace_history`` numbers the
new events after the old last one, so a number is never reused within an execution; the
history key changes whenever a history starts over (the instance is created again, or its
history replaced). The hub's :class:`~sidecar.hub.history_cache.HistoryCache` relies on both
to check a cached history against the store. The two-hub tests run two task hubs (two sidecars, each with its own cache)
over one database: for SQLite both hubs share the one store a file allows; for PostgreSQL the
second hub opens its own store. Hub B changes an instance's history behind hub A's back, and
hub A's next turn must still carry exactly the stored history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.engine_rewind import rewound_event
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.store import Store, StoreTx, open_store
from sidecar.store.base import OrchestrationWorkItem

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]


def start(hub: TaskHub, iid: str, execution_id: str | None = None, now: datetime = T0) -> None:
    exec_id = execution_id or f"{iid}-e1"
    inst = InstanceSnapshot(instance_id=iid, execution_id=exec_id, name="orch", status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=now, last_updated_at=now, input='"in"')
    event = engine_events.new_execution_started(name="orch", instance_id=iid, execution_id=exec_id, now=now,
                                                input='"in"')
    hub.create_instance(inst, event, now, now)


def raised(name: str, now: datetime = T0) -> pb.HistoryEvent:
    event = engine_events.new_event(now)
    event.eventRaised.name = name
    return event


def schedule(action_id: int, name: str = "act") -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, scheduleTask=pb.ScheduleTaskAction(name=name))


def finish(action_id: int, status: int) -> pb.OrchestratorAction:
    a = pb.OrchestratorAction(id=action_id)
    a.completeOrchestration.orchestrationStatus = status  # type: ignore[assignment]
    if status == S.ORCHESTRATION_STATUS_FAILED:
        a.completeOrchestration.failureDetails.errorMessage = "boom"
    else:
        a.completeOrchestration.result.value = '"done"'
    return a


def rows(store: Store, iid: str, from_seq: int = 0) -> list[tuple[int, pb.HistoryEvent]]:
    return store.run(lambda tx: tx.history_rows(iid, from_seq))


def lease(hub: TaskHub, iid: str, now: datetime = T0) -> OrchestrationWorkItem:
    """Lease ``iid``'s next turn on ``hub``; it must carry exactly the stored history."""
    item = hub.lease_orchestration(now, LEASE)
    assert item is not None and item.instance.instance_id == iid, item
    stored = rows(hub.store, iid)
    assert item.past_events == [event for _, event in stored], "the turn's past events are not the stored history"
    assert item.history_first_seq == (stored[0][0] if stored else 0)
    assert item.history_key == key_of(hub.store, iid)
    return item


def respond(hub: TaskHub, item: OrchestrationWorkItem, *actions: pb.OrchestratorAction, now: datetime = T0) -> None:
    response = pb.OrchestratorResponse(instanceId=item.instance.instance_id, completionToken=item.token,
                                       actions=actions)
    hub.complete_orchestration(item.token, response, now)


def turn(hub: TaskHub, iid: str, *actions: pb.OrchestratorAction, now: datetime = T0) -> OrchestrationWorkItem:
    item = lease(hub, iid, now)
    respond(hub, item, *actions, now=now)
    return item


def waiting_turns(hub: TaskHub, iid: str, count: int, tag: str = "e") -> None:
    """``count`` turns that each deliver one event and answer with nothing (the history grows)."""
    for i in range(count):
        hub.raise_event(iid, raised(f"{tag}{i}"), T0)
        turn(hub, iid)


def cached(hub: TaskHub, iid: str) -> bool:
    """Whether ``hub`` holds a history view of ``iid`` (so that the next turn starts from it)."""
    return iid in hub.histories._views


def rewind_keeping_execution(hub: TaskHub, iid: str, extra: int = 0) -> list[pb.HistoryEvent]:
    """Rewind a FAILED instance and answer as a worker keeping the execution ID (``extra`` more events)."""
    hub.rewind_instance(iid, rewound_event(T0, "fixed"), T0)
    item = lease(hub, iid)
    assert kinds(item.new_events) == ["orchestratorStarted", "executionRewound"]
    history = [e for e in item.past_events if not e.HasField("executionCompleted")]
    history = [e for e in history if not e.HasField("orchestratorCompleted")] + list(item.new_events)
    history.extend(raised(f"extra{i}") for i in range(extra))
    action = pb.OrchestratorAction(id=-1)
    action.rewindOrchestration.newHistory.extend(history)
    respond(hub, item, action)
    assert hub.store.get_history(iid) == history
    return history


# ----------------------------------------------------------- sequence numbers


def test_history_rows_carry_consecutive_sequence_numbers_from_a_given_one(hub: TaskHub) -> None:
    start(hub, "a")
    turn(hub, "a", schedule(1))
    waiting_turns(hub, "a", 3)
    all_rows = rows(hub.store, "a")
    assert [event for _, event in all_rows] == hub.store.get_history("a")
    seqs = [seq for seq, _ in all_rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert rows(hub.store, "a", seqs[4]) == all_rows[4:]
    assert rows(hub.store, "a", seqs[-1]) == all_rows[-1:]
    assert rows(hub.store, "a", seqs[-1] + 1) == []
    assert rows(hub.store, "ghost") == []


def test_replace_history_numbers_the_new_events_after_the_old_last_one(hub: TaskHub) -> None:
    start(hub, "a")
    first = [raised(f"a{i}") for i in range(3)]
    second = [raised(f"b{i}") for i in range(2)]

    def append(events: list[pb.HistoryEvent]) -> None:
        hub.store.run(lambda tx: tx.append_history("a", events))

    def replace(events: list[pb.HistoryEvent]) -> None:
        hub.store.run(lambda tx: tx.replace_history("a", events))

    append(first)
    assert [seq for seq, _ in rows(hub.store, "a")] == [0, 1, 2]
    replace(second)
    assert rows(hub.store, "a") == [(3, second[0]), (4, second[1])]
    append(first[:1])
    assert [seq for seq, _ in rows(hub.store, "a")] == [3, 4, 5]
    replace(first)  # longer than before: still after the old last one
    assert rows(hub.store, "a") == [(6, first[0]), (7, first[1]), (8, first[2])]
    assert hub.store.get_history("a") == first


def test_a_rewind_renumbers_the_history_after_the_old_one(hub: TaskHub) -> None:
    start(hub, "a")
    turn(hub, "a", schedule(1))
    hub.raise_event("a", raised("go"), T0)
    turn(hub, "a", finish(2, S.ORCHESTRATION_STATUS_FAILED))
    old_last = rows(hub.store, "a")[-1][0]
    history = rewind_keeping_execution(hub, "a")
    assert [seq for seq, _ in rows(hub.store, "a")] == list(range(old_last + 1, old_last + 1 + len(history)))
    item = lease(hub, "a")
    assert item.history_first_seq == old_last + 1


def key_of(store: Store, iid: str) -> str | None:
    return store.run(lambda tx: tx.history_key(iid))


def test_the_history_key_changes_when_the_history_starts_over_and_only_then(hub: TaskHub) -> None:
    start(hub, "a")
    created = key_of(hub.store, "a")
    assert created is not None
    item = turn(hub, "a", schedule(1))
    assert item.history_key == created
    waiting_turns(hub, "a", 2)
    assert key_of(hub.store, "a") == lease_key(hub, "a") == created, "appends keep the key"
    hub.store.run(lambda tx: tx.replace_history("a", [raised("x")]))
    replaced = key_of(hub.store, "a")
    assert replaced not in (None, created)
    assert lease_key(hub, "a") == replaced
    assert hub.terminate_instance("a", None, False, T0)
    start(hub, "a")  # the same execution ID again
    again = key_of(hub.store, "a")
    assert again not in (None, created, replaced)
    assert lease_key(hub, "a") == again
    assert key_of(hub.store, "ghost") is None
    start(hub, "b")
    assert key_of(hub.store, "b") not in (None, created, replaced, again)


def lease_key(hub: TaskHub, iid: str) -> str | None:
    """The history key of ``iid``'s next turn (leased after raising an event, answered with nothing)."""
    hub.raise_event(iid, raised("k"), T0)
    return turn(hub, iid).history_key


# --------------------------------------------------------------- one hub


def test_every_turn_carries_the_stored_history_through_a_life_with_a_rewind(hub: TaskHub) -> None:
    start(hub, "a")
    turn(hub, "a", schedule(1))
    assert cached(hub, "a")
    waiting_turns(hub, "a", 3)
    hub.raise_event("a", raised("fail"), T0)
    turn(hub, "a", finish(10, S.ORCHESTRATION_STATUS_FAILED))
    assert not cached(hub, "a"), "a finished instance's history is not kept"
    rewind_keeping_execution(hub, "a", extra=2)
    waiting_turns(hub, "a", 2, tag="after")
    hub.raise_event("a", raised("done"), T0)
    turn(hub, "a", finish(11, S.ORCHESTRATION_STATUS_COMPLETED))
    inst = hub.get_instance("a")
    assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_COMPLETED


def test_continue_as_new_starts_the_next_execution_from_an_empty_history(hub: TaskHub) -> None:
    start(hub, "a")
    waiting_turns(hub, "a", 1)
    hub.raise_event("a", raised("again"), T0)
    turn(hub, "a", finish(1, S.ORCHESTRATION_STATUS_CONTINUED_AS_NEW))
    assert not cached(hub, "a")
    item = lease(hub, "a")
    assert item.past_events == [] and kinds(item.new_events)[:2] == ["orchestratorStarted", "executionStarted"]
    respond(hub, item)
    waiting_turns(hub, "a", 2)


# --------------------------------------------------------------- two hubs


@pytest.fixture
def other_hub(store_kind: str, store_spec: str, store: Store) -> Iterator[TaskHub]:
    """A second task hub (another sidecar) on the same database, with its own history cache."""
    if store_kind != "postgresql":
        yield TaskHub(store)  # one SQLite file has one owner: both hubs use its store
        return
    other = open_store(store_spec)
    try:
        yield TaskHub(other)
    finally:
        other.close()


def test_a_hub_sees_the_turns_another_hub_appended(hub: TaskHub, other_hub: TaskHub) -> None:
    start(hub, "a")
    turn(hub, "a", schedule(1))
    waiting_turns(hub, "a", 2)
    assert cached(hub, "a")
    waiting_turns(other_hub, "a", 3, tag="b")
    activity = other_hub.lease_activity(T0, LEASE)
    assert activity is not None
    other_hub.complete_activity(activity.token, pb.ActivityResponse(instanceId="a", taskId=1), T0)
    item = turn(hub, "a", schedule(2))  # checks the history against the store
    assert kinds(item.new_events) == ["orchestratorStarted", "taskCompleted"]
    waiting_turns(other_hub, "a", 1, tag="c")
    waiting_turns(hub, "a", 1, tag="d")


@pytest.mark.parametrize("extra", [0, 8], ids=["shorter", "longer"])
def test_a_hub_sees_a_history_another_hub_replaced_in_the_same_execution(
    hub: TaskHub, other_hub: TaskHub, extra: int
) -> None:
    start(hub, "a")
    turn(hub, "a", schedule(1))
    waiting_turns(hub, "a", 2)
    assert cached(hub, "a")
    hub.raise_event("a", raised("fail"), T0)
    turn(other_hub, "a", finish(5, S.ORCHESTRATION_STATUS_FAILED))
    assert cached(hub, "a"), "hub A still holds the view from before the failure"
    rewind_keeping_execution(other_hub, "a", extra=extra)
    inst = hub.get_instance("a")
    assert inst is not None and inst.execution_id == "a-e1"
    item = turn(hub, "a")  # the rewound history's replay turn, on hub A
    assert kinds(item.new_events) == ["orchestratorStarted"]
    waiting_turns(other_hub, "a", 2, tag="b")
    waiting_turns(hub, "a", 1, tag="c")


def test_a_hub_sees_an_instance_recreated_with_the_same_execution_id(hub: TaskHub, other_hub: TaskHub) -> None:
    start(hub, "a", execution_id="same")
    turn(hub, "a", schedule(1))
    waiting_turns(hub, "a", 2)
    assert cached(hub, "a")
    assert other_hub.terminate_instance("a", None, False, T0)
    start(other_hub, "a", execution_id="same")  # replaces the finished instance: a new history from scratch
    turn(other_hub, "a", schedule(1, "other"))
    waiting_turns(other_hub, "a", 4, tag="b")
    hub.raise_event("a", raised("c"), T0)
    item = turn(hub, "a", schedule(2))  # hub A's cached view is of the old history
    assert item.past_events[2].taskScheduled.name == "other"


def test_a_hub_sees_a_new_execution_started_by_another_hub(hub: TaskHub, other_hub: TaskHub) -> None:
    start(hub, "a")
    waiting_turns(hub, "a", 2)
    assert cached(hub, "a")
    hub.raise_event("a", raised("again"), T0)
    turn(other_hub, "a", finish(1, S.ORCHESTRATION_STATUS_CONTINUED_AS_NEW))
    turn(other_hub, "a")
    waiting_turns(other_hub, "a", 3, tag="b")
    waiting_turns(hub, "a", 1, tag="c")


def test_the_tx_history_rows_default_reads_everything(store: Store) -> None:
    def fn(tx: StoreTx) -> list[tuple[int, pb.HistoryEvent]]:
        tx.append_history("x", [raised("one"), raised("two")])
        return tx.history_rows("x")

    assert [seq for seq, _ in store.run(fn)] == [0, 1]
