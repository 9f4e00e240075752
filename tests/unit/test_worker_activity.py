"""Running activities: inputs decoded by annotation, results encoded, failures reported."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.activity_executor import ActivityExecutor, is_async_activity
from durabletask.internal.registry import ActivityNotRegisteredError, Registry


@dataclass
class Order:
    item: str
    quantity: int


class OutOfStock(Exception):
    pass


seen: dict[str, object] = {}


def describe(ctx: task.ActivityContext, order: Order) -> str:
    seen["ctx"] = ctx
    seen["order"] = order
    return f"{order.quantity} x {order.item}"


def fail(ctx, _):
    try:
        raise KeyError("shelf 4")
    except KeyError as inner:
        raise OutOfStock("no widgets left") from inner


async def add_async(ctx, numbers: list[int]) -> int:
    await asyncio.sleep(0)
    return sum(numbers)


async def fail_async(ctx, _):
    await asyncio.sleep(0)
    raise ValueError("bad async input")


def returns_awaitable(ctx, value):
    return add_async(ctx, value)


def nothing(ctx, _):
    return None


def request(name: str, value: object = None, *, task_id: int = 7, tags: dict[str, str] | None = None) -> pb.ActivityRequest:
    req = pb.ActivityRequest(name=name, taskId=task_id, tags=tags or {})
    req.orchestrationInstance.instanceId = "inst-1"
    if value is not None:
        req.input.value = json.dumps(value)
    return req


@pytest.fixture
def executor() -> ActivityExecutor:
    registry = Registry()
    for fn in (describe, fail, add_async, fail_async, returns_awaitable, nothing):
        registry.add_activity(fn)
    return ActivityExecutor(registry)


def test_sync_activity_gets_typed_input_context_and_encoded_result(executor: ActivityExecutor) -> None:
    response = executor.run(request("describe", {"item": "widget", "quantity": 3}, tags={"t": "v"}), "tok")
    assert response.instanceId == "inst-1"
    assert response.taskId == 7
    assert response.completionToken == "tok"
    assert not response.HasField("failureDetails")
    assert json.loads(response.result.value) == "3 x widget"
    assert seen["order"] == Order("widget", 3)
    ctx = seen["ctx"]
    assert isinstance(ctx, task.ActivityContext)
    assert (ctx.orchestration_id, ctx.task_id, ctx.tags) == ("inst-1", 7, {"t": "v"})


def test_none_result_leaves_result_unset(executor: ActivityExecutor) -> None:
    response = executor.run(request("nothing"), "tok")
    assert not response.HasField("result")
    assert not response.HasField("failureDetails")


def test_failure_reports_qualified_type_message_stack_and_cause(executor: ActivityExecutor) -> None:
    response = executor.run(request("fail"), "tok")
    assert not response.HasField("result")
    details = response.failureDetails
    assert details.errorType == f"{__name__}.OutOfStock"
    assert details.errorMessage == "no widgets left"
    assert "in fail" in details.stackTrace.value
    assert details.innerFailure.errorType == "builtins.KeyError"


def test_unregistered_activity_fails_with_not_registered(executor: ActivityExecutor) -> None:
    response = executor.run(request("missing"), "tok")
    assert response.failureDetails.errorType.endswith("ActivityNotRegisteredError")
    assert "missing" in response.failureDetails.errorMessage
    with pytest.raises(ActivityNotRegisteredError):
        executor.lookup("missing")


def test_async_activity_is_recognised_and_awaited(executor: ActivityExecutor) -> None:
    assert executor.is_async(request("add_async"))
    assert not executor.is_async(request("describe"))
    assert not executor.is_async(request("missing"))
    response = asyncio.run(executor.run_async(request("add_async", [1, 2, 3]), "tok"))
    assert json.loads(response.result.value) == 6


def test_async_activity_failure(executor: ActivityExecutor) -> None:
    response = asyncio.run(executor.run_async(request("fail_async"), "tok"))
    assert response.failureDetails.errorType == "builtins.ValueError"
    assert response.failureDetails.errorMessage == "bad async input"


def test_sync_function_returning_an_awaitable(executor: ActivityExecutor) -> None:
    response = executor.run(request("returns_awaitable", [4, 5]), "tok")
    assert json.loads(response.result.value) == 9
    used: list[bool] = []

    def await_result(awaitable):
        used.append(True)
        return asyncio.run(awaitable)

    response = executor.run(request("returns_awaitable", [1]), "tok", await_result=await_result)
    assert json.loads(response.result.value) == 1 and used == [True]


def test_is_async_activity_for_callable_objects() -> None:
    class AsyncCallable:
        async def __call__(self, ctx, value):
            return value

    assert is_async_activity(AsyncCallable())
    assert not is_async_activity(describe)



def test_loose_annotation_passes_the_decoded_value_through() -> None:
    """`x: str` receiving 5 gets 5: annotations only direct rebuildable types, as in the official SDK."""
    from durabletask.internal import orchestrator_service_pb2 as pb
    from durabletask.internal.activity_executor import ActivityExecutor
    from durabletask.internal.registry import Registry

    seen: list[object] = []

    def echo(ctx, x: str):
        seen.append(x)
        return x

    registry = Registry()
    registry.add_activity(echo)
    req = pb.ActivityRequest(name="echo", taskId=1)
    req.input.value = "5"
    req.orchestrationInstance.instanceId = "i"
    assert ActivityExecutor(registry).execute(req) == "5"
    assert seen == [5]
