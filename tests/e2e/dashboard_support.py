"""A sidecar serving the dashboard with an access token, a worker and a client on it, and small HTTP helpers,
shared by the dashboard's API, metrics and browser tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from durabletask import entities, task
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from sidecar.security import AccessToken
from sidecar.server import SidecarServer
from tests.e2e.conftest import FAST, test_store_spec

TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 30.0

# Activities that fail until the test lets them pass (for rewind).
_flaky_passes = threading.Event()


def greet(_: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def flaky(_: task.ActivityContext, value: int) -> int:
    if not _flaky_passes.is_set():
        raise ValueError("flaky activity failed on purpose")
    return value * 2


def counter(ctx: entities.EntityContext, value: int | None) -> int:
    """Entity: 'add' adds to its state."""
    current: int = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + (value or 0))
    return current


def greeting(ctx: task.OrchestrationContext, name: str) -> Any:
    """An activity, a short timer and a sub-orchestration: every kind of timeline span."""
    first = yield ctx.call_activity(greet, input=name)
    yield ctx.create_timer(timedelta(milliseconds=50))
    second = yield ctx.call_sub_orchestrator(child, input=name)
    ctx.set_custom_status({"stage": "done"})
    return [first, second]


def child(ctx: task.OrchestrationContext, name: str) -> Any:
    return (yield ctx.call_activity(greet, input=f"child {name}"))


def waiter(ctx: task.OrchestrationContext, _: Any) -> Any:
    """Waits for event 'go' and returns its data."""
    return (yield ctx.wait_for_external_event("go"))


def rewindable(ctx: task.OrchestrationContext, value: int) -> Any:
    return (yield ctx.call_activity(flaky, input=value))


def let_flaky_pass() -> None:
    """From now on the flaky activity succeeds."""
    _flaky_passes.set()


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Check ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        pause.wait(0.05)


@dataclass
class DashboardEnv:
    """The sidecar (with its dashboard), the dashboard's base URL, and a client that has the token."""

    server: SidecarServer
    url: str
    client: TaskHubGrpcClient
    worker: TaskHubGrpcWorker


@contextmanager
def dashboard_env(*, schedules: bool = False) -> Iterator[DashboardEnv]:
    """An in-process sidecar requiring TOKEN, with its dashboard on a free port, a worker and a client."""
    server = SidecarServer(
        test_store_spec(), host="localhost", dispatch_options=FAST, token=AccessToken(TOKEN), dashboard_port=0
    )
    server.start(0)
    address = f"localhost:{server.port}"
    metadata = [("authorization", f"Bearer {TOKEN}")]
    worker = TaskHubGrpcWorker(host_address=address, metadata=metadata)
    for orchestrator in (greeting, child, waiter, rewindable):
        worker.add_orchestrator(orchestrator)
    worker.add_activity(greet)
    worker.add_activity(flaky)
    worker.add_entity(counter)
    if schedules:
        worker.configure_scheduled_tasks()
    worker.use_work_item_filters()  # the names registered: the dashboard lists them
    worker.start()
    wait_until(lambda: server.dispatcher.open_streams() >= 1)
    client = TaskHubGrpcClient(host_address=address, metadata=metadata)
    assert server.dashboard is not None
    try:
        yield DashboardEnv(server, server.dashboard.url, client, worker)
    finally:
        client.close()
        worker.stop()
        server.stop(grace=0.2)


@dataclass
class Answer:
    """An HTTP response: status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: Any = None,
) -> Answer:
    """One HTTP request (no redirects followed); error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = _opener if context is None else urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers.items()), error.read())


def get_json(base: str, path: str) -> Answer:
    """GET ``base + path`` with the token."""
    return http(base + path, headers=AUTH)


def post_json(base: str, path: str, payload: Any) -> Answer:
    """POST ``payload`` as JSON to ``base + path`` with the token."""
    return http(base + path, method="POST", body=json.dumps(payload).encode(),
                headers={**AUTH, "Content-Type": "application/json"})
