"""The sync and async clients against the real sidecar (in-process, in-memory store), without a worker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from durabletask import task
from durabletask.client import (
    AsyncTaskHubGrpcClient,
    OrchestrationFailedError,
    OrchestrationQuery,
    OrchestrationStatus,
    TaskHubGrpcClient,
)
from durabletask.worker import TaskHubGrpcWorker

# Run against the official test backend by `make compat`: it applies terminate and suspend only in
# a worker's turn, and these tests run no worker.
WORKERLESS = pytest.mark.our_sidecar("runs no worker; the official test backend applies terminate/suspend only in a worker's turn")

WAIT = 10.0  # generous bound for long polls that should answer at once


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def client(sidecar: Any) -> Any:
    with TaskHubGrpcClient(host_address=sidecar.address) as c:
        yield c


# ---------------------------------------------------------------- sync client

@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_schedule_is_pending_and_visible(client: TaskHubGrpcClient) -> None:
    p = prefix()
    iid = client.schedule_new_orchestration(
        "some_orchestrator", input={"n": 1}, instance_id=f"{p}a", tags={"team": "x"}, version="1.5"
    )
    assert iid == f"{p}a"
    state = client.get_orchestration_state(iid)
    assert state is not None
    assert state.instance_id == iid and state.name == "some_orchestrator"
    assert state.runtime_status is OrchestrationStatus.PENDING
    assert state.get_input() == {"n": 1}
    assert state.version == "1.5" and state.tags == {"team": "x"}
    assert state.created_at <= datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=5)
    without_payloads = client.get_orchestration_state(iid, fetch_payloads=False)
    assert without_payloads is not None and without_payloads.serialized_input is None

    found = client.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=p, runtime_status=[OrchestrationStatus.PENDING])
    )
    assert [s.instance_id for s in found] == [iid]
    none_completed = client.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=p, runtime_status=[OrchestrationStatus.COMPLETED])
    )
    assert none_completed == []


def test_default_instance_id_and_unknown_instance(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch")
    assert len(iid) == 32 and int(iid, 16) >= 0
    assert client.get_orchestration_state(iid) is not None
    assert client.get_orchestration_state(f"missing-{uuid.uuid4().hex}") is None


def test_duplicate_instance_id_is_refused_while_active(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch", instance_id=f"{prefix()}dup")
    with pytest.raises(grpc.RpcError):
        client.schedule_new_orchestration("orch", instance_id=iid)


@pytest.mark.our_sidecar("the official test backend accepts terminate of an unknown instance (no NOT_FOUND)")
def test_raise_event_to_unknown_instance_names_it(client: TaskHubGrpcClient) -> None:
    ghost = f"ghost-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as info:
        client.raise_orchestration_event(ghost, "approval", data=True)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert ghost in str(info.value)
    for call in (client.terminate_orchestration, client.suspend_orchestration, client.resume_orchestration):
        with pytest.raises(grpc.RpcError) as other:
            call(ghost)
        assert other.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert ghost in str(other.value)


@WORKERLESS
def test_terminate_pending_instance(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch", instance_id=f"{prefix()}term")
    client.terminate_orchestration(iid, output={"why": "test"})
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.TERMINATED
    assert state.get_output() == {"why": "test"}
    assert state.completed_at is not None
    state.raise_if_failed()


@WORKERLESS
def test_suspend_and_resume(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch", instance_id=f"{prefix()}sus")
    client.suspend_orchestration(iid, reason="hold")
    state = client.wait_for_orchestration_start(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.SUSPENDED
    client.resume_orchestration(iid, reason="go")
    resumed = client.get_orchestration_state(iid)
    assert resumed is not None
    assert resumed.runtime_status in (OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING)


def test_wait_for_start_times_out(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch", instance_id=f"{prefix()}slow")
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_start(iid, timeout=0.5)
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_completion(iid, timeout=0.5)


@WORKERLESS
def test_purge(client: TaskHubGrpcClient) -> None:
    p = prefix()
    ids = [client.schedule_new_orchestration("orch", instance_id=f"{p}{n}") for n in range(3)]
    for iid in ids:
        client.terminate_orchestration(iid)
        client.wait_for_orchestration_completion(iid, timeout=WAIT)
    result = client.purge_orchestration(ids[0])
    assert result.deleted_instance_count == 1
    assert client.get_orchestration_state(ids[0]) is None
    assert client.purge_orchestration(ids[0]).deleted_instance_count == 0

    by_filter = client.purge_orchestrations_by(
        created_time_from=datetime.now(timezone.utc) - timedelta(minutes=5),
        runtime_status=[OrchestrationStatus.TERMINATED],
    )
    assert by_filter.deleted_instance_count >= 2
    assert all(client.get_orchestration_state(iid) is None for iid in ids)


def test_query_paging_follows_continuation_tokens(client: TaskHubGrpcClient) -> None:
    p = prefix()
    ids = {client.schedule_new_orchestration("orch", instance_id=f"{p}{n:02d}") for n in range(7)}
    states = client.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=p, max_instance_count=2))
    assert sorted(s.instance_id for s in states) == sorted(ids)
    assert len(states) == len(ids)


@WORKERLESS
def test_list_instance_ids_pages(client: TaskHubGrpcClient) -> None:
    p = prefix()
    ids = [client.schedule_new_orchestration("orch", instance_id=f"{p}{n}") for n in range(5)]
    for iid in ids:
        client.terminate_orchestration(iid)
        client.wait_for_orchestration_completion(iid, timeout=WAIT)
    collected: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = client.list_instance_ids(
            runtime_status=[OrchestrationStatus.TERMINATED], page_size=2, continuation_token=token
        )
        assert len(page.items) <= 2
        collected.extend(page.items)
        pages += 1
        token = page.continuation_token
        if token is None or pages > 50:
            break
    assert set(ids) <= set(collected)
    assert pages >= 3


@WORKERLESS
def test_restart_terminated_instance(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration("orch", input=7, instance_id=f"{prefix()}rs")
    client.terminate_orchestration(iid)
    client.wait_for_orchestration_completion(iid, timeout=WAIT)
    new_id = client.restart_orchestration(iid, restart_with_new_instance_id=True)
    assert new_id != iid
    copy = client.get_orchestration_state(new_id)
    assert copy is not None and copy.name == "orch" and copy.get_input() == 7
    original = client.get_orchestration_state(iid)
    assert original is not None and original.runtime_status is OrchestrationStatus.TERMINATED

    assert client.restart_orchestration(iid) == iid
    state = client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is OrchestrationStatus.PENDING
    assert state.get_input() == 7
    with pytest.raises(grpc.RpcError) as info:
        client.restart_orchestration(iid)  # no longer finished
    assert iid in str(info.value)


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def greeter(ctx: task.OrchestrationContext, name: str) -> Any:
    ctx.set_custom_status({"stage": "greeting"})
    greeting = yield ctx.call_activity(greet, input=name)
    if name == "fail":
        raise ValueError("refusing to greet 'fail'")
    return greeting


def test_with_worker_completion_history_and_failure(sidecar: Any, client: TaskHubGrpcClient) -> None:
    with TaskHubGrpcWorker(host_address=sidecar.address) as worker:
        worker.add_orchestrator(greeter)
        worker.add_activity(greet)
        worker.start()
        iid = client.schedule_new_orchestration(greeter, input="bob")
        assert client.wait_for_orchestration_start(iid, timeout=WAIT) is not None
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
        assert state.name == "greeter" and state.get_output() == "hello bob"
        assert state.get_custom_status() == {"stage": "greeting"}
        assert state.failure_details is None and state.completed_at is not None

        kinds = [type(e).__name__ for e in client.get_orchestration_history(iid)]
        assert kinds[:2] == ["OrchestratorStartedEvent", "ExecutionStartedEvent"]
        assert "TaskScheduledEvent" in kinds and "TaskCompletedEvent" in kinds
        assert "ExecutionCompletedEvent" in kinds

        failed_id = client.schedule_new_orchestration(greeter, input="fail")
        failed = client.wait_for_orchestration_completion(failed_id, timeout=WAIT)
        assert failed is not None and failed.runtime_status is OrchestrationStatus.FAILED
        with pytest.raises(OrchestrationFailedError) as info:
            failed.raise_if_failed()
        assert info.value.failure_details.error_type == "builtins.ValueError"
        assert failed_id in str(info.value) and "refusing" in str(info.value)

        done = client.list_instance_ids(runtime_status=[OrchestrationStatus.COMPLETED])
        assert iid in done.items and failed_id not in done.items


# ---------------------------------------------------------------- async client

@WORKERLESS
def test_async_client_end_to_end(sidecar: Any) -> None:
    async def run() -> None:
        async with AsyncTaskHubGrpcClient(host_address=sidecar.address) as aclient:
            p = prefix()
            ids = [await aclient.schedule_new_orchestration("orch", input=n, instance_id=f"{p}{n}")
                   for n in range(5)]
            state = await aclient.get_orchestration_state(ids[0])
            assert state is not None and state.runtime_status is OrchestrationStatus.PENDING
            assert state.get_input() == 0
            assert await aclient.get_orchestration_state(f"missing-{uuid.uuid4().hex}") is None

            states = await aclient.get_all_orchestration_states(
                OrchestrationQuery(instance_id_prefix=p, max_instance_count=2))
            assert sorted(s.instance_id for s in states) == sorted(ids)

            ghost = f"ghost-{uuid.uuid4().hex}"
            with pytest.raises(grpc.RpcError) as info:
                await aclient.raise_orchestration_event(ghost, "evt")
            assert ghost in str(info.value)

            with pytest.raises(TimeoutError):
                await aclient.wait_for_orchestration_start(ids[1], timeout=0.5)

            await aclient.suspend_orchestration(ids[1])
            suspended = await aclient.wait_for_orchestration_start(ids[1], timeout=WAIT)
            assert suspended is not None and suspended.runtime_status is OrchestrationStatus.SUSPENDED
            await aclient.resume_orchestration(ids[1])
            resumed = await aclient.get_orchestration_state(ids[1])
            assert resumed is not None and resumed.runtime_status is not OrchestrationStatus.SUSPENDED

            for iid in ids:
                await aclient.terminate_orchestration(iid, output="stop")
                done = await aclient.wait_for_orchestration_completion(iid, timeout=WAIT)
                assert done is not None and done.runtime_status is OrchestrationStatus.TERMINATED
                assert done.get_output() == "stop"

            page = await aclient.list_instance_ids(runtime_status=[OrchestrationStatus.TERMINATED], page_size=2)
            assert len(page.items) == 2 and page.continuation_token is not None

            assert (await aclient.purge_orchestration(ids[0])).deleted_instance_count == 1
            assert await aclient.get_orchestration_state(ids[0]) is None
            purged = await aclient.purge_orchestrations_by(runtime_status=[OrchestrationStatus.TERMINATED])
            assert purged.deleted_instance_count >= 4
            assert await aclient.get_orchestration_state(ids[4]) is None

    asyncio.run(run())


def test_async_client_with_worker(sidecar: Any) -> None:
    async def run() -> None:
        async with AsyncTaskHubGrpcClient(host_address=sidecar.address) as aclient:
            iid = await aclient.schedule_new_orchestration(greeter, input="ann")
            state = await aclient.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.get_output() == "hello ann"
            history = await aclient.get_orchestration_history(iid)
            kinds = [type(e).__name__ for e in history]
            assert kinds[:2] == ["OrchestratorStartedEvent", "ExecutionStartedEvent"]
            assert "ExecutionCompletedEvent" in kinds

    with TaskHubGrpcWorker(host_address=sidecar.address) as worker:
        worker.add_orchestrator(greeter)
        worker.add_activity(greet)
        worker.start()
        asyncio.run(run())
