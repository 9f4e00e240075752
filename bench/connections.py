"""Benchmark: does the sidecar stay responsive with many open streams and long polls?

    python -m bench.connections [--streams 1000] [--waits 1000] [--hellos 200] [--channels 50]

Starts the sidecar in-process on a SQLite file in a temporary directory, starts ``--waits``
instances of an orchestration no worker runs, then opens ``--streams`` GetWorkItems streams
(filtered so that they receive no work) and one WaitForInstanceCompletion call per instance,
spread over ``--channels`` client connections (grpc.aio, so the benchmark itself needs no
thread per call). While they are open it measures Hello latency (sequential calls) and the
latency of starting a few more instances; then it terminates every instance and checks that
each wait returned TERMINATED. Every call has a deadline, so an unresponsive sidecar shows
up as failures rather than a hang. Not part of the test suite: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import empty_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.server import SidecarServer

ORCHESTRATOR = "bench.nobody_runs_this"
IDLE_REQUEST = pb.GetWorkItemsRequest(
    workItemFilters=pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="bench.idle")])
)


@dataclass
class Figures:
    """What one run measured."""

    streams_pinged: int = 0
    stream_open_seconds: float = 0.0
    hello_ms: list[float] = field(default_factory=list)
    hello_failures: int = 0
    start_ms: list[float] = field(default_factory=list)
    start_failures: int = 0
    terminate_failures: int = 0
    waits_terminated: int = 0
    wait_failures: dict[str, int] = field(default_factory=dict)
    waits_seconds: float = 0.0
    stop_seconds: float = 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _first_ping(call: grpc.aio.UnaryStreamCall, timeout: float) -> bool:
    """True when the stream's first message (the health ping) arrives within ``timeout``."""
    try:
        item = await asyncio.wait_for(call.read(), timeout)
    except (asyncio.TimeoutError, grpc.aio.AioRpcError):
        return False
    return isinstance(item, pb.WorkItem) and item.HasField("healthPing")


