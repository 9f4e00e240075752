"""Recurring schedules, built on a durable entity and a small orchestration.

Call ``worker.configure_scheduled_tasks()`` on a worker, then manage schedules
with ``ScheduledTaskClient`` / ``ScheduleClient`` (or ``AsyncScheduledTaskClient``
/ ``AsyncScheduleClient``). A schedule starts an orchestration at every due time:
every ``interval`` from ``start_at``, or (beyond the official SDK) at the minutes a
5-field ``cron`` expression names, in UTC. Its state lives in the sidecar as
entity state, and its wake-ups are durable delayed signals, so it survives
restarts; ``durabletask.scheduled.timing`` documents what happens to due times
missed while nothing was running.
"""

from durabletask.scheduled.client import (
    AsyncScheduleClient,
    AsyncScheduledTaskClient,
    ScheduleClient,
    ScheduledTaskClient,
)
from durabletask.scheduled.exceptions import (
    ScheduleClientValidationError,
    ScheduleError,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
)
from durabletask.scheduled.models import (
    ScheduleCreationOptions,
    ScheduleDescription,
    ScheduleQuery,
    ScheduleUpdateOptions,
)
from durabletask.scheduled.schedule_status import ScheduleStatus

__all__ = [
    "ScheduledTaskClient",
    "AsyncScheduledTaskClient",
    "ScheduleClient",
    "AsyncScheduleClient",
    "ScheduleCreationOptions",
    "ScheduleUpdateOptions",
    "ScheduleDescription",
    "ScheduleQuery",
    "ScheduleStatus",
    "ScheduleError",
    "ScheduleNotFoundError",
    "ScheduleClientValidationError",
    "ScheduleInvalidTransitionError",
]

PACKAGE_NAME = "durabletask.scheduled"
