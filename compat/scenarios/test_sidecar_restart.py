"""The official worker and client carry on after our sidecar is killed (SIGKILL) and restarted.

The sidecar comes back on the same port and SQLite file; the official worker reconnects with its
default back-off and every instance finishes: events raised after the restart are delivered, timers
armed before the crash fire, and new instances run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import compat_functions as fn
import grpc
import pytest
from compat_sidecar import OurSidecar
from compat_support import completed, new_id, wait_for_status, wait_until

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

RECONNECT_TIMEOUT = 60.0


@pytest.fixture
def crashable(private_sidecar: Callable[..., OurSidecar]) -> Iterator[tuple[OurSidecar, TaskHubGrpcWorker, TaskHubGrpcClient]]:
    """A sidecar of its own, an official worker with default options and an official client on it."""
    sidecar = private_sidecar("crash.db")
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    fn.register(worker)
    worker.start()
    client = TaskHubGrpcClient(host_address=sidecar.address)
    try:
        yield sidecar, worker, client
    finally:
        client.close()
        worker.stop()


def _retry_unavailable(call: Callable[[], object], what: str) -> None:
    """Runs ``call`` until the restarted sidecar answers it (the channel may still be reconnecting)."""

    def attempt() -> bool:
        try:
            call()
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                return False
            raise
        return True

    wait_until(attempt, what, timeout=RECONNECT_TIMEOUT)


def test_worker_reconnects_after_kill_and_restart(
    crashable: tuple[OurSidecar, TaskHubGrpcWorker, TaskHubGrpcClient],
    private_sidecar: Callable[..., OurSidecar],
) -> None:
    sidecar, _, client = crashable
    waiting = [
        client.schedule_new_orchestration(fn.wait_named, input="go", instance_id=new_id("crash-wait"))
        for _ in range(4)
    ]
    sleeper = client.schedule_new_orchestration(fn.timer_wait, input=3.0, instance_id=new_id("crash-timer"))
    for instance_id in [*waiting, sleeper]:
        wait_for_status(client, instance_id, OrchestrationStatus.RUNNING)
    finished = client.schedule_new_orchestration(fn.chain, input=["before"], instance_id=new_id("crash-done"))
    assert completed(client, finished).get_output() == ["Hello, before!"]

    port = sidecar.port
    sidecar.kill()
    restarted = private_sidecar("crash.db", port=port)
    assert restarted.port == port

    for n, instance_id in enumerate(waiting):
        _retry_unavailable(
            lambda iid=instance_id, n=n: client.raise_orchestration_event(iid, "go", data=n),  # type: ignore[misc]
            f"raising 'go' on {instance_id} after the restart",
        )
    after = client.schedule_new_orchestration(fn.chain, input=["after"], instance_id=new_id("crash-new"))

    for n, instance_id in enumerate(waiting):
        state = completed(client, instance_id, timeout=RECONNECT_TIMEOUT)
        assert state.runtime_status == OrchestrationStatus.COMPLETED and state.get_output() == n
    timer_state = completed(client, sleeper, timeout=RECONNECT_TIMEOUT)
    assert timer_state.runtime_status == OrchestrationStatus.COMPLETED and timer_state.get_output() >= 3.0
    assert completed(client, after, timeout=RECONNECT_TIMEOUT).get_output() == ["Hello, after!"]
    assert completed(client, finished).get_output() == ["Hello, before!"]
