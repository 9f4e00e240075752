"""restart_orchestration end to end: same or new ID, what a restart keeps, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import InProcessSidecar

from durabletask import history, task
from durabletask.client import OrchestrationState, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

WAIT = 30
runs: list[tuple[str, Any, str | None]] = []


def record(ctx: task.ActivityContext, what: Any) -> Any:
    return what


def job(ctx: task.OrchestrationContext, data: Any) -> Any:
    if not ctx.is_replaying:
        runs.append((ctx.instance_id, data, ctx.version))
    echoed = yield ctx.call_activity(record, input=data)
    if data == "fail":
        raise ValueError("asked to fail")
    return {"input": echoed, "version": ctx.version}


def held(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.wait_for_external_event("go")
    return "released"


@pytest.fixture
def client(sidecar: InProcessSidecar) -> Iterator[TaskHubGrpcClient]:
    runs.clear()
    with TaskHubGrpcWorker(host_address=sidecar.address) as worker:
        worker.add_orchestrator(job)
        worker.add_orchestrator(held)
        worker.add_activity(record)
        worker.start()
        with TaskHubGrpcClient(host_address=sidecar.address) as c:
            yield c


def finished(client: TaskHubGrpcClient, instance_id: str) -> OrchestrationState:
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    return state


def refused(call: Any, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code  # type: ignore[attr-defined]
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()  # type: ignore[attr-defined]


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_restart_with_the_same_id_runs_again_with_name_input_version_and_tags(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(job, input={"n": 1}, instance_id="rs-same", version="1.2",
                                            tags={"team": "red"})
    first = finished(client, iid)
    assert first.get_output() == {"input": {"n": 1}, "version": "1.2"}
    assert client.restart_orchestration(iid) == iid
    second = finished(client, iid)
    assert second.runtime_status is OrchestrationStatus.COMPLETED
    assert (second.name, second.get_input(), second.version, second.tags) == ("job", {"n": 1}, "1.2", {"team": "red"})
    assert second.get_output() == first.get_output()
    assert second.created_at >= first.created_at
    assert runs == [("rs-same", {"n": 1}, "1.2"), ("rs-same", {"n": 1}, "1.2")]
    events = client.get_orchestration_history(iid)
    assert sum(isinstance(e, history.ExecutionStartedEvent) for e in events) == 1  # a fresh history


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_restart_with_a_new_id_leaves_the_original_alone(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(job, input="x", instance_id="rs-new", version="3", tags={"k": "v"})
    original = finished(client, iid)
    new_id = client.restart_orchestration(iid, restart_with_new_instance_id=True)
    assert new_id != iid
    copy = finished(client, new_id)
    assert (copy.name, copy.get_input(), copy.version, copy.tags) == ("job", "x", "3", {"k": "v"})
    assert copy.runtime_status is OrchestrationStatus.COMPLETED
    again = client.get_orchestration_state(iid)
    assert again is not None and again.last_updated_at == original.last_updated_at
    assert again.runtime_status is OrchestrationStatus.COMPLETED


def test_a_failed_instance_restarts_from_the_beginning(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(job, input="fail", instance_id="rs-failed")
    assert finished(client, iid).runtime_status is OrchestrationStatus.FAILED
    client.restart_orchestration(iid)
    state = finished(client, iid)
    assert state.runtime_status is OrchestrationStatus.FAILED  # same input, same outcome: it ran again
    assert [r[0] for r in runs] == ["rs-failed", "rs-failed"]


def test_a_terminated_instance_can_be_restarted(client: TaskHubGrpcClient) -> None:
    iid = client.schedule_new_orchestration(held, instance_id="rs-term")
    client.wait_for_orchestration_start(iid, timeout=WAIT)
    client.terminate_orchestration(iid)
    assert finished(client, iid).runtime_status is OrchestrationStatus.TERMINATED
    client.restart_orchestration(iid)
    client.wait_for_orchestration_start(iid, timeout=WAIT)
    client.raise_orchestration_event(iid, "go")
    state = finished(client, iid)
    assert state.runtime_status is OrchestrationStatus.COMPLETED and state.get_output() == "released"


@pytest.mark.our_sidecar("status messages of this repository's sidecar")
def test_restarting_a_live_instance_under_its_own_id_is_refused_and_changes_nothing(client: TaskHubGrpcClient) -> None:
    # (Under a new instance ID a live instance may be restarted: tests/e2e/test_sidecar_compat_faults.py.)
    iid = client.schedule_new_orchestration(held, instance_id="rs-live")
    client.wait_for_orchestration_start(iid, timeout=WAIT)
    before = client.get_orchestration_state(iid)
    refused(lambda: client.restart_orchestration(iid),
            grpc.StatusCode.FAILED_PRECONDITION, "rs-live", "RUNNING", "has not finished")
    assert client.get_orchestration_state(iid) == before
    client.suspend_orchestration(iid)
    refused(lambda: client.restart_orchestration(iid), grpc.StatusCode.FAILED_PRECONDITION, "SUSPENDED")
    client.resume_orchestration(iid)
    client.raise_orchestration_event(iid, "go")
    assert finished(client, iid).get_output() == "released"
    assert [s.instance_id for s in client.get_all_orchestration_states()] == [iid]  # no copy was made


@pytest.mark.our_sidecar("status codes of this repository's sidecar")
def test_restarting_unknown_or_unnamed_instances(client: TaskHubGrpcClient) -> None:
    refused(lambda: client.restart_orchestration("rs-ghost"), grpc.StatusCode.NOT_FOUND, "rs-ghost")
    refused(lambda: client.restart_orchestration("rs-ghost", restart_with_new_instance_id=True),
            grpc.StatusCode.NOT_FOUND, "rs-ghost")
    refused(lambda: client.restart_orchestration(""), grpc.StatusCode.INVALID_ARGUMENT, "instanceId")
    assert client.get_all_orchestration_states() == []
