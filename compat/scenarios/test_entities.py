"""Durable entities with the official worker and client: function and class entities, calls,
signals (from the client, an orchestration and another entity), delayed signals, critical sections,
get, query and storage cleanup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import compat_entities as ent
from compat_support import completed, new_id, wait_until

from durabletask.client import EntityQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId


def int_state(hub: TaskHubGrpcClient, entity: EntityInstanceId) -> int | None:
    """The tally's state, or ``None`` when the entity does not exist or has no state yet (an entity
    with signals queued exists before its first operation has run, as on the official backend)."""
    metadata = hub.get_entity(entity, include_state=True)
    return None if metadata is None or not metadata.get_state() else metadata.get_state(int)


def test_client_signals_then_an_orchestration_calls(hub: TaskHubGrpcClient) -> None:
    key = new_id("t")
    entity = EntityInstanceId("tally", key)
    for amount in (1, 2, 3, 4):
        hub.signal_entity(entity, "add", amount)
    instance_id = hub.schedule_new_orchestration(ent.read_tally, input=key)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    output = state.get_output()
    # The four signals reach the entity before the orchestration's call, in the order sent.
    assert output["value"] == 10
    assert "tally refuses" in output["failure"]
    assert "nobody" in output["unregistered"]  # an unregistered entity fails the call, naming it

    metadata = hub.get_entity(entity, include_state=True)
    assert metadata is not None
    assert metadata.id == entity and metadata.includes_state and metadata.get_state(int) == 10
    assert metadata.get_locked_by() is None
    bare = hub.get_entity(entity, include_state=False)
    assert bare is not None and bare.includes_state is False and bare.get_state() is None
    assert hub.get_entity(EntityInstanceId("tally", new_id("never"))) is None


def test_orchestration_signal_and_entity_to_entity_signal(hub: TaskHubGrpcClient) -> None:
    source = EntityInstanceId("tally", new_id("src"))
    target = EntityInstanceId("tally", new_id("dst"))
    instance_id = hub.schedule_new_orchestration(ent.signal_then_read, input=source.key)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 5  # the one-way signal ran before the later call

    hub.signal_entity(target, "add", 1)
    hub.signal_entity(source, "forward", target.key)
    wait_until(lambda: int_state(hub, target) == 6, "the forwarded signal to add 5 to the target")
    # Setting the state to None deleted the source entity.
    wait_until(lambda: hub.get_entity(source) is None, "the source entity to be deleted")


def test_class_entity_critical_sections(hub: TaskHubGrpcClient) -> None:
    prefix = new_id("acct")
    a, b = EntityInstanceId("account", f"{prefix}-a"), EntityInstanceId("account", f"{prefix}-b")
    hub.signal_entity(a, "deposit", 100)
    spec = {"source": a.key, "target": b.key, "amount": 10}
    ids = [hub.schedule_new_orchestration(ent.transfer, input=spec) for _ in range(5)]
    states = [completed(hub, instance_id) for instance_id in ids]
    assert [s.runtime_status for s in states] == [OrchestrationStatus.COMPLETED] * 5
    # Inside each critical section nothing else touches the two accounts: the sum is always 100.
    assert [s.get_output() for s in states] == [100] * 5

    found = hub.get_all_entities(EntityQuery(instance_id_starts_with=f"@account@{prefix}", include_state=True))
    assert {str(e.id): e.get_state(int) for e in found} == {str(a): 50, str(b): 50}
    assert all(e.includes_state for e in found)
    assert [hub.get_entity(x, include_state=False).get_locked_by() for x in (a, b)] == [None, None]  # type: ignore[union-attr]
    without_state = hub.get_all_entities(EntityQuery(instance_id_starts_with=f"@account@{prefix}", include_state=False))
    assert sorted(str(e.id) for e in without_state) == sorted([str(a), str(b)])
    assert all(not e.includes_state for e in without_state)

    hub.signal_entity(a, "delete")
    wait_until(lambda: hub.get_entity(a) is None, "the deleted account to disappear")
    remaining = hub.get_all_entities(EntityQuery(instance_id_starts_with=f"@account@{prefix}"))
    assert [str(e.id) for e in remaining] == [str(b)]


def test_failed_withdrawal_leaves_the_balance(hub: TaskHubGrpcClient) -> None:
    prefix = new_id("poor")
    spec = {"source": f"{prefix}-a", "target": f"{prefix}-b", "amount": 10}
    instance_id = hub.schedule_new_orchestration(ent.transfer, input=spec)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "insufficient funds" in state.failure_details.message
    # The failed orchestration released its locks: a later call on the account is served.
    source = EntityInstanceId("account", f"{prefix}-a")
    hub.signal_entity(source, "deposit", 3)
    wait_until(lambda: int_state(hub, source) == 3, "the deposit")
    metadata = hub.get_entity(source)
    assert metadata is not None and metadata.get_locked_by() is None


def test_delayed_signal_runs_at_its_time(hub: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("tally", new_id("later"))
    hub.signal_entity(entity, "add", 7)
    wait_until(lambda: int_state(hub, entity) == 7, "the first signal")
    due = datetime.now(timezone.utc) + timedelta(seconds=1)
    hub.signal_entity(entity, "reset", signal_time=due)
    assert int_state(hub, entity) == 7  # not run early
    wait_until(lambda: int_state(hub, entity) == 0, "the delayed reset", timeout=15)
    metadata = hub.get_entity(entity)
    assert metadata is not None
    assert metadata.last_modified >= due - timedelta(milliseconds=50)


def test_clean_entity_storage(hub: TaskHubGrpcClient) -> None:
    kept = EntityInstanceId("tally", new_id("kept"))
    hub.signal_entity(kept, "add", 1)
    wait_until(lambda: int_state(hub, kept) == 1, "the entity to exist")
    locked_only = EntityInstanceId("tally", new_id("lockonly"))
    instance_id = hub.schedule_new_orchestration(ent.lock_only, input=locked_only.key)
    state = completed(hub, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED and state.get_output() == "unlocked"
    # An entity only locked and released, never given state, is not kept.
    assert hub.get_entity(locked_only) is None

    result = hub.clean_entity_storage()
    # Stateless entities go when their state goes and no lock holder has vanished: nothing is
    # left to clean, and entities with state stay.
    assert (result.empty_entities_removed, result.orphaned_locks_released) == (0, 0)
    assert int_state(hub, kept) == 1
    only_locks = hub.clean_entity_storage(remove_empty_entities=False, release_orphaned_locks=True)
    assert (only_locks.empty_entities_removed, only_locks.orphaned_locks_released) == (0, 0)


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_a_traced_signal_runs_in_the_v1_batch_and_the_span_joins_the_trace(hub: TaskHubGrpcClient) -> None:
    """A SignalEntity carrying a trace context (our client sends one; the official 1.12 client does
    not) is handed to the official worker as a v1 batch (WorkItem.entityRequest) whose operation
    carries it in OperationRequest.traceContext: the worker's ``entity:tally:add`` span joins that
    trace, and the entity's later calls from an orchestration are answered as usual."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

    from durabletask.internal import orchestrator_service_pb2 as pb

    class Keep(SpanProcessor):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def on_end(self, span: ReadableSpan) -> None:
            if span.context is not None and format(span.context.trace_id, "032x") == TRACE_ID:
                self.spans.append(span)

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    kept = Keep()
    provider.add_span_processor(kept)

    key = new_id("traced")
    entity = EntityInstanceId("tally", key)
    request = pb.SignalEntityRequest(instanceId=str(entity), name="add", requestId=new_id("s"))
    request.input.value = "7"
    request.parentTraceContext.traceParent = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
    hub._stub.SignalEntity(request)
    wait_until(lambda: int_state(hub, entity) == 7, "the traced signal to add 7")

    span = next(s for s in kept.spans if s.name == "entity:tally:add")
    assert span.parent is not None and format(span.parent.span_id, "016x") == CALLER_SPAN
    assert dict(span.attributes or {})["durabletask.task.instance_id"] == str(entity)

    state = completed(hub, hub.schedule_new_orchestration(ent.read_tally, input=key))
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output()["value"] == 7
