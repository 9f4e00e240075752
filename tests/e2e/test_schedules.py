"""Recurring schedules end to end: our sidecar, a worker with ``configure_scheduled_tasks()``, real runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from durabletask.scheduled import (
    AsyncScheduledTaskClient,
    ScheduleClientValidationError,
    ScheduleCreationOptions,
    ScheduledTaskClient,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
    ScheduleQuery,
    ScheduleStatus,
    ScheduleUpdateOptions,
)
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import eventually
from tests.e2e.test_entities import require_entity_support

T = TypeVar("T")
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
WAIT = 15.0
QUIET = 2.5  # how long "no further runs" is watched for, with a 1 s interval


# --- helpers (also used by test_schedules_restart.py) ---------------------------------------------


class RunRecorder:
    """Records each run (first, non-replayed execution of ``scheduled_tick``) and lets tests wait on them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs: list[tuple[str, Any]] = []

    def record(self, instance_id: str, value: Any) -> None:
        with self._cond:
            self._runs.append((instance_id, value))
            self._cond.notify_all()

    def runs(self, schedule_id: str) -> list[tuple[str, Any]]:
        """(instance ID, input) of the runs of one schedule, in the order they ran."""
        prefix = f"{schedule_id}-"
        with self._cond:
            return [run for run in self._runs if run[0].startswith(prefix)]

    def wait_for(self, schedule_id: str, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float) -> bool:
        """Wait until ``predicate(runs of the schedule)`` holds; False at the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.runs(schedule_id)), timeout)

    def wait_for_count(self, schedule_id: str, count: int, timeout: float) -> list[tuple[str, Any]]:
        """Wait for at least ``count`` runs; fails the test at the timeout."""
        if not self.wait_for(schedule_id, lambda runs: len(runs) >= count, timeout):
            raise AssertionError(f"schedule '{schedule_id}' ran {len(self.runs(schedule_id))} times, not {count}")
        return self.runs(schedule_id)


RUNS = RunRecorder()


def scheduled_tick(ctx: task.OrchestrationContext, value: Any) -> Any:
    """The orchestration the test schedules start: records its run and returns its input."""
    if not ctx.is_replaying:
        RUNS.record(ctx.instance_id, value)
    return value


def due_time(schedule_id: str, instance_id: str) -> datetime:
    """The due time encoded in a run's instance ID (``<schedule id>-<ISO time>``)."""
    return datetime.fromisoformat(instance_id[len(schedule_id) + 1:])


def dues(schedule_id: str, runs: list[tuple[str, Any]]) -> list[datetime]:
    return [due_time(schedule_id, instance_id) for instance_id, _ in runs]


def on_grid(times: list[datetime], interval: timedelta) -> bool:
    """True if every time is a whole number of intervals after the first."""
    return all((t - times[0]) % interval == timedelta(0) for t in times)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def schedules(sidecar) -> Iterator[ScheduledTaskClient]:
    require_entity_support(sidecar.address)
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    worker.add_orchestrator(scheduled_tick)
    worker.configure_scheduled_tasks()
    worker.start()
    client = TaskHubGrpcClient(host_address=sidecar.address)
    try:
        yield ScheduledTaskClient(client, operation_timeout=30)
    finally:
        client.close()
        worker.stop()


def test_interval_schedule_runs_pauses_resumes_updates_and_is_deleted(schedules: ScheduledTaskClient) -> None:
    sid = "life"
    schedule = schedules.create_schedule(
        ScheduleCreationOptions(sid, "scheduled_tick", SECOND, orchestration_input={"v": 1})
    )
    assert schedule.schedule_id == sid

    runs = RUNS.wait_for_count(sid, 3, WAIT)
    times = dues(sid, runs)
    assert len(set(times)) == len(times) and times == sorted(times)
    assert on_grid(times, SECOND) and times[1] - times[0] == SECOND
    assert all(value == {"v": 1} for _, value in runs)
    described = schedule.describe()
    assert described.status is ScheduleStatus.ACTIVE and described.interval == SECOND
    assert described.orchestration_name == "scheduled_tick" and described.orchestration_input == {"v": 1}
    assert described.last_run_at is not None and described.last_run_at >= times[2]

    # Pause: no run falls due afterwards.
    schedule.pause()
    paused = schedule.describe()
    assert paused.status is ScheduleStatus.PAUSED and paused.next_run_at is None
    last = paused.last_run_at
    assert last is not None
    assert not RUNS.wait_for(sid, lambda r: max(dues(sid, r)) > last, QUIET), "a paused schedule ran"

    # Resume: runs again, from the next due time after now (none for the paused period).
    resumed_at = _now()
    schedule.resume()
    assert schedule.describe().status is ScheduleStatus.ACTIVE
    assert RUNS.wait_for(sid, lambda r: max(dues(sid, r)) > resumed_at, WAIT), "no run after resume"
    assert not [t for t in dues(sid, RUNS.runs(sid)) if last < t <= resumed_at]

    # Update the input: the next runs get it.
    schedule.update(ScheduleUpdateOptions(orchestration_input={"v": 2}))
    assert schedule.describe().orchestration_input == {"v": 2}
    assert RUNS.wait_for(sid, lambda r: r[-1][1] == {"v": 2}, WAIT), "the new input never arrived"

    # Update the interval: two later runs are 2 s apart.
    schedule.update(ScheduleUpdateOptions(interval=2 * SECOND))
    assert schedule.describe().interval == 2 * SECOND
    changed_at = _now()
    assert RUNS.wait_for(sid, lambda r: len([t for t in dues(sid, r) if t > changed_at]) >= 2, WAIT)
    later = [t for t in dues(sid, RUNS.runs(sid)) if t > changed_at]
    assert later[1] - later[0] == 2 * SECOND

    # Delete: gone from describe, get and list, and no run falls due afterwards.
    schedule.delete()
    deleted_at = _now()
    with pytest.raises(ScheduleNotFoundError):
        schedule.describe()
    assert schedules.get_schedule(sid) is None
    assert [d.schedule_id for d in schedules.list_schedules(ScheduleQuery(schedule_id_prefix=sid))] == []
    assert not RUNS.wait_for(sid, lambda r: max(dues(sid, r)) > deleted_at, QUIET), "a deleted schedule ran"
    all_runs = RUNS.runs(sid)
    assert len({iid for iid, _ in all_runs}) == len(all_runs), "a run was started twice"


