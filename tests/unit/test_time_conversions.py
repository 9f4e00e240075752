"""The sidecar's own datetime <-> timestamp/microsecond conversions agree with protobuf's and datetime's."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from sidecar.engine_events import from_timestamp, to_timestamp
from sidecar.ids import random_id
from sidecar.store.sql_rows import from_us, to_us

WHENS = [
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc),
    datetime(1900, 2, 28, 12, 0, 0, 1, tzinfo=timezone.utc),
    datetime(2026, 12, 3, 7, 12, 9, 123_456, tzinfo=timezone.utc),
    datetime(9000, 1, 1, tzinfo=timezone.utc),
    datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]


@pytest.mark.parametrize("when", WHENS)
def test_to_timestamp_matches_protobuf(when: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(when)
    assert to_timestamp(when) == expected
    assert from_timestamp(to_timestamp(when)) == when


def test_naive_datetime_is_read_as_utc() -> None:
    naive = datetime(2026, 12, 3, 7, 12, 9, 500)
    assert to_timestamp(naive) == to_timestamp(naive.replace(tzinfo=timezone.utc))


@pytest.mark.parametrize("when", WHENS)
def test_microseconds_round_trip(when: datetime) -> None:
    us = to_us(when)
    back = from_us(us)
    assert back == when and back.tzinfo == timezone.utc
    assert us == round((when - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))


def test_random_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {random_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
