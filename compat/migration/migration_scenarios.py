"""Orchestrations for the migration suite, one source run by both SDKs (both import it as ``durabletask``).

Every orchestrator reaches a durable pause on the first worker, then finishes on the other. Most
pause by setting a custom status with ``"paused": True`` and waiting for the ``resume`` event; the
``retry_span`` one pauses on a pending retry timer. Outputs hold no instance-specific values
(instance IDs are replaced by ``<id>``), so an instance that changed SDK half-way can be compared
with one that ran start to end on a single SDK.

Activities that must fail a given number of times count their attempts in files under the directory
named by ``MIGRATION_STATE_DIR``, one line per attempt naming the SDK that ran it (``MIGRATION_SDK``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from durabletask import task
from durabletask.entities import EntityContext, EntityInstanceId

Ctx = task.OrchestrationContext
Gen = Generator[task.Task[Any], Any, Any]

STATE_DIR_VARIABLE = "MIGRATION_STATE_DIR"
SDK_VARIABLE = "MIGRATION_SDK"
RESUME = "resume"
PAUSED = {"paused": True}
MAXIMUM_TIMER_INTERVAL = timedelta(seconds=1)
QUICK_RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=4)


def attempts_path(key: str, state_dir: str | None = None) -> Path:
    """The file counting the attempts of the flaky call ``key`` (in ``MIGRATION_STATE_DIR`` by default)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
    return Path(state_dir or os.environ[STATE_DIR_VARIABLE]) / f"{safe}.attempts"


# Activities ---------------------------------------------------------------------------------------


def append(ctx: task.ActivityContext, payload: dict[str, Any]) -> list[str]:
    """``payload["items"]`` with ``payload["tag"]`` added at the end."""
    return [*payload["items"], payload["tag"]]


def square(ctx: task.ActivityContext, value: int) -> int:
    """``value`` squared."""
    return value * value


def echo(ctx: task.ActivityContext, value: Any) -> Any:
    """``value`` unchanged (it lands in the history as recorded by the SDK that ran it)."""
    return value


