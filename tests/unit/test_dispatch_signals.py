"""Which commits make the dispatcher ask the store for work again (and which do not).

A kind found empty for a stream is asked again only after a commit signals work of that kind;
inbox events for an instance whose turn this sidecar holds signal nothing (no one could lease
it), and the turn's end does. Driven by hand over a TaskHub on an in-memory store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.dispatch import Dispatcher, DispatchOptions
from sidecar.hub import TaskHub
from sidecar.store import CommitNotice, open_store
from sidecar.work_streams import WorkKind
from tests.unit.dispatch_builders import T0, start


class CountingHub(TaskHub):
    """A TaskHub that counts the dispatcher's orchestration lease calls."""

    def __init__(self) -> None:
        super().__init__(open_store("memory"))
        self.turn_leases = 0

    def lease_orchestrations(self, *args: Any, **kwargs: Any) -> Any:
        self.turn_leases += 1
        return super().lease_orchestrations(*args, **kwargs)


def raised(hub: TaskHub, iid: str, name: str) -> None:
    event = engine_events.new_event(T0)
    event.eventRaised.name = name
    assert hub.raise_event(iid, event, T0)


def setup() -> tuple[CountingHub, Dispatcher, Any]:
    hub = CountingHub()
    dispatcher = Dispatcher(hub, DispatchOptions(), clock=lambda: T0)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    return hub, dispatcher, stream


def take(stream: Any) -> pb.WorkItem:
    item = stream.queue.get(timeout=1)
    assert item is not None and item.HasField("orchestratorRequest"), item
    return item


def test_a_kind_found_empty_is_asked_again_only_after_a_commit_signals_it() -> None:
    hub, dispatcher, _ = setup()
    assert not dispatcher._dispatch_all()
    asked = hub.turn_leases
    assert asked >= 1
    dispatcher._dispatch_all()
    dispatcher._dispatch_all()
    assert hub.turn_leases == asked, "nothing changed: the empty kind is not asked again"
    start(hub, "a")  # a commit that signals orchestration work
    assert dispatcher._dispatch_all()
    assert hub.turn_leases > asked


def test_events_for_a_held_turn_signal_nothing_and_its_end_does() -> None:
    hub, dispatcher, stream = setup()
    start(hub, "a")
    dispatcher._dispatch_all()
    item = take(stream)
    signals = dispatcher._work_signals[WorkKind.ORCHESTRATION]
    raised(hub, "a", "ping")  # for the instance whose turn the stream holds
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] == signals
    asked = hub.turn_leases
    dispatcher._dispatch_all()
    assert hub.turn_leases == asked, "no lease is tried for a turn in flight"
    # The turn ends: the event is due now, and the completion's own follow-on leases and sends it.
    dispatcher.complete_orchestration(pb.OrchestratorResponse(instanceId="a", completionToken=item.completionToken))
    again = take(stream)
    names = [e.eventRaised.name for e in again.orchestratorRequest.newEvents if e.HasField("eventRaised")]
    assert names == ["ping"]
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] == signals, "settled by the follow-on: no signal"
    # With no room for a follow-on turn, the turn's end signals the dispatcher, which sends it later.
    raised(hub, "a", "pong")
    stream.max_orchestrations = 0
    dispatcher.complete_orchestration(pb.OrchestratorResponse(instanceId="a", completionToken=again.completionToken))
    assert stream.queue.qsize() == 0
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] > signals
    stream.max_orchestrations = 10
    assert dispatcher._dispatch_all()
    last = take(stream)
    assert [e.eventRaised.name for e in last.orchestratorRequest.newEvents if e.HasField("eventRaised")] == ["pong"]


