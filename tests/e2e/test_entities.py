"""Durable entities end to end: our worker and client against the real sidecar (in-process).

Also runs against the official package's test backend (``make compat``), except where a test
relies on this repository's sidecar.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from durabletask import entities, task
from durabletask.client import (
    AsyncTaskHubGrpcClient,
    EntityQuery,
    OrchestrationState,
    OrchestrationStatus,
    TaskHubGrpcClient,
)
from durabletask.entities import EntityInstanceId
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker
from samples import bank_transfer

WAIT = 60.0
FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5, hello_timeout_seconds=5
)


def key() -> str:
    return uuid.uuid4().hex[:10]


# ------------------------------------------------------------------ entities


def counter(ctx: entities.EntityContext, value: Any) -> Any:
    current = ctx.get_state(int, 0)
    op = ctx.operation
    if op == "add":
        ctx.set_state(current + value)
        return current + value
    if op == "get":
        return current
    if op == "delete":
        ctx.set_state(None)
        return None
    if op == "add_then_fail":
        ctx.set_state(current + value)
        ctx.signal_entity(EntityInstanceId("counter", ctx.entity_id.key + "-side"), "add", 1)
        raise ValueError(f"refusing to add {value}")
    if op == "forward":
        # Entity signalling entity: pass the amount on to the named counter.
        ctx.signal_entity(EntityInstanceId("counter", value["to"]), "add_and_announce", value)
        ctx.set_state(current + 1)
        return None
    if op == "add_and_announce":
        ctx.set_state(current + value["amount"])
        if current + value["amount"] == value["announce_at"]:
            ctx.schedule_new_orchestration(echo, input=current + value["amount"], instance_id=value["marker"])
        return None
    if op == "start":
        return ctx.schedule_new_orchestration(echo, input=value["input"], instance_id=value["instance_id"])
    if op == "big":
        ctx.set_state("x" * value)
        return None
    if op == "stamp":
        # Records when a (delayed) signal was actually processed, then announces it.
        ctx.set_state(time.time())
        ctx.schedule_new_orchestration(echo, input=value, instance_id=value)
        return None
    raise ValueError(f"unknown operation {op}")


class Ledger(entities.DurableEntity):
    def record(self, entry: str) -> int:
        entries = self.get_state(list, [])
        entries.append(entry)
        self.set_state(entries)
        return len(entries)

    def entries(self) -> list:
        return self.get_state(list, [])

    def clear(self) -> None:
        self.set_state([])


class Gate:
    """Lets a test hold entity operations inside the worker and count how many run at once."""

    cond = threading.Condition()
    running = 0
    peak = 0
    open = threading.Event()


def blocking(ctx: entities.EntityContext, _: Any) -> None:
    with Gate.cond:
        Gate.running += 1
        Gate.peak = max(Gate.peak, Gate.running)
        Gate.cond.notify_all()
    try:
        assert Gate.open.wait(WAIT)
    finally:
        with Gate.cond:
            Gate.running -= 1
            Gate.cond.notify_all()
    ctx.set_state("done")


# ------------------------------------------------------------- orchestrators


def echo(ctx: task.OrchestrationContext, value: Any) -> Any:
    return value


def call_one(ctx: task.OrchestrationContext, params: dict):
    """Calls one operation; returns its result, or the failure's details."""
    try:
        result = yield ctx.call_entity(EntityInstanceId.parse(params["id"]), params["op"], params.get("input"))
    except task.TaskFailedError as err:
        inner = err.details.inner_failure
        return {
            "failed": err.details.error_type,
            "inner_type": inner.error_type if inner else None,
            "inner_message": inner.message if inner else None,
        }
    return {"result": result}


def call_many(ctx: task.OrchestrationContext, calls: list):
    """Calls operations one after the other (one sender: they run in this order)."""
    results = []
    for entity_id, op, value in calls:
        results.append((yield ctx.call_entity(EntityInstanceId.parse(entity_id), op, value)))
    return results


