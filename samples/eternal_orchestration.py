"""Eternal orchestration: periodic work that restarts itself with continue_as_new, keeping history small."""

from __future__ import annotations

from datetime import timedelta

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def cleanup(ctx: task.ActivityContext, round_no: int) -> int:
    return round_no


def periodic_cleanup(ctx: task.OrchestrationContext, state: dict):
    """Runs a cleanup, waits, then continues as new; stops after ``rounds`` for the demo."""
    done = yield ctx.call_activity(cleanup, input=state["round"])
    if done + 1 >= state["rounds"]:
        return {"rounds_completed": done + 1}
    yield ctx.create_timer(timedelta(seconds=state.get("interval_seconds", 0.2)))
    ctx.continue_as_new({**state, "round": done + 1})


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(periodic_cleanup)
    worker.add_activity(cleanup)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    instance_id = client.schedule_new_orchestration(periodic_cleanup, input={"round": 0, "rounds": 5})
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    history = client.get_orchestration_history(instance_id)
    # Only the last execution's history is kept.
    return {**state.get_output(), "history_events": len(history)}


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
