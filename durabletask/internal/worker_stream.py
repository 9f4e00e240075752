"""The worker's connection to the sidecar: the ``GetWorkItems`` stream and its reconnects.

One reader thread connects (``Hello``), opens the stream and hands every work item
to a callback that must not block. When the stream fails or ends it reconnects with
jittered exponential backoff; after several failures in a row it replaces the
channel (when it owns it). A watchdog thread cancels a stream that has been silent
for longer than the configured limit, which the reader then treats as a failure.

The stream is opened with our sidecar's ``WorkBatches.OpenWorkChannel`` first (work items in
batches, and the worker's results sent back on the same call, ``protos/work_batches.proto``),
then ``WorkBatches.GetWorkItemBatches`` (batches only); each that a sidecar answers
UNIMPLEMENTED (every other backend) is not asked for again on that channel, down to
``GetWorkItems``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import empty_pb2

from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import grpc_channel
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from durabletask.internal.worker_channel import ChannelSender

# Keep gRPC's own reconnect backoff short so a restarted sidecar is found quickly.
RECONNECT_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

# How long a stopping worker waits for the outcomes of the results it sent on its work channel.
CHANNEL_FINISH_SECONDS = 5.0


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``min(cap, base * 2**attempt)``,
    of which the upper half is random (so the delay is never near zero, and workers spread out)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class WorkItemStream:
    """Keeps a ``GetWorkItems`` stream open on a background thread."""

    def __init__(
        self,
        *,
        host_address: str,
        make_request: Callable[[], pb.GetWorkItemsRequest],
        on_work_item: Callable[[pb.WorkItem], None],
        logger: logging.Logger,
        resiliency: GrpcWorkerResiliencyOptions,
        channel: grpc.Channel | None = None,
        secure_channel: bool = False,
        interceptors: Sequence[Any] | None = None,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self._host_address = host_address
        self._make_request = make_request
        self._on_work_item = on_work_item
        self._logger = logger
        self._resiliency = resiliency
        self._owns_channel = channel is None
        self._channel: grpc.Channel | None = channel
        self._stub: Any = pb_grpc.TaskHubSidecarServiceStub(channel) if channel is not None else None
        self._batch_stub: Any = batches_grpc.WorkBatchesStub(channel) if channel is not None else None
        # Whether the sidecar serves work channels and work-item batches: None until known (asked
        # again on a new channel).
        self._serves_channel: bool | None = None
        self._serves_batches: bool | None = None
        self._batched = False  # the open stream is a GetWorkItemBatches stream or a work channel
        self._sender: ChannelSender | None = None  # the open work channel's sender
        self._secure_channel = secure_channel
        self._interceptors = list(interceptors) if interceptors else None
        # A gRPC channel leaves out of bidirectional calls the interceptors that do not intercept
        # them: one that adds credentials would see the channel refused, so none is opened then.
        self._channel_intercepted = all(
            isinstance(i, grpc.StreamStreamClientInterceptor) for i in self._interceptors or ())
        self._channel_options = [*RECONNECT_CHANNEL_OPTIONS, *(channel_options or [])]
        self._metadata = tuple(metadata) if metadata else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._call: Any = None
        self._last_message = time.monotonic()
        self._silenced = False
        self._opening_channel = False  # a work channel is open and has not sent its first message
        self._reader = threading.Thread(target=self._read_loop, name="durabletask-worker-stream", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="durabletask-worker-watchdog", daemon=True)
        self.connected = threading.Event()
        """Set while a stream is open (after a successful ``Hello``)."""
        self.connections = 0
        """How many streams have been opened so far."""
        self.items_with_outcomes = 0
        """How many work items came in the same message as outcomes (``readyWork``)."""

    # ----- public -----

    def start(self) -> None:
        """Start the reader and watchdog threads."""
        self._reader.start()
        self._watchdog.start()

    def stub(self) -> Any:
        """The stub of the current channel, or None before the first connection attempt."""
        with self._lock:
            return self._stub

    def batch_stub(self) -> Any:
        """What sends results in batches while the open stream is batched, else None: the open work
        channel's :class:`ChannelSender`, or the WorkBatches stub of the current channel."""
        with self._lock:
            if not self._batched:
                return None
            return self._sender if self._sender is not None else self._batch_stub

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the stream and join the threads; the channel stays open for pending completions.

        On a work channel, the results already sent get their outcomes first (for up to
        ``CHANNEL_FINISH_SECONDS``): cancelled, the call would lose them, and the results would go
        again one by one, to be refused as stale.
        """
        self._stopping.set()
        with self._lock:
            sender = self._sender
        if sender is not None and not sender.finish(min(timeout, CHANNEL_FINISH_SECONDS)):
            self._logger.debug("some outcomes did not come before the stop; their results go again one by one")
        self._cancel_current()
        ended = True
        for thread in (self._reader, self._watchdog):
            if thread.ident is not None:
                thread.join(timeout)
                ended = ended and not thread.is_alive()
        if not ended:
            self._logger.warning("the work-item stream thread did not end in time")
        return ended

    def close(self) -> None:
        """Close the channel if this object created it."""
        with self._lock:
            channel, self._channel, self._stub, self._batch_stub = self._channel, None, None, None
        if channel is not None and self._owns_channel:
            channel.close()

    # ----- internals -----

    def _cancel_current(self) -> None:
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _ensure_stub(self, replace: bool) -> Any:
        with self._lock:
            if self._owns_channel and (self._channel is None or replace):
                old = self._channel
                self._channel = grpc_channel.new_channel(
                    self._host_address, self._secure_channel, self._interceptors, self._channel_options
                )
                self._stub = pb_grpc.TaskHubSidecarServiceStub(self._channel)
                self._batch_stub = batches_grpc.WorkBatchesStub(self._channel)
                self._serves_channel = None
                self._serves_batches = None
                if old is not None:
                    old.close()
            return self._stub

    def _track(self, call: Any) -> bool:
        """Make ``call`` the one ``stop`` cancels; False (and cancelled) if stopping already."""
        with self._lock:
            self._call = call
            self._last_message = time.monotonic()
            self._silenced = False
        if self._stopping.is_set():
            call.cancel()
            return False
        return True

    def _read_loop(self) -> None:
        attempt = 0
        failures = 0
        while not self._stopping.is_set():
            replace = 0 < self._resiliency.channel_recreate_failure_threshold <= failures
            if replace and self._owns_channel:
                self._logger.info("replacing the channel to %s after %d failures", self._host_address, failures)
                failures = 0
            stub = self._ensure_stub(replace)
            received = False
            mode = "items"  # or "channel" (OpenWorkChannel) or "batches" (GetWorkItemBatches)
            sender: ChannelSender | None = None
            try:
                hello = stub.Hello.future(
                    empty_pb2.Empty(), timeout=self._resiliency.hello_timeout_seconds, metadata=self._metadata
                )
                if not self._track(hello):
                    break
                hello.result()
                with self._lock:
                    batch_stub = self._batch_stub
                    if batch_stub is not None and self._serves_channel is not False and self._channel_intercepted:
                        mode = "channel"
                    elif batch_stub is not None and self._serves_batches is not False:
                        mode = "batches"
                if mode == "channel":
                    sender = ChannelSender(self._make_request())
                    call = batch_stub.OpenWorkChannel(sender.requests(), metadata=self._metadata)
                    with self._lock:
                        self._opening_channel = True
                elif mode == "batches":
                    call = batch_stub.GetWorkItemBatches(self._make_request(), metadata=self._metadata)
                else:
                    call = stub.GetWorkItems(self._make_request(), metadata=self._metadata)
                if not self._track(call):
                    break
                if mode == "items":
                    self._connected(mode, None)
                for message in call:
                    if mode != "items" and not received:
                        self._connected(mode, sender)  # the sidecar serves this call: its first message came
                    with self._lock:
                        self._last_message = time.monotonic()
                    received = True
                    attempt = 0
                    failures = 0
                    if mode == "items":
                        self._deliver(message)
                        continue
                    if mode == "channel":
                        assert sender is not None
                        if message.maxMessageBytes > 0:
                            sender.max_message_bytes = message.maxMessageBytes
                        if message.WhichOneof("message") == "outcomes":
                            for item in message.readyWork.workItems:  # as if received just before
                                self.items_with_outcomes += 1
                                self._deliver(item)
                            sender.answered(message.callId, message.outcomes)
                            continue
                        message = message.workItems
                    for item in message.workItems:
                        self._deliver(item)
                if not self._stopping.is_set():
                    self._logger.info("the sidecar closed the work-item stream; reconnecting")
            except grpc.RpcError as err:
                if self._stopping.is_set():
                    break
                if mode != "items" and not received and isinstance(err, grpc.Call) \
                        and err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    with self._lock:
                        if mode == "channel":
                            self._serves_channel = False
                        else:
                            self._serves_batches = False
                    self._logger.debug("the sidecar does not serve %s; trying the next way",
                                       "work channels" if mode == "channel" else "work-item batches")
                    continue
                failures += 1
                self._log_stream_error(err)
            except Exception:
                if self._stopping.is_set():
                    break
                failures += 1
                self._logger.exception("unexpected error on the work-item stream")
            finally:
                self.connected.clear()
                with self._lock:
                    self._opening_channel = False
                    self._call = None
                    self._batched = False
                    self._sender = None
                if sender is not None:
                    sender.close()  # its sends still waiting go again one by one
            if self._stopping.is_set():
                break
            if not received:
                attempt += 1
            delay = backoff_delay(
                max(0, attempt - 1),
                self._resiliency.reconnect_backoff_base_seconds,
                self._resiliency.reconnect_backoff_cap_seconds,
            )
            self._logger.debug("reconnecting in %.2f s", delay)
            if self._stopping.wait(delay):
                break
        self._logger.info("no longer listening for work items")

    def _connected(self, mode: str, sender: ChannelSender | None) -> None:
        with self._lock:
            self._opening_channel = False
            self._batched = mode != "items"
            self._sender = sender
            if mode == "channel":
                self._serves_channel = True
            elif mode == "batches":
                self._serves_batches = True
        self.connections += 1
        self.connected.set()
        self._logger.info("connected to %s; waiting for work items", self._host_address)

    def _deliver(self, item: pb.WorkItem) -> None:
        try:
            self._on_work_item(item)
        except Exception:
            self._logger.exception("failed to dispatch a work item")

    def _log_stream_error(self, err: grpc.RpcError) -> None:
        with self._lock:
            silenced = self._silenced
        code = err.code() if isinstance(err, grpc.Call) else None
        if silenced:
            self._logger.warning(
                "no message from %s for %.0f s: treating the stream as dead",
                self._host_address,
                self._resiliency.silent_disconnect_timeout_seconds,
            )
        elif code == grpc.StatusCode.UNAVAILABLE:
            self._logger.warning("the sidecar at %s is unavailable; retrying", self._host_address)
        else:
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            self._logger.warning("work-item stream error (%s): %s; reconnecting", code, details)

    def _watch(self) -> None:
        """Cancel a stream silent for longer than the limit (0: never), and a work channel with no
        first message within the Hello timeout: our sidecar sends one at once, so something on the
        way (a proxy that does not carry bidirectional calls) holds it, and the channel is not
        asked for again on this connection."""
        limit = self._resiliency.silent_disconnect_timeout_seconds
        opening_limit = self._resiliency.hello_timeout_seconds
        interval = min(5.0, max(0.05, min(limit or opening_limit, opening_limit) / 4))
        while not self._stopping.wait(interval):
            with self._lock:
                call = self._call
                silent = time.monotonic() - self._last_message
                stale = call is not None and 0 < limit < silent
                unopened = call is not None and self._opening_channel and silent > opening_limit
                if stale:
                    self._silenced = True
                if unopened:
                    self._serves_channel = False
            if unopened:
                self._logger.warning("no first message on the work channel to %s within %.0f s; using "
                                     "GetWorkItemBatches", self._host_address, opening_limit)
            if stale or unopened:
                call.cancel()
