"""durabletask.task: task composition, retry policy arithmetic, failure details, names, logger."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

import pytest

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph


class AppError(Exception):
    pass


class SpecificAppError(AppError):
    pass


# ------------------------------------------------------------ FailureDetails


def details_of(exc: Exception) -> task.FailureDetails:
    return task.TaskFailedError("failed", exc).details


def test_error_type_is_fully_qualified() -> None:
    assert details_of(ValueError("x")).error_type == "builtins.ValueError"
    assert details_of(SpecificAppError("x")).error_type == f"{__name__}.SpecificAppError"


def test_is_caused_by_type_matches_itself_and_bases_not_subclasses() -> None:
    d = details_of(SpecificAppError("boom"))
    assert d.is_caused_by(SpecificAppError)
    assert d.is_caused_by(AppError)
    assert d.is_caused_by(Exception)
    assert not d.is_caused_by(ValueError)
    assert not details_of(AppError("x")).is_caused_by(SpecificAppError)
    assert details_of(KeyError("k")).is_caused_by(LookupError)


def test_is_caused_by_name() -> None:
    d = details_of(KeyError("k"))
    assert d.is_caused_by("builtins.KeyError")
    assert d.is_caused_by("KeyError")
    assert d.is_caused_by("LookupError")
    assert not d.is_caused_by("ValueError")
    assert not d.is_caused_by("other.module.KeyError")


def test_is_caused_by_unloaded_type_compares_names() -> None:
    d = task.FailureDetails("m", "some.remote.module.RemoteError", None)
    assert d.is_caused_by("some.remote.module.RemoteError")
    assert d.is_caused_by("RemoteError")
    assert not d.is_caused_by("other.RemoteError")
    assert not d.is_caused_by(Exception)
    bare = task.FailureDetails("m", "SpecificAppError", None)
    assert bare.is_caused_by(AppError)


def test_is_caused_by_rejects_non_exception_types() -> None:
    with pytest.raises(TypeError):
        details_of(ValueError()).is_caused_by(int)  # type: ignore[arg-type]


def test_task_failed_error_from_pb_and_details() -> None:
    proto = pb.TaskFailureDetails(errorType="x.Y", errorMessage="msg")
    err = task.TaskFailedError("outer", proto)
    assert str(err) == "outer"
    assert err.details == task.FailureDetails("msg", "x.Y", None)
    again = task.TaskFailedError("outer", err.details)
    assert again.details == err.details


def test_failure_details_carry_the_cause() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        d = details_of(exc)
    assert d.message == "outer"
    assert d.stack_trace and "test_failure_details_carry_the_cause" in d.stack_trace
    assert d.inner_failure is not None and d.inner_failure.error_type == "builtins.KeyError"
    assert ph.failure_details_from_pb(ph.failure_details_to_pb(d)) == d


# -------------------------------------------------------------------- tasks


def test_completable_task_result_and_failure() -> None:
    t: task.CompletableTask[int] = task.CompletableTask()
    assert not t.is_complete
    with pytest.raises(ValueError):
        t.get_result()
    t.complete(5)
    assert t.is_complete and not t.is_failed and t.result == 5
    with pytest.raises(ValueError):
        t.complete(6)
    f: task.CompletableTask[int] = task.CompletableTask()
    f.fail("nope", ValueError("bad"))
    assert f.is_failed
    with pytest.raises(task.TaskFailedError) as info:
        f.get_result()
    assert info.value.details.is_caused_by(ValueError)
    assert f.get_exception() is info.value


def test_cancellable_task() -> None:
    calls: list[str] = []
    t: task.CancellableTask[int] = task.CancellableTask()
    t.set_cancel_handler(lambda: calls.append("cancelled"))
    assert t.cancel()
    assert t.is_cancelled and t.is_complete and not t.is_failed
    assert calls == ["cancelled"]
    with pytest.raises(task.TaskCancelledError):
        t.get_result()
    done: task.CancellableTask[int] = task.CancellableTask()
    done.complete(1)
    assert not done.cancel()
    assert done.get_result() == 1


def test_when_all_keeps_input_order_and_waits_for_every_child() -> None:
    a: task.CompletableTask[str] = task.CompletableTask()
    b: task.CompletableTask[str] = task.CompletableTask()
    c: task.CompletableTask[str] = task.CompletableTask()
    all_ = task.when_all([a, b, c])
    c.complete("c")
    a.complete("a")
    assert not all_.is_complete and all_.pending_tasks == 1 and all_.get_completed_tasks() == 2
    b.complete("b")
    assert all_.is_complete and all_.get_result() == ["a", "b", "c"]


def test_when_all_raises_first_failure_after_all_complete() -> None:
    a: task.CompletableTask[int] = task.CompletableTask()
    b: task.CompletableTask[int] = task.CompletableTask()
    c: task.CompletableTask[int] = task.CompletableTask()
    all_ = task.when_all([a, b, c])
    b.fail("b failed", ValueError("b"))
    assert not all_.is_complete and not all_.is_failed
    c.fail("c failed", KeyError("c"))
    a.complete(1)
    assert all_.is_complete and all_.is_failed
    with pytest.raises(task.TaskFailedError, match="b failed"):
        all_.get_result()


def test_when_all_edge_cases() -> None:
    assert task.when_all([]).get_result() == []
    done: task.CompletableTask[int] = task.CompletableTask()
    done.complete(1)
    pending: task.CompletableTask[int] = task.CompletableTask()
    dup = task.when_all([done, pending, pending])
    assert not dup.is_complete
    pending.complete(2)
    assert dup.get_result() == [1, 2, 2]


def test_when_all_with_cancelled_child_fails() -> None:
    a: task.CancellableTask[int] = task.CancellableTask()
    all_ = task.when_all([a])
    a.cancel()
    assert all_.is_failed
    assert all_.get_exception().details.is_caused_by(task.TaskCancelledError)


def test_when_any_result_is_the_winning_task() -> None:
    a: task.CompletableTask[int] = task.CompletableTask()
    b: task.CompletableTask[int] = task.CompletableTask()
    any_ = task.when_any([a, b])
    b.fail("b", ValueError())
    assert any_.is_complete and any_.get_result() is b
    a.complete(1)
    assert any_.get_result() is b


def test_when_any_with_completed_child_and_nesting() -> None:
    done: task.CompletableTask[int] = task.CompletableTask()
    done.complete(3)
    assert task.when_any([task.CompletableTask(), done]).get_result() is done
    a: task.CompletableTask[int] = task.CompletableTask()
    b: task.CompletableTask[int] = task.CompletableTask()
    inner = task.when_all([a, b])
    outer = task.when_any([inner, task.CompletableTask()])
    a.complete(1)
    assert not outer.is_complete
    b.complete(2)
    assert outer.get_result() is inner and inner.get_result() == [1, 2]


# ------------------------------------------------------------- retry policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_retry_interval": timedelta(seconds=-1), "max_number_of_attempts": 1},
        {"first_retry_interval": timedelta(seconds=1), "max_number_of_attempts": 0},
        {"first_retry_interval": timedelta(seconds=1), "max_number_of_attempts": 2, "backoff_coefficient": 0.5},
        {"first_retry_interval": timedelta(1), "max_number_of_attempts": 2, "max_retry_interval": timedelta(-1)},
        {"first_retry_interval": timedelta(1), "max_number_of_attempts": 2, "retry_timeout": timedelta(-1)},
    ],
)
def test_retry_policy_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        task.RetryPolicy(**kwargs)


def test_retry_policy_rejects_bad_non_retryable_errors() -> None:
    with pytest.raises(TypeError):
        task.RetryPolicy(first_retry_interval=timedelta(1), max_number_of_attempts=2, non_retryable_errors=[int])  # type: ignore[list-item]


def test_retry_policy_properties_and_is_retryable() -> None:
    p = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=2),
        max_number_of_attempts=3,
        backoff_coefficient=2.0,
        max_retry_interval=timedelta(seconds=5),
        retry_timeout=timedelta(minutes=1),
        non_retryable_errors=[AppError, "builtins.KeyError"],
    )
    assert p.first_retry_interval == timedelta(seconds=2)
    assert p.max_number_of_attempts == 3
    assert p.backoff_coefficient == 2.0
    assert p.max_retry_interval == timedelta(seconds=5)
    assert p.retry_timeout == timedelta(minutes=1)
    assert not p.is_retryable(details_of(SpecificAppError()))
    assert not p.is_retryable(details_of(KeyError()))
    assert p.is_retryable(details_of(ValueError()))
    only_value = task.RetryPolicy(
        first_retry_interval=timedelta(1), max_number_of_attempts=2, handle=lambda d: d.is_caused_by(ValueError)
    )
    assert only_value.is_retryable(details_of(ValueError()))
    assert not only_value.is_retryable(details_of(KeyError()))


def test_retryable_task_delays() -> None:
    p = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=1),
        max_number_of_attempts=5,
        backoff_coefficient=3.0,
        max_retry_interval=timedelta(seconds=5),
        retry_timeout=timedelta(seconds=30),
    )
    start = datetime(2024, 1, 1)
    t: task.RetryableTask[int] = task.RetryableTask(p, pb.OrchestratorAction(id=1), start, False)
    delays = []
    while (d := t.compute_next_delay(start)) is not None:
        delays.append(d.total_seconds())
        t.increment_attempt_count()
    assert delays == [1, 3, 5, 5]
    fresh: task.RetryableTask[int] = task.RetryableTask(p, pb.OrchestratorAction(id=1), start, False)
    assert fresh.compute_next_delay(start + timedelta(seconds=29)) == timedelta(seconds=1)
    assert fresh.compute_next_delay(start + timedelta(seconds=30)) is None


# ------------------------------------------------------- names, contexts


def my_function(ctx: object, x: int) -> int:
    return x


def test_get_name() -> None:
    assert task.get_name(my_function) == "my_function"
    with pytest.raises(ValueError, match="lambda"):
        task.get_name(lambda ctx, x: x)
    with pytest.raises(ValueError):
        task.get_name(functools.partial(my_function, None))  # type: ignore[arg-type]


def test_get_entity_name() -> None:
    class Counter:
        pass

    assert task.get_entity_name(Counter) == "Counter"
    assert task.get_entity_name(my_function) == "my_function"

    def named(ctx: object, x: int) -> None:
        pass

    named.__durable_entity_name__ = "custom"  # type: ignore[attr-defined]
    assert task.get_entity_name(named) == "custom"


def test_activity_context() -> None:
    ctx = task.ActivityContext("orch", 7, tags={"k": "v"}, attempt=2)
    assert (ctx.orchestration_id, ctx.task_id, ctx.tags, ctx.attempt) == ("orch", 7, {"k": "v"}, 2)
    plain = task.ActivityContext("orch", 1)
    assert plain.tags == {} and plain.attempt is None


def test_replay_safe_logger(caplog: pytest.LogCaptureFixture) -> None:
    replaying = [True]
    logger = logging.getLogger("test-replay-safe")
    safe = task.ReplaySafeLogger(logger, lambda: replaying[0])
    with caplog.at_level(logging.INFO, logger="test-replay-safe"):
        safe.info("during replay")
        assert not safe.isEnabledFor(logging.INFO)
        replaying[0] = False
        safe.info("live")
        assert safe.isEnabledFor(logging.INFO)
    assert [r.getMessage() for r in caplog.records] == ["live"]
