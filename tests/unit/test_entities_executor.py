"""Entity types and the entity batch executor (no gRPC)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask import task
from durabletask.entities import (
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityLock,
    EntityMetadata,
    EntityOperationFailedException,
)
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entity_executor import (
    EntityExecutor,
    EntityStateTooLargeError,
    to_batch_request,
)
from durabletask.internal.registry import Registry
from durabletask.serialization import JsonDataConverter
from durabletask.worker import EntityNotRegisteredError, TaskHubGrpcWorker

# ------------------------------------------------------------- EntityInstanceId


def test_entity_id_lowercases_the_name_and_formats() -> None:
    eid = EntityInstanceId("Counter", "Key-1")
    assert eid.entity == "counter" and eid.key == "Key-1"
    assert str(eid) == "@counter@Key-1"
    assert EntityInstanceId.parse("@Counter@Key-1") == eid
    assert hash(EntityInstanceId.parse("@counter@Key-1")) == hash(eid)


def test_entity_id_parse_rejects_an_at_sign_in_the_key() -> None:
    # A key may not contain '@', so such a string is rejected rather than silently split.
    with pytest.raises(ValueError, match="'@'"):
        EntityInstanceId.parse("@a@b@c")


@pytest.mark.parametrize(
    ("entity", "key", "problem"),
    [("", "k", "empty"), ("a@b", "k", "'@'"), ("n", "", "empty"), ("n", "k@", "'@'")],
)
def test_entity_id_rejects_empty_parts_and_at_signs(entity: str, key: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EntityInstanceId(entity, key)


@pytest.mark.parametrize("text", ["counter@k", "@counter", "@@k", "@counter@", "", "x"])
def test_entity_id_parse_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(ValueError):
        EntityInstanceId.parse(text)


def test_entity_ids_sort_by_their_string_form() -> None:
    ids = [EntityInstanceId("b", "1"), EntityInstanceId("a", "2"), EntityInstanceId("a", "10")]
    assert [str(i) for i in sorted(ids)] == ["@a@10", "@a@2", "@b@1"]
    assert EntityInstanceId("a", "1") < EntityInstanceId("a", "2")
    assert EntityInstanceId("a", "1") != "@a@1"
    assert len({EntityInstanceId("A", "1"), EntityInstanceId("a", "1")}) == 1


def test_task_module_reexports_entity_types() -> None:
    assert task.EntityInstanceId is EntityInstanceId
    assert task.DurableEntity is DurableEntity
    assert task.EntityLock is EntityLock
    assert task.EntityContext is EntityContext


# --------------------------------------------------------------- EntityMetadata


def _metadata(state: str | None, locked_by: str | None = None) -> pb.EntityMetadata:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime(2024, 5, 1, 12, 0, 0))
    return pb.EntityMetadata(
        instanceId="@counter@a",
        lastModifiedTime=ts,
        backlogQueueSize=3,
        lockedBy=wrappers_pb2.StringValue(value=locked_by) if locked_by else None,
        serializedState=wrappers_pb2.StringValue(value=state) if state is not None else None,
    )


def test_entity_metadata_from_wire() -> None:
    meta = EntityMetadata.from_entity_metadata(_metadata("42", "orch-1"), True, JsonDataConverter())
    assert meta.id == EntityInstanceId("counter", "a")
    assert meta.last_modified == datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert meta.backlog_queue_size == 3
    assert meta.includes_state
    assert meta.get_state() == "42"
    assert meta.get_state(int) == 42
    assert meta.get_typed_state() == 42
    assert meta.get_locked_by() == "orch-1"
    with pytest.raises(TypeError, match="could not convert"):
        EntityMetadata.from_entity_metadata(_metadata('"x"'), True, JsonDataConverter()).get_state(int)


def test_entity_metadata_without_state_and_lock() -> None:
    meta = EntityMetadata.from_entity_response(
        pb.GetEntityResponse(exists=True, entity=_metadata("42")), False, JsonDataConverter()
    )
    assert not meta.includes_state
    assert meta.get_state() is None and meta.get_typed_state(int) is None
    assert meta.get_locked_by() is None


def test_entity_metadata_rejects_a_bad_id() -> None:
    with pytest.raises(ValueError, match="invalid entity instance ID"):
        EntityMetadata.from_entity_metadata(pb.EntityMetadata(instanceId="nope"), True, JsonDataConverter())


def test_entity_operation_failed_exception_names_entity_and_operation() -> None:
    ex = EntityOperationFailedException(
        EntityInstanceId("counter", "a"), "add", pb.TaskFailureDetails(errorType="ValueError", errorMessage="bad")
    )
    assert "add" in str(ex) and "@counter@a" in str(ex) and "bad" in str(ex)


# ----------------------------------------------------------------- the executor


def counter(ctx: EntityContext, value: Any) -> Any:
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + value)
        return current + value
    if ctx.operation == "get":
        return current
    if ctx.operation == "add_then_fail":
        ctx.set_state(current + value)
        ctx.signal_entity(EntityInstanceId("audit", "x"), "log", value)
        raise ValueError("failing after changing the state")
    if ctx.operation == "notify":
        ctx.signal_entity(EntityInstanceId("audit", "x"), "log", current)
        return None
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    raise NotImplementedError(f"unknown operation {ctx.operation}")


class Account(DurableEntity):
    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def balance(self) -> int:
        return self.get_state(int, 0)

    def touch(self, note: str = "none") -> str:
        # Attributes do not survive between operations: each gets a fresh object.
        seen = getattr(self, "seen", None)
        self.seen = note
        return f"{seen}:{note}"

    def start_audit(self, name: str) -> str:
        return self.schedule_new_orchestration("audit_orchestrator", input={"who": name}, instance_id="audit-1")

    def _private(self) -> str:
        return "secret"


@dataclass
class Settings:
    name: str
    level: int


def settings_entity(ctx: EntityContext, value: Settings | None) -> Any:
    if ctx.operation == "set":
        assert isinstance(value, Settings)
        ctx.set_state(value)
        return None
    state = ctx.get_state(Settings)
    return None if state is None else state.level


async def async_entity(ctx: EntityContext, value: Any) -> Any:
    ctx.set_state(value)
    return value


def _registry(**entities: Any) -> Registry:
    registry = Registry()
    for name, fn in entities.items():
        registry.add_entity(fn, name)
    return registry


def _batch(
    instance_id: str, state: str | None, *ops: tuple[str, Any]
) -> pb.EntityBatchRequest:
    req = pb.EntityBatchRequest(instanceId=instance_id)
    if state is not None:
        req.entityState.value = state
    for i, (operation, value) in enumerate(ops):
        op = req.operations.add(operation=operation, requestId=f"r{i}")
        if value is not None:
            op.input.value = json.dumps(value)
    return req


def _outcomes(result: pb.EntityBatchResult) -> list[Any]:
    out: list[Any] = []
    for r in result.results:
        if r.HasField("success"):
            out.append(json.loads(r.success.result.value) if r.success.result.value else None)
        else:
            out.append(("failed", r.failure.failureDetails.errorType, r.failure.failureDetails.errorMessage))
    return out


def test_function_entity_runs_a_batch_in_order() -> None:
    executor = EntityExecutor(_registry(counter=counter))
    result = executor.run_batch(_batch("@counter@a", "10", ("add", 5), ("add", 2), ("get", None)), "tok")
    assert _outcomes(result) == [15, 17, 17]
    assert result.entityState.value == "17"
    assert result.completionToken == "tok"
    for r in result.results:
        assert r.success.startTimeUtc.seconds > 0 and r.success.endTimeUtc.seconds > 0


def test_a_failing_operation_rolls_back_its_state_and_messages_and_the_batch_goes_on() -> None:
    executor = EntityExecutor(_registry(counter=counter))
    result = executor.run_batch(
        _batch("@counter@a", None, ("add", 1), ("add_then_fail", 100), ("notify", None), ("add", 1)), "t"
    )
    outcomes = _outcomes(result)
    assert outcomes[0] == 1 and outcomes[2] is None and outcomes[3] == 2
    assert outcomes[1] == ("failed", "builtins.ValueError", "failing after changing the state")
    assert result.results[1].failure.failureDetails.stackTrace.value
    assert result.entityState.value == "2"
    # Only the signal of the operation that returned is sent, with the state it saw.
    assert len(result.actions) == 1
    signal = result.actions[0].sendSignal
    assert signal.instanceId == "@audit@x" and signal.name == "log" and signal.input.value == "1"


def test_deleting_the_state_returns_no_state() -> None:
    executor = EntityExecutor(_registry(counter=counter))
    result = executor.run_batch(_batch("@counter@a", "5", ("delete", None)), "t")
    assert not result.HasField("entityState")
    assert _outcomes(result) == [None]


def test_untouched_state_goes_back_byte_for_byte() -> None:
    executor = EntityExecutor(_registry(account=Account))
    raw = '{"b": 1,   "a": [1, 2]}'
    result = executor.run_batch(_batch("@account@a", raw, ("touch", None), ("deposit", 1)), "t")
    assert result.entityState.value == raw
    assert result.results[0].HasField("success") and result.results[1].HasField("failure")


def test_class_entity_operations() -> None:
    executor = EntityExecutor(_registry(account=Account))
    result = executor.run_batch(
        _batch(
            "@account@alice", None,
            ("deposit", 10), ("Deposit", 5), ("balance", None), ("touch", None), ("touch", "x"),
            ("start_audit", "bob"), ("_private", None), ("no_such_thing", None), ("delete", None),
        ),
        "t",
    )
    outcomes = _outcomes(result)
    assert outcomes[:6] == [10, 15, 15, "None:none", "None:x", "audit-1"]
    assert outcomes[6][1] == "builtins.AttributeError" and "_private" in outcomes[6][2]
    assert outcomes[7][1] == "builtins.AttributeError" and "no_such_thing" in outcomes[7][2]
    assert outcomes[8] is None
    assert not result.HasField("entityState")
    [start] = result.actions
    assert start.startNewOrchestration.name == "audit_orchestrator"
    assert start.startNewOrchestration.instanceId == "audit-1"
    assert json.loads(start.startNewOrchestration.input.value) == {"who": "bob"}


def test_typed_state_and_input() -> None:
    executor = EntityExecutor(_registry(settings=settings_entity))
    result = executor.run_batch(
        _batch("@settings@s", None, ("set", {"name": "n", "level": 3}), ("level", None)), "t"
    )
    assert _outcomes(result) == [None, 3]
    assert json.loads(result.entityState.value) == {"name": "n", "level": 3}
    # A state that does not fit the requested type fails that operation clearly.
    bad = executor.run_batch(_batch("@settings@s", '"just a string"', ("level", None)), "t")
    assert bad.results[0].failure.failureDetails.errorMessage.startswith("cannot convert payload to Settings")


def test_get_state_with_a_type_the_value_does_not_have_raises() -> None:
    def reader(ctx: EntityContext, _: Any) -> Any:
        return ctx.get_state(int)

    executor = EntityExecutor(_registry(reader=reader), JsonDataConverter(strict=False))
    result = executor.run_batch(_batch("@reader@r", '"text"', ("get", None)), "t")
    assert "not a int" in result.results[0].failure.failureDetails.errorMessage


def test_unregistered_entity_fails_every_operation_and_keeps_the_state() -> None:
    executor = EntityExecutor(_registry(counter=counter))
    result = executor.run_batch(_batch("@ghost@a", "7", ("add", 1), ("get", None)), "t")
    for r in result.results:
        details = r.failure.failureDetails
        assert details.errorType == "durabletask.worker.EntityNotRegisteredError"
        assert "'ghost'" in details.errorMessage
    assert result.entityState.value == "7"
    assert not result.actions


def test_state_over_the_limit_fails_the_operation_and_keeps_the_old_state() -> None:
    def big(ctx: EntityContext, size: int) -> None:
        ctx.set_state("x" * size)

    executor = EntityExecutor(_registry(big=big), maximum_state_size=1000)
    result = executor.run_batch(_batch("@big@b", '"small"', ("set", 2000), ("set", 10)), "t")
    failure = result.results[0].failure.failureDetails
    assert failure.errorType.endswith("EntityStateTooLargeError")
    assert "@big@b" in failure.errorMessage and "1000" in failure.errorMessage
    assert result.results[1].HasField("success")
    assert json.loads(result.entityState.value) == "x" * 10
    assert issubclass(EntityStateTooLargeError, ValueError)


def test_multibyte_characters_count_in_bytes_towards_the_limit() -> None:
    def big(ctx: EntityContext, text: str) -> None:
        ctx.set_state(text)

    executor = EntityExecutor(_registry(big=big), JsonDataConverter(), maximum_state_size=100)
    # 40 characters of 3 bytes each: 120 bytes even though ensure_ascii escapes may be used.
    result = executor.run_batch(_batch("@big@b", None, ("set", "€" * 40)), "t")
    assert result.results[0].HasField("failure")


def test_async_entity_function_is_awaited() -> None:
    executor = EntityExecutor(_registry(later=async_entity))
    result = executor.run_batch(_batch("@later@x", None, ("set", [1, 2])), "t")
    assert _outcomes(result) == [[1, 2]]
    assert json.loads(result.entityState.value) == [1, 2]


def test_entity_context_exposes_ids_and_delayed_signals() -> None:
    seen: dict[str, Any] = {}
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def probe(ctx: EntityContext, _: Any) -> None:
        seen.update(op=ctx.operation, id=ctx.entity_id, orch=ctx.orchestration_id)
        ctx.signal_entity("@other@k", "ping", signal_time=when)
        seen["new_id"] = ctx.schedule_new_orchestration("orch")

    result = EntityExecutor(_registry(probe=probe)).run_batch(_batch("@probe@K", None, ("go", None)), "t")
    assert seen["op"] == "go" and seen["id"] == EntityInstanceId("probe", "K") and seen["orch"] == "@probe@K"
    assert len(seen["new_id"]) == 32
    signal, start = result.actions
    assert signal.sendSignal.scheduledTime.ToDatetime(timezone.utc) == when
    assert not signal.sendSignal.HasField("input")
    assert start.startNewOrchestration.instanceId == seen["new_id"]


def test_entity_request_v2_is_converted_with_response_destinations() -> None:
    req = pb.EntityRequest(instanceId="@counter@a", executionId="e1")
    req.entityState.value = "1"
    signaled = req.operationRequests.add().entityOperationSignaled
    signaled.requestId, signaled.operation = "s1", "add"
    signaled.input.value = "2"
    called = req.operationRequests.add().entityOperationCalled
    called.requestId, called.operation = "c1", "get"
    called.parentInstanceId.value = "orch-1"
    called.parentExecutionId.value = "exec-1"
    batch, infos = to_batch_request(req)
    assert [(o.operation, o.requestId) for o in batch.operations] == [("add", "s1"), ("get", "c1")]
    assert batch.operations[0].input.value == "2" and not batch.operations[1].HasField("input")
    assert not infos[0].HasField("responseDestination")
    assert infos[1].responseDestination.instanceId == "orch-1"
    assert infos[1].responseDestination.executionId.value == "exec-1"

    result = EntityExecutor(_registry(counter=counter)).run_batch(req, "tok")
    assert _outcomes(result) == [3, 3]
    assert [i.requestId for i in result.operationInfos] == ["s1", "c1"]
    assert result.entityState.value == "3"


def test_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    executor = EntityExecutor(_registry(counter=counter), logger=logging.getLogger("test-entities"))
    with caplog.at_level(logging.WARNING, logger="test-entities"):
        executor.run_batch(_batch("@nobody@a", None, ("add", 1)), "t")
    assert "@nobody@a" in caplog.text and "EntityNotRegisteredError" in caplog.text


# -------------------------------------------------------------- registration


def test_add_entity_names_and_validation() -> None:
    worker = TaskHubGrpcWorker(host_address="localhost:1")
    assert worker.add_entity(counter) == "counter"
    assert worker.add_entity(Account) == "account"
    assert worker.add_entity(counter, name="Other") == "other"
    with pytest.raises(ValueError, match="already registered"):
        worker.add_entity(Account, name="ACCOUNT")
    with pytest.raises(ValueError, match="'@'"):
        worker.add_entity(counter, name="bad@name")
    with pytest.raises(ValueError, match="lambda"):
        worker.add_entity(lambda ctx, _: None)
    with pytest.raises(TypeError):
        worker.add_entity(42)
    with pytest.raises(ValueError, match="maximum_entity_state_size"):
        TaskHubGrpcWorker(host_address="localhost:1", maximum_entity_state_size=0)
    assert issubclass(EntityNotRegisteredError, ValueError)
