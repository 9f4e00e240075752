"""The dashboard's HTTP port end to end: Prometheus metrics scraped and parsed, the JSON API (lists, details,
history and timeline, every action, bad input, the token), and HTTPS, on a real sidecar (issue 10 points 2, 4)."""

from __future__ import annotations

import dataclasses
import re
import ssl
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.scheduled import ScheduleCreationOptions, ScheduledTaskClient
from sidecar import cli as sidecar_cli
from sidecar.security import AccessToken, load_server_tls
from sidecar.server import SidecarServer
from tests.e2e.conftest import (
    FAST,
    RawWorker,
    fast_sidecar,
    free_port,
    official_backend_mode,
    test_store_spec,
)
from tests.e2e.dashboard_support import (
    AUTH,
    TIMEOUT,
    TOKEN,
    DashboardEnv,
    dashboard_env,
    get_json,
    greeting,
    http,
    let_flaky_pass,
    post_json,
    rewindable,
    wait_until,
    waiter,
)
from tests.e2e.tls_files import make_tls_files

pytestmark = pytest.mark.skipif(official_backend_mode(), reason="the dashboard is this repository's sidecar's")


@pytest.fixture(scope="module")
def env() -> Iterator[DashboardEnv]:
    with dashboard_env(schedules=True) as built:
        yield built


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- metrics ---------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a text exposition (format 0.0.4), checked: HELP and TYPE before each family's samples,
    valid sample lines, histograms with cumulative buckets ending in +Inf equal to _count."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name in helped and name not in types, line
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} before its TYPE line"
        key = (name, frozenset(_LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    for family, kind in types.items():
        if kind == "counter":
            assert family.endswith("_total")
        if kind != "histogram":
            continue
        series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
        for (name, labels), value in samples.items():
            if name == f"{family}_bucket":
                le = dict(labels)["le"]
                rest = frozenset(p for p in labels if p[0] != "le")
                series.setdefault(rest, []).append((float(le), value))
        assert series, f"histogram {family} has no buckets"
        for rest, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{family} buckets are not cumulative"
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == samples[(f"{family}_count", rest)]
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(env: DashboardEnv) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = http(env.url + "/metrics", headers=AUTH)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(answer.body.decode())


def test_metrics_move_when_an_orchestration_runs(env: DashboardEnv) -> None:
    before = scrape(env)
    assert metric(before, "durabletask_open_streams") >= 1  # the worker's stream
    instance_id = env.client.schedule_new_orchestration(greeting, input="metrics", instance_id=new_id("metrics"))
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED

    def moved() -> bool:
        after = scrape(env)
        grew = [
            metric(after, name, kind=kind) - metric(before, name, kind=kind)
            for name in ("durabletask_work_items_dispatched_total", "durabletask_work_items_completed_total")
            for kind in ("orchestration", "activity")
        ]
        # greeting: 4 turns (start, activity, timer, child) and the child's 2; 2 activities.
        return grew[0] >= 6 and grew[1] >= 2 and grew[2] >= 6 and grew[3] >= 2

    wait_until(moved)
    after = scrape(env)
    assert metric(after, "durabletask_turn_duration_seconds_count") - metric(
        before, "durabletask_turn_duration_seconds_count") >= 6
    assert metric(after, "durabletask_store_commit_duration_seconds_count", kind="activity") > metric(
        before, "durabletask_store_commit_duration_seconds_count", kind="activity")
    assert metric(after, "durabletask_backlog", kind="activity") >= 0
    assert metric(after, "durabletask_lease_expiries_total", kind="orchestration") == 0
    assert (("durabletask_redispatches_total", frozenset({("kind", "activity"), ("reason", "abandoned")}))
            in after)


def test_backlog_and_entity_queue_without_a_worker() -> None:
    # A sidecar with no worker and no token: what is started or signalled waits.
    server = SidecarServer(test_store_spec(), host="localhost", dashboard_port=0)
    server.start(0)
    try:
        assert server.dashboard is not None
        url = server.dashboard.url
        with TaskHubGrpcClient(host_address=f"localhost:{server.port}") as client:
            client.schedule_new_orchestration("nobody-runs-this", instance_id=new_id("backlog"))
            client.signal_entity(EntityInstanceId("counter", "waiting"), "add", input=1)
        samples = parse_exposition(http(url + "/metrics").body.decode())
        assert metric(samples, "durabletask_backlog", kind="orchestration") == 1
        assert metric(samples, "durabletask_backlog", kind="entity") == 1
        assert metric(samples, "durabletask_backlog", kind="activity") == 0
        assert metric(samples, "durabletask_open_streams") == 0
        assert http(url + "/api/backlog").json()["backlog"] == {"orchestration": 1, "activity": 0, "entity": 1}
        entity = http(url + "/api/entities").json()["entities"][0]
        assert entity["entity_id"] == "@counter@waiting" and entity["queue_length"] == 1
        assert entity["state"] is None and entity["locked_by"] is None
    finally:
        server.stop(grace=0.2)


# --- reads ---------------------------------------------------------------------------------------


def test_list_filters_and_instance_detail_with_history(env: DashboardEnv) -> None:
    prefix = new_id("list")
    done = env.client.schedule_new_orchestration(greeting, input="ada", instance_id=f"{prefix}-done")
    waiting = env.client.schedule_new_orchestration(waiter, instance_id=f"{prefix}-waiting")
    env.client.wait_for_orchestration_completion(done, timeout=TIMEOUT)
    env.client.wait_for_orchestration_start(waiting, timeout=TIMEOUT)

    child_id = f"{done}:0003"  # the sub-orchestration, under its deterministic ID
    listed = get_json(env.url, f"/api/instances?prefix={prefix}").json()["instances"]
    assert sorted(i["instance_id"] for i in listed) == [done, child_id, waiting]
    by_status = get_json(env.url, f"/api/instances?prefix={prefix}&status=COMPLETED").json()["instances"]
    assert sorted(i["instance_id"] for i in by_status) == [done, child_id]
    assert next(i for i in by_status if i["instance_id"] == child_id)["parent_instance_id"] == done
    by_name = get_json(env.url, f"/api/instances?prefix={prefix}&name=waiter").json()["instances"]
    assert [i["instance_id"] for i in by_name] == [waiting]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert get_json(env.url, f"/api/instances?prefix={prefix}&created_from={future}").json()["instances"] == []
    paged = get_json(env.url, f"/api/instances?prefix={prefix}&page_size=1").json()
    assert len(paged["instances"]) == 1 and paged["continuation"]

    detail = get_json(env.url, f"/api/instances/{done}").json()
    assert detail["status"] == "COMPLETED" and detail["name"] == "greeting"
    assert detail["input"] == '"ada"' and detail["output"] == '["hello ada", "hello child ada"]'
    assert detail["custom_status"] == '{"stage": "done"}' and detail["failure"] is None

    history = get_json(env.url, f"/api/instances/{done}/history").json()
    assert [e["type"] for e in history["events"]][:2] == ["orchestratorStarted", "executionStarted"]
    kinds = {(span["kind"], span["name"], span["outcome"]) for span in history["timeline"]}
    assert ("orchestration", "greeting", "completed") in kinds
    assert ("activity", "greet", "completed") in kinds
    assert ("timer", "timer", "fired") in kinds
    assert ("sub-orchestration", "child", "completed") in kinds
    timer = next(span for span in history["timeline"] if span["kind"] == "timer")
    fire_at = next(e for e in history["events"] if e["type"] == "timerCreated")["fields"]["fireAt"]
    assert timer["end"][:23] == fire_at[:23] and timer["duration_ms"] > 0  # from set to due


def test_entities_schedules_and_workers(env: DashboardEnv) -> None:
    key = new_id("counter")
    env.client.signal_entity(EntityInstanceId("counter", key), "add", input=5)

    def entity() -> dict[str, Any] | None:
        found = get_json(env.url, "/api/entities?prefix=@counter@").json()["entities"]
        return next((e for e in found if e["key"] == key and e["state"] is not None), None)

    wait_until(lambda: entity() is not None)
    assert entity() == {**entity(), "name": "counter", "state": "5", "queue_length": 0, "locked_by": None}  # type: ignore[dict-item]

    schedules = ScheduledTaskClient(env.client, operation_timeout=TIMEOUT)
    start = datetime.now(timezone.utc) + timedelta(days=1)
    schedules.create_schedule(ScheduleCreationOptions("nightly", "waiter", timedelta(hours=24), start_at=start))
    listed = get_json(env.url, "/api/schedules").json()["schedules"]
    nightly = next(s for s in listed if s["schedule_id"] == "nightly")
    assert nightly["status"] == "Active" and nightly["orchestration_name"] == "waiter"

    workers = get_json(env.url, "/api/workers").json()["workers"]
    assert len(workers) == 1
    worker = workers[0]
    assert "greeting" in worker["names"]["orchestration"] and "greet" in worker["names"]["activity"]
    assert set(worker["limits"]) == {"orchestration", "activity", "entity"}


# --- actions -------------------------------------------------------------------------------------


def status_of(env: DashboardEnv, instance_id: str) -> str:
    answer = get_json(env.url, f"/api/instances/{instance_id}")
    return str(answer.json()["status"]) if answer.status == 200 else str(answer.status)


def test_suspend_resume_raise_event_and_terminate(env: DashboardEnv) -> None:
    instance_id = env.client.schedule_new_orchestration(waiter, instance_id=new_id("act"))
    env.client.wait_for_orchestration_start(instance_id, timeout=TIMEOUT)
    assert post_json(env.url, f"/api/instances/{instance_id}/suspend", {"reason": "look"}).status == 200
    wait_until(lambda: status_of(env, instance_id) == "SUSPENDED")
    assert post_json(env.url, f"/api/instances/{instance_id}/resume", {}).status == 200
    wait_until(lambda: status_of(env, instance_id) == "RUNNING")
    answer = post_json(env.url, f"/api/instances/{instance_id}/raise-event", {"name": "go", "data": {"n": 1}})
    assert answer.status == 200
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None and state.serialized_output == '{"n": 1}'

    other = env.client.schedule_new_orchestration(waiter, instance_id=new_id("term"))
    env.client.wait_for_orchestration_start(other, timeout=TIMEOUT)
    assert post_json(env.url, f"/api/instances/{other}/terminate", {"reason": "enough"}).status == 200
    state = env.client.wait_for_orchestration_completion(other, timeout=TIMEOUT)
    assert state is not None and state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.serialized_output == '"enough"'


def test_rewind_restart_and_purge(env: DashboardEnv) -> None:
    instance_id = env.client.schedule_new_orchestration(rewindable, input=21, instance_id=new_id("rewind"))
    state = env.client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None and state.runtime_status == OrchestrationStatus.FAILED
    failure = get_json(env.url, f"/api/instances/{instance_id}").json()["failure"]
    assert "flaky activity failed on purpose" in failure["message"]

    let_flaky_pass()
    assert post_json(env.url, f"/api/instances/{instance_id}/rewind", {"reason": "fixed"}).status == 200
    wait_until(lambda: status_of(env, instance_id) == "COMPLETED")
    assert get_json(env.url, f"/api/instances/{instance_id}").json()["output"] == "42"

    restarted = post_json(env.url, f"/api/instances/{instance_id}/restart", {"new_instance_id": True}).json()
    assert restarted["instance_id"] != instance_id
    wait_until(lambda: status_of(env, restarted["instance_id"]) == "COMPLETED")

    assert post_json(env.url, f"/api/instances/{instance_id}/purge", {}).json()["purged"] == 1
    assert get_json(env.url, f"/api/instances/{instance_id}").status == 404


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_refused_with_the_problem_named_and_changes_nothing(env: DashboardEnv) -> None:
    running = env.client.schedule_new_orchestration(waiter, instance_id=new_id("bad"))
    env.client.wait_for_orchestration_start(running, timeout=TIMEOUT)
    cases: list[tuple[Any, int, str]] = [
        (get_json(env.url, "/api/instances?status=BOGUS"), 400, "status"),
        (get_json(env.url, "/api/instances?page_size=0"), 400, "page_size"),
        (get_json(env.url, "/api/instances?created_from=yesterday"), 400, "created_from"),
        (get_json(env.url, "/api/instances/no-such-instance"), 404, "no-such-instance"),
        (get_json(env.url, "/api/instances/no-such-instance/history"), 404, "no-such-instance"),
        (get_json(env.url, "/api/nothing"), 404, "no such API resource"),
        (post_json(env.url, "/api/instances/no-such-instance/terminate", {}), 404, "no-such-instance"),
        (post_json(env.url, "/api/instances/no-such-instance/raise-event", {"name": "go"}), 404, "no-such-instance"),
        (post_json(env.url, f"/api/instances/{running}/explode", {}), 404, "unknown action"),
        (post_json(env.url, f"/api/instances/{running}/raise-event", {}), 400, "name"),
        (post_json(env.url, f"/api/instances/{running}/terminate", {"recursive": "yes"}), 400, "recursive"),
        (post_json(env.url, f"/api/instances/{running}/suspend", {"reason": 7}), 400, "reason"),
        (post_json(env.url, f"/api/instances/{running}/terminate", [1, 2]), 400, "JSON object"),
        (post_json(env.url, f"/api/instances/{running}/rewind", {}), 409, running),
        (post_json(env.url, f"/api/instances/{running}/restart", {}), 409, running),
        (post_json(env.url, f"/api/instances/{running}/purge", {}), 409, running),
        (post_json(env.url, f"/api/instances/{'x' * 5000}/terminate", {}), 400, "instanceId"),
        (http(f"{env.url}/api/instances/{running}/terminate", method="POST", body=b"{not json",
              headers={**AUTH, "Content-Type": "application/json"}), 400, "not valid JSON"),
        (http(f"{env.url}/api/instances/{running}/terminate", method="POST", body=b"[" * 100_000,
              headers={**AUTH, "Content-Type": "application/json"}), 400, "nested too deeply"),
        (http(f"{env.url}/api/instances/{running}/terminate", method="POST", body=b"{}",
              headers={**AUTH, "Content-Type": "text/plain"}), 415, "JSON"),
        (http(f"{env.url}/api/instances/{running}/terminate", method="POST", body=b"{}",
              headers={**AUTH, "Content-Type": "application/json", "Origin": "http://evil.example"}), 403,
         "cross-origin"),
        (http(f"{env.url}/api/instances", method="DELETE", headers=AUTH), 405, "GET or POST"),
    ]
    for answer, status, named in cases:
        assert answer.status == status, (answer.status, answer.body)
        error = answer.json()
        assert named in error["error"] and error["status"] == status, error
    assert status_of(env, running) == "RUNNING"
    assert env.client.get_orchestration_state(running).runtime_status == OrchestrationStatus.RUNNING  # type: ignore[union-attr]
    env.client.terminate_orchestration(running)


def test_the_token_is_required_and_accepted(env: DashboardEnv) -> None:
    for path in ("/metrics", "/api/instances", "/api/backlog"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = http(env.url + path, headers=headers)
            assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer"), path
    page = http(env.url + "/")
    assert page.status == 401 and b'action="/login"' in page.body
    instance_id = env.client.schedule_new_orchestration(waiter, instance_id=new_id("auth"))
    env.client.wait_for_orchestration_start(instance_id, timeout=TIMEOUT)
    refused = http(f"{env.url}/api/instances/{instance_id}/terminate", method="POST", body=b"{}",
                   headers={"Content-Type": "application/json"})
    assert refused.status == 401 and status_of(env, instance_id) == "RUNNING"

    wrong = http(env.url + "/login", method="POST", body=b"token=nope",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status == 401 and b"Wrong token" in wrong.body and "Set-Cookie" not in wrong.headers
    login = http(env.url + "/login", method="POST", body=f"token={TOKEN}".encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status == 303 and login.headers["Location"] == "/"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    assert http(env.url + "/", headers=jar).status == 200
    assert http(env.url + "/metrics", headers=jar).status == 200
    assert http(env.url + "/api/instances", headers=jar).status == 200
    assert http(env.url + "/api/instances", headers={"Cookie": "durabletask_token=wrong"}).status == 401
    env.client.terminate_orchestration(instance_id)


def test_https_with_the_sidecars_certificate(tmp_path: Any) -> None:
    files = make_tls_files(tmp_path)
    tls = load_server_tls(files.server_cert, files.server_key, None)
    server = SidecarServer(test_store_spec(), host="localhost", tls=tls, token=AccessToken(TOKEN), dashboard_port=0)
    server.start(0)
    try:
        assert server.dashboard is not None and server.dashboard.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=files.ca)
        answer = http(server.dashboard.url + "/metrics", headers=AUTH, context=trusted)
        assert answer.status == 200 and b"durabletask_open_streams 0" in answer.body
        with pytest.raises(Exception, match="(?i)certificate|ssl"):
            http(server.dashboard.url + "/metrics", headers=AUTH, context=ssl.create_default_context())
    finally:
        server.stop(grace=0.2)

    # Mutual TLS: a client certificate signed by the client CA is required.
    mutual = load_server_tls(files.server_cert, files.server_key, files.ca)
    server = SidecarServer(test_store_spec(), host="localhost", tls=mutual, dashboard_port=0)
    server.start(0)
    try:
        assert server.dashboard is not None
        with_cert = ssl.create_default_context(cafile=files.ca)
        with_cert.load_cert_chain(files.client_cert, files.client_key)
        assert http(server.dashboard.url + "/api/backlog", context=with_cert).status == 200
        with pytest.raises(Exception, match="(?i)certificate|ssl|reset|EOF"):
            http(server.dashboard.url + "/api/backlog", context=ssl.create_default_context(cafile=files.ca))
    finally:
        server.stop(grace=0.2)


def _counter(url: str) -> Callable[..., float]:
    def counted(name: str, **labels: str) -> float:
        return metric(parse_exposition(http(url + "/metrics").body.decode()), name, **labels)

    return counted


def test_lease_expiries_are_counted() -> None:
    # A turn held past its maximum hold: its lease runs out and it is dispatched again.
    options = dataclasses.replace(FAST, orchestration_max_hold=timedelta(seconds=0.3))
    with fast_sidecar(options, dashboard_port=0) as (server, address):
        assert server.dashboard is not None
        counted = _counter(server.dashboard.url)
        stub = pb_grpc.TaskHubSidecarServiceStub(grpc.insecure_channel(address))
        stub.StartInstance(pb.CreateInstanceRequest(instanceId=new_id("held"), name="held"))
        worker = RawWorker(address)
        try:
            worker.next("orchestratorRequest")
            wait_until(lambda: counted("durabletask_lease_expiries_total", kind="orchestration") >= 1)
            worker.next("orchestratorRequest")  # the same turn, dispatched again
            assert counted("durabletask_work_items_dispatched_total", kind="orchestration") >= 2
        finally:
            worker.close()


def test_redispatches_are_counted_by_reason() -> None:
    # A stream that closes with a turn in flight gives it back; a worker that abandons a turn hands it back.
    with fast_sidecar(dashboard_port=0) as (server, address):
        assert server.dashboard is not None
        counted = _counter(server.dashboard.url)
        stub = pb_grpc.TaskHubSidecarServiceStub(grpc.insecure_channel(address))
        stub.StartInstance(pb.CreateInstanceRequest(instanceId=new_id("handed-back"), name="handed-back"))
        first = RawWorker(address)
        first.next("orchestratorRequest")
        first.close()
        wait_until(lambda: counted("durabletask_redispatches_total", kind="orchestration", reason="stream_closed") == 1)
        second = RawWorker(address)
        try:
            item = second.next("orchestratorRequest")
            stub.AbandonTaskOrchestratorWorkItem(
                pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken)
            )
            assert counted("durabletask_redispatches_total", kind="orchestration", reason="abandoned") == 1
            # 2, or 3 once the abandoned turn's 0.1 s back-off has passed and it went out again.
            assert counted("durabletask_work_items_dispatched_total", kind="orchestration") >= 2
            assert counted("durabletask_work_items_completed_total", kind="orchestration") == 0
            assert counted("durabletask_lease_expiries_total", kind="orchestration") == 0
        finally:
            second.close()


def test_command_line_options(sidecar_process: Any, tmp_path: Any, capsys: Any) -> None:
    assert sidecar_cli.main(["--store", "memory", "--dashboard-port", "70000"]) == 2
    assert "--dashboard-port must be a port number from 0 to 65535, not 70000" in capsys.readouterr().err

    dashboard_port = free_port()
    process = sidecar_process.start(tmp_path / "cli.db", free_port(), "--dashboard-port", str(dashboard_port))
    url = f"http://127.0.0.1:{dashboard_port}"
    wait_until(lambda: f"dashboard and metrics on {url}" in process.output())
    answer = http(url + "/metrics")
    assert answer.status == 200 and b"durabletask_open_streams 0" in answer.body
    assert process.terminate() == 0
