"""Benchmark: how soon work reaches an idle worker, and how close to fire_at timers fire.

    python -m bench.latency [--samples 20] [--store sqlite|postgresql]

On PostgreSQL it also runs with two sidecars on one database: the client talks to one, the
worker to the other, so pick-up and timers cross sidecars (LISTEN/NOTIFY wakes the second).

For each sample, one orchestration: it records the turn time of its first turn (the sidecar's
orchestratorStarted timestamp), creates a timer 300 ms ahead, and records the turn time of the
turn that the timer's firing started. Reported: schedule -> first turn, and fire_at -> turn
(both measured on the sidecar's clock and the client's, which are the same machine here).
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timedelta, timezone

from bench.stores import kinds, store_spec
from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import SidecarServer

TIMER = timedelta(milliseconds=300)


def timed(ctx: task.OrchestrationContext, _: None):
    first_turn = ctx.current_utc_datetime
    fire_at = first_turn + TIMER
    yield ctx.create_timer(fire_at)
    return {"first_turn": first_turn.isoformat(), "fire_at": fire_at.isoformat(),
            "fired_turn": ctx.current_utc_datetime.isoformat()}


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def run(spec: str, samples: int, two_sidecars: bool) -> tuple[list[float], list[float]]:
    """(schedule -> first turn, fire_at -> timer turn) in ms, per sample."""
    pickup: list[float] = []
    lateness: list[float] = []
    servers = [SidecarServer(spec) for _ in range(2 if two_sidecars else 1)]
    addresses = [f"localhost:{server.start(0)}" for server in servers]
    try:
        with TaskHubGrpcWorker(host_address=addresses[-1]) as worker:
            worker.add_orchestrator(timed)
            worker.start()
            with TaskHubGrpcClient(host_address=addresses[0]) as client:
                for _ in range(samples):
                    scheduled = datetime.now(timezone.utc).replace(tzinfo=None)
                    instance_id = client.schedule_new_orchestration(timed)
                    state = client.wait_for_orchestration_completion(instance_id, timeout=60)
                    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
                    out = state.get_output()
                    first = datetime.fromisoformat(out["first_turn"])
                    pickup.append(_ms(first - scheduled))
                    lateness.append(_ms(datetime.fromisoformat(out["fired_turn"])
                                        - datetime.fromisoformat(out["fire_at"])))
    finally:
        for server in servers:
            server.stop()
    return pickup, lateness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default=None,
                        help="one store only (default: SQLite, and PostgreSQL when reachable)")
    args = parser.parse_args()

    print(f"latency: {args.samples} orchestrations, one at a time, each with a {_ms(TIMER):.0f} ms timer")
    runs = [(kind, False) for kind in kinds(args.store)]
    if any(kind == "postgresql" for kind, _ in runs):
        runs.append(("postgresql", True))
    for kind, two in runs:
        with store_spec(kind) as spec:
            pickup, lateness = run(spec, args.samples, two)
        where = f"{kind}, client and worker on two sidecars" if two else kind
        print(f"  {where}")
        for label, values in (("schedule -> first turn", pickup), ("fire_at -> timer turn", lateness)):
            ordered = sorted(values)
            p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
            print(f"    {label:24s} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   "
                  f"max {max(values):7.1f} ms   (n={len(values)})")


if __name__ == "__main__":
    main()