def signal_later(ctx: task.OrchestrationContext, params: dict):
    when = ctx.current_utc_datetime + timedelta(seconds=params["delay"])
    ctx.signal_entity(EntityInstanceId.parse(params["id"]), "stamp", params["marker"], signal_time=when)
    return when.replace(tzinfo=timezone.utc).timestamp()


def hold_and_fail(ctx: task.OrchestrationContext, ids: list):
    with (yield ctx.lock_entities([EntityInstanceId.parse(i) for i in ids])):
        yield ctx.call_entity(EntityInstanceId.parse(ids[0]), "add", 1)
        raise RuntimeError("failing inside the critical section")


def hold_and_return(ctx: task.OrchestrationContext, ids: list):
    yield ctx.lock_entities([EntityInstanceId.parse(i) for i in ids])
    return "returned while holding the locks"


def register_all(worker: TaskHubGrpcWorker) -> None:
    worker.add_entity(counter)
    worker.add_entity(Ledger)
    worker.add_entity(blocking)
    for orchestrator in (echo, call_one, call_many, signal_later, hold_and_fail, hold_and_return):
        worker.add_orchestrator(orchestrator)
    bank_transfer.register(worker)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def hub(sidecar: Any) -> Iterator[tuple[TaskHubGrpcClient, Callable[..., TaskHubGrpcWorker]]]:
    """A client, and a factory of started workers with everything above registered."""
    require_entity_support(sidecar.address)
    workers: list[TaskHubGrpcWorker] = []

    def start_worker(**kwargs: Any) -> TaskHubGrpcWorker:
        kwargs.setdefault("resiliency_options", FAST_RECONNECT)
        worker = TaskHubGrpcWorker(host_address=sidecar.address, **kwargs)
        register_all(worker)
        worker.start()
        workers.append(worker)
        return worker

    with TaskHubGrpcClient(host_address=sidecar.address) as client:
        yield client, start_worker
    for worker in workers:
        worker.stop(timeout=10)


