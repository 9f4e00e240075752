"""Declarative workflow definitions: steps described with WorkflowBuilder, validated at build time."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, TypeAlias

from durabletask import task

ActivityRef: TypeAlias = "str | Callable[..., Any]"
"""An activity: its registration name, or the function itself."""

Condition: TypeAlias = "Callable[[WorkflowView], Any]"
"""Decides from the workflow's state whether a conditional step runs (truthy: it runs)."""

InputBuilder: TypeAlias = "Callable[[WorkflowView], Any]"
"""Builds a step's activity input from the workflow's state."""

PARALLEL_STEP_KEYS = frozenset({"name", "activity", "compensation", "condition", "input", "retry_policy"})


class WorkflowView(Mapping[str, Any]):
    """A read-only view of a running workflow, given to conditions and input builders.

    ``view["key"]`` is the result of the step named ``key`` if that step has run, otherwise
    the key of the initial context (when it is a mapping). ``context`` is the initial context,
    ``results`` the step results so far (copies: changing them changes nothing).
    """

    def __init__(self, workflow_name: str, instance_id: str, context: Any, results: Mapping[str, Any]) -> None:
        self._workflow_name = workflow_name
        self._instance_id = instance_id
        self._context = copy.deepcopy(context)
        self._results = MappingProxyType(copy.deepcopy(dict(results)))

    @property
    def workflow_name(self) -> str:
        """The workflow's name."""
        return self._workflow_name

    @property
    def instance_id(self) -> str:
        """The orchestration instance running the workflow."""
        return self._instance_id

    @property
    def context(self) -> Any:
        """The initial context the workflow was started with."""
        if isinstance(self._context, dict):
            return MappingProxyType(self._context)
        return self._context

    @property
    def results(self) -> Mapping[str, Any]:
        """Results of the steps that have completed, by step name."""
        return self._results

    def _context_keys(self) -> list[str]:
        return [key for key in self._context if key not in self._results] if isinstance(self._context, dict) else []

    def __getitem__(self, key: str) -> Any:
        if key in self._results:
            return self._results[key]
        if isinstance(self._context, dict) and key in self._context:
            return self._context[key]
        raise KeyError(f"'{key}' is neither a completed step nor a key of the initial context")

    def __iter__(self) -> Iterator[str]:
        yield from self._results
        yield from self._context_keys()

    def __len__(self) -> int:
        return len(self._results) + len(self._context_keys())


@dataclass(frozen=True)
class WorkflowStep:
    """One step: an activity, with an optional compensation, condition, input builder and retry policy."""

    name: str
    activity: ActivityRef
    compensation: ActivityRef | None = None
    condition: Condition | None = None
    input: InputBuilder | None = None
    retry_policy: task.RetryPolicy | None = None

    @property
    def activity_name(self) -> str:
        """The registration name of the step's activity."""
        return activity_name(self.activity)

    @property
    def compensation_name(self) -> str | None:
        """The registration name of the compensation activity, if there is one."""
        return None if self.compensation is None else activity_name(self.compensation)


@dataclass(frozen=True)
class RetryConfig:
    """Retries for every step and compensation: ``max_retries`` after the first attempt.

    The delay before retry k is ``first_interval * backoff_factor**(k-1)``, capped by ``max_interval``.
    """

    max_retries: int
    backoff_factor: float = 2.0
    first_interval: timedelta = timedelta(seconds=1)
    max_interval: timedelta | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, (int, float)):
            raise ValueError(f"backoff_factor must be a number >= 1, not {self.backoff_factor!r}")
        if not self.backoff_factor >= 1:
            raise ValueError(f"backoff_factor must be >= 1, not {self.backoff_factor!r}")
        if not isinstance(self.first_interval, timedelta) or self.first_interval < timedelta(0):
            raise ValueError(f"first_interval must be a timedelta >= 0, not {self.first_interval!r}")
        if self.max_interval is not None and (
            not isinstance(self.max_interval, timedelta) or self.max_interval < timedelta(0)
        ):
            raise ValueError(f"max_interval must be a timedelta >= 0, not {self.max_interval!r}")

    def to_policy(self) -> task.RetryPolicy | None:
        """The equivalent RetryPolicy (None when no retry is asked for)."""
        if self.max_retries == 0:
            return None
        return task.RetryPolicy(
            first_retry_interval=self.first_interval,
            max_number_of_attempts=self.max_retries + 1,
            backoff_coefficient=float(self.backoff_factor),
            max_retry_interval=self.max_interval,
        )


