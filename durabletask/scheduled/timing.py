"""When a schedule runs: due times, and what one wake-up of the schedule entity does.

Pure functions of the configuration, the run bookkeeping and ``now``.

Due times of an interval schedule lie on the grid ``start + k * interval``, where
``start`` is ``start_at`` or, without one, the creation time; those of a cron
schedule are the expression's matching minutes (UTC) from ``start_at`` on.

Catch-up policy (runs that fell due while no sidecar or worker was up): when the
entity wakes up after one or more due times have passed, it starts exactly one
run, for the earliest missed due time, and then waits for the first due time
after now; the other missed due times are skipped. ``start_immediately_if_late``
only concerns a schedule that has never run: when its start (``start_at``, else
the creation time) has passed, it runs at once instead of waiting for the next
due time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from durabletask.scheduled.cron import CronExpression
from durabletask.scheduled.models import ScheduleConfiguration, ScheduleState


@functools.lru_cache(maxsize=256)
def _cron(expression: str) -> CronExpression:
    return CronExpression.parse(expression)


def next_due_time(
    config: ScheduleConfiguration,
    *,
    created_at: datetime | None,
    last_run_at: datetime | None,
    now: datetime,
) -> datetime:
    """The next time the schedule should run, seen at ``now`` (may be ``now`` itself only for a late first run)."""
    start = config.start_at or created_at or now
    if now < start:
        return start if config.cron is None else _cron(config.cron).first_at_or_after(start)
    if last_run_at is None and config.start_immediately_if_late:
        return now
    if config.cron is not None:
        return _cron(config.cron).next_after(now)
    interval = config.interval
    if interval is None:
        raise ValueError(f"schedule '{config.schedule_id}' has neither an interval nor a cron expression")
    return start + interval * ((now - start) // interval + 1)


def run_instance_id(config: ScheduleConfiguration, due: datetime) -> str:
    """The instance ID of the run due at ``due``: the configured one, else ``<schedule id>-<due time ISO>``."""
    return config.orchestration_instance_id or f"{config.schedule_id}-{due.isoformat()}"


@dataclass(frozen=True)
class WakeUp:
    """What one wake-up of an active schedule decided."""

    run_due_at: datetime | None
    """Start the run due at this time now (None: start nothing)."""
    next_run_at: datetime | None
    """When to wake up next (None when finished)."""
    finished: bool = False
    """The schedule is past its ``end_at``: it is deleted."""


def plan_wake_up(state: ScheduleState, now: datetime) -> WakeUp:
    """Decide what an active schedule does when woken at ``now``.

    A run is started only for a due time later than the last run's (so a repeated
    wake-up never starts a run twice) and not after ``end_at``.
    """
    config = state.schedule_configuration
    if config is None:
        raise ValueError("the schedule has no configuration")
    if config.end_at is not None and now > config.end_at:
        return WakeUp(run_due_at=None, next_run_at=None, finished=True)
    due = state.next_run_at or next_due_time(
        config, created_at=state.schedule_created_at, last_run_at=state.last_run_at, now=now
    )
    if due > now:
        return WakeUp(run_due_at=None, next_run_at=due)
    fresh = state.last_run_at is None or due > state.last_run_at
    in_window = config.end_at is None or due <= config.end_at
    run_due_at = due if fresh and in_window else None
    following = next_due_time(
        config, created_at=state.schedule_created_at, last_run_at=run_due_at or state.last_run_at or due, now=now
    )
    return WakeUp(run_due_at=run_due_at, next_run_at=following)
