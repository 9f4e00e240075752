"""Human interaction: wait for an approval event, or give up when a 24-hour timer fires first."""

from __future__ import annotations

from datetime import timedelta

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def request_approval(ctx: task.ActivityContext, order: dict) -> str:
    return f"approval requested for order {order['id']}"


def place_order(ctx: task.ActivityContext, order: dict) -> str:
    return f"order {order['id']} placed"


def approval_workflow(ctx: task.OrchestrationContext, order: dict):
    """Asks for approval; the first of 'approval' event or the timeout decides."""
    yield ctx.call_activity(request_approval, input=order)
    timeout = timedelta(seconds=order.get("timeout_seconds", 24 * 60 * 60))
    approval = ctx.wait_for_external_event("approval")
    timer = ctx.create_timer(timeout)
    winner = yield task.when_any([approval, timer])
    if winner is timer:
        return "cancelled: no approval in time"
    timer.cancel()
    decision = approval.get_result()
    if not decision.get("approved"):
        return f"rejected by {decision.get('by')}"
    confirmation = yield ctx.call_activity(place_order, input=order)
    return f"{confirmation}, approved by {decision.get('by')}"


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(approval_workflow)
    worker.add_activity(request_approval)
    worker.add_activity(place_order)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> str:
    instance_id = client.schedule_new_orchestration(approval_workflow, input={"id": "A-17"})
    client.wait_for_orchestration_start(instance_id, timeout=timeout)
    client.raise_orchestration_event(instance_id, "approval", data={"approved": True, "by": "Jane"})
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return state.get_output()


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
