"""Terminate, suspend/resume, purge and queries with paging through the official client."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import compat_functions as fn
import grpc
import pytest
from compat_support import completed, new_id, wait_for_status

from durabletask import history
from durabletask.client import OrchestrationQuery, OrchestrationStatus, TaskHubGrpcClient


def test_terminate_with_output(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="never")
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    hub.terminate_orchestration(instance_id, output="stopped by test", recursive=False)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.get_output() == "stopped by test"


def test_terminate_recursive(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.long_parent, instance_id=new_id("tree"))
    child_id = f"{instance_id}-child"
    wait_for_status(hub, child_id, OrchestrationStatus.RUNNING)
    hub.terminate_orchestration(instance_id, recursive=True)
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.TERMINATED
    assert completed(hub, child_id).runtime_status == OrchestrationStatus.TERMINATED


def test_suspend_and_resume(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="go")
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    hub.suspend_orchestration(instance_id, reason="paused by test")
    wait_for_status(hub, instance_id, OrchestrationStatus.SUSPENDED)
    hub.raise_orchestration_event(instance_id, "go", data="after resume")
    hub.resume_orchestration(instance_id, reason="resumed by test")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == "after resume"
    events = hub.get_orchestration_history(instance_id)
    suspended = next(e for e in events if isinstance(e, history.ExecutionSuspendedEvent))
    resumed = next(e for e in events if isinstance(e, history.ExecutionResumedEvent))
    assert suspended.input == "paused by test" and resumed.input == "resumed by test"
    assert events.index(suspended) < events.index(resumed)
    assert any(isinstance(e, history.EventRaisedEvent) and e.name == "go" for e in events)


def test_terminate_a_suspended_instance(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="never")
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    hub.suspend_orchestration(instance_id)
    wait_for_status(hub, instance_id, OrchestrationStatus.SUSPENDED)
    hub.terminate_orchestration(instance_id, output="gone")
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.get_output() == "gone"


def test_purge_one_instance(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.chain, input=["purge"])
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    result = hub.purge_orchestration(instance_id)
    assert result.deleted_instance_count == 1
    assert hub.get_orchestration_state(instance_id) is None
    assert hub.purge_orchestration(instance_id).deleted_instance_count == 0


def test_purge_refuses_a_running_instance(hub: TaskHubGrpcClient) -> None:
    """Deliberate difference: our sidecar answers FAILED_PRECONDITION and keeps the instance
    (the official in-memory backend answers deletedInstanceCount=0)."""
    instance_id = hub.schedule_new_orchestration(fn.wait_named, input="finish")
    assert hub.wait_for_orchestration_start(instance_id, timeout=30) is not None
    try:
        with pytest.raises(grpc.RpcError) as failure:
            hub.purge_orchestration(instance_id)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert instance_id in (failure.value.details() or "")
        assert hub.get_orchestration_state(instance_id) is not None
    finally:
        hub.raise_orchestration_event(instance_id, "finish", data=1)
    assert completed(hub, instance_id).get_output() == 1


def test_purge_recursive(hub: TaskHubGrpcClient) -> None:
    instance_id = hub.schedule_new_orchestration(fn.parent, input=2, instance_id=new_id("purge-tree"))
    assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    child_id = f"{instance_id}-child"
    assert hub.get_orchestration_state(child_id) is not None
    result = hub.purge_orchestration(instance_id, recursive=True)
    assert result.deleted_instance_count == 3
    assert hub.get_orchestration_state(instance_id) is None
    assert hub.get_orchestration_state(child_id) is None


def test_purge_by_filter(hub: TaskHubGrpcClient) -> None:
    since = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    finished = [hub.schedule_new_orchestration(fn.chain, input=[str(i)]) for i in range(3)]
    for instance_id in finished:
        assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    running = hub.schedule_new_orchestration(fn.wait_named, input="never")
    assert hub.wait_for_orchestration_start(running, timeout=30) is not None
    result = hub.purge_orchestrations_by(created_time_from=since, runtime_status=[OrchestrationStatus.COMPLETED])
    assert result.deleted_instance_count == 3
    assert all(hub.get_orchestration_state(i) is None for i in finished)
    assert hub.get_orchestration_state(running) is not None
    hub.terminate_orchestration(running)
    assert completed(hub, running).runtime_status == OrchestrationStatus.TERMINATED


def test_query_with_filters_and_paging(hub: TaskHubGrpcClient) -> None:
    prefix = new_id("query") + "-"
    ids = [hub.schedule_new_orchestration(fn.chain, input=[str(i)], instance_id=f"{prefix}{i}") for i in range(5)]
    for instance_id in ids:
        assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    waiting = hub.schedule_new_orchestration(fn.wait_named, input="never", instance_id=f"{prefix}waiting")
    assert hub.wait_for_orchestration_start(waiting, timeout=30) is not None

    paged = hub.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=prefix, max_instance_count=2, fetch_inputs_and_outputs=True)
    )
    assert sorted(s.instance_id for s in paged) == sorted([*ids, waiting])
    by_id = {s.instance_id: s for s in paged}
    assert by_id[ids[3]].get_input() == ["3"] and by_id[ids[3]].get_output() == ["Hello, 3!"]

    running = hub.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=prefix, runtime_status=[OrchestrationStatus.RUNNING])
    )
    assert [s.instance_id for s in running] == [waiting]
    assert running[0].serialized_input is None

    done = hub.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=prefix, runtime_status=[OrchestrationStatus.COMPLETED], max_instance_count=3)
    )
    assert sorted(s.instance_id for s in done) == sorted(ids)

    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert hub.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=prefix, created_time_from=future)) == []
    hub.terminate_orchestration(waiting)
    assert completed(hub, waiting).runtime_status == OrchestrationStatus.TERMINATED


def test_list_instance_ids_pages(hub: TaskHubGrpcClient) -> None:
    since = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    ids = [hub.schedule_new_orchestration(fn.chain, input=[str(i)]) for i in range(5)]
    for instance_id in ids:
        assert completed(hub, instance_id).runtime_status == OrchestrationStatus.COMPLETED
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = hub.list_instance_ids(
            runtime_status=[OrchestrationStatus.COMPLETED],
            completed_time_from=since,
            page_size=2,
            continuation_token=token,
        )
        pages += 1
        assert len(page.items) <= 2
        seen.extend(page.items)
        token = page.continuation_token
        if token is None or pages > 20:
            break
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert pages >= 3
