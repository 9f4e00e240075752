"""A small parser and evaluator for standard 5-field cron expressions, in UTC.

Fields, in order: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
JAN-DEC) and day of week (0-7 or SUN-SAT; 0 and 7 are both Sunday). Each field is
``*``, a value, a range ``a-b``, any of these with a step (``*/15``, ``10-50/10``,
``5/20`` meaning ``5-59/20``), or a comma-separated list of them. The shorthands
``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``)
and ``@hourly`` are accepted too.

As in classic cron, when both the day-of-month and the day-of-week fields are
restricted (neither starts with ``*``) a day matches if *either* matches;
otherwise both must. Seconds are not supported: every match is on a whole minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["CronExpression", "CronExpressionError", "FIELD_NAMES"]

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")

_BOUNDS = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
_MONTH_NAMES = {
    name: number
    for number, name in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Longest gap between matches of a feasible expression: Feb 29 can be 8 years away.
_SEARCH_YEARS = 9
_LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class CronExpressionError(ValueError):
    """A cron expression could not be parsed; ``field`` names the offending field (or is None)."""

    def __init__(self, expression: str, problem: str, field: str | None = None) -> None:
        self.expression = expression
        self.field = field
        self.problem = problem
        where = f" in the {field} field" if field else ""
        super().__init__(f"invalid cron expression {expression!r}{where}: {problem}")


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; ``next_after`` gives the next matching minute (UTC)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> CronExpression:
        """Parse ``expression``; raises CronExpressionError naming the bad field."""
        if not isinstance(expression, str):
            raise CronExpressionError(repr(expression), f"expected a string, got {type(expression).__name__}")
        text = " ".join(expression.split())
        if not text:
            raise CronExpressionError(expression, "it is empty")
        if text.startswith("@"):
            expanded = _SHORTHANDS.get(text.lower())
            if expanded is None:
                known = ", ".join(sorted(_SHORTHANDS))
                raise CronExpressionError(expression, f"unknown shorthand {text!r} (known: {known})")
            text = expanded
        parts = text.split(" ")
        if len(parts) != len(FIELD_NAMES):
            raise CronExpressionError(
                expression,
                f"expected {len(FIELD_NAMES)} fields ({' '.join(FIELD_NAMES)}), got {len(parts)}",
            )
        sets = [_parse_field(expression, name, part) for name, part in zip(FIELD_NAMES, parts, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[4])  # 7 is Sunday too
        parsed = cls(
            expression=expression,
            minutes=sets[0],
            hours=sets[1],
            days_of_month=sets[2],
            months=sets[3],
            days_of_week=weekdays,
            day_of_month_restricted=not parts[2].startswith("*"),
            day_of_week_restricted=not parts[4].startswith("*"),
        )
        parsed._check_feasible(parts[2], parts[3])
        return parsed

    def _check_feasible(self, day_text: str, month_text: str) -> None:
        if not self.day_of_month_restricted or self.day_of_week_restricted:
            return
        if any(day <= _LONGEST_MONTH[month] for month in self.months for day in self.days_of_month):
            return
        raise CronExpressionError(
            self.expression,
            f"day {day_text!r} never occurs in month {month_text!r}, so the expression never matches",
            "day-of-month",
        )

    def matches(self, moment: datetime) -> bool:
        """True if ``moment`` (naive means UTC) falls in a matching minute."""
        moment = _as_utc(moment)
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day_matches(moment)
        )

    def _day_matches(self, moment: datetime) -> bool:
        by_date = moment.day in self.days_of_month
        by_weekday = (moment.weekday() + 1) % 7 in self.days_of_week
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return by_date or by_weekday
        return by_date and by_weekday

    def next_after(self, moment: datetime) -> datetime:
        """The first matching whole minute strictly after ``moment`` (aware UTC)."""
        moment = _as_utc(moment)
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        last_year = candidate.year + _SEARCH_YEARS
        while candidate.year <= last_year:
            if candidate.month not in self.months:
                candidate = _first_of_next_month(candidate)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise CronExpressionError(self.expression, f"no match within {_SEARCH_YEARS} years after {moment.isoformat()}")

    def first_at_or_after(self, moment: datetime) -> datetime:
        """``moment`` itself if it is a matching whole minute, else the next match after it."""
        moment = _as_utc(moment)
        if moment.second == 0 and moment.microsecond == 0 and self.matches(moment):
            return moment
        return self.next_after(moment)

    def __str__(self) -> str:
        return self.expression


def _parse_field(expression: str, field: str, text: str) -> frozenset[int]:
    low, high = _BOUNDS[field]
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronExpressionError(expression, f"empty list item in {text!r}", field)
        values.update(_parse_item(expression, field, item, low, high))
    return frozenset(values)


def _parse_item(expression: str, field: str, item: str, low: int, high: int) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronExpressionError(expression, f"step {step_text!r} in {item!r} must be a positive whole number", field)
        step = int(step_text)
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, _, last = base.partition("-")
        start = _value(expression, field, first, low, high)
        end = _value(expression, field, last, low, high)
        if start > end:
            raise CronExpressionError(expression, f"range {base!r} runs backwards", field)
    else:
        start = _value(expression, field, base, low, high)
        end = high if slash else start
    return range(start, end + 1, step)


def _value(expression: str, field: str, text: str, low: int, high: int) -> int:
    names = _MONTH_NAMES if field == "month" else _DAY_NAMES if field == "day-of-week" else {}
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise CronExpressionError(expression, f"{text!r} is not a number" + (
            f" or a name ({', '.join(names)})" if names else ""), field)
    value = int(text)
    if not low <= value <= high:
        raise CronExpressionError(expression, f"value {value} is out of range {low}-{high}", field)
    return value


def _first_of_next_month(moment: datetime) -> datetime:
    if moment.month == 12:
        return moment.replace(year=moment.year + 1, month=1, day=1, hour=0, minute=0)
    return moment.replace(month=moment.month + 1, day=1, hour=0, minute=0)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
