"""The declarative workflow sample runs end to end against the real sidecar."""

from __future__ import annotations

from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from samples import declarative_workflow


def test_declarative_workflow_sample(sidecar) -> None:
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    declarative_workflow.register(worker)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as client:
            out = declarative_workflow.run(client)
    finally:
        worker.stop()
    assert out["small"] == {
        "state": "completed",
        "results": {
            "reserve": "reservation for A-1",
            "charge": 40.0,
            "label": "label for A-1",
            "notify": "sent: order A-1 charged 40.0",
        },
        "skipped": ["fraud_check"],
        "compensated": [],
        "error": None,
    }
    assert out["large"]["state"] == "completed" and out["large"]["results"]["fraud_check"] == "passed"
    assert out["large"]["skipped"] == []
    declined = out["declined"]
    assert declined["state"] == "compensated"
    assert declined["error"] == "step 'charge' failed: card declined"
    assert declined["compensated"] == ["reserve"]
    assert declined["results"] == {"reserve": "reservation for A-3", "label": "label for A-3"}
