"""Long polls on instances that do not exist yet: they wait for them, up to the caller's deadline."""

from __future__ import annotations

import threading

import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def hello(ctx, _):
    return "hi"


def test_wait_for_start_of_an_instance_created_later(sidecar) -> None:
    with TaskHubGrpcWorker(host_address=sidecar.address) as worker, \
            TaskHubGrpcClient(host_address=sidecar.address) as client:
        worker.add_orchestrator(hello)
        worker.start()
        waiting = threading.Event()
        result: dict = {}

        def wait() -> None:
            waiting.set()
            result["state"] = client.wait_for_orchestration_start("later", timeout=30)

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert waiting.wait(5)
        client.schedule_new_orchestration(hello, instance_id="later")
        waiter.join(30)
        assert not waiter.is_alive()
        assert result["state"].instance_id == "later"
        assert result["state"].runtime_status != OrchestrationStatus.PENDING


@pytest.mark.our_sidecar("the official test backend answers a wait on an unknown instance with exists=false at the deadline, not DEADLINE_EXCEEDED")
def test_wait_for_completion_of_an_unknown_instance_times_out(sidecar) -> None:
    with TaskHubGrpcClient(host_address=sidecar.address) as client:
        with pytest.raises(TimeoutError):
            client.wait_for_orchestration_completion("nobody", timeout=0.5)
        assert client.get_orchestration_state("nobody") is None


@pytest.mark.our_sidecar("runs no worker; the official test backend applies terminate only in a worker's turn")
def test_wait_for_completion_sees_an_instance_created_and_terminated_later(sidecar) -> None:
    with TaskHubGrpcClient(host_address=sidecar.address) as client:
        result: dict = {}
        started = threading.Event()

        def wait() -> None:
            started.set()
            result["state"] = client.wait_for_orchestration_completion("late", timeout=30)

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert started.wait(5)
        client.schedule_new_orchestration("nobody_runs_this", instance_id="late")
        client.terminate_orchestration("late", output="stop")
        waiter.join(30)
        assert not waiter.is_alive()
        assert result["state"].runtime_status == OrchestrationStatus.TERMINATED