async def _wait(stub: pb_grpc.TaskHubSidecarServiceStub, instance_id: str, timeout: float) -> str:
    """The final status name of a completion wait, or the gRPC status code that ended it."""
    try:
        response = await stub.WaitForInstanceCompletion(
            pb.GetInstanceRequest(instanceId=instance_id), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return pb.OrchestrationStatus.Name(response.orchestrationState.orchestrationStatus)


async def _bounded(limit: int, calls: list) -> list:
    """Await the coroutines ``calls``, at most ``limit`` at a time; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(coro):  # type: ignore[no-untyped-def]
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def measure(
    server: SidecarServer, streams: int, waits: int, hellos: int, channels: int, timeout: float
) -> Figures:
    """Open the streams and waits against ``server``, measure, release them, and stop the server."""
    figures = Figures()
    address = f"127.0.0.1:{server.port}"
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    opened = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
    stubs = [pb_grpc.TaskHubSidecarServiceStub(channel) for channel in opened]
    control = grpc.aio.insecure_channel(address, options=options)
    stub = pb_grpc.TaskHubSidecarServiceStub(control)
    stream_calls: list[grpc.aio.UnaryStreamCall] = []
    wait_tasks: list[asyncio.Task[str]] = []
    try:
        await stub.Hello(empty_pb2.Empty(), timeout=10)
        ids = [f"conn-{uuid.uuid4().hex}" for _ in range(waits)]
        outcomes = await _bounded(32, [
            stub.StartInstance(pb.CreateInstanceRequest(name=ORCHESTRATOR, instanceId=i), timeout=timeout)
            for i in ids
        ])
        print(f"  started {waits - sum(isinstance(o, Exception) for o in outcomes)}/{waits} instances")

        began = time.perf_counter()
        stream_calls = [stubs[n % channels].GetWorkItems(IDLE_REQUEST) for n in range(streams)]
        pinged = await asyncio.gather(*(_first_ping(call, timeout) for call in stream_calls))
        figures.streams_pinged = sum(pinged)
        figures.stream_open_seconds = time.perf_counter() - began
        print(f"  {figures.streams_pinged}/{streams} streams got their first health ping "
              f"in {figures.stream_open_seconds:.2f}s")

        wait_tasks = [
            asyncio.create_task(_wait(stubs[n % channels], iid, timeout)) for n, iid in enumerate(ids)
        ]
        deadline = time.monotonic() + timeout
        while server.watcher.waiting() < waits and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        print(f"  {server.watcher.waiting()}/{waits} long polls waiting in the sidecar; "
              f"{threading.active_count()} threads in this process")

        for _ in range(hellos):
            began = time.perf_counter()
            try:
                await stub.Hello(empty_pb2.Empty(), timeout=5)
                figures.hello_ms.append((time.perf_counter() - began) * 1000)
            except grpc.aio.AioRpcError:
                figures.hello_failures += 1
        for _ in range(20):
            began = time.perf_counter()
            try:
                await stub.StartInstance(
                    pb.CreateInstanceRequest(name=ORCHESTRATOR, instanceId=f"extra-{uuid.uuid4().hex}"), timeout=5
                )
                figures.start_ms.append((time.perf_counter() - began) * 1000)
            except grpc.aio.AioRpcError:
                figures.start_failures += 1

        began = time.perf_counter()
        outcomes = await _bounded(
            32, [stub.TerminateInstance(pb.TerminateRequest(instanceId=i), timeout=timeout) for i in ids]
        )
        figures.terminate_failures = sum(isinstance(o, Exception) for o in outcomes)
        done, _ = await asyncio.wait(wait_tasks, timeout=timeout) if wait_tasks else (set(), set())
        figures.waits_seconds = time.perf_counter() - began
        for task in wait_tasks:
            outcome = task.result() if task in done else "NOT_RETURNED"
            if outcome == "ORCHESTRATION_STATUS_TERMINATED":
                figures.waits_terminated += 1
            else:
                figures.wait_failures[outcome] = figures.wait_failures.get(outcome, 0) + 1
    finally:
        for task in wait_tasks:
            task.cancel()
        for call in stream_calls:
            call.cancel()
        for channel in [*opened, control]:
            await channel.close()
        # Stopped while this loop still runs: the last events of the client calls find it open.
        began = time.perf_counter()
        await asyncio.to_thread(server.stop)
        figures.stop_seconds = time.perf_counter() - began
    return figures


def report(figures: Figures, streams: int, waits: int) -> None:
    """Print the figures of one run."""
    if figures.hello_ms:
        print(f"  Hello: p50 {_percentile(figures.hello_ms, 0.5):.1f} ms, p99 {_percentile(figures.hello_ms, 0.99):.1f} ms, "
              f"max {max(figures.hello_ms):.1f} ms over {len(figures.hello_ms)} calls; "
              f"{figures.hello_failures} failed (5 s deadline)")
    else:
        print(f"  Hello: all {figures.hello_failures} calls failed (5 s deadline)")
    if figures.start_ms:
        print(f"  StartInstance: median {statistics.median(figures.start_ms):.1f} ms, "
              f"max {max(figures.start_ms):.1f} ms; {figures.start_failures} failed (5 s deadline)")
    else:
        print(f"  StartInstance: all {figures.start_failures} calls failed (5 s deadline)")
    print(f"  terminations: {figures.terminate_failures} of {waits} failed")
    print(f"  waits: {figures.waits_terminated}/{waits} returned TERMINATED "
          f"{figures.waits_seconds:.2f}s after the terminations began; other outcomes: {figures.wait_failures or 'none'}")
    print(f"  streams: {figures.streams_pinged}/{streams} served; sidecar stopped in {figures.stop_seconds:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--hellos", type=int, default=200)
    parser.add_argument("--channels", type=int, default=50, help="client connections the calls are spread over")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of the streams' first pings and the waits")
    args = parser.parse_args()
    print(f"connections: {args.streams} GetWorkItems streams + {args.waits} WaitForInstanceCompletion calls "
          f"over {args.channels} connections, in-process sidecar on SQLite")
    with tempfile.TemporaryDirectory() as tmp:
        server = SidecarServer(str(Path(tmp) / "bench.db"))
        server.start(0)
        figures = asyncio.run(measure(server, args.streams, args.waits, args.hellos, args.channels, args.timeout))
    report(figures, args.streams, args.waits)


if __name__ == "__main__":
    main()
