"""The replay engine: an orchestration's history in, the turn's actions out.

Pure: no gRPC or I/O. Past events are replayed with ``is_replaying`` set, so the
orchestrator function rebuilds its state and re-issues its earlier actions, which
are checked against the history; then the new events run it forward. What it
asks for and has not been recorded yet is returned as actions.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal import rewind
from durabletask.internal.call_sites import code_line, describe_recorded, history_line
from durabletask.internal.registry import OrchestratorNotRegisteredError, Registry
from durabletask.internal.replay_context import RuntimeOrchestrationContext
from durabletask.internal.replay_descriptions import describe_action, describe_event, describe_expected_call
from durabletask.internal.replay_entities import ENTITY_EVENTS, process_entity_event
from durabletask.serialization import DataConverter, default_converter, input_type_of

# History event kind -> (action kind that produces it, how the code calls it).
_SCHEDULING_EVENTS: dict[str, tuple[str, str]] = {
    "taskScheduled": ("scheduleTask", "call_activity"),
    "timerCreated": ("createTimer", "create_timer"),
    "subOrchestrationInstanceCreated": ("createSubOrchestration", "call_sub_orchestrator"),
    "eventSent": ("sendEvent", "send_event"),
}

# Events that drive the orchestrator forward; held back while it is suspended.
_SUSPENDABLE_EVENTS = frozenset({
    "taskCompleted",
    "taskFailed",
    "subOrchestrationInstanceCompleted",
    "subOrchestrationInstanceFailed",
    "timerFired",
    "eventRaised",
    "entityOperationCompleted",
    "entityOperationFailed",
    "entityLockGranted",
})

# Events with nothing to replay.
_INFORMATIONAL_EVENTS = frozenset({
    "orchestratorCompleted",
    "executionCompleted",
    "executionRewound",
    "genericEvent",
    "historyState",
    "continueAsNew",
})


@dataclass
class ExecutionResults:
    """What one turn produced: the actions and the serialized custom status."""

    actions: list[pb.OrchestratorAction]
    custom_status: str | None

    @property
    def encoded_custom_status(self) -> str | None:
        """Alias of ``custom_status``."""
        return self.custom_status


_HINT = (
    "\n  The orchestrator must make the same calls in the same order on every replay;"
    " was its code changed while this instance was running, or does it depend on"
    " non-deterministic values (clock, random numbers, I/O)?"
)


class OrchestrationExecutor:
    """Runs one orchestration turn: replays history, applies new events, returns actions."""

    def __init__(
        self,
        registry: Registry,
        *,
        data_converter: DataConverter | None = None,
        logger: logging.Logger | None = None,
        maximum_timer_interval: timedelta | None = timedelta(days=3),
        default_version: str | None = None,
        exception_properties_provider: Any = None,
    ) -> None:
        self._registry = registry
        self._exception_properties_provider = exception_properties_provider
        self._converter = data_converter or default_converter()
        self._logger = logger or logging.getLogger("durabletask-worker")
        if maximum_timer_interval is not None and maximum_timer_interval <= timedelta(0):
            maximum_timer_interval = None
        self._maximum_timer_interval = maximum_timer_interval
        self._default_version = default_version

    def execute(
        self,
        instance_id: str,
        old_events: Sequence[pb.HistoryEvent],
        new_events: Sequence[pb.HistoryEvent],
    ) -> ExecutionResults:
        """Replay ``old_events``, process ``new_events`` and return the turn's actions."""
        return self.execute_turn(instance_id, old_events, new_events)[0]

    def execute_turn(
        self,
        instance_id: str,
        old_events: Sequence[pb.HistoryEvent],
        new_events: Sequence[pb.HistoryEvent],
        state: ReplayState | None = None,
    ) -> tuple[ExecutionResults, ReplayState | None]:
        """Run one turn; also return the replayed state to continue from next turn (None once finished).

        With ``state`` (what an earlier turn returned), ``old_events`` are only the past events
        after those the state has processed: the replay continues where it stopped instead of
        starting over. The result is the same as a full replay of the whole history.
        """
        if not new_events:
            raise task.OrchestrationStateError("an orchestration turn needs at least one new event")
        if state is None:
            if rewind.is_rewind_request(old_events, new_events):
                replay_tasks = functools.partial(self._replay_tasks, instance_id)
                action = rewind.rewind_action(replay_tasks, instance_id, old_events, new_events, self._logger)
                return ExecutionResults(actions=[action], custom_status=None), None
            if any(e.HasField("executionCompleted") for e in old_events):
                self._logger.warning("%s: the execution has already completed; nothing to do", instance_id)
                return ExecutionResults(actions=[], custom_status=None), None
            ctx = RuntimeOrchestrationContext(
                instance_id,
                data_converter=self._converter,
                logger=self._logger,
                maximum_timer_interval=self._maximum_timer_interval,
                default_version=self._default_version,
                exception_properties_provider=self._exception_properties_provider,
            )
            # A rewound history lost the scheduling of its failed work: replay issues it anew.
            state = ReplayState(ctx, _ReplayTurn(self, ctx), rewound=rewind.was_rewound(old_events))
        elif state.ctx.is_finished:
            raise task.OrchestrationStateError("the replayed state belongs to a finished execution")
        ctx, turn = state.ctx, state.turn
        resumed = state.processed > 0
        try:
            ctx.set_replaying(True)
            turn.replay(old_events)
            state.processed += len(old_events)
            if (old_events or resumed) and not ctx.is_finished and not state.rewound:
                turn.check_replay_consumed_actions()
            ctx.set_replaying(False)
            for event in new_events:
                turn.process(event)
                state.processed += 1
            if not ctx.is_started and not ctx.is_finished:
                raise task.OrchestrationStateError("the history has no executionStarted event")
        except task.NonDeterminismError as exc:
            self._logger.warning("%s: %s", instance_id, exc)
            ctx.set_failed(exc, drop_pending=True)
        except Exception as exc:
            ctx.set_failed(exc)
        results = ExecutionResults(actions=ctx.get_actions(), custom_status=ctx.custom_status)
        return results, None if ctx.is_finished else state

    def _replay_tasks(
        self, instance_id: str, events: Sequence[pb.HistoryEvent]
    ) -> tuple[dict[int, task.CompletableTask[Any]], dict[int, task.CompletableTask[Any]]]:
        """Replay ``events``: the task each result event resolved and the tasks still pending, by task id."""
        ctx = RuntimeOrchestrationContext(
            instance_id,
            data_converter=self._converter,
            logger=self._logger,
            maximum_timer_interval=self._maximum_timer_interval,
            default_version=self._default_version,
        )
        turn = _ReplayTurn(self, ctx)
        turn.resolved = {}
        ctx.set_replaying(True)
        turn.replay(events)
        return turn.resolved, ctx.pending_tasks

    def _decode_input(self, fn: Any, started: pb.ExecutionStartedEvent) -> Any:
        if not started.HasField("input") or started.input.value == "":
            return None
        target = input_type_of(fn)
        if target is not None and not self._converter.can_reconstruct(target):
            target = None
        return self._converter.deserialize(started.input.value, target)


