"""The backlog count on every store: work due now and not leased, by kind, each instance or entity once."""

from __future__ import annotations

from datetime import timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.hub import TaskHub
from tests.contract.test_store_entities import signal
from tests.contract.test_store_instances import LEASE, T0, action, raised, start

LATER = T0 + timedelta(hours=1)


def test_backlog_counts_due_unleased_work_once_per_instance_and_entity(hub: TaskHub) -> None:
    assert hub.store.backlog(T0) == {"orchestration": 0, "activity": 0, "entity": 0}

    start(hub, "due")                      # executionStarted due now
    hub.raise_event("due", raised("x"), T0)  # a second due event: still one instance
    start(hub, "later", at=LATER)          # due only later
    start(hub, "leased")
    leased = hub.lease_orchestration(T0, LEASE, exclude=["due", "later"])
    assert leased is not None and leased.instance.instance_id == "leased"
    signal(hub, "@counter@a", "add", "1")
    signal(hub, "@counter@a", "add", "2")  # one entity with two due operations
    signal(hub, "@counter@b", "add", "1", at=LATER)
    assert hub.store.backlog(T0) == {"orchestration": 1, "activity": 0, "entity": 1}

    scheduled = action(1, scheduleTask=pb.ScheduleTaskAction(name="act"))
    hub.complete_orchestration(leased.token, pb.OrchestratorResponse(
        instanceId="leased", completionToken=leased.token, actions=[scheduled]), T0)
    assert hub.store.backlog(T0) == {"orchestration": 1, "activity": 1, "entity": 1}
    assert hub.store.backlog(LATER) == {"orchestration": 2, "activity": 1, "entity": 2}
