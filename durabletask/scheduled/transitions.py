"""Which status changes each schedule operation may make."""

from __future__ import annotations

from durabletask.scheduled.schedule_status import ScheduleStatus

CREATE_SCHEDULE = "create_schedule"
UPDATE_SCHEDULE = "update_schedule"
PAUSE_SCHEDULE = "pause_schedule"
RESUME_SCHEDULE = "resume_schedule"

_ALLOWED: dict[str, frozenset[tuple[ScheduleStatus, ScheduleStatus]]] = {
    # Creating again replaces the configuration and (re)activates the schedule.
    CREATE_SCHEDULE: frozenset({
        (ScheduleStatus.UNINITIALIZED, ScheduleStatus.ACTIVE),
        (ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE),
        (ScheduleStatus.PAUSED, ScheduleStatus.ACTIVE),
    }),
    # An update keeps the status it finds.
    UPDATE_SCHEDULE: frozenset({
        (ScheduleStatus.ACTIVE, ScheduleStatus.ACTIVE),
        (ScheduleStatus.PAUSED, ScheduleStatus.PAUSED),
    }),
    PAUSE_SCHEDULE: frozenset({(ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED)}),
    RESUME_SCHEDULE: frozenset({(ScheduleStatus.PAUSED, ScheduleStatus.ACTIVE)}),
}


def is_valid_transition(operation_name: str, from_status: ScheduleStatus, target_status: ScheduleStatus) -> bool:
    """True if ``operation_name`` may take a schedule from ``from_status`` to ``target_status``."""
    allowed = _ALLOWED.get(operation_name)
    return allowed is not None and (from_status, target_status) in allowed
