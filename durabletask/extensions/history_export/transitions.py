"""Which export-job entity operation may move a job from which status to which.

The key's status None stands for "no job yet" (or a deleted one). ``delete`` and ``get`` are
allowed in every status and are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping

from durabletask.extensions.history_export.exceptions import ExportJobInvalidTransitionError
from durabletask.extensions.history_export.models import ExportJobStatus

_ACTIVE = ExportJobStatus.ACTIVE
_COMPLETED = ExportJobStatus.COMPLETED
_FAILED = ExportJobStatus.FAILED

TRANSITIONS: Mapping[tuple[str, ExportJobStatus | None], frozenset[ExportJobStatus]] = {
    # create starts a new job, or starts a finished one again from scratch
    ("create", None): frozenset({_ACTIVE}),
    ("create", _COMPLETED): frozenset({_ACTIVE}),
    ("create", _FAILED): frozenset({_ACTIVE}),
    # a checkpoint keeps the job active, or fails it when a page could not be exported
    ("commit_checkpoint", _ACTIVE): frozenset({_ACTIVE, _FAILED}),
    ("mark_completed", _ACTIVE): frozenset({_COMPLETED}),
    # failing a failed job again is a no-op
    ("mark_failed", _ACTIVE): frozenset({_FAILED}),
    ("mark_failed", _FAILED): frozenset({_FAILED}),
}


def is_valid_transition(operation: str, from_status: ExportJobStatus | None, to_status: ExportJobStatus) -> bool:
    """Whether ``operation`` may take a job from ``from_status`` to ``to_status``."""
    return to_status in TRANSITIONS.get((operation, from_status), frozenset())


def assert_valid_transition(
    operation: str,
    from_status: ExportJobStatus | None,
    to_status: ExportJobStatus,
    *,
    job_id: str | None = None,
) -> None:
    """Raise ExportJobInvalidTransitionError unless ``operation`` may make this change."""
    if not is_valid_transition(operation, from_status, to_status):
        raise ExportJobInvalidTransitionError(
            operation,
            None if from_status is None else from_status.value,
            to_status.value,
            job_id=job_id,
        )


__all__ = ["TRANSITIONS", "assert_valid_transition", "is_valid_transition"]
