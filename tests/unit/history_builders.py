"""Turn-by-turn driver for replay tests: keeps a history the way a backend would."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal.replay import ExecutionResults, OrchestrationExecutor

T0 = datetime(2024, 1, 1, 12, 0, 0)


def scheduling_event(action: pb.OrchestratorAction, at: datetime) -> pb.HistoryEvent | None:
    """The history event a backend records for an action (None for completion)."""
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        a = action.scheduleTask
        return ph.new_task_scheduled_event(
            action.id, a.name, a.input.value if a.HasField("input") else None, timestamp=at
        )
    if kind == "createTimer":
        return ph.new_timer_created_event(action.id, ph.to_datetime(action.createTimer.fireAt), timestamp=at)
    if kind == "createSubOrchestration":
        s = action.createSubOrchestration
        return ph.new_sub_orchestration_created_event(
            action.id, s.name, s.instanceId, s.input.value if s.HasField("input") else None, timestamp=at
        )
    if kind == "sendEvent":
        e = action.sendEvent
        return ph.new_event_sent_event(
            action.id, e.instance.instanceId, e.name, e.data.value if e.HasField("data") else None, timestamp=at
        )
    if kind == "sendEntityMessage":
        return ph.new_entity_message_event(action, timestamp=at)
    return None


class Instance:
    """One orchestration instance driven turn by turn against an executor."""

    def __init__(
        self,
        executor: OrchestrationExecutor,
        name: str,
        input: Any = None,
        *,
        instance_id: str = "inst-1",
        version: str | None = None,
        parent_instance_id: str | None = None,
    ) -> None:
        self.executor = executor
        self.instance_id = instance_id
        self.history: list[pb.HistoryEvent] = []
        self.now = T0
        self.last: ExecutionResults | None = None
        self._start = ph.new_execution_started_event(
            name,
            instance_id,
            None if input is None else json.dumps(input),
            version=version,
            parent_instance_id=parent_instance_id,
            timestamp=T0,
        )

    def start(self) -> ExecutionResults:
        """First turn: executionStarted."""
        return self.turn(self._start)

    def turn(self, *events: pb.HistoryEvent, advance: timedelta = timedelta(seconds=1)) -> ExecutionResults:
        """Run a turn with ``events``, then record it in history as a backend would."""
        if self.history:
            self.now = self.now + advance
        new_events = [ph.new_orchestrator_started_event(self.now), *events]
        result = self.executor.execute(self.instance_id, list(self.history), new_events)
        self.history.extend(new_events)
        for action in result.actions:
            recorded = scheduling_event(action, self.now)
            if recorded is not None:
                self.history.append(recorded)
        self.history.append(ph.new_orchestrator_completed_event(self.now))
        self.last = result
        return result

    def replay_only(self, *events: pb.HistoryEvent) -> ExecutionResults:
        """Run a turn without recording it (to inspect what the engine would do)."""
        new_events = [ph.new_orchestrator_started_event(self.now + timedelta(seconds=1)), *events]
        return self.executor.execute(self.instance_id, list(self.history), new_events)


def kinds(actions: Sequence[pb.OrchestratorAction]) -> list[str]:
    """The action kinds, in order."""
    return [str(a.WhichOneof("orchestratorActionType")) for a in actions]


def completion(result: ExecutionResults) -> pb.CompleteOrchestrationAction:
    """The completeOrchestration action of a turn (asserts there is exactly one, last)."""
    assert result.actions, "no actions"
    last = result.actions[-1]
    assert last.HasField("completeOrchestration"), f"last action is {last.WhichOneof('orchestratorActionType')}"
    assert sum(a.HasField("completeOrchestration") for a in result.actions) == 1
    return last.completeOrchestration


def output(result: ExecutionResults) -> Any:
    """The decoded output of a COMPLETED turn."""
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, done.failureDetails
    return json.loads(done.result.value) if done.HasField("result") else None


def failure(result: ExecutionResults) -> pb.TaskFailureDetails:
    """The failure details of a FAILED turn."""
    done = completion(result)
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED, done
    return done.failureDetails
