"""Side-by-side versions: v1 of a workflow says hello, v2 also says goodbye; both run at once on two workers.

A deployment that changes an orchestrator must not break the instances already running
the old code. Here every instance is started with a version; a worker pinned to "1.0" and
a worker pinned to "2.0" (``VersionMatchStrategy.STRICT`` with work-item filters) run side
by side, and the sidecar routes each instance, and its activities, to the worker of its
version. The orchestrator itself is version-aware: it branches on ``ctx.version``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from packaging.version import Version

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import (
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)

VERSIONS = ("1.0", "2.0")


def say_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def say_goodbye(ctx: task.ActivityContext, name: str) -> str:
    return f"Goodbye, {name}!"


def greeting_workflow(ctx: task.OrchestrationContext, name: str) -> Any:
    """v1: hello. v2: hello, then goodbye. Both wait for a 'proceed' event in between."""
    greetings = [(yield ctx.call_activity(say_hello, input=name))]
    yield ctx.wait_for_external_event("proceed")
    if Version(ctx.version or "1.0") >= Version("2.0"):
        greetings.append((yield ctx.call_activity(say_goodbye, input=name)))
    return {"version": ctx.version, "greetings": greetings}


def register(worker: TaskHubGrpcWorker, version: str = VERSIONS[-1]) -> None:
    """Register the workflow on a worker that takes only instances (and activities) of ``version``."""
    worker.add_orchestrator(greeting_workflow)
    worker.add_activity(say_hello)
    worker.add_activity(say_goodbye)
    worker.use_versioning(VersioningOptions(
        version=version,
        default_version=version,
        match_strategy=VersionMatchStrategy.STRICT,
        failure_strategy=VersionFailureStrategy.REJECT,
    ))
    worker.use_work_item_filters()  # ask the sidecar only for this version's work


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict[str, Any]:
    """Start one instance per version, show both in flight at once, then let them finish."""
    ids = {v: client.schedule_new_orchestration(greeting_workflow, input="Ada", version=v) for v in VERSIONS}
    for instance_id in ids.values():
        client.wait_for_orchestration_start(instance_id, timeout=timeout)
    in_flight = {v: client.get_orchestration_state(i) for v, i in ids.items()}
    assert all(s is not None and s.runtime_status == OrchestrationStatus.RUNNING for s in in_flight.values())
    for instance_id in ids.values():
        client.raise_orchestration_event(instance_id, "proceed")
    results: dict[str, Any] = {}
    for version, instance_id in ids.items():
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        results[version] = state.get_output()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default=None, help="sidecar address (default: localhost:4001)")
    args = parser.parse_args()
    workers = [TaskHubGrpcWorker(host_address=args.address) for _ in VERSIONS]
    try:
        for worker, version in zip(workers, VERSIONS, strict=True):
            register(worker, version)
            worker.start()
        with TaskHubGrpcClient(host_address=args.address) as client:
            result = run(client)
    finally:
        for worker in workers:
            worker.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
