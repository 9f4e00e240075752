"""Two sidecars on one PostgreSQL database: everything works across them.

The README ("Scaling out") claims that with several sidecars on one PostgreSQL database an
instance started through sidecar A is run by a worker on sidecar B, that events, suspend/resume,
termination, rewind and purge sent through any sidecar apply, that timers, delayed entity signals
and scheduled starts fire wherever a worker waits, that entity locks, versions and work-item
filters and recurring schedules behave as on one sidecar, and that NOTIFY carries wake-ups across
sidecars within milliseconds. Each test here starts two in-process sidecars, A and B, on one fresh
database; the client talks to A and the worker to B (and where it matters, the reverse), with real
gRPC and the real store. Skipped without a PostgreSQL server (see ``tests/pg_support.py``).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, TypeVar

import pytest

from durabletask import entities, task
from durabletask.client import OrchestrationState, OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.scheduled import ScheduleCreationOptions, ScheduledTaskClient
from durabletask.worker import (
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)
from sidecar.dispatch import DispatchOptions
from sidecar.server import SidecarServer
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.our_sidecar("runs two of this repository's sidecars on one PostgreSQL database")

T = TypeVar("T")
WAIT = 30.0
# Short stream grace and pings; the safety poll stays at its default (1 s), as in production.
OPTIONS = DispatchOptions(stream_grace=0.3, health_ping_interval=0.5)
# For the wake-up test: a safety poll (5 s) far longer than the round trips allowed there, so a
# sub-second pick-up needs NOTIFY; a rare missed wake-up costs one poll, not the test.
SLOW_POLL = replace(OPTIONS, safety_poll=5.0)


def key() -> str:
    return uuid.uuid4().hex[:10]


def now() -> datetime:
    return datetime.now(timezone.utc)


def completed(client: TaskHubGrpcClient, instance_id: str) -> Any:
    """Wait for the instance to finish; it must have COMPLETED. Returns its output."""
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED, why(state)
    return state.get_output()


def why(state: OrchestrationState | None) -> Any:
    return None if state is None else (state.runtime_status, state.failure_details)


def assert_not_finished(client: TaskHubGrpcClient, instance_id: str, within: float = 1.0) -> None:
    """The instance does not finish within ``within`` seconds (a bounded wait on the condition)."""
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_completion(instance_id, timeout=within)


class TwoSidecars:
    """Sidecars A and B on one database, plus the clients and workers a test opens on them."""

    def __init__(self, url: str, options: DispatchOptions = OPTIONS) -> None:
        self._servers: list[SidecarServer] = []
        self._clients: list[TaskHubGrpcClient] = []
        self._workers: list[TaskHubGrpcWorker] = []
        try:
            for _ in range(2):  # one after the other: the first creates the schema
                server = SidecarServer(url, host="localhost", dispatch_options=options)
                self._servers.append(server)
                server.start(0)
        except BaseException:
            self.close()
            raise
        self.a, self.b = (f"localhost:{server.port}" for server in self._servers)

    def client(self, address: str) -> TaskHubGrpcClient:
        client = TaskHubGrpcClient(host_address=address)
        self._clients.append(client)
        return client

    def worker(
        self,
        address: str,
        orchestrators: Iterable[Callable[..., Any]] = (),
        activities: Iterable[Callable[..., Any]] = (),
        entity_types: Iterable[Any] = (),
        prepare: Callable[[TaskHubGrpcWorker], None] | None = None,
    ) -> TaskHubGrpcWorker:
        """A started worker on ``address`` with these registered (``prepare`` runs before start)."""
        worker = TaskHubGrpcWorker(host_address=address)
        for orchestrator in orchestrators:
            worker.add_orchestrator(orchestrator)
        for activity in activities:
            worker.add_activity(activity)
        for entity in entity_types:
            worker.add_entity(entity)
        if prepare is not None:
            prepare(worker)
        worker.start()
        self._workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(timeout=10)
        for client in self._clients:
            client.close()
        for server in self._servers:
            server.stop(grace=0.5)

    def __enter__(self) -> TwoSidecars:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@pytest.fixture
def pair(fresh_postgres: str) -> Iterator[TwoSidecars]:
    with TwoSidecars(fresh_postgres) as sidecars:
        yield sidecars


# ================================================================ 1. wake-ups cross sidecars


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def one_step(ctx: task.OrchestrationContext, x: int) -> Any:
    return (yield ctx.call_activity(double, input=x))


def round_trip(client: TaskHubGrpcClient, x: int) -> float:
    """Seconds from scheduling ``one_step`` to its completion being seen by ``client``."""
    started = time.monotonic()
    iid = client.schedule_new_orchestration(one_step, input=x)
    assert completed(client, iid) == 2 * x
    return time.monotonic() - started


def test_pick_up_and_completion_wake_ups_cross_sidecars_within_milliseconds(fresh_postgres: str) -> None:
    # The safety poll is 5 s here and long polls never poll: a sub-second round trip needs B to
    # be woken by A's commit (pick-up) and A by B's (completion); both directions are measured.
    assert DispatchOptions().safety_poll == 1.0, "the README's one-second safety poll changed"
    with TwoSidecars(fresh_postgres, SLOW_POLL) as pair:
        for client_on, worker_on in ((pair.a, pair.b), (pair.b, pair.a)):
            worker = pair.worker(worker_on, [one_step], [double])
            client = pair.client(client_on)
            round_trip(client, 0)  # warm-up: channels, stream, pool connections
            times = [round_trip(client, x) for x in range(1, 8)]
            assert statistics.median(times) < 0.8, f"round trips (s): {[round(t, 3) for t in times]}"
            worker.stop(timeout=10)


# ================================================================ 2. timers, events, scheduled starts


def timer_then_event(ctx: task.OrchestrationContext, _: Any) -> Any:
    before = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=1))
    slept = (ctx.current_utc_datetime - before).total_seconds()
    ctx.set_custom_status("waiting")
    approval = yield ctx.wait_for_external_event("approval")
    return {"slept": slept, "approval": approval}


def started_at(ctx: task.OrchestrationContext, _: Any) -> str:
    return ctx.current_utc_datetime.replace(tzinfo=timezone.utc).isoformat()


def test_timer_event_and_scheduled_start_sent_through_a_fire_on_b(pair: TwoSidecars) -> None:
    pair.worker(pair.b, [timer_then_event, started_at])
    client = pair.client(pair.a)

    iid = client.schedule_new_orchestration(timer_then_event)
    eventually(lambda: (s := client.get_orchestration_state(iid)) and s.get_custom_status() == "waiting",
               WAIT, "the instance to wait for its event after its timer")
    client.raise_orchestration_event(iid, "approval", data={"by": "A"})
    output = completed(client, iid)
    assert output["approval"] == {"by": "A"}
    assert output["slept"] >= 1.0

    start_at = now() + timedelta(seconds=2)
    later = client.schedule_new_orchestration(started_at, start_at=start_at)
    state = client.get_orchestration_state(later)
    assert state is not None and state.runtime_status is OrchestrationStatus.PENDING
    ran_at = datetime.fromisoformat(completed(client, later))
    assert ran_at >= start_at, f"started {(start_at - ran_at).total_seconds():.3f}s early"
    assert ran_at < start_at + timedelta(seconds=10), "started far too late"


# ================================================================ 3. suspend, resume, terminate


def wait_for_go(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.wait_for_external_event("go"))


def status_on(client: TaskHubGrpcClient, instance_id: str, status: OrchestrationStatus) -> bool:
    state = client.get_orchestration_state(instance_id)
    return state is not None and state.runtime_status is status


def test_suspend_resume_and_terminate_through_a_apply_to_an_instance_run_on_b(pair: TwoSidecars) -> None:
    pair.worker(pair.b, [wait_for_go])
    client, on_b = pair.client(pair.a), pair.client(pair.b)

    iid = client.schedule_new_orchestration(wait_for_go)
    state = client.wait_for_orchestration_start(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING
    client.suspend_orchestration(iid, reason="hold on")
    for seen_by in (client, on_b):
        eventually(partial(status_on, seen_by, iid, OrchestrationStatus.SUSPENDED), WAIT, "SUSPENDED")
    client.raise_orchestration_event(iid, "go", data="went")
    assert_not_finished(client, iid)  # a suspended instance takes no turn, the event waits
    assert status_on(on_b, iid, OrchestrationStatus.SUSPENDED)
    client.resume_orchestration(iid, reason="go on")
    assert completed(client, iid) == "went"

    doomed = client.schedule_new_orchestration(wait_for_go)
    client.wait_for_orchestration_start(doomed, timeout=WAIT)
    client.terminate_orchestration(doomed, output="stopped through A")
    state = on_b.wait_for_orchestration_completion(doomed, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.TERMINATED
    assert state.get_output() == "stopped through A"


# ================================================================ 4. entities


def stamp(ctx: entities.EntityContext, _: Any) -> None:
    """Records when the operation ran (wall clock of this process, which runs the worker)."""
    ctx.set_state(time.time())


class Account(entities.DurableEntity):
    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def balance(self) -> int:
        return self.get_state(int, 0)


def guarded_transfer(ctx: task.OrchestrationContext, params: dict[str, Any]) -> Any:
    source, target = EntityInstanceId("Account", params["from"]), EntityInstanceId("Account", params["to"])
    with (yield ctx.lock_entities([source, target])):
        ctx.set_custom_status("locked")
        yield ctx.wait_for_external_event("proceed")
        balance = yield ctx.call_entity(source, "balance")
        yield ctx.call_entity(source, "deposit", -params["amount"])
        yield ctx.call_entity(target, "deposit", params["amount"])
    return balance


def entity_state(client: TaskHubGrpcClient, entity_id: EntityInstanceId) -> Any:
    meta = client.get_entity(entity_id)
    return None if meta is None else meta.get_typed_state()


def test_delayed_signal_through_a_is_applied_on_b_not_before_its_time(pair: TwoSidecars) -> None:
    pair.worker(pair.b, entity_types=[stamp])
    client = pair.client(pair.a)
    target = EntityInstanceId("stamp", key())
    due = now() + timedelta(seconds=1.5)
    client.signal_entity(target, "stamp", signal_time=due)
    assert entity_state(client, target) is None  # not applied yet (the entity exists, without state)
    fired_at = eventually(lambda: entity_state(client, target), WAIT, "the delayed signal to be applied")
    assert fired_at >= due.timestamp() - 0.001, f"applied {due.timestamp() - fired_at:.3f}s early"
    assert fired_at < due.timestamp() + 10, "applied far too late"


def test_critical_section_on_b_holds_signals_sent_through_a(pair: TwoSidecars) -> None:
    pair.worker(pair.b, [guarded_transfer], entity_types=[Account])
    client = pair.client(pair.a)
    src, dst = key(), key()
    source, target = EntityInstanceId("Account", src), EntityInstanceId("Account", dst)
    client.signal_entity(source, "deposit", 10)
    eventually(lambda: entity_state(client, source) == 10, WAIT, "the opening deposit")

    iid = client.schedule_new_orchestration(guarded_transfer, input={"from": src, "to": dst, "amount": 3})
    eventually(lambda: (s := client.get_orchestration_state(iid)) and s.get_custom_status() == "locked",
               WAIT, "the critical section to start")
    meta = client.get_entity(source)
    assert meta is not None and meta.get_locked_by() == iid
    client.signal_entity(source, "deposit", 100)  # another sender: must wait for the lock
    client.raise_orchestration_event(iid, "proceed")
    assert completed(client, iid) == 10, "the signal ran inside the critical section"
    eventually(lambda: entity_state(client, source) == 107, WAIT, "the held signal after the section")
    assert entity_state(client, target) == 3
    for entity_id in (source, target):
        meta = client.get_entity(entity_id)
        assert meta is not None and meta.get_locked_by() is None


# ================================================================ 5. versions and work-item filters


def versioned_worker(tag: str, version: str) -> Callable[[TaskHubGrpcWorker], None]:
    """Registers a ``greeter`` reporting ``tag`` and restricts the worker to ``version`` (with filters)."""

    def hello(ctx: task.ActivityContext, name: str) -> str:
        return f"hello {name} from {tag}"

    def greeter(ctx: task.OrchestrationContext, name: str) -> Any:
        greeting = yield ctx.call_activity("hello", input=name)
        return {"version": ctx.version, "orchestrator": tag, "activity": greeting}

    def prepare(worker: TaskHubGrpcWorker) -> None:
        worker.add_orchestrator(greeter)
        worker.add_activity(hello)
        worker.use_versioning(VersioningOptions(
            version, match_strategy=VersionMatchStrategy.STRICT, failure_strategy=VersionFailureStrategy.REJECT))
        worker.use_work_item_filters()

    return prepare


def test_version_filters_route_instances_scheduled_on_a_to_matching_workers(pair: TwoSidecars) -> None:
    pair.worker(pair.b, prepare=versioned_worker("B", "2.0"))
    client = pair.client(pair.a)
    v1 = client.schedule_new_orchestration("greeter", input="one", version="1.0")
    v2 = client.schedule_new_orchestration("greeter", input="two", version="2.0")
    assert completed(client, v2) == {"version": "2.0", "orchestrator": "B", "activity": "hello two from B"}
    assert_not_finished(client, v1)
    assert status_on(client, v1, OrchestrationStatus.PENDING), "B took (or failed) a version it filters out"

    # A worker for 1.0 on A takes the waiting instance (the reverse direction: scheduled on A, run on A).
    pair.worker(pair.a, prepare=versioned_worker("A", "1.0"))
    assert completed(pair.client(pair.b), v1) == {
        "version": "1.0", "orchestrator": "A", "activity": "hello one from A",
    }


def only_on_a(ctx: task.OrchestrationContext, x: int) -> Any:
    return (yield ctx.call_activity(double, input=x))


def only_on_b(ctx: task.OrchestrationContext, x: int) -> Any:
    return (yield ctx.call_activity(triple, input=x))


def triple(ctx: task.ActivityContext, x: int) -> int:
    return 3 * x


def test_workers_with_different_registrations_and_filters_each_get_only_their_own(pair: TwoSidecars) -> None:
    """Two applications on one database: with derived filters, neither is offered the other's work."""
    pair.worker(pair.a, [only_on_a], [double], prepare=lambda w: w.use_work_item_filters())
    pair.worker(pair.b, [only_on_b], [triple], prepare=lambda w: w.use_work_item_filters())
    on_a, on_b = pair.client(pair.a), pair.client(pair.b)
    started = [(on_b.schedule_new_orchestration(only_on_a, input=i), 2 * i) for i in range(5)]
    started += [(on_a.schedule_new_orchestration(only_on_b, input=i), 3 * i) for i in range(5)]
    for iid, expected in started:
        assert completed(on_a, iid) == expected


