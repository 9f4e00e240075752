"""Replay-testing a code change: will the new orchestrator code still replay the running instances?

An approval instance (from human_interaction) runs until it waits for its approval. Its history is
fetched and saved to a JSON file, as you would from production; then, as a unit test would, the
saved history is replayed against the current code (it replays: still waiting) and against a
changed version that adds a call before the others (it does not: NonDeterminismError naming the
line of that call). Finally the instance is approved and completes.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.testing import fetch_histories, replay_histories, save_history
from durabletask.worker import TaskHubGrpcWorker
from samples import human_interaction
from samples.human_interaction import approval_workflow, request_approval


def approval_workflow_v2(ctx: task.OrchestrationContext, order: dict):
    """The changed version: it audits the order first, so instances already past that point break."""
    yield ctx.call_activity("audit_order", input=order)
    yield ctx.call_activity(request_approval, input=order)
    return (yield ctx.wait_for_external_event("approval"))


def register(worker: TaskHubGrpcWorker) -> None:
    human_interaction.register(worker)


def wait_until_paused(client: TaskHubGrpcClient, instance_id: str, timeout: float) -> None:
    """Wait until the instance has armed its approval timeout (it is then waiting for the event)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not any(type(e).__name__ == "TimerCreatedEvent" for e in client.get_orchestration_history(instance_id)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{instance_id} did not reach its approval wait in {timeout}s")
        pause.wait(0.05)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict[str, Any]:
    instance_id = client.schedule_new_orchestration(approval_workflow, input={"id": "R-1"})
    wait_until_paused(client, instance_id, timeout)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        saved = []
        for iid, events in fetch_histories(client, [instance_id]).items():
            saved.append(Path(folder) / f"{iid}.json")
            save_history(saved[-1], events)
        (current,) = replay_histories(approval_workflow, saved).values()
        report["current code"] = {"status": current.status.name, "waiting for": current.waiting_for}
        try:
            replay_histories(approval_workflow_v2, saved)
            report["changed code"] = "replays"
        except task.NonDeterminismError as exc:
            report["changed code"] = next(line.strip() for line in str(exc).splitlines() if "code:" in line)
    client.raise_orchestration_event(instance_id, "approval", data={"approved": True, "by": "Sam"})
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return report


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
