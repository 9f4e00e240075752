"""Entities and the orchestrations that use them, written against the official SDK."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from durabletask import task
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker

Ctx = task.OrchestrationContext
Gen = Generator[task.Task[Any], Any, Any]


def tally(ctx: EntityContext, value: Any) -> Any:
    """A function entity holding an integer: ``add``, ``get``, ``reset``, ``fail``, ``forward``."""
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + int(value))
    elif ctx.operation == "reset":
        ctx.set_state(0)
    elif ctx.operation == "fail":
        raise ValueError("tally refuses")
    elif ctx.operation == "forward":
        # Passes its own value on to another tally as a signal, then forgets it.
        ctx.signal_entity(EntityInstanceId("tally", str(value)), "add", current)
        ctx.set_state(None)
        return current
    elif ctx.operation != "get":
        raise ValueError(f"unknown operation {ctx.operation}")
    return ctx.get_state(int, 0)


class Account(DurableEntity):
    """A class entity with a balance; ``delete`` (inherited) removes it."""

    def deposit(self, amount: int) -> int:
        """Adds ``amount``; returns the new balance."""
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def withdraw(self, amount: int) -> int:
        """Takes ``amount`` out, refusing to overdraw; returns the new balance."""
        balance = self.get_state(int, 0)
        if amount > balance:
            raise ValueError(f"insufficient funds: {balance} < {amount}")
        self.set_state(balance - amount)
        return balance - amount

    def balance(self) -> int:
        """The current balance."""
        return self.get_state(int, 0)


def read_tally(ctx: Ctx, key: str) -> Gen:
    """Calls ``tally@key``: ``get``, then a failing operation and an unregistered entity, catching both."""
    value = yield ctx.call_entity(EntityInstanceId("tally", key), "get")
    try:
        yield ctx.call_entity(EntityInstanceId("tally", key), "fail")
        failure = None
    except task.TaskFailedError as err:
        failure = err.details.message
    try:
        yield ctx.call_entity(EntityInstanceId("nobody", key), "get")
        unregistered = None
    except task.TaskFailedError as err:
        unregistered = err.details.message
    return {"value": value, "failure": failure, "unregistered": unregistered}


def signal_then_read(ctx: Ctx, key: str) -> Gen:
    """Signals ``add 5`` to ``tally@key`` from the orchestration (one-way), then calls ``get``."""
    entity = EntityInstanceId("tally", key)
    ctx.signal_entity(entity, "add", 5)
    return (yield ctx.call_entity(entity, "get"))


def transfer(ctx: Ctx, spec: dict[str, Any]) -> Gen:
    """Moves ``amount`` between two accounts inside a critical section that locks both."""
    source = EntityInstanceId("account", spec["source"])
    target = EntityInstanceId("account", spec["target"])
    with (yield ctx.lock_entities([target, source])):
        yield ctx.call_entity(source, "withdraw", spec["amount"])
        yield ctx.call_entity(target, "deposit", spec["amount"])
        total = (yield ctx.call_entity(source, "balance")) + (yield ctx.call_entity(target, "balance"))
    return total


def lock_only(ctx: Ctx, key: str) -> Gen:
    """Locks ``tally@key`` and releases it without running an operation on it."""
    with (yield ctx.lock_entities([EntityInstanceId("tally", key)])):
        pass
    return "unlocked"


ORCHESTRATORS: list[Callable[..., Any]] = [read_tally, signal_then_read, transfer, lock_only]


def register(worker: TaskHubGrpcWorker) -> None:
    """Registers the entities and orchestrations above."""
    worker.add_entity(tally)
    worker.add_entity(Account)
    for orchestrator in ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
