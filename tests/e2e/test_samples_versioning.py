"""The versioning sample: v1 and v2 of a workflow in flight at once, each on the worker of its version."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from samples import versioning
from tests.e2e.conftest import InProcessSidecar

pytestmark = pytest.mark.our_sidecar("the official test backend queues an activity without its orchestration's version, so a STRICT worker's version filter never matches it (the official SDK hangs the same way there)")

EXPECTED = {
    "1.0": {"version": "1.0", "greetings": ["Hello, Ada!"]},
    "2.0": {"version": "2.0", "greetings": ["Hello, Ada!", "Goodbye, Ada!"]},
}


class TurnLog(logging.Handler):
    """Collects what a worker logs about its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def start_worker(sidecar: InProcessSidecar) -> Iterator[Callable[[str], tuple[TaskHubGrpcWorker, TurnLog]]]:
    started: list[TaskHubGrpcWorker] = []

    def start(version: str) -> tuple[TaskHubGrpcWorker, TurnLog]:
        log = TurnLog()
        logger = logging.getLogger(f"test-sample-versioning-{version}-{len(started)}")
        logger.setLevel(logging.INFO)
        logger.addHandler(log)
        worker = TaskHubGrpcWorker(host_address=sidecar.address, logger=logger)
        versioning.register(worker, version)
        worker.start()
        started.append(worker)
        return worker, log

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client(sidecar: InProcessSidecar) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=sidecar.address) as c:
        yield c


def test_both_versions_in_flight_at_once_on_two_workers(start_worker, client: TaskHubGrpcClient) -> None:
    logs = [start_worker(v)[1] for v in versioning.VERSIONS]
    assert versioning.run(client) == EXPECTED
    for log in logs:  # the filters routed everything: no worker had to hand a turn back
        assert not any(m.startswith("rejecting a turn") for m in log.messages)


def test_an_instance_waits_for_a_worker_of_its_version(start_worker, client: TaskHubGrpcClient) -> None:
    start_worker("1.0")
    old = client.schedule_new_orchestration(versioning.greeting_workflow, input="Bo", version="1.0")
    new = client.schedule_new_orchestration(versioning.greeting_workflow, input="Bo", version="2.0")
    client.wait_for_orchestration_start(old, timeout=30)
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_start(new, timeout=0.5)
    assert client.get_orchestration_state(new).runtime_status is OrchestrationStatus.PENDING  # type: ignore[union-attr]
    start_worker("2.0")  # the new deployment comes up
    client.wait_for_orchestration_start(new, timeout=30)
    for instance_id in (old, new):
        client.raise_orchestration_event(instance_id, "proceed")
    assert client.wait_for_orchestration_completion(old, timeout=30).get_output()["greetings"] == ["Hello, Bo!"]  # type: ignore[union-attr]
    assert client.wait_for_orchestration_completion(new, timeout=30).get_output()["greetings"] == [  # type: ignore[union-attr]
        "Hello, Bo!", "Goodbye, Bo!"]


def test_the_sample_runs_as_a_script(sidecar: InProcessSidecar) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "samples.versioning", "--address", sidecar.address],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == EXPECTED
