"""Reconnect backoff of the worker's stream."""

from __future__ import annotations

import random

from durabletask.internal.worker_stream import backoff_delay


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 15.0), (60, 15.0)]:
        delays = [backoff_delay(attempt, 0.5, 15.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant
