"""Durable entities: a counter written as a function and the same counter written as a class.

The client signals both counters (one-way), an orchestration reads them with two-way calls,
and the client reads the stored state back with ``get_entity``.
"""

from __future__ import annotations

import uuid

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def counter(ctx: entities.EntityContext, value: int | None) -> int | None:
    """A function entity: one function, branching on the operation name."""
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + (value or 0))
        return None
    if ctx.operation == "reset":
        ctx.set_state(0)
        return None
    if ctx.operation == "get":
        return current
    raise ValueError(f"counter has no operation '{ctx.operation}'")


class Tally(entities.DurableEntity):
    """A class entity: every public method is an operation (``delete`` comes for free)."""

    def add(self, value: int) -> None:
        self.set_state(self.get_state(int, 0) + value)

    def reset(self) -> None:
        self.set_state(0)

    def get(self) -> int:
        return self.get_state(int, 0)


def read_counters(ctx: task.OrchestrationContext, key: str):
    """Calls ``get`` on both counters and returns their values."""
    function_value = yield ctx.call_entity(entities.EntityInstanceId("counter", key), "get")
    class_value = yield ctx.call_entity(entities.EntityInstanceId("Tally", key), "get")
    return {"function": function_value, "class": class_value}


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_entity(counter)
    worker.add_entity(Tally)
    worker.add_orchestrator(read_counters)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    key = uuid.uuid4().hex[:8]
    function_id = entities.EntityInstanceId("counter", key)
    class_id = entities.EntityInstanceId("Tally", key)
    for value in (1, 2, 3, 4, 5):
        client.signal_entity(function_id, "add", value)
    client.signal_entity(class_id, "add", 10)
    client.signal_entity(class_id, "add", 20)

    # The calls queue behind the signals already sent, so they see all of them.
    instance_id = client.schedule_new_orchestration(read_counters, input=key)
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    result = dict(state.get_output())

    stored = client.get_entity(class_id)
    assert stored is not None
    result["stored_class_state"] = stored.get_typed_state(int)
    return result


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
