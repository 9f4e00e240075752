"""The orchestrator that drives one export job (``export_job_orchestrator``).

Input: ``{"job_id", "config": <ExportJobConfiguration dict>}``, plus after continue-as-new
``"checkpoint": {"last_instance_key"}``, ``"totals": {"scanned", "exported", "failed"}`` and
``"processed_cycles"``. Each cycle it:

1. asks the entity for the job (``get``) and ends quietly when the job is gone or no longer
   ACTIVE (that is how delete and an outside ``mark_failed`` stop it);
2. lists one page of matching terminal instances from the resume point;
3. exports the page, at most ``max_parallel_exports`` at a time, each export with
   ``EXPORT_ACTIVITY_RETRY_POLICY``; a page with failures is exported again after a pause, up
   to ``MAX_BATCH_RETRY_ATTEMPTS`` times, after which the job fails with the failures listed;
4. commits the page to the entity (counts and the next resume point).

A batch job completes (``mark_completed``) after its last page; a continuous one waits
``CONTINUOUS_IDLE_DELAY`` when there is nothing new and never completes. Every
``CONTINUE_AS_NEW_FREQUENCY`` cycles the orchestrator continues as new to keep its history
short. An unexpected error fails the job (a ``mark_failed`` signal) and the orchestration.
Returns ``{"job_id", "status", "totals"}``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.extensions.history_export._common import (
    ENTITY_NAME,
    EXPORT_INSTANCE_HISTORY_ACTIVITY,
    LIST_TERMINAL_INSTANCES_ACTIVITY,
    ORCHESTRATOR_NAME,
    logger,
)
from durabletask.extensions.history_export.activities import build_list_activity_input
from durabletask.extensions.history_export.entity import ExportJobEntity
from durabletask.extensions.history_export.models import ExportJobConfiguration, ExportJobStatus, ExportMode
from durabletask.worker import TaskHubGrpcWorker

EXPORT_ACTIVITY_RETRY_POLICY = task.RetryPolicy(
    first_retry_interval=timedelta(seconds=15),
    max_number_of_attempts=3,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=60),
)
"""Retries of one ``export_instance_history`` call that raised (15 s, then 30 s)."""

CONTINUE_AS_NEW_FREQUENCY = 5
"""Cycles per execution before continuing as new."""

MAX_BATCH_RETRY_ATTEMPTS = 3
"""Times a page with failed exports is attempted before the job fails."""

CONTINUOUS_IDLE_DELAY = timedelta(minutes=1)
"""How long a continuous job waits when no new instance has completed."""

_BATCH_RETRY_FIRST_DELAY = timedelta(seconds=60)
_BATCH_RETRY_MAX_DELAY = timedelta(seconds=300)

# Test hooks: set to short delays so tests need not wait minutes.
_BATCH_RETRY_BACKOFF_OVERRIDE: timedelta | None = None
_CONTINUOUS_IDLE_DELAY_OVERRIDE: timedelta | None = None


def _batch_retry_delay(attempt: int) -> timedelta:
    if _BATCH_RETRY_BACKOFF_OVERRIDE is not None:
        return _BATCH_RETRY_BACKOFF_OVERRIDE
    return min(_BATCH_RETRY_FIRST_DELAY * (2 ** (attempt - 1)), _BATCH_RETRY_MAX_DELAY)


def _idle_delay() -> timedelta:
    return _CONTINUOUS_IDLE_DELAY_OVERRIDE or CONTINUOUS_IDLE_DELAY


def _export_page(
    ctx: task.OrchestrationContext, instance_ids: list[str], config: ExportJobConfiguration
) -> Generator[task.Task[Any], Any, list[dict[str, Any]]]:
    """Export ``instance_ids`` in chunks of ``max_parallel_exports``; the activities' results, in order."""
    common = {"format": config.format.to_dict(), "destination": config.destination.to_dict()}
    results: list[dict[str, Any]] = []
    step = config.max_parallel_exports
    for start in range(0, len(instance_ids), step):
        calls: list[task.Task[Any]] = [
            ctx.call_activity(
                EXPORT_INSTANCE_HISTORY_ACTIVITY,
                input={"instance_id": iid, **common},
                retry_policy=EXPORT_ACTIVITY_RETRY_POLICY,
            )
            for iid in instance_ids[start : start + step]
        ]
        results.extend((yield task.when_all(calls)))
    return results


