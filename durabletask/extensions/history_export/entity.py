"""The export-job entity: one per job (its key is the job ID), holding the job's state.

Operations (the official extension's names and payloads):

- ``create`` ``{"config": <ExportJobConfiguration dict>, "created_at": <ISO time, optional>}``:
  starts a new job, or a finished one again from scratch, and schedules the orchestrator that
  drives it under the instance ID ``export-job-<job ID>``. Refused while the job is ACTIVE.
- ``get``: the stored state, or None.
- ``commit_checkpoint`` ``{"scanned_delta", "exported_delta", "failed_delta",
  "last_instance_key" (optional), "checkpoint_time" (optional), "failures" (optional),
  "mark_failed_on_batch" (optional)}``: adds a page's counts and moves the resume point; with
  ``mark_failed_on_batch`` and failures, the job becomes FAILED with a summary as its error.
- ``mark_completed``; ``mark_failed`` ``{"reason": ...}``; ``delete`` (clears the state).

``commit_checkpoint``, ``mark_completed`` and ``mark_failed`` on a deleted job do nothing and
return None, so an orchestrator that races a delete ends quietly. The stored state is
``ExportJobState.to_dict()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from durabletask import entities
from durabletask.extensions.history_export._common import (
    ENTITY_NAME,
    ORCHESTRATOR_NAME,
    dt_from_iso,
    logger,
    orchestrator_instance_id_for,
)
from durabletask.extensions.history_export.models import (
    ExportFailure,
    ExportJobConfiguration,
    ExportJobState,
    ExportJobStatus,
)
from durabletask.extensions.history_export.transitions import assert_valid_transition
from durabletask.worker import TaskHubGrpcWorker

_FAILURES_IN_SUMMARY = 10


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _non_negative(payload: Mapping[str, Any], key: str) -> int:
    value = int(payload.get(key, 0))
    if value < 0:
        raise ValueError(f"checkpoint {key} must be non-negative; got {value}")
    return value


def _failure_summary(failures: list[ExportFailure]) -> str:
    shown = "; ".join(f"{f.instance_id}: {f.reason}" for f in failures[:_FAILURES_IN_SUMMARY])
    hidden = len(failures) - _FAILURES_IN_SUMMARY
    return shown + (f"; ... and {hidden} more failures" if hidden > 0 else "")


class ExportJobEntity(entities.DurableEntity):
    """The state and lifecycle of one export job."""

    OP_CREATE = "create"
    OP_GET = "get"
    OP_COMMIT_CHECKPOINT = "commit_checkpoint"
    OP_MARK_COMPLETED = "mark_completed"
    OP_MARK_FAILED = "mark_failed"
    OP_DELETE = "delete"

    def _job_id(self) -> str:
        return self.entity_context.entity_id.key

    def _load(self) -> ExportJobState | None:
        stored = self.get_state()
        if stored is None:
            return None
        if not isinstance(stored, dict):
            raise TypeError(f"export job {self._job_id()!r}: stored state is a {type(stored).__name__}, not an object")
        return ExportJobState.from_dict(stored)

    def _save(self, state: ExportJobState) -> dict[str, Any]:
        state.last_modified_at = _now()
        stored = state.to_dict()
        self.set_state(stored)
        return stored

    def create(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Start the job (new, or a finished one again) and schedule its orchestrator."""
        job_id = self._job_id()
        current = self._load()
        assert_valid_transition(
            self.OP_CREATE, None if current is None else current.status, ExportJobStatus.ACTIVE, job_id=job_id
        )
        config_data = payload.get("config") if isinstance(payload, Mapping) else None
        if not isinstance(config_data, Mapping) or not config_data:
            raise ValueError(f"export job {job_id!r}: create needs a non-empty 'config' mapping")
        config = ExportJobConfiguration.from_dict(config_data)
        created_at = dt_from_iso(payload.get("created_at")) or _now()
        state = ExportJobState.new(config, created_at=created_at)
        instance_id = orchestrator_instance_id_for(job_id)
        try:
            self.schedule_new_orchestration(
                ORCHESTRATOR_NAME, input={"job_id": job_id, "config": config.to_dict()}, instance_id=instance_id
            )
        except Exception as err:  # kept on the job rather than raised, so the failure stays visible
            state.status = ExportJobStatus.FAILED
            state.last_error = f"Failed to schedule orchestrator: {type(err).__name__}: {err}"
            logger.exception("export job %r: could not schedule its orchestrator", job_id)
        else:
            state.orchestrator_instance_id = instance_id
            logger.info("export job %r created; orchestrator %s scheduled", job_id, instance_id)
        return self._save(state)

    def get(self, _: Any = None) -> dict[str, Any] | None:
        """The stored state, or None when there is no job."""
        state = self._load()
        return None if state is None else state.to_dict()

    def commit_checkpoint(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Record a page's progress (or a page that failed, which fails the job)."""
        state = self._load()
        if state is None:
            return None
        job_id = self._job_id()
        scanned = _non_negative(payload, "scanned_delta")
        exported = _non_negative(payload, "exported_delta")
        failed = _non_negative(payload, "failed_delta")
        failures = [ExportFailure.from_dict(f) for f in payload.get("failures") or []]
        fails_job = bool(payload.get("mark_failed_on_batch")) and bool(failures)
        target = ExportJobStatus.FAILED if fails_job else ExportJobStatus.ACTIVE
        assert_valid_transition(self.OP_COMMIT_CHECKPOINT, state.status, target, job_id=job_id)
        state.scanned_instances += scanned
        state.exported_instances += exported
        state.failed_instances += failed
        if "last_instance_key" in payload:
            state.checkpoint.last_instance_key = payload.get("last_instance_key")
        state.last_checkpoint_time = dt_from_iso(payload.get("checkpoint_time")) or _now()
        state.failures.extend(failures)
        if fails_job:
            state.status = ExportJobStatus.FAILED
            state.last_error = f"Batch export failed after retries. Failures: {_failure_summary(failures)}"
            logger.warning("export job %r failed: %d instances could not be exported", job_id, len(failures))
        return self._save(state)

    def mark_completed(self, _: Any = None) -> dict[str, Any] | None:
        """The job finished its window."""
        state = self._load()
        if state is None:
            return None
        assert_valid_transition(
            self.OP_MARK_COMPLETED, state.status, ExportJobStatus.COMPLETED, job_id=self._job_id()
        )
        state.status = ExportJobStatus.COMPLETED
        state.last_error = None
        return self._save(state)

    def mark_failed(self, payload: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The job failed with ``payload["reason"]`` (a failed job stays as it is)."""
        state = self._load()
        if state is None:
            return None
        assert_valid_transition(self.OP_MARK_FAILED, state.status, ExportJobStatus.FAILED, job_id=self._job_id())
        if state.status is ExportJobStatus.FAILED:
            return state.to_dict()
        reason = str(payload.get("reason", "")) if isinstance(payload, Mapping) else ""
        state.status = ExportJobStatus.FAILED
        state.last_error = reason or None
        logger.info("export job %r failed: %s", self._job_id(), reason or "(no reason)")
        return self._save(state)

    def delete(self, _: Any = None) -> None:
        """Remove the job's state (files already written stay)."""
        logger.info("export job %r deleted", self._job_id())
        super().delete()


def register(worker_instance: TaskHubGrpcWorker, *, name: str = ENTITY_NAME) -> None:
    """Add ExportJobEntity to ``worker_instance``."""
    worker_instance.add_entity(ExportJobEntity, name=name)


__all__ = [
    "ENTITY_NAME",
    "ExportJobEntity",
    "assert_valid_transition",
    "dt_from_iso",
    "orchestrator_instance_id_for",
    "register",
]
