"""Run orchestrator code without a sidecar: one turn, or the replay of a recorded history.

``run_turn(orchestrator, past_events, new_events)`` runs one turn exactly as the worker
would and returns what it produced. ``replay_history(orchestrator, events)`` replays a
whole recorded history (as ``get_orchestration_history`` returns it, or loaded with
``load_history``) against the current code and raises ``NonDeterminismError`` at the
first place where the code no longer matches. ``fetch_histories`` and
``replay_histories`` do that for the instances still running on a task hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from durabletask import history
from durabletask.client import OrchestrationQuery, OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.registry import Registry
from durabletask.internal.replay import (
    OrchestrationExecutor,
    ReplayState,
    describe_action,
    describe_expected_call,
)
from durabletask.serialization import DataConverter, default_converter
from durabletask.task import FailureDetails, NonDeterminismError, Orchestrator
from durabletask.testing.history_files import HistoryInput, load_history, to_protobuf_list

if TYPE_CHECKING:
    from durabletask.client import TaskHubGrpcClient

_NON_DETERMINISM = f"{NonDeterminismError.__module__}.{NonDeterminismError.__qualname__}"
# The engine logs a non-determinism warning; here the error is raised instead.
_QUIET = logging.getLogger("durabletask-testing")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
_RUNNING_STATES = [OrchestrationStatus.RUNNING, OrchestrationStatus.PENDING, OrchestrationStatus.SUSPENDED]


@dataclass(frozen=True)
class Action:
    """One action a turn produced, readable; ``raw`` is the wire ``OrchestratorAction``."""

    id: int
    kind: str
    description: str
    name: str | None = None
    instance_id: str | None = None
    input: str | None = None
    fire_at: datetime | None = None
    raw: pb.OrchestratorAction = field(default_factory=pb.OrchestratorAction, repr=False, compare=False)

    @classmethod
    def from_protobuf(cls, action: pb.OrchestratorAction) -> Action:
        """The readable form of a wire action."""
        kind = str(action.WhichOneof("orchestratorActionType"))
        name = instance_id = payload = None
        fire_at = None
        if kind == "scheduleTask":
            name, payload = action.scheduleTask.name, _opt(action.scheduleTask, "input")
        elif kind == "createSubOrchestration":
            sub = action.createSubOrchestration
            name, instance_id, payload = sub.name, sub.instanceId, _opt(sub, "input")
        elif kind == "createTimer":
            fire_at = ph.to_datetime(action.createTimer.fireAt)
        elif kind == "sendEvent":
            sent = action.sendEvent
            name, instance_id, payload = sent.name, sent.instance.instanceId, _opt(sent, "data")
        elif kind == "sendEntityMessage":
            message = getattr(action.sendEntityMessage, str(action.sendEntityMessage.WhichOneof("EntityMessageType")))
            name = getattr(message, "operation", None)
            instance_id = _opt(message, "targetInstanceId") if hasattr(message, "targetInstanceId") else None
            payload = _opt(message, "input") if hasattr(message, "input") else None
        elif kind == "completeOrchestration":
            payload = _opt(action.completeOrchestration, "result")
        elif kind == "terminateOrchestration":
            instance_id = action.terminateOrchestration.instanceId
        return cls(action.id, kind, describe_action(action), name, instance_id, payload, fire_at, raw=action)


def _opt(message: Any, name: str) -> str | None:
    return str(getattr(message, name).value) if message.HasField(name) else None


@dataclass(frozen=True)
class TurnResult:
    """What running the orchestrator produced: its status, actions, output, custom status, failure.

    ``status`` is RUNNING while the orchestration waits for more events, else how it ended
    (COMPLETED, FAILED, TERMINATED or CONTINUED_AS_NEW). ``waiting_for`` (set by
    ``replay_history``) lists what a running orchestration is waiting on.
    """

    status: OrchestrationStatus
    actions: list[Action]
    serialized_output: str | None = None
    serialized_custom_status: str | None = None
    failure_details: FailureDetails | None = None
    waiting_for: list[str] = field(default_factory=list)
    converter: DataConverter = field(default_factory=default_converter, repr=False, compare=False)

    @property
    def pending_actions(self) -> list[Action]:
        """The actions other than the orchestration's completion (the work it asks for)."""
        return [a for a in self.actions if a.kind != "completeOrchestration"]

    @property
    def output(self) -> Any:
        """The decoded output (None when there is none)."""
        return self.get_output()

    def get_output(self, expected_type: type | None = None) -> Any:
        """The output decoded by the data converter, optionally as ``expected_type``."""
        if self.serialized_output is None:
            return None
        return self.converter.deserialize(self.serialized_output, expected_type)

    def get_custom_status(self, expected_type: type | None = None) -> Any:
        """The custom status decoded by the data converter."""
        if self.serialized_custom_status is None:
            return None
        return self.converter.deserialize(self.serialized_custom_status, expected_type)


