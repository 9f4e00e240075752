"""Parallel sub-orchestrations: a parent starts one child per device and gathers their results."""

from __future__ import annotations

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def update_firmware(ctx: task.ActivityContext, device: str) -> str:
    return f"{device}: firmware 2.0"


def device_update(ctx: task.OrchestrationContext, device: str):
    """Child: updates one device and reports who its parent is."""
    result = yield ctx.call_activity(update_firmware, input=device)
    return {"device": device, "result": result, "parent": ctx.parent_instance_id}


def fleet_update(ctx: task.OrchestrationContext, devices: list[str]):
    """Parent: one sub-orchestration per device, all in parallel."""
    children = [ctx.call_sub_orchestrator(device_update, input=d) for d in devices]
    results = yield task.when_all(children)
    return results


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(fleet_update)
    worker.add_orchestrator(device_update)
    worker.add_activity(update_firmware)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> list[dict]:
    instance_id = client.schedule_new_orchestration(fleet_update, input=["dev-1", "dev-2", "dev-3"])
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return state.get_output()


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
