"""Durable timers and scheduled start: sleep durably inside an orchestration, start one later."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def send_reminder(ctx: task.ActivityContext, message: str) -> str:
    return f"reminder sent: {message}"


def reminder(ctx: task.OrchestrationContext, params: dict):
    """Waits ``delay_seconds`` on a durable timer (survives restarts), then sends a reminder."""
    started = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=params["delay_seconds"]))
    waited = (ctx.current_utc_datetime - started).total_seconds()
    sent = yield ctx.call_activity(send_reminder, input=params["message"])
    return {"result": sent, "waited_at_least": waited >= params["delay_seconds"]}


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(reminder)
    worker.add_activity(send_reminder)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    # A timer inside the orchestration...
    timer_id = client.schedule_new_orchestration(reminder, input={"delay_seconds": 1, "message": "stand up"})
    # ...and an orchestration that only starts two seconds from now.
    start_at = datetime.now(timezone.utc) + timedelta(seconds=2)
    scheduled_id = client.schedule_new_orchestration(
        reminder, input={"delay_seconds": 0, "message": "scheduled"}, start_at=start_at
    )
    out: dict = {}
    for key, instance_id in (("timer", timer_id), ("scheduled", scheduled_id)):
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out[key] = state.get_output()
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
