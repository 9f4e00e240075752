"""What only the SQLite file store does: one owner per file, and leases cleared when the owner reopens it.

Everything every store must do is in ``tests/contract`` (run on SQLite in memory, a SQLite file
and PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.store import LeaseNotFoundError, SqliteStore, StoreLockedError

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [e.WhichOneof("eventType") or "" for e in events]


def start(hub: TaskHub, iid: str, now: datetime = T0) -> None:
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e1", name="orch", status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=now, last_updated_at=now, input='"in"')
    event = engine_events.new_execution_started(name="orch", instance_id=iid, execution_id=f"{iid}-e1", now=now,
                                                input='"in"')
    hub.create_instance(inst, event, now, now)


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
    return [e.entityOperationSignaled.operation for e in item.operations]  # type: ignore[attr-defined]


def ok_result(token: str, state: str) -> pb.EntityBatchResult:
    r = pb.EntityBatchResult(results=[pb.OperationResult(success=pb.OperationResultSuccess())], completionToken=token)
    r.entityState.value = state
    return r


def test_file_store_clears_stale_leases_on_reopen_and_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = TaskHub(SqliteStore(path))
    start(first, "a")
    item = first.lease_orchestration(T0, LEASE)
    assert item is not None
    first.close()
    store = SqliteStore(path)
    second = TaskHub(store)
    try:
        assert store.cleared_leases == 1
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


def test_delayed_signal_is_durable_and_not_visible_early(tmp_path: Path) -> None:
    path = tmp_path / "delayed.db"
    first = TaskHub(SqliteStore(path))
    later = T0 + timedelta(minutes=10)
    signal(first, "@e@k", "later", at=later)
    assert first.lease_entity(T0, LEASE) is None
    assert first.next_due_at(T0) == later
    first.close()
    second = TaskHub(SqliteStore(path))
    try:
        assert second.lease_entity(later - timedelta(microseconds=1), LEASE) is None
        item = second.lease_entity(later, LEASE)
        assert item is not None and operations(item) == ["later"]
    finally:
        second.close()


def test_restart_keeps_state_queue_and_redispatches_leased_batches(tmp_path: Path) -> None:
    path = tmp_path / "entities.db"
    first = TaskHub(SqliteStore(path))
    signal(first, "@counter@a", "add", "1")
    item = first.lease_entity(T0, LEASE)
    assert item is not None
    first.close()  # the sidecar died with the batch in flight

    store = SqliteStore(path)
    second = TaskHub(store)
    try:
        assert store.cleared_leases >= 1
        again = second.lease_entity(T0, LEASE)
        assert again is not None and operations(again) == ["add"]
        with pytest.raises(LeaseNotFoundError):
            second.complete_entity(item.token, ok_result(item.token, "1"), T0)
        second.complete_entity(again.token, ok_result(again.token, "1"), T0)
    finally:
        second.close()
    third = TaskHub(SqliteStore(path))
    try:
        assert third.get_entity("@counter@a", T0).state == "1"  # type: ignore[union-attr]
        assert third.lease_entity(T0, LEASE) is None
    finally:
        third.close()
