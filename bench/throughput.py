"""Benchmark: orchestrations per second through the real sidecar, on SQLite and on PostgreSQL.

    python -m bench.throughput [--instances 200] [--activities 5] [--store sqlite|postgresql]

Starts the sidecar in-process, one worker, one client; schedules N orchestrations that each
call M activities in sequence, and reports the wall time from first schedule to last completion,
orchestrations/s and activities/s. Not part of the test suite: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import time

from bench.stores import kinds, store_spec
from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import SidecarServer


def noop(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


def chain(ctx: task.OrchestrationContext, count: int):
    value = 0
    for _ in range(count):
        value = yield ctx.call_activity(noop, input=value)
    return value


def run(spec: str, instances: int, activities: int) -> float:
    """Seconds from the first schedule to the last completion."""
    server = SidecarServer(spec)
    port = server.start(0)
    address = f"localhost:{port}"
    try:
        with TaskHubGrpcWorker(host_address=address) as worker:
            worker.add_orchestrator(chain)
            worker.add_activity(noop)
            worker.start()
            with TaskHubGrpcClient(host_address=address) as client:
                started = time.perf_counter()
                ids = [client.schedule_new_orchestration(chain, input=activities) for _ in range(instances)]
                for instance_id in ids:
                    state = client.wait_for_orchestration_completion(instance_id, timeout=600)
                    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
                return time.perf_counter() - started
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--activities", type=int, default=5)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default=None,
                        help="one store only (default: SQLite, and PostgreSQL when reachable)")
    args = parser.parse_args()
    print(f"throughput: {args.instances} orchestrations x {args.activities} sequential activities, one worker")
    for kind in kinds(args.store):
        with store_spec(kind) as spec:
            elapsed = run(spec, args.instances, args.activities)
        print(f"  {kind:10s} elapsed {elapsed:6.2f}s  {args.instances / elapsed:7.1f} orchestrations/s  "
              f"{args.instances * args.activities / elapsed:7.1f} activities/s")


if __name__ == "__main__":
    main()