def test_list_by_prefix_status_creation_time_and_page_size(schedules: ScheduledTaskClient) -> None:
    before = _now()
    for sid in ("list-a-1", "list-a-2", "list-b-1"):
        schedules.create_schedule(ScheduleCreationOptions(sid, "scheduled_tick", HOUR))
    after = _now()
    schedules.get_schedule_client("list-a-2").pause()

    def ids(query: ScheduleQuery | None = None) -> list[str]:
        return sorted(d.schedule_id for d in schedules.list_schedules(query))

    assert ids() == ["list-a-1", "list-a-2", "list-b-1"]
    assert ids(ScheduleQuery(schedule_id_prefix="list-a-")) == ["list-a-1", "list-a-2"]
    assert ids(ScheduleQuery(schedule_id_prefix="list-", status=ScheduleStatus.PAUSED)) == ["list-a-2"]
    assert ids(ScheduleQuery(status=ScheduleStatus.ACTIVE)) == ["list-a-1", "list-b-1"]
    assert ids(ScheduleQuery(page_size=1)) == ["list-a-1", "list-a-2", "list-b-1"]
    window = ScheduleQuery(created_from=before - SECOND, created_to=after + SECOND)
    assert ids(window) == ["list-a-1", "list-a-2", "list-b-1"]
    assert ids(ScheduleQuery(created_from=after + SECOND)) == []
    assert ids(ScheduleQuery(created_to=before - SECOND)) == []
    assert ids(ScheduleQuery(schedule_id_prefix="nothing-")) == []

    description = schedules.get_schedule("list-b-1")
    assert description is not None and description.interval == HOUR
    assert description.next_run_at is None or description.next_run_at > _now() + timedelta(minutes=50)
    assert schedules.get_schedule("list-c-1") is None


def test_future_start_runs_at_start_at_and_end_at_deletes_the_schedule(schedules: ScheduledTaskClient) -> None:
    starts_at = (_now() + 1.5 * SECOND).replace(microsecond=0) + SECOND
    schedules.create_schedule(ScheduleCreationOptions("window", "scheduled_tick", SECOND, "w",
                                                      start_at=starts_at, end_at=starts_at + 1.5 * SECOND))
    runs = RUNS.wait_for_count("window", 2, WAIT)
    assert dues("window", runs)[:2] == [starts_at, starts_at + SECOND]
    # After end_at the next wake-up deletes the schedule; nothing ran past end_at.
    eventually(lambda: schedules.get_schedule("window") is None, WAIT, "the schedule to be deleted after end_at")
    assert all(t <= starts_at + 1.5 * SECOND for t in dues("window", RUNS.runs("window")))


def test_start_immediately_if_late_and_cron(schedules: ScheduledTaskClient) -> None:
    # A start time in the past: run at once instead of waiting for the next due time.
    eager = ScheduleCreationOptions("eager", "scheduled_tick", HOUR, start_at=_now() - timedelta(minutes=30),
                                    start_immediately_if_late=True)
    schedules.create_schedule(eager)
    assert len(RUNS.wait_for_count("eager", 1, WAIT)) == 1
    described = eventually(lambda: schedules.get_schedule("eager"), WAIT, "the schedule")
    assert described.next_run_at is not None and described.next_run_at - _now() > timedelta(minutes=29)

    # A cron schedule is due at its next matching minute (UTC).
    created = _now()
    schedule = schedules.create_schedule(ScheduleCreationOptions("cron", "scheduled_tick", cron="*/10 * * * *"))
    described = eventually(lambda: schedule.describe().next_run_at and schedule.describe(), WAIT, "next_run_at")
    due = described.next_run_at
    assert due is not None and due.minute % 10 == 0 and due.second == 0 and due.microsecond == 0
    assert timedelta(0) < due - created <= timedelta(minutes=10)
    assert described.cron == "*/10 * * * *" and described.interval is None

    # Switching it to an interval via update.
    schedule.update(ScheduleUpdateOptions(interval=HOUR))
    switched = schedule.describe()
    assert switched.cron is None and switched.interval == HOUR
    schedule.delete()