def test_a_turns_end_with_nothing_waiting_and_activities_its_follow_on_took_signal_nothing() -> None:
    hub, dispatcher, stream = setup()
    start(hub, "a")
    dispatcher._dispatch_all()
    item = take(stream)
    signals = dict(dispatcher._work_signals)
    scheduled = pb.OrchestratorAction(id=1)
    scheduled.scheduleTask.name = "act"
    dispatcher.complete_orchestration(pb.OrchestratorResponse(
        instanceId="a", completionToken=item.completionToken, actions=[scheduled]))
    activity = stream.queue.get(timeout=1)
    assert activity is not None and activity.HasField("activityRequest")
    assert dispatcher._work_signals == signals, "the follow-on leased all the work the commit made"
    # A stream that does not take the instance's orchestration: the follow-on cannot settle it.
    other = dispatcher.open_stream(pb.GetWorkItemsRequest(
        workItemFilters=pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="another")])))
    dispatcher.close_stream(stream)
    response = pb.ActivityResponse(instanceId="a", taskId=1, completionToken=activity.completionToken)
    dispatcher.complete_activity(response)
    assert other.queue.qsize() == 0, "not its orchestration"
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] == signals[WorkKind.ORCHESTRATION] + 1


def test_events_for_other_instances_and_unknown_notices_signal() -> None:
    hub, dispatcher, stream = setup()
    start(hub, "a")
    start(hub, "b")
    stream.max_orchestrations = 1
    dispatcher._dispatch_all()
    take(stream)
    signals = dispatcher._work_signals[WorkKind.ORCHESTRATION]
    held = next(iter(dispatcher._turns_out))
    other = "b" if held == "a" else "a"
    raised(hub, other, "ping")
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] == signals + 1
    # A notice from elsewhere (another sidecar on PostgreSQL) names no inbox instances: it signals.
    dispatcher._on_change(CommitNotice(work_available=True, work_kinds={"orchestration"}))
    assert dispatcher._work_signals[WorkKind.ORCHESTRATION] == signals + 2


def turn_out() -> tuple[CountingHub, Dispatcher, Any, pb.WorkItem]:
    """Instance "a" started and its first turn out on the stream; the loop's wake flag cleared."""
    hub, dispatcher, stream = setup()
    start(hub, "a")
    dispatcher._dispatch_all()
    item = take(stream)
    dispatcher._wake = False
    return hub, dispatcher, stream, item


def test_a_freed_slot_wakes_the_loop_only_when_it_found_no_free_one() -> None:
    hub, dispatcher, stream, first = turn_out()
    dispatcher.complete_orchestration(pb.OrchestratorResponse(instanceId="a", completionToken=first.completionToken))
    assert not dispatcher._wake, "no pass found the stream full, and the commit made no work: no pass"
    stream.max_orchestrations = 1
    start(hub, "b")
    start(hub, "c")
    dispatcher._dispatch_all()  # one of them goes out; the other finds no free slot
    second = take(stream)
    assert stream.queue.qsize() == 0
    dispatcher._wake = False
    held = second.orchestratorRequest.instanceId
    dispatcher.complete_orchestration(pb.OrchestratorResponse(instanceId=held, completionToken=second.completionToken))
    assert dispatcher._wake, "the slot the other instance waits for is free: the loop is woken"
    assert dispatcher._dispatch_all()
    assert {held, take(stream).orchestratorRequest.instanceId} == {"b", "c"}


def test_a_timer_set_by_a_turn_wakes_the_loop_to_learn_when_it_is_due() -> None:
    _, dispatcher, stream, item = turn_out()
    signals = dict(dispatcher._work_signals)
    timer = pb.OrchestratorAction(id=1)
    timer.createTimer.fireAt.FromDatetime(T0 + timedelta(seconds=30))
    dispatcher.complete_orchestration(pb.OrchestratorResponse(
        instanceId="a", completionToken=item.completionToken, actions=[timer]))
    # The follow-on found nothing of the instance's to lease now, which settles it: no work signal.
    assert dispatcher._work_signals == signals
    assert dispatcher._wake, "the timer's event is due later: a pass must learn when"
    assert stream.queue.qsize() == 0