class ReplayState:
    """An orchestration's replayed state between turns: its context, where replay stands, what it has seen."""

    __slots__ = ("ctx", "processed", "rewound", "trace_notes", "turn")

    def __init__(self, ctx: RuntimeOrchestrationContext, turn: _ReplayTurn, *, rewound: bool) -> None:
        self.ctx = ctx
        self.turn = turn
        self.rewound = rewound
        self.processed = 0  # history events applied so far, past and new
        self.trace_notes: Any = None  # kept for the worker's tracing (tracing_turns.TurnNotes)

    @property
    def next_action_id(self) -> int:
        """An action id the execution has not used yet."""
        return self.ctx.next_free_sequence_number


class _ReplayTurn:
    """Event-by-event processing for one execute() call."""

    def __init__(self, executor: OrchestrationExecutor, ctx: RuntimeOrchestrationContext) -> None:
        self._executor = executor
        self._ctx = ctx
        self._suspended = False
        self._held: list[pb.HistoryEvent] = []
        self._clock_set = False
        self._past: Sequence[pb.HistoryEvent] = ()  # the past events being replayed
        self._past_next = 0  # index in ``_past`` of the event after the one being applied
        self._last_replayed: pb.HistoryEvent | None = None  # the last past event applied
        self.resolved: dict[int, task.CompletableTask[Any]] | None = None  # when set, results noted by task id

    def replay(self, events: Sequence[pb.HistoryEvent]) -> None:
        """Apply past events; while doing so the engine may look at the events recorded after each one."""
        self._past = events
        try:
            for index, event in enumerate(events):
                self._past_next = index + 1
                self._last_replayed = event
                self.process(event)
        finally:
            self._past = ()
            self._past_next = 0

    def process(self, event: pb.HistoryEvent) -> None:
        """Apply one history event."""
        kind = event.WhichOneof("eventType")
        if self._suspended and kind in _SUSPENDABLE_EVENTS:
            self._held.append(event)
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)
        elif kind in _SCHEDULING_EVENTS:
            self._match_scheduling_event(event, kind)
        elif kind in ENTITY_EVENTS:
            process_entity_event(self._ctx, event, kind, _HINT)
        elif kind not in _INFORMATIONAL_EVENTS:
            raise task.OrchestrationStateError(f"cannot replay a history event of type '{kind}'")

    def check_replay_consumed_actions(self) -> None:
        """After replaying past turns, every action the code re-issued must be in history."""
        if self._ctx.pending_actions:
            first_id = min(self._ctx.pending_actions)
            action = self._ctx.pending_actions[first_id]
            last = self._last_replayed
            after = f"\n  history: nothing more; it ends with {describe_recorded(last)}" if last is not None else ""
            raise task.NonDeterminismError(
                f"Non-deterministic orchestration: on replay the code calls {describe_action(action)} "
                f"(action id {first_id}) but the history has no record of it."
                f"{code_line(describe_action(action), self._ctx.call_sites.get(first_id))}{after}{_HINT}"
            )

    # --------------------------------------------------------- lifecycle

    def _on_orchestratorStarted(self, event: pb.HistoryEvent) -> None:
        self._clock_set = True
        self._ctx.set_current_time(ph.to_datetime(event.timestamp))

    def _on_executionStarted(self, event: pb.HistoryEvent) -> None:
        ctx = self._ctx
        if ctx.is_started:
            return
        started = event.executionStarted
        if not self._clock_set and event.HasField("timestamp"):
            ctx.set_current_time(ph.to_datetime(event.timestamp))
        parent_id = None
        if started.HasField("parentInstance") and started.parentInstance.HasField("orchestrationInstance"):
            parent_id = started.parentInstance.orchestrationInstance.instanceId
        ctx.set_instance_info(
            version=started.version.value if started.HasField("version") else None,
            parent_instance_id=parent_id,
        )
        fn = self._executor._registry.get_orchestrator(started.name)
        if fn is None:
            raise OrchestratorNotRegisteredError(
                f"orchestrator '{started.name}' is not registered with this worker"
            )
        ctx.start(fn, self._executor._decode_input(fn, started))

    def _on_executionTerminated(self, event: pb.HistoryEvent) -> None:
        terminated = event.executionTerminated
        self._ctx.log(logging.INFO, "terminated")
        self._ctx.set_terminated(terminated.input.value if terminated.HasField("input") else None)

    def _on_executionSuspended(self, event: pb.HistoryEvent) -> None:
        self._ctx.log(logging.INFO, "suspended")
        self._suspended = True

    def _on_executionResumed(self, event: pb.HistoryEvent) -> None:
        if not self._suspended:
            return
        self._ctx.log(logging.INFO, "resumed")
        self._suspended = False
        held, self._held = self._held, []
        for e in held:
            self.process(e)

    # ----------------------------------------------- matching code to history

    def _match_scheduling_event(self, event: pb.HistoryEvent, kind: str) -> None:
        expected_kind, method = _SCHEDULING_EVENTS[kind]
        action_id = event.eventId
        action = self._ctx.pending_actions.pop(action_id, None)
        if action is None:
            raise task.NonDeterminismError(
                f"Non-deterministic orchestration: history has {describe_event(event)} at id {action_id} "
                f"(from {method}) but the orchestrator code made no call with this id."
                f"{self._code_position()}{history_line(describe_expected_call(event), event)}{_HINT}"
            )
        mismatch = action.WhichOneof("orchestratorActionType") != expected_kind
        if not mismatch:
            if kind == "taskScheduled":
                mismatch = action.scheduleTask.name != event.taskScheduled.name
            elif kind == "subOrchestrationInstanceCreated":
                mismatch = action.createSubOrchestration.name != event.subOrchestrationInstanceCreated.name
            elif kind == "eventSent":
                sent = event.eventSent
                mismatch = (
                    action.sendEvent.instance.instanceId != sent.instanceId
                    or action.sendEvent.name.casefold() != sent.name.casefold()
                )
        if mismatch:
            raise task.NonDeterminismError(
                f"Non-deterministic orchestration: expected {describe_action(action)} but history has "
                f"{describe_event(event)} at id {action_id}."
                f"{code_line(describe_action(action), self._ctx.call_sites.get(action_id))}"
                f"{history_line(describe_expected_call(event), event)}{_HINT}"
            )

    def _code_position(self) -> str:
        """The message line saying where the code stands when history expects a call it did not make."""
        site = self._ctx.waiting_site()
        if site is not None:
            return f"\n  code:    made no such call; it is waiting at {site}"
        return "\n  code:    made no such call; it had already finished"

    # ------------------------------------------------------ task results

    def _take_task(self, task_id: int, kind: str) -> task.CompletableTask[Any] | None:
        pending = self._ctx.pending_tasks.pop(task_id, None)
        if pending is None:
            self._ctx.log(logging.WARNING, "ignoring %s for unknown task id %d", kind, task_id)
        elif self.resolved is not None:
            self.resolved[task_id] = pending
        return pending

    def _on_taskCompleted(self, event: pb.HistoryEvent) -> None:
        done = event.taskCompleted
        call = self._take_task(done.taskScheduledId, "taskCompleted")
        if call is not None:
            self._complete(call, done.result.value, f"the result of activity task #{done.taskScheduledId}")

    def _on_subOrchestrationInstanceCompleted(self, event: pb.HistoryEvent) -> None:
        done = event.subOrchestrationInstanceCompleted
        call = self._take_task(done.taskScheduledId, "subOrchestrationInstanceCompleted")
        if call is not None:
            self._complete(call, done.result.value, f"the result of sub-orchestration #{done.taskScheduledId}")

    def _complete(self, call: task.CompletableTask[Any], payload: str, what: str) -> None:
        self._ctx.complete_with_payload(call, payload, what)
        self._ctx.resume()

    def _on_taskFailed(self, event: pb.HistoryEvent) -> None:
        failed = event.taskFailed
        call = self._take_task(failed.taskScheduledId, "taskFailed")
        if call is not None:
            self._fail(
                call,
                failed.failureDetails,
                f"Activity task #{failed.taskScheduledId} failed",
                instance_prefix=f"{self._ctx.instance_id}: ",
            )

    def _on_subOrchestrationInstanceFailed(self, event: pb.HistoryEvent) -> None:
        failed = event.subOrchestrationInstanceFailed
        call = self._take_task(failed.taskScheduledId, "subOrchestrationInstanceFailed")
        if call is not None:
            self._fail(call, failed.failureDetails, f"Sub-orchestration task #{failed.taskScheduledId} failed")

    def _fail(
        self,
        call: task.CompletableTask[Any],
        details: pb.TaskFailureDetails,
        prefix: str,
        *,
        instance_prefix: str = "",
    ) -> None:
        """Fail ``call`` (or wait to retry it); its error reads ``{instance_prefix}{prefix}: {message}``.

        The official SDK puts the instance ID before the message of failed activities only.
        """
        ctx = self._ctx
        if isinstance(call, task.RetryableTask) and not ctx.is_finished:
            delay = self._retry_delay(call, details)
            if delay is not None:
                call.increment_attempt_count()
                ctx.log(logging.INFO, "%s; attempt %d in %s", prefix, call.attempt_count, delay)
                ctx.create_timer_internal(delay, call)
                return
        call.fail(f"{instance_prefix}{prefix}: {details.errorMessage}", details)
        ctx.resume()

    def _retry_delay(self, call: task.RetryableTask[Any], details: pb.TaskFailureDetails) -> timedelta | None:
        if details.isNonRetriable:
            return None
        if not call._retry_policy.is_retryable(ph.failure_details_from_pb(details)):
            return None
        return call.compute_next_delay(self._ctx.current_utc_datetime)

    # ------------------------------------------------------------- timers

    def _on_timerFired(self, event: pb.HistoryEvent) -> None:
        ctx = self._ctx
        fired = event.timerFired
        pending = self._take_task(fired.timerId, "timerFired")
        if pending is None:
            return
        if not isinstance(pending, task.TimerTask):
            ctx.log(logging.WARNING, "ignoring timerFired for task id %d, which is not a timer", fired.timerId)
            return
        if ctx.is_finished:
            return
        # Chunks follow from the due time the engine armed, not from what the backend echoes.
        armed = pending._armed_fire_at or ctx.current_utc_datetime
        next_chunk = pending._next_chunk_fire_at(armed)
        if next_chunk is not None:
            ctx.arm_timer(pending, next_chunk)
            return
        retried = pending._retryable_parent
        pending.complete(None)
        if retried is not None:
            ctx.reschedule(retried, keep_id=self._retry_keeps_id(retried))
        else:
            ctx.resume()

    def _retry_keeps_id(self, call: task.RetryableTask[Any]) -> bool:
        """Whether the next attempt of a retried call goes under its first id (True) or a new one.

        New attempts keep the first id, as the official SDK numbers them. Our earlier versions
        gave each attempt a new id; on replay the history tells which numbering it holds: the
        first record after this point of the call (its kind and name) under its first id, or
        under the id a new attempt would have taken.
        """
        if not self._ctx.is_replaying:
            return True
        action = call._action
        if action.HasField("scheduleTask"):
            kind, name = "taskScheduled", action.scheduleTask.name
        else:
            kind, name = "subOrchestrationInstanceCreated", action.createSubOrchestration.name
        fresh_id = self._ctx.next_free_sequence_number
        for event in self._past[self._past_next:]:
            if event.WhichOneof("eventType") != kind:
                continue
            if event.eventId == action.id:
                return True
            if event.eventId == fresh_id and getattr(event, kind).name == name:
                return False
        return True

    # ----------------------------------------------------- external events

    def _on_eventRaised(self, event: pb.HistoryEvent) -> None:
        raised = event.eventRaised
        payload = raised.input.value if raised.HasField("input") else None
        if self._ctx.on_event_raised(raised.name, payload):
            self._ctx.resume()
        else:
            self._ctx.log(logging.INFO, "event '%s' buffered: nothing is waiting for it", raised.name)
