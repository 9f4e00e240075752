"""Schedules survive a sidecar crash: kill -9 while a schedule is active, stay down past due times, restart.

Documented catch-up policy (``durabletask.scheduled.timing``): the due times missed while
the sidecar was down produce exactly one catch-up run, for the earliest of them; the
schedule then carries on at the next due time after the restart. No run happens twice.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from durabletask.client import OrchestrationQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.scheduled import ScheduleCreationOptions, ScheduledTaskClient, ScheduleStatus
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import free_port
from tests.e2e.test_entities import require_entity_support
from tests.e2e.test_schedules import RUNS, due_time, dues, on_grid, scheduled_tick

SECOND = timedelta(seconds=1)
WAIT = 30.0
MISSED = 3  # due times that fall while the sidecar is down


def _wait_until(moment: datetime) -> None:
    """Let wall-clock time pass ``moment`` (the due times under test are wall-clock times)."""
    gate = threading.Event()
    while (remaining := (moment - datetime.now(timezone.utc)).total_seconds()) > 0:
        gate.wait(remaining)


@pytest.mark.our_sidecar("kills and restarts this repository's sidecar process")
def test_kill_9_while_active_then_one_catch_up_run_and_no_run_twice(tmp_path, sidecar_process) -> None:
    sid = "crashy"
    db = tmp_path / "schedules.db"
    port = free_port()
    first = sidecar_process.start(db, port)
    require_entity_support(first.address)
    worker = TaskHubGrpcWorker(
        host_address=first.address,
        resiliency_options=GrpcWorkerResiliencyOptions(
            reconnect_backoff_base_seconds=0.1, reconnect_backoff_cap_seconds=0.5
        ),
    )
    worker.add_orchestrator(scheduled_tick)
    worker.configure_scheduled_tasks()
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=first.address) as client:
            ScheduledTaskClient(client).create_schedule(ScheduleCreationOptions(sid, "scheduled_tick", SECOND))
            before = RUNS.wait_for_count(sid, 2, WAIT)
            # Kill at a quiet moment: the last observed run has completed and the next is ~1 s away.
            last_id = before[-1][0]
            state = client.wait_for_orchestration_completion(last_id, timeout=WAIT)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
        first.kill()
        killed_at = datetime.now(timezone.utc)
        runs_at_kill = len(RUNS.runs(sid))
        last_due = due_time(sid, last_id)
        assert killed_at < last_due + SECOND, "the kill came after the next due time, not at a quiet moment"
        # No run can start while the sidecar is down; stay down past several due times.
        _wait_until(last_due + (MISSED + 0.5) * SECOND)
        assert len(RUNS.runs(sid)) == runs_at_kill
        restarted_at = datetime.now(timezone.utc)

        second = sidecar_process.start(db, port)
        # The catch-up run, then two regular runs after the restart.
        RUNS.wait_for_count(sid, runs_at_kill + 3, WAIT)
        runs = RUNS.runs(sid)
        ids = [instance_id for instance_id, _ in runs]
        assert len(set(ids)) == len(ids), f"a run happened twice: {ids}"
        times = dues(sid, runs)
        assert on_grid(times, SECOND)
        after_kill = sorted(t for t in times if t > last_due)
        # Exactly one run for the due times missed while down: the earliest of them.
        assert after_kill[0] == last_due + SECOND
        assert [t for t in after_kill if t <= restarted_at] == [last_due + SECOND]
        assert restarted_at > last_due + MISSED * SECOND
        assert after_kill[1] > restarted_at

        with TaskHubGrpcClient(host_address=second.address) as client:
            description = ScheduledTaskClient(client).get_schedule(sid)
            assert description is not None and description.status is ScheduleStatus.ACTIVE
            # Each run is one completed instance in the store.
            recorded = set(ids)
            for instance_id in recorded:
                done = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
                assert done is not None and done.runtime_status == OrchestrationStatus.COMPLETED
            stored = client.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=f"{sid}-"))
            assert {s.instance_id for s in stored} >= recorded
            # Anything stored but not yet recorded is a run that started after the list was taken.
            assert all(due_time(sid, s.instance_id) > times[-1] for s in stored if s.instance_id not in recorded)
    finally:
        worker.stop(timeout=10)
