"""Benchmark: the sidecar's memory with many finished instances stored.

    python -m bench.memory [--instances 100000]

Writes ``instances`` finished orchestrations (each with a short history) into a fresh SQLite
file, starts our sidecar on it as a process, then works it: pages through every instance with
``QueryInstances``, reads a thousand of them with their history, and runs a hundred new
orchestrations of one activity with our worker. Reported: the sidecar's resident memory after
start-up and its peak (``VmHWM``) at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.compare import started_backend
from durabletask import task
from durabletask.client import OrchestrationQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import TaskHubGrpcWorker
from sidecar import engine_events
from sidecar.model import InstanceSnapshot
from sidecar.store import open_store
from sidecar.store.base import StoreTx

BATCH = 1000


def fill(path: Path, count: int) -> None:
    """``count`` COMPLETED instances, each with executionStarted and executionCompleted in history."""
    store = open_store(str(path))
    now = datetime.now(timezone.utc)
    try:
        for start in range(0, count, BATCH):

            def write(tx: StoreTx, start: int = start) -> None:
                for n in range(start, min(start + BATCH, count)):
                    iid = f"done-{n:07d}"
                    tx.insert_instance(InstanceSnapshot(
                        instance_id=iid, execution_id=f"e-{n}", name="finished", status=pb.ORCHESTRATION_STATUS_COMPLETED,
                        created_at=now, last_updated_at=now, completed_at=now, input=f'{{"n": {n}}}', output='"ok"',
                    ))
                    tx.append_history(iid, [
                        engine_events.new_execution_started(name="finished", instance_id=iid, execution_id=f"e-{n}",
                                                            now=now, input=f'{{"n": {n}}}'),
                        engine_events.execution_completed_event(pb.ORCHESTRATION_STATUS_COMPLETED, '"ok"', None, now, 2),
                    ])

            store.run(write)
    finally:
        store.close()


def rss_mib(pid: int, field: str) -> float:
    """A memory figure of a process from /proc (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def touch(ctx: task.ActivityContext, value: int) -> int:
    return value


def one_step(ctx: task.OrchestrationContext, value: int):
    result = yield ctx.call_activity(touch, input=value)
    return result


def work(address: str, count: int) -> int:
    """Page through everything, read a sample with history, run new orchestrations; returns instances seen."""
    with TaskHubGrpcClient(host_address=address) as client:
        seen = len(client.get_all_orchestration_states(OrchestrationQuery(max_instance_count=1000)))
        for n in range(0, count, max(1, count // 1000)):
            assert client.get_orchestration_state(f"done-{n:07d}") is not None
            client.get_orchestration_history(f"done-{n:07d}")
        with TaskHubGrpcWorker(host_address=address) as worker:
            worker.add_orchestrator(one_step)
            worker.add_activity(touch)
            worker.start()
            ids = [client.schedule_new_orchestration(one_step, input=i) for i in range(100)]
            for iid in ids:
                state = client.wait_for_orchestration_completion(iid, timeout=120)
                assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.db"
        started = time.perf_counter()
        fill(path, args.instances)
        print(f"memory: {args.instances} finished instances written in {time.perf_counter() - started:.1f} s")
        command = [sys.executable, "-m", "sidecar", "--store", str(path), "--port", "0", "--log-level", "WARNING"]
        with started_backend(command, Path(tmp) / "sidecar.log", "our sidecar") as (address, proc):
            at_start = rss_mib(proc.pid, "VmRSS")
            seen = work(address, args.instances)
            peak = rss_mib(proc.pid, "VmHWM")
        print(f"  sidecar resident memory: {at_start:.0f} MiB after start-up, peak {peak:.0f} MiB "
              f"(after paging through {seen} instances, reading 1,000 histories, running 100 orchestrations)")


if __name__ == "__main__":
    main()