def flaky(ctx: task.ActivityContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Fails its first ``spec["failures"]`` attempts for ``spec["key"]``; then returns the attempt number."""
    path = attempts_path(spec["key"])
    with path.open("a") as attempts:
        attempts.write(os.environ.get(SDK_VARIABLE, "?") + "\n")
    attempt = len(path.read_text().splitlines())
    if attempt <= spec["failures"]:
        raise RuntimeError(f"attempt {attempt} of {spec['key'].split('/')[-1]} fails")
    return {"attempt": attempt}


def fail_with(ctx: task.ActivityContext, message: str) -> None:
    """Always raises ``ValueError(message)``."""
    raise ValueError(message)


# Entities -----------------------------------------------------------------------------------------


def migration_counter(ctx: EntityContext, value: Any) -> Any:
    """An integer: ``add`` (returns the new value) and ``get``."""
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + int(value))
        return current + int(value)
    return current


# Orchestrators ------------------------------------------------------------------------------------


def _short(ctx: Ctx, text: str) -> str:
    """``text`` with the instance ID replaced by ``<id>``."""
    return text.replace(ctx.instance_id, "<id>")


def chain(ctx: Ctx, _: Any) -> Gen:
    """Two activities, the pause, two more, each adding to the list the previous one returned."""
    items: list[str] = []
    for tag in ("a", "b"):
        items = yield ctx.call_activity(append, input={"items": items, "tag": tag})
    ctx.set_custom_status(PAUSED)
    extra = yield ctx.wait_for_external_event(RESUME)
    for tag in ("c", extra):
        items = yield ctx.call_activity(append, input={"items": items, "tag": tag})
    return items


def fan_out(ctx: Ctx, width: int) -> Gen:
    """``width`` activities at once, the pause, then ``width`` more at once."""
    first = yield task.when_all([ctx.call_activity(square, input=i) for i in range(width)])
    ctx.set_custom_status(PAUSED)
    yield ctx.wait_for_external_event(RESUME)
    second = yield task.when_all([ctx.call_activity(square, input=i) for i in range(width, 2 * width)])
    return {"first": first, "second": second, "total": sum(first) + sum(second)}


def activity_retries(ctx: Ctx, _: Any) -> Gen:
    """Retried activities before and after the pause, and one that runs out of attempts, caught."""
    base = f"{ctx.instance_id}/activity"
    before = yield ctx.call_activity(flaky, input={"key": f"{base}/before", "failures": 2}, retry_policy=QUICK_RETRY)
    ctx.set_custom_status(PAUSED)
    yield ctx.wait_for_external_event(RESUME)
    after = yield ctx.call_activity(flaky, input={"key": f"{base}/after", "failures": 1}, retry_policy=QUICK_RETRY)
    exhausted = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=2)
    try:
        yield ctx.call_activity(flaky, input={"key": f"{base}/never", "failures": 9}, retry_policy=exhausted)
        gave_up = ""
    except task.TaskFailedError as err:
        gave_up = _short(ctx, str(err))
    marker = yield ctx.call_activity(echo, input="after retries")
    return {"before": before, "after": after, "gave_up": gave_up, "marker": marker}


def retry_span(ctx: Ctx, retry_seconds: float) -> Gen:
    """One failing attempt; its retry timer is pending when the workers are switched."""
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=retry_seconds), max_number_of_attempts=3)
    result = yield ctx.call_activity(flaky, input={"key": f"{ctx.instance_id}/span", "failures": 1}, retry_policy=policy)
    marker = yield ctx.call_activity(echo, input="after the retry")
    return {"result": result, "marker": marker}


def flaky_child(ctx: Ctx, spec: dict[str, Any]) -> Gen:
    """A sub-orchestration that fails while its activity fails (no retries of its own)."""
    result = yield ctx.call_activity(flaky, input=spec)
    return {"child": result}


def sub_orchestration_retries(ctx: Ctx, _: Any) -> Gen:
    """Retried sub-orchestrations before and after the pause."""
    base = f"{ctx.instance_id}/child"
    before = yield ctx.call_sub_orchestrator(
        flaky_child, input={"key": f"{base}/before", "failures": 2}, retry_policy=QUICK_RETRY
    )
    ctx.set_custom_status(PAUSED)
    yield ctx.wait_for_external_event(RESUME)
    after = yield ctx.call_sub_orchestrator(
        flaky_child, input={"key": f"{base}/after", "failures": 1}, retry_policy=QUICK_RETRY
    )
    return {"before": before, "after": after}


def timers(ctx: Ctx, _: Any) -> Gen:
    """A timer longer than the workers' maximum interval (so chunked), the pause, another one."""
    started = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=2.5))
    first_ok = ctx.current_utc_datetime - started >= timedelta(seconds=2.5)
    ctx.set_custom_status(PAUSED)
    yield ctx.wait_for_external_event(RESUME)
    resumed = ctx.current_utc_datetime
    yield ctx.create_timer(resumed + timedelta(seconds=1.5))
    second_ok = ctx.current_utc_datetime - resumed >= timedelta(seconds=1.5)
    return {"first_elapsed": first_ok, "second_elapsed": second_ok}


def when_any_timer(ctx: Ctx, _: Any) -> Gen:
    """The event races an hour-long (chunked) timer and wins; the timer is left behind."""
    ctx.set_custom_status(PAUSED)
    event = ctx.wait_for_external_event(RESUME)
    timeout = ctx.create_timer(timedelta(hours=1))
    winner = yield task.when_any([event, timeout])
    after = yield ctx.call_activity(echo, input="after when_any")
    return {"event_won": winner is event, "data": event.get_result() if winner is event else None, "after": after}


def continue_as_new(ctx: Ctx, state: dict[str, Any]) -> Gen:
    """Three generations; the second one holds the pause."""
    generation, log = state["generation"], state["log"]
    if generation == 1:
        ctx.set_custom_status(PAUSED)
        yield ctx.wait_for_external_event(RESUME)
    if generation == 2:
        ctx.set_custom_status({"generation": 2})
        return log
    log = yield ctx.call_activity(append, input={"items": log, "tag": f"gen{generation}"})
    ctx.continue_as_new({"generation": generation + 1, "log": log})
    return None


def custom_status(ctx: Ctx, _: Any) -> Gen:
    """Sets a custom status before and after the pause; the final one is compared too."""
    ctx.set_custom_status({"paused": True, "stage": "before"})
    data = yield ctx.wait_for_external_event(RESUME)
    ctx.set_custom_status({"stage": "after", "data": data})
    yield ctx.call_activity(echo, input=None)
    return "status set"


def uuid_and_time(ctx: Ctx, _: Any) -> Gen:
    """``new_uuid`` and ``current_utc_datetime`` from before the pause must replay identically after it."""
    first_uuid, first_time = ctx.new_uuid(), ctx.current_utc_datetime.isoformat()
    recorded = yield ctx.call_activity(echo, input={"uuid": first_uuid, "time": first_time})
    ctx.set_custom_status(PAUSED)
    yield ctx.wait_for_external_event(RESUME)
    second_uuid = ctx.new_uuid()
    return {
        "uuid_replayed": recorded["uuid"] == first_uuid,
        "time_replayed": recorded["time"] == first_time,
        "uuid_fresh": second_uuid != first_uuid,
        "time_advanced": ctx.current_utc_datetime.isoformat() > first_time,
    }