# ================================================================ 6. rewind and purge


calls: dict[str, int] = {}
fixed = threading.Event()  # while clear, ``flaky`` fails


def step(ctx: task.ActivityContext, x: int) -> int:
    calls["step"] = calls.get("step", 0) + 1
    return x


def flaky(ctx: task.ActivityContext, x: int) -> int:
    calls["flaky"] = calls.get("flaky", 0) + 1
    if not fixed.is_set():
        raise RuntimeError("flaky is broken")
    return x * 10


def chain(ctx: task.OrchestrationContext, _: Any) -> Any:
    a = yield ctx.call_activity(step, input=1)
    b = yield ctx.call_activity(flaky, input=2)
    return [a, b]


def test_rewind_and_purge_through_a_of_an_instance_run_on_b(pair: TwoSidecars) -> None:
    calls.clear()
    fixed.clear()
    pair.worker(pair.b, [chain], [step, flaky])
    client, on_b = pair.client(pair.a), pair.client(pair.b)

    iid = client.schedule_new_orchestration(chain)
    state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is OrchestrationStatus.FAILED, why(state)
    assert state.failure_details is not None and "flaky is broken" in state.failure_details.message

    fixed.set()
    client.rewind_orchestration(iid, reason="fixed")
    assert completed(on_b, iid) == [1, 20]
    assert calls == {"step": 1, "flaky": 2}, "the rewind re-ran more than the failed activity"

    result = client.purge_orchestration(iid)
    assert result.deleted_instance_count == 1
    assert on_b.get_orchestration_state(iid) is None
    assert client.get_orchestration_state(iid) is None


