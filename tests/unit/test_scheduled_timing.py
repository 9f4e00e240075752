"""Due times and wake-up decisions of schedules, with synthetic times (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from durabletask.scheduled.models import ScheduleConfiguration, ScheduleCreationOptions, ScheduleState
from durabletask.scheduled.schedule_status import ScheduleStatus
from durabletask.scheduled.timing import next_due_time, plan_wake_up, run_instance_id

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SEC = timedelta(seconds=1)
MIN = timedelta(minutes=1)


def config(**kwargs: object) -> ScheduleConfiguration:
    kwargs.setdefault("interval", 10 * SEC)
    return ScheduleConfiguration.from_create_options(ScheduleCreationOptions("s", "orch", **kwargs))  # type: ignore[arg-type]


def state(cfg: ScheduleConfiguration, created: datetime = T0, last: datetime | None = None,
          next_run: datetime | None = None) -> ScheduleState:
    st = ScheduleState()
    st.status = ScheduleStatus.ACTIVE
    st.schedule_configuration = cfg
    st.schedule_created_at = created
    st.last_run_at = last
    st.next_run_at = next_run
    return st


# --- next_due_time -------------------------------------------------------------------------------


def test_interval_grid_starts_at_creation_without_start_at() -> None:
    cfg = config()
    assert next_due_time(cfg, created_at=T0, last_run_at=None, now=T0 + SEC) == T0 + 10 * SEC
    assert next_due_time(cfg, created_at=T0, last_run_at=None, now=T0 + 10 * SEC) == T0 + 20 * SEC
    assert next_due_time(cfg, created_at=T0, last_run_at=T0, now=T0 + 95 * SEC) == T0 + 100 * SEC


def test_future_start_at_is_the_first_due_time() -> None:
    cfg = config(start_at=T0 + MIN)
    assert next_due_time(cfg, created_at=T0, last_run_at=None, now=T0) == T0 + MIN


def test_past_start_at_waits_for_the_next_grid_point_unless_start_immediately_if_late() -> None:
    late = config(start_at=T0 - 25 * SEC)
    assert next_due_time(late, created_at=T0, last_run_at=None, now=T0) == T0 + 5 * SEC
    eager = config(start_at=T0 - 25 * SEC, start_immediately_if_late=True)
    assert next_due_time(eager, created_at=T0, last_run_at=None, now=T0) == T0
    # Only before the first run.
    assert next_due_time(eager, created_at=T0, last_run_at=T0, now=T0 + SEC) == T0 + 5 * SEC


def test_cron_due_times() -> None:
    cfg = config(interval=None, cron="*/5 * * * *")
    assert next_due_time(cfg, created_at=T0, last_run_at=None, now=T0 + 30 * SEC) == T0 + 5 * MIN
    later = config(interval=None, cron="*/5 * * * *", start_at=T0 + 7 * MIN)
    assert next_due_time(later, created_at=T0, last_run_at=None, now=T0) == T0 + 10 * MIN
    on_point = config(interval=None, cron="*/5 * * * *", start_at=T0 + 10 * MIN)
    assert next_due_time(on_point, created_at=T0, last_run_at=None, now=T0) == T0 + 10 * MIN


# --- plan_wake_up --------------------------------------------------------------------------------


def test_first_wake_up_after_creation_only_arms_the_timer() -> None:
    plan = plan_wake_up(state(config()), T0 + SEC / 100)
    assert plan.run_due_at is None and plan.next_run_at == T0 + 10 * SEC and not plan.finished


def test_wake_up_at_the_due_time_runs_and_arms_the_next() -> None:
    plan = plan_wake_up(state(config(), next_run=T0 + 10 * SEC), T0 + 10 * SEC + SEC / 50)
    assert plan.run_due_at == T0 + 10 * SEC and plan.next_run_at == T0 + 20 * SEC


def test_early_wake_up_waits_for_the_stored_due_time() -> None:
    plan = plan_wake_up(state(config(), next_run=T0 + 10 * SEC), T0 + 9 * SEC)
    assert plan.run_due_at is None and plan.next_run_at == T0 + 10 * SEC


def test_late_wake_up_runs_once_for_the_earliest_missed_time_and_skips_the_rest() -> None:
    # Down from 12:00:05 to 12:01:03: due times 12:00:10 ... 12:01:00 were missed.
    plan = plan_wake_up(state(config(), last=T0, next_run=T0 + 10 * SEC), T0 + 63 * SEC)
    assert plan.run_due_at == T0 + 10 * SEC
    assert plan.next_run_at == T0 + 70 * SEC


def test_repeated_wake_up_never_starts_a_run_twice() -> None:
    st = state(config(), last=T0 + 10 * SEC, next_run=T0 + 10 * SEC)
    plan = plan_wake_up(st, T0 + 11 * SEC)
    assert plan.run_due_at is None and plan.next_run_at == T0 + 20 * SEC


def test_start_immediately_if_late_runs_now_then_follows_the_grid() -> None:
    st = state(config(start_at=T0 - 25 * SEC, start_immediately_if_late=True))
    plan = plan_wake_up(st, T0)
    assert plan.run_due_at == T0 and plan.next_run_at == T0 + 5 * SEC


def test_end_at_stops_runs_and_finishes_the_schedule() -> None:
    cfg = config(end_at=T0 + 15 * SEC)
    assert plan_wake_up(state(cfg, next_run=T0 + 10 * SEC), T0 + 10 * SEC).run_due_at == T0 + 10 * SEC
    finished = plan_wake_up(state(cfg, last=T0 + 10 * SEC, next_run=T0 + 20 * SEC), T0 + 20 * SEC)
    assert finished.finished and finished.run_due_at is None and finished.next_run_at is None


def test_a_due_time_after_end_at_is_not_run() -> None:
    cfg = config(end_at=T0 + 15 * SEC)
    plan = plan_wake_up(state(cfg, next_run=T0 + 20 * SEC), T0 + 15 * SEC)
    assert plan.run_due_at is None and plan.next_run_at == T0 + 20 * SEC


def test_cron_wake_ups() -> None:
    cfg = config(interval=None, cron="0 * * * *")
    plan = plan_wake_up(state(cfg, next_run=T0 + 60 * MIN), T0 + 60 * MIN + SEC)
    assert plan.run_due_at == T0 + 60 * MIN and plan.next_run_at == T0 + 120 * MIN


def test_run_instance_ids_are_deterministic_per_due_time() -> None:
    cfg = config()
    assert run_instance_id(cfg, T0) == "s-2024-05-01T12:00:00+00:00"
    assert run_instance_id(cfg, T0) == run_instance_id(cfg, T0)
    assert run_instance_id(cfg, T0 + SEC) != run_instance_id(cfg, T0)
    assert run_instance_id(config(orchestration_instance_id="fixed"), T0) == "fixed"
