"""What a worker that keeps replay state is sent of a turn's past events, when the turn before
it committed but was not settled yet.

A turn's completion is committed first and settled after (the stream's replay mark moves on
only then); meanwhile another commit may lease the instance's next turn. That turn must still
leave out everything the worker processed in the turn before, or the worker, whose state does
not match the count, reads the whole history and replays it from the start.
Driven by hand (the dispatcher's thread is not started) over a TaskHub on an in-memory store.
"""

from __future__ import annotations

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.protocol_extensions import KEEPS_REPLAY_STATE, omitted_past_events
from sidecar.dispatch import Dispatcher, DispatchOptions
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.store import open_store
from sidecar.store.base import OrchestrationWorkItem
from sidecar.work_streams import ORCHESTRATION, WorkStream
from tests.unit.dispatch_builders import T0, queued, start


def scheduling(item: pb.WorkItem, *task_ids: int) -> pb.OrchestratorResponse:
    response = pb.OrchestratorResponse(instanceId=item.orchestratorRequest.instanceId,
                                       completionToken=item.completionToken)
    for task_id in task_ids:
        response.actions.add(id=task_id).scheduleTask.name = "act"
    return response


def result_of(item: pb.WorkItem) -> pb.ActivityResponse:
    request = item.activityRequest
    response = pb.ActivityResponse(instanceId=request.orchestrationInstance.instanceId, taskId=request.taskId,
                                   completionToken=item.completionToken)
    response.result.value = "1"
    return response


def processed(item: pb.WorkItem) -> int:
    """Past and new events of a turn as its worker holds them once it answered."""
    request = item.orchestratorRequest
    return omitted_past_events(request) + len(request.pastEvents) + len(request.newEvents)


def setup() -> tuple[TaskHub, Dispatcher, WorkStream]:
    hub = TaskHub(open_store("memory"))
    dispatcher = Dispatcher(hub, DispatchOptions(), clock=lambda: T0)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=4, maxConcurrentActivityWorkItems=8,
        capabilities=[KEEPS_REPLAY_STATE]))  # type: ignore[list-item]
    return hub, dispatcher, stream


def second_turn(hub: TaskHub, dispatcher: Dispatcher, stream: WorkStream) -> tuple[pb.WorkItem, list[pb.WorkItem]]:
    """The first turn schedules three activities; the first result makes the second turn."""
    start(hub, "a")
    dispatcher._dispatch_all()
    [first] = queued(stream)
    dispatcher.complete_orchestration(scheduling(first, 1, 2, 3))
    activities = queued(stream)
    assert len(activities) == 3
    dispatcher.complete_activity(result_of(activities[0]))
    [turn] = queued(stream)
    assert omitted_past_events(turn.orchestratorRequest) == processed(first)
    return turn, activities[1:]


def test_a_turn_leased_before_the_one_before_it_settled_leaves_out_what_its_worker_processed() -> None:
    hub, dispatcher, stream = setup()
    turn, (pending, _) = second_turn(hub, dispatcher, stream)
    # The second turn's completion commits, and is not settled yet (the stream's mark is the first turn's).
    dispatcher._settling(turn.completionToken)
    [error] = hub.complete_orchestrations([(turn.completionToken, scheduling(turn), T0)])
    assert error is None and turn.completionToken in stream.outstanding
    # Meanwhile another result commits, and its follow-on leases the next turn.
    dispatcher.complete_activity(result_of(pending))
    [following] = queued(stream)
    request = following.orchestratorRequest
    assert omitted_past_events(request) == processed(turn)
    assert [e.WhichOneof("eventType") for e in request.pastEvents] == ["orchestratorCompleted"]


def test_a_turn_whose_predecessor_did_not_commit_sends_the_history_it_may_not_have() -> None:
    hub, dispatcher, stream = setup()
    turn, (pending, _) = second_turn(hub, dispatcher, stream)
    dispatcher._settling(turn.completionToken)

    def failing(tx: object) -> None:
        raise RuntimeError("the commit failed")

    try:
        hub.complete_orchestrations([(turn.completionToken, scheduling(turn), T0)], then=failing)
    except RuntimeError:
        pass
    hub.release_orchestration(turn.completionToken)  # the turn is handed back, still outstanding here
    dispatcher.complete_activity(result_of(pending))
    [again] = queued(stream)
    # The worker's state is the second turn's, which the history does not hold: its mark is the first turn's.
    assert omitted_past_events(again.orchestratorRequest) < processed(turn)


def item_with(prior: tuple[str, int] | None, past: int = 10) -> OrchestrationWorkItem:
    inst = InstanceSnapshot(instance_id="a", execution_id="a-e", name="orch",
                            status=pb.ORCHESTRATION_STATUS_RUNNING, created_at=T0, last_updated_at=T0)
    return OrchestrationWorkItem(token="next", instance=inst, past_events=[pb.HistoryEvent()] * past,
                                 new_events=[pb.HistoryEvent()], history_first_seq=0, history_key="k",
                                 prior_turn=prior)


def test_the_turn_before_counts_only_while_this_stream_holds_it() -> None:
    _, dispatcher, stream = setup()
    other = dispatcher.open_stream(pb.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=4, capabilities=[KEEPS_REPLAY_STATE]))  # type: ignore[list-item]
    stream.remember_replayed("a", ("a-e", "k", 0, 5))
    stream.outstanding["t"] = ORCHESTRATION
    assert stream.omittable(item_with(("t", 8))) == 8
    assert stream.omittable(item_with(("t", 11))) == 0, "more than the history holds"
    assert stream.omittable(item_with(("gone", 8))) == 5, "settled or never here: the mark"
    assert stream.omittable(item_with(None)) == 5
    assert other.omittable(item_with(("t", 8))) == 0, "another stream's worker ran it"
    without = dispatcher.open_stream(pb.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=4))
    without.outstanding["t"] = ORCHESTRATION
    assert without.omittable(item_with(("t", 8))) == 0, "a worker that keeps no state"