def test_bad_input_gets_clear_errors_and_changes_nothing(schedules: ScheduledTaskClient) -> None:
    unknown = schedules.get_schedule_client("nobody")
    with pytest.raises(ScheduleNotFoundError, match="'nobody'"):
        unknown.describe()
    for operation in (unknown.pause, unknown.resume, unknown.delete,
                      lambda: unknown.update(ScheduleUpdateOptions(interval=HOUR))):
        with pytest.raises(ScheduleNotFoundError, match="'nobody'"):
            operation()
    assert schedules.get_schedule("nobody") is None

    start = _now() + HOUR
    schedule = schedules.create_schedule(ScheduleCreationOptions("strict", "scheduled_tick", HOUR, start_at=start))
    with pytest.raises(ScheduleInvalidTransitionError) as info:
        schedule.resume()
    assert info.value.from_status is ScheduleStatus.ACTIVE and info.value.operation_name == "resume_schedule"
    schedule.pause()
    with pytest.raises(ScheduleInvalidTransitionError, match="from 'Paused' to 'Paused'"):
        schedule.pause()

    before = schedule.describe()
    with pytest.raises(ScheduleClientValidationError, match="end_at .* is before start_at"):
        schedule.update(ScheduleUpdateOptions(end_at=start - SECOND))
    assert schedule.describe() == before

    # Option validation happens before anything is sent.
    with pytest.raises(ScheduleClientValidationError, match="interval must be positive"):
        ScheduleUpdateOptions(interval=-SECOND)
    with pytest.raises(ScheduleClientValidationError, match="in the minute field"):
        ScheduleCreationOptions("bad-cron", "scheduled_tick", cron="75 * * * *")
    with pytest.raises(ScheduleClientValidationError, match="is before start_at"):
        ScheduleCreationOptions("bad-window", "scheduled_tick", HOUR, start_at=start, end_at=start - HOUR)
    with pytest.raises(ScheduleClientValidationError, match="not 'strict'"):
        schedule.create(ScheduleCreationOptions("other", "scheduled_tick", HOUR))
    with pytest.raises(ScheduleClientValidationError, match="must not contain '@'"):
        schedules.get_schedule_client("a@b")
    assert schedule.describe() == before
    assert [d.schedule_id for d in schedules.list_schedules(ScheduleQuery(schedule_id_prefix="bad-"))] == []
    assert schedules.get_schedule("other") is None


def test_without_configure_scheduled_tasks_operations_fail_clearly(sidecar) -> None:
    require_entity_support(sidecar.address)
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    worker.add_orchestrator(scheduled_tick)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as client:
            scheduled = ScheduledTaskClient(client, operation_timeout=30)
            with pytest.raises(RuntimeError, match="Failed to 'create_schedule' schedule 'unserved'") as info:
                scheduled.create_schedule(ScheduleCreationOptions("unserved", "scheduled_tick", HOUR))
            assert "execute_schedule_operation_orchestrator" in str(info.value)
    finally:
        worker.stop()


def test_async_clients(sidecar, schedules: ScheduledTaskClient) -> None:
    async def scenario() -> None:
        async with AsyncTaskHubGrpcClient(host_address=sidecar.address) as client:
            scheduled = AsyncScheduledTaskClient(client, operation_timeout=30)
            schedule = await scheduled.create_schedule(
                ScheduleCreationOptions("async-1", "scheduled_tick", HOUR, "a", start_immediately_if_late=True)
            )
            assert schedule.schedule_id == "async-1"
            assert await asyncio.to_thread(RUNS.wait_for_count, "async-1", 1, WAIT)
            assert (await schedule.describe()).orchestration_input == "a"
            await schedule.pause()
            with pytest.raises(ScheduleInvalidTransitionError):
                await schedule.pause()
            listed = await scheduled.list_schedules(ScheduleQuery(schedule_id_prefix="async-",
                                                                  status=ScheduleStatus.PAUSED))
            assert [d.schedule_id for d in listed] == ["async-1"]
            await schedule.resume()
            await schedule.update(ScheduleUpdateOptions(orchestration_input="b"))
            assert (await scheduled.get_schedule("async-1")).orchestration_input == "b"  # type: ignore[union-attr]
            await schedule.delete()
            assert await scheduled.get_schedule("async-1") is None
            with pytest.raises(ScheduleNotFoundError):
                await schedule.describe()
            with pytest.raises(ScheduleNotFoundError):
                await scheduled.get_schedule_client("async-none").pause()

    asyncio.run(scenario())
