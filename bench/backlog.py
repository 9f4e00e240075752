"""Benchmark: a backlog of new orchestrations, and whether activities keep flowing while it drains.

    python -m bench.backlog [--count 20000] [--store sqlite|postgresql]

Starts the sidecar in-process, schedules ``count`` orchestrations while no worker runs (each
records its first turn's time, then calls one activity), then starts one worker. Reported:
the rate of first turns (count / span of first-turn times), when the first and the median
orchestration completed (both need an activity, so they show whether activities wait for the
backlog of first turns to drain), and the total time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from bench.stores import kinds, store_spec
from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
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


def run(spec: str, count: int) -> dict[str, float]:
    """Figures of one run, in seconds from the worker's start (and first turns per second)."""
    server = SidecarServer(spec)
    address = f"localhost:{server.start(0)}"
    try:
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
                with ThreadPoolExecutor(16) as pool:
                    states = list(pool.map(lambda i: client.wait_for_orchestration_completion(i, timeout=1800), ids))
                total = time.time() - started
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
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default=None,
                        help="one store only (default: SQLite, and PostgreSQL when reachable)")
    args = parser.parse_args()
    print(f"backlog: {args.count} orchestrations scheduled before a worker starts; each one activity")
    for kind in kinds(args.store):
        with store_spec(kind) as spec:
            f = run(spec, args.count)
        print(f"  {kind:10s} first turns {f['first_turns_per_s']:7.1f}/s (all done at {f['first_turns_done_s']:6.1f} s)  "
              f"first completion at {f['first_completion_s']:6.1f} s  median completion at "
              f"{f['median_completion_s']:6.1f} s  total {f['total_s']:6.1f} s")


if __name__ == "__main__":
    main()
