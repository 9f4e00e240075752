"""Sending results together: ``WorkBatches.CompleteActivityTasks`` and ``CompleteOrchestratorTasks``.

Our sidecar only: while the worker's stream is batched (the sidecar serves
``protos/work_batches.proto``), the results that are ready while a send of their kind is in
flight go out together in the next call (activity results then commit in one store
transaction). Nothing waits for company: a result alone is sent at once. The thread that finds
no send in flight sends, until nothing is left; the others only queue their result.

Each result's outcome is handled as the one-by-one path would: a result the sidecar refused is
replaced by a failure, a stale one is dropped, any other failure hands the work item back, and
a transient one (the whole call failing, or the store down for that result) is sent again on
its own (``CompleteActivityTask``, ``CompleteOrchestratorTask``) with its retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal.worker_completions import Outcome, Refusal

# Most results in one call, and most bytes: results share a call only up to gRPC's usual 4 MiB
# message limit, or the smaller limit a work channel's sidecar stated (a larger result goes alone,
# as it would one by one).
MAX_RESULTS_PER_CALL = 256
MAX_CALL_BYTES = 4 * 1024 * 1024
# A result's framing inside the batch (field tag and length), and the message's own (its field
# tag, length and call ID on a channel).
RESULT_FRAMING_BYTES = 6
MESSAGE_FRAMING_BYTES = 32
ACTIVITIES = ("CompleteActivityTasks", batches_pb.ActivityResultBatch)
TURNS = ("CompleteOrchestratorTasks", batches_pb.OrchestratorResultBatch)

_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass
class PendingResult:
    """A result waiting to be sent, and what to do with it on each outcome."""

    response: pb.ActivityResponse | pb.OrchestratorResponse
    subject: str  # names the result in logs
    replacement: Callable[[Refusal], Any]
    abandon: Callable[[], None]
    send_alone: Callable[[], None]  # CompleteActivityTask with retries and the same handling
    done: Callable[[], None]  # runs once the result is settled, whatever its outcome


class ResultBatcher:
    """Queues results of one kind (:data:`ACTIVITIES` or :data:`TURNS`) and sends them in batches."""

    def __init__(
        self,
        kind: tuple[str, Any],
        batch_stub: Callable[[], Any],
        settle: Callable[[Outcome, PendingResult], None],
        logger: logging.Logger,
        *,
        metadata: tuple[tuple[str, str], ...] | None,
        call_timeout: float,
        max_batch: int = MAX_RESULTS_PER_CALL,
    ) -> None:
        self._method, self._batch_type = kind
        self._batch_stub = batch_stub
        self._settle = settle
        self._logger = logger
        self._metadata = metadata
        self._call_timeout = call_timeout
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[PendingResult] = []
        self._sending = False
        self.calls = 0  # batch calls made
        self.sent_alone = 0  # results the batches did not take, sent one by one

    def submit(self, result: PendingResult) -> None:
        """Send ``result`` now, or with the next batch when a send is in flight (then return at once).

        While the stream is not batched, the result is sent alone, in the calling thread.
        """
        if self._batch_stub() is None:
            try:
                result.send_alone()
            finally:
                _run(result.done, self._logger)
            return
        with self._lock:
            self._pending.append(result)
            if self._sending:
                return
            self._sending = True
        while True:
            limit = getattr(self._batch_stub(), "max_message_bytes", MAX_CALL_BYTES)
            with self._lock:
                batch = self._take(min(limit, MAX_CALL_BYTES))
                if not batch:
                    self._sending = False
                    return
            try:
                self._send(batch)
            except BaseException:
                self._logger.exception("%s with %d results failed", self._method, len(batch))
            finally:
                for result in batch:
                    _run(result.done, self._logger)

    def _take(self, max_bytes: int) -> list[PendingResult]:
        """The next results to send together (under the lock): at most max_batch, in a message of at
        most ``max_bytes`` unless a single result is larger by itself."""
        size = MESSAGE_FRAMING_BYTES
        count = 0
        for result in self._pending[: self._max_batch]:
            size += result.response.ByteSize() + RESULT_FRAMING_BYTES
            if count and size > max_bytes:
                break
            count += 1
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    def _send(self, batch: list[PendingResult]) -> None:
        stub = self._batch_stub()
        if stub is None:  # the stream is no longer batched: one by one
            self._alone(batch)
            return
        request = self._batch_type(results=[result.response for result in batch])
        try:
            reply = getattr(stub, self._method)(request, timeout=self._call_timeout, metadata=self._metadata)
            self.calls += 1
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            self._logger.info("%s with %d results failed (%s); sending them one by one", self._method, len(batch),
                              code)
            self._alone(batch)
            return
        if len(reply.outcomes) != len(batch):
            self._logger.warning("the sidecar answered %d outcomes for %d results of %s; sending them one by one",
                                 len(reply.outcomes), len(batch), self._method)
            self._alone(batch)
            return
        for result, outcome in zip(batch, reply.outcomes, strict=True):
            if outcome.code == 0:
                continue
            settled = Outcome(_CODES.get(outcome.code, grpc.StatusCode.UNKNOWN), outcome.message)
            if settled.transient:
                self._alone([result])
            else:
                self._settle(settled, result)

    def _alone(self, results: list[PendingResult]) -> None:
        self.sent_alone += len(results)
        for result in results:
            result.send_alone()


def _run(callback: Callable[[], None], logger: logging.Logger) -> None:
    try:
        callback()
    except Exception:
        logger.exception("settling a result failed")
