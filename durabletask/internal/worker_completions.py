"""Delivering work-item results to the sidecar: retries, refused results and hand-backs.

A completion the sidecar cannot take is never just logged:

- transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, not connected, and RESOURCE_EXHAUSTED
  that is not about the message's size: a full store, a quota, throttling) are retried a few
  times with a growing delay, then the work item is handed back (Abandon*WorkItem) so the
  sidecar offers it again;
- a result refused as too large (RESOURCE_EXHAUSTED naming a message size) or invalid
  (INVALID_ARGUMENT) is replaced by a failure that names the problem: the activity fails, the
  orchestration ends FAILED, the entity batch's operations fail;
- a stale token (NOT_FOUND) means the sidecar no longer holds the item: nothing to do;
- anything else hands the work item back.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
DEFAULT_RETRY_DELAYS = (0.2, 0.4, 0.8, 1.6)

TOO_LARGE_ERROR_TYPE = "MessageTooLarge"
REFUSED_ERROR_TYPE = "CompletionRefused"

# gRPC's wording for an oversize message: "... larger than max (<size> vs. <limit>)".
_SIZES = re.compile(r"\((\d+) vs\. (\d+)\)")
_SIZE_WORDS = ("larger than max", "too large", "message size")

StubProvider = Callable[[], Any]


@dataclass(frozen=True)
class Outcome:
    """The result of one call: ``code`` is None on success."""

    code: grpc.StatusCode | None
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def transient(self) -> bool:
        """Worth sending again later: the sidecar or its store may take it then."""
        if self.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return not about_size(self.details)
        return self.code in TRANSIENT_CODES

    @property
    def refused(self) -> bool:
        """The result itself can never be taken (too large or invalid): send a failure instead."""
        if self.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return about_size(self.details)
        return self.code == grpc.StatusCode.INVALID_ARGUMENT


def about_size(details: str) -> bool:
    """Whether a RESOURCE_EXHAUSTED message is about a message's size (not a full store or a quota)."""
    lowered = details.lower()
    return _SIZES.search(details) is not None or any(words in lowered for words in _SIZE_WORDS)


@dataclass(frozen=True)
class Refusal:
    """Why the sidecar (or this worker's own channel) refused a completion."""

    code: grpc.StatusCode
    details: str

    @property
    def too_large(self) -> bool:
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and about_size(self.details)

    def failure_details(self, subject: str) -> pb.TaskFailureDetails:
        """Failure details naming ``subject`` (e.g. "the result of activity 'x'") and the problem."""
        if self.too_large:
            sizes = _SIZES.search(self.details)
            if sizes is not None:
                message = (
                    f"{subject} is too large to deliver: the message of {sizes.group(1)} bytes exceeds the "
                    f"maximum message size of {sizes.group(2)} bytes ({self.details})"
                )
            else:
                message = f"{subject} is too large to deliver ({self.details})"
            error_type = TOO_LARGE_ERROR_TYPE
        else:
            message = f"the sidecar refused {subject}: {self.details}"
            error_type = REFUSED_ERROR_TYPE
        return pb.TaskFailureDetails(errorType=error_type, errorMessage=message, isNonRetriable=True)


def failed_activity_response(req: pb.ActivityRequest, response: pb.ActivityResponse, refusal: Refusal) -> pb.ActivityResponse:
    """The activity's completion turned into a failure that names the refusal."""
    return activity_failure(response, refusal.failure_details(f"the result of activity '{req.name}'"))


def activity_failure(response: pb.ActivityResponse, details: pb.TaskFailureDetails) -> pb.ActivityResponse:
    """The activity's completion turned into the failure ``details``."""
    failed = pb.ActivityResponse(
        instanceId=response.instanceId, taskId=response.taskId, completionToken=response.completionToken
    )
    failed.failureDetails.CopyFrom(details)
    return failed


def failed_turn_response(
    response: pb.OrchestratorResponse, action_id: int, refusal: Refusal
) -> pb.OrchestratorResponse:
    """A turn that ends the orchestration FAILED, naming the refusal (``action_id``: one not used yet)."""
    details = refusal.failure_details(f"the response of orchestration '{response.instanceId}'")
    return turn_failure(response, action_id, details)


def turn_failure(
    response: pb.OrchestratorResponse, action_id: int, details: pb.TaskFailureDetails
) -> pb.OrchestratorResponse:
    """A turn that ends the orchestration FAILED with ``details`` (``action_id``: one not used yet)."""
    failed = pb.OrchestratorResponse(instanceId=response.instanceId, completionToken=response.completionToken)
    if response.HasField("orchestrationTraceContext"):
        failed.orchestrationTraceContext.CopyFrom(response.orchestrationTraceContext)
    action = failed.actions.add(id=action_id)
    action.completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_FAILED
    action.completeOrchestration.failureDetails.CopyFrom(details)
    return failed


def failed_batch_result(
    req: pb.EntityBatchRequest | pb.EntityRequest, result: pb.EntityBatchResult, refusal: Refusal
) -> pb.EntityBatchResult:
    """The batch with every operation failed, naming the refusal."""
    details = refusal.failure_details(f"the results of the operation batch of entity '{req.instanceId}'")
    return batch_failure(req, result, details)


