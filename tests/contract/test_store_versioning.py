"""Version-aware leasing on every store, the query version filter, and the growing hand-back delay."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.store import InstanceFilter
from sidecar.store.base import abandon_delay

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
S = pb.OrchestrationStatus


def start(hub: TaskHub, iid: str, version: str | None, name: str = "orch") -> None:
    inst = InstanceSnapshot(instance_id=iid, execution_id=f"{iid}-e", name=name, status=S.ORCHESTRATION_STATUS_PENDING,
                            created_at=T0, last_updated_at=T0, version=version)
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=f"{iid}-e", now=T0,
                                                version=version)
    hub.create_instance(inst, event, T0, T0)


def leased_ids(hub: TaskHub, names: list[str] | None, versions: dict[str, list[str]] | None = None,
               exclude: list[str] | None = None) -> list[str]:
    """Lease everything this filter matches (holding the leases); the instance IDs, in order."""
    out: list[str] = []
    while (item := hub.lease_orchestration(T0, LEASE, names, versions=versions, exclude=exclude or [])) is not None:
        out.append(item.instance.instance_id)
    return out


def test_orchestrations_are_leased_by_name_and_listed_versions(hub: TaskHub) -> None:
    for iid, version in (("a1", "1.0"), ("a2", "2.0"), ("a-none", None)):
        start(hub, iid, version)
    start(hub, "other", "1.0", name="other")
    assert leased_ids(hub, ["orch"], {"orch": ["2.0", "3.0"]}) == ["a2"]
    assert leased_ids(hub, ["orch"], {"orch": [""]}) == ["a-none"]  # "" stands for "no version"
    assert leased_ids(hub, ["orch", "other"], {"orch": ["9"]}) == ["other"]  # "other" lists no versions
    assert leased_ids(hub, ["orch"], {}) == ["a1"]


def test_excluded_instances_are_not_leased(hub: TaskHub) -> None:
    start(hub, "x", None)
    start(hub, "y", None)
    assert leased_ids(hub, None, exclude=["x"]) == ["y"]
    assert leased_ids(hub, None) == ["x"]


def test_activities_are_leased_by_name_and_version(hub: TaskHub) -> None:
    start(hub, "p", "2.0")
    item = hub.lease_orchestration(T0, LEASE)
    assert item is not None
    actions = [pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="act")),
               pb.OrchestratorAction(id=2, scheduleTask=pb.ScheduleTaskAction(name="act"))]
    actions[1].scheduleTask.version.value = "1.0"
    hub.complete_orchestration(item.token, pb.OrchestratorResponse(completionToken=item.token, actions=actions), T0)
    assert hub.lease_activity(T0, LEASE, ["act"], versions={"act": ["3.0"]}) is None
    inherited = hub.lease_activity(T0, LEASE, ["act"], versions={"act": ["2.0"]})
    assert inherited is not None and (inherited.task.task_id, inherited.task.version) == (1, "2.0")
    own = hub.lease_activity(T0, LEASE, ["act"], versions={"act": ["1.0"]})
    assert own is not None and (own.task.task_id, own.task.version) == (2, "1.0")


def test_query_filters_by_version(hub: TaskHub) -> None:
    for iid, version in (("q1", "1.0"), ("q2", "2.0"), ("q3", None)):
        start(hub, iid, version)
    found, _ = hub.query_instances(InstanceFilter(versions=["1.0", ""]), 10, None)
    assert [i.instance_id for i in found] == ["q1", "q3"]
    everything, _ = hub.query_instances(InstanceFilter(), 10, None)
    assert len(everything) == 3


def test_an_abandoned_turn_comes_back_after_a_growing_delay(hub: TaskHub) -> None:
    start(hub, "r", "2.0")
    now = T0
    delays = []
    for _ in range(4):
        item = hub.lease_orchestration(now, LEASE)
        assert item is not None
        hub.abandon_orchestration(item.token, now)
        assert hub.lease_orchestration(now, LEASE) is None  # not offered again at once
        due = hub.next_due_at(now)
        assert due is not None
        delays.append(due - now)
        now = due
    assert delays == [abandon_delay(n) for n in range(4)]
    assert delays == sorted(delays) and delays[0] < delays[-1]
    assert abandon_delay(100) == timedelta(seconds=30)
