"""Running an operation written once for a synchronous and an asynchronous caller.

An operation is a generator: it yields each step it needs done (an RPC, a call on a client)
and receives the step's result, or has the step's exception thrown back in at the ``yield``,
so its logic (requests, paging, error interpretation, logging) is plain sequential code with
no I/O. ``run_operation`` does the steps by blocking calls, ``run_operation_async`` by awaiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

Step = TypeVar("Step")
Result = TypeVar("Result")


def run_operation(operation: Generator[Step, Any, Result], perform: Callable[[Step], Any]) -> Result:
    """Drive ``operation`` to its end, doing each step with ``perform``; returns its result."""
    try:
        step = next(operation)
        while True:
            try:
                outcome = perform(step)
            except BaseException as error:  # handed to the operation, which handles or re-raises it
                step = operation.throw(error)
            else:
                step = operation.send(outcome)
    except StopIteration as finished:
        result: Result = finished.value
        return result


async def run_operation_async(
    operation: Generator[Step, Any, Result], perform: Callable[[Step], Awaitable[Any]]
) -> Result:
    """Drive ``operation`` to its end, awaiting ``perform`` for each step; returns its result."""
    try:
        step = next(operation)
        while True:
            try:
                outcome = await perform(step)
            except BaseException as error:  # handed to the operation, which handles or re-raises it
                step = operation.throw(error)
            else:
                step = operation.send(outcome)
    except StopIteration as finished:
        result: Result = finished.value
        return result
