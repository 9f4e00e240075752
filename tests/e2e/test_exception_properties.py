"""``TaskHubGrpcWorker(exception_properties_provider=...)`` puts custom properties into failure details.

As in the official SDK: the provider is asked for every exception of a failure (and its causes),
for activities, orchestrations and entity operations (kept in the operation's failure details; the
calling orchestration's ``TaskFailedError`` describes the call, as in the official SDK); a provider that raises or returns something
other than a mapping is logged and the failure is recorded without properties.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityContext, EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker

WAIT = 30.0


class OrderError(Exception):
    """An application error carrying a code for the provider to report."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ProviderTrouble(Exception):
    """Makes the provider itself fail."""


class OrderProperties:
    """Reports ``OrderError.code``; nothing for other exceptions; raises for ``ProviderTrouble``."""

    def get_exception_properties(self, exception: Exception) -> Mapping[str, Any] | None:
        if isinstance(exception, ProviderTrouble):
            raise RuntimeError("the provider broke")
        if isinstance(exception, OrderError):
            return {"code": exception.code, "tags": ["order", "retryable"]}
        return None


def reject_order(ctx: task.ActivityContext, code: int) -> None:
    stock: dict[str, int] = {}
    try:
        stock["missing"]
    except KeyError as cause:
        raise OrderError("order rejected", code) from cause


def trouble(ctx: task.ActivityContext, _: Any) -> None:
    raise ProviderTrouble("the activity failed")


def orders(ctx: EntityContext, code: Any) -> None:
    raise OrderError("entity refused", int(code))


def catches(ctx: task.OrchestrationContext, code: int) -> Any:
    seen = []
    try:
        yield ctx.call_activity(reject_order, input=code)
    except task.TaskFailedError as err:
        inner = err.details.inner_failure
        seen.append({"properties": err.details.properties, "inner": inner.error_type if inner else None})
    try:
        yield ctx.call_activity(trouble)
    except task.TaskFailedError as err:
        seen.append({"properties": err.details.properties, "message": err.details.message})
    try:
        yield ctx.call_entity(EntityInstanceId("orders", ctx.instance_id), "place", code + 1)
    except task.TaskFailedError as err:
        seen.append({"properties": err.details.properties})
    return seen


def fails(ctx: task.OrchestrationContext, code: int) -> None:
    raise OrderError("orchestration gave up", code)


@pytest.fixture
def client(sidecar: Any) -> Iterator[TaskHubGrpcClient]:
    worker = TaskHubGrpcWorker(host_address=sidecar.address, exception_properties_provider=OrderProperties())
    worker.add_orchestrator(catches)
    worker.add_orchestrator(fails)
    worker.add_activity(reject_order)
    worker.add_activity(trouble)
    worker.add_entity(orders)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as c:
            yield c
    finally:
        worker.stop(timeout=10)


def test_activity_and_entity_failures_carry_the_providers_properties(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(catches, input=41, instance_id=f"props-{uuid.uuid4().hex[:8]}")
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    activity, broken_provider, entity = state.get_output()
    assert activity == {"properties": {"code": 41, "tags": ["order", "retryable"]}, "inner": "builtins.KeyError"}
    assert broken_provider == {"properties": None, "message": "the activity failed"}
    # As in the official SDK, the caller's TaskFailedError describes the call, not the entity's exception;
    # the operation's own failure details, in the history, carry the properties.
    assert entity == {"properties": None}
    failed = [e for e in client.get_orchestration_history(iid) if isinstance(e, history.EntityOperationFailedEvent)]
    assert len(failed) == 1 and failed[0].failure_details is not None
    assert failed[0].failure_details.properties == {"code": 42, "tags": ["order", "retryable"]}


def test_an_orchestrations_own_failure_carries_the_providers_properties(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(fails, input=7, instance_id=f"props-{uuid.uuid4().hex[:8]}")
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.message == "orchestration gave up"
    assert state.failure_details.properties == {"code": 7, "tags": ["order", "retryable"]}
