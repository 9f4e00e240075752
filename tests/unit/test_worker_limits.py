"""Admission control: concurrency caps and per-instance ordering."""

from __future__ import annotations

import pytest

from durabletask.internal.worker_limits import KeyedSequencer, Pending, WorkLimiter


def recorder(log: list[str], name: str) -> Pending:
    return Pending(start=lambda: log.append(f"start {name}"), abandon=lambda: log.append(f"abandon {name}"))


def test_limiter_caps_running_jobs_and_starts_waiting_ones_in_order() -> None:
    log: list[str] = []
    limiter = WorkLimiter(2)
    for name in "abcd":
        limiter.submit(recorder(log, name))
    assert log == ["start a", "start b"]
    assert (limiter.running, limiter.waiting) == (2, 2)
    limiter.release()
    assert log[-1] == "start c"
    limiter.release()
    assert log[-1] == "start d"
    assert (limiter.running, limiter.waiting) == (2, 0)
    limiter.release()
    limiter.release()
    assert limiter.running == 0
    limiter.release()  # an extra release never goes negative
    assert limiter.running == 0


def test_limiter_drain_returns_only_waiting_jobs() -> None:
    log: list[str] = []
    limiter = WorkLimiter(1)
    for name in "abc":
        limiter.submit(recorder(log, name))
    drained = limiter.drain()
    for job in drained:
        job.abandon()
    assert log == ["start a", "abandon b", "abandon c"]
    limiter.release()
    assert limiter.running == 0 and log == ["start a", "abandon b", "abandon c"]


def test_limiter_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        WorkLimiter(0)


def test_sequencer_serializes_one_key_and_not_others() -> None:
    log: list[str] = []
    seq = KeyedSequencer()
    seq.submit("i1", recorder(log, "i1-a"))
    seq.submit("i1", recorder(log, "i1-b"))
    seq.submit("i2", recorder(log, "i2-a"))
    assert log == ["start i1-a", "start i2-a"]
    seq.finish("i1")
    assert log[-1] == "start i1-b"
    seq.finish("i1")
    assert not seq.is_active("i1")
    seq.finish("i2")
    assert not seq.is_active("i2")
    seq.submit("i1", recorder(log, "i1-c"))
    assert log[-1] == "start i1-c"


def test_sequencer_drain() -> None:
    log: list[str] = []
    seq = KeyedSequencer()
    seq.submit("k", recorder(log, "a"))
    seq.submit("k", recorder(log, "b"))
    for job in seq.drain():
        job.abandon()
    seq.finish("k")
    assert log == ["start a", "abandon b"]
    assert not seq.is_active("k")
