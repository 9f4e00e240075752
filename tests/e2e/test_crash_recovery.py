"""Crash test: kill -9 the sidecar in the middle of a run, restart it on the same SQLite file.

50 orchestrations, each with timers and 5 activities. All must complete with the right output,
none lost, and no orchestration step applied twice (every history event of a task or a timer
appears once).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import free_port

INSTANCES = 50
ACTIVITIES_PER_INSTANCE = 5


class Progress:
    """Counts activity executions; signals once enough work happened to crash mid-run."""

    def __init__(self, crash_after: int) -> None:
        self.lock = threading.Lock()
        self.executions = 0
        self.crash_after = crash_after
        self.reached = threading.Event()

    def tick(self) -> None:
        with self.lock:
            self.executions += 1
            if self.executions >= self.crash_after:
                self.reached.set()


def make_functions(progress: Progress):
    def add_step(ctx: task.ActivityContext, value: list[int]) -> int:
        progress.tick()
        base, step = value
        return base * 100 + step

    def crashy(ctx: task.OrchestrationContext, base: int):
        total = 0
        for step in range(ACTIVITIES_PER_INSTANCE):
            if step in (1, 3):
                yield ctx.create_timer(timedelta(milliseconds=200))
            total += yield ctx.call_activity(add_step, input=[base, step])
        return total

    return crashy, add_step


def expected_output(base: int) -> int:
    return sum(base * 100 + step for step in range(ACTIVITIES_PER_INSTANCE))


@pytest.mark.slow
def test_kill_9_mid_run_loses_nothing_and_applies_nothing_twice(tmp_path, sidecar_process) -> None:
    db = tmp_path / "crash.db"
    port = free_port()
    first = sidecar_process.start(db, port)
    progress = Progress(crash_after=INSTANCES * ACTIVITIES_PER_INSTANCE // 3)
    crashy, add_step = make_functions(progress)

    worker = TaskHubGrpcWorker(host_address=first.address)
    worker.add_orchestrator(crashy)
    worker.add_activity(add_step)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=first.address) as client:
            ids = [
                client.schedule_new_orchestration(crashy, input=base, instance_id=f"crash-{base:02d}")
                for base in range(INSTANCES)
            ]
        assert progress.reached.wait(timeout=120), "the run never got a third of the way"
        first.kill()

        second = sidecar_process.start(db, port)
        with TaskHubGrpcClient(host_address=second.address) as client:
            for base, instance_id in enumerate(ids):
                state = client.wait_for_orchestration_completion(instance_id, timeout=120)
                assert state is not None, f"{instance_id} was lost"
                assert state.runtime_status == OrchestrationStatus.COMPLETED, (
                    instance_id,
                    state.runtime_status,
                    state.failure_details,
                )
                assert state.get_output() == expected_output(base)

                history = client.get_orchestration_history(instance_id)
                kinds = Counter(type(event).__name__ for event in history)
                assert kinds["ExecutionStartedEvent"] == 1
                assert kinds["ExecutionCompletedEvent"] == 1
                assert kinds["TaskScheduledEvent"] == ACTIVITIES_PER_INSTANCE
                assert kinds["TaskCompletedEvent"] == ACTIVITIES_PER_INSTANCE
                assert kinds["TimerCreatedEvent"] == 2 and kinds["TimerFiredEvent"] == 2
                scheduled_ids = [e.event_id for e in history if type(e).__name__ == "TaskScheduledEvent"]
                assert len(set(scheduled_ids)) == len(scheduled_ids)
    finally:
        worker.stop()
