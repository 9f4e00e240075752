"""Retried calls through our worker and sidecar keep their first task id, as the official SDK numbers them.

An activity and a sub-orchestration each fail once and succeed on their retry; the history
shows every attempt under the call's first id and the retry timers under new ones, and what
the orchestration reads from failed tasks is worded as in the official SDK.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.worker import TaskHubGrpcWorker

WAIT = 30.0
POLICY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)
FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5, hello_timeout_seconds=5
)

_lock = threading.Lock()
_attempts: dict[str, list[int]] = {}  # key -> the task id each attempt ran under


def fails_first_time(ctx: task.ActivityContext, key: str) -> str:
    """Fails on the first attempt for ``key``, succeeds afterwards."""
    with _lock:
        seen = _attempts.setdefault(key, [])
        seen.append(ctx.task_id)
        first = len(seen) == 1
    if first:
        raise RuntimeError(f"{key} is not ready yet")
    return f"{key} done"


def always_fails(ctx: task.ActivityContext, _: Any) -> None:
    raise ValueError("out of stock")


def child(ctx: task.OrchestrationContext, key: str):
    """Fails (its activity is not retried) the first time it runs for ``key``."""
    return (yield ctx.call_activity(fails_first_time, input=key))


def parent(ctx: task.OrchestrationContext, key: str):
    a = yield ctx.call_activity(fails_first_time, input=f"{key}/activity", retry_policy=POLICY)
    b = yield ctx.call_sub_orchestrator(child, input=f"{key}/child", retry_policy=POLICY)
    try:
        yield ctx.call_activity(always_fails)
    except task.TaskFailedError as err:
        c = str(err)
    try:
        yield ctx.call_sub_orchestrator(child_that_fails)
    except task.TaskFailedError as err:
        d = str(err)
    return [a, b, c, d]


def child_that_fails(ctx: task.OrchestrationContext, _: Any) -> None:
    raise ValueError("child gave up")


@pytest.fixture
def client(sidecar: Any) -> Iterator[TaskHubGrpcClient]:
    worker = TaskHubGrpcWorker(host_address=sidecar.address, resiliency_options=FAST_RECONNECT)
    for fn in (parent, child, child_that_fails):
        worker.add_orchestrator(fn)
    worker.add_activity(fails_first_time)
    worker.add_activity(always_fails)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as c:
            yield c
    finally:
        worker.stop(timeout=10)


def test_retries_keep_their_task_ids_and_failures_read_as_in_the_official_sdk(client: TaskHubGrpcClient) -> None:
    key = uuid.uuid4().hex[:8]
    iid = client.schedule_new_orchestration(parent, input=key, instance_id=f"retry-{key}")
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    assert state.get_output() == [
        f"{key}/activity done",
        f"{key}/child done",
        f"{iid}: Activity task #5 failed: out of stock",
        "Sub-orchestration task #6 failed: child gave up",
    ]
    with _lock:
        assert _attempts[f"{key}/activity"] == [1, 1]  # both attempts ran as task #1

    events = client.get_orchestration_history(iid)
    scheduled = [(e.event_id, e.name) for e in events if isinstance(e, history.TaskScheduledEvent)]
    assert scheduled == [(1, "fails_first_time"), (1, "fails_first_time"), (5, "always_fails")]
    created = [
        (e.event_id, e.instance_id)
        for e in events
        if isinstance(e, history.SubOrchestrationInstanceCreatedEvent)
    ]
    assert created == [(3, f"{iid}:0003"), (3, f"{iid}:0003"), (6, f"{iid}:0006")]
    timers = [e.event_id for e in events if isinstance(e, history.TimerCreatedEvent)]
    assert timers == [2, 4]

    retried_child = client.get_orchestration_state(f"{iid}:0003")
    assert retried_child is not None and retried_child.runtime_status == OrchestrationStatus.COMPLETED
