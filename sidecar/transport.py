"""The sidecar's asyncio gRPC transport: the servicer's RPCs served by ``grpc.aio`` without a thread per call.

The servicer (:class:`sidecar.server.SidecarServicer`) stays synchronous. :class:`AsyncServicer`
turns it into the aio handlers, one generic wrapper per kind of RPC:

- a unary RPC runs the servicer's method on a bounded thread pool, with a :class:`CallContext`
  standing in for ``grpc.ServicerContext``: its values are captured on the event loop, and its
  ``abort`` raises; the wrapper then aborts the real call with the same status and message.
  Hello answers on the loop itself, so that a busy pool does not slow health checks.
- a server-streaming RPC (StreamInstanceHistory) runs each step of the servicer's generator on
  the pool and writes the responses from the loop.

Three RPCs have handlers of their own, because they wait: the long polls
(WaitForInstanceStart/Completion) await the :class:`~sidecar.notify.InstanceWatcher`, and
GetWorkItems awaits its stream's queue; neither holds a thread while it waits (their store
reads go to the pool). A client that goes away cancels the handler's task, which ends the wait
or closes the stream. (When one of these methods of the servicer has been replaced, say by a
test that records what it serves, the replacement is wrapped like any other method instead.)

:class:`LoopServer` runs the ``grpc.aio`` server on an event loop in a thread of its own, behind
the synchronous start/stop API of :class:`sidecar.server.SidecarServer`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import unquote

import grpc

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from sidecar.dispatch import Dispatcher
from sidecar.hub import TaskHub
from sidecar.model import InstanceSnapshot
from sidecar.notify import InstanceWatcher
from sidecar.quoting import bounded_message, log_text
from sidecar.servicer_batches import BatchServicer
from sidecar.servicer_util import UNDECODABLE_DETAILS, check_instance_id, check_stream_request, error_status
from sidecar.store.client_turns import serving_a_client


class SidecarServicer(Protocol):
    """What the transport needs of the servicer (``sidecar.server.SidecarServicer``) beyond its RPC methods."""

    hub: TaskHub
    dispatcher: Dispatcher
    watcher: InstanceWatcher
    WAITS: dict[str, Callable[[InstanceSnapshot], bool]]
    WAIT_STATUSES: dict[str, Callable[[int], bool]]

    def waited(self, request: pb.GetInstanceRequest, final: InstanceSnapshot | None, rpc: str) -> pb.GetInstanceResponse:
        """The answer to a long poll whose last read gave ``final``."""
        ...

log = logging.getLogger("durabletask-sidecar")

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
# Unary RPCs answered on the event loop: they touch neither the store nor a lock.
ON_LOOP = frozenset({"Hello"})
# The worker's calls; every other call of TaskHubSidecarService is a client's (see sidecar.store.client_turns).
WORKER_RPCS = frozenset({
    "GetWorkItems", "CompleteActivityTask", "CompleteOrchestratorTask", "CompleteEntityTask",
    "AbandonTaskActivityWorkItem", "AbandonTaskOrchestratorWorkItem", "AbandonTaskEntityWorkItem",
})
_END = object()
# After the server stopped, how long its calls' tasks may take to end before they are cancelled.
_DRAIN_SECONDS = 1.0

Handler = Callable[[Any, Any], Awaitable[Any]]


class Aborted(Exception):
    """Raised by :meth:`CallContext.abort`: the call ends with this status and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """The parts of ``grpc.ServicerContext`` the servicer uses, for its code running off the event loop."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._metadata = tuple(context.invocation_metadata() or ())
        remaining = context.time_remaining()
        self._deadline = None if remaining is None else time.monotonic() + remaining
        self._peer = context.peer()
        self._lock = threading.Lock()  # add_callback runs on a pool thread, ended() on the loop
        self._callbacks: list[Callable[[], object]] = []
        self._ended = False
        self.cancelled = False
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None

    def invocation_metadata(self) -> tuple[Any, ...]:
        """The call's metadata: (key, value) pairs."""
        return self._metadata

    def time_remaining(self) -> float | None:
        """Seconds left before the client's deadline (None: no deadline)."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return str(self._peer)

    def is_active(self) -> bool:
        """False once the client cancelled the call."""
        return not self.cancelled

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises :class:`Aborted`)."""
        raise Aborted(code, details)

    def add_callback(self, callback: Callable[[], object]) -> bool:
        """Run ``callback`` when the call ends, however it ends (at once, returning False, if it has ended)."""
        with self._lock:
            if not self._ended:
                self._callbacks.append(callback)
                return True
        callback()
        return False

    def ended(self) -> None:
        """The call is over: run the callbacks added with add_callback."""
        with self._lock:
            self._ended = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback at the end of a call failed")

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def apply(self, context: grpc.aio.ServicerContext) -> None:
        """Pass a status set with set_code/set_details on to the real call."""
        if self.code is not None:
            context.set_code(self.code)
        if self.details is not None:
            context.set_details(self.details)


