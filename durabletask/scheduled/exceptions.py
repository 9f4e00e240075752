"""Errors raised by the schedule clients and the schedule entity.

Beyond the official SDK's plain ``Exception`` bases: validation errors are also
``ValueError`` (the official option classes raise ``ValueError``), and errors
about an unknown schedule or an invalid transition are also ``RuntimeError``
(the official client raises ``RuntimeError`` for every failed operation), so
code written for either behaviour keeps working.
"""

from __future__ import annotations


class ScheduleError(Exception):
    """Base class of every schedule error."""


class ScheduleNotFoundError(ScheduleError, RuntimeError):
    """No schedule exists with the given ID."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"schedule '{schedule_id}' does not exist")


class ScheduleClientValidationError(ScheduleError, ValueError):
    """A schedule ID or options object is invalid; the message names the problem."""

    def __init__(self, schedule_id: str, message: str) -> None:
        self.schedule_id = schedule_id
        self.reason = message
        where = f"schedule '{schedule_id}'" if schedule_id else "schedule options"
        super().__init__(f"invalid {where}: {message}")


class ScheduleInvalidTransitionError(ScheduleError, RuntimeError):
    """The operation is not allowed in the schedule's current status (e.g. pausing a paused schedule)."""

    def __init__(self, schedule_id: str, from_status: object, to_status: object, operation_name: str) -> None:
        self.schedule_id = schedule_id
        self.from_status = from_status
        self.to_status = to_status
        self.operation_name = operation_name
        super().__init__(
            f"schedule '{schedule_id}': operation '{operation_name}' is not allowed: "
            f"cannot go from '{_status_text(from_status)}' to '{_status_text(to_status)}'"
        )


def _status_text(status: object) -> str:
    value = getattr(status, "value", status)
    return str(value)
