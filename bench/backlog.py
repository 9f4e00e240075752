"""Benchmark: a backlog of new orchestrations, and whether activities keep flowing while it drains.

    python -m bench.backlog [--count 20000] [--store sqlite|postgresql] [--in-process]
                            [--observe queries|waits|both]

Starts the sidecar (as a process of its own, as it is deployed; ``--in-process`` runs it in the
benchmark's process instead, sharing one interpreter with worker and client), schedules ``count``
orchestrations while no worker runs (each records its first turn's time, then calls one
activity), then starts one worker. Reported: the rate of first turns (count / span of first-turn
times), when the first and the median orchestration completed (both need an activity, so they
show whether activities wait for the backlog of first turns to drain), and the total time.

How the benchmark sees the backlog drain (``--observe``, default ``both``, one run each):
``queries`` asks twice a second for one instance not yet finished (a query the sidecar answers
from its status column), so the figures are the sidecar's and the worker's alone; ``waits`` has
16 client threads long-poll each instance in turn (``WaitForInstanceCompletion``), as an
application waiting on every orchestration would: one more gRPC call per orchestration for the
sidecar to serve while it drains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from bench.compare import backend_process
from bench.stores import kinds, store_spec
from durabletask import task
from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import SidecarServer


def touch(ctx: task.ActivityContext, value: int) -> int:
    return value


def first_turn_then_activity(ctx: task.OrchestrationContext, value: int):
    first_turn = ctx.current_utc_datetime.isoformat()
    yield ctx.call_activity(touch, input=value)
    return first_turn


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch of a UTC time (naive ones are UTC too)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@contextmanager
def sidecar(spec: str, in_process: bool) -> Iterator[str]:
    """A sidecar on store ``spec``, in this process or as a process of its own; yields its address."""
    if in_process:
        server = SidecarServer(spec)
        try:
            yield f"localhost:{server.start(0)}"
        finally:
            server.stop()
        return
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "sidecar", "--store", spec, "--port", "0", "--log-level", "WARNING"]
        with backend_process(command, Path(workdir) / "sidecar.log", "the sidecar") as address:
            yield address


OBSERVERS = ("queries", "waits")
_UNFINISHED = [OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING]


def drained_by_queries(client: TaskHubGrpcClient, deadline: float) -> list[OrchestrationState]:
    """Every instance's final state, once a query twice a second finds none unfinished."""
    while client.get_orchestration_state_page(OrchestrationQuery(runtime_status=_UNFINISHED, max_instance_count=1)).items:
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain in time")
        time.sleep(0.5)  # the observer's pace: not a coordination between threads
    return client.get_all_orchestration_states(OrchestrationQuery(fetch_inputs_and_outputs=True))


def run(spec: str, count: int, in_process: bool, observe: str = "queries") -> dict[str, float]:
    """Figures of one run, in seconds from the worker's start (and first turns per second)."""
    with sidecar(spec, in_process) as address:
        with TaskHubGrpcClient(host_address=address) as client:
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(
                    lambda i: client.schedule_new_orchestration(first_turn_then_activity, input=i), range(count)
                ))
            with TaskHubGrpcWorker(host_address=address) as worker:
                worker.add_orchestrator(first_turn_then_activity)
                worker.add_activity(touch)
                started = time.time()
                worker.start()
                states: list[OrchestrationState | None]
                if observe == "waits":
                    with ThreadPoolExecutor(16) as pool:
                        states = list(pool.map(lambda i: client.wait_for_orchestration_completion(i, timeout=1800), ids))
                    total = time.time() - started
                else:
                    states = list(drained_by_queries(client, time.monotonic() + 1800))
                    total = max(_epoch(s.last_updated_at) for s in states if s is not None) - started
                    assert len(states) == count, f"{len(states)} instances, expected {count}"
        first_turns: list[float] = []
        completions: list[float] = []
        for state in states:
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            first_turns.append(_epoch(datetime.fromisoformat(state.get_output())))
            completions.append(_epoch(state.last_updated_at))
        span = max(first_turns) - min(first_turns)
        return {
            "first_turns_per_s": count / span if span > 0 else float("inf"),
            "first_turns_done_s": max(first_turns) - started,
            "first_completion_s": min(completions) - started,
            "median_completion_s": statistics.median(completions) - started,
            "total_s": total,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default=None,
                        help="one store only (default: SQLite, and PostgreSQL when reachable)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sidecar in this process (default: a process of its own)")
    parser.add_argument("--observe", choices=[*OBSERVERS, "both"], default="both",
                        help="how completion is seen: paged queries, a long poll per instance, or one run of each")
    args = parser.parse_args()
    where = "in-process" if args.in_process else "as a process of its own"
    print(f"backlog: {args.count} orchestrations scheduled before a worker starts; each one activity; "
          f"the sidecar {where}")
    observers = OBSERVERS if args.observe == "both" else (args.observe,)
    for kind in kinds(args.store):
        for observe in observers:
            with store_spec(kind) as spec:
                f = run(spec, args.count, args.in_process, observe)
            print(f"  {kind:10s} {observe:7s} first turns {f['first_turns_per_s']:7.1f}/s "
                  f"(all done at {f['first_turns_done_s']:6.1f} s)  first completion at {f['first_completion_s']:6.1f} s"
                  f"  median completion at {f['median_completion_s']:6.1f} s  total {f['total_s']:6.1f} s")


if __name__ == "__main__":
    main()
