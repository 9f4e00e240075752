"""Entities on every store: queues, batches, atomic commits, leases, locks, queries, cleaning."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.entity_batch import InvalidBatchResultError
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.store import LeaseNotFoundError, StoreTx
from sidecar.store.base import EntityQueryFilter

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


# --- helpers ---------------------------------------------------------------------------------


def signal(hub: TaskHub, entity_id: str, operation: str, data: str | None = None,
           now: datetime = T0, at: datetime | None = None) -> None:
    event = engine_events.new_event(now)
    body = event.entityOperationSignaled
    body.requestId = f"req-{operation}-{data}"
    body.operation = operation
    body.targetInstanceId.value = entity_id
    if data is not None:
        body.input.value = data
    hub.signal_entity(entity_id, event, at or now, now)


def operations(item: object) -> list[str]:
    out = []
    for event in item.operations:  # type: ignore[attr-defined]
        body = event.entityOperationSignaled if event.HasField("entityOperationSignaled") else event.entityOperationCalled
        out.append(body.operation)
    return out


def ok(value: str | None = None) -> pb.OperationResult:
    result = pb.OperationResult(success=pb.OperationResultSuccess())
    if value is not None:
        result.success.result.value = value
    return result


def result(token: str, *results: pb.OperationResult, state: str | None = None,
           actions: list[pb.OperationAction] | None = None) -> pb.EntityBatchResult:
    r = pb.EntityBatchResult(results=results, actions=actions or [], completionToken=token)
    if state is not None:
        r.entityState.value = state
    return r


def start(hub: TaskHub, iid: str, now: datetime = T0) -> None:
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e1", name="orch",
                            status=S.ORCHESTRATION_STATUS_PENDING, created_at=now, last_updated_at=now)
    event = engine_events.new_execution_started(name="orch", instance_id=iid, execution_id=f"{iid}-e1", now=now)
    hub.create_instance(inst, event, now, now)


def turn(hub: TaskHub, iid: str, actions: list[pb.OrchestratorAction], now: datetime = T0) -> list[str]:
    """Lease the instance's next turn, answer it with ``actions``; returns the kinds of the new events.

    Turns of other instances leased on the way (new instances and running ones take turns) are
    handed straight back.
    """
    others: list[str] = []
    while True:
        item = hub.lease_orchestration(now, LEASE, exclude=others)
        assert item is not None, f"no turn of '{iid}' to lease"
        if item.instance.instance_id == iid:
            break
        others.append(item.instance.instance_id)
        assert hub.release_orchestration(item.token)
    hub.complete_orchestration(
        item.token, pb.OrchestratorResponse(instanceId=iid, completionToken=item.token, actions=actions), now
    )
    return [e.WhichOneof("eventType") or "" for e in item.new_events]


def entity_action(action_id: int, **message: object) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, sendEntityMessage=pb.SendEntityMessageAction(**message))  # type: ignore[arg-type]


def lock_action(action_id: int, iid: str, section: str, lock_set: list[str]) -> pb.OrchestratorAction:
    return entity_action(action_id, entityLockRequested=pb.EntityLockRequestedEvent(
        criticalSectionId=section, lockSet=lock_set, position=0))


def call_action(action_id: int, target: str, operation: str, request_id: str) -> pb.OrchestratorAction:
    called = pb.EntityOperationCalledEvent(requestId=request_id, operation=operation)
    called.targetInstanceId.value = target
    return entity_action(action_id, entityOperationCalled=called)


def unlock_action(action_id: int, target: str, section: str) -> pb.OrchestratorAction:
    unlock = pb.EntityUnlockSentEvent(criticalSectionId=section)
    unlock.targetInstanceId.value = target
    return entity_action(action_id, entityUnlockSent=unlock)


def complete_action(action_id: int, status: int = S.ORCHESTRATION_STATUS_COMPLETED) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=status))  # type: ignore[arg-type]


def inbox_kinds(hub: TaskHub, iid: str) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e, _, _ in hub.store.inbox_of(iid)]


# --- signals, batches, state -----------------------------------------------------------------


def test_signal_creates_the_entity_and_a_batch_carries_the_queue_in_order(hub: TaskHub) -> None:
    assert hub.get_entity("@counter@a", T0) is None
    for i in range(3):
        signal(hub, "@counter@a", "add", str(i))
    entity = hub.get_entity("@counter@a", T0)
    assert entity is not None and entity.backlog == 3 and entity.state is None and not entity.has_state
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and item.instance_id == "@counter@a" and item.state is None
    assert operations(item) == ["add", "add", "add"]
    assert [e.entityOperationSignaled.input.value for e in item.operations] == ["0", "1", "2"]
    assert hub.lease_entity(T0, LEASE) is None  # one batch per entity at a time
    hub.complete_entity(item.token, result(item.token, ok(), ok(), ok(), state="3"), T0 + timedelta(seconds=1))
    entity = hub.get_entity("@counter@a", T0)
    assert entity is not None and entity.state == "3" and entity.backlog == 0
    assert entity.last_modified_at == T0 + timedelta(seconds=1)
    assert hub.get_entity("@counter@a", T0, include_state=False).state is None  # type: ignore[union-attr]
    assert hub.lease_entity(T0, LEASE) is None


def test_batch_size_is_capped_and_order_kept_across_batches(hub: TaskHub) -> None:
    for i in range(5):
        signal(hub, "@e@k", f"op{i}")
    seen: list[str] = []
    while (item := hub.lease_entity(T0, LEASE, max_operations=2)) is not None:
        assert len(item.operations) <= 2
        seen += operations(item)
        hub.complete_entity(item.token, result(item.token, *[ok() for _ in item.operations], state="s"), T0)
    assert seen == [f"op{i}" for i in range(5)]


def test_entity_without_state_or_work_is_deleted(hub: TaskHub) -> None:
    signal(hub, "@e@k", "delete")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None
    hub.complete_entity(item.token, result(item.token, ok()), T0)
    assert hub.get_entity("@e@k", T0) is None


def test_entity_names_are_normalized_and_filter_leases(hub: TaskHub) -> None:
    signal(hub, "@Counter@A", "add")
    assert hub.get_entity("@counter@A", T0) is not None
    assert hub.lease_entity(T0, LEASE, names=["other"]) is None
    assert hub.lease_entity(T0, LEASE, names=[]) is None
    item = hub.lease_entity(T0, LEASE, names=["COUNTER"])
    assert item is not None and item.instance_id == "@counter@A"


def test_delayed_signal_is_not_visible_early(hub: TaskHub) -> None:
    later = T0 + timedelta(minutes=10)
    signal(hub, "@e@k", "later", at=later)
    assert hub.lease_entity(T0, LEASE) is None
    assert hub.next_due_at(T0) == later
    assert [(k, at) for k, _, at in hub.store.entity_queue_of("@e@k")] == [("signal", later)]
    # Not an entity yet: neither found nor listed (even as transient) before the signal is due.
    assert hub.get_entity("@e@k", T0) is None
    assert hub.get_entity("@e@k", later - timedelta(microseconds=1)) is None
    everything = EntityQueryFilter(include_transient=True)
    assert hub.query_entities(everything, 100, None, T0)[0] == []
    due = hub.get_entity("@e@k", later)
    assert due is not None and due.backlog == 1 and not due.has_state
    assert [e.instance_id for e in hub.query_entities(everything, 100, None, later)[0]] == ["@e@k"]
    assert hub.query_entities(EntityQueryFilter(), 100, None, later)[0] == []
    assert hub.lease_entity(later - timedelta(microseconds=1), LEASE) is None
    item = hub.lease_entity(later, LEASE)
    assert item is not None and operations(item) == ["later"]


# --- atomic commit, stale tokens, leases ---------------------------------------------------------


def test_batch_result_commits_state_results_signals_and_orchestrations_together(hub: TaskHub) -> None:
    start(hub, "caller")
    turn(hub, "caller", [call_action(1, "@acct@a", "get", "r1")])
    signal(hub, "@acct@a", "deposit", "5")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and operations(item) == ["get", "deposit"]
    actions = [
        pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@audit@log", name="record")),
        pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="job", name="job")),
    ]
    hub.complete_entity(item.token, result(item.token, ok("0"), ok(), state="5", actions=actions), T0)
    assert hub.get_entity("@acct@a", T0).state == "5"  # type: ignore[union-attr]
    assert inbox_kinds(hub, "caller") == ["entityOperationCompleted"]
    reply = hub.store.inbox_of("caller")[0][0].entityOperationCompleted
    assert reply.requestId == "r1" and reply.output.value == "0"
    assert [k for k, _, _ in hub.store.entity_queue_of("@audit@log")] == ["signal"]
    assert hub.store.entity_queue_of("@audit@log")[0][1] == "@acct@a"
    job = hub.get_instance("job")
    assert job is not None and job.status == S.ORCHESTRATION_STATUS_PENDING
    assert hub.store.entity_queue_of("@acct@a") == []


def test_invalid_batch_result_changes_nothing_and_retries_later(hub: TaskHub) -> None:
    start(hub, "caller")
    turn(hub, "caller", [call_action(1, "@acct@a", "get", "r1")])
    item = hub.lease_entity(T0, LEASE)
    assert item is not None
    bad = [
        pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="job", name="job")),
        pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="not-an-entity", name="x")),
    ]
    with pytest.raises(InvalidBatchResultError, match="not-an-entity"):
        hub.complete_entity(item.token, result(item.token, ok("1"), state="1", actions=bad), T0)
    assert hub.get_instance("job") is None
    assert inbox_kinds(hub, "caller") == []
    assert hub.get_entity("@acct@a", T0).backlog == 1  # type: ignore[union-attr]
    # The lease is gone and the batch comes back after a back-off.
    with pytest.raises(LeaseNotFoundError):
        hub.complete_entity(item.token, result(item.token, ok()), T0)
    assert hub.lease_entity(T0, LEASE) is None
    again = hub.lease_entity(T0 + timedelta(seconds=1), LEASE)
    assert again is not None and operations(again) == ["get"]


def test_state_over_the_limit_fails_the_operations_in_one_commit(hub: TaskHub) -> None:
    start(hub, "caller")
    signal(hub, "@e@k", "set", "1")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None
    hub.complete_entity(item.token, result(item.token, ok(), state="1"), T0)
    turn(hub, "caller", [call_action(1, "@e@k", "grow", "r1")])
    signal(hub, "@e@k", "grow")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and operations(item) == ["grow", "grow"]
    job = pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(instanceId="job", name="job"))
    hub.complete_entity(item.token, result(item.token, ok(), ok(), state="x" * 11, actions=[job]), T0,
                          max_state_size=10)
    entity = hub.get_entity("@e@k", T0)
    assert entity is not None and entity.state == "1" and entity.backlog == 0
    assert hub.store.entity_queue_of("@e@k") == [] and hub.get_instance("job") is None
    assert inbox_kinds(hub, "caller") == ["entityOperationFailed"]
    failure = hub.store.inbox_of("caller")[0][0].entityOperationFailed
    assert failure.requestId == "r1" and failure.failureDetails.errorType == "EntityStateTooLargeError"
    assert "limit of 10 bytes" in failure.failureDetails.errorMessage
    # The lease is settled: the token is spent and the entity takes new work at once.
    with pytest.raises(LeaseNotFoundError):
        hub.complete_entity(item.token, result(item.token, ok()), T0)
    signal(hub, "@e@k", "get")
    again = hub.lease_entity(T0, LEASE)
    assert again is not None and operations(again) == ["get"] and again.state == "1"


def test_batch_redispatched_after_lease_expiry_is_applied_once(hub: TaskHub) -> None:
    signal(hub, "@counter@a", "add", "1")
    first = hub.lease_entity(T0, timedelta(seconds=30))
    assert first is not None
    assert hub.lease_entity(T0 + timedelta(seconds=10), LEASE) is None  # still leased
    assert hub.next_due_at(T0) == T0 + timedelta(seconds=30)
    second = hub.lease_entity(T0 + timedelta(seconds=31), LEASE)
    assert second is not None and second.token != first.token and operations(second) == ["add"]
    with pytest.raises(LeaseNotFoundError):
        hub.complete_entity(first.token, result(first.token, ok(), state="1"), T0)
    assert hub.get_entity("@counter@a", T0).state is None  # type: ignore[union-attr]
    hub.complete_entity(second.token, result(second.token, ok(), state="1"), T0)
    with pytest.raises(LeaseNotFoundError):
        hub.complete_entity(second.token, result(second.token, ok(), state="2"), T0)
    assert hub.get_entity("@counter@a", T0).state == "1"  # type: ignore[union-attr]


def test_abandon_backs_off_and_release_requeues_at_once(hub: TaskHub) -> None:
    signal(hub, "@e@k", "op")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None
    hub.abandon_entity(item.token, T0)
    with pytest.raises(LeaseNotFoundError):
        hub.abandon_entity(item.token, T0)
    assert hub.lease_entity(T0, LEASE) is None
    assert hub.next_due_at(T0) == T0 + timedelta(seconds=0.1)
    item = hub.lease_entity(T0 + timedelta(seconds=0.1), LEASE)
    assert item is not None
    assert hub.release_entity(item.token) and not hub.release_entity(item.token)
    assert hub.lease_entity(T0 + timedelta(seconds=0.1), LEASE) is not None


def test_no_results_keeps_the_batch_queued(hub: TaskHub) -> None:
    signal(hub, "@e@k", "op")
    item = hub.lease_entity(T0, LEASE)
    assert item is not None
    hub.complete_entity(item.token, result(item.token, state="ignored"), T0)
    assert hub.get_entity("@e@k", T0).backlog == 1  # type: ignore[union-attr]
    assert hub.get_entity("@e@k", T0).state is None  # type: ignore[union-attr]
    assert hub.lease_entity(T0 + timedelta(seconds=1), LEASE) is not None


# --- locks -----------------------------------------------------------------------------------------


def test_lock_set_is_taken_in_order_and_only_the_holder_runs_until_released(hub: TaskHub) -> None:
    start(hub, "orch")
    turn(hub, "orch", [lock_action(1, "orch", "cs1", ["@acct@a", "@acct@b"])])
    assert hub.get_entity("@acct@a", T0).locked_by == "orch"  # type: ignore[union-attr]
    assert hub.get_entity("@acct@b", T0).locked_by == "orch"  # type: ignore[union-attr]
    assert inbox_kinds(hub, "orch") == ["entityLockGranted"]
    assert hub.store.inbox_of("orch")[0][0].entityLockGranted.criticalSectionId == "cs1"

    signal(hub, "@acct@a", "client-op")
    assert hub.lease_entity(T0, LEASE) is None  # the client's signal waits for the lock
    turn(hub, "orch", [call_action(2, "@acct@a", "withdraw", "r1")])
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and operations(item) == ["withdraw"]
    hub.complete_entity(item.token, result(item.token, ok(), state="9"), T0)
    assert hub.lease_entity(T0, LEASE) is None

    assert turn(hub, "orch", [unlock_action(3, "@acct@a", "cs1"), unlock_action(4, "@acct@b", "cs1")]) == [
        "orchestratorStarted", "entityOperationCompleted"]
    assert hub.get_entity("@acct@a", T0).locked_by is None  # type: ignore[union-attr]
    assert hub.get_entity("@acct@b", T0) is None  # no state, no queue, no lock: gone
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and operations(item) == ["client-op"]


def test_second_critical_section_waits_and_gets_the_lock_after_release(hub: TaskHub) -> None:
    start(hub, "x")
    start(hub, "y")
    turn(hub, "x", [lock_action(1, "x", "cs-x", ["@acct@a", "@acct@b"])])
    turn(hub, "y", [lock_action(1, "y", "cs-y", ["@acct@b", "@acct@c"])])
    assert hub.get_entity("@acct@b", T0).locked_by == "x"  # type: ignore[union-attr]
    assert hub.get_entity("@acct@c", T0) is None  # y waits at b; c is not asked yet
    assert inbox_kinds(hub, "y") == []
    turn(hub, "x", [unlock_action(2, "@acct@a", "cs-x"), unlock_action(3, "@acct@b", "cs-x")])
    assert hub.get_entity("@acct@b", T0).locked_by == "y"  # type: ignore[union-attr]
    assert hub.get_entity("@acct@c", T0).locked_by == "y"  # type: ignore[union-attr]
    assert inbox_kinds(hub, "y") == ["entityLockGranted"]


def test_locks_are_released_when_the_holder_completes_or_is_terminated(hub: TaskHub) -> None:
    start(hub, "x")
    turn(hub, "x", [lock_action(1, "x", "cs", ["@acct@a"])])
    signal(hub, "@acct@a", "waiting")
    turn(hub, "x", [complete_action(2)])  # completes without unlocking
    assert hub.get_entity("@acct@a", T0).locked_by is None  # type: ignore[union-attr]
    assert hub.lease_entity(T0, LEASE) is not None

    start(hub, "y")
    start(hub, "z")
    turn(hub, "y", [lock_action(1, "y", "cs-y", ["@acct@b", "@acct@c"])])
    turn(hub, "z", [lock_action(1, "z", "cs-z", ["@acct@c"])])
    assert hub.get_entity("@acct@c", T0).locked_by == "y"  # type: ignore[union-attr]
    hub.terminate_instance("y", None, False, T0)
    assert hub.get_entity("@acct@b", T0) is None
    assert hub.get_entity("@acct@c", T0).locked_by == "z"  # type: ignore[union-attr]
    assert inbox_kinds(hub, "z") == ["entityLockGranted"]


@pytest.mark.parametrize("status", [S.ORCHESTRATION_STATUS_FAILED, S.ORCHESTRATION_STATUS_TERMINATED])
def test_locks_are_released_when_the_holder_ends_failed_or_terminated_by_itself(hub: TaskHub, status: int) -> None:
    start(hub, "x")
    turn(hub, "x", [lock_action(1, "x", "cs", ["@acct@a", "@acct@b"])])
    signal(hub, "@acct@b", "waiting")
    turn(hub, "x", [complete_action(2, status)])
    assert hub.get_instance("x").status == status  # type: ignore[union-attr]
    assert hub.get_entity("@acct@a", T0) is None
    assert hub.get_entity("@acct@b", T0).locked_by is None  # type: ignore[union-attr]
    item = hub.lease_entity(T0, LEASE)
    assert item is not None and operations(item) == ["waiting"]


def test_terminating_a_waiting_requester_drops_its_request(hub: TaskHub) -> None:
    start(hub, "x")
    start(hub, "y")
    turn(hub, "x", [lock_action(1, "x", "cs-x", ["@acct@a"])])
    turn(hub, "y", [lock_action(1, "y", "cs-y", ["@acct@a"])])
    assert [k for k, _, _ in hub.store.entity_queue_of("@acct@a")] == ["lock"]
    hub.terminate_instance("y", None, False, T0)
    assert hub.store.entity_queue_of("@acct@a") == []
    turn(hub, "x", [unlock_action(2, "@acct@a", "cs-x")])
    assert hub.get_entity("@acct@a", T0) is None


# --- queries and cleaning ---------------------------------------------------------------------------


def _with_state(hub: TaskHub, entity_id: str, state: str, now: datetime) -> None:
    signal(hub, entity_id, "set", now=now)
    item = hub.lease_entity(now, LEASE)
    assert item is not None and item.instance_id == entity_id
    hub.complete_entity(item.token, result(item.token, ok(), state=state), now)


def test_query_entities_filters_and_pages(hub: TaskHub) -> None:
    for i in range(5):
        _with_state(hub, f"@counter@{i}", str(i), T0 + timedelta(minutes=i))
    _with_state(hub, "@other@x", "x", T0)
    signal(hub, "@counter@transient", "pending")

    everything = EntityQueryFilter(include_transient=True)
    page, token = hub.query_entities(everything, 100, None, T0)
    assert [e.instance_id for e in page] == [*(f"@counter@{i}" for i in range(5)), "@counter@transient", "@other@x"]
    assert token is None

    stateful, _ = hub.query_entities(EntityQueryFilter(instance_id_prefix="@counter"), 100, None, T0)
    assert [e.instance_id for e in stateful] == [f"@counter@{i}" for i in range(5)]
    assert [e.state for e in stateful] == ["0", "1", "2", "3", "4"]
    no_state, _ = hub.query_entities(EntityQueryFilter(include_state=False), 100, None, T0)
    assert all(e.state is None and e.has_state for e in no_state)

    ranged, _ = hub.query_entities(
        EntityQueryFilter(modified_from=T0 + timedelta(minutes=1), modified_to=T0 + timedelta(minutes=3)), 100, None, T0
    )
    assert [e.instance_id for e in ranged] == ["@counter@1", "@counter@2"]

    seen: list[str] = []
    token = None
    while True:
        page, token = hub.query_entities(everything, 3, token, T0)
        seen += [e.instance_id for e in page]
        if token is None:
            break
    assert len(seen) == 7 and seen == sorted(seen)


def test_clean_entity_storage_releases_orphaned_locks_and_removes_empty_entities(hub: TaskHub) -> None:
    start(hub, "done")
    turn(hub, "done", [lock_action(1, "done", "cs", ["@acct@a"])])
    _with_state(hub, "@acct@kept", "1", T0)
    # The sidecar never leaves these behind itself (it releases with the holder's final commit);
    # write them directly, as an older store or a crash of another implementation could.
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def leave_orphans(tx: StoreTx) -> None:
        tx.ensure_entity("@acct@ghost", "acct", epoch)
        tx.set_entity_lock("@acct@ghost", "vanished", "cs", epoch)
        tx.ensure_entity("@acct@empty", "acct", epoch)
        done = tx.instance("done", lock=True)
        assert done is not None
        tx.update_instance(replace(done, status=S.ORCHESTRATION_STATUS_COMPLETED), end_lease=False)

    hub.store.run(leave_orphans)
    assert hub.get_entity("@acct@ghost", T0).locked_by == "vanished"  # type: ignore[union-attr]
    assert hub.get_entity("@acct@a", T0).locked_by == "done"  # type: ignore[union-attr]
    assert hub.clean_entity_storage(False, False, T0) == (0, 0)
    removed, released = hub.clean_entity_storage(True, True, T0)
    assert released == 2  # '@acct@a' (holder finished) and '@acct@ghost' (holder gone)
    assert removed == 1  # '@acct@empty'; the released ones had nothing else and were deleted on release
    assert hub.get_entity("@acct@a", T0) is None and hub.get_entity("@acct@ghost", T0) is None
    assert hub.get_entity("@acct@empty", T0) is None
    assert hub.get_entity("@acct@kept", T0).state == "1"  # type: ignore[union-attr]
    assert hub.clean_entity_storage(True, True, T0) == (0, 0)


def test_reset_removes_entities(hub: TaskHub) -> None:
    signal(hub, "@e@k", "op")
    hub.reset()
    assert hub.get_entity("@e@k", T0) is None and hub.lease_entity(T0, LEASE) is None


def test_orchestrations_with_at_sign_ids_still_get_their_own_messages(hub: TaskHub) -> None:
    # Messages are routed to entities by kind, not by the target's leading '@'.
    start(hub, "@odd@id")
    timer = pb.OrchestratorAction(id=1, createTimer=pb.CreateTimerAction(fireAt=engine_events.to_timestamp(T0)))
    send = pb.OrchestratorAction(id=2, sendEvent=pb.SendEventAction(
        instance=pb.OrchestrationInstance(instanceId="@odd@id"), name="ping"))
    turn(hub, "@odd@id", [timer, send])
    assert sorted(inbox_kinds(hub, "@odd@id")) == ["eventRaised", "timerFired"]
    assert hub.get_entity("@odd@id", T0) is None


def test_a_lock_request_queued_by_a_later_clock_is_granted_by_an_earlier_clocked_unlock(hub: TaskHub) -> None:
    # Sidecars read their clocks before their transactions: the unlock's commit can carry an
    # earlier "now" than the lock request that committed before it (or another machine's clock
    # runs ahead). The request must be granted all the same, not wait for a settle that never comes.
    later = T0 + timedelta(seconds=2)
    start(hub, "x")
    start(hub, "y")
    turn(hub, "x", [lock_action(1, "x", "cs-x", ["@acct@a"])])
    turn(hub, "y", [lock_action(1, "y", "cs-y", ["@acct@a"])], now=later)
    assert hub.get_entity("@acct@a", later).locked_by == "x"  # type: ignore[union-attr]
    turn(hub, "x", [unlock_action(2, "@acct@a", "cs-x")])
    entity = hub.get_entity("@acct@a", T0)
    assert entity is not None and entity.locked_by == "y" and entity.backlog == 0
    assert inbox_kinds(hub, "y") == ["entityLockGranted"]


def test_an_unlocked_entity_with_a_stranded_lock_request_is_settled_when_leased(hub: TaskHub) -> None:
    # A safety net: a lock request that nothing settled (a sidecar died between commits of an
    # older version) makes the entity leasable; leasing settles it and grants the lock.
    start(hub, "y")
    lock = engine_events.new_event(T0)
    lock.entityLockRequested.CopyFrom(pb.EntityLockRequestedEvent(criticalSectionId="cs-y", lockSet=["@acct@a"]))

    def strand(tx: StoreTx) -> None:
        tx.ensure_entity("@acct@a", "acct", T0)
        tx.enqueue_entity_message("@acct@a", "lock", "y", lock, T0)

    hub.store.run(strand)
    assert hub.lease_entity(T0, LEASE) is None  # nothing for a worker, but the lock is handed over
    entity = hub.get_entity("@acct@a", T0)
    assert entity is not None and entity.locked_by == "y" and entity.backlog == 0
    assert inbox_kinds(hub, "y") == ["executionStarted", "entityLockGranted"]


def test_a_stranded_unlock_is_settled_when_leased_and_the_empty_entity_is_deleted(hub: TaskHub) -> None:
    start(hub, "x")
    turn(hub, "x", [lock_action(1, "x", "cs-x", ["@acct@a"])])
    assert hub.get_entity("@acct@a", T0).locked_by == "x"  # type: ignore[union-attr]
    unlock = engine_events.new_event(T0)
    unlock.entityUnlockSent.CopyFrom(pb.EntityUnlockSentEvent(criticalSectionId="cs-x"))
    hub.store.run(lambda tx: tx.enqueue_entity_message("@acct@a", "unlock", "x", unlock, T0))

    assert hub.lease_entity(T0, LEASE) is None  # settled: unlocked, and nothing left to run
    assert hub.get_entity("@acct@a", T0) is None  # no state, lock or queue: the row is gone
    everything = EntityQueryFilter(include_transient=True)
    assert hub.query_entities(everything, 100, None, T0)[0] == []
    assert hub.lease_entity(T0, LEASE) is None
