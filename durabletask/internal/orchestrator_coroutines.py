"""Driving ``async def`` orchestrators the way generator orchestrators are driven.

An orchestrator coroutine awaits durable tasks only: ``Task.__await__`` yields the task
itself, so ``coroutine.send(result)`` / ``coroutine.throw(error)`` step it exactly like a
generator that yields tasks, and no event loop is involved. While a step runs, asyncio's
"running loop" of the thread is a stand-in that refuses every use, so ``asyncio.sleep``,
``asyncio.create_task``, ``asyncio.gather`` of coroutines, or I/O on streams fail at once
with an error naming the call and its line; anything else awaited that is not a task
(``asyncio.sleep(0)``, a future of some other loop) is named when it reaches the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from asyncio import events
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, NoReturn

from durabletask import task
from durabletask.internal.call_sites import CallSite, caller_frame, generator_site

_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep
_SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MAX_DEPTH = 40

_ONLY_TASKS = (
    "An async def orchestrator may only await durable tasks from its context (ctx.call_activity, "
    "ctx.call_sub_orchestrator, ctx.create_timer, ctx.wait_for_external_event, ctx.call_entity, "
    "ctx.lock_entities, task.when_all, task.when_any) or coroutines that do; it runs without an "
    "event loop. Wait with ctx.create_timer instead of asyncio.sleep, and do I/O in activities."
)


class AsyncioInOrchestratorError(RuntimeError):
    """An ``async def`` orchestrator used asyncio's scheduling (an event loop), which replay cannot reproduce."""


class _RefusingEventLoop:
    """Stands in for the running event loop while orchestrator code runs: every use is refused and noted."""

    def __init__(self) -> None:
        self.refusal: AsyncioInOrchestratorError | None = None

    def __getattr__(self, method: str) -> Callable[..., NoReturn]:
        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            for arg in args:
                if inspect.iscoroutine(arg):
                    arg.close()  # never to run: closed, so Python does not warn it was never awaited
            error = AsyncioInOrchestratorError(_describe_loop_use(method, caller_frame(1)))
            if self.refusal is None:
                self.refusal = error
            raise error

        return refuse


def _describe_loop_use(method: str, frame: FrameType | None) -> str:
    """Which asyncio function the orchestrator code called (the outermost asyncio frame) and where."""
    api: str | None = None
    site: CallSite | None = None
    for _ in range(_MAX_DEPTH):
        if frame is None:
            break
        filename = frame.f_code.co_filename
        if filename.startswith(_ASYNCIO_DIR):
            api = frame.f_code.co_name
        elif not filename.startswith(_SDK_DIR):
            site = generator_site(frame)
            break
        frame = frame.f_back
    what = f"asyncio.{api}()" if api is not None else f"the event loop's {method}()"
    where = f" at {site}" if site is not None else ""
    return f"the orchestrator called {what}{where}, which needs asyncio's event loop (loop.{method}). {_ONLY_TASKS}"


class OrchestratorCoroutine:
    """An orchestrator's coroutine, stepped with ``send``/``throw`` like a generator; each step yields a task."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._coroutine = coroutine

    def send(self, value: Any) -> task.Task[Any]:
        """Resume the coroutine with a task's result; returns the next task it awaits."""
        return self._step(self._coroutine.send, value)

    def throw(self, error: BaseException) -> task.Task[Any]:
        """Resume the coroutine by raising a task's error at its ``await``; returns the next task it awaits."""
        return self._step(self._coroutine.throw, error)

    def close(self) -> None:
        """Close the coroutine (its ``finally`` blocks run)."""
        self._coroutine.close()

    def _step(self, resume: Callable[[Any], Any], arg: Any) -> task.Task[Any]:
        stand_in = _RefusingEventLoop()
        previous = events._get_running_loop()
        events._set_running_loop(stand_in)  # type: ignore[arg-type]
        try:
            awaited = resume(arg)
        except BaseException as exc:
            if stand_in.refusal is not None and isinstance(exc, Exception):
                raise stand_in.refusal from None  # even when the orchestrator caught it
            raise
        finally:
            events._set_running_loop(previous)
        if stand_in.refusal is not None:
            self._coroutine.close()
            raise stand_in.refusal
        if not isinstance(awaited, task.Task):
            message = _describe_awaited(self._coroutine, awaited)
            self._coroutine.close()
            raise AsyncioInOrchestratorError(message)
        return awaited

    def waiting_site(self) -> CallSite | None:
        """The innermost orchestrator statement the coroutine is suspended at."""
        site: CallSite | None = None
        for _, frame in _await_chain(self._coroutine):
            if frame is not None and not frame.f_code.co_filename.startswith(_SDK_DIR):
                site = generator_site(frame)
        return site


def _await_chain(coroutine: Any) -> list[tuple[Any, FrameType | None]]:
    """The suspended coroutine and what it awaits, outermost first, each with its frame (None without one)."""
    chain: list[tuple[Any, FrameType | None]] = []
    current = coroutine
    while current is not None and len(chain) < _MAX_DEPTH:
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
        chain.append((current, frame))
        current = getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom", None)
    return chain


def _describe_awaited(coroutine: Any, awaited: Any) -> str:
    """The error for a coroutine that awaited something other than a durable task."""
    what = f"{type(awaited).__name__} {awaited!r:.80}"
    site: CallSite | None = None
    for item, frame in _await_chain(coroutine):
        code = getattr(item, "cr_code", None) or getattr(item, "gi_code", None)
        if code is not None and code.co_filename.startswith(_ASYNCIO_DIR):
            what = f"asyncio.{code.co_name}()"
            break
        if frame is not None and not frame.f_code.co_filename.startswith(_SDK_DIR):
            site = generator_site(frame)
    where = f" at {site}" if site is not None else ""
    return f"the orchestrator awaited {what}{where}, which is not a durable task. {_ONLY_TASKS}"
