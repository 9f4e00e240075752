"""Orchestrators and activities the compatibility scenarios run, written against the official SDK."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.worker import TaskHubGrpcWorker

Ctx = task.OrchestrationContext
Gen = Generator[task.Task[Any], Any, Any]

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()
_broken: set[str] = set()


def hello(ctx: task.ActivityContext, name: str) -> str:
    """Greets ``name``."""
    return f"Hello, {name}!"


def square(ctx: task.ActivityContext, n: int) -> int:
    """Squares ``n``."""
    return n * n


def flaky(ctx: task.ActivityContext, key: str) -> int:
    """Fails on its first two attempts for ``key``; returns the attempt number that succeeded."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt < 3:
        raise RuntimeError(f"transient failure {attempt}")
    return attempt


def attempts_of(key: str) -> int:
    """How many times ``flaky`` or ``always_fails`` ran for ``key`` (``switchable``: ``switch:<key>``,
    ``counted``: ``counted:<key>``)."""
    with _attempts_lock:
        return _attempts.get(key, 0)


def always_fails(ctx: task.ActivityContext, key: str) -> None:
    """Counts the attempt and always raises ``ValueError``."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
    raise ValueError(f"boom {key}")


def set_broken(key: str, broken: bool) -> None:
    """Makes ``switchable`` fail (``broken``) or succeed for ``key``."""
    with _attempts_lock:
        if broken:
            _broken.add(key)
        else:
            _broken.discard(key)


def switchable(ctx: task.ActivityContext, key: str) -> str:
    """Counts its runs under ``switch:<key>``; raises while ``key`` is broken."""
    with _attempts_lock:
        _attempts[f"switch:{key}"] = _attempts.get(f"switch:{key}", 0) + 1
        broken = key in _broken
    if broken:
        raise ValueError(f"{key} is broken")
    return f"repaired {key}"


def counted(ctx: task.ActivityContext, key: str) -> str:
    """Counts its runs under ``counted:<key>``; always succeeds."""
    with _attempts_lock:
        _attempts[f"counted:{key}"] = _attempts.get(f"counted:{key}", 0) + 1
    return f"good {key}"


def chain(ctx: Ctx, names: list[str]) -> Gen:
    """Activity chain: greets each name in turn."""
    results = []
    for name in names:
        results.append((yield ctx.call_activity(hello, input=name)))
    return results


def fan_out(ctx: Ctx, n: int) -> Gen:
    """Fan-out/fan-in: squares 1..n in parallel and sums them."""
    squares = yield task.when_all([ctx.call_activity(square, input=i) for i in range(1, n + 1)])
    return sum(squares)


def timer_wait(ctx: Ctx, seconds: float) -> Gen:
    """Sleeps on a durable timer; returns the orchestration-time elapsed."""
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


def two_events(ctx: Ctx, _: Any) -> Gen:
    """Waits for ``first`` then ``second``; returns both payloads."""
    first = yield ctx.wait_for_external_event("first")
    second = yield ctx.wait_for_external_event("second")
    return [first, second]


def event_or_timeout(ctx: Ctx, seconds: float) -> Gen:
    """Waits for ``approval`` or a timer, whichever comes first."""
    approval = ctx.wait_for_external_event("approval")
    timeout = ctx.create_timer(timedelta(seconds=seconds))
    winner = yield task.when_any([approval, timeout])
    if winner is approval:
        return f"approved by {approval.get_result()}"
    return "timed out"


def wait_named(ctx: Ctx, name: str) -> Gen:
    """Waits for the event called ``name`` and returns its payload."""
    return (yield ctx.wait_for_external_event(name))


def sender(ctx: Ctx, target: str) -> str:
    """Sends ``ping`` to another instance."""
    ctx.send_event(target, "ping", data={"from": ctx.instance_id})
    return "sent"


def parent(ctx: Ctx, n: int) -> Gen:
    """Runs two sub-orchestrations, one with an explicit instance ID."""
    total = yield ctx.call_sub_orchestrator(fan_out, input=n)
    greetings = yield ctx.call_sub_orchestrator(chain, input=["Ada"], instance_id=f"{ctx.instance_id}-child")
    return {"total": total, "greetings": greetings}


def child_reports_parent(ctx: Ctx, _: Any) -> str | None:
    """Returns its parent's instance ID."""
    return ctx.parent_instance_id


def parent_of_reporter(ctx: Ctx, _: Any) -> Gen:
    """Returns what its child says its parent is."""
    return (yield ctx.call_sub_orchestrator(child_reports_parent))


def failing(ctx: Ctx, message: str) -> None:
    """Fails with ``message``."""
    raise ValueError(message)


def parent_of_failing(ctx: Ctx, message: str) -> Gen:
    """Catches its child's failure."""
    try:
        yield ctx.call_sub_orchestrator(failing, input=message)
    except task.TaskFailedError as err:
        return f"child failed: {err.details.message}"
    return "child succeeded"