def batch_failure(
    req: pb.EntityBatchRequest | pb.EntityRequest, result: pb.EntityBatchResult, details: pb.TaskFailureDetails
) -> pb.EntityBatchResult:
    """The batch with every operation failed with ``details``, the entity's state left as it was and no actions."""
    failed = pb.EntityBatchResult(completionToken=result.completionToken, operationInfos=result.operationInfos)
    if req.HasField("entityState"):
        failed.entityState.CopyFrom(req.entityState)
    for original in result.results:
        outcome = original.success if original.HasField("success") else original.failure
        op = failed.results.add().failure
        op.failureDetails.CopyFrom(details)
        if outcome.HasField("startTimeUtc"):
            op.startTimeUtc.CopyFrom(outcome.startTimeUtc)
        if outcome.HasField("endTimeUtc"):
            op.endTimeUtc.CopyFrom(outcome.endTimeUtc)
    return failed


class CompletionSender:
    """Sends completions and hand-backs over the worker's current connection."""

    def __init__(
        self,
        stub_provider: StubProvider,
        logger: logging.Logger,
        *,
        metadata: tuple[tuple[str, str], ...] | None,
        call_timeout: float,
        stopping: threading.Event,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self._stub_provider = stub_provider
        self._logger = logger
        self._metadata = metadata
        self._call_timeout = call_timeout
        self._stopping = stopping
        self._retry_delays = tuple(retry_delays)

    def call(self, method: str, request: Any, timeout: float | None = None) -> Outcome:
        """One attempt of ``method``; never raises."""
        stub = self._stub_provider()
        if stub is None:
            return Outcome(grpc.StatusCode.UNAVAILABLE, "not connected to the sidecar")
        try:
            getattr(stub, method)(request, timeout=timeout or self._call_timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call):
                return Outcome(err.code(), err.details() or "")
            return Outcome(grpc.StatusCode.UNKNOWN, str(err))
        except Exception as exc:  # a broken stub or request: report, never raise into the worker
            self._logger.exception("%s failed", method)
            return Outcome(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        return Outcome(None)

    def history(self, instance_id: str, execution_id: str) -> list[pb.HistoryEvent] | Outcome:
        """The stored history of an instance's execution (one attempt), or the failure; never raises."""
        stub = self._stub_provider()
        if stub is None:
            return Outcome(grpc.StatusCode.UNAVAILABLE, "not connected to the sidecar")
        request = pb.StreamInstanceHistoryRequest(instanceId=instance_id, forWorkItemProcessing=True)
        request.executionId.value = execution_id
        try:
            chunks = stub.StreamInstanceHistory(request, timeout=self._call_timeout, metadata=self._metadata)
            return [event for chunk in chunks for event in chunk.events]
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call):
                return Outcome(err.code(), err.details() or "")
            return Outcome(grpc.StatusCode.UNKNOWN, str(err))
        except Exception as exc:
            self._logger.exception("StreamInstanceHistory failed")
            return Outcome(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")

    def history_with_retries(self, instance_id: str, execution_id: str) -> list[pb.HistoryEvent] | Outcome:
        """:meth:`history`, retried after transient failures like a completion."""
        delays = iter(self._retry_delays)
        while True:
            history = self.history(instance_id, execution_id)
            if isinstance(history, list) or not history.transient:
                return history
            delay = next(delays, None)
            if delay is None or self._stopping.wait(delay):
                return history

    def call_with_retries(self, method: str, request: Any) -> Outcome:
        """``method`` retried after transient failures, with a growing delay (not once stopping)."""
        delays = iter(self._retry_delays)
        while True:
            outcome = self.call(method, request)
            if not outcome.transient:
                return outcome
            delay = next(delays, None)
            if delay is None or self._stopping.is_set():
                return outcome
            self._logger.info("%s failed (%s: %s); retrying in %.1f s", method, outcome.code, outcome.details, delay)
            if self._stopping.wait(delay):
                return outcome

    def deliver(
        self,
        method: str,
        request: Any,
        *,
        subject: str,
        replacement: Callable[[Refusal], Any],
        abandon: Callable[[], None],
    ) -> None:
        """Send a completion; on failure retry, replace a refused result, or hand the item back.

        ``subject`` names the work item in logs; ``replacement`` builds the failure to send in
        place of a refused result; ``abandon`` hands the work item back to the sidecar.
        """
        self.settle(self.call_with_retries(method, request), method, subject=subject, replacement=replacement,
                    abandon=abandon)

    def settle(
        self,
        outcome: Outcome,
        method: str,
        *,
        subject: str,
        replacement: Callable[[Refusal], Any],
        abandon: Callable[[], None],
    ) -> None:
        """Act on a completion's ``outcome`` (after its retries), as :meth:`deliver` does."""
        if outcome.ok:
            return
        if outcome.refused:
            assert outcome.code is not None
            self._logger.warning(
                "the sidecar refused %s (%s: %s); reporting it as failed instead",
                subject, outcome.code.name, outcome.details,
            )
            outcome = self.call_with_retries(method, replacement(Refusal(outcome.code, outcome.details)))
            if outcome.ok:
                return
        if outcome.code == grpc.StatusCode.NOT_FOUND:
            self._logger.warning(
                "the sidecar no longer holds %s (%s): its lease ran out, it was handed back, or the instance "
                "finished; the sidecar offers the work again if it is still due",
                subject, outcome.details,
            )
            return
        assert outcome.code is not None
        self._logger.warning(
            "could not deliver %s (%s: %s); handing the work item back to the sidecar",
            subject, outcome.code.name, outcome.details,
        )
        abandon()
