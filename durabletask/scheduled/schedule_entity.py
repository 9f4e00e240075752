"""The schedule entity: one ``@schedule@<schedule id>`` entity per schedule.

Its state (``ScheduleState``) holds the configuration and the run bookkeeping. It
keeps itself running with delayed signals to itself: each wake-up
(``run_schedule``) starts the run that is due, if any, and signals itself again
for the next due time. Signals carry an execution token; every state change and
every wake-up issues a new token, so exactly one pending wake-up is current and
any other (a stale one after a pause or an update, or a duplicate) does nothing.
Because the sidecar commits an entity batch's state and the orchestrations it
starts in one transaction, a run is started together with the bookkeeping that
records it: a wake-up delivered again after a crash finds the run recorded and
does not start it twice. See ``durabletask.scheduled.timing`` for due times and
the catch-up policy.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import durabletask.scheduled.timing as timing
import durabletask.scheduled.transitions as transitions
from durabletask.entities import DurableEntity
from durabletask.scheduled.exceptions import (
    ScheduleClientValidationError,
    ScheduleInvalidTransitionError,
    ScheduleNotFoundError,
)
from durabletask.scheduled.models import (
    ScheduleConfiguration,
    ScheduleCreationOptions,
    ScheduleState,
    ScheduleUpdateOptions,
)
from durabletask.scheduled.schedule_status import ScheduleStatus

ENTITY_NAME = "schedule"
"""The (lower-case) entity name of schedules."""

DELETE_OPERATION = "delete"
RUN_SCHEDULE_OPERATION = "run_schedule"

_TIMING_FIELDS = frozenset({"start_at", "interval", "cron", "start_immediately_if_late"})

logger = logging.getLogger("durabletask.scheduled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Schedule(DurableEntity):
    """The entity behind a schedule: create/update/pause/resume/delete, and the ``run_schedule`` wake-up."""

    # --- helpers ---------------------------------------------------------------------------

    def _load(self) -> ScheduleState:
        state = self.get_state(ScheduleState)
        return state if state is not None else ScheduleState()

    def _key(self) -> str:
        return self.entity_context.entity_id.key

    def _existing(self, state: ScheduleState) -> ScheduleConfiguration:
        if state.status == ScheduleStatus.UNINITIALIZED or state.schedule_configuration is None:
            raise ScheduleNotFoundError(self._key())
        return state.schedule_configuration

    def _check(self, state: ScheduleState, operation: str, target: ScheduleStatus) -> None:
        if not transitions.is_valid_transition(operation, state.status, target):
            raise ScheduleInvalidTransitionError(self._key(), state.status, target, operation)

    def _wake_up_at(self, state: ScheduleState, when: datetime | None) -> None:
        self.signal_entity(self.entity_context.entity_id, RUN_SCHEDULE_OPERATION, state.execution_token, when)

    # --- operations ------------------------------------------------------------------------

    def create_schedule(self, options: ScheduleCreationOptions) -> None:
        """Create the schedule, or replace the configuration of an existing one; it becomes active."""
        if not isinstance(options, ScheduleCreationOptions):
            raise ScheduleClientValidationError(self._key(), "create_schedule needs ScheduleCreationOptions")
        if options.schedule_id != self._key():
            raise ScheduleClientValidationError(
                self._key(), f"the options are for schedule '{options.schedule_id}', not this one"
            )
        state = self._load()
        self._check(state, transitions.CREATE_SCHEDULE, ScheduleStatus.ACTIVE)
        now = _now()
        if state.status == ScheduleStatus.UNINITIALIZED or state.schedule_created_at is None:
            state.schedule_created_at = now
        state.schedule_configuration = ScheduleConfiguration.from_create_options(options)
        state.status = ScheduleStatus.ACTIVE
        state.schedule_last_modified_at = now
        state.next_run_at = None
        state.refresh_execution_token()
        self.set_state(state)
        logger.info("schedule '%s' created", self._key())
        self._wake_up_at(state, None)

    def update_schedule(self, options: ScheduleUpdateOptions) -> None:
        """Apply the set fields of ``options``; the status does not change."""
        if not isinstance(options, ScheduleUpdateOptions):
            raise ScheduleClientValidationError(self._key(), "update_schedule needs ScheduleUpdateOptions")
        state = self._load()
        config = self._existing(state)
        self._check(state, transitions.UPDATE_SCHEDULE, state.status)
        changed = config.update(options)
        if not changed:
            return
        state.schedule_last_modified_at = _now()
        if changed & _TIMING_FIELDS:
            state.next_run_at = None
        state.refresh_execution_token()
        self.set_state(state)
        logger.info("schedule '%s' updated (%s)", self._key(), ", ".join(sorted(changed)))
        if state.status == ScheduleStatus.ACTIVE:
            self._wake_up_at(state, None)

    def pause_schedule(self, _input: Any = None) -> None:
        """Stop running until resumed; pending wake-ups become stale."""
        state = self._load()
        self._existing(state)
        self._check(state, transitions.PAUSE_SCHEDULE, ScheduleStatus.PAUSED)
        state.status = ScheduleStatus.PAUSED
        state.next_run_at = None
        state.schedule_last_modified_at = _now()
        state.refresh_execution_token()
        self.set_state(state)
        logger.info("schedule '%s' paused", self._key())

    def resume_schedule(self, _input: Any = None) -> None:
        """Run again from the next due time after now (due times missed while paused are skipped)."""
        state = self._load()
        self._existing(state)
        self._check(state, transitions.RESUME_SCHEDULE, ScheduleStatus.ACTIVE)
        state.status = ScheduleStatus.ACTIVE
        state.next_run_at = None
        state.schedule_last_modified_at = _now()
        state.refresh_execution_token()
        self.set_state(state)
        logger.info("schedule '%s' resumed", self._key())
        self._wake_up_at(state, None)

    def delete(self, _input: Any = None) -> None:
        """Remove the schedule (its pending wake-up then does nothing)."""
        self._existing(self._load())
        self.set_state(None)
        logger.info("schedule '%s' deleted", self._key())

    def run_schedule(self, execution_token: str | None = None) -> None:
        """The wake-up: start the due run, if any, and sleep until the next due time."""
        state = self._load()
        if state.status == ScheduleStatus.UNINITIALIZED or state.schedule_configuration is None:
            return
        if execution_token != state.execution_token:
            logger.debug("schedule '%s': ignoring a stale wake-up", self._key())
            return
        if state.status != ScheduleStatus.ACTIVE:
            return
        config = state.schedule_configuration
        plan = timing.plan_wake_up(state, _now())
        if plan.finished:
            logger.info("schedule '%s' is past its end time (%s); deleting it", self._key(), config.end_at)
            self.set_state(None)
            return
        if plan.run_due_at is not None:
            instance_id = timing.run_instance_id(config, plan.run_due_at)
            logger.info(
                "schedule '%s': starting '%s' as '%s'", self._key(), config.orchestration_name, instance_id
            )
            self.schedule_new_orchestration(config.orchestration_name, config.orchestration_input, instance_id)
            state.last_run_at = plan.run_due_at
        state.next_run_at = plan.next_run_at
        state.refresh_execution_token()
        self.set_state(state)
        self._wake_up_at(state, plan.next_run_at)
