"""Version-aware leasing in the SQLite store, the dispatcher's filters, and the query version filter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.dispatch import _declared_names, _declared_versions
from sidecar.model import InstanceSnapshot
from sidecar.servicer_util import QUERY_VERSIONS_HEADER, BadRequest, query_versions
from sidecar.store import InstanceFilter, SqliteStore
from sidecar.store.base import abandon_delay

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore("memory")
    yield s
    s.close()


def start(store: SqliteStore, iid: str, version: str | None, name: str = "orch") -> None:
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e", name=name, status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=T0, last_updated_at=T0, version=version)
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=f"{iid}-e", now=T0,
                                                version=version)
    store.create_instance(inst, event, T0, T0)


def leased_ids(store: SqliteStore, names: list[str] | None, versions: dict[str, list[str]] | None = None,
               exclude: list[str] | None = None) -> list[str]:
    """Lease everything this filter matches (holding the leases); the instance IDs, in order."""
    out: list[str] = []
    while (item := store.lease_orchestration(T0, LEASE, names, versions=versions, exclude=exclude or [])) is not None:
        out.append(item.instance.instance_id)
    return out


def test_orchestrations_are_leased_by_name_and_listed_versions(store: SqliteStore) -> None:
    for iid, version in (("a1", "1.0"), ("a2", "2.0"), ("a-none", None)):
        start(store, iid, version)
    start(store, "other", "1.0", name="other")
    assert leased_ids(store, ["orch"], {"orch": ["2.0", "3.0"]}) == ["a2"]
    assert leased_ids(store, ["orch"], {"orch": [""]}) == ["a-none"]  # "" stands for "no version"
    assert leased_ids(store, ["orch", "other"], {"orch": ["9"]}) == ["other"]  # "other" lists no versions
    assert leased_ids(store, ["orch"], {}) == ["a1"]


def test_excluded_instances_are_not_leased(store: SqliteStore) -> None:
    start(store, "x", None)
    start(store, "y", None)
    assert leased_ids(store, None, exclude=["x"]) == ["y"]
    assert leased_ids(store, None) == ["x"]


def test_activities_are_leased_by_name_and_version(store: SqliteStore) -> None:
    start(store, "p", "2.0")
    item = store.lease_orchestration(T0, LEASE)
    assert item is not None
    actions = [pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="act")),
               pb.OrchestratorAction(id=2, scheduleTask=pb.ScheduleTaskAction(name="act"))]
    actions[1].scheduleTask.version.value = "1.0"
    store.complete_orchestration(item.token, pb.OrchestratorResponse(completionToken=item.token, actions=actions), T0)
    assert store.lease_activity(T0, LEASE, ["act"], versions={"act": ["3.0"]}) is None
    inherited = store.lease_activity(T0, LEASE, ["act"], versions={"act": ["2.0"]})
    assert inherited is not None and (inherited.task.task_id, inherited.task.version) == (1, "2.0")
    own = store.lease_activity(T0, LEASE, ["act"], versions={"act": ["1.0"]})
    assert own is not None and (own.task.task_id, own.task.version) == (2, "1.0")


def test_query_filters_by_version(store: SqliteStore) -> None:
    for iid, version in (("q1", "1.0"), ("q2", "2.0"), ("q3", None)):
        start(store, iid, version)
    found, _ = store.query_instances(InstanceFilter(versions=["1.0", ""]), 10, None)
    assert [i.instance_id for i in found] == ["q1", "q3"]
    everything, _ = store.query_instances(InstanceFilter(), 10, None)
    assert len(everything) == 3


def test_an_abandoned_turn_comes_back_after_a_growing_delay(store: SqliteStore) -> None:
    start(store, "r", "2.0")
    now = T0
    delays = []
    for _ in range(4):
        item = store.lease_orchestration(now, LEASE)
        assert item is not None
        store.abandon_orchestration(item.token, now)
        assert store.lease_orchestration(now, LEASE) is None  # not offered again at once
        due = store.next_due_at(now)
        assert due is not None
        delays.append(due - now)
        now = due
    assert delays == [abandon_delay(n) for n in range(4)]
    assert delays == sorted(delays) and delays[0] < delays[-1]
    assert abandon_delay(100) == timedelta(seconds=30)


def test_filters_in_a_stream_request() -> None:
    no_filters = pb.GetWorkItemsRequest()
    assert _declared_names(no_filters, []) is None  # no filters: every name
    filters = pb.WorkItemFilters(orchestrations=[
        pb.OrchestrationFilter(name="a", versions=["1"]),
        pb.OrchestrationFilter(name="a", versions=["2"]),
        pb.OrchestrationFilter(name="b", versions=["1"]),
        pb.OrchestrationFilter(name="b"),
        pb.OrchestrationFilter(name="c"),
    ])
    request = pb.GetWorkItemsRequest(workItemFilters=filters)
    assert _declared_names(request, list(filters.orchestrations)) == {"a", "b", "c"}
    assert _declared_names(request, list(filters.activities)) == frozenset()  # declared none: gets none
    assert _declared_versions(list(filters.orchestrations)) == {"a": {"1", "2"}}  # b: one filter takes any


def test_query_versions_header() -> None:
    assert query_versions(None) == []
    assert query_versions((("other", "x"),)) == []
    assert query_versions(((QUERY_VERSIONS_HEADER, '["1.0", ""]'),)) == ["1.0", ""]
    for bad in ('"1.0"', "[1]", "{", '{"a": 1}'):
        with pytest.raises(BadRequest, match=QUERY_VERSIONS_HEADER):
            query_versions(((QUERY_VERSIONS_HEADER, bad),))
