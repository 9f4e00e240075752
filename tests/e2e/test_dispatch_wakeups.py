"""Work goes out when it comes due, or when a worker's slot frees, without the dispatcher's safety poll.

The sidecar here polls only once a minute. A timer set by a turn must still fire on time: the
turn's commit tells the dispatcher when its event comes due, although the commit's own follow-on
lease found nothing of the instance's to send yet (which spares the dispatcher a pass). And
instances queued behind a worker that takes one turn at a time must go out as its slot frees.
Which settlement wakes the dispatcher (only one that frees a slot it found none of) is checked
turn by turn in ``tests/unit/test_dispatch_signals.py``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker
from sidecar.dispatch import DispatchOptions
from tests.e2e.conftest import fast_sidecar

# Far longer than any wait below: what the tests see is not the poll's doing.
ONE_POLL_A_MINUTE = DispatchOptions(stream_grace=0.3, health_ping_interval=0.5, safety_poll=60.0)
TIMEOUT = 20.0
# Each run takes about a second (its timers are half a second); the poll would make it a minute.
PROMPT = 6.0


def echo(ctx: task.ActivityContext, value: int) -> int:
    return value


def sleeps_then_calls(ctx: task.OrchestrationContext, value: int) -> Generator[task.Task[Any], Any, Any]:
    yield ctx.create_timer(timedelta(seconds=0.5))
    result = yield ctx.call_activity(echo, input=value)
    return result


def returns(ctx: task.OrchestrationContext, value: int) -> int:
    return value


def completed_within(worker: TaskHubGrpcWorker, address: str, orchestrator: Any, count: int) -> float:
    """Schedule ``count`` instances of ``orchestrator``, then start ``worker``; seconds until all completed."""
    worker.add_orchestrator(orchestrator)
    worker.add_activity(echo)
    with worker, TaskHubGrpcClient(host_address=address) as client:
        ids = [client.schedule_new_orchestration(orchestrator, input=n) for n in range(count)]
        began = time.monotonic()
        worker.start()
        for n, instance_id in enumerate(ids):
            state = client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
            assert state.serialized_output == str(n)
        return time.monotonic() - began


def test_a_timer_a_turn_set_fires_when_due_without_the_poll() -> None:
    with fast_sidecar(ONE_POLL_A_MINUTE) as (_, address):
        assert completed_within(TaskHubGrpcWorker(host_address=address), address, sleeps_then_calls, 1) < PROMPT


def test_turns_queued_behind_a_worker_taking_one_at_a_time_follow_freed_slots_without_the_poll() -> None:
    with fast_sidecar(ONE_POLL_A_MINUTE) as (_, address):
        one_at_a_time = ConcurrencyOptions(maximum_concurrent_orchestration_work_items=1)
        worker = TaskHubGrpcWorker(host_address=address, concurrency_options=one_at_a_time)
        assert completed_within(worker, address, returns, 4) < PROMPT
