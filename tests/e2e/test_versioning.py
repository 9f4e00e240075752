"""Versioned instances end to end: versions stored and routed by the real sidecar, worker version rules."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc
import pytest
from conftest import InProcessSidecar

from durabletask import task
from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal.async_client import AsyncTaskHubGrpcClient
from durabletask.worker import (
    ActivityWorkItemFilter,
    OrchestrationWorkItemFilter,
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
    WorkItemFilters,
)

WAIT = 30
STRICT = VersionMatchStrategy.STRICT
OLDER = VersionMatchStrategy.CURRENT_OR_OLDER
FAIL = VersionFailureStrategy.FAIL
REJECT = VersionFailureStrategy.REJECT


def build_greeter(tag: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """An orchestrator and activity that report which worker (``tag``) ran them."""

    def hello(ctx: task.ActivityContext, name: str) -> str:
        return f"hello {name} from {tag}"

    def greeter(ctx: task.OrchestrationContext, name: str) -> Any:
        greeting = yield ctx.call_activity("hello", input=name)
        return {"version": ctx.version, "orchestrator": tag, "activity": greeting}

    return greeter, hello


def family(ctx: task.OrchestrationContext, _: Any) -> Any:
    pinned = yield ctx.call_sub_orchestrator("version_of", instance_id=f"{ctx.instance_id}-pinned", version="9")
    default = yield ctx.call_sub_orchestrator("version_of", instance_id=f"{ctx.instance_id}-default")
    return [ctx.version, pinned, default]


def version_of(ctx: task.OrchestrationContext, _: Any) -> Any:
    return ctx.version


def generations(ctx: task.OrchestrationContext, seen: list[Any]) -> Any:
    seen = [*seen, ctx.version]
    if len(seen) == 1:
        ctx.continue_as_new(seen)
    elif len(seen) == 2:
        ctx.continue_as_new(seen, new_version="2.0")
    else:
        return seen


class Rejections(logging.Handler):
    """Counts the turns a worker handed back."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("rejecting a turn"):
            self.count += 1
            self.first.set()


@contextmanager
def running_worker(
    address: str,
    tag: str,
    versioning: VersioningOptions | None = None,
    filters: Any = "none",
    logger: logging.Logger | None = None,
) -> Iterator[TaskHubGrpcWorker]:
    """A started worker running the greeter as ``tag``; ``filters``: "none", "derived" or WorkItemFilters."""
    worker = TaskHubGrpcWorker(host_address=address, logger=logger)
    greeter, hello = build_greeter(tag)
    worker.add_orchestrator(greeter)
    worker.add_activity(hello)
    for orchestrator in (family, version_of, generations):
        worker.add_orchestrator(orchestrator)
    if versioning is not None:
        worker.use_versioning(versioning)
    if filters == "derived":
        worker.use_work_item_filters()
    elif filters != "none":
        worker.use_work_item_filters(filters)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def client(sidecar: InProcessSidecar) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=sidecar.address) as c:
        yield c


def finished(client: TaskHubGrpcClient, instance_id: str) -> OrchestrationState:
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    return state


def output_of(client: TaskHubGrpcClient, instance_id: str) -> Any:
    state = finished(client, instance_id)
    assert state.runtime_status is OrchestrationStatus.COMPLETED, state.failure_details
    return state.get_output()


