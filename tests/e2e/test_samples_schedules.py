"""The schedules sample runs end to end against the real sidecar."""

from __future__ import annotations

from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from samples import schedules
from tests.e2e.test_entities import require_entity_support


def test_schedules_sample(sidecar) -> None:
    require_entity_support(sidecar.address)
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    schedules.register(worker)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as client:
            out = schedules.run(client)
    finally:
        worker.stop()
    assert len(out["first_runs"]) == 3
    assert all(output.startswith("sales report at ") for output in out["first_runs"])
    assert out["paused"] == "Paused" and out["resumed"] == "Active"
    assert out["after_resume"].startswith("sales report at ")
    assert out["interval_seconds"] == 2.0
    assert out["after_update"].startswith("inventory report at ")
    assert out["deleted"] is True
