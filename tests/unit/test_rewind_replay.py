"""The worker's answer to a rewind request: the rewritten history, and what replay makes of it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from history_builders import Instance, completion, kinds, output

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import ExecutionResults, OrchestrationExecutor


def step(ctx: task.ActivityContext, x: Any) -> Any:
    return x


def flaky(ctx: task.ActivityContext, x: Any) -> Any:
    return x


def child(ctx: task.OrchestrationContext, x: Any) -> Any:
    return x


def chain(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(flaky, input=2)
    return [a, b]


def with_child(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_sub_orchestrator(child, input=2, instance_id="kid")
    return [a, b]


RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=2)


def retried(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(flaky, input=2, retry_policy=RETRY)
    return [a, b]


def retried_then_fails(ctx: task.OrchestrationContext, _: Any) -> Any:
    b = yield ctx.call_activity(flaky, input=2, retry_policy=RETRY)
    c = yield ctx.call_activity(step, input=3)
    return [b, c]


def raises_after(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity(step, input=1)
    raise ValueError("bad code")


def executor() -> OrchestrationExecutor:
    registry = Registry()
    for fn in (chain, with_child, retried, retried_then_fails, raises_after, child):
        registry.add_orchestrator(fn)
    for act in (step, flaky):
        registry.add_activity(act)
    return OrchestrationExecutor(registry, logger=logging.getLogger("test-rewind"))


def fail(inst: Instance, result: ExecutionResults) -> None:
    """Record the failure the turn reported as a backend would (executionCompleted)."""
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    inst.history.append(ph.new_execution_completed_event(
        pb.ORCHESTRATION_STATUS_FAILED, None, done.failureDetails, timestamp=inst.now
    ))


def rewind(inst: Instance, reason: str = "fixed", parent_execution_id: str | None = None) -> list[pb.HistoryEvent]:
    """Send the rewind request; returns the rewritten history the worker answers with."""
    rewound = pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent())
    rewound.executionRewound.reason.value = reason
    if parent_execution_id is not None:
        rewound.executionRewound.parentExecutionId.value = parent_execution_id
    inst.now += timedelta(seconds=1)
    new_events = [ph.new_orchestrator_started_event(inst.now), rewound]
    result = inst.executor.execute(inst.instance_id, list(inst.history), new_events)
    [action] = result.actions
    assert action.id == -1 and action.HasField("rewindOrchestration")
    return list(action.rewindOrchestration.newHistory)


def event_kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [str(e.WhichOneof("eventType")) for e in events]


def boom() -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType="builtins.RuntimeError", errorMessage="boom")


def resume(inst: Instance, history: list[pb.HistoryEvent]) -> ExecutionResults:
    """The backend's next turn after the rewind: the rewritten history replays."""
    inst.history = history
    inst.now += timedelta(seconds=1)
    return inst.executor.execute(inst.instance_id, history, [ph.new_orchestrator_started_event(inst.now)])


def failed_chain() -> Instance:
    inst = Instance(executor(), "chain")
    inst.start()
    inst.turn(ph.new_task_completed_event(1, "1"))
    fail(inst, inst.turn(ph.new_task_failed_event(2, boom())))
    return inst


def test_failed_activity_is_removed_and_scheduled_again_successes_kept() -> None:
    inst = failed_chain()
    history = rewind(inst)
    assert "taskFailed" not in event_kinds(history) and "executionCompleted" not in event_kinds(history)
    scheduled = [e.eventId for e in history if e.HasField("taskScheduled")]
    assert scheduled == [1]  # the failed activity's taskScheduled went with its failure
    assert [e.taskCompleted.taskScheduledId for e in history if e.HasField("taskCompleted")] == [1]
    assert event_kinds(history)[-2:] == ["orchestratorStarted", "executionRewound"]
    assert history[-1].executionRewound.reason.value == "fixed"
    again = resume(inst, history)
    assert kinds(again.actions) == ["scheduleTask"]
    assert (again.actions[0].id, again.actions[0].scheduleTask.name) == (2, "flaky")


def test_rewritten_history_runs_to_completion_with_the_kept_result() -> None:
    inst = failed_chain()
    resume(inst, rewind(inst))
    inst.history.append(ph.new_task_scheduled_event(2, "flaky", "2", timestamp=inst.now))
    assert output(inst.turn(ph.new_task_completed_event(2, "20"))) == [1, 20]


def test_execution_started_gets_a_fresh_execution_id_and_the_parents_new_one() -> None:
    inst = Instance(executor(), "chain", parent_instance_id="p")
    inst.start()
    inst.history[1].executionStarted.orchestrationInstance.executionId.value = "old"
    inst.history[1].executionStarted.parentInstance.orchestrationInstance.executionId.value = "parent-old"
    inst.turn(ph.new_task_completed_event(1, "1"))
    fail(inst, inst.turn(ph.new_task_failed_event(2, boom())))
    history = rewind(inst, parent_execution_id="parent-new")
    [started] = [e.executionStarted for e in history if e.HasField("executionStarted")]
    assert started.orchestrationInstance.executionId.value not in ("", "old")
    assert started.parentInstance.orchestrationInstance.executionId.value == "parent-new"
    first = rewind(failed_chain())
    second = rewind(failed_chain())
    ids = [next(e for e in h if e.HasField("executionStarted")).executionStarted.orchestrationInstance.executionId.value
           for h in (first, second)]
    assert ids[0] != ids[1]


