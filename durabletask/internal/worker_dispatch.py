"""Runs the worker's work items and reports their outcome to the sidecar.

Orchestration turns, entity batches and synchronous activities run on a thread pool;
``async def`` activities are awaited on one event loop owned by the worker. Concurrency
caps are enforced here (never by blocking the stream reader), and two turns of the same
orchestration instance (or two batches of the same entity) never run at once. Results go
out through :class:`~durabletask.internal.worker_completions.CompletionSender` (retries,
refused results replaced by failures, hand-backs).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from durabletask import serialization
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.activity_executor import ActivityExecutor
from durabletask.internal.entity_executor import DEFAULT_MAXIMUM_ENTITY_STATE_SIZE, EntityExecutor
from durabletask.internal.protocol_extensions import omitted_past_events
from durabletask.internal.registry import Registry
from durabletask.internal.replay import OrchestrationExecutor, ReplayState
from durabletask.internal.replay_cache import DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS, ReplayCache
from durabletask.internal.rewind import is_rewind_request
from durabletask.internal.tracing_turns import trace_turn
from durabletask.internal.worker_batches import ACTIVITIES, TURNS, PendingResult, ResultBatcher
from durabletask.internal.worker_completions import (
    CompletionSender,
    Refusal,
    activity_failure,
    batch_failure,
    failed_activity_response,
    failed_batch_result,
    failed_turn_response,
    turn_failure,
)
from durabletask.internal.worker_limits import KeyedSequencer, Pending, WorkLimiter
from durabletask.internal.worker_payloads import (
    oversize_batch_part,
    oversize_turn_part,
    payload_too_large_details,
)
from durabletask.payload.helpers import deexternalize_payloads, externalize_payloads
from durabletask.payload.store import PayloadStore, PayloadTooLargeError

# Handing work back is best effort: the sidecar offers the item again when its lease runs
# out or this worker's stream closes.
_ABANDON_TIMEOUT = 5.0

# Returns the stub to send completions on (the current connection), or None when there is none.
StubProvider = Callable[[], Any]

# A work item's result, whose large payloads go to the payload store.
_Result = TypeVar("_Result", pb.OrchestratorResponse, pb.ActivityResponse, pb.EntityBatchResult)


@dataclass(frozen=True)
class VersionVerdict:
    """What to do with an orchestration whose version the worker does not accept."""

    reject: bool  # True: hand the work item back; False: fail the instance with ``details``
    details: pb.TaskFailureDetails


# Given the instance's version (None when it has none), None to proceed or a verdict.
VersionGate = Callable[[str | None], VersionVerdict | None]


@dataclass(frozen=True)
class DispatchLimits:
    """Local concurrency caps."""

    orchestrations: int
    activities: int
    entities: int
    thread_pool_workers: int


class EventLoopThread:
    """An asyncio event loop running forever on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            pending = asyncio.all_tasks(self.loop)
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Wait, from another thread, for ``awaitable`` to finish on this loop."""
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self.loop).result()

    def stop(self, timeout: float) -> bool:
        """Stop the loop (cancelling what still runs on it); True if the thread ended in time."""
        if self._thread.is_alive() and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _next_action_id(events: Sequence[pb.HistoryEvent], floor: int = 1) -> int:
    """An action id used by none of ``events`` (nor below ``floor``)."""
    return max(floor, 1 + max((e.eventId for e in events), default=0))


def _failure_action_id(first_free_id: int, response: pb.OrchestratorResponse) -> int:
    """The id for a completion that replaces ``response``: its own completion's, else one used nowhere."""
    for action in response.actions:
        if action.HasField("completeOrchestration"):
            return action.id
    return max([first_free_id, *(a.id + 1 for a in response.actions)])


def _instance_version(events: Sequence[pb.HistoryEvent]) -> str | None:
    for event in events:
        if event.HasField("executionStarted"):
            started = event.executionStarted
            return started.version.value if started.HasField("version") else None
    return None


