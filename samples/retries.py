"""Retries: a flaky activity retried under a RetryPolicy, with durable back-off timers."""

from __future__ import annotations

import threading
from datetime import timedelta

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

_attempts: dict[str, int] = {}
_lock = threading.Lock()


def flaky_call(ctx: task.ActivityContext, params: dict) -> str:
    """Fails until it has been called ``succeed_on`` times for this key."""
    with _lock:
        _attempts[params["key"]] = _attempts.get(params["key"], 0) + 1
        count = _attempts[params["key"]]
    if count < params["succeed_on"]:
        raise ConnectionError(f"attempt {count} failed")
    return f"succeeded on attempt {count}"


RETRY = task.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=2),
    max_number_of_attempts=4,
)


def resilient(ctx: task.OrchestrationContext, params: dict):
    """Calls the flaky activity with retries; reports the failure if every attempt fails."""
    try:
        return (yield ctx.call_activity(flaky_call, input=params, retry_policy=RETRY))
    except task.TaskFailedError as err:
        return f"gave up: {err.details.message}"


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(resilient)
    worker.add_activity(flaky_call)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    recovers = client.schedule_new_orchestration(resilient, input={"key": client_key("a"), "succeed_on": 3})
    never = client.schedule_new_orchestration(resilient, input={"key": client_key("b"), "succeed_on": 99})
    out = {}
    for key, instance_id in (("recovers", recovers), ("gives_up", never)):
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out[key] = state.get_output()
    return out


def client_key(suffix: str) -> str:
    import uuid

    return f"{uuid.uuid4().hex}-{suffix}"


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