# ================================================================ 7. recurring schedules


class Runs:
    """Instance IDs of the runs of ``scheduled_tick``, recorded on their first (non-replayed) turn."""

    cond = threading.Condition()
    ids: list[str] = []

    @classmethod
    def record(cls, instance_id: str) -> None:
        with cls.cond:
            cls.ids.append(instance_id)
            cls.cond.notify_all()

    @classmethod
    def of(cls, schedule_id: str) -> list[str]:
        with cls.cond:
            return [i for i in cls.ids if i.startswith(f"{schedule_id}-")]

    @classmethod
    def wait(cls, predicate: Callable[[], bool], timeout: float) -> bool:
        with cls.cond:
            return cls.cond.wait_for(predicate, timeout)


def scheduled_tick(ctx: task.OrchestrationContext, value: Any) -> Any:
    if not ctx.is_replaying:
        Runs.record(ctx.instance_id)
    return value


def test_recurring_schedule_created_through_a_runs_on_b_and_is_deleted(pair: TwoSidecars) -> None:
    pair.worker(pair.b, [scheduled_tick], prepare=lambda worker: worker.configure_scheduled_tasks())
    client = pair.client(pair.a)
    schedules = ScheduledTaskClient(client, operation_timeout=WAIT)
    sid = f"cross-{key()}"
    schedule = schedules.create_schedule(
        ScheduleCreationOptions(sid, "scheduled_tick", timedelta(seconds=1), orchestration_input={"via": "A"}))

    assert Runs.wait(lambda: len(Runs.of(sid)) >= 2, WAIT), f"runs: {Runs.of(sid)}"
    first, second = Runs.of(sid)[:2]
    due = [datetime.fromisoformat(i[len(sid) + 1:]) for i in (first, second)]
    assert due[1] - due[0] == timedelta(seconds=1)
    assert completed(client, first) == {"via": "A"}
    described = schedule.describe()
    assert described.last_run_at is not None and described.last_run_at >= due[1]

    schedule.delete()
    deleted_at = now()
    assert schedules.get_schedule(sid) is None
    ran_after = Runs.wait(
        lambda: any(datetime.fromisoformat(i[len(sid) + 1:]) > deleted_at for i in Runs.of(sid)), 2.5)
    assert not ran_after, f"a deleted schedule ran: {Runs.of(sid)}"


# ================================================================ 8. listening from the start


def listeners(observer: Any) -> int:
    """Sessions of the observer's database (other than its own) whose last statement was LISTEN."""
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN %%'"
    ).fetchone()
    return int(row[0])


def test_a_store_listens_for_other_sidecars_before_it_is_returned(fresh_postgres: str) -> None:
    """A commit announced between the store's opening and its LISTEN would never wake a long poll."""
    import psycopg

    from sidecar.store import open_store

    open_store(fresh_postgres).close()  # the schema, so that the openings below are short
    with psycopg.connect(fresh_postgres, autocommit=True) as observer:
        eventually(lambda: listeners(observer) == 0, WAIT, "the first store's listener to leave")
        for _ in range(3):
            store = open_store(fresh_postgres)
            try:
                assert listeners(observer) == 1
            finally:
                store.close()
            eventually(lambda: listeners(observer) == 0, WAIT, "the closed store's listener to leave")
