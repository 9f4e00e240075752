"""Async orchestrators: the same durable calls as a generator orchestrator, written with async/await.

An order is priced by three suppliers in parallel (``await task.when_all``), reserved with a
retried activity, shipped by an ``async def`` sub-orchestration, and held for approval: an
external event races a timer (``await task.when_any``). A helper coroutine groups two calls,
as ``yield from`` would in a generator. A second orchestrator awaits ``asyncio.sleep`` and
fails with an error saying what to use instead.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

SUPPLIERS = ("north", "south", "east")
RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)
_reserve_attempts: dict[str, int] = {}


def quote_price(ctx: task.ActivityContext, request: dict[str, Any]) -> int:
    """A supplier's price for the order: each supplier has its own rate."""
    rate = {"north": 12, "south": 9, "east": 11}[request["supplier"]]
    return int(rate * request["quantity"])


def reserve_stock(ctx: task.ActivityContext, order_id: str) -> str:
    """Fails on its first attempt per order, to show the retry policy at work."""
    _reserve_attempts[order_id] = _reserve_attempts.get(order_id, 0) + 1
    if _reserve_attempts[order_id] == 1:
        raise ConnectionError("warehouse busy")
    return f"reserved:{order_id}"


def notify(ctx: task.ActivityContext, message: str) -> str:
    return f"sent: {message}"


async def ship_order(ctx: task.OrchestrationContext, order_id: str) -> str:
    """A sub-orchestration, also async: waits a (short) durable timer, then confirms."""
    await ctx.create_timer(timedelta(milliseconds=200))
    return f"shipped:{order_id}"


async def tell_customer(ctx: task.OrchestrationContext, order_id: str, outcome: str) -> list[str]:
    """A helper coroutine: awaited by the orchestrator, its calls are the orchestrator's calls."""
    first = await ctx.call_activity(notify, input=f"{order_id} {outcome}")
    second = await ctx.call_activity(notify, input=f"{order_id} receipt")
    return [first, second]


async def process_order(ctx: task.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    """Prices, reserves, waits for approval (or times out), ships and notifies."""
    order_id, quantity = order["id"], order["quantity"]
    ctx.set_custom_status("pricing")
    prices = await task.when_all([
        ctx.call_activity(quote_price, input={"supplier": s, "quantity": quantity}) for s in SUPPLIERS
    ])
    best = min(zip(prices, SUPPLIERS, strict=True))
    reservation = await ctx.call_activity(reserve_stock, input=order_id, retry_policy=RETRY)

    ctx.set_custom_status("awaiting approval")
    approval = ctx.wait_for_external_event("approval")
    deadline = ctx.create_timer(timedelta(seconds=order.get("approval_seconds", 30)))
    winner = await task.when_any([approval, deadline])
    if winner is not approval:
        ctx.set_custom_status("expired")
        return {"order": order_id, "status": "expired", "messages": await tell_customer(ctx, order_id, "expired")}
    deadline.cancel()

    ctx.set_custom_status("shipping")
    shipment = await ctx.call_sub_orchestrator(ship_order, input=order_id)
    ctx.set_custom_status("done")
    return {
        "order": order_id,
        "status": "approved" if approval.get_result() else "rejected",
        "supplier": best[1],
        "price": best[0],
        "reservation": reservation,
        "shipment": shipment,
        "messages": await tell_customer(ctx, order_id, "confirmed"),
    }


async def naps_with_asyncio(ctx: task.OrchestrationContext, _: Any) -> None:
    """Refused: asyncio's own sleep needs an event loop, which an orchestrator does not have."""
    await asyncio.sleep(1)


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(process_order)
    worker.add_orchestrator(ship_order)
    worker.add_orchestrator(naps_with_asyncio)
    for activity in (quote_price, reserve_stock, notify):
        worker.add_activity(activity)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict[str, Any]:
    instance_id = client.schedule_new_orchestration(process_order, input={"id": "order-7", "quantity": 10})
    waiting = client.wait_for_orchestration_start(instance_id, timeout=timeout)
    assert waiting is not None
    client.raise_orchestration_event(instance_id, "approval", data=True)
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state

    refused_id = client.schedule_new_orchestration(naps_with_asyncio)
    refused = client.wait_for_orchestration_completion(refused_id, timeout=timeout)
    assert refused is not None and refused.runtime_status == OrchestrationStatus.FAILED, refused
    assert refused.failure_details is not None
    return {"order": state.get_output(), "refused": refused.failure_details.message.split(". ")[0]}


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
