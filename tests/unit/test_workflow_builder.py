"""WorkflowBuilder validation, WorkflowView and RetryConfig: pure, no sidecar."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from durabletask import task
from durabletask.saga import CompensationFailure, Saga, SagaFailedError
from durabletask.worker import TaskHubGrpcWorker
from durabletask.workflows import RetryConfig, WorkflowBuilder, WorkflowView, register_workflow


def reserve(ctx: task.ActivityContext, data: Any) -> str:
    return "reserved"


def release(ctx: task.ActivityContext, data: Any) -> None:
    return None


def charge(ctx: task.ActivityContext, data: Any) -> int:
    return 1


def test_build_keeps_stages_in_order() -> None:
    definition = (
        WorkflowBuilder("orders")
        .add_step("reserve", reserve, compensation=release)
        .add_conditional_step("review", "manual_review", condition=lambda v: v["amount"] > 10)
        .add_parallel_steps([{"name": "charge", "activity": charge}, {"name": "label", "activity": "print_label"}])
        .build()
    )
    assert definition.name == "orders"
    assert [[s.name for s in stage] for stage in definition.stages] == [["reserve"], ["review"], ["charge", "label"]]
    assert definition.steps[0].compensation_name == "release"
    assert definition.activity_functions() == {"reserve": reserve, "release": release, "charge": charge}
    assert definition.retry_policy_for(definition.steps[0]) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.add_step("reserve", charge), "a step named 'reserve' already exists"),
        (lambda b: b.add_step("", charge), "a step name must not be empty"),
        (lambda b: b.add_step("   ", charge), "a step name must not be empty"),
        (lambda b: b.add_step(" x", charge), "whitespace"),
        (lambda b: b.add_step(3, charge), "a step name must be a string"),
        (lambda b: b.add_step("x", ""), "the activity name must not be empty"),
        (lambda b: b.add_step("x", 42), "must be an activity function or name"),
        (lambda b: b.add_step("x", lambda c, d: d), "lambda"),
        (lambda b: b.add_step("x", charge, compensation=lambda c, d: d), "the compensation"),
        (lambda b: b.add_step("x", charge, input="not callable"), "input builder must be callable"),
        (lambda b: b.add_step("x", charge, retry_policy=3), "retry_policy must be a RetryPolicy"),
        (lambda b: b.add_conditional_step("x", charge, condition=None), "needs a condition"),
        (lambda b: b.add_conditional_step("x", charge, condition=True), "condition must be callable"),
        (lambda b: b.add_parallel_steps([]), "at least one step"),
        (lambda b: b.add_parallel_steps({"name": "x"}), "a list of step mappings"),
        (lambda b: b.add_parallel_steps(["x"]), "must be a mapping"),
        (lambda b: b.add_parallel_steps([{"name": "x"}]), "has no 'activity'"),
        (lambda b: b.add_parallel_steps([{"activity": charge}]), "has no 'name'"),
        (lambda b: b.add_parallel_steps([{"name": "x", "activity": charge, "retries": 2}]), "unknown key(s) ['retries']"),
        (
            lambda b: b.add_parallel_steps([{"name": "x", "activity": charge}, {"name": "x", "activity": charge}]),
            "a step named 'x' already exists",
        ),
        (
            lambda b: b.add_parallel_steps([{"name": "y", "activity": charge}, {"name": "reserve", "activity": charge}]),
            "a step named 'reserve' already exists",
        ),
        (lambda b: b.with_retry_config(max_retries=-1), "max_retries must be an integer >= 0"),
        (lambda b: b.with_retry_config(max_retries=1.5), "max_retries must be an integer >= 0"),
        (lambda b: b.with_retry_config(backoff_factor=0.5), "backoff_factor must be >= 1"),
        (lambda b: b.with_retry_config(backoff_factor="2"), "backoff_factor must be a number"),
        (lambda b: b.with_retry_config(first_interval=timedelta(seconds=-1)), "first_interval"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(change: Any, message: str) -> None:
    builder = WorkflowBuilder("orders").add_step("reserve", reserve, compensation=release)
    with pytest.raises(ValueError) as caught:
        change(builder)
    assert message in str(caught.value)
    definition = builder.build()
    assert definition.step_names == ["reserve"] and definition.retry is None


@pytest.mark.parametrize("name", ["", "  ", None, " padded"])
def test_workflow_name_is_checked(name: Any) -> None:
    with pytest.raises(ValueError, match="a workflow name"):
        WorkflowBuilder(name)


def test_build_refuses_an_empty_workflow_and_two_functions_with_one_name() -> None:
    with pytest.raises(ValueError, match="workflow 'empty' has no steps"):
        WorkflowBuilder("empty").build()

    def impostor(ctx: task.ActivityContext, data: Any) -> None:
        return None

    impostor.__name__ = "reserve"
    builder = WorkflowBuilder("w").add_step("a", reserve).add_step("b", impostor)
    with pytest.raises(ValueError, match="two different functions are named 'reserve'"):
        builder.build()


def test_retry_config_becomes_a_retry_policy() -> None:
    definition = WorkflowBuilder("w").add_step("a", reserve).with_retry_config(max_retries=2, backoff_factor=3).build()
    policy = definition.retry_policy_for(definition.steps[0])
    assert policy is not None
    assert policy.max_number_of_attempts == 3 and policy.backoff_coefficient == 3.0
    assert policy.first_retry_interval == timedelta(seconds=1)
    assert RetryConfig(max_retries=0).to_policy() is None
    own = task.RetryPolicy(first_retry_interval=timedelta(0), max_number_of_attempts=5)
    with_own = WorkflowBuilder("w").add_step("a", reserve, retry_policy=own).with_retry_config(1).build()
    assert with_own.retry_policy_for(with_own.steps[0]) is own


def test_view_reads_results_before_context_and_is_read_only() -> None:
    context = {"amount": 5, "charge": "context value", "nested": {"a": 1}}
    results = {"charge": 7}
    view = WorkflowView("w", "id-1", context, results)
    assert view["charge"] == 7 and view["amount"] == 5
    assert view.get("missing", "dflt") == "dflt"
    assert sorted(view) == ["amount", "charge", "nested"] and len(view) == 3
    with pytest.raises(KeyError, match="neither a completed step nor a key of the initial context"):
        view["missing"]
    with pytest.raises(TypeError):
        view.context["amount"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        view.results["charge"] = 9  # type: ignore[index]
    view.context["nested"]["a"] = 2
    assert context["nested"]["a"] == 1 and results == {"charge": 7}
    assert view.workflow_name == "w" and view.instance_id == "id-1"


def test_register_workflow_checks_before_registering() -> None:
    definition = WorkflowBuilder("orders").add_step("reserve", reserve, compensation=release).build()
    worker = TaskHubGrpcWorker(host_address="localhost:1")
    worker.add_activity(charge)

    def reserve_elsewhere(ctx: task.ActivityContext, data: Any) -> None:
        return None

    reserve_elsewhere.__name__ = "reserve"
    clashing = WorkflowBuilder("other").add_step("x", charge).add_step("y", reserve_elsewhere).build()
    assert register_workflow(worker, definition) == "orders"
    with pytest.raises(ValueError, match="another activity named 'reserve'"):
        register_workflow(worker, clashing)
    with pytest.raises(ValueError, match="an orchestrator named 'orders' is already registered"):
        register_workflow(worker, definition)
    with pytest.raises(TypeError, match="WorkflowDefinition"):
        register_workflow(worker, "orders")  # type: ignore[arg-type]
    # the shared activity (same function) is left as registered: a second workflow using it is fine
    assert register_workflow(worker, WorkflowBuilder("again").add_step("r", reserve).build()) == "again"


def test_saga_refuses_bad_compensations_and_describes_failures() -> None:
    class FakeContext:
        pass

    with pytest.raises(TypeError, match="orchestration context"):
        Saga(FakeContext())  # type: ignore[arg-type]
    failure = CompensationFailure("release", {"x": 1}, task.FailureDetails("gone", "builtins.KeyError", None))
    original = task.TaskFailedError("boom", task.FailureDetails("card declined", "builtins.ValueError", None))
    err = SagaFailedError(original, [failure])
    assert isinstance(err, task.TaskFailedError)
    assert str(err) == "saga failed: card declined; 1 compensation(s) failed: release (KeyError: gone)"
    assert err.original is not None and err.original.message == "card declined"
    assert err.details.inner_failure == err.original
    assert err.details.error_type == "durabletask.saga.SagaFailedError"
