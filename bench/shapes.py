"""Benchmark workloads that run on either SDK: ours, or Microsoft's official ``durabletask``.

One workload process = one worker and one client (or several client threads) against one backend,
as an application would have them. ``bench/compare.py`` runs it with each interpreter::

    <python> -P bench/shapes.py --sdk-side --address localhost:4001 --workload chain --size 300

It prints one line ``RESULT {json}`` with the elapsed seconds (first schedule to last completion,
after one untimed warm-up orchestration), the orchestration and activity counts, and which SDK ran
(``ours`` or ``official``); on a failure or a timeout the JSON has an ``error`` and the exit code is 1.

Only APIs both SDKs share are used (``task.OrchestrationContext``, ``ctx.call_activity``,
``task.when_all``, ``TaskHubGrpcClient.schedule_new_orchestration`` and
``wait_for_orchestration_completion``, ``TaskHubGrpcWorker.add_orchestrator/add_activity/start/stop``),
and only the standard library besides: the official SDK's environment has nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Generator
from importlib import metadata
from pathlib import Path
from typing import Any

import durabletask
from durabletask import task
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
WORKLOADS = ("chain", "fanout", "orchestrations", "clients")


class WorkloadError(Exception):
    """The workload could not finish: a timeout, or an instance that did not complete as expected."""


# ---------------------------------------------------------------- orchestrators and activities


def bench_increment(ctx: task.ActivityContext, value: int) -> int:
    """The activity of every workload: returns its input plus one."""
    return value + 1


def bench_chain(ctx: task.OrchestrationContext, count: int) -> Generator[task.Task[Any], Any, Any]:
    """Calls ``bench_increment`` ``count`` times in sequence; returns ``count``."""
    value = 0
    for _ in range(count):
        value = yield ctx.call_activity(bench_increment, input=value)
    return value


def bench_fanout(ctx: task.OrchestrationContext, count: int) -> Generator[task.Task[Any], Any, Any]:
    """Calls ``bench_increment`` ``count`` times at once and waits for all; returns the sum of results."""
    results = yield task.when_all([ctx.call_activity(bench_increment, input=i) for i in range(count)])
    return sum(results)


def fanout_total(count: int) -> int:
    """What ``bench_fanout(count)`` returns: 1 + 2 + ... + count."""
    return count * (count + 1) // 2


# ---------------------------------------------------------------- running them


class Deadline:
    """One time budget for a whole workload; every wait gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self, what: str) -> float:
        """Seconds left; raises ``WorkloadError`` naming ``what`` when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise WorkloadError(f"timed out after {self.seconds:g}s before {what}")
        return left


def wait_completed(client: TaskHubGrpcClient, instance_id: str, expected: int, deadline: Deadline) -> None:
    """Waits for ``instance_id`` to complete with output ``expected``; raises ``WorkloadError`` otherwise."""
    what = f"instance {instance_id} completed"
    try:
        state = client.wait_for_orchestration_completion(instance_id, timeout=deadline.remaining(what))
    except TimeoutError:
        raise WorkloadError(f"timed out after {deadline.seconds:g}s waiting until {what}") from None
    if state is None:
        raise WorkloadError(f"instance {instance_id} does not exist")
    status = state.runtime_status.name
    if status != "COMPLETED":
        raise WorkloadError(f"instance {instance_id} ended {status}: {state.failure_details}")
    output = json.loads(state.serialized_output or "null")
    if output != expected:
        raise WorkloadError(f"instance {instance_id} returned {output!r}, expected {expected!r}")


def run_chain(client: TaskHubGrpcClient, size: int, deadline: Deadline) -> tuple[int, int]:
    """One orchestration of ``size`` sequential activities."""
    wait_completed(client, client.schedule_new_orchestration(bench_chain, input=size), size, deadline)
    return 1, size


def run_fanout(client: TaskHubGrpcClient, size: int, deadline: Deadline) -> tuple[int, int]:
    """One orchestration of ``size`` parallel activities."""
    instance_id = client.schedule_new_orchestration(bench_fanout, input=size)
    wait_completed(client, instance_id, fanout_total(size), deadline)
    return 1, size


def run_orchestrations(client: TaskHubGrpcClient, size: int, deadline: Deadline) -> tuple[int, int]:
    """``size`` orchestrations of one activity each, all scheduled first, then awaited."""
    ids = [client.schedule_new_orchestration(bench_chain, input=1) for _ in range(size)]
    for instance_id in ids:
        wait_completed(client, instance_id, 1, deadline)
    return size, size


def run_clients(address: str, threads: int, size: int, activities: int, deadline: Deadline) -> tuple[int, int]:
    """``threads`` client threads, each with its own client: ``size`` times, schedule one orchestration
    of ``activities`` sequential activities and wait for it."""
    errors: list[BaseException] = []

    def one_client() -> None:
        try:
            with TaskHubGrpcClient(host_address=address) as client:
                for _ in range(size):
                    if errors:
                        return
                    instance_id = client.schedule_new_orchestration(bench_chain, input=activities)
                    wait_completed(client, instance_id, activities, deadline)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=one_client, name=f"client-{n}", daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(deadline.remaining("every client thread finished"))
        if thread.is_alive():
            raise WorkloadError(f"timed out after {deadline.seconds:g}s waiting for {thread.name}")
    if errors:
        raise errors[0]
    return threads * size, threads * size * activities


def which_sdk() -> str:
    """``ours`` when ``durabletask`` is this repository's package, else ``official <version>``."""
    location = Path(durabletask.__file__).resolve().parent
    if location == REPO_ROOT / "durabletask":
        return "ours"
    try:
        return f"official {metadata.version('durabletask')}"
    except metadata.PackageNotFoundError:
        return "official (version unknown)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Starts a worker, warms up with one orchestration, then times the workload; returns the result."""
    deadline = Deadline(args.timeout)
    worker = TaskHubGrpcWorker(host_address=args.address)
    worker.add_orchestrator(bench_chain)
    worker.add_orchestrator(bench_fanout)
    worker.add_activity(bench_increment)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=args.address) as client:
            wait_completed(client, client.schedule_new_orchestration(bench_chain, input=1), 1, deadline)
            workload: Callable[[], tuple[int, int]]
            if args.workload == "chain":
                workload = lambda: run_chain(client, args.size, deadline)  # noqa: E731
            elif args.workload == "fanout":
                workload = lambda: run_fanout(client, args.size, deadline)  # noqa: E731
            elif args.workload == "orchestrations":
                workload = lambda: run_orchestrations(client, args.size, deadline)  # noqa: E731
            else:
                workload = lambda: run_clients(  # noqa: E731
                    args.address, args.threads, args.size, args.activities, deadline)
            started = time.perf_counter()
            orchestrations, activities = workload()
            elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    return {"workload": args.workload, "elapsed": elapsed, "orchestrations": orchestrations,
            "activities": activities, "sdk": which_sdk()}


def main(argv: list[str] | None = None) -> int:
    """The ``--sdk-side`` entry point: runs one workload and prints its ``RESULT`` line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdk-side", action="store_true", required=True,
                        help="run one workload in this process (the only mode)")
    parser.add_argument("--address", required=True, help="host:port of the backend")
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--size", type=int, required=True,
                        help="activities (chain, fanout), orchestrations (orchestrations), "
                             "or orchestrations per client thread (clients)")
    parser.add_argument("--threads", type=int, default=20, help="client threads (clients)")
    parser.add_argument("--activities", type=int, default=3, help="sequential activities per orchestration (clients)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the whole workload may take")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except Exception as exc:
        print(RESULT_PREFIX + json.dumps({"workload": args.workload, "sdk": which_sdk(),
                                          "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