def assert_not_started(client: TaskHubGrpcClient, instance_id: str, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_start(instance_id, timeout=within)
    state = client.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status is OrchestrationStatus.PENDING


# --- versions stored, returned and carried ------------------------------------------------------


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_version_and_tags_are_stored_returned_and_seen_by_the_orchestrator(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    with running_worker(sidecar.address, "w"):
        iid = client.schedule_new_orchestration("greeter", input="ada", version="2.0", tags={"team": "blue"})
        assert output_of(client, iid)["version"] == "2.0"
    state = client.get_orchestration_state(iid)
    assert state is not None and state.version == "2.0" and state.tags == {"team": "blue"}
    [queried] = [s for s in client.get_all_orchestration_states() if s.instance_id == iid]
    assert (queried.version, queried.tags) == ("2.0", {"team": "blue"})


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_client_default_version_applies_unless_a_version_is_given(sidecar: InProcessSidecar) -> None:
    with TaskHubGrpcClient(host_address=sidecar.address, default_version="1.5") as client:
        defaulted = client.schedule_new_orchestration("greeter", input="x")
        explicit = client.schedule_new_orchestration("greeter", input="x", version="3.0")
        assert client.get_orchestration_state(defaulted).version == "1.5"  # type: ignore[union-attr]
        assert client.get_orchestration_state(explicit).version == "3.0"  # type: ignore[union-attr]


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_sub_orchestrations_get_their_own_version_or_the_workers_default(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    with running_worker(sidecar.address, "w", VersioningOptions(default_version="7")):
        iid = client.schedule_new_orchestration(family, instance_id="fam", version="1.0")
        assert output_of(client, iid) == ["1.0", "9", "7"]
    assert client.get_orchestration_state("fam-pinned").version == "9"  # type: ignore[union-attr]
    assert client.get_orchestration_state("fam-default").version == "7"  # type: ignore[union-attr]


def test_without_a_default_a_sub_orchestration_has_no_version(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    with running_worker(sidecar.address, "w"):
        iid = client.schedule_new_orchestration(family, instance_id="fam2", version="1.0")
        assert output_of(client, iid) == ["1.0", "9", None]


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_continue_as_new_keeps_the_version_or_carries_a_new_one(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    with running_worker(sidecar.address, "w"):
        iid = client.schedule_new_orchestration(generations, input=[], version="1.0")
        assert output_of(client, iid) == ["1.0", "1.0", "2.0"]
    assert client.get_orchestration_state(iid).version == "2.0"  # type: ignore[union-attr]


# --- the worker's version rules -------------------------------------------------------------------


def test_strict_fail_runs_only_its_own_version(sidecar: InProcessSidecar, client: TaskHubGrpcClient) -> None:
    with running_worker(sidecar.address, "v1", VersioningOptions("1.0", match_strategy=STRICT, failure_strategy=FAIL)):
        same = client.schedule_new_orchestration("greeter", input="a", version="1.0")
        newer = client.schedule_new_orchestration("greeter", input="b", version="2.0")
        none = client.schedule_new_orchestration("greeter", input="c")
        assert output_of(client, same)["orchestrator"] == "v1"
        for iid, shown in ((newer, "'2.0'"), (none, "'None'")):
            state = finished(client, iid)
            assert state.runtime_status is OrchestrationStatus.FAILED
            assert state.failure_details is not None and state.failure_details.error_type == "VersionMismatch"
            assert shown in state.failure_details.message and "'1.0'" in state.failure_details.message


def test_current_or_older_compares_pep440_versions_and_falls_back_to_strings(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    rules = VersioningOptions("2.0", match_strategy=OLDER, failure_strategy=FAIL)
    with running_worker(sidecar.address, "v2", rules):
        ok = [client.schedule_new_orchestration("greeter", input="x", version=v) for v in ("1.0", "2.0", "1.10")]
        # PEP 440: 10.0 > 2.0 (as strings it would sort first); "not a version!" is compared as a string.
        too_new = [client.schedule_new_orchestration("greeter", input="x", version=v) for v in ("10.0", "not a version!")]
        for iid in ok:
            assert output_of(client, iid)["orchestrator"] == "v2"
        for iid in too_new:
            state = finished(client, iid)
            assert state.runtime_status is OrchestrationStatus.FAILED
            assert state.failure_details is not None and state.failure_details.error_type == "VersionMismatch"
            assert "is greater than the worker version '2.0'" in state.failure_details.message


def test_unparseable_worker_version_is_compared_as_a_string(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    rules = VersioningOptions("main", match_strategy=OLDER, failure_strategy=FAIL)
    with running_worker(sidecar.address, "w", rules):
        older = client.schedule_new_orchestration("greeter", input="x", version="feature-x")  # "f" < "m"
        newer = client.schedule_new_orchestration("greeter", input="x", version="release")  # "r" > "m"
        assert output_of(client, older)["orchestrator"] == "w"
        assert finished(client, newer).runtime_status is OrchestrationStatus.FAILED


def test_match_strategy_none_runs_every_version(sidecar: InProcessSidecar, client: TaskHubGrpcClient) -> None:
    rules = VersioningOptions("1.0", match_strategy=VersionMatchStrategy.NONE, failure_strategy=FAIL)
    with running_worker(sidecar.address, "w", rules):
        ids = [client.schedule_new_orchestration("greeter", input="x", version=v) for v in ("0.1", "9.9", None)]
        assert [output_of(client, iid)["orchestrator"] for iid in ids] == ["w", "w", "w"]


@pytest.mark.our_sidecar("the official test backend offers a handed-back turn again at once; the back-off is this sidecar's")
def test_reject_leaves_the_instance_pending_without_hammering_the_worker(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    counter = Rejections()
    logger = logging.getLogger("test-versioning-reject")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        rules = VersioningOptions("1.0", match_strategy=STRICT, failure_strategy=REJECT)
        with running_worker(sidecar.address, "v1", rules, logger=logger):
            iid = client.schedule_new_orchestration("greeter", input="x", version="2.0")
            scheduled = time.monotonic()
            assert counter.first.wait(30), "the v1 worker was never offered the v2 turn"
            assert_not_started(client, iid, within=1.5)
            # Offered again only after a growing delay (0.1 s, 0.2 s, 0.4 s, ...): in t seconds at
            # most about log2(t / 0.1) + 2 offers. A slow machine only makes the count smaller.
            elapsed = time.monotonic() - scheduled
            assert counter.count <= math.log2(elapsed / 0.1) + 2
            with running_worker(sidecar.address, "v2", VersioningOptions("2.0", match_strategy=STRICT)):
                seen = counter.count
                out = output_of(client, iid)
                assert (out["version"], out["orchestrator"]) == ("2.0", "v2")
            # Once a v2 stream is open, v1 is not offered the turn again (an offer or two, a growing
            # delay apart, may come before the v2 worker's stream opens on a loaded machine).
            assert counter.count <= seen + 2
    finally:
        logger.removeHandler(counter)


def test_two_rejecting_workers_side_by_side_each_get_their_version(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    with ExitStack() as stack:
        for version in ("1.0", "2.0"):
            rules = VersioningOptions(version, match_strategy=STRICT, failure_strategy=REJECT)
            stack.enter_context(running_worker(sidecar.address, f"v{version}", rules))
        ids = {v: [client.schedule_new_orchestration("greeter", input="x", version=v) for _ in range(3)]
               for v in ("1.0", "2.0")}
        for version, instance_ids in ids.items():
            for iid in instance_ids:
                assert output_of(client, iid)["orchestrator"] == f"v{version}"


# --- work-item filters ------------------------------------------------------------------------------


@pytest.mark.our_sidecar("the official test backend queues an activity without its orchestration's version, so a STRICT worker's version filter never matches it (the official SDK hangs the same way there)")
def test_filtered_workers_v1_and_v2_side_by_side(sidecar: InProcessSidecar, client: TaskHubGrpcClient) -> None:
    with ExitStack() as stack:
        for version in ("1", "2"):
            # FAIL, not REJECT: a single misrouted work item would fail its instance.
            rules = VersioningOptions(version, match_strategy=STRICT, failure_strategy=FAIL)
            stack.enter_context(running_worker(sidecar.address, f"v{version}", rules, filters="derived"))
        ids = [(v, client.schedule_new_orchestration("greeter", input=f"n{i}", version=v))
               for i in range(4) for v in ("1", "2")]
        for version, iid in ids:
            out = output_of(client, iid)
            assert out["orchestrator"] == f"v{version}"
            assert out["activity"].endswith(f"from v{version}")  # activities run under their orchestration's version

        stray = client.schedule_new_orchestration("greeter", input="x", version="3")
        assert_not_started(client, stray)  # nobody declared version 3: it waits
        rules = VersioningOptions("3", match_strategy=STRICT, failure_strategy=FAIL)
        stack.enter_context(running_worker(sidecar.address, "v3", rules, filters="derived"))
        assert output_of(client, stray)["orchestrator"] == "v3"


def test_explicit_filters_take_the_listed_versions_and_none_clears_them(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    filters = WorkItemFilters(
        orchestrations=[OrchestrationWorkItemFilter("greeter", ["1.0", "1.1"])],
        activities=[ActivityWorkItemFilter("hello")],
    )
    with running_worker(sidecar.address, "old", filters=filters):
        listed = [client.schedule_new_orchestration("greeter", input="x", version=v) for v in ("1.0", "1.1")]
        other = client.schedule_new_orchestration("greeter", input="x", version="2.0")
        assert [output_of(client, iid)["orchestrator"] for iid in listed] == ["old", "old"]
        assert_not_started(client, other)
        worker = TaskHubGrpcWorker(host_address=sidecar.address)
        worker.use_work_item_filters()
        worker.use_work_item_filters(None)  # cleared: this worker takes everything
        greeter, hello = build_greeter("any")
        worker.add_orchestrator(greeter)
        worker.add_activity(hello)
        with worker:
            worker.start()
            assert output_of(client, other)["orchestrator"] == "any"


def test_a_worker_filtering_orchestrations_only_gets_no_activities(
    sidecar: InProcessSidecar, client: TaskHubGrpcClient
) -> None:
    orchestrations_only = WorkItemFilters(orchestrations=[OrchestrationWorkItemFilter("greeter")])
    with running_worker(sidecar.address, "orch", filters=orchestrations_only):
        iid = client.schedule_new_orchestration("greeter", input="x")
        client.wait_for_orchestration_start(iid, timeout=WAIT)
        with pytest.raises(TimeoutError):
            client.wait_for_orchestration_completion(iid, timeout=0.5)  # its activity waits
        activities_only = WorkItemFilters(activities=[ActivityWorkItemFilter("hello")])
        with running_worker(sidecar.address, "act", filters=activities_only):
            assert output_of(client, iid) == {"version": None, "orchestrator": "orch", "activity": "hello x from act"}


# --- queries by version -----------------------------------------------------------------------------


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_query_by_version(sidecar: InProcessSidecar, client: TaskHubGrpcClient) -> None:
    ids = {v: client.schedule_new_orchestration("greeter", input="x", version=v) for v in ("1.0", "2.0", "3.0")}
    plain = client.schedule_new_orchestration("greeter", input="x")

    def found(version: Any) -> set[str]:
        return {s.instance_id for s in client.get_all_orchestration_states(OrchestrationQuery(version=version))}

    assert found("1.0") == {ids["1.0"]}
    assert found(["1.0", "3.0"]) == {ids["1.0"], ids["3.0"]}
    assert found("") == {plain}
    assert found(None) == {*ids.values(), plain}
    assert found("9.9") == set()
    small_pages = OrchestrationQuery(version="2.0", max_instance_count=1)
    assert [s.instance_id for s in client.get_all_orchestration_states(small_pages)] == [ids["2.0"]]


@pytest.mark.our_sidecar("the official test backend does not return an instance's version or tags")
def test_async_client_query_by_version(sidecar: InProcessSidecar) -> None:
    async def scenario() -> None:
        async with AsyncTaskHubGrpcClient(host_address=sidecar.address) as client:
            one = await client.schedule_new_orchestration("greeter", input="x", version="1.0")
            await client.schedule_new_orchestration("greeter", input="x", version="2.0")
            states = await client.get_all_orchestration_states(OrchestrationQuery(version="1.0"))
            assert [s.instance_id for s in states] == [one]

    asyncio.run(scenario())


@pytest.mark.our_sidecar("the version query header is this sidecar's extension")
def test_the_sidecar_filters_queries_by_the_version_header(sidecar: InProcessSidecar, client: TaskHubGrpcClient) -> None:
    one = client.schedule_new_orchestration("greeter", input="x", version="1.0")
    client.schedule_new_orchestration("greeter", input="x", version="2.0")
    with grpc.insecure_channel(sidecar.address) as channel:
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        request = pb.QueryInstancesRequest(query=pb.InstanceQuery(maxInstanceCount=10))
        response = stub.QueryInstances(request, metadata=(("x-durabletask-query-versions", '["1.0"]'),))
        assert [s.instanceId for s in response.orchestrationState] == [one]
        assert len(stub.QueryInstances(request).orchestrationState) == 2
        for bad in ('"1.0"', "[1]", "not json"):
            with pytest.raises(grpc.RpcError) as info:
                stub.QueryInstances(request, metadata=(("x-durabletask-query-versions", bad),))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "x-durabletask-query-versions" in info.value.details()  # type: ignore[attr-defined]
