"""The OrchestrationContext the replay engine hands to orchestrator functions.

It records what the orchestrator asks for as pending actions (keyed by their
sequence number) and the tasks waiting on them; the engine in ``replay.py``
matches history against the actions and resolves the tasks.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from durabletask.internal import replay_entities
from durabletask.internal.call_sites import CallSite, caller_frame, find_call_site, generator_site
from durabletask.internal.orchestrator_coroutines import OrchestratorCoroutine
from durabletask.serialization import DataConverter, return_type_of

if TYPE_CHECKING:
    from durabletask.entities import EntityInstanceId, EntityLock

# Name-based UUIDs use the same namespace and name layout as the other Durable
# Task SDKs, so an in-flight instance replays identically across them.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "9e952958-5e33-4daf-827f-2fa12937b875")
_EPOCH = datetime(1970, 1, 1)


@dataclass
class _BufferedEvent:
    sequence: int
    name: str
    payload: str | None


class RuntimeOrchestrationContext(task.OrchestrationContext):
    """The engine's implementation of OrchestrationContext for one execution."""

    def __init__(
        self,
        instance_id: str,
        *,
        data_converter: DataConverter,
        logger: logging.Logger,
        maximum_timer_interval: timedelta | None,
        default_version: str | None = None,
        exception_properties_provider: Any = None,
    ) -> None:
        self._instance_id = instance_id
        self._exception_properties_provider = exception_properties_provider
        self._parent_instance_id: str | None = None
        self._version: str | None = None
        self._converter = data_converter
        self._logger = logger
        self._maximum_timer_interval = maximum_timer_interval
        self._default_version = default_version
        self._is_replaying = True
        self._current_utc_datetime = _EPOCH
        self._sequence = 0
        self._uuid_counter = 0
        self.pending_actions: dict[int, pb.OrchestratorAction] = {}
        self.pending_tasks: dict[int, task.CompletableTask[Any]] = {}
        # Where the orchestrator code issued each pending action (noted while its code runs).
        self.call_sites: dict[int, CallSite] = {}
        self._running_code = False
        self._event_waiters: dict[str, list[task.CancellableTask[Any]]] = {}
        self._event_buffer: dict[str, deque[_BufferedEvent]] = {}
        self._event_sequence = 0
        # The running orchestrator code: a generator, or an async def orchestrator's coroutine.
        self._code: Generator[Any, Any, Any] | OrchestratorCoroutine | None = None
        self._current_task: task.Task[Any] | None = None
        self._started = False
        self._finished = False
        self._completion: pb.OrchestratorAction | None = None
        self._continue_as_new: tuple[str | None, bool, str | None] | None = None
        self._custom_status: str | None = None
        self.entities = replay_entities.OrchestrationEntityState(instance_id)

    # ------------------------------------------------------------ properties

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def parent_instance_id(self) -> str | None:
        return self._parent_instance_id

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def current_utc_datetime(self) -> datetime:
        return self._current_utc_datetime

    @property
    def is_replaying(self) -> bool:
        return self._is_replaying

    @property
    def is_started(self) -> bool:
        """True once executionStarted has been processed."""
        return self._started

    @property
    def is_finished(self) -> bool:
        """True once the execution completed, failed, was terminated or continued as new."""
        return self._finished

    @property
    def custom_status(self) -> str | None:
        """The serialized custom status, or None if never set."""
        return self._custom_status

    # ----------------------------------------------------- engine-side state

    def set_replaying(self, value: bool) -> None:
        """Mark whether events now come from past history (True) or are new."""
        self._is_replaying = value

    def set_current_time(self, value: datetime) -> None:
        """Advance the deterministic clock to a turn's timestamp (naive UTC)."""
        self._current_utc_datetime = value

    def set_instance_info(self, *, version: str | None, parent_instance_id: str | None) -> None:
        """Record what executionStarted says about this execution."""
        self._version = version
        self._parent_instance_id = parent_instance_id

    @property
    def next_free_sequence_number(self) -> int:
        """The id the next action would get (without taking it)."""
        return self._sequence + 1

    def next_sequence_number(self) -> int:
        """The id for the next action (noting the orchestrator statement that asked for it)."""
        self._sequence += 1
        if self._running_code:
            site = find_call_site(caller_frame(1), _DRIVER_CODES)
            if site is not None:
                self.call_sites[self._sequence] = site
        return self._sequence

    def waiting_site(self) -> CallSite | None:
        """Where the orchestrator code (generator or coroutine) is suspended, or None when it is not."""
        if isinstance(self._code, OrchestratorCoroutine):
            return self._code.waiting_site()
        return generator_site(getattr(self._code, "gi_frame", None))

    def log(self, level: int, message: str, *args: Any) -> None:
        """Log for the engine, prefixed with the instance ID; silent while replaying."""
        if not self._is_replaying:
            self._logger.log(level, "%s: " + message, self._instance_id, *args)

    # --------------------------------------------------------- running code

    def start(self, fn: Callable[..., Any], orchestrator_input: Any) -> None:
        """Call the orchestrator function and run it up to its first pending task."""
        self._started = True
        try:
            self._running_code = True
            try:
                result = fn(self, orchestrator_input)
            finally:
                self._running_code = False
        except Exception as exc:
            self.set_failed(exc)
            return
        if inspect.isgenerator(result) or inspect.iscoroutine(result):
            self._code = result if inspect.isgenerator(result) else OrchestratorCoroutine(result)
            self._advance(None, None)
            self.resume()
        else:
            self.set_complete(result)

    def resume(self) -> None:
        """Feed completed tasks back into the orchestrator code until it waits on an incomplete one."""
        while (
            not self._finished
            and self._code is not None
            and self._current_task is not None
            and self._current_task.is_complete
        ):
            done = self._current_task
            if isinstance(done, task.CancellableTask) and done.is_cancelled:
                self._advance(None, task.TaskCancelledError("the awaited task was cancelled"))
            elif done.is_failed:
                self._advance(None, done.get_exception())
            else:
                self._advance(done.get_result(), None)

    def _advance(self, value: Any, error: BaseException | None) -> None:
        """Send ``value`` (or throw ``error``) into the orchestrator code and take the task it yields next."""
        gen = self._code
        assert gen is not None
        self._current_task = None
        try:
            self._running_code = True
            try:
                yielded = gen.throw(error) if error is not None else gen.send(value)
            finally:
                self._running_code = False
        except StopIteration as stop:
            self._code = None
            self.set_complete(stop.value)
            return
        except Exception as exc:
            self._code = None
            self.set_failed(exc)
            return
        if not isinstance(yielded, task.Task):
            gen.close()
            self._code = None
            self.set_failed(TypeError(
                f"the orchestrator yielded {type(yielded).__name__} {yielded!r:.100}; only tasks "
                "(from ctx.call_activity, ctx.create_timer, when_all, ...) can be yielded"
            ))
            return
        self._current_task = yielded

    # ----------------------------------------------------------- completion

    def set_complete(
        self,
        result: Any,
        status: pb.OrchestrationStatus = pb.ORCHESTRATION_STATUS_COMPLETED,
        *,
        is_result_encoded: bool = False,
    ) -> None:
        """Finish the execution with a result (ignored once finished)."""
        if self._finished:
            return
        try:
            encoded = result if is_result_encoded else self._converter.serialize(result)
        except Exception as exc:
            self.set_failed(TypeError(f"the orchestrator's output could not be serialized: {exc}"))
            return
        self._finished = True
        self._exit_critical_section()
        self._completion = ph.new_complete_orchestration_action(self.next_sequence_number(), status, encoded)

    def set_failed(self, failure: BaseException | pb.TaskFailureDetails, *, drop_pending: bool = False) -> None:
        """Finish the execution as FAILED (ignored once finished)."""
        if self._finished:
            return
        if isinstance(failure, pb.TaskFailureDetails):
            details = failure
        else:
            details = ph.new_failure_details(
                failure, properties_provider=self._exception_properties_provider, logger=self._logger
            )
            if isinstance(failure, task.TaskFailedError):
                details.innerFailure.CopyFrom(failure._failure_details)
        self._finished = True
        if drop_pending:
            self.pending_actions.clear()
        self._exit_critical_section()
        self._completion = ph.new_complete_orchestration_action(
            self.next_sequence_number(), pb.ORCHESTRATION_STATUS_FAILED, None, details
        )

    def set_terminated(self, encoded_output: str | None) -> None:
        """Finish as TERMINATED; work the execution had not handed over yet is dropped."""
        if self._finished:
            return
        self.pending_actions.clear()
        self.set_complete(encoded_output, pb.ORCHESTRATION_STATUS_TERMINATED, is_result_encoded=True)

    def get_actions(self) -> list[pb.OrchestratorAction]:
        """The actions of this turn: pending ones in id order, then the completion, if any."""
        actions = [self.pending_actions[i] for i in sorted(self.pending_actions)]
        self.call_sites = {i: site for i, site in self.call_sites.items() if i in self.pending_actions}
        if self._continue_as_new is not None and self._completion is None:
            encoded_input, save_events, new_version = self._continue_as_new
            self._completion = ph.new_complete_orchestration_action(
                self.next_sequence_number(),
                pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
                encoded_input,
                carryover_events=self._carryover_events() if save_events else None,
                new_version=new_version,
            )
        if self._completion is not None:
            actions.append(self._completion)
        return actions

    def _carryover_events(self) -> list[pb.HistoryEvent]:
        buffered = sorted((e for q in self._event_buffer.values() for e in q), key=lambda e: e.sequence)
        return [ph.new_event_raised_event(e.name, e.payload) for e in buffered]

    # ------------------------------------------------------- external events

    def on_event_raised(self, name: str, payload: str | None) -> bool:
        """Hand an external event to the oldest waiter for its name, or buffer it.

        Returns True when a waiter took it.
        """
        key = name.casefold()
        waiters = self._event_waiters.get(key)
        if waiters and not self._finished:
            waiter = waiters.pop(0)
            if not waiters:
                del self._event_waiters[key]
            self.complete_with_payload(waiter, payload, f"the payload of event '{name}'")
            return True
        self._event_buffer.setdefault(key, deque()).append(_BufferedEvent(self._event_sequence, name, payload))
        self._event_sequence += 1
        return False

    def complete_with_payload(self, target: task.CompletableTask[Any], payload: str | None, what: str) -> None:
        """Complete a task with a decoded payload, or fail it if the payload does not decode."""
        try:
            value = None if not payload else self._converter.deserialize(payload, target._expected_type)
        except Exception as exc:
            target.fail(f"could not decode {what}: {exc}", exc)
            return
        target.complete(value)

    # ------------------------------------------------ OrchestrationContext API

    def set_custom_status(self, custom_status: Any) -> None:
        self._custom_status = None if custom_status is None else self._converter.serialize(custom_status)

    def create_timer(self, fire_at: datetime | timedelta) -> task.TimerTask:
        return self.create_timer_internal(fire_at)

    def create_timer_internal(
        self, fire_at: datetime | timedelta, retryable_task: task.RetryableTask[Any] | None = None
    ) -> task.TimerTask:
        """Create a timer; with ``retryable_task`` it is the wait before that task's next attempt."""
        now = self._current_utc_datetime
        if isinstance(fire_at, timedelta):
            final = now + fire_at
        elif isinstance(fire_at, datetime):
            final = ph.to_utc_naive(fire_at)
        else:
            raise TypeError(f"create_timer takes a datetime or a timedelta, not {type(fire_at).__name__}")
        timer = task.TimerTask(final, self._maximum_timer_interval)
        if retryable_task is not None:
            timer.set_retryable_parent(retryable_task)
        self.arm_timer(timer, timer._next_chunk_fire_at(now) or final)
        return timer

    def arm_timer(self, timer: task.TimerTask, fire_at: datetime) -> None:
        """Add a createTimer action for (the next chunk of) ``timer``."""
        timer_id = self.next_sequence_number()
        self.pending_actions[timer_id] = ph.new_create_timer_action(timer_id, fire_at)
        self.pending_tasks[timer_id] = timer
        timer._armed_fire_at = fire_at

        def withdraw() -> None:
            self.pending_actions.pop(timer_id, None)
            self.pending_tasks.pop(timer_id, None)

        timer.set_cancel_handler(withdraw)

    def call_activity(
        self,
        activity: task.Activity[Any, Any] | str,
        *,
        input: Any | None = None,
        retry_policy: task.RetryPolicy | None = None,
        tags: dict[str, str] | None = None,
        return_type: type | None = None,
    ) -> task.CompletableTask[Any]:
        action_id = self.next_sequence_number()
        name = activity if isinstance(activity, str) else task.get_name(activity)
        if return_type is None and not isinstance(activity, str):
            return_type = self._reconstructable(return_type_of(activity))
        action = ph.new_schedule_task_action(action_id, name, self._converter.serialize(input), tags=tags)
        return self._register_call(action, retry_policy, return_type, is_sub_orch=False)

    def call_sub_orchestrator(
        self,
        orchestrator: task.Orchestrator[Any, Any] | str,
        *,
        input: Any | None = None,
        instance_id: str | None = None,
        retry_policy: task.RetryPolicy | None = None,
        version: str | None = None,
        return_type: type | None = None,
    ) -> task.CompletableTask[Any]:
        action_id = self.next_sequence_number()
        name = orchestrator if isinstance(orchestrator, str) else task.get_name(orchestrator)
        if return_type is None and not isinstance(orchestrator, str):
            return_type = self._reconstructable(return_type_of(orchestrator))
        child_id = instance_id if instance_id is not None else f"{self._instance_id}:{action_id:04x}"
        action = ph.new_create_sub_orchestration_action(
            action_id, name, child_id, self._converter.serialize(input), version=version or self._default_version
        )
        return self._register_call(action, retry_policy, return_type, is_sub_orch=True)

    def _register_call(
        self,
        action: pb.OrchestratorAction,
        retry_policy: task.RetryPolicy | None,
        return_type: type | None,
        *,
        is_sub_orch: bool,
    ) -> task.CompletableTask[Any]:
        self.pending_actions[action.id] = action
        call: task.CompletableTask[Any]
        if retry_policy is None:
            call = task.CompletableTask(return_type)
        else:
            call = task.RetryableTask(retry_policy, action, self._current_utc_datetime, is_sub_orch, return_type)
        self.pending_tasks[action.id] = call
        return call

    def reschedule(self, call: task.RetryableTask[Any], *, keep_id: bool = True) -> None:
        """Schedule another attempt of a retried call.

        It goes under the call's first action id, as the official SDK numbers it; with
        ``keep_id=False`` under a new id, the numbering our SDK used before (still found
        in histories it wrote).
        """
        action = pb.OrchestratorAction()
        action.CopyFrom(call._action)
        if not keep_id:
            action.id = self.next_sequence_number()
            site = self.call_sites.get(call._action.id)
            if site is not None:
                self.call_sites[action.id] = site
        self.pending_actions[action.id] = action
        self.pending_tasks[action.id] = call

    def _reconstructable(self, annotation: Any) -> Any:
        return annotation if annotation is not None and self._converter.can_reconstruct(annotation) else None

    def wait_for_external_event(self, name: str, *, data_type: type | None = None) -> task.CancellableTask[Any]:
        waiter: task.CancellableTask[Any] = task.CancellableTask(data_type)
        key = name.casefold()
        buffered = self._event_buffer.get(key)
        if buffered:
            event = buffered.popleft()
            if not buffered:
                del self._event_buffer[key]
            self.complete_with_payload(waiter, event.payload, f"the payload of event '{event.name}'")
            return waiter
        self._event_waiters.setdefault(key, []).append(waiter)

        def withdraw() -> None:
            waiters = self._event_waiters.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._event_waiters[key]

        waiter.set_cancel_handler(withdraw)
        return waiter

    def send_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        if not instance_id or not instance_id.strip():
            raise ValueError("send_event needs a target instance_id")
        if instance_id.startswith("@"):
            raise ValueError("instance IDs starting with '@' are entities: use signal_entity() instead")
        if not event_name or not event_name.strip():
            raise ValueError("send_event needs an event_name")
        action_id = self.next_sequence_number()
        self.pending_actions[action_id] = ph.new_send_event_action(
            action_id, instance_id, event_name, self._converter.serialize(data)
        )

    def continue_as_new(self, new_input: Any, *, save_events: bool = False, new_version: str | None = None) -> None:
        if self._finished:
            return
        encoded = self._converter.serialize(new_input)
        self._finished = True
        self._exit_critical_section()
        self._continue_as_new = (encoded, save_events, new_version)

    def new_uuid(self) -> str:
        stamp = self._current_utc_datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        name = f"{self._instance_id}_{stamp}_{self._uuid_counter}"
        self._uuid_counter += 1
        return str(uuid.uuid5(_UUID_NAMESPACE, name))

    def call_entity(
        self,
        entity: EntityInstanceId,
        operation: str,
        input: Any = None,
        *,
        return_type: type | None = None,
    ) -> task.CompletableTask[Any]:
        return replay_entities.call_entity(self, entity, operation, input, return_type)

    def signal_entity(
        self,
        entity_id: EntityInstanceId,
        operation_name: str,
        input: Any = None,
        signal_time: datetime | None = None,
    ) -> None:
        replay_entities.signal_entity(self, entity_id, operation_name, input, signal_time)

    def lock_entities(self, entities: list[EntityInstanceId]) -> task.CompletableTask[EntityLock]:
        return replay_entities.lock_entities(self, entities)

    def _exit_critical_section(self) -> None:
        """Release the open critical section (called by EntityLock and on completion)."""
        replay_entities.exit_critical_section(self)

    @property
    def converter(self) -> DataConverter:
        """The data converter payloads are encoded with."""
        return self._converter


# The engine code that runs orchestrator code: call-site walks stop there.
_DRIVER_CODES = frozenset({RuntimeOrchestrationContext.start.__code__, RuntimeOrchestrationContext._advance.__code__})
