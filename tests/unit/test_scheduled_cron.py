"""The cron parser and next-run computation of durabletask.scheduled (pure, synthetic UTC times)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durabletask.scheduled.cron import CronExpression, CronExpressionError


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


def test_star_matches_every_minute() -> None:
    cron = CronExpression.parse("* * * * *")
    assert cron.minutes == frozenset(range(60)) and cron.hours == frozenset(range(24))
    assert cron.days_of_week == frozenset(range(7))
    assert cron.next_after(utc(2024, 1, 1, 10, 0, 30)) == utc(2024, 1, 1, 10, 1)
    assert cron.next_after(utc(2024, 1, 1, 10, 0)) == utc(2024, 1, 1, 10, 1)


def test_lists_ranges_and_steps() -> None:
    cron = CronExpression.parse("0,15-17,*/20 1-5/2 1,15 */3 1-5")
    assert cron.minutes == frozenset({0, 15, 16, 17, 20, 40})
    assert cron.hours == frozenset({1, 3, 5})
    assert cron.days_of_month == frozenset({1, 15})
    assert cron.months == frozenset({1, 4, 7, 10})
    assert cron.days_of_week == frozenset({1, 2, 3, 4, 5})


def test_a_value_with_a_step_runs_to_the_end_of_the_range() -> None:
    assert CronExpression.parse("5/20 * * * *").minutes == frozenset({5, 25, 45})


def test_names_for_months_and_weekdays_and_seven_is_sunday() -> None:
    cron = CronExpression.parse("0 0 * jan-mar,DEC sun,Sat")
    assert cron.months == frozenset({1, 2, 3, 12})
    assert cron.days_of_week == frozenset({0, 6})
    assert CronExpression.parse("0 0 * * 7").days_of_week == frozenset({0})


@pytest.mark.parametrize(
    ("shorthand", "equivalent"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
     ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@ANNUALLY", "0 0 1 1 *")],
)
def test_shorthands(shorthand: str, equivalent: str) -> None:
    a, b = CronExpression.parse(shorthand), CronExpression.parse(equivalent)
    moment = utc(2024, 5, 17, 13, 42)
    assert a.next_after(moment) == b.next_after(moment)


def test_every_five_minutes() -> None:
    cron = CronExpression.parse("*/5 * * * *")
    assert cron.next_after(utc(2024, 3, 1, 12, 3, 59)) == utc(2024, 3, 1, 12, 5)
    assert cron.next_after(utc(2024, 3, 1, 12, 5)) == utc(2024, 3, 1, 12, 10)
    assert cron.next_after(utc(2024, 3, 1, 23, 58)) == utc(2024, 3, 2, 0, 0)


def test_rolls_over_days_months_and_years() -> None:
    cron = CronExpression.parse("30 2 1 * *")
    assert cron.next_after(utc(2024, 1, 31, 3, 0)) == utc(2024, 2, 1, 2, 30)
    assert cron.next_after(utc(2024, 12, 1, 2, 30)) == utc(2025, 1, 1, 2, 30)


def test_feb_29_is_found_years_ahead() -> None:
    assert CronExpression.parse("0 0 29 2 *").next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)


def test_day_31_skips_short_months() -> None:
    assert CronExpression.parse("0 12 31 * *").next_after(utc(2024, 4, 1)) == utc(2024, 5, 31, 12, 0)


def test_weekday_only() -> None:
    # 2024-06-07 is a Friday: next Monday 09:00 is the 10th.
    cron = CronExpression.parse("0 9 * * mon")
    assert cron.next_after(utc(2024, 6, 7, 9, 0)) == utc(2024, 6, 10, 9, 0)


def test_restricted_day_of_month_and_day_of_week_match_either() -> None:
    # Classic cron: the 13th of the month OR any Friday.
    cron = CronExpression.parse("0 0 13 * 5")
    assert cron.next_after(utc(2024, 9, 1)) == utc(2024, 9, 6)  # a Friday
    assert cron.matches(utc(2024, 9, 13)) and cron.matches(utc(2024, 9, 20))
    assert not cron.matches(utc(2024, 9, 14))
    # With a '*' day of week only the day of month counts.
    assert not CronExpression.parse("0 0 13 * *").matches(utc(2024, 9, 20))


def test_first_at_or_after_includes_an_exact_match() -> None:
    cron = CronExpression.parse("0 * * * *")
    assert cron.first_at_or_after(utc(2024, 1, 1, 5, 0)) == utc(2024, 1, 1, 5, 0)
    assert cron.first_at_or_after(utc(2024, 1, 1, 5, 0, 1)) == utc(2024, 1, 1, 6, 0)


def test_naive_and_other_zones_are_read_as_instants_in_utc() -> None:
    cron = CronExpression.parse("0 12 * * *")
    assert cron.next_after(datetime(2024, 1, 1, 11, 0)) == utc(2024, 1, 1, 12, 0)
    plus_two = timezone(timedelta(hours=2))
    # 13:30 at +02:00 is 11:30 UTC.
    assert cron.next_after(datetime(2024, 1, 1, 13, 30, tzinfo=plus_two)) == utc(2024, 1, 1, 12, 0)
    assert cron.next_after(utc(2024, 1, 1, 11, 0)).tzinfo == timezone.utc


def test_whitespace_is_normalised() -> None:
    assert CronExpression.parse("  */10   *  * * * ").minutes == frozenset({0, 10, 20, 30, 40, 50})


@pytest.mark.parametrize(
    ("expression", "field", "problem"),
    [
        ("61 * * * *", "minute", "out of range 0-59"),
        ("* 24 * * *", "hour", "out of range 0-23"),
        ("* * 0 * *", "day-of-month", "out of range 1-31"),
        ("* * * 13 *", "month", "out of range 1-12"),
        ("* * * * 8", "day-of-week", "out of range 0-7"),
        ("*/0 * * * *", "minute", "positive"),
        ("*/x * * * *", "minute", "positive"),
        ("5-1 * * * *", "minute", "backwards"),
        ("1,,2 * * * *", "minute", "empty list item"),
        ("* * * foo *", "month", "not a number or a name"),
        ("* abc * * *", "hour", "not a number"),
        ("* * 30 2 *", "day-of-month", "never occurs"),
        ("* * 31 4,6 *", "day-of-month", "never occurs"),
    ],
)
def test_invalid_fields_are_named(expression: str, field: str, problem: str) -> None:
    with pytest.raises(CronExpressionError) as info:
        CronExpression.parse(expression)
    assert info.value.field == field
    assert f"in the {field} field" in str(info.value) and problem in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [("", "empty"), ("* * * *", "expected 5 fields"), ("* * * * * *", "got 6"), ("@often", "unknown shorthand")],
)
def test_invalid_shapes(expression: str, problem: str) -> None:
    with pytest.raises(CronExpressionError, match=problem) as info:
        CronExpression.parse(expression)
    assert info.value.field is None


def test_non_string_is_rejected() -> None:
    with pytest.raises(CronExpressionError, match="expected a string"):
        CronExpression.parse(5)  # type: ignore[arg-type]


def test_feb_30_with_a_weekday_is_allowed_because_either_matches() -> None:
    # Day of month 30 never occurs in February, but Mondays do.
    cron = CronExpression.parse("0 0 30 2 mon")
    assert cron.next_after(utc(2024, 1, 1)) == utc(2024, 2, 5)
