"""Entities in the replay engine: calls, signals, critical sections, replay, with synthetic histories."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from history_builders import T0, Instance, completion, failure, kinds, output

from durabletask import task
from durabletask.entities import EntityInstanceId, EntityOperationFailedException
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor

A = EntityInstanceId("account", "a")
B = EntityInstanceId("account", "b")
C = EntityInstanceId("account", "c")


def make(*orchestrators: Any) -> OrchestrationExecutor:
    registry = Registry()
    for fn in orchestrators:
        registry.add_orchestrator(fn)
    return OrchestrationExecutor(registry)


def messages(result: Any) -> list[tuple[str, Any]]:
    """(message kind, message) of each sendEntityMessage action."""
    out = []
    for action in result.actions:
        if action.HasField("sendEntityMessage"):
            kind = action.sendEntityMessage.WhichOneof("EntityMessageType")
            out.append((kind, getattr(action.sendEntityMessage, kind)))
    return out


def only_message(result: Any, kind: str) -> Any:
    found = [m for k, m in messages(result) if k == kind]
    assert len(found) == 1, messages(result)
    return found[0]


# ------------------------------------------------------------------ calls


def test_call_entity_sends_a_call_and_completes_with_the_result() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        value = yield ctx.call_entity(A, "add", 5)
        return value

    inst = Instance(make(caller), "caller", instance_id="orch-1")
    first = inst.start()
    assert kinds(first.actions) == ["sendEntityMessage"]
    call = only_message(first, "entityOperationCalled")
    assert first.actions[0].id == 1
    assert call.targetInstanceId.value == "@account@a" and call.operation == "add"
    assert call.input.value == "5" and call.parentInstanceId.value == "orch-1"
    assert call.requestId
    done = inst.turn(ph.new_entity_operation_completed_event(call.requestId, "15"))
    assert output(done) == 15


def test_call_entity_accepts_the_string_form_and_decodes_into_return_type() -> None:
    @dataclass
    class Balance:
        owner: str
        amount: int

    def caller(ctx: task.OrchestrationContext, _: Any):
        value = yield ctx.call_entity("@Account@a", "get", return_type=Balance)
        assert isinstance(value, Balance)
        return value.amount

    inst = Instance(make(caller), "caller")
    call = only_message(inst.start(), "entityOperationCalled")
    assert call.targetInstanceId.value == "@account@a" and not call.HasField("input")
    done = inst.turn(ph.new_entity_operation_completed_event(call.requestId, '{"owner": "a", "amount": 3}'))
    assert output(done) == 3


def test_a_failed_call_raises_task_failed_error_carrying_the_entity_failure() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        try:
            yield ctx.call_entity(A, "withdraw", 100)
        except task.TaskFailedError as err:
            inner = err.details.inner_failure
            return {
                "type": err.details.error_type,
                "caused": err.details.is_caused_by(EntityOperationFailedException),
                "inner": [inner.error_type, inner.message] if inner else None,
                "message": str(err),
            }
        return None

    inst = Instance(make(caller), "caller")
    call = only_message(inst.start(), "entityOperationCalled")
    done = inst.turn(ph.new_entity_operation_failed_event(call.requestId, ValueError("insufficient funds")))
    result = output(done)
    assert result["type"].endswith("EntityOperationFailedException") and result["caused"]
    assert result["inner"] == ["builtins.ValueError", "insufficient funds"]
    assert "withdraw" in result["message"] and "@account@a" in result["message"]


def test_an_unhandled_failed_call_fails_the_orchestration() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_entity(A, "withdraw", 100)

    inst = Instance(make(caller), "caller")
    call = only_message(inst.start(), "entityOperationCalled")
    details = failure(inst.turn(ph.new_entity_operation_failed_event(call.requestId, ValueError("no"))))
    assert details.errorType.endswith("TaskFailedError")
    assert details.innerFailure.errorType.endswith("EntityOperationFailedException")
    assert details.innerFailure.innerFailure.errorMessage == "no"


def test_parallel_calls_complete_by_request_id() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        results = yield task.when_all([ctx.call_entity(A, "get"), ctx.call_entity(B, "get")])
        return results

    inst = Instance(make(caller), "caller")
    first = inst.start()
    calls = [m for _, m in messages(first)]
    assert len({c.requestId for c in calls}) == 2
    second = inst.turn(ph.new_entity_operation_completed_event(calls[1].requestId, "2"))
    assert not second.actions
    done = inst.turn(ph.new_entity_operation_completed_event(calls[0].requestId, "1"))
    assert output(done) == [1, 2]


def test_unknown_results_are_ignored() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_entity(A, "get"))

    inst = Instance(make(caller), "caller")
    call = only_message(inst.start(), "entityOperationCalled")
    stray = inst.turn(
        ph.new_entity_operation_completed_event("not-a-request", "9"),
        ph.new_entity_lock_granted_event("not-a-section"),
    )
    assert not stray.actions
    assert output(inst.turn(ph.new_entity_operation_completed_event(call.requestId, "1"))) == 1


def test_bad_entity_ids_fail_the_orchestration_with_value_error() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_entity("counter@x", "get")

    details = failure(Instance(make(caller), "caller").start())
    assert details.errorType == "builtins.ValueError" and "counter@x" in details.errorMessage


# ---------------------------------------------------------------- signals


def test_signal_entity_sends_a_one_way_message_and_does_not_wait() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    def signaller(ctx: task.OrchestrationContext, _: Any):
        ctx.signal_entity(A, "add", 1)
        ctx.signal_entity(B, "reset", signal_time=when)
        return "sent"

    result = Instance(make(signaller), "signaller").start()
    assert output(result) == "sent"
    assert kinds(result.actions) == ["sendEntityMessage", "sendEntityMessage", "completeOrchestration"]
    (k1, first), (k2, delayed) = messages(result)
    assert k1 == k2 == "entityOperationSignaled"
    assert first.targetInstanceId.value == "@account@a" and first.input.value == "1"
    assert not first.HasField("scheduledTime")
    assert delayed.operation == "reset" and delayed.scheduledTime.ToDatetime(timezone.utc) == when
    assert first.requestId != delayed.requestId


def test_signals_replay_without_being_sent_again() -> None:
    def signaller(ctx: task.OrchestrationContext, _: Any):
        ctx.signal_entity(A, "add", 1)
        yield ctx.create_timer(timedelta(seconds=5))
        ctx.signal_entity(A, "add", 2)
        return None

    inst = Instance(make(signaller), "signaller")
    first = inst.start()
    assert kinds(first.actions) == ["sendEntityMessage", "createTimer"]
    second = inst.turn(ph.new_timer_fired_event(2, T0 + timedelta(seconds=5)))
    assert kinds(second.actions) == ["sendEntityMessage", "completeOrchestration"]
    assert only_message(second, "entityOperationSignaled").input.value == "2"


# ------------------------------------------------------ critical sections


def transfer(ctx: task.OrchestrationContext, amount: int):
    with (yield ctx.lock_entities([B, A, B])):
        balance = yield ctx.call_entity(A, "get")
        if balance < amount:
            raise ValueError("insufficient funds")
        yield task.when_all([ctx.call_entity(A, "add", -amount), ctx.call_entity(B, "add", amount)])
    return "done"


def test_lock_entities_runs_a_critical_section_and_releases_it() -> None:
    inst = Instance(make(transfer), "transfer", 30, instance_id="orch-9")
    first = inst.start()
    lock = only_message(first, "entityLockRequested")
    assert list(lock.lockSet) == ["@account@a", "@account@b"]
    assert lock.position == 0 and lock.parentInstanceId.value == "orch-9" and lock.criticalSectionId

    second = inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    get = only_message(second, "entityOperationCalled")
    assert get.targetInstanceId.value == "@account@a"

    third = inst.turn(ph.new_entity_operation_completed_event(get.requestId, "100"))
    calls = [m for _, m in messages(third)]
    assert [(c.targetInstanceId.value, c.input.value) for c in calls] == [("@account@a", "-30"), ("@account@b", "30")]

    fourth = inst.turn(*(ph.new_entity_operation_completed_event(c.requestId) for c in calls))
    assert output(fourth) == "done"
    assert kinds(fourth.actions) == ["sendEntityMessage", "sendEntityMessage", "completeOrchestration"]
    unlocks = [m for _, m in messages(fourth)]
    assert [u.targetInstanceId.value for u in unlocks] == ["@account@a", "@account@b"]
    assert all(u.criticalSectionId == lock.criticalSectionId for u in unlocks)
    assert all(u.parentInstanceId.value == "orch-9" for u in unlocks)
    # The unlocks precede the completion in id order.
    assert [a.id for a in fourth.actions] == sorted(a.id for a in fourth.actions)


def test_an_exception_in_the_critical_section_releases_the_locks() -> None:
    inst = Instance(make(transfer), "transfer", 500)
    lock = only_message(inst.start(), "entityLockRequested")
    get = only_message(inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId)), "entityOperationCalled")
    done = inst.turn(ph.new_entity_operation_completed_event(get.requestId, "100"))
    assert failure(done).errorMessage == "insufficient funds"
    assert kinds(done.actions) == ["sendEntityMessage", "sendEntityMessage", "completeOrchestration"]
    assert {u.targetInstanceId.value for _, u in messages(done)} == {"@account@a", "@account@b"}


def test_locks_still_held_are_released_when_the_orchestration_completes() -> None:
    def holder(ctx: task.OrchestrationContext, _: Any):
        yield ctx.lock_entities([C])
        return "kept the lock"

    inst = Instance(make(holder), "holder")
    lock = only_message(inst.start(), "entityLockRequested")
    done = inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    assert output(done) == "kept the lock"
    unlock = only_message(done, "entityUnlockSent")
    assert unlock.targetInstanceId.value == "@account@c" and unlock.criticalSectionId == lock.criticalSectionId


def test_locks_are_released_on_continue_as_new_and_on_terminate() -> None:
    def holder(ctx: task.OrchestrationContext, n: int):
        yield ctx.lock_entities([A])
        if n == 0:
            ctx.continue_as_new(1)
            return None
        yield ctx.create_timer(timedelta(hours=1))
        return None

    inst = Instance(make(holder), "holder", 0)
    lock = only_message(inst.start(), "entityLockRequested")
    continued = inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    assert kinds(continued.actions) == ["sendEntityMessage", "completeOrchestration"]
    assert completion(continued).orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    assert only_message(continued, "entityUnlockSent").targetInstanceId.value == "@account@a"

    other = Instance(make(holder), "holder", 1)
    lock = only_message(other.start(), "entityLockRequested")
    other.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    terminated = other.turn(ph.new_execution_terminated_event("stop"))
    assert completion(terminated).orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED
    assert only_message(terminated, "entityUnlockSent").targetInstanceId.value == "@account@a"


def test_a_lock_request_not_yet_granted_is_released_when_the_orchestration_fails() -> None:
    def impatient(ctx: task.OrchestrationContext, _: Any):
        ctx.lock_entities([A, B])
        raise RuntimeError("gave up")

    result = Instance(make(impatient), "impatient").start()
    assert failure(result).errorMessage == "gave up"
    lock = only_message(result, "entityLockRequested")
    unlocks = [m for k, m in messages(result) if k == "entityUnlockSent"]
    assert [u.targetInstanceId.value for u in unlocks] == ["@account@a", "@account@b"]
    assert all(u.criticalSectionId == lock.criticalSectionId for u in unlocks)


def test_empty_lock_set_is_refused() -> None:
    def empty(ctx: task.OrchestrationContext, _: Any):
        yield ctx.lock_entities([])

    details = failure(Instance(make(empty), "empty").start())
    assert details.errorType == "builtins.RuntimeError" and "at least one entity" in details.errorMessage


def _inside_section(body: Any) -> pb.TaskFailureDetails | Any:
    """Run ``body(ctx)`` (a generator) inside a granted critical section over A and B."""

    def orchestrator(ctx: task.OrchestrationContext, _: Any):
        with (yield ctx.lock_entities([A, B])):
            result = yield from body(ctx)
        return result

    inst = Instance(make(orchestrator), "orchestrator")
    lock = only_message(inst.start(), "entityLockRequested")
    return inst, inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))


@pytest.mark.parametrize(
    ("body_name", "message"),
    [
        ("signal_locked", "Must not signal the locked entity '@account@a'"),
        ("call_twice", "prior call to the same entity is still pending"),
        ("call_unlocked", "'@account@c' from a critical section: it is not one of the locked entities"),
        ("nested_lock", "Must not enter another critical section from within a critical section"),
    ],
)
def test_forbidden_moves_inside_a_critical_section_raise(body_name: str, message: str) -> None:
    def signal_locked(ctx: task.OrchestrationContext):
        ctx.signal_entity(A, "add", 1)
        yield ctx.call_entity(A, "get")

    def call_twice(ctx: task.OrchestrationContext):
        yield task.when_all([ctx.call_entity(A, "get"), ctx.call_entity(A, "get")])

    def call_unlocked(ctx: task.OrchestrationContext):
        yield ctx.call_entity(C, "get")

    def nested_lock(ctx: task.OrchestrationContext):
        yield ctx.lock_entities([C])

    bodies = {f.__name__: f for f in (signal_locked, call_twice, call_unlocked, nested_lock)}
    _, result = _inside_section(bodies[body_name])
    details = failure(result)
    assert details.errorType == "builtins.RuntimeError"
    assert message in details.errorMessage
    # Leaving the section on the error released both locks.
    assert [m.targetInstanceId.value for k, m in messages(result) if k == "entityUnlockSent"] == [
        "@account@a", "@account@b",
    ]


def test_allowed_moves_inside_a_critical_section() -> None:
    def body(ctx: task.OrchestrationContext):
        ctx.signal_entity(C, "add", 1)  # C is not locked: signalling it is fine
        first = yield ctx.call_entity(A, "get")
        second = yield ctx.call_entity(A, "get")  # the first call returned: A is available again
        return [first, second]

    inst, granted = _inside_section(body)
    assert [k for k, _ in messages(granted)] == ["entityOperationSignaled", "entityOperationCalled"]
    first = only_message(granted, "entityOperationCalled")
    second = only_message(inst.turn(ph.new_entity_operation_completed_event(first.requestId, "1")), "entityOperationCalled")
    done = inst.turn(ph.new_entity_operation_completed_event(second.requestId, "2"))
    assert output(done) == [1, 2]


def test_calling_before_the_lock_is_granted_raises() -> None:
    def hasty(ctx: task.OrchestrationContext, _: Any):
        ctx.lock_entities([A])
        yield ctx.call_entity(A, "get")

    details = failure(Instance(make(hasty), "hasty").start())
    assert "Must await the completion of the lock request" in details.errorMessage


def test_calls_outside_a_critical_section_are_unrestricted() -> None:
    def free(ctx: task.OrchestrationContext, _: Any):
        ctx.signal_entity(A, "add", 1)
        yield task.when_all([ctx.call_entity(A, "get"), ctx.call_entity(A, "get")])

    result = Instance(make(free), "free").start()
    assert [k for k, _ in messages(result)] == ["entityOperationSignaled", "entityOperationCalled", "entityOperationCalled"]


def test_a_second_critical_section_after_the_first_one() -> None:
    def twice(ctx: task.OrchestrationContext, _: Any):
        with (yield ctx.lock_entities([A])):
            pass
        with (yield ctx.lock_entities([B])):
            pass
        return "ok"

    inst = Instance(make(twice), "twice")
    first = only_message(inst.start(), "entityLockRequested")
    second_turn = inst.turn(ph.new_entity_lock_granted_event(first.criticalSectionId))
    assert [k for k, _ in messages(second_turn)] == ["entityUnlockSent", "entityLockRequested"]
    second = only_message(second_turn, "entityLockRequested")
    assert second.criticalSectionId != first.criticalSectionId
    done = inst.turn(ph.new_entity_lock_granted_event(second.criticalSectionId))
    assert output(done) == "ok"
    assert only_message(done, "entityUnlockSent").targetInstanceId.value == "@account@b"


# ----------------------------------------------------------------- replay


def test_replay_is_deterministic_and_sends_nothing_twice() -> None:
    inst = Instance(make(transfer), "transfer", 10, instance_id="orch-d")
    lock = only_message(inst.start(), "entityLockRequested")
    granted = inst.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    get = only_message(granted, "entityOperationCalled")

    # Re-running the same turn from the same history gives the same IDs.
    again = inst.replay_only(ph.new_entity_lock_granted_event(lock.criticalSectionId))
    assert kinds(again.actions) == []  # the lock was already granted in history: nothing new
    replayed = Instance(make(transfer), "transfer", 10, instance_id="orch-d")
    assert only_message(replayed.start(), "entityLockRequested").criticalSectionId == lock.criticalSectionId
    assert only_message(
        replayed.turn(ph.new_entity_lock_granted_event(lock.criticalSectionId)), "entityOperationCalled"
    ).requestId == get.requestId

    third = inst.turn(ph.new_entity_operation_completed_event(get.requestId, "50"))
    calls = [m for _, m in messages(third)]
    # A result arriving in a later turn is matched against the replayed calls.
    fourth = inst.turn(ph.new_entity_operation_completed_event(calls[0].requestId))
    assert not fourth.actions
    done = inst.turn(ph.new_entity_operation_completed_event(calls[1].requestId))
    assert output(done) == "done"
    assert [k for k, _ in messages(done)] == ["entityUnlockSent", "entityUnlockSent"]


def test_request_ids_follow_the_deterministic_uuid_scheme() -> None:
    seen: list[str] = []

    def caller(ctx: task.OrchestrationContext, _: Any):
        expected = [ctx.new_uuid()]
        seen.extend(expected)
        yield ctx.call_entity(A, "get")

    def caller_twin(ctx: task.OrchestrationContext, _: Any):
        yield ctx.call_entity(A, "get")

    Instance(make(caller), "caller", instance_id="same").start()
    twin = Instance(make(caller_twin), "caller_twin", instance_id="same").start()
    # The twin's first new_uuid() goes to the call's request ID.
    assert only_message(twin, "entityOperationCalled").requestId == seen[0]


def test_history_with_a_different_entity_call_is_non_deterministic() -> None:
    def v1(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_entity(A, "get"))

    def v2(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_entity(B, "get"))

    inst = Instance(make(v1), "v1")
    call = only_message(inst.start(), "entityOperationCalled")
    history = list(inst.history)
    history[1].executionStarted.name = "v2"
    result = make(v2).execute(
        "inst-1", history, [ph.new_orchestrator_started_event(), ph.new_entity_operation_completed_event(call.requestId, "1")]
    )
    details = failure(result)
    assert details.errorType.endswith("NonDeterminismError")
    assert "call_entity('@account@b', 'get')" in details.errorMessage
    assert "entityOperationCalled('@account@a', 'get')" in details.errorMessage


def test_history_with_an_entity_call_the_code_no_longer_makes_is_non_deterministic() -> None:
    def v1(ctx: task.OrchestrationContext, _: Any):
        ctx.signal_entity(A, "add", 1)
        return (yield ctx.call_activity("work"))

    def v2(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_activity("work"))

    inst = Instance(make(v1), "v1")
    inst.start()
    history = list(inst.history)
    history[1].executionStarted.name = "v2"
    result = make(v2).execute("inst-1", history, [ph.new_orchestrator_started_event(), ph.new_task_completed_event(2, "1")])
    assert failure(result).errorType.endswith("NonDeterminismError")


def test_results_wait_while_suspended() -> None:
    def caller(ctx: task.OrchestrationContext, _: Any):
        return (yield ctx.call_entity(A, "get"))

    inst = Instance(make(caller), "caller")
    call = only_message(inst.start(), "entityOperationCalled")
    held = inst.turn(ph.new_execution_suspended_event(), ph.new_entity_operation_completed_event(call.requestId, "4"))
    assert not held.actions
    assert output(inst.turn(ph.new_execution_resumed_event())) == 4


def test_entity_message_history_events_round_trip_through_builders() -> None:
    action = ph.new_lock_entities_action(3, "cs", "orch", ["@a@1", "@b@2"])
    event = ph.new_entity_message_event(action, timestamp=T0)
    assert event.eventId == 3 and list(event.entityLockRequested.lockSet) == ["@a@1", "@b@2"]
    with pytest.raises(ValueError):
        ph.new_entity_message_event(pb.OrchestratorAction(id=1, sendEntityMessage=pb.SendEntityMessageAction()))
    assert json.loads(ph.new_entity_operation_completed_event("r", "[1]").entityOperationCompleted.output.value) == [1]
