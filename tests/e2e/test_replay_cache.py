"""Replay state kept between turns, end to end through the real sidecar.

A worker that declares ``KEEPS_REPLAY_STATE`` gets, after a turn of an instance committed from
its stream, only the past events it has not seen (``properties['durabletask.pastEventsOmitted']``
says how many were left out). The raw-protocol tests check what goes over the wire; the others
run ``TaskHubGrpcWorker`` with its cache on, off and tiny, across workers, continue-as-new,
rewind, a changed orchestrator, and (two sidecars on PostgreSQL) an instance created again with
its execution ID while a worker still holds the state of its first life. ``observed_sidecar``
wraps two RPC handlers of a real
sidecar, only to record what they serve (orchestrator turns, ``StreamInstanceHistory`` calls)
and, in one test, to fail one history read.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from durabletask import entities, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal.protocol_extensions import (
    KEEPS_REPLAY_STATE,
    PAST_EVENTS_OMITTED,
    omitted_past_events,
)
from durabletask.internal.worker_completions import DEFAULT_RETRY_DELAYS
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker
from sidecar.server import SidecarServer
from tests.e2e.conftest import FAST, RawWorker, complete, eventually, schedule, start, test_store_spec

WAIT = 10.0
FAST_RECONNECT = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5, hello_timeout_seconds=5
)
KEEPS = pb.GetWorkItemsRequest(capabilities=[KEEPS_REPLAY_STATE])  # type: ignore[list-item]


def new_id(prefix: str = "rc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def stored_history(stub: pb_grpc.TaskHubSidecarServiceStub, iid: str) -> list[pb.HistoryEvent]:
    return [e for chunk in stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid)) for e in chunk.events]


def raise_event(stub: pb_grpc.TaskHubSidecarServiceStub, iid: str, name: str) -> None:
    stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name=name))


def marked(req: pb.OrchestratorRequest) -> bool:
    return PAST_EVENTS_OMITTED in req.properties


# ------------------------------------------------------------------ raw protocol


def test_a_stream_keeping_replay_state_gets_only_the_events_it_has_not_seen(raw_env: Any) -> None:
    stub, worker, _ = raw_env
    w: RawWorker = worker(KEEPS)
    start(stub, "keeps")
    item = w.next("orchestratorRequest")
    req = item.orchestratorRequest
    assert list(req.pastEvents) == [] and not marked(req), "the first turn is sent whole"
    seen = len(req.pastEvents) + len(req.newEvents)
    w.complete(item, schedule(1, "act"))
    for step in range(3):
        w.complete_activity(w.next("activityRequest"), f'"{step}"')
        item = w.next("orchestratorRequest")
        req = item.orchestratorRequest
        full = stored_history(stub, "keeps")
        assert omitted_past_events(req) == seen == req.properties[PAST_EVENTS_OMITTED].number_value
        assert list(req.pastEvents) == full[seen:], "only the past events after those seen"
        assert len(req.pastEvents) >= 2 and req.newEvents[1].taskCompleted.taskScheduledId == step + 1
        seen = len(full) + len(req.newEvents)
        w.complete(item, schedule(step + 2, "act"))
    w.complete_activity(w.next("activityRequest"), '"last"')
    item = w.next("orchestratorRequest")
    assert omitted_past_events(item.orchestratorRequest) == seen
    w.complete(item, complete(9, '"done"'))
    res = stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="keeps"), timeout=WAIT)
    assert res.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED


def test_a_stream_without_the_capability_always_gets_the_whole_history(raw_env: Any) -> None:
    stub, worker, _ = raw_env
    w: RawWorker = worker(pb.GetWorkItemsRequest(capabilities=[pb.WORKER_CAPABILITY_SCHEDULED_TASKS]))
    start(stub, "plain")
    item = w.next("orchestratorRequest")
    w.complete(item, schedule(1, "act"))
    for step in range(3):
        w.complete_activity(w.next("activityRequest"), f'"{step}"')
        item = w.next("orchestratorRequest")
        req = item.orchestratorRequest
        assert not marked(req) and omitted_past_events(req) == 0
        assert list(req.pastEvents) == stored_history(stub, "plain")
        w.complete(item, schedule(step + 2, "act"))


def test_a_turn_handed_back_or_refused_is_sent_whole_the_next_time(raw_env: Any) -> None:
    stub, worker, _ = raw_env
    w: RawWorker = worker(KEEPS)
    start(stub, "back")
    w.complete(w.next("orchestratorRequest"))
    raise_event(stub, "back", "one")
    item = w.next("orchestratorRequest")
    assert omitted_past_events(item.orchestratorRequest) == 2
    stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
    again = w.next("orchestratorRequest")
    assert again.completionToken != item.completionToken and not marked(again.orchestratorRequest)
    assert list(again.orchestratorRequest.pastEvents) == stored_history(stub, "back")
    w.complete(again)

    raise_event(stub, "back", "two")
    item = w.next("orchestratorRequest")
    assert marked(item.orchestratorRequest)
    with pytest.raises(grpc.RpcError) as err:
        w.complete(item, schedule(1, "a"), schedule(1, "b"))  # duplicate action ids: refused
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    again = w.next("orchestratorRequest")
    assert not marked(again.orchestratorRequest)
    assert list(again.orchestratorRequest.pastEvents) == stored_history(stub, "back")
    w.complete(again)

    raise_event(stub, "back", "three")
    item = w.next("orchestratorRequest")
    full = stored_history(stub, "back")
    assert 0 < omitted_past_events(item.orchestratorRequest) < len(full)
    assert list(item.orchestratorRequest.pastEvents) == full[omitted_past_events(item.orchestratorRequest):]


def test_the_events_left_out_are_those_of_the_streams_own_last_turn(raw_env: Any) -> None:
    """Turns another stream ran meanwhile are sent (as past events after those left out)."""
    stub, worker, _ = raw_env
    a: RawWorker = worker(pb.GetWorkItemsRequest(capabilities=[KEEPS_REPLAY_STATE], maxConcurrentOrchestrationWorkItems=1))  # type: ignore[list-item]
    start(stub, "x")
    first = a.next("orchestratorRequest")
    seen = len(first.orchestratorRequest.pastEvents) + len(first.orchestratorRequest.newEvents)
    a.complete(first)
    start(stub, "busy")
    held = a.next("orchestratorRequest")  # a's only slot is taken now
    assert held.orchestratorRequest.instanceId == "busy"
    b: RawWorker = worker(KEEPS)
    raise_event(stub, "x", "one")
    elsewhere = b.next("orchestratorRequest")
    assert elsewhere.orchestratorRequest.instanceId == "x"
    assert not marked(elsewhere.orchestratorRequest), "b never completed a turn of x"
    b.complete(elsewhere)
    b.close()
    a.complete(held)
    raise_event(stub, "x", "two")
    back = a.next("orchestratorRequest")
    req = back.orchestratorRequest
    full = stored_history(stub, "x")
    assert omitted_past_events(req) == seen, "what a saw at its own last turn of x"
    assert list(req.pastEvents) == full[seen:]
    assert any(e.HasField("eventRaised") and e.eventRaised.name == "one" for e in req.pastEvents)
    a.complete(back, complete(1))


# -------------------------------------------------------------- observed sidecar


@dataclass(frozen=True)
class Turn:
    """An orchestrator turn a sidecar sent: to which stream, of which instance, how many past events left out."""

    stream: int
    instance_id: str
    omitted: int


@dataclass
class Observed:
    """What a sidecar served: the streams opened, the orchestrator turns, and the history reads."""

    streams: int = 0
    turns: list[Turn] = field(default_factory=list)
    history_reads: list[str] = field(default_factory=list)
    fail_history_reads: int = 0  # how many of the next reads answer UNAVAILABLE
    lock: threading.Lock = field(default_factory=threading.Lock)

    def turns_of(self, iid: str | None = None, since: int = 0) -> list[Turn]:
        with self.lock:
            return [t for t in self.turns[since:] if iid is None or t.instance_id == iid]

    def omitted_turns(self, iid: str | None = None) -> list[int]:
        return [t.omitted for t in self.turns_of(iid) if t.omitted]

    def reads(self) -> list[str]:
        with self.lock:
            return list(self.history_reads)

    def resumed_after_another_stream(self) -> list[Turn]:
        """Turns sent without the events their stream had seen, after another stream ran turns of the instance."""
        found = []
        for iid in {t.instance_id for t in self.turns_of()}:
            turns = self.turns_of(iid)
            for i, turn in enumerate(turns):
                before = [t.stream for t in turns[:i]]
                if turn.omitted and turn.stream in before and before[-1] != turn.stream:
                    found.append(turn)
        return found


@contextmanager
def observed_sidecar() -> Iterator[tuple[str, Observed]]:
    """A real in-process sidecar whose GetWorkItems and StreamInstanceHistory are recorded on the way out."""
    server = SidecarServer(test_store_spec(), host="localhost", dispatch_options=FAST)
    servicer = server.servicer
    real_items, real_history = servicer.GetWorkItems, servicer.StreamInstanceHistory
    seen = Observed()

    def work_items(request: pb.GetWorkItemsRequest, context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        stream = 0
        for item in real_items(request, context):
            if not stream:  # the stream is open once its first item (a health ping) is out
                with seen.lock:
                    seen.streams += 1
                    stream = seen.streams
            if item.HasField("orchestratorRequest"):
                req = item.orchestratorRequest
                with seen.lock:
                    seen.turns.append(Turn(stream, req.instanceId, omitted_past_events(req)))
            yield item

    def history(request: pb.StreamInstanceHistoryRequest, context: grpc.ServicerContext) -> Iterator[pb.HistoryChunk]:
        with seen.lock:
            seen.history_reads.append(request.instanceId)
            failing = seen.fail_history_reads > 0
            seen.fail_history_reads -= int(failing)
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected: history read failed")
        yield from real_history(request, context)

    servicer.GetWorkItems = work_items  # type: ignore[method-assign]
    servicer.StreamInstanceHistory = history  # type: ignore[method-assign]
    port = server.start(0)
    try:
        yield f"localhost:{port}", seen
    finally:
        server.stop(grace=0.2)


# ------------------------------------------------------------------ functions


def echo(ctx: task.ActivityContext, x: Any) -> Any:
    return x


def chain(ctx: task.OrchestrationContext, n: int):
    results = []
    for i in range(n):
        results.append((yield ctx.call_activity(echo, input=i * n)))
    return results


def waits_between(ctx: task.OrchestrationContext, label: str):
    a = yield ctx.call_activity(echo, input=f"{label}-a")
    ctx.set_custom_status("waiting")
    go = yield ctx.wait_for_external_event("go")
    b = yield ctx.call_activity(echo, input=f"{label}-b")
    c = yield ctx.call_activity(echo, input=go)
    return [a, go, b, c]


def two_waits(ctx: task.OrchestrationContext, label: str):
    a = yield ctx.call_activity(echo, input=f"{label}-a")
    ctx.set_custom_status("waiting-1")
    first = yield ctx.wait_for_external_event("go")
    b = yield ctx.call_activity(echo, input=f"{label}-b")
    ctx.set_custom_status("waiting-2")
    second = yield ctx.wait_for_external_event("go")
    c = yield ctx.call_activity(echo, input=f"{label}-c")
    return [a, first, b, second, c]


holding = threading.Event()  # set while ``holder`` runs its turn
hold = threading.Event()  # ``holder``'s turn ends once this is set


def holder(ctx: task.OrchestrationContext, _: Any) -> str:
    """Holds its worker's orchestration slot for as long as ``hold`` is clear (tests only: blocking code)."""
    holding.set()
    hold.wait(WAIT)
    return "held"