def entity_lock(ctx: Ctx, _: Any) -> Gen:
    """Holds a lock on a counter across the pause; a signal sent meanwhile waits for the release."""
    counter = EntityInstanceId("migration_counter", ctx.instance_id)
    with (yield ctx.lock_entities([counter])):
        first = yield ctx.call_entity(counter, "add", 1)
        ctx.set_custom_status(PAUSED)
        yield ctx.wait_for_external_event(RESUME)
        second = yield ctx.call_entity(counter, "add", 10)
        held = yield ctx.call_entity(counter, "get")
    ctx.signal_entity(counter, "add", 1000)
    return {"first": first, "second": second, "held": held}


def peer(ctx: Ctx, _: Any) -> Gen:
    """Waits for the ``ping`` event and returns its data."""
    return (yield ctx.wait_for_external_event("ping"))


def send_event(ctx: Ctx, _: Any) -> Gen:
    """Starts a peer, pauses, then sends the peer an event and returns what the peer returns."""
    peer_id = f"{ctx.instance_id}-peer"
    peer_task = ctx.call_sub_orchestrator(peer, instance_id=peer_id)
    ctx.set_custom_status(PAUSED)
    data = yield ctx.wait_for_external_event(RESUME)
    ctx.send_event(peer_id, "ping", data={"from": "parent", "data": data})
    return {"peer": (yield peer_task)}


def failing_child(ctx: Ctx, message: str) -> Gen:
    """A sub-orchestration whose activity fails."""
    yield ctx.call_activity(fail_with, input=message)


def _describe(ctx: Ctx, err: task.TaskFailedError) -> dict[str, Any]:
    details = err.details
    return {"text": _short(ctx, str(err)), "type": details.error_type, "message": _short(ctx, details.message)}


def caught_failures(ctx: Ctx, _: Any) -> Gen:
    """Activity and sub-orchestration failures caught in code, before and after the pause."""
    seen = []
    for stage in ("before", "after"):
        if stage == "after":
            ctx.set_custom_status(PAUSED)
            yield ctx.wait_for_external_event(RESUME)
        try:
            yield ctx.call_activity(fail_with, input=f"activity {stage}")
        except task.TaskFailedError as err:
            seen.append(_describe(ctx, err))
        try:
            yield ctx.call_sub_orchestrator(failing_child, input=f"child {stage}")
        except task.TaskFailedError as err:
            seen.append(_describe(ctx, err))
    return seen


# The suite ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One feature: its orchestrator, input, how its pause shows, and the event that ends it."""

    name: str
    orchestrator: Callable[..., Any]
    input: Any = None
    resume_data: Any = "resumed"
    pause: str = "status"  # "status": custom status has "paused"; "retry-timer": a timer after a failed task
    migrated_input: Any = None  # input of migrated instances when it differs (retry_span's longer interval)
    signals: list[tuple[str, int]] = field(default_factory=list)  # (operation, value) to the entity while paused
    entity_final: int | None = None  # the counter's value once every signal has landed


SCENARIOS: list[Scenario] = [
    Scenario("chain", chain, resume_data="d"),
    Scenario("fan_out", fan_out, input=6),
    Scenario("activity_retries", activity_retries),
    Scenario("retry_span", retry_span, input=1.0, pause="retry-timer", migrated_input=5.0),
    Scenario("sub_orchestration_retries", sub_orchestration_retries),
    Scenario("timers", timers),
    Scenario("when_any_timer", when_any_timer, resume_data={"winner": "event"}),
    Scenario("continue_as_new", continue_as_new, input={"generation": 0, "log": []}),
    Scenario("custom_status", custom_status, resume_data=[1, 2]),
    Scenario("uuid_and_time", uuid_and_time),
    Scenario("entity_lock", entity_lock, signals=[("add", 100)], entity_final=1111),
    Scenario("send_event", send_event, resume_data={"n": 7}),
    Scenario("caught_failures", caught_failures),
]

ORCHESTRATORS: list[Callable[..., Any]] = [s.orchestrator for s in SCENARIOS] + [flaky_child, peer, failing_child]
ACTIVITIES: list[Callable[..., Any]] = [append, square, echo, flaky, fail_with]
ENTITIES: list[Callable[..., Any]] = [migration_counter]