@dataclass(frozen=True)
class WorkflowDefinition:
    """A built workflow: its name, its stages (a stage is one step, or steps run in parallel)."""

    name: str
    stages: tuple[tuple[WorkflowStep, ...], ...]
    retry: RetryConfig | None = None

    @property
    def steps(self) -> list[WorkflowStep]:
        """Every step, in definition order."""
        return [step for stage in self.stages for step in stage]

    @property
    def step_names(self) -> list[str]:
        """Every step's name, in definition order."""
        return [step.name for step in self.steps]

    def activity_functions(self) -> dict[str, Callable[..., Any]]:
        """The activities (steps' and compensations') given as functions, by registration name."""
        found: dict[str, Callable[..., Any]] = {}
        for step in self.steps:
            for ref in (step.activity, step.compensation):
                if ref is not None and not isinstance(ref, str):
                    found[activity_name(ref)] = ref
        return found

    def retry_policy_for(self, step: WorkflowStep | None) -> task.RetryPolicy | None:
        """The step's own policy, else the workflow's retry config (also used for compensations)."""
        if step is not None and step.retry_policy is not None:
            return step.retry_policy
        return None if self.retry is None else self.retry.to_policy()


def activity_name(ref: ActivityRef) -> str:
    """The registration name of an activity given by name or function."""
    return ref if isinstance(ref, str) else task.get_name(ref)


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, not {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"{what} must not be empty")
    if name != name.strip():
        raise ValueError(f"{what} must not start or end with whitespace: {name!r}")
    return name


def _check_activity(step: str, role: str, ref: object) -> ActivityRef:
    if isinstance(ref, str):
        if not ref.strip():
            raise ValueError(f"step '{step}': the {role} name must not be empty")
        return ref
    if not callable(ref):
        raise ValueError(f"step '{step}': the {role} must be an activity function or name, not {type(ref).__name__}")
    try:
        task.get_name(ref)
    except ValueError as exc:
        raise ValueError(f"step '{step}': the {role}: {exc}") from None
    return ref


def _check_callable(step: str, role: str, fn: object) -> Any:
    if fn is not None and not callable(fn):
        raise ValueError(f"step '{step}': the {role} must be callable, not {type(fn).__name__}")
    return fn


