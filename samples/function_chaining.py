"""Function chaining: call activities one after another, each using the previous result."""

from __future__ import annotations

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def say_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def sequence(ctx: task.OrchestrationContext, _: None):
    """Greets three cities in order and returns the greetings."""
    results = []
    for city in ("Tokyo", "Seattle", "London"):
        greeting = yield ctx.call_activity(say_hello, input=city)
        results.append(greeting)
    return results


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(sequence)
    worker.add_activity(say_hello)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> list[str]:
    instance_id = client.schedule_new_orchestration(sequence)
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return state.get_output()


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