async def _fail(context: grpc.aio.ServicerContext, call: CallContext, rpc: str, exc: Exception) -> NoReturn:
    """End the call for ``exc``, raised by the servicer: as it aborted, else as a sync grpc server would."""
    if isinstance(exc, Aborted):
        await context.abort(exc.code, exc.details)
    if call.code is not None and call.code != grpc.StatusCode.OK:
        await context.abort(call.code, call.details or "")
    log.error("%s raised", rpc, exc_info=exc)
    await context.abort(grpc.StatusCode.UNKNOWN, bounded_message(f"Exception calling application: {exc}"))
    raise AssertionError("abort returned")  # it raises


def _is_original(servicer: SidecarServicer, rpc: str) -> bool:
    """Whether ``servicer`` serves ``rpc`` with its class's method (not one replaced on the object).

    A replaced method (tests instrument the servicer) is wrapped like any other, so that it is
    what answers; a GetWorkItems wrapped that way holds a pool thread while it waits for items.
    """
    return rpc not in vars(servicer)


def _for_client(fn: Callable[..., T], *args: Any) -> T:
    with serving_a_client():
        return fn(*args)


class AsyncServicer:
    """The aio handlers of a :class:`~sidecar.server.SidecarServicer`: its methods wrapped, plus the waiting RPCs."""

    def __init__(self, servicer: SidecarServicer, pool: Executor) -> None:
        self._servicer = servicer
        self._pool = pool
        for method in SERVICE.methods:
            if hasattr(type(self), method.name) and _is_original(servicer, method.name):
                continue  # served by the async form below
            if method.client_streaming:
                raise TypeError(f"{method.name}: client-streaming RPCs have no wrapper")
            sync = getattr(servicer, method.name)
            handler = self._streaming(method.name, sync) if method.server_streaming else self._unary(method.name, sync)
            setattr(self, method.name, handler)

    def _offload(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run ``fn(*args)`` on the pool."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _offload_for_client(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run ``fn(*args)`` on the pool, as a client's call."""
        return asyncio.get_running_loop().run_in_executor(self._pool, _for_client, fn, *args)

    def _unary(self, rpc: str, method: Callable[[Any, Any], Any]) -> Handler:
        on_loop = rpc in ON_LOOP
        offload = self._offload if rpc in WORKER_RPCS else self._offload_for_client

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = CallContext(context)
            try:
                response = method(request, call) if on_loop else await offload(method, request, call)
            except asyncio.CancelledError:
                call.cancelled = True
                raise
            except Exception as exc:
                await _fail(context, call, rpc, exc)
            finally:
                call.ended()
            call.apply(context)
            return response

        handler.__name__ = handler.__qualname__ = rpc
        return handler

    def _streaming(self, rpc: str, method: Callable[[Any, Any], Iterable[Any]]) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
            call = CallContext(context)
            try:
                responses = iter(method(request, call))
                while (response := await self._offload(next, responses, _END)) is not _END:
                    await context.write(response)
            except asyncio.CancelledError:
                call.cancelled = True
                raise
            except Exception as exc:
                await _fail(context, call, rpc, exc)
            finally:
                call.ended()  # e.g. closes a work-item stream, which ends a next() still waiting on the pool
            call.apply(context)

        handler.__name__ = handler.__qualname__ = rpc
        return handler

    # --- the RPCs that wait ------------------------------------------------------------------

    async def _wait(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext, rpc: str) -> Any:
        servicer = self._servicer
        done = servicer.WAITS[rpc]
        try:
            # As in SidecarServicer._wait: an instance that does not exist yet is waited for.
            instance_id = check_instance_id(request.instanceId)
            final = await servicer.watcher.wait_for_async(
                instance_id,
                read=lambda: self._offload_for_client(servicer.hub.get_instance, instance_id),
                done=lambda inst: inst is not None and done(inst),
                timeout=context.time_remaining(),
                may_end=servicer.WAIT_STATUSES[rpc],
                value_of=lambda state: state,
            )
            return servicer.waited(request, final, rpc)
        except Exception as exc:
            await context.abort(*error_status(exc, rpc))

    async def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._wait(request, context, "WaitForInstanceStart")

    async def WaitForInstanceCompletion(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._wait(request, context, "WaitForInstanceCompletion")

    async def GetWorkItems(self, request: pb.GetWorkItemsRequest, context: grpc.aio.ServicerContext) -> None:
        await check_stream_request(request, context, "GetWorkItems")
        dispatcher = self._servicer.dispatcher
        items = dispatcher.aiterate(dispatcher.open_stream(request))
        try:
            async for item in items:
                await context.write(item)
        finally:
            await items.aclose()  # closes the stream (a no-op when the iteration ended it)


class _Undecodable:
    """Stands for a request whose bytes did not parse (see :func:`add_to_server`)."""

    def __init__(self, size: int, error: Exception) -> None:
        self.size = size
        self.error = error


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return _Undecodable(len(data), exc)

    return deserialize


def _refusing_undecodable(method: str, handler: Handler) -> Handler:
    """``handler``, answering a request that did not parse with INTERNAL and one WARNING line (no traceback)."""

    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            log.warning(
                "undecodable request to %s from %s: %d bytes that do not parse (%s); answered INTERNAL",
                method, log_text(unquote(context.peer())), request.size, log_text(type(request.error).__name__),
            )
            await context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE_DETAILS)
        return await handler(request, context)

    return checked


class _Registrations:
    """Stands in for a server to collect what the generated ``add_..._to_server`` registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers come with add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_to_server(
    servicer: Any, server: grpc.aio.Server,
    register: Callable[[Any, Any], None] = pb_grpc.add_TaskHubSidecarServiceServicer_to_server,
) -> None:
    """Register ``servicer``'s handlers (with the generated ``register``), answering an undecodable
    request as a sync grpc server does.

    grpc.aio would answer UNKNOWN with the parser's error; the sidecar served with threads
    answered INTERNAL "Exception deserializing request!", and still does.
    """
    collected = _Registrations()
    register(servicer, collected)
    handlers = {}
    for rpc, handler in collected.handlers.items():
        if handler.request_streaming:  # the handler reads each message and refuses one that did not parse
            handlers[rpc] = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
            continue
        kind = "unary_stream" if handler.response_streaming else "unary_unary"
        handlers[rpc] = handler._replace(
            request_deserializer=_lenient(handler.request_deserializer),
            **{kind: _refusing_undecodable(f"/{collected.service}/{rpc}", getattr(handler, kind))},
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then cancel what is left and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class LoopServer:
    """A ``grpc.aio`` server for a servicer, on an event loop in a thread of its own; synchronous API.

    Unary RPCs run on a pool of ``pool_size`` threads (see :class:`AsyncServicer`); the loop
    thread, the pool and the event loop all end with :meth:`stop`. With ``credentials`` it serves
    TLS; ``interceptors`` (e.g. the token check) see every call of both services first.
    """

    def __init__(
        self,
        servicer: SidecarServicer,
        *,
        pool_size: int,
        options: Sequence[tuple[str, Any]],
        credentials: grpc.ServerCredentials | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self._servicer = servicer
        self._pool_size = pool_size
        self._options = list(options)
        self._credentials = credentials
        self._interceptors = list(interceptors)
        self._running: tuple[asyncio.AbstractEventLoop, threading.Thread, ThreadPoolExecutor] | None = None
        self._server: grpc.aio.Server | None = None

    def start(self, target: str) -> int:
        """Bind ``target`` and start serving. Returns the bound port (0: it could not bind)."""
        pool = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="sidecar-rpc")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="sidecar-grpc-loop", daemon=True)
        thread.start()
        running = (loop, thread, pool)
        try:
            port = asyncio.run_coroutine_threadsafe(self._serve(target, pool), loop).result()
        except BaseException:
            self._close(running)
            raise
        if not port:
            self._close(running)
            return 0
        self._running = running
        return port

    async def _serve(self, target: str, pool: Executor) -> int:
        server = grpc.aio.server(
            options=self._options, maximum_concurrent_rpcs=None, interceptors=self._interceptors or None
        )
        per_item = AsyncServicer(self._servicer, pool)
        add_to_server(per_item, server)
        batches = BatchServicer(lambda: self._servicer, per_item, pool)
        add_to_server(batches, server, batches_grpc.add_WorkBatchesServicer_to_server)
        if self._credentials is not None:
            port = server.add_secure_port(target, self._credentials)
        else:
            port = server.add_insecure_port(target)
        if port:
            await server.start()
            self._server = server
        return int(port)

    def stop(self, grace: float | None) -> None:
        """Stop serving (calls still running after ``grace`` seconds are cancelled); end the loop and the pool."""
        if self._running is None:
            return
        running, self._running = self._running, None
        loop = running[0]
        try:
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._stop_server(grace), loop).result()
        finally:
            self._close(running)

    async def _stop_server(self, grace: float | None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        # Let the calls' own tasks see the shutdown and end, rather than cancel them with the loop.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=_DRAIN_SECONDS)

    @staticmethod
    def _close(running: tuple[asyncio.AbstractEventLoop, threading.Thread, ThreadPoolExecutor]) -> None:
        loop, thread, pool = running
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        pool.shutdown(wait=True)