class WorkflowBuilder:
    """Describes a workflow as steps; ``build()`` validates it and returns a WorkflowDefinition.

    Every method checks its arguments first and changes nothing when it raises ValueError.
    """

    def __init__(self, name: str) -> None:
        self._name = _check_name("a workflow name", name)
        self._stages: list[tuple[WorkflowStep, ...]] = []
        self._retry: RetryConfig | None = None

    def _names(self) -> set[str]:
        return {step.name for stage in self._stages for step in stage}

    def _new_step(self, name: object, activity: object, **options: Any) -> WorkflowStep:
        step_name = _check_name("a step name", name)
        if step_name in self._names():
            raise ValueError(f"workflow '{self._name}': a step named '{step_name}' already exists")
        retry_policy = options.get("retry_policy")
        if retry_policy is not None and not isinstance(retry_policy, task.RetryPolicy):
            raise ValueError(f"step '{step_name}': retry_policy must be a RetryPolicy, not {type(retry_policy).__name__}")
        compensation = options.get("compensation")
        return WorkflowStep(
            name=step_name,
            activity=_check_activity(step_name, "activity", activity),
            compensation=None if compensation is None else _check_activity(step_name, "compensation", compensation),
            condition=_check_callable(step_name, "condition", options.get("condition")),
            input=_check_callable(step_name, "input builder", options.get("input")),
            retry_policy=retry_policy,
        )

    def add_step(
        self,
        name: str,
        activity: ActivityRef,
        *,
        compensation: ActivityRef | None = None,
        input: InputBuilder | None = None,
        retry_policy: task.RetryPolicy | None = None,
    ) -> WorkflowBuilder:
        """Add a step that always runs; ``compensation`` undoes it if a later step fails."""
        step = self._new_step(name, activity, compensation=compensation, input=input, retry_policy=retry_policy)
        self._stages.append((step,))
        return self

    def add_conditional_step(
        self,
        name: str,
        activity: ActivityRef,
        condition: Condition,
        *,
        compensation: ActivityRef | None = None,
        input: InputBuilder | None = None,
        retry_policy: task.RetryPolicy | None = None,
    ) -> WorkflowBuilder:
        """Add a step that runs only when ``condition(view)`` is truthy (else it is skipped)."""
        if condition is None:
            raise ValueError(f"step '{name}': a conditional step needs a condition")
        step = self._new_step(
            name, activity, compensation=compensation, condition=condition, input=input, retry_policy=retry_policy
        )
        self._stages.append((step,))
        return self

    def add_parallel_steps(self, steps: Sequence[Mapping[str, Any]]) -> WorkflowBuilder:
        """Add steps that run at the same time, each a mapping with ``name`` and ``activity``.

        Optional keys: ``compensation``, ``condition``, ``input``, ``retry_policy``.
        """
        if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Sequence):
            raise ValueError("add_parallel_steps takes a list of step mappings")
        if not steps:
            raise ValueError("add_parallel_steps needs at least one step")
        group: list[WorkflowStep] = []
        for index, spec in enumerate(steps):
            if not isinstance(spec, Mapping):
                raise ValueError(f"parallel step #{index} must be a mapping, not {type(spec).__name__}")
            unknown = sorted(set(spec) - PARALLEL_STEP_KEYS)
            if unknown:
                raise ValueError(f"parallel step #{index}: unknown key(s) {unknown}; allowed: {sorted(PARALLEL_STEP_KEYS)}")
            for required in ("name", "activity"):
                if required not in spec:
                    raise ValueError(f"parallel step #{index} has no '{required}'")
            options = {key: value for key, value in spec.items() if key not in ("name", "activity")}
            step = self._new_step(spec["name"], spec["activity"], **options)
            if step.name in {other.name for other in group}:
                raise ValueError(f"workflow '{self._name}': a step named '{step.name}' already exists")
            group.append(step)
        self._stages.append(tuple(group))
        return self

    def with_retry_config(
        self,
        max_retries: int = 3,
        backoff_factor: float = 2.0,
        *,
        first_interval: timedelta = timedelta(seconds=1),
        max_interval: timedelta | None = None,
    ) -> WorkflowBuilder:
        """Retry every step's and compensation's activity (a step's own retry_policy wins)."""
        self._retry = RetryConfig(max_retries, backoff_factor, first_interval, max_interval)
        return self

    def build(self) -> WorkflowDefinition:
        """Check the whole workflow and return its immutable definition."""
        if not self._stages:
            raise ValueError(f"workflow '{self._name}' has no steps")
        definition = WorkflowDefinition(self._name, tuple(self._stages), self._retry)
        functions: dict[str, Callable[..., Any]] = {}
        for step in definition.steps:
            for ref in (step.activity, step.compensation):
                if ref is None or isinstance(ref, str):
                    continue
                known = functions.setdefault(activity_name(ref), ref)
                if known is not ref:
                    raise ValueError(
                        f"workflow '{self._name}': two different functions are named '{activity_name(ref)}'"
                    )
        return definition
