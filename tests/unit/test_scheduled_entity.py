"""The schedule entity run by the real entity executor, with a synthetic clock (no gRPC).

Also the client's mapping of failed operations to schedule errors.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask.client import OrchestrationState, OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entity_executor import EntityExecutor
from durabletask.internal.registry import Registry
from durabletask.scheduled import (
    ScheduleClientValidationError,
    ScheduleCreationOptions,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
    ScheduleStatus,
    ScheduleUpdateOptions,
    schedule_entity,
)
from durabletask.scheduled import (
    client as schedule_client,
)
from durabletask.scheduled.models import ScheduleState
from durabletask.serialization import JsonDataConverter
from durabletask.task import FailureDetails

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SEC = timedelta(seconds=1)
CONVERTER = JsonDataConverter()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Driver:
    """Runs one operation at a time on one schedule entity, keeping its stored state."""

    def __init__(self, key: str = "s1") -> None:
        registry = Registry()
        registry.add_entity(schedule_entity.Schedule, schedule_entity.ENTITY_NAME)
        self.executor = EntityExecutor(registry)
        self.instance_id = f"@schedule@{key}"
        self.stored: str | None = None

    def run(self, operation: str, value: Any = None) -> tuple[Any, list[pb.OperationAction]]:
        req = pb.EntityBatchRequest(instanceId=self.instance_id)
        if self.stored is not None:
            req.entityState.value = self.stored
        op = req.operations.add(operation=operation, requestId="r")
        encoded = CONVERTER.serialize(value)
        if encoded is not None:
            op.input.value = encoded
        result = self.executor.run_batch(req, "token")
        self.stored = result.entityState.value if result.HasField("entityState") else None
        outcome = result.results[0]
        if outcome.HasField("failure"):
            details = outcome.failure.failureDetails
            return ("failed", details.errorType.rsplit(".", 1)[-1], details.errorMessage), list(result.actions)
        return None, list(result.actions)

    @property
    def state(self) -> ScheduleState | None:
        if self.stored is None:
            return None
        return CONVERTER.deserialize(self.stored, ScheduleState)  # type: ignore[no-any-return]

    def wake(self) -> tuple[Any, list[pb.OperationAction]]:
        state = self.state
        assert state is not None
        return self.run("run_schedule", state.execution_token)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(schedule_entity, "_now", fake)
    return fake


def options(**kwargs: Any) -> ScheduleCreationOptions:
    kwargs.setdefault("interval", 10 * SEC)
    return ScheduleCreationOptions("s1", "orch", orchestration_input={"n": 1}, **kwargs)


def signals(actions: list[pb.OperationAction]) -> list[pb.SendSignalAction]:
    return [a.sendSignal for a in actions if a.HasField("sendSignal")]


def starts(actions: list[pb.OperationAction]) -> list[pb.StartNewOrchestrationAction]:
    return [a.startNewOrchestration for a in actions if a.HasField("startNewOrchestration")]


def test_create_activates_and_wakes_itself_at_once(clock: Clock) -> None:
    driver = Driver()
    outcome, actions = driver.run("create_schedule", options())
    assert outcome is None
    state = driver.state
    assert state is not None and state.status is ScheduleStatus.ACTIVE and state.schedule_created_at == T0
    [signal] = signals(actions)
    assert signal.instanceId == "@schedule@s1" and signal.name == "run_schedule"
    assert json.loads(signal.input.value) == state.execution_token
    assert not signal.HasField("scheduledTime")
    assert json.loads(driver.stored or "")["Status"] == 1


def test_wake_ups_run_on_the_grid_with_deterministic_ids_and_stale_tokens_do_nothing(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    clock.now = T0 + SEC / 100
    first_token = driver.state.execution_token  # type: ignore[union-attr]
    _, actions = driver.wake()
    assert starts(actions) == []
    [armed] = signals(actions)
    assert armed.scheduledTime.ToDatetime(timezone.utc) == T0 + 10 * SEC
    assert driver.state.next_run_at == T0 + 10 * SEC  # type: ignore[union-attr]

    # The token used is no longer current: delivering it again changes nothing.
    before = driver.stored
    _, actions = driver.run("run_schedule", first_token)
    assert actions == [] and driver.stored == before

    clock.now = T0 + 10 * SEC + SEC / 100
    _, actions = driver.wake()
    [start] = starts(actions)
    assert start.instanceId == "s1-2024-05-01T12:00:10+00:00" and start.name == "orch"
    assert json.loads(start.input.value) == {"n": 1}
    [armed] = signals(actions)
    assert armed.scheduledTime.ToDatetime(timezone.utc) == T0 + 20 * SEC
    state = driver.state
    assert state is not None and state.last_run_at == T0 + 10 * SEC and state.next_run_at == T0 + 20 * SEC


def test_a_late_wake_up_starts_one_catch_up_run(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    driver.wake()
    clock.now = T0 + 47 * SEC  # due times 10, 20, 30, 40 s all passed
    _, actions = driver.wake()
    assert [s.instanceId for s in starts(actions)] == ["s1-2024-05-01T12:00:10+00:00"]
    assert driver.state.next_run_at == T0 + 50 * SEC  # type: ignore[union-attr]


def test_pause_and_resume_transitions(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    token_before = driver.state.execution_token  # type: ignore[union-attr]
    outcome, actions = driver.run("pause_schedule")
    assert outcome is None and actions == []
    state = driver.state
    assert state is not None and state.status is ScheduleStatus.PAUSED and state.next_run_at is None
    assert state.execution_token != token_before
    outcome, _ = driver.run("run_schedule", token_before)
    assert outcome is None and driver.state.status is ScheduleStatus.PAUSED  # type: ignore[union-attr]

    outcome, _ = driver.run("pause_schedule")
    assert outcome[:2] == ("failed", "ScheduleInvalidTransitionError")
    assert "from 'Paused' to 'Paused'" in outcome[2]

    outcome, actions = driver.run("resume_schedule")
    assert outcome is None and driver.state.status is ScheduleStatus.ACTIVE  # type: ignore[union-attr]
    assert [s.name for s in signals(actions)] == ["run_schedule"]
    outcome, _ = driver.run("resume_schedule")
    assert outcome[:2] == ("failed", "ScheduleInvalidTransitionError")
    assert "from 'Active' to 'Active'" in outcome[2]


@pytest.mark.parametrize(
    ("operation", "value"),
    [("pause_schedule", None), ("resume_schedule", None), ("delete", None),
     ("update_schedule", ScheduleUpdateOptions(interval=SEC))],
)
def test_operations_on_an_unknown_schedule_fail_with_not_found(clock: Clock, operation: str, value: Any) -> None:
    driver = Driver()
    outcome, actions = driver.run(operation, value)
    assert outcome[:2] == ("failed", "ScheduleNotFoundError") and actions == []
    assert driver.stored is None


def test_delete_clears_the_state_and_later_wake_ups_do_nothing(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    token = driver.state.execution_token  # type: ignore[union-attr]
    assert driver.run("delete") == (None, [])
    assert driver.stored is None
    assert driver.run("run_schedule", token) == (None, [])
    assert driver.stored is None


def test_update_changes_and_rearms(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    driver.wake()
    assert driver.state.next_run_at == T0 + 10 * SEC  # type: ignore[union-attr]

    # Input only: the due time stays.
    outcome, actions = driver.run("update_schedule", ScheduleUpdateOptions(orchestration_input={"n": 2}))
    assert outcome is None and len(signals(actions)) == 1
    assert driver.state.next_run_at == T0 + 10 * SEC  # type: ignore[union-attr]
    # Interval: the due time is recomputed by the next wake-up.
    outcome, actions = driver.run("update_schedule", ScheduleUpdateOptions(interval=timedelta(hours=1)))
    assert outcome is None and driver.state.next_run_at is None  # type: ignore[union-attr]
    clock.now = T0 + 2 * SEC
    driver.wake()
    state = driver.state
    assert state is not None and state.next_run_at == T0 + timedelta(hours=1)
    assert state.to_description().orchestration_input == {"n": 2}
    # Nothing changes: no new token, no wake-up.
    token = state.execution_token
    assert driver.run("update_schedule", ScheduleUpdateOptions(orchestration_input={"n": 2})) == (None, [])
    assert driver.state.execution_token == token  # type: ignore[union-attr]


def test_update_of_a_paused_schedule_does_not_wake_it(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    driver.run("pause_schedule")
    outcome, actions = driver.run("update_schedule", ScheduleUpdateOptions(interval=timedelta(minutes=5)))
    assert outcome is None and actions == []
    assert driver.state.status is ScheduleStatus.PAUSED  # type: ignore[union-attr]


def test_invalid_update_is_refused_and_changes_nothing(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options(start_at=T0 + 60 * SEC))
    before = driver.stored
    outcome, actions = driver.run("update_schedule", ScheduleUpdateOptions(end_at=T0))
    assert outcome[:2] == ("failed", "ScheduleClientValidationError") and "before start_at" in outcome[2]
    assert actions == [] and driver.stored == before


def test_create_with_options_for_another_schedule_is_refused(clock: Clock) -> None:
    driver = Driver(key="other")
    outcome, _ = driver.run("create_schedule", options())
    assert outcome[:2] == ("failed", "ScheduleClientValidationError") and "not this one" in outcome[2]
    assert driver.stored is None


def test_create_again_replaces_the_configuration_and_reactivates(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options())
    driver.run("pause_schedule")
    clock.now = T0 + 5 * SEC
    outcome, actions = driver.run("create_schedule", options(interval=30 * SEC))
    assert outcome is None and len(signals(actions)) == 1
    state = driver.state
    assert state is not None and state.status is ScheduleStatus.ACTIVE
    assert state.schedule_created_at == T0 and state.schedule_last_modified_at == T0 + 5 * SEC
    assert state.to_description().interval == 30 * SEC


def test_past_end_at_deletes_the_schedule(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", options(end_at=T0 + 15 * SEC))
    driver.wake()
    clock.now = T0 + 10 * SEC
    assert len(starts(driver.wake()[1])) == 1
    clock.now = T0 + 20 * SEC
    outcome, actions = driver.wake()
    assert outcome is None and actions == [] and driver.stored is None


def test_cron_schedule_wakes_at_matching_minutes(clock: Clock) -> None:
    driver = Driver()
    driver.run("create_schedule", ScheduleCreationOptions("s1", "orch", cron="*/15 * * * *"))
    _, actions = driver.wake()
    assert signals(actions)[0].scheduledTime.ToDatetime(timezone.utc) == T0 + timedelta(minutes=15)


# --- the client's reading of failed operations ------------------------------------------------------


def _failure(error_type: str, message: str, inner: FailureDetails | None = None) -> FailureDetails:
    return FailureDetails(message=message, error_type=error_type, stack_trace=None, inner_failure=inner)


def _failed_state(failure: FailureDetails | None, status: OrchestrationStatus = OrchestrationStatus.FAILED
                  ) -> OrchestrationState:
    now = T0
    return OrchestrationState(
        instance_id="op", name="execute_schedule_operation_orchestrator", runtime_status=status,
        created_at=now, last_updated_at=now, serialized_input=None, serialized_output=None,
        serialized_custom_status=None, failure_details=failure,
    )


def test_entity_errors_inside_the_failure_chain_become_schedule_errors() -> None:
    transition = _failure(
        "durabletask.task.TaskFailedError", "Operation failed",
        _failure("durabletask.entities.EntityOperationFailedException", "failed",
                 _failure("durabletask.scheduled.exceptions.ScheduleInvalidTransitionError",
                          "schedule 's1': ... cannot go from 'Paused' to 'Paused'")),
    )
    with pytest.raises(ScheduleInvalidTransitionError) as info:
        schedule_client._raise_unless_completed("s1", "pause_schedule", _failed_state(transition))
    assert info.value.from_status is ScheduleStatus.PAUSED and info.value.to_status is ScheduleStatus.PAUSED
    assert info.value.operation_name == "pause_schedule" and isinstance(info.value, RuntimeError)

    missing = _failure("x.TaskFailedError", "failed", _failure("a.b.ScheduleNotFoundError", "nope"))
    with pytest.raises(ScheduleNotFoundError):
        schedule_client._raise_unless_completed("s1", "delete", _failed_state(missing))

    invalid = _failure("x.ScheduleClientValidationError", "invalid schedule 's1': end_at is before start_at")
    with pytest.raises(ScheduleClientValidationError) as bad:
        schedule_client._raise_unless_completed("s1", "update_schedule", _failed_state(invalid))
    assert bad.value.reason == "end_at is before start_at" and isinstance(bad.value, RuntimeError)


def test_other_failures_are_runtime_errors_naming_the_operation() -> None:
    other = _failure("durabletask.worker.OrchestratorNotRegisteredError", "not registered")
    with pytest.raises(RuntimeError, match="Failed to 'pause_schedule' schedule 's1': not registered"):
        schedule_client._raise_unless_completed("s1", "pause_schedule", _failed_state(other))
    with pytest.raises(RuntimeError, match="ended as TERMINATED"):
        schedule_client._raise_unless_completed("s1", "pause_schedule",
                                                _failed_state(None, OrchestrationStatus.TERMINATED))
    schedule_client._raise_unless_completed("s1", "pause_schedule", _failed_state(None, OrchestrationStatus.COMPLETED))


def test_transition_errors_written_by_the_official_worker_are_read_too() -> None:
    official = _failure(
        "durabletask.task.TaskFailedError", "failed",
        _failure("durabletask.scheduled.exceptions.ScheduleInvalidTransitionError",
                 "Invalid state transition for schedule '': operation 'pause_schedule' cannot transition "
                 "from 'ScheduleStatus.UNINITIALIZED' to 'ScheduleStatus.PAUSED'."),
    )
    with pytest.raises(ScheduleInvalidTransitionError) as info:
        schedule_client._raise_unless_completed("s1", "pause_schedule", _failed_state(official))
    assert info.value.from_status is ScheduleStatus.UNINITIALIZED and info.value.to_status is ScheduleStatus.PAUSED
    assert info.value.schedule_id == "s1"
