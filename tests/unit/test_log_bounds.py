"""The sidecar's log formatter keeps every record bounded, tracebacks quoting huge client text included."""

from __future__ import annotations

import logging
import sys

from sidecar.quoting import LOG_LINE_LIMIT, LOG_LINES_LIMIT, BoundedFormatter


def record_of(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    return logging.LogRecord("durabletask-sidecar", logging.ERROR, __file__, 1, message, None, exc_info)


def raised(text: str) -> BaseException:
    try:
        raise ValueError(text)
    except ValueError:
        return sys.exc_info()[1]  # type: ignore[return-value]


def test_short_records_are_left_as_they_are() -> None:
    formatter = BoundedFormatter("%(levelname)s %(message)s")
    assert formatter.format(record_of("turn failed")) == "ERROR turn failed"


def test_a_traceback_quoting_a_huge_value_is_cut_line_by_line() -> None:
    huge = "x" * 1_000_000
    text = BoundedFormatter("%(message)s").format(record_of("StartInstance raised", raised(f"bad name {huge}")))
    lines = text.split("\n")
    assert lines[0] == "StartInstance raised"
    assert lines[1].startswith("Traceback")
    assert max(len(line) for line in lines) <= LOG_LINE_LIMIT + 40
    assert lines[-1].startswith("ValueError: bad name xxx") and lines[-1].endswith("(1,000,021 characters)")
    assert len(text) < 20_000


def test_a_record_of_very_many_lines_keeps_its_first_and_last_lines() -> None:
    many = "\n".join(f"line {i}" for i in range(10_000))
    lines = BoundedFormatter("%(message)s").format(record_of(many)).split("\n")
    assert len(lines) == LOG_LINES_LIMIT + 1
    assert lines[0] == "line 0" and lines[-1] == "line 9999"
    assert lines[LOG_LINES_LIMIT // 2] == f"... ({10_000 - LOG_LINES_LIMIT:,} lines left out)"
