"""Follow-on leasing: a completion leases the work it made in its own transaction and sends it at once.

The dispatcher's thread is never started here, so whatever reaches a stream after a completion
was put there by the completion itself. Driven by hand over a TaskHub on an in-memory store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.dispatch import Dispatcher, DispatchOptions
from sidecar.hub import TaskHub
from sidecar.store import open_store
from sidecar.store.base import StoreTx
from sidecar.work_streams import ACTIVITY, ORCHESTRATION, WorkStream
from tests.unit.dispatch_builders import T0, queued, start

LEASE = timedelta(seconds=30)


class BreakableHub(TaskHub):
    """A TaskHub whose completion transactions can be made to fail after the follow-on leased."""

    def __init__(self) -> None:
        super().__init__(open_store("memory"))
        self.fail_after_follow_on = False

    def _then(self, then: Any) -> Any:
        if then is None or not self.fail_after_follow_on:
            return then

        def breaking(tx: StoreTx) -> None:
            then(tx)
            raise RuntimeError("the commit failed after the follow-on leased")

        return breaking

    def complete_activities(self, completions: Any, then: Any = None) -> Any:
        return super().complete_activities(completions, self._then(then))

    def complete_orchestrations(self, completions: Any, then: Any = None) -> Any:
        return super().complete_orchestrations(completions, self._then(then))


@pytest.fixture
def hub() -> BreakableHub:
    return BreakableHub()


def schedule(*action_ids: int) -> list[pb.OrchestratorAction]:
    actions = []
    for action_id in action_ids:
        action = pb.OrchestratorAction(id=action_id)
        action.scheduleTask.name = "act"
        actions.append(action)
    return actions


def turn_done(item: pb.WorkItem, actions: list[pb.OrchestratorAction]) -> pb.OrchestratorResponse:
    return pb.OrchestratorResponse(instanceId=item.orchestratorRequest.instanceId,
                                   completionToken=item.completionToken, actions=actions)


def activity_done(item: pb.WorkItem) -> pb.ActivityResponse:
    request = item.activityRequest
    response = pb.ActivityResponse(instanceId=request.orchestrationInstance.instanceId, taskId=request.taskId,
                                   completionToken=item.completionToken)
    response.result.value = '"done"'
    return response


def setup(hub: TaskHub, turns: int = 0, activities: int = 0) -> tuple[Dispatcher, WorkStream]:
    dispatcher = Dispatcher(hub, DispatchOptions(), clock=lambda: T0)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=turns, maxConcurrentActivityWorkItems=activities))
    return dispatcher, stream


def first_turn(hub: TaskHub, dispatcher: Dispatcher, stream: WorkStream, iid: str = "a") -> pb.WorkItem:
    start(hub, iid)
    dispatcher._dispatch_all()  # the first turn: leased by a dispatch pass, as the dispatcher thread would
    [item] = queued(stream)
    assert item.HasField("orchestratorRequest")
    return item


def test_a_completed_turn_sends_the_activities_it_scheduled_and_their_results_the_next_turn(
    hub: BreakableHub,
) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)
    dispatcher.complete_orchestration(turn_done(turn, schedule(1, 2)))
    activities = queued(stream)
    assert sorted(a.activityRequest.taskId for a in activities) == [1, 2]
    assert dispatcher.open_streams() == 1 and stream.free(ACTIVITY) == stream.max_activities - 2
    dispatcher.complete_activity(activity_done(activities[0]))
    [next_turn] = queued(stream)
    assert next_turn.orchestratorRequest.instanceId == "a"
    results = [e.taskCompleted.taskScheduledId for e in next_turn.orchestratorRequest.newEvents
               if e.HasField("taskCompleted")]
    assert results == [activities[0].activityRequest.taskId]
    assert "a" in dispatcher._turns_out
    # The second result arrives while that turn is out: it waits for the turn's end (no follow-on).
    dispatcher.complete_activity(activity_done(activities[1]))
    assert queued(stream) == []
    dispatcher.complete_orchestration(turn_done(next_turn, []))
    dispatcher._dispatch_all()
    [last] = queued(stream)
    assert [e.taskCompleted.taskScheduledId for e in last.orchestratorRequest.newEvents
            if e.HasField("taskCompleted")] == [activities[1].activityRequest.taskId]
    assert stream.reserved == dict.fromkeys(stream.reserved, 0)


def test_the_follow_on_takes_no_more_than_the_streams_free_slots(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub, activities=2)
    turn = first_turn(hub, dispatcher, stream)
    dispatcher.complete_orchestration(turn_done(turn, schedule(1, 2, 3, 4, 5)))
    sent = queued(stream)
    assert len(sent) == 2 and stream.free(ACTIVITY) == 0
    dispatcher._dispatch_all()
    assert queued(stream) == [], "no room: the dispatcher sends nothing more either"
    dispatcher.complete_activity(activity_done(sent[0]))  # frees a slot; its follow-on is the turn
    assert [i.HasField("orchestratorRequest") for i in queued(stream)] == [True]
    dispatcher._dispatch_all()
    [third] = queued(stream)
    assert third.HasField("activityRequest") and stream.free(ACTIVITY) == 0


def test_a_stream_with_no_free_turn_slot_gets_no_follow_on_turn(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub, turns=1)
    turn = first_turn(hub, dispatcher, stream, "a")
    dispatcher.complete_orchestration(turn_done(turn, schedule(1)))
    [activity] = queued(stream)
    start(hub, "b")
    dispatcher._dispatch_all()
    [b_turn] = queued(stream)
    assert b_turn.orchestratorRequest.instanceId == "b" and stream.free(ORCHESTRATION) == 0
    dispatcher.complete_activity(activity_done(activity))
    assert queued(stream) == [], "the only turn slot is b's: a's next turn waits"
    dispatcher.complete_orchestration(turn_done(b_turn, []))
    dispatcher._dispatch_all()
    [a_turn] = queued(stream)
    assert a_turn.orchestratorRequest.instanceId == "a"


def test_a_failed_commit_leases_nothing_and_gives_the_slots_back(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)
    dispatcher.complete_orchestration(turn_done(turn, schedule(1)))
    [activity] = queued(stream)
    hub.fail_after_follow_on = True
    with pytest.raises(RuntimeError, match="after the follow-on leased"):
        dispatcher.complete_activity(activity_done(activity))
    assert queued(stream) == []
    assert stream.reserved == dict.fromkeys(stream.reserved, 0)
    assert "a" not in dispatcher._turns_out
    # Nothing was committed: the activity was handed back, and its result can still come.
    hub.fail_after_follow_on = False
    again = hub.lease_activity(T0 + timedelta(minutes=5), LEASE)
    assert again is not None and again.task.task_id == 1


def test_a_closed_stream_gets_nothing_and_its_follow_on_lease_is_handed_back(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)
    other = dispatcher.open_stream(pb.GetWorkItemsRequest())
    queued(other)
    dispatcher.close_stream(stream)
    response = turn_done(turn, schedule(1))
    dispatcher.complete_orchestration(response)
    [activity] = queued(other)
    assert activity.activityRequest.taskId == 1


def test_a_transaction_the_store_runs_again_hands_over_only_the_last_tries_leases(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)
    dispatcher.complete_orchestration(turn_done(turn, schedule(1)))
    [activity] = queued(stream)
    response = activity_done(activity)

    class Retry(Exception):
        pass

    def run_twice(then: Any) -> Any:
        """What the store does after a lost race: the transaction (and its follow-on) runs again."""

        def first_try(tx: StoreTx) -> None:
            then(tx)
            raise Retry

        with pytest.raises(Retry):
            TaskHub.complete_activities(hub, [(activity.completionToken, response, T0)], first_try)
        return TaskHub.complete_activities(hub, [(activity.completionToken, response, T0)], then)

    assert dispatcher._with_follow_on(run_twice) == [None]
    [next_turn] = queued(stream)
    assert next_turn.orchestratorRequest.instanceId == "a"
    assert dispatcher._turns_out == {"a": next_turn.completionToken}
    assert stream.reserved == dict.fromkeys(stream.reserved, 0)
    # The token handed over is the committed lease: its completion is accepted.
    dispatcher.complete_orchestration(turn_done(next_turn, []))
    assert "a" not in dispatcher._turns_out


def test_a_follow_on_turn_of_the_same_instance_stays_out_when_the_turn_before_settles(hub: BreakableHub) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)
    event = engine_events.new_event(T0)
    event.eventRaised.name = "during"
    assert hub.raise_event("a", event, T0)  # arrives while the turn is out
    dispatcher.complete_orchestration(turn_done(turn, []))
    [again] = queued(stream)  # the turn's end leased the next turn, with the event
    assert [e.eventRaised.name for e in again.orchestratorRequest.newEvents if e.HasField("eventRaised")] == ["during"]
    assert dispatcher._turns_out == {"a": again.completionToken}, "settling the first turn kept the second out"


def test_an_item_that_fails_to_go_out_leaves_no_reservation_behind(hub: BreakableHub, monkeypatch: Any) -> None:
    dispatcher, stream = setup(hub)
    turn = first_turn(hub, dispatcher, stream)

    def broken(*args: Any) -> bool:
        raise RuntimeError("could not build the work item")

    monkeypatch.setattr(dispatcher, "_hand_over", broken)
    dispatcher.complete_orchestration(turn_done(turn, schedule(1, 2)))  # committed: no error for the worker
    assert queued(stream) == []
    assert stream.reserved == dict.fromkeys(stream.reserved, 0)
    assert stream.free(ACTIVITY) == stream.max_activities
