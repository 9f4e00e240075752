"""rewind_orchestration end to end: a failed instance back to its last good state, through the real sidecar."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from conftest import InProcessSidecar, RawWorker, kinds

from durabletask import history, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import TaskHubGrpcWorker
from sidecar.server import SidecarServer

WAIT = 30

calls: Counter[str] = Counter()
fixed = threading.Event()  # while clear, ``flaky`` fails
release = threading.Event()  # ``slow`` blocks until set


def step(ctx: task.ActivityContext, x: int) -> int:
    calls["step"] += 1
    return x


def flaky(ctx: task.ActivityContext, x: int) -> int:
    calls["flaky"] += 1
    if not fixed.is_set():
        raise RuntimeError("flaky is broken")
    return x * 10


def slow(ctx: task.ActivityContext, x: int) -> int:
    calls["slow"] += 1
    release.wait(WAIT)
    return x


def gate(ctx: task.ActivityContext, x: int) -> int:
    """Fails while ``fixed`` is clear; once fixed, it waits for ``release``."""
    calls["gate"] += 1
    if not fixed.is_set():
        raise RuntimeError("gate is broken")
    release.wait(WAIT)
    return x


def chain(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(flaky, input=2)
    c = yield ctx.call_activity(step, input=3)
    return [a, b, c]


def child(ctx: task.OrchestrationContext, x: int) -> Any:
    a = yield ctx.call_activity(step, input=x)
    b = yield ctx.call_activity(flaky, input=x)
    return a + b


def parent(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_sub_orchestrator(child, input=2, instance_id=f"{ctx.instance_id}-kid")
    return [a, b]


def grandparent(ctx: task.OrchestrationContext, _: Any) -> Any:
    r = yield ctx.call_sub_orchestrator(parent, instance_id=f"{ctx.instance_id}-p")
    return r


RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=50), max_number_of_attempts=2)


def retried(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(flaky, input=2, retry_policy=RETRY)
    return [a, b]


def racing(ctx: task.OrchestrationContext, _: Any) -> Any:
    long_one = ctx.call_activity(slow, input=5)
    quick = ctx.call_activity(flaky, input=1)
    winner = yield task.when_any([long_one, quick])
    if winner is quick:
        quick.get_result()  # raises while flaky is broken, with ``slow`` still running
    r = yield long_one
    q = yield quick
    return [r, q]


def gated(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(gate, input=2)
    return [a, b]


def timeout_race(ctx: task.OrchestrationContext, _: Any) -> Any:
    timer = ctx.create_timer(timedelta(seconds=1))
    work = ctx.call_activity(gate, input=1)
    winner = yield task.when_any([timer, work])
    if winner is work:
        return work.get_result()  # raises while flaky is broken, with the timer pending
    return "timed out"


@pytest.fixture(autouse=True)
def reset_switches() -> Iterator[None]:
    calls.clear()
    fixed.clear()
    release.clear()
    yield
    release.set()


def make_worker(address: str) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=address)
    for orchestrator in (chain, child, parent, grandparent, retried, racing, gated, timeout_race):
        worker.add_orchestrator(orchestrator)
    for activity in (step, flaky, slow, gate):
        worker.add_activity(activity)
    return worker


@pytest.fixture
def env(sidecar: InProcessSidecar) -> Iterator[TaskHubGrpcClient]:
    with make_worker(sidecar.address) as worker:
        worker.start()
        client = TaskHubGrpcClient(host_address=sidecar.address)
        try:
            yield client
        finally:
            release.set()  # let blocked activities finish before the worker stops
            client.close()


def run_until_failed(client: TaskHubGrpcClient, orchestrator: Any, instance_id: str) -> None:
    client.schedule_new_orchestration(orchestrator, instance_id=instance_id)
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED, state


def rewind_and_wait(client: TaskHubGrpcClient, instance_id: str, reason: str | None = "fixed") -> Any:
    client.rewind_orchestration(instance_id, reason=reason)
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    assert state.runtime_status is OrchestrationStatus.COMPLETED, state.failure_details
    assert state.failure_details is None
    return state.get_output()


def test_rewind_keeps_successful_results_and_reruns_the_failed_activity(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, chain, "r-chain")
    assert calls == {"step": 1, "flaky": 1}
    fixed.set()
    assert rewind_and_wait(env, "r-chain", reason="deployed the fix") == [1, 20, 3]
    assert calls == {"step": 2, "flaky": 2}  # step(1) was not run again; step(3) ran for the first time
    events = env.get_orchestration_history("r-chain")
    [rewound] = [e for e in events if isinstance(e, history.ExecutionRewoundEvent)]
    assert rewound.reason == "deployed the fix"
    assert not any(isinstance(e, history.TaskFailedEvent) for e in events)


@pytest.mark.our_sidecar('the official test backend keeps completed_at and the failure details on a rewound, running instance')
def test_the_instance_is_running_again_once_the_rewind_is_accepted(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, gated, "r-state")
    before = env.get_orchestration_state("r-state")
    assert before is not None and before.failure_details is not None and before.completed_at is not None
    fixed.set()  # the gate now holds the re-run activity until released
    env.rewind_orchestration("r-state")
    state = env.get_orchestration_state("r-state")
    assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING
    assert state.failure_details is None and state.completed_at is None
    with pytest.raises(TimeoutError):
        env.wait_for_orchestration_completion("r-state", timeout=0.5)
    release.set()
    assert rewind_output(env, "r-state") == [1, 2]


def rewind_output(client: TaskHubGrpcClient, instance_id: str) -> Any:
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state
    return state.get_output()


def test_failed_sub_orchestrations_are_rewound_recursively(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, grandparent, "r-gp")
    for iid in ("r-gp-p", "r-gp-p-kid"):
        state = env.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
    assert calls == {"step": 2, "flaky": 1}
    fixed.set()
    assert rewind_and_wait(env, "r-gp") == [1, 22]
    assert calls == {"step": 2, "flaky": 2}  # only the failed activity ran again, in the same grandchild
    for iid in ("r-gp-p", "r-gp-p-kid"):
        state = env.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    kid_history = env.get_orchestration_history("r-gp-p-kid")
    assert any(isinstance(e, history.ExecutionRewoundEvent) for e in kid_history)


@pytest.mark.our_sidecar('the official test backend records no parent for a child (parent_instance_id is None)')
def test_a_purged_child_is_run_again_from_the_start(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, parent, "r-purged")
    assert env.purge_orchestration("r-purged-kid", recursive=False).deleted_instance_count == 1
    assert env.get_orchestration_state("r-purged-kid") is None
    fixed.set()
    assert rewind_and_wait(env, "r-purged") == [1, 22]
    assert calls == {"step": 3, "flaky": 2}  # the child's step ran again: it started over
    kid = env.get_orchestration_state("r-purged-kid")
    assert kid is not None and kid.runtime_status is OrchestrationStatus.COMPLETED and kid.get_input() == 2
    assert kid.parent_instance_id == "r-purged"


def test_a_call_whose_retries_were_exhausted_gets_its_attempts_again(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, retried, "r-retry")
    assert calls == {"step": 1, "flaky": 2}
    fixed.set()
    assert rewind_and_wait(env, "r-retry") == [1, 20]
    assert calls == {"step": 1, "flaky": 3}


@pytest.mark.our_sidecar('the official test backend does not dispatch again work that was in flight when the instance failed')
def test_work_in_flight_when_the_instance_failed_is_dispatched_again(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, racing, "r-race")
    release.set()  # the first ``slow`` now finishes, but its instance had failed: its result is dropped
    fixed.set()
    assert rewind_and_wait(env, "r-race") == [5, 10]
    assert calls["slow"] == 2


def test_a_timer_pending_when_the_instance_failed_is_armed_again(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, timeout_race, "r-timer")
    events = env.get_orchestration_history("r-timer")
    assert any(isinstance(e, history.TimerCreatedEvent) for e in events)
    assert not any(isinstance(e, history.TimerFiredEvent) for e in events)
    fixed.set()  # the re-run activity now blocks, so only the re-armed timer can end the race
    env.rewind_orchestration("r-timer")
    assert rewind_output(env, "r-timer") == "timed out"
    assert calls["gate"] == 2


def test_rewind_can_be_repeated_until_the_instance_succeeds(env: TaskHubGrpcClient) -> None:
    run_until_failed(env, chain, "r-again")
    env.rewind_orchestration("r-again")
    state = env.wait_for_orchestration_completion("r-again", timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
    assert calls == {"step": 1, "flaky": 2}
    fixed.set()
    assert rewind_and_wait(env, "r-again") == [1, 20, 3]


def expect_error(call: Any, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code  # type: ignore[attr-defined]
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()  # type: ignore[attr-defined]


@pytest.mark.our_sidecar("status messages of this repository's sidecar")
def test_rewinding_a_completed_running_or_unknown_instance_is_refused_and_changes_nothing(
    env: TaskHubGrpcClient,
) -> None:
    fixed.set()
    env.schedule_new_orchestration(chain, instance_id="r-done")
    env.wait_for_orchestration_completion("r-done", timeout=WAIT)
    before = env.get_orchestration_state("r-done")
    expect_error(lambda: env.rewind_orchestration("r-done"), grpc.StatusCode.FAILED_PRECONDITION,
                 "r-done", "COMPLETED", "only a FAILED instance")
    after = env.get_orchestration_state("r-done")
    assert after == before

    release.clear()
    env.schedule_new_orchestration(racing, instance_id="r-busy")
    env.wait_for_orchestration_start("r-busy", timeout=WAIT)
    expect_error(lambda: env.rewind_orchestration("r-busy"), grpc.StatusCode.FAILED_PRECONDITION, "r-busy")
    release.set()
    assert env.wait_for_orchestration_completion("r-busy", timeout=WAIT).runtime_status is OrchestrationStatus.COMPLETED

    expect_error(lambda: env.rewind_orchestration("r-ghost"), grpc.StatusCode.NOT_FOUND, "r-ghost")
    expect_error(lambda: env.rewind_orchestration(""), grpc.StatusCode.INVALID_ARGUMENT, "instanceId")
    assert env.get_orchestration_state("r-ghost") is None


@pytest.mark.our_sidecar("status messages of this repository's sidecar")
def test_terminated_instances_cannot_be_rewound(env: TaskHubGrpcClient) -> None:
    fixed.set()
    env.schedule_new_orchestration(racing, instance_id="r-term")
    env.wait_for_orchestration_start("r-term", timeout=WAIT)
    env.terminate_orchestration("r-term")
    env.wait_for_orchestration_completion("r-term", timeout=WAIT)
    expect_error(lambda: env.rewind_orchestration("r-term"), grpc.StatusCode.FAILED_PRECONDITION, "TERMINATED")


def test_a_rewind_accepted_before_a_restart_of_the_sidecar_still_happens(tmp_path: Any) -> None:
    db = tmp_path / "rewind.db"
    server = SidecarServer(str(db), host="localhost")
    port = server.start(0)
    address = f"localhost:{port}"
    try:
        with make_worker(address) as worker:
            worker.start()
            with TaskHubGrpcClient(host_address=address) as client:
                run_until_failed(client, chain, "r-durable")
        with TaskHubGrpcClient(host_address=address) as client:
            client.rewind_orchestration("r-durable")  # no worker is connected now
    finally:
        server.stop()
    fixed.set()
    server = SidecarServer(str(db), host="localhost")
    port = server.start(0)
    address = f"localhost:{port}"
    try:
        with make_worker(address) as worker, TaskHubGrpcClient(host_address=address) as client:
            worker.start()
            state = client.wait_for_orchestration_completion("r-durable", timeout=WAIT)
            assert state is not None and state.get_output() == [1, 20, 3]
    finally:
        server.stop()


# --- the protocol, with a hand-written worker -----------------------------------------------------


def start_failed_instance(worker: RawWorker, instance_id: str) -> None:
    stub = worker.stub
    stub.StartInstance(pb.CreateInstanceRequest(instanceId=instance_id, name="o"))
    item = worker.next("orchestratorRequest")
    failed = pb.OrchestratorAction(id=1)
    failed.completeOrchestration.orchestrationStatus = pb.ORCHESTRATION_STATUS_FAILED
    failed.completeOrchestration.failureDetails.errorMessage = "broken"
    worker.complete(item, failed)


def test_the_rewind_request_arrives_alone_and_later_events_wait(sidecar: InProcessSidecar) -> None:
    worker = RawWorker(sidecar.address)
    try:
        start_failed_instance(worker, "raw-1")
        stub = worker.stub
        stub.RewindInstance(pb.RewindInstanceRequest(instanceId="raw-1"))
        stub.RaiseEvent(pb.RaiseEventRequest(instanceId="raw-1", name="later"))
        item = worker.next("orchestratorRequest")
        request = item.orchestratorRequest
        assert kinds(request.newEvents) == ["orchestratorStarted", "executionRewound"]
        assert "executionCompleted" in kinds(request.pastEvents)

        ignored = pb.OrchestratorAction(id=1)
        ignored.createTimer.fireAt.GetCurrentTime()
        with pytest.raises(grpc.RpcError) as info:
            worker.complete(item, ignored)  # ordinary actions do not answer a rewind request
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "rewindOrchestration" in info.value.details()  # type: ignore[attr-defined]

        item = worker.next("orchestratorRequest", timeout=10)  # offered again after a short back-off
        past = [e for e in item.orchestratorRequest.pastEvents if not e.HasField("executionCompleted")]
        rewrite = pb.OrchestratorAction(id=-1)
        rewrite.rewindOrchestration.newHistory.extend([*past, *item.orchestratorRequest.newEvents])
        worker.complete(item, rewrite)

        replay = worker.next("orchestratorRequest")
        assert kinds(replay.orchestratorRequest.newEvents) == ["orchestratorStarted", "eventRaised"]
        assert "executionRewound" in kinds(replay.orchestratorRequest.pastEvents)
        state = stub.GetInstance(pb.GetInstanceRequest(instanceId="raw-1")).orchestrationState
        assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
    finally:
        worker.close()


def test_a_rewind_answer_nobody_asked_for_is_rejected(sidecar: InProcessSidecar) -> None:
    worker = RawWorker(sidecar.address)
    try:
        worker.stub.StartInstance(pb.CreateInstanceRequest(instanceId="raw-2", name="o"))
        item = worker.next("orchestratorRequest")
        rewrite = pb.OrchestratorAction(id=-1)
        rewrite.rewindOrchestration.newHistory.extend(item.orchestratorRequest.newEvents)
        with pytest.raises(grpc.RpcError) as info:
            worker.complete(item, rewrite)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "not asked to rewind" in info.value.details()  # type: ignore[attr-defined]
    finally:
        worker.close()