def counter(ctx: task.OrchestrationContext, n: int):
    value = yield ctx.call_activity(echo, input=n + 1)
    if value < 3:
        ctx.continue_as_new(value)
        return None
    return [value, ctx.instance_id]


broken = threading.Event()  # while set, ``flaky`` fails


def flaky(ctx: task.ActivityContext, x: int) -> int:
    if broken.is_set():
        raise RuntimeError("flaky is broken")
    return x * 10


def rewound(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(echo, input=1)
    b = yield ctx.call_activity(flaky, input=2)
    c = yield ctx.call_activity(echo, input=3)
    return [a, b, c]


def changing_v1(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(echo, input="v1")
    ctx.set_custom_status("waiting")
    b = yield ctx.wait_for_external_event("go")
    return [a, b]


def changing_v2(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(flaky, input=1)  # another activity where v1 called ``echo``
    b = yield ctx.wait_for_external_event("go")
    return [a, b]


changing_v2.__name__ = changing_v1.__name__


def account(ctx: entities.EntityContext, amount: Any) -> Any:
    balance = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(balance + amount)
    return ctx.get_state(int, 0)


def transfer(ctx: task.OrchestrationContext, keys: list[str]):
    source, target = (EntityInstanceId("account", k) for k in keys)
    ctx.signal_entity(source, "add", 100)
    before = yield ctx.call_entity(source, "get")
    with (yield ctx.lock_entities([source, target])):
        moved = yield task.when_all([ctx.call_entity(source, "add", -30), ctx.call_entity(target, "add", 30)])
    ctx.set_custom_status("waiting")
    go = yield ctx.wait_for_external_event("go")
    after = yield ctx.call_entity(target, "get")
    return [before, moved, go, after]


def make_worker(address: str, *orchestrators: Callable[..., Any], **options: Any) -> TaskHubGrpcWorker:
    options.setdefault("resiliency_options", FAST_RECONNECT)
    worker = TaskHubGrpcWorker(host_address=address, **options)
    for fn in orchestrators or (chain, waits_between, two_waits, holder, counter, rewound, transfer):
        worker.add_orchestrator(fn)
    worker.add_activity(echo)
    worker.add_activity(flaky)
    worker.add_entity(account)
    return worker


@pytest.fixture
def env() -> Iterator[tuple[str, Observed, TaskHubGrpcClient, Callable[..., TaskHubGrpcWorker]]]:
    """An observed sidecar, a client, and a factory of started workers (all stopped at the end)."""
    for switch in (broken, holding, hold):
        switch.clear()
    workers: list[TaskHubGrpcWorker] = []
    with observed_sidecar() as (address, seen), TaskHubGrpcClient(host_address=address) as client:

        def started(*orchestrators: Callable[..., Any], **options: Any) -> TaskHubGrpcWorker:
            """A started worker whose stream the sidecar has opened."""
            opened = seen.streams
            worker = make_worker(address, *orchestrators, **options)
            workers.append(worker)
            worker.start()
            eventually(lambda: seen.streams > opened, WAIT,
                       "the worker's stream to open (served through SidecarServicer.GetWorkItems)")
            return worker

        try:
            yield address, seen, client, started
        finally:
            broken.clear()
            hold.set()
            for worker in workers:
                worker.stop(timeout=5)


def completed(client: TaskHubGrpcClient, iid: str) -> Any:
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, state and state.failure_details
    return state.get_output()


def waiting(client: TaskHubGrpcClient, iid: str, status: str = "waiting") -> None:
    def probe() -> bool:
        state = client.get_orchestration_state(iid)
        return state is not None and state.get_custom_status() == status

    eventually(probe, WAIT, f"'{iid}' to wait for its event")


# -------------------------------------------------------------- TaskHubGrpcWorker


def test_a_chain_with_the_cache_on_continues_from_the_kept_state(env: Any) -> None:
    _, seen, client, started = env
    started()
    iid = client.schedule_new_orchestration(chain, input=8, instance_id=new_id())
    assert completed(client, iid) == [i * 8 for i in range(8)]
    assert len(seen.omitted_turns(iid)) == 8, "every turn after the first was sent without the events seen"
    assert seen.reads() == [], "the kept state was enough: no history was read"


def test_a_chain_with_the_cache_off(env: Any) -> None:
    _, seen, client, started = env
    started(maximum_cached_orchestrations=0)
    ids = [client.schedule_new_orchestration(chain, input=5, instance_id=new_id()) for _ in range(3)]
    for iid in ids:
        assert completed(client, iid) == [i * 5 for i in range(5)]
    assert seen.omitted_turns() == [] and seen.reads() == []
    assert len(seen.turns_of()) == 3 * 6


def test_a_tiny_cache_reads_the_history_of_instances_it_evicted(env: Any) -> None:
    _, seen, client, started = env
    started(maximum_cached_orchestrations=1)
    first = client.schedule_new_orchestration(waits_between, input="first", instance_id=new_id("first"))
    waiting(client, first)
    second = client.schedule_new_orchestration(waits_between, input="second", instance_id=new_id("second"))
    waiting(client, second)  # its state took the only place: the first's was evicted
    assert seen.reads() == []
    client.raise_orchestration_event(first, "go", data="g1")
    assert completed(client, first) == ["first-a", "g1", "first-b", "g1"]
    assert first in seen.reads(), "the evicted state was rebuilt from StreamInstanceHistory"
    client.raise_orchestration_event(second, "go", data="g2")
    assert completed(client, second) == ["second-a", "g2", "second-b", "g2"]
    # And several chains interleaving through the one place.
    ids = [client.schedule_new_orchestration(chain, input=6, instance_id=new_id()) for _ in range(4)]
    for iid in ids:
        assert completed(client, iid) == [i * 6 for i in range(6)]
    assert seen.omitted_turns(), "the sidecar still left out events; the worker read the history instead"


@pytest.mark.parametrize(
    ("failures", "handed_back"),
    [(1, False), (len(DEFAULT_RETRY_DELAYS) + 1, True)],
    ids=["retried", "every-attempt-fails"],
)
def test_a_failed_history_read_is_retried_then_the_turn_handed_back_comes_back_whole(
    env: Any, failures: int, handed_back: bool
) -> None:
    _, seen, client, started = env
    started(maximum_cached_orchestrations=1)
    first = client.schedule_new_orchestration(waits_between, input="first", instance_id=new_id("first"))
    waiting(client, first)
    second = client.schedule_new_orchestration(waits_between, input="second", instance_id=new_id("second"))
    waiting(client, second)
    with seen.lock:
        seen.fail_history_reads = failures
    turns_before = len(seen.turns_of())
    client.raise_orchestration_event(first, "go", data="g")
    assert completed(client, first) == ["first-a", "g", "first-b", "g"]
    reads = failures if handed_back else failures + 1  # a handed-back turn comes back whole: no read
    assert seen.reads() == [first] * reads
    resent = [t.omitted for t in seen.turns_of(first, since=turns_before)]
    assert resent[0] > 0
    if handed_back:
        assert resent[1] == 0, "the handed-back turn is sent again with the whole history"
    else:
        assert len(resent) == 1 or resent[1] > 0, "a read that succeeded on a retry hands nothing back"


def test_two_workers_passing_instances_between_them(env: Any) -> None:
    _, seen, client, started = env
    one_at_a_time = ConcurrencyOptions(maximum_concurrent_orchestration_work_items=1)
    started(concurrency_options=one_at_a_time)
    started(concurrency_options=one_at_a_time)
    ids = [client.schedule_new_orchestration(chain, input=7, instance_id=new_id()) for _ in range(6)]
    for iid in ids:
        assert completed(client, iid) == [i * 7 for i in range(7)]
    assert seen.reads() == [], "a worker's own state always matches what its stream was sent"


def test_a_worker_continues_its_state_over_turns_another_worker_ran(env: Any) -> None:
    _, seen, client, started = env
    started(concurrency_options=ConcurrencyOptions(maximum_concurrent_orchestration_work_items=1))  # worker a
    iid = client.schedule_new_orchestration(two_waits, input="x", instance_id=new_id())
    waiting(client, iid, "waiting-1")
    # a's only orchestration slot is taken by a turn that blocks until released.
    holder_id = client.schedule_new_orchestration(holder, instance_id=new_id("holder"))
    assert holding.wait(WAIT), "the holder's turn did not start"
    b = started()
    client.raise_orchestration_event(iid, "go", data=1)
    waiting(client, iid, "waiting-2")  # b ran those turns: a could take none
    b.stop(timeout=5)
    hold.set()
    assert completed(client, holder_id) == "held"
    client.raise_orchestration_event(iid, "go", data=2)
    assert completed(client, iid) == ["x-a", 1, "x-b", 2, "x-c"]
    turns = seen.turns_of(iid)
    streams = [t.stream for t in turns]
    assert streams[0] == 1 and 2 in streams and streams[-1] == 1, turns
    back = [t for t in seen.resumed_after_another_stream() if t.instance_id == iid]
    assert back, f"a's turns after b's were not sent without the events a had seen: {turns}"
    assert seen.reads() == [], "a continued its kept state over b's turns: no history read"


def test_another_worker_with_a_fresh_cache_finishes_the_instance(env: Any) -> None:
    _, seen, client, started = env
    first = started()
    iid = client.schedule_new_orchestration(waits_between, input="x", instance_id=new_id())
    waiting(client, iid)
    first.stop(timeout=5)
    started()
    turns_before = len(seen.turns_of())
    client.raise_orchestration_event(iid, "go", data="later")
    assert completed(client, iid) == ["x-a", "later", "x-b", "later"]
    resumed = [t.omitted for t in seen.turns_of(iid, since=turns_before)]
    assert resumed[0] == 0, "the new worker's stream is sent the whole history first"
    assert all(n > 0 for n in resumed[1:]) and len(resumed) == 3


@pytest.mark.parametrize("cache_size", [1000, 1])
def test_entity_calls_signals_and_a_critical_section(env: Any, cache_size: int) -> None:
    _, seen, client, started = env
    started(maximum_cached_orchestrations=cache_size)
    keys = [new_id("src"), new_id("dst")]
    first = client.schedule_new_orchestration(transfer, input=keys, instance_id=new_id("transfer"))
    waiting(client, first)
    other_keys = [new_id("src"), new_id("dst")]
    second = client.schedule_new_orchestration(transfer, input=other_keys, instance_id=new_id("transfer"))
    waiting(client, second)
    for iid in (first, second):
        client.raise_orchestration_event(iid, "go", data=iid)
        assert completed(client, iid) == [100, [70, 30], iid, 30]
    assert seen.omitted_turns(first) and seen.omitted_turns(second)
    if cache_size == 1:
        assert first in seen.reads(), "the first instance's state was evicted by the second's"
    else:
        assert seen.reads() == []


def test_continue_as_new_with_the_cache_on(env: Any) -> None:
    _, seen, client, started = env
    started()
    iid = new_id("can")
    client.schedule_new_orchestration(counter, input=0, instance_id=iid)
    assert completed(client, iid) == [3, iid]
    assert seen.reads() == []


def test_rewind_with_the_cache_on(env: Any) -> None:
    _, seen, client, started = env
    started()
    iid = new_id("rw")
    broken.set()
    client.schedule_new_orchestration(rewound, instance_id=iid)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
    broken.clear()
    client.rewind_orchestration(iid, reason="fixed")
    assert completed(client, iid) == [1, 20, 3]


def test_a_changed_orchestrator_is_still_caught_as_non_deterministic(env: Any) -> None:
    _, _, client, started = env
    first = started(changing_v1)
    iid = client.schedule_new_orchestration(changing_v1, instance_id=new_id("nd"))
    waiting(client, iid)
    first.stop(timeout=5)
    started(changing_v2)
    client.raise_orchestration_event(iid, "go", data=1)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
    details = state.failure_details
    assert details is not None and details.error_type == "durabletask.task.NonDeterminismError"
    assert "call_activity('flaky')" in details.message and "taskScheduled('echo')" in details.message


# ------------------------------------------------------- two sidecars, one database


def greeter(ctx: task.OrchestrationContext, name: str):
    a = yield ctx.call_activity(echo, input=name)
    ctx.set_custom_status("waiting")
    go = yield ctx.wait_for_external_event("go")
    return [a, go]


@pytest.mark.our_sidecar("runs two of this repository's sidecars on one PostgreSQL database")
def test_an_instance_recreated_with_its_execution_id_on_another_sidecar(fresh_postgres: str) -> None:
    """Sidecar A and its worker W hold the state of X's first life; X is terminated and created again
    with the same (client-chosen) execution ID, and runs on sidecar B meanwhile. W's next turn of X,
    through A, must be that of the new life (input "new"), not a continuation of the old one."""
    for switch in (holding, hold):
        switch.clear()
    servers = [SidecarServer(fresh_postgres, host="localhost", dispatch_options=FAST) for _ in range(2)]
    workers: list[TaskHubGrpcWorker] = []
    try:
        a_address, b_address = (f"localhost:{server.start(0)}" for server in servers)
        with grpc.insecure_channel(a_address) as channel, TaskHubGrpcClient(host_address=a_address) as client:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)
            iid = new_id("again")

            def create(name: str) -> None:
                request = pb.CreateInstanceRequest(instanceId=iid, name="greeter")
                request.executionId.value = "same-execution"
                request.input.value = f'"{name}"'
                stub.StartInstance(request)

            w = make_worker(a_address, greeter, holder,
                            concurrency_options=ConcurrencyOptions(maximum_concurrent_orchestration_work_items=1))
            workers.append(w)
            w.start()
            create("old")
            waiting(client, iid)
            holder_id = client.schedule_new_orchestration(holder, instance_id=new_id("holder"))
            assert holding.wait(WAIT), "the holder's turn did not start"  # W takes no other turn now
            client.terminate_orchestration(iid)
            client.wait_for_orchestration_completion(iid, timeout=WAIT)
            create("new")
            v = make_worker(b_address, greeter)
            workers.append(v)
            v.start()
            waiting(client, iid)  # the new life ran its first turns on B
            v.stop(timeout=5)
            hold.set()
            assert completed(client, holder_id) == "held"
            client.raise_orchestration_event(iid, "go", data="g")
            assert completed(client, iid) == ["new", "g"]
    finally:
        hold.set()
        for worker in workers:
            worker.stop(timeout=5)
        for server in servers:
            server.stop(grace=0.2)