def require_entity_support(address: str) -> None:
    """Skip the test when the sidecar at ``address`` answers entity RPCs with UNIMPLEMENTED."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        try:
            stub.GetEntity(pb.GetEntityRequest(instanceId="@probe@support"), timeout=10)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip(f"the sidecar does not serve entities yet: {err.details()}")
            raise


def finish(client: TaskHubGrpcClient, orchestrator: Any, input: Any = None, instance_id: str | None = None) -> Any:
    """Runs an orchestration to completion and returns its output."""
    iid = client.schedule_new_orchestration(orchestrator, input=input, instance_id=instance_id)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, _why(state)
    return state.get_output()


def _why(state: OrchestrationState | None) -> Any:
    return None if state is None else (state.runtime_status, state.failure_details)


# --------------------------------------------------------------------- tests


def test_counter_receives_1000_signals_from_10_concurrent_clients(hub, sidecar) -> None:
    client, start_worker = hub
    start_worker()
    target = EntityInstanceId("counter", key())
    errors: list[BaseException] = []
    ready = threading.Barrier(10)

    def send() -> None:
        try:
            with TaskHubGrpcClient(host_address=sidecar.address) as own:
                ready.wait(timeout=WAIT)
                for _ in range(100):
                    own.signal_entity(target, "add", 1)
        except BaseException as ex:  # reported below
            errors.append(ex)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert not errors, errors
    # The call queues behind the 1,000 accepted signals.
    assert finish(client, call_one, {"id": str(target), "op": "get"}) == {"result": 1000}
    meta = client.get_entity(target)
    assert meta is not None and meta.get_state(int) == 1000 and meta.backlog_queue_size == 0


def test_transfers_inside_critical_sections_keep_the_total_exact(hub) -> None:
    client, start_worker = hub
    start_worker()
    start_worker()  # two workers compete for the same entities and orchestrations
    prefix = key()
    keys = [f"{prefix}-{i}" for i in range(5)]
    assert finish(client, bank_transfer.open_accounts, {"keys": keys, "amount": 100}) == 5
    ids = []
    for i in range(50):
        source, target = keys[i % 5], keys[(i * 3 + 1) % 5]
        if source == target:
            target = keys[(i + 2) % 5]
        ids.append(client.schedule_new_orchestration(
            bank_transfer.transfer, input={"from": source, "to": target, "amount": 5 + (i * 37) % 90}
        ))
    moved = 0
    for iid in ids:
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, _why(state)
        moved += state.get_output()["moved"]
    assert moved > 0
    snapshot = finish(client, bank_transfer.audit, keys)
    assert snapshot["total"] == 500 and min(snapshot["balances"]) >= 0
    for k in keys:
        meta = client.get_entity(bank_transfer.account(k))
        assert meta is not None and meta.get_locked_by() is None


def test_entity_signals_another_entity(hub) -> None:
    client, start_worker = hub
    start_worker()
    source, target = EntityInstanceId("counter", key()), EntityInstanceId("counter", key())
    marker = f"reached-{key()}"
    for amount in (7, 8):
        client.signal_entity(source, "forward", {"to": target.key, "amount": amount, "announce_at": 15, "marker": marker})
    # The target starts the marker orchestration when both forwarded signals have arrived.
    state = client.wait_for_orchestration_completion(marker, timeout=WAIT)
    assert state is not None and state.get_output() == 15
    assert finish(client, call_one, {"id": str(target), "op": "get"}) == {"result": 15}
    assert finish(client, call_one, {"id": str(source), "op": "get"}) == {"result": 2}


def test_entity_starts_an_orchestration(hub) -> None:
    client, start_worker = hub
    start_worker()
    instance_id = f"from-entity-{key()}"
    out = finish(client, call_one, {
        "id": f"@counter@{key()}", "op": "start", "input": {"input": [1, "two"], "instance_id": instance_id},
    })
    assert out == {"result": instance_id}
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.name == "echo" and state.get_output() == [1, "two"]


def test_class_entity_operations(hub) -> None:
    client, start_worker = hub
    start_worker()
    ledger = f"@ledger@{key()}"
    results = finish(client, call_many, [
        [ledger, "record", "a"], [ledger, "record", "b"], [ledger, "entries", None],
        [ledger, "delete", None], [ledger, "entries", None], [ledger, "Record", "c"],
    ])
    assert results == [1, 2, ["a", "b"], None, [], 1]
    meta = client.get_entity(EntityInstanceId.parse(ledger))
    assert meta is not None and meta.get_typed_state(list) == ["c"]
    out = finish(client, call_one, {"id": ledger, "op": "no_such_operation"})
    assert out["failed"].endswith("EntityOperationFailedException")
    assert out["inner_type"] == "builtins.AttributeError" and "no_such_operation" in out["inner_message"]


def test_a_failed_operation_rolls_back_and_the_caller_gets_the_failure(hub) -> None:
    client, start_worker = hub
    start_worker()
    k = key()
    target = f"@counter@{k}"
    assert finish(client, call_one, {"id": target, "op": "add", "input": 5}) == {"result": 5}
    out = finish(client, call_one, {"id": target, "op": "add_then_fail", "input": 100})
    assert out["failed"].endswith("EntityOperationFailedException")
    assert out["inner_type"] == "builtins.ValueError" and out["inner_message"] == "refusing to add 100"
    assert finish(client, call_one, {"id": target, "op": "get"}) == {"result": 5}
    # The signal the failed operation sent was rolled back with it.
    assert client.get_entity(EntityInstanceId("counter", k + "-side")) is None


def test_unregistered_entities_fail_calls_and_ignore_signals(hub) -> None:
    client, start_worker = hub
    start_worker()
    ghost = EntityInstanceId("ghost", key())
    client.signal_entity(ghost, "haunt", 1)
    out = finish(client, call_one, {"id": str(ghost), "op": "haunt"})
    assert out["failed"].endswith("EntityOperationFailedException")
    assert out["inner_type"] == "durabletask.worker.EntityNotRegisteredError" and "'ghost'" in out["inner_message"]
    meta = client.get_entity(ghost)
    assert meta is None or meta.get_state() is None


def test_a_state_over_the_limit_fails_that_operation(hub) -> None:
    client, start_worker = hub
    start_worker(maximum_entity_state_size=10_000)
    target = f"@counter@{key()}"
    assert finish(client, call_one, {"id": target, "op": "add", "input": 1}) == {"result": 1}
    out = finish(client, call_one, {"id": target, "op": "big", "input": 20_000})
    assert out["inner_type"].endswith("EntityStateTooLargeError") and "10000" in out["inner_message"]
    assert finish(client, call_one, {"id": target, "op": "get"}) == {"result": 1}


def test_delayed_signals_do_not_fire_early(hub) -> None:
    client, start_worker = hub
    start_worker()
    delay = 1.5
    from_client = EntityInstanceId("counter", key())
    client_marker = f"fired-{key()}"
    client_due = datetime.now(timezone.utc) + timedelta(seconds=delay)
    client.signal_entity(from_client, "stamp", client_marker, signal_time=client_due)

    from_orchestration = EntityInstanceId("counter", key())
    orchestration_marker = f"fired-{key()}"
    orchestration_due = finish(client, signal_later, {
        "id": str(from_orchestration), "delay": delay, "marker": orchestration_marker,
    })

    for entity_id, marker, due in (
        (from_client, client_marker, client_due.timestamp()),
        (from_orchestration, orchestration_marker, orchestration_due),
    ):
        fired = client.wait_for_orchestration_completion(marker, timeout=WAIT)
        assert fired is not None and fired.runtime_status == OrchestrationStatus.COMPLETED
        meta = client.get_entity(entity_id)
        assert meta is not None
        fired_at = meta.get_typed_state(float)
        assert fired_at >= due - 0.001, f"fired {due - fired_at:.3f}s early"
        assert fired_at < due + 15, "fired far too late"


def test_locks_are_released_on_failure_and_on_completion(hub) -> None:
    client, start_worker = hub
    start_worker()
    a, b = f"@counter@{key()}", f"@counter@{key()}"
    iid = client.schedule_new_orchestration(hold_and_fail, input=[a, b])
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
    assert "failing inside the critical section" in state.failure_details.message
    assert finish(client, hold_and_return, [b, a]) == "returned while holding the locks"
    # Both sections released their locks: a third one gets them at once.
    assert finish(client, call_many, [[a, "get", None], [b, "add", 2]]) == [1, 2]
    assert finish(client, hold_and_return, [a, b]) == "returned while holding the locks"
    for entity_id in (a, b):
        meta = client.get_entity(EntityInstanceId.parse(entity_id))
        assert meta is not None and meta.get_locked_by() is None


def test_get_entity_queries_paging_and_clean_storage(hub) -> None:
    client, start_worker = hub
    start_worker()
    prefix = key()
    names = [f"{prefix}-{i}" for i in range(5)]
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    finish(client, call_many, [[f"@counter@{n}", "add", i + 1] for i, n in enumerate(names)])
    finish(client, call_many, [[f"@ledger@{prefix}-x", "record", "r"]])
    after = datetime.now(timezone.utc) + timedelta(seconds=1)

    assert client.get_entity(EntityInstanceId("counter", "never-used")) is None
    one = client.get_entity(EntityInstanceId("counter", names[2]), include_state=False)
    assert one is not None and not one.includes_state and one.get_state() is None
    assert before <= one.last_modified <= after

    paged = client.get_all_entities(EntityQuery(instance_id_starts_with=f"@counter@{prefix}", page_size=2))
    assert sorted(str(e.id) for e in paged) == [f"@counter@{n}" for n in names]
    assert sorted(e.get_state(int) for e in paged) == [1, 2, 3, 4, 5]
    bare = client.get_all_entities(EntityQuery(instance_id_starts_with=f"@counter@{prefix}", include_state=False))
    assert len(bare) == 5 and all(not e.includes_state and e.get_state() is None for e in bare)
    in_range = client.get_all_entities(EntityQuery(
        instance_id_starts_with=f"@counter@{prefix}", last_modified_from=before, last_modified_to=after,
    ))
    assert len(in_range) == 5
    assert client.get_all_entities(EntityQuery(
        instance_id_starts_with=f"@counter@{prefix}", last_modified_from=after,
    )) == []
    assert {str(e.id) for e in client.get_all_entities(EntityQuery(instance_id_starts_with="@ledger@"))} == {
        f"@ledger@{prefix}-x"
    }

    # Empty two counters, then clean: exactly the empty ones go.
    finish(client, call_many, [[f"@counter@{n}", "delete", None] for n in names[:2]])
    transient = client.get_all_entities(EntityQuery(include_transient=True))
    empty = [e for e in transient if e.get_state() is None]
    result = client.clean_entity_storage()
    assert result.empty_entities_removed == len(empty)
    assert result.orphaned_locks_released == 0
    remaining = client.get_all_entities(EntityQuery(instance_id_starts_with=f"@counter@{prefix}", include_transient=True))
    assert sorted(str(e.id) for e in remaining) == [f"@counter@{n}" for n in names[2:]]
    assert client.clean_entity_storage().empty_entities_removed == 0


def test_async_client_entity_methods(hub, sidecar) -> None:
    client, start_worker = hub
    start_worker()
    target = EntityInstanceId("counter", key())

    async def scenario() -> tuple[Any, Any, Any]:
        async with AsyncTaskHubGrpcClient(host_address=sidecar.address) as aclient:
            for value in (1, 2, 3):
                await aclient.signal_entity(target, "add", value)
            iid = await aclient.schedule_new_orchestration(call_one, input={"id": str(target), "op": "get"})
            state = await aclient.wait_for_orchestration_completion(iid, timeout=WAIT)
            meta = await aclient.get_entity(target)
            listed = await aclient.get_all_entities(EntityQuery(instance_id_starts_with=str(target)))
            missing = await aclient.get_entity(EntityInstanceId("counter", "nobody-" + key()))
            cleaned = await aclient.clean_entity_storage()
            assert missing is None and cleaned.orphaned_locks_released == 0
            return state, meta, listed

    state, meta, listed = asyncio.run(scenario())
    assert state is not None and state.get_output() == {"result": 6}
    assert meta is not None and meta.get_state(int) == 6
    assert [str(e.id) for e in listed] == [str(target)]


def test_the_worker_runs_at_most_its_entity_limit_at_once(hub) -> None:
    client, start_worker = hub
    Gate.running = Gate.peak = 0
    Gate.open.clear()
    start_worker(concurrency_options=ConcurrencyOptions(maximum_concurrent_entity_work_items=2))
    ids = [EntityInstanceId("blocking", key()) for _ in range(3)]
    try:
        for entity_id in ids:
            client.signal_entity(entity_id, "run")
        with Gate.cond:
            assert Gate.cond.wait_for(lambda: Gate.running == 2, timeout=WAIT)
            # The third batch waits for a free slot.
            assert not Gate.cond.wait_for(lambda: Gate.running > 2, timeout=0.5)
    finally:
        Gate.open.set()
    for entity_id in ids:
        assert finish(client, call_one, {"id": str(entity_id), "op": "check"}) == {"result": None}
        meta = client.get_entity(entity_id)
        assert meta is not None and meta.get_typed_state(str) == "done"
    assert Gate.peak == 2


def test_bad_entity_ids_are_refused_in_the_sdk(hub) -> None:
    client, _ = hub
    for entity, k in (("", "k"), ("a@b", "k"), ("name", ""), ("name", "k@x")):
        with pytest.raises(ValueError):
            client.signal_entity(EntityInstanceId(entity, k), "op")
    for text in ("counter@k", "@counter", "@@k"):
        with pytest.raises(ValueError):
            EntityInstanceId.parse(text)


@pytest.mark.our_sidecar("checks this sidecar's status codes")
@pytest.mark.parametrize("bad", ["no-at-sign", "@@key", "@name@", "@a@b@c"])
def test_bad_entity_ids_are_invalid_argument_at_the_sidecar(hub, bad: str) -> None:
    client, _ = hub
    for call in (
        lambda: client.signal_entity(bad, "op"),  # type: ignore[arg-type]
        lambda: client.get_entity(bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert bad in (info.value.details() or "")