class WorkItemDispatcher:
    """Accepts work items from the stream reader without blocking and runs them."""

    def __init__(
        self,
        *,
        registry: Registry,
        stub_provider: StubProvider,
        limits: DispatchLimits,
        logger: logging.Logger,
        data_converter: serialization.DataConverter,
        maximum_timer_interval: timedelta | None,
        metadata: Sequence[tuple[str, str]] | None = None,
        version_gate: VersionGate | None = None,
        default_version: str | None = None,
        call_timeout: float = 30.0,
        maximum_entity_state_size: int | None = DEFAULT_MAXIMUM_ENTITY_STATE_SIZE,
        maximum_cached_orchestrations: int = DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS,
        batch_stub_provider: StubProvider = lambda: None,
        emit_trace_spans: bool = True,
        exception_properties_provider: Any = None,
        payload_store: PayloadStore | None = None,
    ) -> None:
        self._registry = registry
        self._payload_store = payload_store
        self._exception_properties_provider = exception_properties_provider
        self._emit_trace_spans = emit_trace_spans
        self._replays = ReplayCache(maximum_cached_orchestrations)
        self._logger = logger
        self._converter = data_converter
        self._maximum_timer_interval = maximum_timer_interval
        self._version_gate = version_gate
        self._default_version = default_version
        self._orchestration_executor: OrchestrationExecutor | None = None
        self._stopping = threading.Event()
        self._sender = CompletionSender(
            stub_provider,
            logger,
            metadata=tuple(metadata) if metadata else None,
            call_timeout=call_timeout,
            stopping=self._stopping,
        )
        self._activities = ActivityExecutor(
            registry, data_converter, logger, emit_trace_spans=emit_trace_spans,
            exception_properties_provider=exception_properties_provider,
        )

        def batcher(kind: tuple[str, Any], method: str) -> ResultBatcher:
            return ResultBatcher(
                kind,
                batch_stub_provider,
                lambda outcome, result: self._sender.settle(
                    outcome, method, subject=result.subject, replacement=result.replacement, abandon=result.abandon
                ),
                logger,
                metadata=tuple(metadata) if metadata else None,
                call_timeout=call_timeout,
            )

        self._activity_results = batcher(ACTIVITIES, "CompleteActivityTask")
        self._turn_results = batcher(TURNS, "CompleteOrchestratorTask")
        self._entities = EntityExecutor(
            registry, data_converter, logger, maximum_state_size=maximum_entity_state_size,
            emit_trace_spans=emit_trace_spans, exception_properties_provider=exception_properties_provider,
        )
        self._entity_limit = WorkLimiter(limits.entities)
        self._entity_sequencer = KeyedSequencer()
        self._orchestration_limit = WorkLimiter(limits.orchestrations)
        self._activity_limit = WorkLimiter(limits.activities)
        self._sequencer = KeyedSequencer()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, limits.thread_pool_workers), thread_name_prefix="durabletask-worker"
        )
        self._loop = EventLoopThread("durabletask-worker-loop")
        self._outstanding = 0
        self._closing = False
        self._state = threading.Condition()
        self._started = False

    # ----- lifecycle -----

    def start(self) -> None:
        """Start the event loop thread (the thread pool starts threads on demand)."""
        if not self._started:
            self._started = True
            self._loop.start()

    @property
    def outstanding(self) -> int:
        """Work items accepted and neither completed nor handed back yet."""
        with self._state:
            return self._outstanding

    def wait_for_outstanding(self, count: int, timeout: float) -> bool:
        """Wait until exactly ``count`` work items are held; False on timeout."""
        with self._state:
            return self._state.wait_for(lambda: self._outstanding == count, timeout)

    def refuse_new_work(self) -> None:
        """Hand back every work item from now on instead of running it (the worker is stopping)."""
        with self._state:
            self._closing = True

    def stop(self, timeout: float) -> bool:
        """Hand back what has not started, let running work finish for up to ``timeout`` seconds.

        Returns True when everything was settled in time.
        """
        self.refuse_new_work()
        self._stopping.set()
        for job in (
            *self._sequencer.drain(),
            *self._orchestration_limit.drain(),
            *self._activity_limit.drain(),
            *self._entity_sequencer.drain(),
            *self._entity_limit.drain(),
        ):
            job.abandon()
        deadline = time.monotonic() + max(0.0, timeout)
        with self._state:
            settled = self._state.wait_for(
                lambda: self._outstanding == 0, timeout=max(0.0, deadline - time.monotonic())
            )
            if not settled:
                self._logger.warning(
                    "%d work item(s) still running at shutdown; the sidecar will re-dispatch them",
                    self._outstanding,
                )
        self._pool.shutdown(wait=settled, cancel_futures=True)
        loop_stopped = self._loop.stop(max(1.0, deadline - time.monotonic()))
        return settled and loop_stopped

    # ----- intake -----

    def dispatch(self, item: pb.WorkItem) -> None:
        """Take one work item from the stream; never blocks."""
        kind = item.WhichOneof("request")
        if kind == "healthPing" or kind is None:
            return
        token = item.completionToken
        if kind == "orchestratorRequest":
            self._accept_orchestration(item.orchestratorRequest, token)
        elif kind == "activityRequest":
            self._accept_activity(item.activityRequest, token)
        elif kind == "entityRequest":
            self._accept_entity(item.entityRequest, token)
        elif kind == "entityRequestV2":
            self._accept_entity(item.entityRequestV2, token)
        else:
            self._logger.warning("ignoring a work item of unknown kind '%s'", kind)

    def _admit(self) -> bool:
        with self._state:
            if self._closing:
                return False
            self._outstanding += 1
            self._state.notify_all()
            return True

    def _settle(self) -> None:
        with self._state:
            self._outstanding -= 1
            self._state.notify_all()

    # ----- orchestrations -----

    def _accept_orchestration(self, req: pb.OrchestratorRequest, token: str) -> None:
        if not self._admit():
            self._abandon_orchestration(req.instanceId, token)
            return
        settled = _Once(self._settle)

        def abandon() -> None:
            self._abandon_orchestration(req.instanceId, token)
            settled()

        def finish() -> None:
            self._orchestration_limit.release()
            self._sequencer.finish(req.instanceId)
            settled()

        def run() -> None:
            handed_on = False
            try:
                if self._is_closing():
                    self._abandon_orchestration(req.instanceId, token)
                else:
                    handed_on = self._run_orchestration(req, token, finish)
            finally:
                if not handed_on:
                    finish()

        def abandon_in_turn() -> None:
            # The job already holds its instance's turn: pass the turn on as well.
            self._sequencer.finish(req.instanceId)
            abandon()

        def submit_to_pool() -> None:
            try:
                self._pool.submit(run)
            except RuntimeError:  # the pool is shut down
                self._orchestration_limit.release()
                abandon_in_turn()

        def take_slot() -> None:
            self._orchestration_limit.submit(Pending(start=submit_to_pool, abandon=abandon_in_turn))

        self._sequencer.submit(req.instanceId, Pending(start=take_slot, abandon=abandon))

    def _run_orchestration(self, req: pb.OrchestratorRequest, token: str, done: Callable[[], None]) -> bool:
        """Run a turn and deliver its response. True when the delivery runs ``done`` once it is settled
        (False: the turn was handed back, and ``done`` is the caller's to run)."""
        instance_id = req.instanceId
        execution_id = req.executionId.value
        if not self._resolve_payloads(req, f"the turn of '{instance_id}'"):
            self._abandon_orchestration(instance_id, token)
            return False
        turn = self._turn_history(req)
        if turn is None:
            self._abandon_orchestration(instance_id, token)
            return False
        past, state = turn
        trace_notes = state.trace_notes if state is not None else None
        version = state.ctx.version if state is not None else _instance_version((*past, *req.newEvents))
        verdict = self._version_gate(version) if self._version_gate else None
        if verdict is not None and not verdict.reject and is_rewind_request(past, req.newEvents):
            verdict = None  # rewriting the history runs no orchestrator code; the turn after it fails
        if verdict is not None and verdict.reject:
            self._logger.info("rejecting a turn of '%s': %s", instance_id, verdict.details.errorMessage)
            self._abandon_orchestration(instance_id, token)
            return False
        response = pb.OrchestratorResponse(instanceId=instance_id, completionToken=token)
        if req.HasField("orchestrationTraceContext"):
            response.orchestrationTraceContext.CopyFrom(req.orchestrationTraceContext)
        first_free_id = _next_action_id((*past, *req.newEvents), state.next_action_id if state is not None else 1)
        if verdict is not None:
            self._logger.warning("failing '%s': %s", instance_id, verdict.details.errorMessage)
            action = pb.OrchestratorAction(id=first_free_id)
            action.completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_FAILED
            action.completeOrchestration.failureDetails.CopyFrom(verdict.details)
            response.actions.append(action)
        else:
            try:
                results, state = self._new_orchestration_executor().execute_turn(
                    instance_id, past, req.newEvents, state
                )
            except Exception:
                self._logger.exception("the orchestration executor failed on '%s'; abandoning the turn", instance_id)
                self._abandon_orchestration(instance_id, token)
                return False
            response.actions.extend(results.actions)
            if results.custom_status is not None:
                response.customStatus.value = results.custom_status
        trace_notes = trace_turn(req, past, response, trace_notes, emit=self._emit_trace_spans)
        action_id = _failure_action_id(first_free_id, response)
        original = response
        stored = self._externalize_payloads(
            response, instance_id, f"the turn of '{instance_id}'",
            too_large=lambda store, error: turn_failure(
                original, action_id, payload_too_large_details(oversize_turn_part(original, store), error)
            ),
        )
        if stored is None:
            self._abandon_orchestration(instance_id, token)
            return False
        response = stored
        if verdict is None and state is not None and response is original:
            state.trace_notes = trace_notes
            self._replays.put(instance_id, execution_id, state)
        self._deliver(
            self._turn_results,
            "CompleteOrchestratorTask",
            response,
            subject=f"the turn of orchestration '{instance_id}'",
            replacement=lambda refusal: failed_turn_response(response, action_id, refusal),
            abandon=lambda: self._abandon_orchestration(instance_id, token),
            done=done,
        )
        return True

    def _turn_history(
        self, req: pb.OrchestratorRequest
    ) -> tuple[Sequence[pb.HistoryEvent], ReplayState | None] | None:
        """The past events to replay and the cached state to continue from (None: hand the turn back).

        When the sidecar left out past events this worker has processed, the cached state
        continues from them; when that state is gone, the whole history is read instead.
        """
        instance_id = req.instanceId
        omitted = omitted_past_events(req)
        rewinding = any(e.HasField("executionRewound") for e in req.newEvents)
        state = self._replays.take(instance_id, req.executionId.value, omitted)
        if state is not None and not rewinding:
            return req.pastEvents, state
        if not omitted:
            return req.pastEvents, None
        history = self._sender.history_with_retries(instance_id, req.executionId.value)
        if not isinstance(history, list):
            self._logger.warning(
                "could not read the history of '%s' (%s: %s)", instance_id, history.code, history.details
            )
            return None
        if not all(self._resolve_payloads(event, f"the history of '{instance_id}'") for event in history):
            return None
        return history, None

    def _new_orchestration_executor(self) -> OrchestrationExecutor:
        """The executor of turns: one for all of them (it keeps no state of its own between turns)."""
        if self._orchestration_executor is None:
            self._orchestration_executor = OrchestrationExecutor(
                self._registry,
                data_converter=self._converter,
                logger=self._logger,
                maximum_timer_interval=self._maximum_timer_interval,
                default_version=self._default_version,
                exception_properties_provider=self._exception_properties_provider,
            )
        return self._orchestration_executor

    def _abandon_orchestration(self, instance_id: str, token: str) -> None:
        self._logger.info("handing back a turn of '%s'", instance_id)
        self._call(
            "AbandonTaskOrchestratorWorkItem", pb.AbandonOrchestrationTaskRequest(completionToken=token), _ABANDON_TIMEOUT
        )

    # ----- activities -----

    def _accept_activity(self, req: pb.ActivityRequest, token: str) -> None:
        if not self._admit():
            self._abandon_activity(token)
            return
        settled = _Once(self._settle)

        def abandon() -> None:
            self._abandon_activity(token)
            settled()

        def finish() -> None:
            self._activity_limit.release()
            settled()

        if self._activities.is_async(req):
            start = self._async_activity_starter(req, token, finish, abandon)
        else:
            start = self._sync_activity_starter(req, token, finish, abandon)
        self._activity_limit.submit(Pending(start=start, abandon=abandon))

    def _sync_activity_starter(
        self, req: pb.ActivityRequest, token: str, finish: Callable[[], None], abandon: Callable[[], None]
    ) -> Callable[[], None]:
        def run() -> None:
            handed_on = False
            try:
                if self._is_closing():
                    self._abandon_activity(token)
                    return
                if not self._resolve_payloads(req, f"the input of activity '{req.name}'"):
                    self._abandon_activity(token)
                    return
                response = self._activities.run(req, token, await_result=self._loop.run)
                handed_on = True
                self._complete_activity(req, response, finish)
            finally:
                if not handed_on:
                    finish()

        def start() -> None:
            try:
                self._pool.submit(run)
            except RuntimeError:
                self._activity_limit.release()
                abandon()

        return start

    def _async_activity_starter(
        self, req: pb.ActivityRequest, token: str, finish: Callable[[], None], abandon: Callable[[], None]
    ) -> Callable[[], None]:
        async def run() -> None:
            handed_on = False
            try:
                if self._is_closing():
                    await asyncio.to_thread(self._abandon_activity, token)
                    return
                if not await asyncio.to_thread(self._resolve_payloads, req, f"the input of activity '{req.name}'"):
                    await asyncio.to_thread(self._abandon_activity, token)
                    return
                response = await self._activities.run_async(req, token)
                handed_on = True
                await asyncio.to_thread(self._complete_activity, req, response, finish)
            except asyncio.CancelledError:
                if not handed_on:
                    self._abandon_activity(token)
                raise
            finally:
                if not handed_on:
                    finish()

        def start() -> None:
            try:
                asyncio.run_coroutine_threadsafe(run(), self._loop.loop)
            except RuntimeError:
                self._activity_limit.release()
                abandon()

        return start

    def _complete_activity(self, req: pb.ActivityRequest, response: pb.ActivityResponse, done: Callable[[], None]) -> None:
        """Deliver an activity's result; ``done`` runs once it is settled (a batched result may be sent later)."""
        original = response
        stored = self._externalize_payloads(
            response, response.instanceId, f"the result of activity '{req.name}'",
            too_large=lambda store, error: activity_failure(
                original, payload_too_large_details(f"the result of activity '{req.name}'", error)
            ),
        )
        if stored is None:
            self._abandon_activity(response.completionToken)
            done()
            return
        response = stored
        self._deliver(
            self._activity_results,
            "CompleteActivityTask",
            response,
            subject=f"the result of activity '{req.name}' (task {req.taskId} of '{response.instanceId}')",
            replacement=lambda refusal: failed_activity_response(req, response, refusal),
            abandon=lambda: self._abandon_activity(response.completionToken),
            done=done,
        )

    def _deliver(
        self,
        batcher: ResultBatcher,
        method: str,
        response: pb.ActivityResponse | pb.OrchestratorResponse,
        *,
        subject: str,
        replacement: Callable[[Refusal], Any],
        abandon: Callable[[], None],
        done: Callable[[], None],
    ) -> None:
        """Send a result through ``batcher`` (alone with ``method`` when the stream is not batched)."""

        def send_alone() -> None:
            self._sender.deliver(method, response, subject=subject, replacement=replacement, abandon=abandon)

        batcher.submit(PendingResult(response, subject, replacement, abandon, send_alone, done))

    def _abandon_activity(self, token: str) -> None:
        self._call("AbandonTaskActivityWorkItem", pb.AbandonActivityTaskRequest(completionToken=token), _ABANDON_TIMEOUT)

    # ----- entities -----

    def _accept_entity(self, req: pb.EntityBatchRequest | pb.EntityRequest, token: str) -> None:
        if not self._admit():
            self._abandon_entity(req.instanceId, token)
            return
        settled = _Once(self._settle)
        key = req.instanceId

        def abandon() -> None:
            self._abandon_entity(req.instanceId, token)
            settled()

        def run() -> None:
            try:
                if self._is_closing():
                    self._abandon_entity(req.instanceId, token)
                elif self._resolve_payloads(req, f"the operation batch of entity '{key}'"):
                    computed = self._entities.run_batch(req, token, await_result=self._loop.run)
                    stored = self._externalize_payloads(
                        computed, key, f"the operation batch of entity '{key}'",
                        too_large=lambda store, error: batch_failure(
                            req, computed, payload_too_large_details(oversize_batch_part(req, computed, store), error)
                        ),
                    )
                    if stored is None:
                        self._abandon_entity(key, token)
                        return
                    result = stored
                    self._sender.deliver(
                        "CompleteEntityTask",
                        result,
                        subject=f"the operation batch of entity '{key}'",
                        replacement=lambda refusal: failed_batch_result(req, result, refusal),
                        abandon=lambda: self._abandon_entity(key, token),
                    )
                else:
                    self._abandon_entity(key, token)
            except Exception:
                self._logger.exception("the entity executor failed on '%s'; abandoning the batch", key)
                self._abandon_entity(req.instanceId, token)
            finally:
                self._entity_limit.release()
                self._entity_sequencer.finish(key)
                settled()

        def abandon_in_turn() -> None:
            self._entity_sequencer.finish(key)
            abandon()

        def submit_to_pool() -> None:
            try:
                self._pool.submit(run)
            except RuntimeError:  # the pool is shut down
                self._entity_limit.release()
                abandon_in_turn()

        def take_slot() -> None:
            self._entity_limit.submit(Pending(start=submit_to_pool, abandon=abandon_in_turn))

        self._entity_sequencer.submit(key, Pending(start=take_slot, abandon=abandon))

    # ----- large payloads -----

    def _resolve_payloads(self, message: Any, subject: str) -> bool:
        """Put the payloads that ``message`` names by token back in place; False if the store failed."""
        if self._payload_store is None:
            return True
        try:
            deexternalize_payloads(message, self._payload_store)
        except Exception:
            self._logger.exception("could not read the stored payloads of %s; handing it back", subject)
            return False
        return True

    def _externalize_payloads(
        self,
        message: _Result,
        instance_id: str,
        subject: str,
        *,
        too_large: Callable[[PayloadStore, PayloadTooLargeError], _Result],
    ) -> _Result | None:
        """Move the large payloads of ``message`` to the payload store; returns the message to send.

        A payload over the store's limit can never be stored: ``too_large`` builds the failure to
        send instead (its payloads are stored too). None when the store failed (a network error,
        say): the caller hands the work item back, to be retried.
        """
        store = self._payload_store
        if store is None:
            return message
        try:
            externalize_payloads(message, store, instance_id=instance_id)
            return message
        except PayloadTooLargeError as error:
            self._logger.warning("%s cannot be stored (%s); reporting it as failed instead", subject, error)
            replacement = too_large(store, error)
        except Exception:
            self._logger.exception("could not store the large payloads of %s; handing it back", subject)
            return None
        try:
            externalize_payloads(replacement, store, instance_id=instance_id)
        except Exception:
            self._logger.exception("could not store the payloads of the failure of %s; handing it back", subject)
            return None
        return replacement

    def _abandon_entity(self, instance_id: str, token: str) -> None:
        self._logger.info("handing back an entity batch of '%s'", instance_id)
        self._call(
            "AbandonTaskEntityWorkItem", pb.AbandonEntityTaskRequest(completionToken=token), _ABANDON_TIMEOUT
        )

    # ----- sending -----

    def _is_closing(self) -> bool:
        with self._state:
            return self._closing

    def _call(self, method: str, request: Any, timeout: float | None = None) -> None:
        """Send a hand-back (one attempt); a failure is logged, never raised."""
        outcome = self._sender.call(method, request, timeout)
        if not outcome.ok:
            self._logger.warning(
                "%s failed (%s: %s): the sidecar offers the work item again once its lease runs out "
                "or this worker's stream closes",
                method, outcome.code, outcome.details,
            )


class _Once:
    """Wraps a callback so only the first call has an effect."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            fn, self._fn = self._fn, None
        if fn is not None:
            fn()