def run_turn(
    orchestrator: Orchestrator[Any, Any],
    past_events: Sequence[HistoryInput],
    new_events: Sequence[HistoryInput],
    *,
    instance_id: str | None = None,
    data_converter: DataConverter | None = None,
    maximum_timer_interval: timedelta | None = timedelta(days=3),
) -> TurnResult:
    """Run one turn of ``orchestrator``: replay ``past_events``, then apply ``new_events``.

    The history (past then new events) must begin with executionStarted (after any
    orchestratorStarted); the orchestrator runs under the name it records. A
    non-determinism error fails the turn, as on the worker.
    """
    past, new = _check_history(orchestrator, past_events, new_events)
    executor, iid = _executor_for(orchestrator, past + new, instance_id, data_converter, maximum_timer_interval)
    results, _ = executor.execute_turn(iid, past, new)
    return _result(results.actions, results.custom_status, data_converter, None, [])


def replay_history(
    orchestrator: Orchestrator[Any, Any],
    events: Sequence[HistoryInput] | str | os.PathLike[str],
    *,
    instance_id: str | None = None,
    data_converter: DataConverter | None = None,
    maximum_timer_interval: timedelta | None = timedelta(days=3),
) -> TurnResult:
    """Replay a recorded history (events, or the path of a ``save_history`` file) against ``orchestrator``.

    Raises NonDeterminismError explaining the first mismatch: a call the history does not
    record, a recorded call the code no longer makes, or a recorded completion the code no
    longer reaches. Otherwise returns where the code stands: RUNNING (``waiting_for`` says on
    what) or how it ended, with its output.
    """
    if isinstance(events, (str, os.PathLike)):
        events = load_history(events)
    past, _ = _check_history(orchestrator, events, [])
    recorded_end = next((e for e in past if e.HasField("executionCompleted")), None)
    replayed = [e for e in past if not e.HasField("executionCompleted")]
    executor, iid = _executor_for(orchestrator, replayed, instance_id, data_converter, maximum_timer_interval)
    last = max((e.timestamp.ToDatetime() for e in replayed if e.HasField("timestamp")), default=datetime(1970, 1, 1))
    results, state = executor.execute_turn(iid, replayed, [ph.new_orchestrator_started_event(last)])
    result = _result(results.actions, results.custom_status, data_converter, state, replayed)
    if result.failure_details is not None and result.failure_details.error_type == _NON_DETERMINISM:
        raise NonDeterminismError(result.failure_details.message)
    if recorded_end is not None:
        _check_recorded_end(recorded_end, result, state)
    return result


def _check_recorded_end(recorded: pb.HistoryEvent, result: TurnResult, state: ReplayState | None) -> None:
    expected = OrchestrationStatus(recorded.executionCompleted.orchestrationStatus)
    where = f"executionCompleted event ID {recorded.eventId} at {recorded.timestamp.ToDatetime().isoformat()} UTC"
    head = f"Non-deterministic orchestration: the history records that it ended {expected.name} ({where}),"
    if result.status is OrchestrationStatus.RUNNING:
        site = state.ctx.waiting_site() if state is not None else None
        at = f" at {site}" if site is not None else ""
        raise NonDeterminismError(f"{head} but on replay the code is still waiting{at}")
    if result.status is not expected:
        why = f": {result.failure_details.message}" if result.failure_details is not None else ""
        raise NonDeterminismError(f"{head} but on replay the code ends {result.status.name}{why}")
    if result.pending_actions:
        extra = result.pending_actions[0]
        raise NonDeterminismError(
            f"{head} but on replay the code also calls {extra.description} (action id {extra.id}), "
            "which the history does not record"
        )


def fetch_histories(
    client: TaskHubGrpcClient,
    instance_ids: Iterable[str] | None = None,
    *,
    name: str | None = None,
) -> dict[str, list[history.HistoryEvent]]:
    """The histories of ``instance_ids``, or of every running, pending or suspended instance.

    ``name`` keeps only instances of that orchestrator. Save them with ``save_history`` to
    replay them in a unit test later, or pass them straight to ``replay_histories``.
    """
    if instance_ids is None:
        states = client.get_all_orchestration_states(OrchestrationQuery(runtime_status=list(_RUNNING_STATES)))
        instance_ids = [s.instance_id for s in states if name is None or s.name == name]
    return {iid: client.get_orchestration_history(iid) for iid in instance_ids}


