"""Monitoring: poll a status with a durable timer between checks; give up after N tries."""

from __future__ import annotations

from datetime import timedelta

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def check_job(ctx: task.ActivityContext, params: dict) -> str:
    # A stand-in for an external system: the job is "done" from a given attempt on.
    attempt = params["attempt"]
    ready_at = params["ready_at_attempt"]
    return "done" if ready_at is not None and attempt >= ready_at else "running"


def job_monitor(ctx: task.OrchestrationContext, params: dict):
    """Checks the job up to ``max_checks`` times, ``interval_seconds`` apart."""
    for attempt in range(1, params["max_checks"] + 1):
        status = yield ctx.call_activity(
            check_job, input={"attempt": attempt, "ready_at_attempt": params.get("ready_at_attempt")}
        )
        if status == "done":
            return {"status": "done", "checks": attempt}
        if attempt < params["max_checks"]:
            yield ctx.create_timer(timedelta(seconds=params["interval_seconds"]))
    return {"status": "gave up", "checks": params["max_checks"]}


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(job_monitor)
    worker.add_activity(check_job)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    found = client.schedule_new_orchestration(
        job_monitor, input={"max_checks": 5, "interval_seconds": 0.2, "ready_at_attempt": 3}
    )
    never = client.schedule_new_orchestration(
        job_monitor, input={"max_checks": 3, "interval_seconds": 0.2, "ready_at_attempt": None}
    )
    out = {}
    for key, instance_id in (("found", found), ("gave_up", never)):
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out[key] = state.get_output()
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
