"""Declarative workflow: an order described as steps with WorkflowBuilder, compensated when payment fails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from durabletask.workflows import WorkflowBuilder, WorkflowClient, register_workflow


class PaymentDeclined(Exception):
    """The card was refused."""


def reserve_stock(ctx: task.ActivityContext, data: dict) -> str:
    return f"reservation for {data['context']['order_id']}"


def release_stock(ctx: task.ActivityContext, data: dict) -> str:
    return f"released {data['result']}"


def fraud_check(ctx: task.ActivityContext, data: dict) -> str:
    return "passed"


def charge_card(ctx: task.ActivityContext, data: dict) -> float:
    if data["context"].get("card") == "declined":
        raise PaymentDeclined("card declined")
    return float(data["context"]["amount"])


def refund_card(ctx: task.ActivityContext, data: dict) -> str:
    return f"refunded {data['result']}"


def print_label(ctx: task.ActivityContext, data: dict) -> str:
    return f"label for {data['context']['order_id']}"


def notify_customer(ctx: task.ActivityContext, message: str) -> str:
    return f"sent: {message}"


ORDER_PROCESSING = (
    WorkflowBuilder("order_processing")
    .add_step("reserve", reserve_stock, compensation=release_stock)
    .add_conditional_step("fraud_check", fraud_check, condition=lambda view: view["amount"] >= 1000)
    .add_parallel_steps(
        [
            {"name": "charge", "activity": charge_card, "compensation": refund_card},
            {"name": "label", "activity": print_label},
        ]
    )
    .add_step("notify", notify_customer, input=lambda view: f"order {view['order_id']} charged {view['charge']}")
    .with_retry_config(max_retries=2, backoff_factor=2.0, first_interval=timedelta(milliseconds=100))
    .build()
)


def register(worker: TaskHubGrpcWorker) -> None:
    register_workflow(worker, ORDER_PROCESSING)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    workflows = WorkflowClient(client, [ORDER_PROCESSING])
    orders: dict[str, Any] = {
        "small": {"order_id": "A-1", "amount": 40},
        "large": {"order_id": "A-2", "amount": 2500},
        "declined": {"order_id": "A-3", "amount": 40, "card": "declined"},
    }
    started = {key: workflows.execute_workflow("order_processing", order) for key, order in orders.items()}
    out = {}
    for key, instance_id in started.items():
        status = workflows.wait_for_workflow(instance_id, timeout=timeout)
        out[key] = {
            "state": status.state.value,
            "results": status.step_results,
            "skipped": status.skipped_steps,
            "compensated": status.compensated_steps,
            "error": status.error,
        }
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
