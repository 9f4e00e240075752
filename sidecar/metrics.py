"""The sidecar's metrics: counters and histograms kept in memory, rendered in the Prometheus text format.

Counting is cheap: every update is a few integer additions under one small lock. The values
that are read from elsewhere at scrape time (open streams, backlog) are passed to
:meth:`SidecarMetrics.render` as gauges. Exposition format 0.0.4:
https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("orchestration", "activity", "entity")
# Why a work item went out again: its stream closed, its worker abandoned it, its completion failed.
REDISPATCH_REASONS = ("stream_closed", "abandoned", "completion_failed")

# Upper bounds of the latency buckets, in seconds (+Inf is implied).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class Histogram:
    """Cumulative-bucket histogram of durations in seconds (not thread-safe: the caller holds the lock)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le label, cumulative count) per bucket, ending with +Inf."""
        rows: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(_number, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


class SidecarMetrics:
    """What the dispatcher counts: work items dispatched and completed, lease expiries, re-dispatches, latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dispatched: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.completed: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.lease_expiries: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.redispatches: dict[tuple[str, str], int] = {(k, r): 0 for k in KINDS for r in REDISPATCH_REASONS}
        self.turn_seconds = Histogram()
        self.commit_seconds: dict[str, Histogram] = {kind: Histogram() for kind in KINDS}

    def count_dispatched(self, kind: str) -> None:
        """A work item of ``kind`` was put on a stream."""
        with self._lock:
            self.dispatched[kind] += 1

    def count_completed(self, kind: str, held_seconds: float) -> None:
        """A work item's completion committed, ``held_seconds`` after it was handed out."""
        with self._lock:
            self.completed[kind] += 1
            if kind == "orchestration":
                self.turn_seconds.observe(held_seconds)

    def count_lease_expiries(self, kind: str, count: int = 1) -> None:
        """Work items held past their maximum hold time: their leases ran out."""
        with self._lock:
            self.lease_expiries[kind] += count

    def count_redispatch(self, kind: str, reason: str) -> None:
        """A work item went back to the queue to be dispatched again (``reason``: see REDISPATCH_REASONS)."""
        with self._lock:
            self.redispatches[(kind, reason)] += 1

    def observe_commit(self, kind: str, seconds: float) -> None:
        """One store transaction that committed completions of ``kind`` took ``seconds``."""
        with self._lock:
            self.commit_seconds[kind].observe(seconds)

    def timed_commit(self, kind: str, commit: Callable[..., T]) -> Callable[..., T]:
        """``commit`` that records how long each call takes (failed ones too) as a store commit of ``kind``."""

        def timed(*args: object) -> T:
            started = time.perf_counter()
            try:
                return commit(*args)
            finally:
                self.observe_commit(kind, time.perf_counter() - started)

        return timed

    def render(self, open_streams: int, backlog: Mapping[str, int]) -> str:
        """Every metric in the Prometheus text format, with the gauges read at scrape time."""
        with self._lock:
            dispatched = dict(self.dispatched)
            completed = dict(self.completed)
            expiries = dict(self.lease_expiries)
            redispatches = dict(self.redispatches)
            turn = _copy(self.turn_seconds)
            commits = {kind: _copy(h) for kind, h in self.commit_seconds.items()}
        out: list[str] = []
        _family(out, "durabletask_work_items_dispatched_total", "counter",
                "Work items sent to workers, by kind.", (({"kind": k}, v) for k, v in dispatched.items()))
        _family(out, "durabletask_work_items_completed_total", "counter",
                "Work item completions committed, by kind.", (({"kind": k}, v) for k, v in completed.items()))
        _family(out, "durabletask_backlog", "gauge",
                "Work waiting to be dispatched, by kind (instances with visible events, activity tasks, entities "
                "with visible messages).", (({"kind": k}, backlog.get(k, 0)) for k in KINDS))
        _family(out, "durabletask_open_streams", "gauge", "Open GetWorkItems streams.", [({}, open_streams)])
        _family(out, "durabletask_lease_expiries_total", "counter",
                "Work items held past their maximum hold time, whose leases ran out.",
                (({"kind": k}, v) for k, v in expiries.items()))
        _family(out, "durabletask_redispatches_total", "counter",
                "Work items put back in the queue to be dispatched again, by kind and reason.",
                (({"kind": k, "reason": r}, v) for (k, r), v in redispatches.items()))
        _histogram(out, "durabletask_turn_duration_seconds",
                   "Orchestration turns: from hand-out to the committed completion.", [({}, turn)])
        _histogram(out, "durabletask_store_commit_duration_seconds",
                   "Store transactions committing completions, by kind.",
                   [({"kind": k}, h) for k, h in commits.items()])
        return "".join(out)


def _copy(histogram: Histogram) -> Histogram:
    copy = Histogram(histogram.bounds)
    copy.counts = list(histogram.counts)
    copy.total = histogram.total
    copy.count = histogram.count
    return copy


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _family(
    out: list[str], name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        out.append(f"{name}{_labels(labels)} {_number(value)}\n")


def _histogram(out: list[str], name: str, help_text: str, series: list[tuple[dict[str, str], Histogram]]) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
    for labels, histogram in series:
        for bound, count in histogram.cumulative():
            out.append(f"{name}_bucket{_labels({**labels, 'le': bound})} {count}\n")
        out.append(f"{name}_sum{_labels(labels)} {_number(histogram.total)}\n")
        out.append(f"{name}_count{_labels(labels)} {histogram.count}\n")