def test_top_level_instance_gets_no_parent_info() -> None:
    history = rewind(failed_chain(), parent_execution_id="ignored")
    started = next(e for e in history if e.HasField("executionStarted")).executionStarted
    assert not started.HasField("parentInstance")


def test_failed_sub_orchestration_keeps_its_creation_so_the_backend_rewinds_it() -> None:
    inst = Instance(executor(), "with_child")
    inst.start()
    inst.turn(ph.new_task_completed_event(1, "1"))
    fail(inst, inst.turn(ph.new_sub_orchestration_failed_event(2, boom())))
    history = rewind(inst)
    assert "subOrchestrationInstanceFailed" not in event_kinds(history)
    [created] = [e for e in history if e.HasField("subOrchestrationInstanceCreated")]
    assert (created.eventId, created.subOrchestrationInstanceCreated.instanceId) == (2, "kid")
    again = resume(inst, history)
    assert again.actions == []  # waiting for the rewound child
    inst.history.extend([ph.new_orchestrator_started_event(inst.now)])
    assert output(inst.turn(ph.new_sub_orchestration_completed_event(2, "2"))) == [1, 2]


def test_retried_call_that_ended_failed_starts_over_with_a_fresh_retry_budget() -> None:
    inst = Instance(executor(), "retried")
    inst.start()
    inst.turn(ph.new_task_completed_event(1, "1"))
    retry = inst.turn(ph.new_task_failed_event(2, boom()))
    assert kinds(retry.actions) == ["createTimer"]
    timer = retry.actions[0]
    again = inst.turn(ph.new_timer_fired_event(timer.id, ph.to_datetime(timer.createTimer.fireAt)))
    [attempt] = again.actions
    fail(inst, inst.turn(ph.new_task_failed_event(attempt.id, boom())))

    history = rewind(inst)
    kept = event_kinds(history)
    assert "timerCreated" not in kept and "timerFired" not in kept and "taskFailed" not in kept
    assert [e.eventId for e in history if e.HasField("taskScheduled")] == [1]
    replay = resume(inst, history)
    assert kinds(replay.actions) == ["scheduleTask"] and replay.actions[0].id == 2
    # The call again has both attempts: a failure now is retried, not final.
    inst.history.append(ph.new_task_scheduled_event(2, "flaky", "2", timestamp=inst.now))
    assert kinds(inst.turn(ph.new_task_failed_event(2, boom())).actions) == ["createTimer"]


def test_retried_call_that_succeeded_keeps_its_whole_history() -> None:
    inst = Instance(executor(), "retried_then_fails")
    inst.start()
    retry = inst.turn(ph.new_task_failed_event(1, boom()))
    timer = retry.actions[0]
    [attempt] = inst.turn(ph.new_timer_fired_event(timer.id, ph.to_datetime(timer.createTimer.fireAt))).actions
    [third] = inst.turn(ph.new_task_completed_event(attempt.id, "2")).actions
    fail(inst, inst.turn(ph.new_task_failed_event(third.id, boom())))

    history = rewind(inst)
    assert [e.taskFailed.taskScheduledId for e in history if e.HasField("taskFailed")] == [1]
    assert [e.eventId for e in history if e.HasField("taskScheduled")] == [1, attempt.id]
    assert "timerFired" in event_kinds(history)
    replay = resume(inst, history)
    assert kinds(replay.actions) == ["scheduleTask"]
    assert (replay.actions[0].id, replay.actions[0].scheduleTask.name) == (third.id, "step")


def test_code_failure_without_failed_work_replays_the_same_way() -> None:
    inst = Instance(executor(), "raises_after")
    inst.start()
    fail(inst, inst.turn(ph.new_task_completed_event(1, "1")))
    history = rewind(inst)
    assert event_kinds(history).count("taskScheduled") == 1
    again = resume(inst, history)
    assert completion(again).orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert "bad code" in completion(again).failureDetails.errorMessage


def test_unregistered_orchestrator_still_gets_the_plain_rewrite() -> None:
    inst = failed_chain()
    other = OrchestrationExecutor(Registry(), logger=logging.getLogger("test-rewind"))
    inst.executor = other
    history = rewind(inst)
    assert "taskFailed" not in event_kinds(history)
    assert [e.eventId for e in history if e.HasField("taskScheduled")] == [1]


@pytest.mark.parametrize("history_ends", ["running", "completed"])
def test_rewound_event_without_a_finished_history_replays_normally(history_ends: str) -> None:
    inst = Instance(executor(), "chain")
    inst.start()
    rewound = pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent())
    if history_ends == "running":
        result = inst.turn(rewound)
        assert kinds(result.actions) == []  # still waiting for activity 1
    else:
        result = inst.turn(ph.new_task_completed_event(1, "1"), rewound)
        assert kinds(result.actions) == ["scheduleTask"]