def replay_histories(
    orchestrator: Orchestrator[Any, Any],
    histories: Mapping[str, Sequence[HistoryInput]] | Iterable[str | os.PathLike[str]],
    *,
    data_converter: DataConverter | None = None,
) -> dict[str, TurnResult]:
    """Replay each history (a mapping of instance ID to events, or paths of saved files) against the code.

    Raises NonDeterminismError for the first one that no longer replays, naming its instance
    or file. Returns each one's result, keyed by instance ID or path.
    """
    items: list[tuple[str, Sequence[HistoryInput] | str | os.PathLike[str]]]
    if isinstance(histories, Mapping):
        items = list(histories.items())
    elif isinstance(histories, (str, os.PathLike)):
        raise TypeError("replay_histories takes several histories: a mapping, or a list of paths")
    else:
        items = [(os.fspath(path), path) for path in histories]
    outcomes: dict[str, TurnResult] = {}
    for key, events in items:
        try:
            outcomes[key] = replay_history(orchestrator, events, data_converter=data_converter)
        except NonDeterminismError as exc:
            raise NonDeterminismError(f"history of '{key}': {exc}") from exc
    return outcomes


# ------------------------------------------------------------------ helpers


def _check_history(
    orchestrator: Any, past_events: Sequence[HistoryInput], new_events: Sequence[HistoryInput]
) -> tuple[list[pb.HistoryEvent], list[pb.HistoryEvent]]:
    if not callable(orchestrator):
        raise TypeError(f"the orchestrator must be a function, not {type(orchestrator).__name__}")
    past = to_protobuf_list(past_events)
    new = to_protobuf_list(new_events)
    first = next((e for e in past + new if not e.HasField("orchestratorStarted")), None)
    if first is None:
        raise ValueError("the history is empty: it must begin with an executionStarted event")
    if not first.HasField("executionStarted"):
        raise ValueError(
            "the history must begin with an executionStarted event (after any orchestratorStarted), "
            f"but it begins with {first.WhichOneof('eventType')} (event ID {first.eventId})"
        )
    return past, new


def _executor_for(
    orchestrator: Orchestrator[Any, Any],
    events: list[pb.HistoryEvent],
    instance_id: str | None,
    data_converter: DataConverter | None,
    maximum_timer_interval: timedelta | None,
) -> tuple[OrchestrationExecutor, str]:
    started = next(e.executionStarted for e in events if e.HasField("executionStarted"))
    registry = Registry()
    registry.add_orchestrator(orchestrator, name=started.name)
    executor = OrchestrationExecutor(
        registry, data_converter=data_converter, logger=_QUIET, maximum_timer_interval=maximum_timer_interval
    )
    if instance_id is None:
        recorded = started.orchestrationInstance.instanceId if started.HasField("orchestrationInstance") else ""
        instance_id = recorded or "test-instance"
    return executor, instance_id


def _result(
    actions: list[pb.OrchestratorAction],
    custom_status: str | None,
    converter: DataConverter | None,
    state: ReplayState | None,
    replayed: list[pb.HistoryEvent],
) -> TurnResult:
    status, output, failure = OrchestrationStatus.RUNNING, None, None
    completion = next((a.completeOrchestration for a in actions if a.HasField("completeOrchestration")), None)
    if completion is not None:
        status = OrchestrationStatus(completion.orchestrationStatus)
        output = completion.result.value if completion.HasField("result") else None
        if completion.HasField("failureDetails"):
            failure = ph.failure_details_from_pb(completion.failureDetails)
    return TurnResult(
        status=status,
        actions=[Action.from_protobuf(a) for a in actions],
        serialized_output=output,
        serialized_custom_status=custom_status,
        failure_details=failure,
        waiting_for=_waiting_for(state, replayed) if state is not None else [],
        converter=converter or default_converter(),
    )


def _waiting_for(state: ReplayState, replayed: list[pb.HistoryEvent]) -> list[str]:
    """The recorded calls whose results the code still waits for, and its external event waits."""
    ctx = state.ctx
    waiting_ids = set(ctx.pending_tasks)
    waits = [
        describe_expected_call(e) for e in replayed
        if e.eventId in waiting_ids and e.WhichOneof("eventType") not in _NOT_CALLS
    ]
    waits += [f"wait_for_external_event('{name}')" for name in ctx._event_waiters]
    return waits


_NOT_CALLS = frozenset({"orchestratorStarted", "orchestratorCompleted", "executionStarted"})
