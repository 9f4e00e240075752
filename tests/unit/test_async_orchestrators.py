"""``async def`` orchestrators: the same histories and replay as their generator twins, asyncio refused.

Each scenario is written twice, as a generator that yields tasks and as a coroutine that
awaits them, and both are driven turn by turn by one scripted backend; their histories and
results must be identical, and each history must replay against the other form.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from history_builders import Instance, completion, failure

from durabletask import task
from durabletask.client import OrchestrationStatus
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor
from durabletask.testing import history_builders as hb
from durabletask.testing import replay_history, run_turn

COUNTER = EntityInstanceId("counter", "c")
A = EntityInstanceId("account", "a")
B = EntityInstanceId("account", "b")
RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3)
HERE = __file__


def shout(ctx: task.ActivityContext, text: str) -> str:
    return text.upper()


def every_feature(ctx: task.OrchestrationContext, n: int) -> Any:
    """The generator form."""
    ctx.set_custom_status("starting")
    first = yield ctx.call_activity(shout, input="a")
    retried = yield ctx.call_activity("flaky", input=1, retry_policy=RETRY)
    fanned = yield task.when_all([ctx.call_activity(shout, input=str(i)) for i in range(3)])
    approval = ctx.wait_for_external_event("approval")
    winner = yield task.when_any([approval, ctx.create_timer(timedelta(hours=1))])
    yield ctx.create_timer(timedelta(seconds=10))
    child = yield ctx.call_sub_orchestrator("child", input=n)
    count = yield ctx.call_entity(COUNTER, "add", 1)
    with (yield ctx.lock_entities([B, A])):
        balance = yield ctx.call_entity(A, "get")
    ctx.signal_entity(COUNTER, "reset")
    ctx.send_event("other", "ping", data=n)
    try:
        yield ctx.call_activity("broken")
        caught = None
    except task.TaskFailedError as error:
        caught = error.details.message
    ctx.set_custom_status("done")
    if n == 0:
        ctx.continue_as_new(n + 1)
        return None
    return [first, retried, fanned, winner is approval, child, count, balance, caught, ctx.new_uuid()]


async def every_feature_async(ctx: task.OrchestrationContext, n: int) -> Any:
    """The async form: the same calls, awaited."""
    ctx.set_custom_status("starting")
    first = await ctx.call_activity(shout, input="a")
    retried = await ctx.call_activity("flaky", input=1, retry_policy=RETRY)
    fanned = await task.when_all([ctx.call_activity(shout, input=str(i)) for i in range(3)])
    approval = ctx.wait_for_external_event("approval")
    winner = await task.when_any([approval, ctx.create_timer(timedelta(hours=1))])
    await ctx.create_timer(timedelta(seconds=10))
    child = await ctx.call_sub_orchestrator("child", input=n)
    count = await ctx.call_entity(COUNTER, "add", 1)
    with await ctx.lock_entities([B, A]):
        balance = await ctx.call_entity(A, "get")
    ctx.signal_entity(COUNTER, "reset")
    ctx.send_event("other", "ping", data=n)
    try:
        await ctx.call_activity("broken")
        caught = None
    except task.TaskFailedError as error:
        caught = error.details.message
    ctx.set_custom_status("done")
    if n == 0:
        ctx.continue_as_new(n + 1)
        return None
    return [first, retried, fanned, winner is approval, child, count, balance, caught, ctx.new_uuid()]


def _answers(action: pb.OrchestratorAction, attempts: dict[str, int]) -> list[pb.HistoryEvent]:
    """What the scripted backend answers to an action in the next turn."""
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        name = action.scheduleTask.name
        attempts[name] = attempts.get(name, 0) + 1
        if name == "broken" or (name == "flaky" and attempts[name] == 1):
            return [ph.new_task_failed_event(action.id, ValueError(f"{name} failed"))]
        text = json.loads(action.scheduleTask.input.value or "null")
        return [ph.new_task_completed_event(action.id, json.dumps(str(text).upper()))]
    if kind == "createTimer" and action.createTimer.fireAt.seconds % 3600 != 0:
        return [ph.new_timer_fired_event(action.id, ph.to_datetime(action.createTimer.fireAt))]
    if kind == "createSubOrchestration":
        return [ph.new_sub_orchestration_completed_event(action.id, json.dumps("child done"))]
    if kind == "sendEntityMessage":
        message = action.sendEntityMessage
        if message.HasField("entityOperationCalled"):
            return [ph.new_entity_operation_completed_event(message.entityOperationCalled.requestId, "7")]
        if message.HasField("entityLockRequested"):
            return [ph.new_entity_lock_granted_event(message.entityLockRequested.criticalSectionId)]
    return []


def drive(orchestrator: Any, n: int) -> tuple[list[pb.HistoryEvent], pb.CompleteOrchestrationAction, str | None]:
    """Run ``orchestrator`` (registered under one shared name) to its end against the scripted backend."""
    registry = Registry()
    registry.add_orchestrator(orchestrator, name="every_feature")
    inst = Instance(OrchestrationExecutor(registry), "every_feature", n)
    attempts: dict[str, int] = {}
    result = inst.start()
    extra = [ph.new_event_raised_event("approval", json.dumps(True))]
    for _ in range(30):
        if any(a.HasField("completeOrchestration") for a in result.actions):
            done = completion(result)
            inst.history.append(ph.new_execution_completed_event(
                done.orchestrationStatus, done.result.value if done.HasField("result") else None,
                timestamp=inst.now,
            ))
            return inst.history, done, result.custom_status
        answers = [event for action in result.actions for event in _answers(action, attempts)]
        result = inst.turn(*extra, *answers, advance=timedelta(minutes=1))
        extra = []
    raise AssertionError("the orchestration did not finish")


@pytest.mark.parametrize("n", [0, 1])
def test_the_async_form_writes_the_same_history_as_the_generator_form(n: int) -> None:
    gen_history, gen_done, gen_status = drive(every_feature, n)
    async_history, async_done, async_status = drive(every_feature_async, n)
    assert [e.SerializeToString() for e in async_history] == [e.SerializeToString() for e in gen_history]
    assert async_done == gen_done
    assert async_status == gen_status == json.dumps("done")
    if n == 0:
        assert gen_done.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    else:
        assert gen_done.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, gen_done.failureDetails
        output = json.loads(gen_done.result.value)
        assert output[:8] == ["A", "1", ["0", "1", "2"], True, "child done", 7, 7, "broken failed"]
    kinds = {e.WhichOneof("eventType") for e in gen_history}
    assert {"taskFailed", "timerFired", "eventRaised", "subOrchestrationInstanceCompleted",
            "entityLockGranted", "entityUnlockSent", "entityOperationSignaled", "eventSent"} <= kinds


@pytest.mark.parametrize(("recorded_by", "replayed_by"), [
    (every_feature, every_feature_async),
    (every_feature_async, every_feature),
])
def test_a_history_of_one_form_replays_against_the_other(recorded_by: Any, replayed_by: Any) -> None:
    history, done, _ = drive(recorded_by, 1)
    replayed = replay_history(replayed_by, history)
    assert replayed.status is OrchestrationStatus.COMPLETED
    assert replayed.serialized_output == done.result.value
    # Half-way through, the other form picks up where the first stopped.
    cut = next(i for i, e in enumerate(history) if e.HasField("subOrchestrationInstanceCreated"))
    running = replay_history(replayed_by, history[: cut + 1])
    assert running.status is OrchestrationStatus.RUNNING
    assert running.waiting_for == ["call_sub_orchestrator('child') with task id 9"]


def test_run_turn_takes_an_async_orchestrator() -> None:
    async def greet(ctx: task.OrchestrationContext, name: str) -> str:
        greeting = await ctx.call_activity(shout, input=name)
        return f"{greeting}!"

    first = run_turn(greet, [], [hb.orchestrator_started(), hb.execution_started("greet", "ada")])
    assert first.status is OrchestrationStatus.RUNNING
    assert [a.description for a in first.actions] == ["call_activity('shout')"]
    past = [hb.orchestrator_started(), hb.execution_started("greet", "ada"), hb.task_scheduled(1, "shout", "ada")]
    second = run_turn(greet, past, [hb.orchestrator_started(), hb.task_completed(1, "ADA")])
    assert second.status is OrchestrationStatus.COMPLETED and second.output == "ADA!"


def test_async_helpers_compose_like_yield_from() -> None:
    async def both(ctx: task.OrchestrationContext, x: str) -> list[str]:
        return [await ctx.call_activity(shout, input=x), await ctx.call_activity(shout, input=x + x)]

    async def outer(ctx: task.OrchestrationContext, _: Any) -> list[str]:
        return await both(ctx, "a") + await both(ctx, "b")

    registry = Registry()
    registry.add_orchestrator(outer)
    inst = Instance(OrchestrationExecutor(registry), "outer")
    result = inst.start()
    for _ in range(4):
        [action] = [a for a in result.actions if a.HasField("scheduleTask")]
        upper = json.loads(action.scheduleTask.input.value).upper()
        result = inst.turn(ph.new_task_completed_event(action.id, json.dumps(upper)))
    assert json.loads(completion(result).result.value) == ["A", "AA", "B", "BB"]


# ------------------------------------------------------------- asyncio refused


def _start(orchestrator: Any) -> pb.TaskFailureDetails:
    result = run_turn(orchestrator, [], [hb.orchestrator_started(), hb.execution_started(orchestrator.__name__)])
    assert result.status is OrchestrationStatus.FAILED, result
    assert result.failure_details is not None
    return result.failure_details  # type: ignore[return-value]


def _line_of(fn: Any, text: str) -> int:
    lines = open(HERE, encoding="utf-8").read().splitlines()
    start = fn.__code__.co_firstlineno
    return next(i + 1 for i in range(start - 1, len(lines)) if text in lines[i])


async def sleeps(ctx: task.OrchestrationContext, _: Any) -> None:
    await asyncio.sleep(5)


async def spawns(ctx: task.OrchestrationContext, _: Any) -> None:
    await asyncio.create_task(ctx_free_work())


async def sleeps_zero(ctx: task.OrchestrationContext, _: Any) -> None:
    await asyncio.sleep(0)


async def swallows(ctx: task.OrchestrationContext, _: Any) -> str:
    try:
        await asyncio.sleep(1)
    except Exception:
        pass
    return "pretends all is well"


async def ctx_free_work() -> None:
    return None


@pytest.mark.parametrize(("orchestrator", "named", "statement"), [
    (sleeps, "asyncio.sleep()", "await asyncio.sleep(5)"),
    (spawns, "asyncio.create_task()", "await asyncio.create_task("),
    (sleeps_zero, "asyncio.sleep()", "await asyncio.sleep(0)"),
    (swallows, "asyncio.sleep()", "await asyncio.sleep(1)"),
])
def test_asyncio_scheduling_fails_the_instance_naming_the_call_and_line(
    orchestrator: Any, named: str, statement: str
) -> None:
    details = _start(orchestrator)
    assert details.error_type.endswith("AsyncioInOrchestratorError")
    assert f"the orchestrator called {named}" in details.message or f"awaited {named}" in details.message
    assert f"{__name__.rsplit('.', 1)[-1]}.py:{_line_of(orchestrator, statement)}" in details.message
    assert "may only await durable tasks from its context" in details.message


def test_the_refusal_leaves_no_event_loop_behind_and_a_running_one_is_restored() -> None:
    _start(sleeps)
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()

    async def inside_a_loop() -> asyncio.AbstractEventLoop:
        _start(sleeps)
        return asyncio.get_running_loop()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(inside_a_loop()) is loop
    finally:
        loop.close()


def test_awaiting_a_foreign_future_is_named() -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()

        async def awaits_future(ctx: task.OrchestrationContext, _: Any) -> None:
            await future

        details = _start(awaits_future)
    finally:
        loop.close()
    assert "the orchestrator awaited Future" in details.message
    assert f":{_line_of(awaits_future, 'await future')} (in awaits_future)" in details.message


def test_async_generators_are_refused_at_registration() -> None:
    async def streams(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity(shout, input="x")

    with pytest.raises(TypeError, match="async generator"):
        Registry().add_orchestrator(streams)


# ----------------------------------------------------- non-determinism names the line


async def changed(ctx: task.OrchestrationContext, _: Any) -> None:
    await ctx.call_activity("check")
    await ctx.call_activity("audit")


def test_non_determinism_in_an_async_orchestrator_names_the_line() -> None:
    history = [
        hb.orchestrator_started(),
        hb.execution_started("changed"),
        hb.task_scheduled(1, "check"),
        hb.task_completed(1),
        hb.task_scheduled(2, "approve"),
    ]
    with pytest.raises(task.NonDeterminismError) as raised:
        replay_history(changed, history)
    message = str(raised.value)
    assert "expected call_activity('audit')" in message
    assert f"test_async_orchestrators.py:{_line_of(changed, 'audit')} (in changed)" in message

    waiting = [*history[:4], hb.task_scheduled(2, "audit"), hb.task_scheduled(3, "extra")]
    with pytest.raises(task.NonDeterminismError) as raised:
        replay_history(changed, waiting)
    message = str(raised.value)
    assert "made no such call; it is waiting at " in message
    assert f"test_async_orchestrators.py:{_line_of(changed, 'audit')} (in changed)" in message


def test_a_failure_in_async_code_fails_the_instance_like_a_generator() -> None:
    async def raises(ctx: task.OrchestrationContext, _: Any) -> None:
        await ctx.call_activity(shout, input="x")
        raise KeyError("missing")

    registry = Registry()
    registry.add_orchestrator(raises)
    inst = Instance(OrchestrationExecutor(registry), "raises")
    inst.start()
    details = failure(inst.turn(ph.new_task_completed_event(1, json.dumps("X"))))
    assert details.errorType == "builtins.KeyError"
