"""Mixed SDKs on one of our sidecars (a subprocess on a SQLite file).

First the official client (Microsoft's ``durabletask``, driven in another process by
``compat/official_driver.py``) starts orchestrations that OUR worker runs; then OUR client starts
orchestrations that the official worker runs (the functions of ``compat/scenarios/compat_functions.py``).
Only one of the two workers is connected at a time, so every work item reaches the worker that has
its function. Runs under ``make compat`` (it needs ``DURABLETASK_COMPAT_PYTHON``).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import uuid
from collections.abc import Generator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from tests.e2e.conftest import REPO_ROOT, SidecarProcess, SidecarProcessFactory, compat_python, free_port

pytestmark = [pytest.mark.compat, pytest.mark.our_sidecar("runs our sidecar as a process next to the official SDK")]

DRIVER = REPO_ROOT / "compat" / "official_driver.py"
WAIT = 30.0


class OfficialDriver:
    """The official client (and optionally worker) in a compat-interpreter process, over JSON lines."""

    def __init__(self, python: str, address: str, log_path: Path, *, worker: bool) -> None:
        self.log_path = log_path
        log = log_path.open("w")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(
            [python, "-P", str(DRIVER), "--address", address, *(["--worker"] if worker else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=str(REPO_ROOT / "compat"),
            env=env,
        )
        log.close()
        self._replies: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        assert self._read(60.0) == {"ready": True}

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._replies.put(line)
        self._replies.put(None)

    def _read(self, timeout: float) -> Any:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"official driver silent for {timeout}s:\n{self.log_tail()}") from None
        if line is None:
            raise AssertionError(f"official driver exited ({self.proc.wait()}):\n{self.log_tail()}")
        return json.loads(line)

    def call(self, op: str, timeout: float = WAIT + 30, **fields: Any) -> Any:
        """Runs one command with the official client; returns its result or fails with its error."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        assert reply["ok"], f"official client: {op} failed: {reply['error']}"
        return reply["result"]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def close(self) -> None:
        """Closes its standard input (it stops its client and worker and exits); kills it if it hangs."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def hub_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """One of our sidecars as a subprocess on a SQLite file, shared by the whole module."""
    tmp = tmp_path_factory.mktemp("mixed")
    factory = SidecarProcessFactory(tmp)
    try:
        yield factory.start(tmp / "mixed.db", free_port())
    finally:
        factory.stop_all()


def _driver(tmp_path_factory: pytest.TempPathFactory, address: str, *, worker: bool) -> OfficialDriver:
    python = compat_python()
    assert python is not None
    log = tmp_path_factory.mktemp("driver") / "official.log"
    return OfficialDriver(python, address, log, worker=worker)


# ---------------------------------------------------------------- our functions (run by our worker)


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def explode(ctx: task.ActivityContext, key: str) -> None:
    raise KeyError(f"no such key {key}")


_flaky_attempts: dict[str, int] = {}
_flaky_lock = threading.Lock()


def flaky(ctx: task.ActivityContext, key: str) -> int:
    """Fails twice per key, then returns the attempt that succeeded."""
    with _flaky_lock:
        _flaky_attempts[key] = _flaky_attempts.get(key, 0) + 1
        attempt = _flaky_attempts[key]
    if attempt < 3:
        raise RuntimeError(f"transient {attempt}")
    return attempt


Gen = Generator[task.Task[Any], Any, Any]


def ours_chain(ctx: task.OrchestrationContext, names: list[str]) -> Gen:
    results = []
    for name in names:
        results.append((yield ctx.call_activity(greet, input=name)))
    return results


def ours_fan_out(ctx: task.OrchestrationContext, names: list[str]) -> Gen:
    return (yield task.when_all([ctx.call_activity(greet, input=n) for n in names]))


def ours_timer(ctx: task.OrchestrationContext, seconds: float) -> Gen:
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


def ours_events(ctx: task.OrchestrationContext, _: Any) -> Gen:
    first = yield ctx.wait_for_external_event("first")
    second = yield ctx.wait_for_external_event("second")
    return {"first": first, "second": second}


def ours_parent(ctx: task.OrchestrationContext, names: list[str]) -> Gen:
    greetings = yield ctx.call_sub_orchestrator(ours_chain, input=names, instance_id=f"{ctx.instance_id}-child")
    parent_seen = yield ctx.call_sub_orchestrator(ours_child_reports_parent)
    return {"greetings": greetings, "parent_seen": parent_seen}


def ours_child_reports_parent(ctx: task.OrchestrationContext, _: Any) -> str | None:
    return ctx.parent_instance_id


def ours_failing(ctx: task.OrchestrationContext, message: str) -> None:
    raise ValueError(message)


def ours_catches(ctx: task.OrchestrationContext, key: str) -> Gen:
    try:
        yield ctx.call_activity(explode, input=key)
    except task.TaskFailedError as err:
        return {"message": err.details.message, "error_type": err.details.error_type}
    return None


def ours_retry(ctx: task.OrchestrationContext, key: str) -> Gen:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=4)
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


def ours_status(ctx: task.OrchestrationContext, _: Any) -> Gen:
    ctx.set_custom_status({"stage": "waiting"})
    value = yield ctx.wait_for_external_event("go")
    ctx.set_custom_status("done")
    return value


OURS = [
    ours_chain,
    ours_fan_out,
    ours_timer,
    ours_events,
    ours_parent,
    ours_child_reports_parent,
    ours_failing,
    ours_catches,
    ours_retry,
    ours_status,
]


@pytest.fixture(scope="class")
def official(hub_sidecar: SidecarProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfficialDriver]:
    """Our worker with the functions above, and the official client (for one test class)."""
    worker = TaskHubGrpcWorker(host_address=hub_sidecar.address)
    for orchestrator in OURS:
        worker.add_orchestrator(orchestrator)
    for activity in (greet, explode, flaky):
        worker.add_activity(activity)
    worker.start()
    driver = _driver(tmp_path_factory, hub_sidecar.address, worker=False)
    try:
        yield driver
    finally:
        driver.close()
        worker.stop()


@pytest.fixture(scope="class")
def client(hub_sidecar: SidecarProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskHubGrpcClient]:
    """The official worker (in the driver process) and our client (for one test class)."""
    driver = _driver(tmp_path_factory, hub_sidecar.address, worker=True)
    try:
        with TaskHubGrpcClient(host_address=hub_sidecar.address) as c:
            yield c
    finally:
        driver.close()


class TestOfficialClientOurWorker:
    """The official client starts, signals and reads orchestrations; our worker runs them."""

    def run(self, official: OfficialDriver, name: str, data: Any = None, **fields: Any) -> dict[str, Any]:
        instance_id = official.call("schedule", name=name, input=data, **fields)
        state = official.call("wait", instance_id=instance_id, timeout=WAIT)
        assert state is not None and state["instance_id"] == instance_id and state["name"] == name
        return state

    def test_activities(self, official: OfficialDriver) -> None:
        state = self.run(official, "ours_chain", ["Tokyo", "Lima"], instance_id=new_id("mixed-chain"))
        assert state["status"] == "COMPLETED"
        assert state["output"] == ["Hello, Tokyo!", "Hello, Lima!"]
        assert state["input"] == ["Tokyo", "Lima"]
        assert json.loads(state["serialized_output"]) == state["output"]
        fanned = self.run(official, "ours_fan_out", [str(i) for i in range(10)])
        assert fanned["output"] == [f"Hello, {i}!" for i in range(10)]

    def test_timer(self, official: OfficialDriver) -> None:
        state = self.run(official, "ours_timer", 0.5)
        assert state["status"] == "COMPLETED" and state["output"] >= 0.5
        history = official.call("history", instance_id=state["instance_id"])
        assert history.count("TimerCreatedEvent") == 1 and history.count("TimerFiredEvent") == 1

    def test_events_buffered_and_awaited(self, official: OfficialDriver) -> None:
        instance_id = official.call("schedule", name="ours_events")
        official.call("raise", instance_id=instance_id, name="second", data={"n": 2})
        assert official.call("wait_start", instance_id=instance_id, timeout=WAIT)["status"] == "RUNNING"
        official.call("raise", instance_id=instance_id, name="first", data=[1])
        state = official.call("wait", instance_id=instance_id, timeout=WAIT)
        assert state["status"] == "COMPLETED"
        assert state["output"] == {"first": [1], "second": {"n": 2}}

    def test_sub_orchestrations(self, official: OfficialDriver) -> None:
        instance_id = new_id("mixed-parent")
        state = self.run(official, "ours_parent", ["Ada"], instance_id=instance_id)
        assert state["status"] == "COMPLETED"
        assert state["output"] == {"greetings": ["Hello, Ada!"], "parent_seen": instance_id}
        child = official.call("get", instance_id=f"{instance_id}-child")
        assert child["status"] == "COMPLETED" and child["output"] == ["Hello, Ada!"]

    def test_failure_details(self, official: OfficialDriver) -> None:
        state = self.run(official, "ours_failing", "it broke")
        assert state["status"] == "FAILED"
        failure = state["failure"]
        assert failure is not None and "it broke" in failure["message"]
        assert failure["error_type"].endswith("ValueError")
        caught = self.run(official, "ours_catches", "k1")
        assert caught["status"] == "COMPLETED"
        assert "no such key k1" in caught["output"]["message"]
        assert caught["output"]["error_type"].endswith("KeyError")

    def test_retry(self, official: OfficialDriver) -> None:
        state = self.run(official, "ours_retry", new_id("retry"))
        assert state["status"] == "COMPLETED" and state["output"] == 3

    def test_custom_status(self, official: OfficialDriver) -> None:
        instance_id = official.call("schedule", name="ours_status")
        assert official.call("wait_start", instance_id=instance_id, timeout=WAIT) is not None
        pause = threading.Event()
        for _ in range(200):
            if official.call("get", instance_id=instance_id)["custom_status"] == {"stage": "waiting"}:
                break
            pause.wait(0.05)
        else:
            raise AssertionError("the first custom status never showed")
        official.call("raise", instance_id=instance_id, name="go", data="went")
        state = official.call("wait", instance_id=instance_id, timeout=WAIT)
        assert state["output"] == "went" and state["custom_status"] == "done"


class TestOurClientOfficialWorker:
    """Our client starts, signals and reads orchestrations; the official worker runs them."""

    @staticmethod
    def run(client: TaskHubGrpcClient, name: str, data: Any = None) -> Any:
        instance_id = client.schedule_new_orchestration(name, input=data, instance_id=new_id(name))
        state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
        assert state is not None and state.name == name
        return state

    def test_activities(self, client: TaskHubGrpcClient) -> None:
        state = self.run(client, "chain", ["Oslo", "Quito"])
        assert state.runtime_status is OrchestrationStatus.COMPLETED
        assert state.get_output() == ["Hello, Oslo!", "Hello, Quito!"]
        assert self.run(client, "fan_out", 12).get_output() == sum(i * i for i in range(1, 13))

    def test_timer(self, client: TaskHubGrpcClient) -> None:
        state = self.run(client, "timer_wait", 0.5)
        assert state.runtime_status is OrchestrationStatus.COMPLETED and state.get_output() >= 0.5

    def test_events(self, client: TaskHubGrpcClient) -> None:
        instance_id = client.schedule_new_orchestration("two_events", instance_id=new_id("two-events"))
        client.raise_orchestration_event(instance_id, "second", data="b")
        assert client.wait_for_orchestration_start(instance_id, timeout=WAIT) is not None
        client.raise_orchestration_event(instance_id, "first", data="a")
        state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
        assert state is not None and state.get_output() == ["a", "b"]
        raced = client.schedule_new_orchestration("event_or_timeout", input=30, instance_id=new_id("race"))
        client.raise_orchestration_event(raced, "approval", data="Jane")
        done = client.wait_for_orchestration_completion(raced, timeout=WAIT)
        assert done is not None and done.get_output() == "approved by Jane"
        assert self.run(client, "event_or_timeout", 0.3).get_output() == "timed out"

    def test_sub_orchestrations(self, client: TaskHubGrpcClient) -> None:
        state = self.run(client, "parent", 3)
        assert state.get_output() == {"total": 14, "greetings": ["Hello, Ada!"]}
        child = client.get_orchestration_state(f"{state.instance_id}-child")
        assert child is not None and child.runtime_status is OrchestrationStatus.COMPLETED
        reporter = self.run(client, "parent_of_reporter")
        assert reporter.get_output() == reporter.instance_id

    def test_failure_details(self, client: TaskHubGrpcClient) -> None:
        state = self.run(client, "failing", "it broke")
        assert state.runtime_status is OrchestrationStatus.FAILED
        assert state.failure_details is not None and "it broke" in state.failure_details.message
        assert state.failure_details.error_type.endswith("ValueError")
        assert self.run(client, "parent_of_failing", "deep").get_output() == "child failed: deep"
        caught = self.run(client, "catch_activity_failure", "key-1").get_output()
        assert "boom key-1" in caught["message"] and caught["error_type"].endswith("ValueError")

    def test_retry_and_continue_as_new(self, client: TaskHubGrpcClient) -> None:
        assert self.run(client, "retry_activity", new_id("flaky")).get_output() == 3
        assert self.run(client, "counter", 0).get_output() == 5

    def test_custom_status(self, client: TaskHubGrpcClient) -> None:
        instance_id = client.schedule_new_orchestration("with_status", instance_id=new_id("status"))
        pause = threading.Event()
        for _ in range(200):
            state = client.get_orchestration_state(instance_id)
            if state is not None and state.get_custom_status() == {"stage": "waiting"}:
                break
            pause.wait(0.05)
        else:
            raise AssertionError("the first custom status never showed")
        client.raise_orchestration_event(instance_id, "go", data=7)
        done = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
        assert done is not None and done.get_output() == 7 and done.get_custom_status() == "done"
