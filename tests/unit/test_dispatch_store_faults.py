"""The dispatcher when the store fails: failed completions are handed back at once, a failing dispatch
pass does not spin, and storage errors map to UNAVAILABLE / RESOURCE_EXHAUSTED.

The dispatcher runs over a TaskHub on an in-memory store whose operations can be made to fail;
its loop is driven by hand (``_dispatch_all``) except in the loop test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.dispatch import Dispatcher, DispatchOptions, WorkStream
from sidecar.hub import TaskHub
from sidecar.model import InvalidTurnError
from sidecar.servicer_util import mapped_errors, status_code_for
from sidecar.store import (
    LeaseNotFoundError,
    StoreFullError,
    StoreUnavailableError,
    StoreValueError,
    open_store,
)
from sidecar.store.urls import redact
from tests.unit.dispatch_builders import T0, start

LEASE = timedelta(seconds=30)
FIRST_DELAY = timedelta(seconds=0.1)  # the default back-off of the first hand-back


class FailingHub(TaskHub):
    """A TaskHub whose completions and hand-backs fail while ``fail_*`` is set, counting hand-backs."""

    def __init__(self) -> None:
        super().__init__(open_store("memory"))
        self.fail_complete: Exception | None = None
        self.fail_abandon: Exception | None = None
        self.fail_lease: Exception | None = None
        self.abandons: list[str] = []
        self.lease_calls = 0

    def _complete(self, call: Callable[[], None]) -> None:
        if self.fail_complete is not None:
            raise self.fail_complete
        call()

    def complete_orchestrations(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_complete is not None:
            raise self.fail_complete
        return super().complete_orchestrations(*args, **kwargs)

    def complete_activities(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_complete is not None:
            raise self.fail_complete
        return super().complete_activities(*args, **kwargs)

    def complete_entity(self, token: str, result: pb.EntityBatchResult, now: datetime,
                        max_state_size: int | None = None) -> None:
        self._complete(lambda: super(FailingHub, self).complete_entity(token, result, now, max_state_size))

    def _abandon(self, token: str, call: Callable[[], None]) -> None:
        self.abandons.append(token)
        if self.fail_abandon is not None:
            raise self.fail_abandon
        call()

    def abandon_orchestration(self, token: str, now: datetime) -> None:
        self._abandon(token, lambda: super(FailingHub, self).abandon_orchestration(token, now))

    def abandon_activity(self, token: str, now: datetime) -> None:
        self._abandon(token, lambda: super(FailingHub, self).abandon_activity(token, now))

    def abandon_entity(self, token: str, now: datetime) -> None:
        self._abandon(token, lambda: super(FailingHub, self).abandon_entity(token, now))

    def lease_orchestrations(self, *args: Any, **kwargs: Any) -> Any:
        self.lease_calls += 1
        if self.fail_lease is not None:
            raise self.fail_lease
        return super().lease_orchestrations(*args, **kwargs)


@pytest.fixture
def hub() -> FailingHub:
    return FailingHub()


def dispatcher_for(hub: TaskHub, options: DispatchOptions | None = None) -> Dispatcher:
    return Dispatcher(hub, options or DispatchOptions(), clock=lambda: T0)


def handed_out(dispatcher: Dispatcher, stream: WorkStream) -> pb.WorkItem:
    dispatcher._dispatch_all()
    item = stream.queue.get(timeout=1)
    assert item is not None and not item.HasField("healthPing")
    return item


def completion(item: pb.WorkItem, *actions: pb.OrchestratorAction) -> pb.OrchestratorResponse:
    return pb.OrchestratorResponse(
        instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken, actions=actions
    )


def finish(action_id: int) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_COMPLETED
    return action


def schedule(action_id: int, name: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=action_id)
    action.scheduleTask.name = name
    return action


def test_a_turn_whose_completion_fails_is_handed_back_with_the_back_off(hub: FailingHub) -> None:
    dispatcher = dispatcher_for(hub)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    start(hub, "a")
    item = handed_out(dispatcher, stream)
    hub.fail_complete = StoreFullError("the SQLite store x is full")
    with pytest.raises(StoreFullError, match="full"):  # the caller still sees the failure
        dispatcher.complete_orchestration(completion(item, finish(1)))
    assert hub.abandons == [item.completionToken]
    assert stream.outstanding == {}  # no longer held (nor renewed) by the stream
    # Offered again after the first hand-back delay, not after the 30 s lease.
    assert hub.lease_orchestration(T0 + FIRST_DELAY / 2, LEASE) is None
    again = hub.lease_orchestration(T0 + FIRST_DELAY, LEASE)
    assert again is not None and again.instance.instance_id == "a"
    hub.fail_complete = None
    with pytest.raises(LeaseNotFoundError):  # the failed token is stale
        dispatcher.complete_orchestration(completion(item, finish(1)))
    hub.complete_orchestration(again.token, completion(pb.WorkItem(completionToken=again.token), finish(1)), T0)
    assert hub.get_instance("a").status == pb.ORCHESTRATION_STATUS_COMPLETED  # type: ignore[union-attr]


def test_when_the_hand_back_fails_too_the_token_is_dead_and_the_lease_runs_out(hub: FailingHub) -> None:
    dispatcher = dispatcher_for(hub)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    start(hub, "b")
    item = handed_out(dispatcher, stream)
    hub.fail_complete = StoreUnavailableError("the database is down")
    hub.fail_abandon = StoreUnavailableError("the database is still down")
    with pytest.raises(StoreUnavailableError, match="is down"):  # the completion's error, not the hand-back's
        dispatcher.complete_orchestration(completion(item, finish(1)))
    hub.fail_complete = hub.fail_abandon = None
    # A later completion with that token (a worker's retry or replacement) is refused as stale...
    with pytest.raises(LeaseNotFoundError):
        dispatcher.complete_orchestration(completion(item, finish(1)))
    assert hub.get_instance("b").status == pb.ORCHESTRATION_STATUS_PENDING  # type: ignore[union-attr]
    # ...and the instance goes out again once the lease has run out.
    assert hub.lease_orchestration(T0 + LEASE / 2, LEASE) is None
    assert hub.lease_orchestration(T0 + LEASE, LEASE) is not None


@pytest.mark.parametrize(
    "refusal",
    [LeaseNotFoundError("t"), InvalidTurnError("bad actions"), StoreValueError("a NUL character")],
    ids=["stale", "invalid-turn", "unstorable-value"],
)
def test_stale_tokens_and_refused_turns_are_not_handed_back(hub: FailingHub, refusal: Exception) -> None:
    dispatcher = dispatcher_for(hub)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    start(hub, "c")
    item = handed_out(dispatcher, stream)
    hub.fail_complete = refusal
    with pytest.raises(type(refusal)):
        dispatcher.complete_orchestration(completion(item, finish(1)))
    assert hub.abandons == []
    if not isinstance(refusal, LeaseNotFoundError):  # the worker's replacement under the same token lands
        hub.fail_complete = None
        dispatcher.complete_orchestration(completion(item, finish(1)))
        assert hub.get_instance("c").status == pb.ORCHESTRATION_STATUS_COMPLETED  # type: ignore[union-attr]


def test_an_activity_whose_completion_fails_is_handed_back(hub: FailingHub) -> None:
    dispatcher = dispatcher_for(hub)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    start(hub, "d")
    turn = handed_out(dispatcher, stream)
    dispatcher.complete_orchestration(completion(turn, schedule(1, "act")))
    activity = handed_out(dispatcher, stream)
    assert activity.HasField("activityRequest")
    hub.fail_complete = StoreFullError("full")
    with pytest.raises(StoreFullError):
        dispatcher.complete_activity(pb.ActivityResponse(instanceId="d", taskId=1,
                                                         completionToken=activity.completionToken))
    assert hub.abandons == [activity.completionToken]
    assert hub.lease_activity(T0, LEASE) is None
    again = hub.lease_activity(T0 + FIRST_DELAY, LEASE)
    assert again is not None and again.task.task_id == 1


def test_an_entity_batch_whose_completion_fails_is_handed_back(hub: FailingHub) -> None:
    dispatcher = dispatcher_for(hub)
    stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
    event = engine_events.new_event(T0)
    event.entityOperationSignaled.requestId = "r1"
    event.entityOperationSignaled.operation = "add"
    event.entityOperationSignaled.targetInstanceId.value = "@counter@k"
    hub.signal_entity("@counter@k", event, T0, T0)
    batch = handed_out(dispatcher, stream)
    assert batch.HasField("entityRequestV2")
    hub.fail_complete = StoreUnavailableError("down")
    result = pb.EntityBatchResult(completionToken=batch.completionToken,
                                  results=[pb.OperationResult(success=pb.OperationResultSuccess())])
    with pytest.raises(StoreUnavailableError):
        dispatcher.complete_entity(result)
    assert hub.abandons == [batch.completionToken]
    assert hub.lease_entity(T0, LEASE) is None
    again = hub.lease_entity(T0 + FIRST_DELAY, LEASE)
    assert again is not None and again.instance_id == "@counter@k"


def test_a_failing_dispatch_pass_waits_for_the_safety_poll_and_resumes(hub: FailingHub) -> None:
    options = DispatchOptions(safety_poll=0.2)
    dispatcher = Dispatcher(hub, options)  # on the real clock
    start(hub, "e", now=datetime.now(timezone.utc))
    hub.fail_lease = StoreUnavailableError("the database is down")
    dispatcher.start()
    try:
        stream = dispatcher.open_stream(pb.GetWorkItemsRequest())
        hub.lease_calls = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # wake-ups do not make it ask the failing store at once
            dispatcher.wake()
            time.sleep(0.005)
        assert 1 <= hub.lease_calls <= 8, hub.lease_calls
        hub.fail_lease = None
        item = stream.queue.get(timeout=5)
        assert item is not None and item.orchestratorRequest.instanceId == "e"
    finally:
        dispatcher.stop()


def test_storage_errors_map_to_unavailable_and_resource_exhausted() -> None:
    assert status_code_for(StoreUnavailableError("x")) == grpc.StatusCode.UNAVAILABLE
    assert status_code_for(StoreFullError("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED

    class Context:
        def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RuntimeError(code, details)

    class Servicer:
        @mapped_errors
        def Full(self, request: Any, context: Any) -> Any:
            raise StoreFullError("the SQLite store /data/s.db is full (database or disk is full)")

    with pytest.raises(RuntimeError) as aborted:
        Servicer().Full(None, Context())
    assert aborted.value.args == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "the SQLite store /data/s.db is full (database or disk is full)"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db?pool_max=3", "postgresql://u:***@h:5432/db?pool_max=3"),
        ("postgresql://u@h/db?sslmode=require&password=secret", "postgresql://u@h/db?sslmode=require&password=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("memory", "memory"),
        ("postgresql://u:secret@h:99999/db", "<unparsable URL>"),
    ],
)
def test_store_urls_are_shown_without_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "secret" not in redact(url)
