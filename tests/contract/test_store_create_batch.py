"""Instances created together (``TaskHub.create_instances``, the group commit of StartInstance calls)
fare as they would one at a time, on every store."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta, timezone

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar import engine_events
from sidecar.hub import TaskHub
from sidecar.hub.instances import NewInstance
from sidecar.model import InstanceSnapshot
from sidecar.store import CommitNotice, InstanceExistsError

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
S = pb.OrchestrationStatus


def new(iid: str, execution_id: str, name: str = "orch", replaceable: Collection[int] | None = None) -> NewInstance:
    inst = InstanceSnapshot(instance_id=iid, execution_id=execution_id, name=name,
                            status=S.ORCHESTRATION_STATUS_PENDING, created_at=T0, last_updated_at=T0, input='"in"')
    event = engine_events.new_execution_started(name=name, instance_id=iid, execution_id=execution_id, now=T0,
                                                input='"in"')
    return NewInstance(inst, event, T0, T0, replaceable)


def test_instances_created_together_are_each_pending_with_their_start_event(hub: TaskHub) -> None:
    notices: list[CommitNotice] = []
    hub.add_listener(notices.append)

    assert hub.create_instances([new("a", "a1"), new("b", "b1"), new("c", "c1")]) == [None, None, None]

    for iid in "abc":
        inst = hub.get_instance(iid)
        assert inst is not None and inst.status == S.ORCHESTRATION_STATUS_PENDING
        assert inst.execution_id == f"{iid}1"
    assert len(notices) == 1 and {"a", "b", "c"} <= set(notices[0].instances)  # one transaction
    leased = hub.lease_orchestrations(T0, timedelta(minutes=5), limit=10)
    assert sorted(item.instance.instance_id for item in leased) == ["a", "b", "c"]
    for item in leased:
        assert "executionStarted" in [e.WhichOneof("eventType") for e in item.new_events]


def test_an_id_in_use_fails_only_its_own_request(hub: TaskHub) -> None:
    hub.create_instance(*new("taken", "t1"))

    outcomes = hub.create_instances([new("x", "x1"), new("taken", "t2"), new("y", "y1")])

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], InstanceExistsError)
    taken = hub.get_instance("taken")
    assert taken is not None and taken.execution_id == "t1"  # left as it was
    assert hub.get_instance("x") is not None and hub.get_instance("y") is not None


def test_the_same_id_twice_in_one_batch_fares_as_it_would_in_turn(hub: TaskHub) -> None:
    # The second sees the first (live): refused by default, replaced when its policy allows it.
    outcomes = hub.create_instances([new("dup", "d1"), new("dup", "d2")])
    assert outcomes[0] is None and isinstance(outcomes[1], InstanceExistsError)
    inst = hub.get_instance("dup")
    assert inst is not None and inst.execution_id == "d1"

    live = [S.ORCHESTRATION_STATUS_PENDING, S.ORCHESTRATION_STATUS_TERMINATED]
    assert hub.create_instances([new("dup", "d3", replaceable=live)]) == [None]
    inst = hub.get_instance("dup")
    assert inst is not None and inst.execution_id == "d3" and inst.status == S.ORCHESTRATION_STATUS_PENDING
