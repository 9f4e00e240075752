"""Errors of the history-export extension.

Each one is also the built-in exception closest in meaning (``ValueError`` for a refused state
change, ``LookupError`` for an unknown job), so existing ``except`` clauses keep catching them.
"""

from __future__ import annotations


class ExportJobError(Exception):
    """Base of the export-job errors; ``job_id`` names the job when known."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class ExportJobInvalidTransitionError(ExportJobError, ValueError):
    """An operation on the export-job entity that its current status does not allow."""

    def __init__(
        self,
        operation: str,
        from_status: str | None,
        to_status: str | None,
        *,
        job_id: str | None = None,
    ) -> None:
        current = "no job" if from_status is None else repr(from_status)
        super().__init__(
            f"Operation {operation!r} cannot transition export job {job_id!r} from {current} "
            f"to {to_status!r}",
            job_id=job_id,
        )
        self.operation = operation
        self.from_status = from_status
        self.to_status = to_status


class ExportJobNotFoundError(ExportJobError, LookupError):
    """No export job with this ID exists."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Export job {job_id!r} was not found", job_id=job_id)


__all__ = ["ExportJobError", "ExportJobInvalidTransitionError", "ExportJobNotFoundError"]
