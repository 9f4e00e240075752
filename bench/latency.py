"""Benchmark: how soon work reaches an idle worker, and how close to fire_at timers fire.

    python -m bench.latency [--samples 20] [--store memory|PATH]

For each sample, one orchestration: it records the turn time of its first turn (the sidecar's
orchestratorStarted timestamp), creates a timer 300 ms ahead, and records the turn time of the
turn that the timer's firing started. Reported: schedule -> first turn, and fire_at -> turn
(both measured on the sidecar's clock and the client's, which are the same machine here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--store", default=None, help="memory or a SQLite path (default: a temp file)")
    args = parser.parse_args()

    pickup: list[float] = []
    lateness: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = SidecarServer(args.store or str(Path(tmp) / "bench.db"))
        address = f"localhost:{server.start(0)}"
        try:
            with TaskHubGrpcWorker(host_address=address) as worker:
                worker.add_orchestrator(timed)
                worker.start()
                with TaskHubGrpcClient(host_address=address) as client:
                    for _ in range(args.samples):
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
            server.stop()

    for label, values in (("schedule -> first turn", pickup), ("fire_at -> timer turn", lateness)):
        ordered = sorted(values)
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        print(f"{label:24s} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   "
              f"max {max(values):7.1f} ms   (n={len(values)})")


if __name__ == "__main__":
    main()
