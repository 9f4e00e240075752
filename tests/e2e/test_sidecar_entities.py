"""Entities at the gRPC level, with hand-written workers: signals, calls, locks, queries, dispatch, leases."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.wrappers_pb2 import Int32Value, StringValue

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.dispatch import DispatchOptions
from sidecar.store import StoreTx
from tests.e2e.conftest import RawWorker, complete, fast_sidecar, free_port, kinds, start
from tests.e2e.entity_wire import (
    ENTITY_ITEM,
    call_action,
    expect_status,
    failed,
    finish,
    get_entity,
    lock_action,
    new_events,
    now,
    ok,
    operations,
    signal,
    signal_action,
    unlock_action,
)

pytestmark = pytest.mark.our_sidecar("entity scheduling details of this repository's sidecar")

Code = grpc.StatusCode


# --- signals and state -----------------------------------------------------------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def test_signals_become_one_batch_and_the_state_is_kept(raw_env) -> None:
    stub, worker, _ = raw_env
    assert get_entity(stub, "@counter@a") is None
    for i in range(3):
        signal(stub, "@Counter@a", "add", str(i), request_id=f"r{i}")
    w = worker()
    item = w.next(ENTITY_ITEM)
    request = item.entityRequestV2
    assert request.instanceId == "@counter@a" and not request.HasField("entityState")
    assert operations(item) == [("entityOperationSignaled", "add")] * 3
    signals = [e.entityOperationSignaled for e in request.operationRequests]
    assert [s.input.value for s in signals] == ["0", "1", "2"]
    assert [s.requestId for s in signals] == ["r0", "r1", "r2"]
    assert all(s.targetInstanceId.value == "@counter@a" for s in signals)
    finish(w, item, ok(), ok(), ok(), state="3")

    entity = get_entity(stub, "@counter@a")
    assert entity is not None and entity.instanceId == "@counter@a"
    assert entity.serializedState.value == "3" and entity.backlogQueueSize == 0
    assert not entity.HasField("lockedBy") and entity.lastModifiedTime.seconds > 0
    assert not get_entity(stub, "@counter@a", include_state=False).HasField("serializedState")  # type: ignore[union-attr]

    signal(stub, "@counter@a", "add", "4")
    item = w.next(ENTITY_ITEM)
    assert item.entityRequestV2.entityState.value == "3"
    finish(w, item, ok())  # no state: the entity is deleted
    assert get_entity(stub, "@counter@a") is None


def test_delayed_signal_waits_for_its_time(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    due = now() + timedelta(seconds=1.5)
    signal(stub, "@timer@k", "later", at=due)
    assert get_entity(stub, "@timer@k") is None  # queued, not yet due: no entity yet
    w.expect_nothing(1.0)
    item = w.next(ENTITY_ITEM, timeout=5)
    assert now() >= due
    scheduled = item.entityRequestV2.operationRequests[0].entityOperationSignaled.scheduledTime
    assert scheduled.ToDatetime() == due.replace(tzinfo=None)
    finish(w, item, ok(), state="1")


def test_failed_signal_is_logged_and_changes_nothing(raw_env, caplog: pytest.LogCaptureFixture) -> None:
    stub, worker, _ = raw_env
    w = worker()
    signal(stub, "@counter@b", "set", "1")
    finish(w, w.next(ENTITY_ITEM), ok(), state="1")
    signal(stub, "@counter@b", "nope")
    item = w.next(ENTITY_ITEM)
    with caplog.at_level(logging.WARNING, logger="durabletask-sidecar.entities"):
        finish(w, item, failed("EntityNotRegisteredError", "no entity named 'counter'"), state="1")
    assert "'nope'" in caplog.text and "EntityNotRegisteredError" in caplog.text
    assert get_entity(stub, "@counter@b").serializedState.value == "1"  # type: ignore[union-attr]


# --- orchestrations calling, signalling and locking ----------------------------------------------------


def test_call_from_an_orchestration_returns_the_result_by_request_id(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "caller")
    turn = w.next("orchestratorRequest")
    w.complete(turn, call_action(1, "@acct@a", "get", "req-1", data='"x"'),
               call_action(2, "@acct@b", "boom", "req-2"))
    first = w.next(ENTITY_ITEM)
    second = w.next(ENTITY_ITEM)
    by_id = {i.entityRequestV2.instanceId: i for i in (first, second)}
    called = by_id["@acct@a"].entityRequestV2.operationRequests[0].entityOperationCalled
    assert called.requestId == "req-1" and called.input.value == '"x"'
    assert called.parentInstanceId.value == "caller" and called.parentExecutionId.value
    finish(w, by_id["@acct@a"], ok("42"), state="7")
    finish(w, by_id["@acct@b"], failed("KeyError", "missing"))

    results: list[pb.HistoryEvent] = []
    while len(results) < 2:
        turn = w.next("orchestratorRequest")
        results += new_events(turn)
        if len(results) < 2:
            w.complete(turn)
    completed = next(e.entityOperationCompleted for e in results if e.HasField("entityOperationCompleted"))
    failure = next(e.entityOperationFailed for e in results if e.HasField("entityOperationFailed"))
    assert completed.requestId == "req-1" and completed.output.value == "42"
    assert failure.requestId == "req-2" and failure.failureDetails.errorType == "KeyError"
    history = [e for e in turn.orchestratorRequest.pastEvents if e.HasField("entityOperationCalled")]
    assert [(e.eventId, e.entityOperationCalled.requestId) for e in history] == [(1, "req-1"), (2, "req-2")]
    w.complete(turn, complete(3))


def test_orchestration_signal_is_one_way_and_may_be_delayed(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "sender")
    turn = w.next("orchestratorRequest")
    later = now() + timedelta(seconds=1)
    w.complete(turn, signal_action(1, "@log@a", "later", "s-2", at=later), signal_action(2, "@log@a", "now", "s-1"),
               complete(3))
    item = w.next(ENTITY_ITEM)
    assert operations(item) == [("entityOperationSignaled", "now")]
    finish(w, item, ok())
    item = w.next(ENTITY_ITEM, timeout=5)
    assert operations(item) == [("entityOperationSignaled", "later")] and now() >= later
    finish(w, item, ok())


def test_critical_section_runs_only_the_holder_and_releases_on_unlock(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "holder")
    turn = w.next("orchestratorRequest")
    w.complete(turn, lock_action(1, "holder", "cs-1", ["@acct@a", "@acct@b"]))
    turn = w.next("orchestratorRequest")
    assert [e.entityLockGranted.criticalSectionId for e in new_events(turn)] == ["cs-1"]
    for entity_id in ("@acct@a", "@acct@b"):
        assert get_entity(stub, entity_id).lockedBy.value == "holder"  # type: ignore[union-attr]

    signal(stub, "@acct@a", "outsider")
    w.expect_nothing(0.5)  # the client's signal waits for the lock
    assert get_entity(stub, "@acct@a").backlogQueueSize == 1  # type: ignore[union-attr]
    w.complete(turn, call_action(2, "@acct@a", "withdraw", "w-1"))
    item = w.next(ENTITY_ITEM)
    assert operations(item) == [("entityOperationCalled", "withdraw")]
    finish(w, item, ok("1"), state="9")
    turn = w.next("orchestratorRequest")
    assert new_events(turn)[0].entityOperationCompleted.requestId == "w-1"
    w.complete(turn, unlock_action(3, "holder", "cs-1", "@acct@a"), unlock_action(4, "holder", "cs-1", "@acct@b"),
               complete(5))
    item = w.next(ENTITY_ITEM)
    assert operations(item) == [("entityOperationSignaled", "outsider")]
    assert not get_entity(stub, "@acct@a").HasField("lockedBy")  # type: ignore[union-attr]
    finish(w, item, ok(), state="9")


def test_waiting_critical_section_gets_the_locks_when_the_holder_is_terminated(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "first")
    w.complete(w.next("orchestratorRequest"), lock_action(1, "first", "cs-a", ["@acct@a", "@acct@b"]))
    granted = w.next("orchestratorRequest")
    assert granted.orchestratorRequest.instanceId == "first"
    start(stub, "second")
    w.complete(w.next("orchestratorRequest"), lock_action(1, "second", "cs-b", ["@acct@b", "@acct@c"]))
    w.expect_nothing(0.5)
    assert get_entity(stub, "@acct@c") is None  # the request waits at b, c is not asked yet

    stub.TerminateInstance(pb.TerminateRequest(instanceId="first"))
    turn = w.next("orchestratorRequest")
    assert turn.orchestratorRequest.instanceId == "second"
    assert [e.entityLockGranted.criticalSectionId for e in new_events(turn)] == ["cs-b"]
    assert get_entity(stub, "@acct@a") is None  # released and empty
    assert get_entity(stub, "@acct@b").lockedBy.value == "second"  # type: ignore[union-attr]
    # The first holder's turn (leased before it was terminated) can no longer be completed.
    expect_status(lambda: w.complete(granted, complete(2)), Code.NOT_FOUND, "stale")
    w.complete(turn, complete(2))  # completes without unlocking: the locks go with it
    stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="second"), timeout=10)
    assert get_entity(stub, "@acct@b") is None and get_entity(stub, "@acct@c") is None


# --- entity actions -------------------------------------------------------------------------------------


def test_entity_signals_another_entity_and_starts_an_orchestration(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    signal(stub, "@source@1", "fan")
    item = w.next(ENTITY_ITEM)
    actions = [
        pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@target@1", name="ping")),
        pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="spawned", name="job")),
    ]
    actions[1].startNewOrchestration.input.value = '"from entity"'
    finish(w, item, ok(), state="1", actions=actions)
    received = {w.items.get(timeout=10).WhichOneof("request") for _ in range(2)}
    assert received == {ENTITY_ITEM, "orchestratorRequest"}
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="spawned", getInputsAndOutputs=True))
    assert state.exists and state.orchestrationState.name == "job"
    assert state.orchestrationState.input.value == '"from entity"'


# --- queries and cleaning --------------------------------------------------------------------------------


def test_query_entities_prefix_state_transient_and_paging(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker(pb.GetWorkItemsRequest(maxConcurrentEntityWorkItems=1))
    for i in range(5):
        signal(stub, f"@counter@{i}", "set", str(i))
        finish(w, w.next(ENTITY_ITEM), ok(), state=str(i))
    signal(stub, "@other@x", "set")
    finish(w, w.next(ENTITY_ITEM), ok(), state='"x"')
    signal(stub, "@counter@pending", "set", "9")
    held = w.next(ENTITY_ITEM)  # held: a message due, no state yet (transient)
    signal(stub, "@counter@later", "set", at=now() + timedelta(hours=1))  # not an entity before it is due

    def query(**fields: object) -> tuple[list[pb.EntityMetadata], str | None]:
        response = stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(**fields)))  # type: ignore[arg-type]
        token = response.continuationToken.value if response.HasField("continuationToken") else None
        return list(response.entities), token

    found, token = query(instanceIdStartsWith=StringValue(value="Counter"), includeState=True)
    assert [e.instanceId for e in found] == [f"@counter@{i}" for i in range(5)] and token is None
    assert [e.serializedState.value for e in found] == ["0", "1", "2", "3", "4"]
    found, _ = query(instanceIdStartsWith=StringValue(value="@counter"), includeTransient=True)
    assert "@counter@pending" in [e.instanceId for e in found]
    assert "@counter@later" not in [e.instanceId for e in found]
    assert not any(e.HasField("serializedState") for e in found)

    seen: list[str] = []
    token = None
    while True:
        fields: dict[str, object] = {"pageSize": Int32Value(value=2), "includeTransient": True}
        if token:
            fields["continuationToken"] = StringValue(value=token)
        page, token = query(**fields)
        assert len(page) <= 2
        seen += [e.instanceId for e in page]
        if token is None:
            break
    assert seen == sorted(seen) and len(seen) == 7
    finish(w, held, ok(), state="9")


def test_clean_entity_storage_counts(raw_env) -> None:
    stub, worker, server = raw_env
    w = worker()
    signal(stub, "@kept@1", "set")
    finish(w, w.next(ENTITY_ITEM), ok(), state="1")
    response = stub.CleanEntityStorage(pb.CleanEntityStorageRequest(removeEmptyEntities=True, releaseOrphanedLocks=True))
    assert (response.emptyEntitiesRemoved, response.orphanedLocksReleased) == (0, 0)
    assert not response.HasField("continuationToken")
    # The sidecar releases locks in the holder's final commit, so it never leaves orphans itself:
    # write two leftovers into the store directly, as an older store could hold them.
    def leftovers(tx: StoreTx) -> None:
        tx.ensure_entity("@acct@ghost", "acct", EPOCH)
        tx.set_entity_lock("@acct@ghost", "gone", "cs", EPOCH)
        tx.ensure_entity("@acct@empty", "acct", EPOCH)

    server.store.run(leftovers)
    assert get_entity(stub, "@acct@ghost").lockedBy.value == "gone"  # type: ignore[union-attr]
    response = stub.CleanEntityStorage(pb.CleanEntityStorageRequest(removeEmptyEntities=False, releaseOrphanedLocks=False))
    assert (response.emptyEntitiesRemoved, response.orphanedLocksReleased) == (0, 0)
    response = stub.CleanEntityStorage(pb.CleanEntityStorageRequest(removeEmptyEntities=True, releaseOrphanedLocks=True))
    assert (response.emptyEntitiesRemoved, response.orphanedLocksReleased) == (1, 1)
    assert get_entity(stub, "@acct@ghost") is None and get_entity(stub, "@acct@empty") is None
    assert get_entity(stub, "@kept@1") is not None


# --- dispatch: capacity, filters, leases -------------------------------------------------------------------


def test_entity_capacity_and_name_filters_per_stream(raw_env) -> None:
    stub, worker, _ = raw_env
    filtered = worker(pb.GetWorkItemsRequest(
        maxConcurrentEntityWorkItems=1,
        workItemFilters=pb.WorkItemFilters(entities=[pb.EntityFilter(name="Counter")]),
    ))
    for key in ("a", "b"):
        signal(stub, f"@counter@{key}", "add")
    signal(stub, "@other@a", "add")
    first = filtered.next(ENTITY_ITEM)
    filtered.expect_nothing(0.5)  # capacity 1
    finish(filtered, first, ok(), state="1")
    second = filtered.next(ENTITY_ITEM)
    assert {first.entityRequestV2.instanceId, second.entityRequestV2.instanceId} == {"@counter@a", "@counter@b"}
    finish(filtered, second, ok(), state="1")
    filtered.expect_nothing(0.5)  # '@other@a' is not for this stream
    unfiltered = worker()
    assert unfiltered.next(ENTITY_ITEM).entityRequestV2.instanceId == "@other@a"


def test_abandoned_batch_comes_back_with_a_new_token(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    signal(stub, "@e@k", "op")
    item = w.next(ENTITY_ITEM)
    stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken=item.completionToken))
    again = w.next(ENTITY_ITEM)
    assert again.completionToken != item.completionToken and operations(again) == operations(item)
    expect_status(lambda: finish(w, item, ok(), state="1"), Code.NOT_FOUND, item.completionToken)
    finish(w, again, ok(), state="1")
    assert get_entity(stub, "@e@k").serializedState.value == "1"  # type: ignore[union-attr]


def test_batch_of_a_closed_stream_goes_to_another_worker() -> None:
    with fast_sidecar(DispatchOptions(stream_grace=0.2, health_ping_interval=0.5, safety_poll=1.0)) as (_, address):
        first = RawWorker(address)
        signal(first.stub, "@e@k", "op")
        item = first.next(ENTITY_ITEM)
        first.close()
        second = RawWorker(address)
        try:
            again = second.next(ENTITY_ITEM)
            assert again.completionToken != item.completionToken
            finish(second, again, ok(), state="1")
        finally:
            second.close()


def test_history_of_the_calling_orchestration_keeps_entity_events(raw_env) -> None:
    stub, worker, _ = raw_env
    w = worker()
    start(stub, "hist")
    w.complete(w.next("orchestratorRequest"), lock_action(1, "hist", "cs", ["@e@1"]))
    turn = w.next("orchestratorRequest")
    w.complete(turn, unlock_action(2, "hist", "cs", "@e@1"), complete(3))
    stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="hist"), timeout=10)
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="hist"))
    events = [e for chunk in chunks for e in chunk.events]
    assert [k for k in kinds(events) if k.startswith("entity")] == [
        "entityLockRequested", "entityLockGranted", "entityUnlockSent"]
    assert get_entity(stub, "@e@1") is None


def test_kill_9_with_a_batch_in_flight_keeps_queue_state_and_delayed_signals(tmp_path, sidecar_process) -> None:
    db = tmp_path / "entities.db"
    port = free_port()
    first = sidecar_process.start(db, port)
    w = RawWorker(first.address)
    signal(w.stub, "@counter@a", "add", "1")
    finish(w, w.next(ENTITY_ITEM), ok(), state="1")
    signal(w.stub, "@counter@a", "add", "2")
    due = now() + timedelta(seconds=2)
    signal(w.stub, "@counter@a", "later", at=due)
    in_flight = w.next(ENTITY_ITEM)
    assert operations(in_flight) == [("entityOperationSignaled", "add")]
    first.kill()
    w.close()

    second = sidecar_process.start(db, port)
    w = RawWorker(second.address)
    try:
        again = w.next(ENTITY_ITEM)
        assert again.entityRequestV2.entityState.value == "1"
        later = [("entityOperationSignaled", "later")]
        # A slow restart may let the delayed signal fall due and join the batch handed out again.
        joined = operations(again) == operations(in_flight) + later
        assert operations(again) == operations(in_flight) or joined, operations(again)
        expect_status(lambda: finish(w, in_flight, ok(), state="3"), Code.NOT_FOUND)
        if joined:
            assert now() >= due
            finish(w, again, ok(), ok(), state="3")
        else:
            finish(w, again, ok(), state="3")
            late = w.next(ENTITY_ITEM, timeout=15)
            assert operations(late) == later and now() >= due
            finish(w, late, ok(), state="3")
        assert get_entity(w.stub, "@counter@a").serializedState.value == "3"  # type: ignore[union-attr]
    finally:
        w.close()
