"""Typed input and output: dataclasses in and out of orchestrations and activities."""

from __future__ import annotations

from dataclasses import dataclass, field

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


@dataclass
class LineItem:
    sku: str
    quantity: int
    unit_price: float


@dataclass
class Order:
    order_id: str
    customer: str
    items: list[LineItem] = field(default_factory=list)


@dataclass
class Invoice:
    order_id: str
    customer: str
    total: float
    lines: int


def price_order(ctx: task.ActivityContext, order: Order) -> Invoice:
    # The annotation makes the worker hand us an Order, not a dict.
    total = sum(item.quantity * item.unit_price for item in order.items)
    return Invoice(order.order_id, order.customer, round(total, 2), len(order.items))


def invoice_order(ctx: task.OrchestrationContext, order: Order):
    """Receives an Order, gets an Invoice back from an activity, returns it."""
    invoice = yield ctx.call_activity(price_order, input=order, return_type=Invoice)
    assert isinstance(invoice, Invoice)
    return invoice


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(invoice_order)
    worker.add_activity(price_order)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> Invoice:
    order = Order("o-42", "Ada", [LineItem("apple", 3, 0.5), LineItem("pear", 2, 1.25)])
    instance_id = client.schedule_new_orchestration(invoice_order, input=order)
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return state.get_output(Invoice)


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
