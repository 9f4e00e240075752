"""The lifecycle status of a schedule."""

from __future__ import annotations

from enum import Enum


class ScheduleStatus(str, Enum):
    """Where a schedule is in its lifecycle."""

    UNINITIALIZED = "Uninitialized"
    """Never created, or deleted."""

    ACTIVE = "Active"
    """Running its orchestration at each due time."""

    PAUSED = "Paused"
    """Created but not running until resumed."""

    def to_dotnet_ordinal(self) -> int:
        """The number the .NET SDK stores for this status (Uninitialized 0, Active 1, Paused 2)."""
        return _ORDINALS[self]

    @classmethod
    def from_dotnet(cls, value: int | str | None) -> ScheduleStatus:
        """Read a stored status: its ordinal (number or digit string) or its name (any case).

        Anything unrecognised reads as UNINITIALIZED.
        """
        if isinstance(value, bool) or value is None:
            return cls.UNINITIALIZED
        if isinstance(value, int):
            return _BY_ORDINAL.get(value, cls.UNINITIALIZED)
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return _BY_ORDINAL.get(int(text), cls.UNINITIALIZED)
            for member in cls:
                if member.value.casefold() == text.casefold():
                    return member
        return cls.UNINITIALIZED


_ORDINALS: dict[ScheduleStatus, int] = {
    ScheduleStatus.UNINITIALIZED: 0,
    ScheduleStatus.ACTIVE: 1,
    ScheduleStatus.PAUSED: 2,
}
_BY_ORDINAL: dict[int, ScheduleStatus] = {number: status for status, number in _ORDINALS.items()}