def export_job_orchestrator(
    ctx: task.OrchestrationContext, input: Mapping[str, Any]
) -> Generator[task.Task[Any], Any, Any]:
    """Drive export job ``input["job_id"]`` (see the module's description)."""
    job_id = str(input["job_id"])
    log = ctx.create_replay_safe_logger(logger)
    config_data = input["config"]
    if not isinstance(config_data, Mapping):
        raise TypeError("export_job_orchestrator: 'config' must be a mapping")
    config = ExportJobConfiguration.from_dict(config_data)
    checkpoint = input.get("checkpoint") or {}
    token: str | None = checkpoint.get("last_instance_key")
    cycles = int(input.get("processed_cycles", 0))
    given = input.get("totals")
    given_totals: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    totals = {key: int(given_totals.get(key, 0)) for key in ("scanned", "exported", "failed")}
    entity_id = task.EntityInstanceId(ENTITY_NAME, job_id)
    status_names = [s.name for s in config.filter.effective_runtime_status()]

    def summary(status: str | None) -> dict[str, Any]:
        return {"job_id": job_id, "status": status, "totals": dict(totals)}

    try:
        while True:
            cycles += 1
            if cycles > CONTINUE_AS_NEW_FREQUENCY:
                ctx.continue_as_new({
                    "job_id": job_id,
                    "config": dict(config_data),
                    "checkpoint": {"last_instance_key": token},
                    "totals": dict(totals),
                    "processed_cycles": 0,
                })
                return None
            current = yield ctx.call_entity(entity_id, ExportJobEntity.OP_GET)
            if current is None:
                log.info("export job %r was deleted; its orchestrator ends", job_id)
                return summary("Cancelled")
            if current.get("status") != ExportJobStatus.ACTIVE.value:
                log.info("export job %r is %s; its orchestrator ends", job_id, current.get("status"))
                return summary(current.get("status"))

            page = yield ctx.call_activity(
                LIST_TERMINAL_INSTANCES_ACTIVITY,
                input=build_list_activity_input(
                    runtime_status_names=status_names,
                    completed_time_from=config.filter.completed_time_from,
                    completed_time_to=config.filter.completed_time_to,
                    page_size=config.max_instances_per_batch,
                    continuation_token=token,
                ),
            )
            instance_ids = [str(i) for i in page.get("instance_ids") or []]
            if not instance_ids:
                if config.mode is ExportMode.CONTINUOUS:
                    yield ctx.create_timer(ctx.current_utc_datetime + _idle_delay())
                    continue
                # a batch job ends on an empty page, even one that came with a token
                yield ctx.call_entity(
                    entity_id,
                    ExportJobEntity.OP_COMMIT_CHECKPOINT,
                    {"scanned_delta": 0, "exported_delta": 0, "failed_delta": 0},
                )
                break

            results: list[dict[str, Any]] = []
            for attempt in range(1, MAX_BATCH_RETRY_ATTEMPTS + 1):
                results = yield from _export_page(ctx, instance_ids, config)
                if all(r.get("success") for r in results) or attempt == MAX_BATCH_RETRY_ATTEMPTS:
                    break
                yield ctx.create_timer(ctx.current_utc_datetime + _batch_retry_delay(attempt))
            failed = [r for r in results if not r.get("success")]
            exported = len(results) - len(failed)
            totals["scanned"] += len(instance_ids)
            totals["exported"] += exported
            totals["failed"] += len(failed)
            if failed:
                when = ctx.current_utc_datetime.isoformat()
                yield ctx.call_entity(
                    entity_id,
                    ExportJobEntity.OP_COMMIT_CHECKPOINT,
                    {
                        "scanned_delta": 0,
                        "exported_delta": 0,
                        "failed_delta": len(failed),
                        "failures": [
                            {
                                "instance_id": r["instance_id"],
                                "reason": r.get("error") or "Unknown error",
                                "attempt_count": MAX_BATCH_RETRY_ATTEMPTS,
                                "last_attempt": when,
                            }
                            for r in failed
                        ],
                        "mark_failed_on_batch": True,
                    },
                )
                log.warning("export job %r failed: %d instances could not be exported", job_id, len(failed))
                return summary(ExportJobStatus.FAILED.value)

            next_token = page.get("continuation_token")
            next_token = None if next_token is None else str(next_token)
            yield ctx.call_entity(
                entity_id,
                ExportJobEntity.OP_COMMIT_CHECKPOINT,
                {
                    "scanned_delta": len(instance_ids),
                    "exported_delta": exported,
                    "failed_delta": 0,
                    # where to resume: the next page's token, or (none left) the token of this page
                    "last_instance_key": next_token or token,
                },
            )
            if next_token:
                token = next_token
                continue
            if config.mode is ExportMode.CONTINUOUS:
                yield ctx.create_timer(ctx.current_utc_datetime + _idle_delay())
                continue
            break

        yield ctx.call_entity(entity_id, ExportJobEntity.OP_MARK_COMPLETED)
        return summary(ExportJobStatus.COMPLETED.value)
    except Exception as err:
        # a signal, not a call: if the entity is what failed, calling it would fail again
        ctx.signal_entity(entity_id, ExportJobEntity.OP_MARK_FAILED, {"reason": f"{type(err).__name__}: {err}"})
        raise


def register(worker_instance: TaskHubGrpcWorker) -> None:
    """Add ``export_job_orchestrator`` to ``worker_instance``."""
    worker_instance.add_orchestrator(export_job_orchestrator)


__all__ = [
    "CONTINUE_AS_NEW_FREQUENCY",
    "CONTINUOUS_IDLE_DELAY",
    "EXPORT_ACTIVITY_RETRY_POLICY",
    "MAX_BATCH_RETRY_ATTEMPTS",
    "ORCHESTRATOR_NAME",
    "export_job_orchestrator",
    "register",
]