def counter(ctx: Ctx, n: int) -> Any:
    """Continues as new until ``n`` reaches 5."""
    if n < 5:
        ctx.continue_as_new(n + 1)
        return None
    return n


def retry_activity(ctx: Ctx, key: str) -> Gen:
    """Calls ``flaky`` with a retry policy that outlasts its failures."""
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=5, backoff_coefficient=1.0
    )
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


def retry_exhausted(ctx: Ctx, key: str) -> Gen:
    """Calls ``always_fails`` with two attempts allowed, and does not catch the failure."""
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=2)
    return (yield ctx.call_activity(always_fails, input=key, retry_policy=policy))


def catch_activity_failure(ctx: Ctx, key: str) -> Gen:
    """Catches an activity's failure and reports its details."""
    try:
        yield ctx.call_activity(always_fails, input=key)
    except task.TaskFailedError as err:
        return {"message": err.details.message, "error_type": err.details.error_type}
    return None


def flaky_child(ctx: Ctx, key: str) -> Gen:
    """Fails whenever its (unretried) ``flaky`` activity fails."""
    return (yield ctx.call_activity(flaky, input=key))


def retry_sub_orchestration(ctx: Ctx, key: str) -> Gen:
    """Retries ``flaky_child`` until its activity succeeds."""
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=4)
    return (yield ctx.call_sub_orchestrator(flaky_child, input=key, retry_policy=policy))


def long_child(ctx: Ctx, _: Any) -> Gen:
    """Waits for an event that never comes."""
    return (yield ctx.wait_for_external_event("never"))


def long_parent(ctx: Ctx, _: Any) -> Gen:
    """Runs ``long_child`` as ``<id>-child`` and waits for it."""
    return (yield ctx.call_sub_orchestrator(long_child, instance_id=f"{ctx.instance_id}-child"))


def with_status(ctx: Ctx, _: Any) -> Gen:
    """Publishes a custom status, waits for ``go``, then publishes another."""
    ctx.set_custom_status({"stage": "waiting"})
    value = yield ctx.wait_for_external_event("go")
    ctx.set_custom_status("done")
    return value


def measure(ctx: task.ActivityContext, payload: str) -> int:
    """Returns the length of ``payload``."""
    return len(payload)


def repeat(ctx: task.ActivityContext, spec: dict[str, Any]) -> str:
    """Returns ``spec["char"]`` repeated ``spec["count"]`` times."""
    return str(spec["char"]) * int(spec["count"])


def sized(ctx: Ctx, payload: str) -> Gen:
    """Sends ``payload`` to an activity, returns it reversed with its measured length."""
    length = yield ctx.call_activity(measure, input=payload)
    return {"length": length, "reversed": payload[::-1]}


def big_round_trip(ctx: Ctx, payload: str) -> Gen:
    """Measures ``payload``, has an activity build a string as long, and returns both lengths and that string."""
    length = yield ctx.call_activity(measure, input=payload)
    built = yield ctx.call_activity(repeat, input={"char": "z", "count": length})
    return {"length": length, "built": built}


def rewindable(ctx: Ctx, key: str) -> Gen:
    """A good activity, then one that fails while ``key`` is broken."""
    first = yield ctx.call_activity(counted, input=key)
    second = yield ctx.call_activity(switchable, input=key)
    return [first, second]


def rewindable_parent(ctx: Ctx, key: str) -> Gen:
    """A good activity, then ``rewindable`` as the child ``<id>-child`` (failures not caught)."""
    first = yield ctx.call_activity(counted, input=f"{key}-parent")
    child = yield ctx.call_sub_orchestrator(rewindable, input=key, instance_id=f"{ctx.instance_id}-child")
    return {"parent": first, "child": child}


def echo(ctx: Ctx, value: Any) -> Any:
    """Returns its input (the orchestration schedules start)."""
    return value


ORCHESTRATORS: list[Callable[..., Any]] = [
    chain,
    fan_out,
    timer_wait,
    two_events,
    event_or_timeout,
    wait_named,
    sender,
    parent,
    child_reports_parent,
    parent_of_reporter,
    failing,
    parent_of_failing,
    counter,
    retry_activity,
    retry_exhausted,
    flaky_child,
    retry_sub_orchestration,
    catch_activity_failure,
    long_child,
    long_parent,
    with_status,
    sized,
    big_round_trip,
    rewindable,
    rewindable_parent,
    echo,
]
ACTIVITIES: list[Callable[..., Any]] = [hello, square, flaky, always_fails, measure, repeat, switchable, counted]


def register(worker: TaskHubGrpcWorker) -> None:
    """Registers every orchestrator and activity above."""
    for orchestrator in ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
