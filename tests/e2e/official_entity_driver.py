"""Runs Microsoft's official ``durabletask`` worker and client against a sidecar, exercising entities.

Run by ``test_sidecar_entities_official.py`` with the compatibility interpreter (``python -P``, so
that this repository's own ``durabletask`` package does not shadow the official one):

    python -P official_entity_driver.py HOST:PORT

Prints one JSON object with what it observed; exits non-zero (with a traceback) on failure.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from durabletask import client, task, worker
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId

TIMEOUT = 60


def counter(ctx: EntityContext, value: Any) -> Any:
    """A function entity: add, get, reset."""
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + int(value))
    elif ctx.operation == "reset":
        ctx.set_state(0)
    elif ctx.operation == "fail":
        raise ValueError("counter refuses")
    return ctx.get_state(int, 0)


class Account(DurableEntity):
    """A class entity with a balance."""

    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def withdraw(self, amount: int) -> int:
        balance = self.get_state(int, 0)
        if amount > balance:
            raise ValueError(f"insufficient funds: {balance} < {amount}")
        self.set_state(balance - amount)
        return balance - amount

    def balance(self) -> int:
        return self.get_state(int, 0)


def read_counter(ctx: task.OrchestrationContext, key: str):
    """Calls the counter and reports a failing operation and an unregistered entity."""
    value = yield ctx.call_entity(EntityInstanceId("counter", key), "get")
    try:
        yield ctx.call_entity(EntityInstanceId("counter", key), "fail")
        failure = None
    except Exception as exc:  # the official SDK raises TaskFailedError carrying the entity's failure
        failure = f"{type(exc).__name__}: {exc}"
    try:
        yield ctx.call_entity(EntityInstanceId("nobody", key), "get")
        unregistered = None
    except Exception as exc:
        unregistered = str(exc)
    return {"value": value, "failure": failure, "unregistered": unregistered}


def transfer(ctx: task.OrchestrationContext, amount: int):
    """Moves ``amount`` from account a to account b inside a critical section over both."""
    source = EntityInstanceId("account", "a")
    target = EntityInstanceId("account", "b")
    with (yield ctx.lock_entities([target, source])):
        yield ctx.call_entity(source, "withdraw", amount)
        yield ctx.call_entity(target, "deposit", amount)
    total = (yield ctx.call_entity(source, "balance")) + (yield ctx.call_entity(target, "balance"))
    return total


def main() -> int:
    address = sys.argv[1]
    observed: dict[str, Any] = {}
    w = worker.TaskHubGrpcWorker(host_address=address)
    w.add_entity(counter)
    w.add_entity(Account)
    w.add_orchestrator(read_counter)
    w.add_orchestrator(transfer)
    w.start()
    try:
        c = client.TaskHubGrpcClient(host_address=address)
        counter_id = EntityInstanceId("counter", "c1")
        for amount in (1, 2, 3, 4):
            c.signal_entity(counter_id, "add", amount)
        instance = c.schedule_new_orchestration(read_counter, input="c1")
        state = c.wait_for_orchestration_completion(instance, timeout=TIMEOUT)
        observed["read_counter"] = {"status": state.runtime_status.name, "output": json.loads(state.serialized_output)}

        metadata = c.get_entity(counter_id, include_state=True)
        observed["counter_state"] = metadata.get_state(int) if metadata else None
        observed["counter_without_state"] = c.get_entity(counter_id, include_state=False).includes_state
        observed["missing_entity"] = c.get_entity(EntityInstanceId("counter", "never"))

        a, b = EntityInstanceId("account", "a"), EntityInstanceId("account", "b")
        c.signal_entity(a, "deposit", 100)
        ids = [c.schedule_new_orchestration(transfer, input=10) for _ in range(5)]
        transfers = [c.wait_for_orchestration_completion(i, timeout=TIMEOUT) for i in ids]
        observed["transfers"] = [(s.runtime_status.name, json.loads(s.serialized_output)) for s in transfers]
        balances = {str(e.id): e.get_state(int) for e in c.get_all_entities(client.EntityQuery(
            instance_id_starts_with="@account@", include_state=True))}
        observed["balances"] = balances
        observed["locked_by"] = [c.get_entity(x, include_state=False).get_locked_by() for x in (a, b)]

        due = datetime.now(timezone.utc) + timedelta(seconds=1)
        c.signal_entity(counter_id, "reset", signal_time=due)
        early = c.get_entity(counter_id).get_state(int)
        observed["before_delayed_reset"] = early
        clean = c.clean_entity_storage()
        observed["clean"] = [clean.empty_entities_removed, clean.orphaned_locks_released]
        c.close()
    finally:
        w.stop()
    print(json.dumps(observed, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
