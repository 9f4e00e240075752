"""Bank transfers between account entities, each inside a critical section (``lock_entities``).

While a transfer holds the locks of its two accounts, nothing else touches them, so the
balance check and the two updates act as one step: money is never created or lost and no
account goes below zero. Lock sets are taken in a fixed order, so transfers in opposite
directions cannot deadlock.
"""

from __future__ import annotations

import uuid

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""


class Account(entities.DurableEntity):
    """A bank account; its state is the balance."""

    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def withdraw(self, amount: int) -> int:
        balance = self.get_state(int, 0)
        if amount > balance:
            raise InsufficientFunds(f"cannot withdraw {amount}: the balance is {balance}")
        self.set_state(balance - amount)
        return balance - amount

    def balance(self) -> int:
        return self.get_state(int, 0)


def account(key: str) -> entities.EntityInstanceId:
    return entities.EntityInstanceId("Account", key)


def open_accounts(ctx: task.OrchestrationContext, params: dict):
    """Deposits the same opening balance into every account."""
    yield task.when_all([ctx.call_entity(account(k), "deposit", params["amount"]) for k in params["keys"]])
    return len(params["keys"])


def transfer(ctx: task.OrchestrationContext, params: dict):
    """Moves ``amount`` from one account to another if the source can cover it."""
    source, target, amount = account(params["from"]), account(params["to"]), params["amount"]
    with (yield ctx.lock_entities([source, target])):
        balance = yield ctx.call_entity(source, "balance")
        if balance < amount:
            return {"moved": 0, "reason": f"balance {balance} < {amount}"}
        yield ctx.call_entity(source, "withdraw", amount)
        yield ctx.call_entity(target, "deposit", amount)
    return {"moved": amount}


def audit(ctx: task.OrchestrationContext, keys: list[str]):
    """Reads every balance while holding all the locks: a consistent snapshot."""
    ids = [account(k) for k in keys]
    with (yield ctx.lock_entities(ids)):
        balances = []
        for entity_id in ids:  # one call at a time per locked entity
            balances.append((yield ctx.call_entity(entity_id, "balance")))
    return {"balances": balances, "total": sum(balances)}


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_entity(Account)
    worker.add_orchestrator(open_accounts)
    worker.add_orchestrator(transfer)
    worker.add_orchestrator(audit)


def run(client: TaskHubGrpcClient, timeout: float = 60, accounts: int = 3, transfers: int = 12) -> dict:
    prefix = uuid.uuid4().hex[:6]
    keys = [f"{prefix}-{i}" for i in range(accounts)]

    def finish(instance_id: str) -> object:
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        return state.get_output()

    finish(client.schedule_new_orchestration(open_accounts, input={"keys": keys, "amount": 100}))
    started = []
    for i in range(transfers):  # all run at once, in both directions between the accounts
        source = i % accounts
        target = (source + 1 + (i // accounts) % (accounts - 1)) % accounts
        params = {"from": keys[source], "to": keys[target], "amount": 10 + 7 * i}
        started.append(client.schedule_new_orchestration(transfer, input=params))
    moved = sum(finish(instance_id)["moved"] for instance_id in started)  # type: ignore[index]
    snapshot = finish(client.schedule_new_orchestration(audit, input=keys))
    return {"transfers": len(started), "moved": moved, **snapshot}  # type: ignore[dict-item]


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
