"""Group commit: requests that arrive together are committed in one store transaction.

A thread that submits a request while no other is committing becomes the leader: it takes
every waiting request (up to ``max_batch``), commits them together, hands each its own outcome,
and passes the lead to the oldest request still waiting. Others wait for their outcome. Nothing
waits for company: a request alone is committed at once, so the batching only happens under load,
where it saves a transaction per request. When a batch's transaction fails as a whole, each of
its requests is committed on its own, so that one bad request cannot fail the others, unless
the failure is one they all share (the store is unreachable or full): then it is every one's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_BATCH = 64


class _Entry(Generic[T]):
    __slots__ = ("error", "request", "state")

    def __init__(self, request: T) -> None:
        self.request = request
        self.state = "waiting"  # -> "lead" (commit a batch) -> "done"
        self.error: BaseException | None = None


class GroupCommitter(Generic[T]):
    """Commits concurrent requests in batches (see the module docstring)."""

    def __init__(
        self,
        commit_batch: Callable[[Sequence[T]], Sequence[BaseException | None]],
        commit_one: Callable[[T], None],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        shared_failure: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self._shared_failure = shared_failure
        self._commit_batch = commit_batch
        self._commit_one = commit_one
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Entry[T]] = []
        self._leading = False
        self.batches = 0  # transactions committed for more than one request

    def submit(self, request: T) -> None:
        """Commit ``request`` (alone or with others); raises the error of its own commit."""
        error = self.submit_many([request])[0]
        if error is not None:
            raise error

    def submit_many(self, requests: Sequence[T]) -> list[BaseException | None]:
        """Commit ``requests`` (together, and with others'); returns each one's error, or None."""
        entries = [_Entry(request) for request in requests]
        with self._cond:
            self._pending.extend(entries)
            if entries and not self._leading:
                self._leading = True
                entries[0].state = "lead"
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: any(e.state == "lead" for e in entries) or all(e.state == "done" for e in entries)
                )
                leading = any(e.state == "lead" for e in entries)
            if not leading:
                return [entry.error for entry in entries]
            self._lead()

    def _lead(self) -> None:
        with self._cond:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        errors: list[BaseException | None] = [RuntimeError("the group commit stopped")] * len(batch)
        try:
            errors = self._commit(batch)
        finally:
            if len(errors) != len(batch):
                errors = [RuntimeError("the group commit lost track of its requests")] * len(batch)
            with self._cond:
                for entry, error in zip(batch, errors, strict=True):
                    entry.error = error
                    entry.state = "done"
                if self._pending:
                    self._pending[0].state = "lead"
                else:
                    self._leading = False
                self._cond.notify_all()

    def _commit(self, batch: list[_Entry[T]]) -> list[BaseException | None]:
        errors: list[BaseException | None]
        if len(batch) > 1:
            try:
                errors = list(self._commit_batch([entry.request for entry in batch]))
                self.batches += 1
                return errors
            except Exception as exc:
                if self._shared_failure(exc):  # the store is down or full: every request would fail alike
                    return [exc] * len(batch)
        errors = []
        for entry in batch:
            try:
                self._commit_one(entry.request)
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors
