"""Recurring schedules (``durabletask.scheduled``) through the official client, run by the official
worker's schedule entity (``configure_scheduled_tasks()`` on the session worker) on our sidecar."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import compat_functions as fn
import pytest
from compat_support import new_id, wait_until

from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus, TaskHubGrpcClient
from durabletask.scheduled import (
    ScheduleCreationOptions,
    ScheduledTaskClient,
    ScheduleNotFoundError,
    ScheduleQuery,
    ScheduleStatus,
    ScheduleUpdateOptions,
)

INTERVAL = timedelta(seconds=1)
# How long a paused schedule is watched for runs it must not start: one and a half intervals.
PAUSE_WATCH = 1.5


def runs_of(hub: TaskHubGrpcClient, schedule_id: str) -> dict[datetime, OrchestrationState]:
    """The orchestrations the schedule started, by the due time their instance IDs carry."""
    prefix = f"{schedule_id}-"
    states = hub.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=prefix, fetch_inputs_and_outputs=True))
    return {datetime.fromisoformat(s.instance_id[len(prefix):]): s for s in states}


def finished_runs(hub: TaskHubGrpcClient, schedule_id: str) -> dict[datetime, OrchestrationState]:
    """The schedule's runs that have completed."""
    return {t: s for t, s in runs_of(hub, schedule_id).items() if s.runtime_status == OrchestrationStatus.COMPLETED}


def watch_for_runs_after(hub: TaskHubGrpcClient, schedule_id: str, since: datetime, seconds: float) -> None:
    """Fails as soon as the schedule has a run due after ``since``; returns after ``seconds`` without one."""
    watch_end = time.monotonic() + seconds

    def over() -> bool:
        started = [t for t in runs_of(hub, schedule_id) if t > since]
        assert started == [], f"runs started while paused: {started}"
        return time.monotonic() >= watch_end

    wait_until(over, "the watch of the paused schedule to end", timeout=seconds + 10)


def test_schedule_lifecycle(hub: TaskHubGrpcClient) -> None:
    schedules = ScheduledTaskClient(hub, operation_timeout=30)
    schedule_id = new_id("sched")
    created_at = datetime.now(timezone.utc)
    handle = schedules.create_schedule(
        ScheduleCreationOptions(schedule_id, fn.echo.__name__, INTERVAL, orchestration_input="tick")
    )
    described = handle.describe()
    assert described.schedule_id == schedule_id and described.status == ScheduleStatus.ACTIVE
    assert described.orchestration_name == "echo" and described.orchestration_input == "tick"
    assert described.interval == INTERVAL

    runs = wait_until(lambda: (r := finished_runs(hub, schedule_id)) and len(r) >= 2 and r, "two completed runs")
    assert all(state.get_output() == "tick" for state in runs.values())
    due_times = sorted(runs)
    assert due_times[0] > created_at
    assert (due_times[1] - due_times[0]) % INTERVAL == timedelta(0)  # due times are whole intervals apart
    assert handle.describe().last_run_at is not None

    handle.pause()
    paused_at = datetime.now(timezone.utc)
    described = handle.describe()
    assert described.status == ScheduleStatus.PAUSED and described.next_run_at is None
    with pytest.raises(RuntimeError, match="pause"):
        handle.pause()  # an invalid transition fails the operation and changes nothing
    assert handle.describe().status == ScheduleStatus.PAUSED
    assert [d.schedule_id for d in schedules.list_schedules(ScheduleQuery(schedule_id_prefix=schedule_id))] == [schedule_id]
    assert schedules.list_schedules(ScheduleQuery(schedule_id_prefix=schedule_id, status=ScheduleStatus.ACTIVE)) == []
    # A paused schedule starts nothing: watch it for longer than an interval.
    watch_for_runs_after(hub, schedule_id, paused_at, PAUSE_WATCH)

    handle.update(ScheduleUpdateOptions(orchestration_input="tock"))
    assert handle.describe().orchestration_input == "tock"
    resuming_at = datetime.now(timezone.utc)
    handle.resume()
    assert handle.describe().status == ScheduleStatus.ACTIVE
    active = schedules.list_schedules(ScheduleQuery(schedule_id_prefix=schedule_id, status=ScheduleStatus.ACTIVE))
    assert [d.schedule_id for d in active] == [schedule_id]
    later = wait_until(
        lambda: [s for t, s in finished_runs(hub, schedule_id).items() if t > paused_at] or None, "a run after resume"
    )
    assert all(s.get_output() == "tock" for s in later)
    # Runs start again from the resume on, not for the due times missed while paused.
    assert all(t > resuming_at for t in runs_of(hub, schedule_id) if t > paused_at)

    handle.delete()
    assert schedules.get_schedule(schedule_id) is None
    with pytest.raises(ScheduleNotFoundError):
        handle.describe()
    assert schedules.list_schedules(ScheduleQuery(schedule_id_prefix=schedule_id)) == []


def test_list_schedules_by_prefix(hub: TaskHubGrpcClient) -> None:
    schedules = ScheduledTaskClient(hub, operation_timeout=30)
    prefix = new_id("listed")
    # Due far in the future: these schedules never start a run while the test looks at them.
    start_at = datetime.now(timezone.utc) + timedelta(hours=1)
    handles = [
        schedules.create_schedule(
            ScheduleCreationOptions(f"{prefix}-{n}", "echo", timedelta(minutes=n + 1), orchestration_input=n, start_at=start_at)
        )
        for n in range(3)
    ]
    try:
        listed = schedules.list_schedules(ScheduleQuery(schedule_id_prefix=prefix))
        assert sorted(d.schedule_id for d in listed) == [f"{prefix}-{n}" for n in range(3)]
        assert {d.schedule_id: d.interval for d in listed} == {f"{prefix}-{n}": timedelta(minutes=n + 1) for n in range(3)}
        assert all(d.status == ScheduleStatus.ACTIVE for d in listed)
        # Each schedule's first heartbeat (a signal to itself, right after creation) sets its next run.
        wait_until(
            lambda: all(d.next_run_at == start_at for d in schedules.list_schedules(ScheduleQuery(schedule_id_prefix=prefix))),
            "the next runs to be set to the start time",
        )
        one = schedules.get_schedule(f"{prefix}-1")
        assert one is not None and one.orchestration_input == 1
        assert schedules.get_schedule(f"{prefix}-none") is None
    finally:
        for handle in handles:
            handle.delete()
    assert schedules.list_schedules(ScheduleQuery(schedule_id_prefix=prefix)) == []
