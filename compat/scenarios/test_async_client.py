"""The official asynchronous client against our sidecar."""

from __future__ import annotations

import asyncio

import compat_functions as fn

from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationState, OrchestrationStatus
from durabletask.worker import TaskHubGrpcWorker

MaybeState = OrchestrationState | None


async def _round_trip(address: str) -> tuple[str, MaybeState, MaybeState, MaybeState]:
    hub = AsyncTaskHubGrpcClient(host_address=address)
    try:
        instance_id = await hub.schedule_new_orchestration(fn.wait_named, input="go")
        started = await hub.wait_for_orchestration_start(instance_id, timeout=30)
        await hub.raise_orchestration_event(instance_id, "go", data="async")
        finished = await hub.wait_for_orchestration_completion(instance_id, timeout=30)
        fetched = await hub.get_orchestration_state(instance_id)
        return instance_id, started, finished, fetched
    finally:
        await hub.close()


def test_async_client_schedule_wait_get(address: str, worker: TaskHubGrpcWorker) -> None:
    instance_id, started, finished, fetched = asyncio.run(_round_trip(address))
    assert started is not None and started.runtime_status == OrchestrationStatus.RUNNING
    assert finished is not None and finished.runtime_status == OrchestrationStatus.COMPLETED
    assert finished.get_output() == "async"
    assert fetched is not None and fetched.instance_id == instance_id and fetched.get_output() == "async"


async def _chain(address: str) -> MaybeState:
    hub = AsyncTaskHubGrpcClient(host_address=address)
    try:
        instance_id = await hub.schedule_new_orchestration(fn.chain, input=["async"])
        return await hub.wait_for_orchestration_completion(instance_id, timeout=30)
    finally:
        await hub.close()


def test_async_client_activity_chain(address: str, worker: TaskHubGrpcWorker) -> None:
    state = asyncio.run(_chain(address))
    assert state is not None and state.get_output() == ["Hello, async!"]
