"""Recurring schedules: an orchestration started every second, then paused, resumed, updated, deleted.

The worker enables schedules with ``configure_scheduled_tasks()``. Each run of a schedule
is an orchestration whose instance ID is ``<schedule id>-<due time>``, so the sample can
wait for a particular run by its ID (a wait on an instance that does not exist yet waits
for it to appear).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.scheduled import (
    ScheduleClient,
    ScheduleCreationOptions,
    ScheduledTaskClient,
    ScheduleUpdateOptions,
)
from durabletask.worker import TaskHubGrpcWorker


def generate_report(ctx: task.OrchestrationContext, request: dict) -> str:
    """The scheduled work: here it only names the report and the time it ran for."""
    return f"{request['report']} report at {ctx.current_utc_datetime:%H:%M:%S}"


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(generate_report)
    worker.configure_scheduled_tasks()


def _next_whole_second(after: datetime) -> datetime:
    return after.replace(microsecond=0) + timedelta(seconds=1)


def wait_for_next_run(
    client: TaskHubGrpcClient, schedule: ScheduleClient, start: datetime, interval: timedelta, timeout: float
) -> str:
    """The output of the schedule's next run (its due times are ``start + k * interval``)."""
    # A quarter of a second of margin: the schedule wakes up within milliseconds of a change.
    after = datetime.now(timezone.utc) + timedelta(seconds=0.25)
    k = (after - start) // interval + 1
    for attempt in range(3):
        due = start + (k + attempt) * interval
        run_id = f"{schedule.schedule_id}-{due.isoformat()}"
        wait = (due - datetime.now(timezone.utc)).total_seconds() + timeout
        try:
            state = client.wait_for_orchestration_completion(run_id, timeout=max(wait, 1.0))
        except TimeoutError:
            continue  # the schedule woke up after that due time: its next run is one interval later
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        return str(state.get_output())
    raise TimeoutError(f"schedule '{schedule.schedule_id}' did not run")


def run(client: TaskHubGrpcClient, timeout: float = 10) -> dict:
    schedules = ScheduledTaskClient(client)
    interval = timedelta(seconds=1)
    start = _next_whole_second(datetime.now(timezone.utc) + timedelta(seconds=0.5))
    schedule = schedules.create_schedule(ScheduleCreationOptions(
        f"report-{uuid.uuid4().hex[:8]}", "generate_report", interval,
        orchestration_input={"report": "sales"}, start_at=start,
    ))
    out: dict = {"first_runs": []}

    # Watch it run three times: at start, start + 1 s, start + 2 s.
    for k in range(3):
        run_id = f"{schedule.schedule_id}-{(start + k * interval).isoformat()}"
        state = client.wait_for_orchestration_completion(run_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out["first_runs"].append(state.get_output())

    schedule.pause()
    out["paused"] = schedule.describe().status.value
    schedule.resume()
    out["resumed"] = schedule.describe().status.value
    out["after_resume"] = wait_for_next_run(client, schedule, start, interval, timeout)

    # New input and a 2-second interval; runs stay on the grid from start_at.
    interval = timedelta(seconds=2)
    schedule.update(ScheduleUpdateOptions(orchestration_input={"report": "inventory"}, interval=interval))
    out["interval_seconds"] = schedule.describe().interval.total_seconds()  # type: ignore[union-attr]
    out["after_update"] = wait_for_next_run(client, schedule, start, interval, timeout)

    schedule.delete()
    out["deleted"] = schedules.get_schedule(schedule.schedule_id) is None
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
