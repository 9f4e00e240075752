"""Fan-out/fan-in: run activities in parallel and aggregate; also in bounded batches."""

from __future__ import annotations

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def get_work_items(ctx: task.ActivityContext, count: int) -> list[int]:
    return list(range(1, count + 1))


def square(ctx: task.ActivityContext, value: int) -> int:
    return value * value


def fan_out_fan_in(ctx: task.OrchestrationContext, count: int):
    """Squares every work item in parallel and returns the sum."""
    items = yield ctx.call_activity(get_work_items, input=count)
    results = yield task.when_all([ctx.call_activity(square, input=i) for i in items])
    return sum(results)


def batched_fan_out(ctx: task.OrchestrationContext, params: dict):
    """Same, but never more than ``batch_size`` activities in flight at once."""
    items = yield ctx.call_activity(get_work_items, input=params["count"])
    batch_size = params["batch_size"]
    total = 0
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        results = yield task.when_all([ctx.call_activity(square, input=i) for i in batch])
        total += sum(results)
    return total


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(fan_out_fan_in)
    worker.add_orchestrator(batched_fan_out)
    worker.add_activity(get_work_items)
    worker.add_activity(square)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict[str, int]:
    parallel_id = client.schedule_new_orchestration(fan_out_fan_in, input=20)
    batched_id = client.schedule_new_orchestration(batched_fan_out, input={"count": 20, "batch_size": 5})
    out = {}
    for key, instance_id in (("parallel", parallel_id), ("batched", batched_id)):
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out[key] = state.get_output()
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
