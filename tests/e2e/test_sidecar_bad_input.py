"""Bad input found by fuzzing (issue 13): out-of-range timestamps, huge values quoted in messages,
activity results for another task, control characters in IDs, negative concurrency limits.

Each test sends the bad input over gRPC, checks the status and the message, and that nothing
stored changed (every instance, its history and every entity compare equal before and after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal import work_batches_pb2_grpc as batches_grpc
from sidecar.quoting import MESSAGE_LIMIT
from tests.e2e.conftest import RawWorker, complete, fast_sidecar, schedule, start
from tests.e2e.entity_wire import ENTITY_ITEM, batch_result, entity_action, expect_status, ok, signal_action

pytestmark = pytest.mark.our_sidecar("status codes and messages of this repository's sidecar")

Code = grpc.StatusCode
Stub = pb_grpc.TaskHubSidecarServiceStub

# Seconds and nanos a protobuf Timestamp may not hold, with the words the message must contain.
BAD_TIMES = [
    (timestamp_pb2.Timestamp(seconds=253402300800), "seconds 253402300800"),
    (timestamp_pb2.Timestamp(seconds=-62135596801), "seconds -62135596801"),
    (timestamp_pb2.Timestamp(seconds=0, nanos=-1), "nanos -1"),
    (timestamp_pb2.Timestamp(seconds=0, nanos=1_000_000_000), "nanos 1000000000"),
]
HUGE = "x" * 1_000_000


@pytest.fixture
def env(stub_and_worker: tuple[Stub, RawWorker]) -> tuple[Stub, RawWorker]:
    return stub_and_worker


def snapshot(stub: Stub) -> list[bytes]:
    """Everything the client API can see: each instance (with payloads), its history, and each entity."""
    states = stub.QueryInstances(
        pb.QueryInstancesRequest(query=pb.InstanceQuery(fetchInputsAndOutputs=True, maxInstanceCount=1000))
    ).orchestrationState
    seen: list[bytes] = []
    for state in sorted(states, key=lambda s: s.instanceId):
        seen.append(state.SerializeToString(deterministic=True))
        chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=state.instanceId))
        seen.extend(event.SerializeToString(deterministic=True) for chunk in chunks for event in chunk.events)
    entities = stub.QueryEntities(
        pb.QueryEntitiesRequest(query=pb.EntityQuery(includeState=True, includeTransient=True))
    ).entities
    seen.extend(e.SerializeToString(deterministic=True) for e in entities)
    return seen


def refused(stub: Stub, call: Callable[[], object], code: grpc.StatusCode, *words: str) -> str:
    """``call`` fails with ``code`` and a short message holding ``words``; nothing stored changed."""
    before = snapshot(stub)

    def run() -> None:
        result: Any = call()
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)

    details = expect_status(run, code, *words)
    assert len(details) <= MESSAGE_LIMIT + 100, len(details)
    assert snapshot(stub) == before
    return details


def running_instance(stub: Stub, worker: RawWorker, instance_id: str) -> None:
    """An instance whose first turn scheduled an activity (so its history is not empty)."""
    start(stub, instance_id)
    worker.complete(worker.next("orchestratorRequest"), schedule(1, "work"))


# --- item 1: timestamps out of range ---------------------------------------------------------------


def client_requests(ts: timestamp_pb2.Timestamp) -> list[tuple[str, Callable[[Stub], object]]]:
    """Every client request with a Timestamp, holding ``ts``: (the field's name, the call)."""
    return [
        ("scheduledStartTimestamp", lambda s: s.StartInstance(
            pb.CreateInstanceRequest(instanceId="new", name="o", scheduledStartTimestamp=ts))),
        ("requestTime", lambda s: s.StartInstance(pb.CreateInstanceRequest(instanceId="new", name="o", requestTime=ts))),
        ("query.createdTimeFrom", lambda s: s.QueryInstances(
            pb.QueryInstancesRequest(query=pb.InstanceQuery(createdTimeFrom=ts)))),
        ("query.createdTimeTo", lambda s: s.QueryInstances(
            pb.QueryInstancesRequest(query=pb.InstanceQuery(createdTimeTo=ts)))),
        ("completedTimeFrom", lambda s: s.ListInstanceIds(pb.ListInstanceIdsRequest(completedTimeFrom=ts))),
        ("completedTimeTo", lambda s: s.ListInstanceIds(pb.ListInstanceIdsRequest(completedTimeTo=ts))),
        ("query.lastModifiedFrom", lambda s: s.QueryEntities(
            pb.QueryEntitiesRequest(query=pb.EntityQuery(lastModifiedFrom=ts)))),
        ("query.lastModifiedTo", lambda s: s.QueryEntities(
            pb.QueryEntitiesRequest(query=pb.EntityQuery(lastModifiedTo=ts)))),
        ("purgeInstanceFilter.createdTimeFrom", lambda s: s.PurgeInstances(pb.PurgeInstancesRequest(
            purgeInstanceFilter=pb.PurgeInstanceFilter(createdTimeFrom=ts)))),
        ("purgeInstanceFilter.createdTimeTo", lambda s: s.PurgeInstances(pb.PurgeInstancesRequest(
            purgeInstanceFilter=pb.PurgeInstanceFilter(createdTimeTo=ts)))),
        ("scheduledTime", lambda s: s.SignalEntity(pb.SignalEntityRequest(instanceId="@c@k", name="op", scheduledTime=ts))),
        ("requestTime", lambda s: s.SignalEntity(pb.SignalEntityRequest(instanceId="@c@k", name="op", requestTime=ts))),
    ]


@pytest.mark.parametrize(("ts", "words"), BAD_TIMES)
def test_out_of_range_timestamps_in_client_requests(env, ts: timestamp_pb2.Timestamp, words: str) -> None:
    stub, worker = env
    running_instance(stub, worker, "existing")
    for field, call in client_requests(ts):
        refused(stub, lambda call=call: call(stub), Code.INVALID_ARGUMENT, field, words, "out of range")
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="new")).exists is False


def test_timestamps_at_the_ends_of_the_range_are_accepted(env) -> None:
    stub, _ = env
    first = timestamp_pb2.Timestamp(seconds=-62135596800)
    last = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_999)
    stub.QueryInstances(pb.QueryInstancesRequest(query=pb.InstanceQuery(createdTimeFrom=first, createdTimeTo=last)))
    stub.ListInstanceIds(pb.ListInstanceIdsRequest(completedTimeFrom=first, completedTimeTo=last))
    stub.StartInstance(pb.CreateInstanceRequest(instanceId="late", name="o", scheduledStartTimestamp=last))
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId="late")).orchestrationState
    assert state.scheduledStartTimestamp.seconds == 253402300799


def timer_at(ts: timestamp_pb2.Timestamp) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=2)
    action.createTimer.fireAt.CopyFrom(ts)
    return action


def signal_at(ts: timestamp_pb2.Timestamp) -> pb.OrchestratorAction:
    action = signal_action(2, "@counter@a", "add", "r1")
    action.sendEntityMessage.entityOperationSignaled.scheduledTime.CopyFrom(ts)
    return action


def carryover_at(ts: timestamp_pb2.Timestamp) -> pb.OrchestratorAction:
    action = complete(2, status=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW)
    event = action.completeOrchestration.carryoverEvents.add(eventId=-1, timestamp=ts)
    event.eventRaised.name = "e"
    return action


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (timer_at, "actions[0].createTimer.fireAt"),
        (signal_at, "actions[0].sendEntityMessage.entityOperationSignaled.scheduledTime"),
        (carryover_at, "actions[0].completeOrchestration.carryoverEvents[0].timestamp"),
    ],
)
@pytest.mark.parametrize(("ts", "words"), BAD_TIMES[::3])
def test_out_of_range_timestamps_in_orchestrator_responses(env, action, field: str, ts, words: str) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    worker.complete_activity(worker.next("activityRequest"), '"done"')
    item = worker.next("orchestratorRequest")
    refused(stub, lambda: worker.complete(item, action(ts)), Code.INVALID_ARGUMENT, field, words)
    again = worker.next("orchestratorRequest")  # the turn is offered again, unchanged
    assert list(again.orchestratorRequest.newEvents)[1:] == list(item.orchestratorRequest.newEvents)[1:]
    worker.complete(again, complete(2, '"ok"'))


def start_at(ts: timestamp_pb2.Timestamp) -> pb.OperationAction:
    start_new = pb.StartNewOrchestrationAction(instanceId="child", name="o", scheduledTime=ts)
    return pb.OperationAction(startNewOrchestration=start_new)


def send_at(ts: timestamp_pb2.Timestamp) -> pb.OperationAction:
    return pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@counter@b", name="add", scheduledTime=ts))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda item, ts: batch_result(item, ok(), state="1", actions=[start_at(ts)]),
         "actions[0].startNewOrchestration.scheduledTime"),
        (lambda item, ts: batch_result(item, ok(), state="1", actions=[send_at(ts)]), "actions[0].sendSignal.scheduledTime"),
        (lambda item, ts: batch_result(
            item, pb.OperationResult(success=pb.OperationResultSuccess(startTimeUtc=ts)), state="1"),
         "results[0].success.startTimeUtc"),
    ],
)
def test_out_of_range_timestamps_in_entity_batch_results(env, build, field: str) -> None:
    stub, worker = env
    ts, words = BAD_TIMES[0]
    stub.SignalEntity(pb.SignalEntityRequest(instanceId="@counter@a", name="add"))
    item = worker.next(ENTITY_ITEM)
    refused(stub, lambda: stub.CompleteEntityTask(build(item, ts)), Code.INVALID_ARGUMENT, field, words, "@counter@a")
    again = worker.next(ENTITY_ITEM)  # offered again after a short back-off
    assert again.completionToken != item.completionToken
    assert stub.GetInstance(pb.GetInstanceRequest(instanceId="child")).exists is False


# --- item 4: client input quoted up to a bounded length -------------------------------------------------


def test_huge_completion_tokens_get_not_found_with_a_short_message(env) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    calls: list[Callable[[], object]] = [
        lambda: stub.CompleteOrchestratorTask(pb.OrchestratorResponse(completionToken=HUGE)),
        lambda: stub.CompleteActivityTask(pb.ActivityResponse(completionToken=HUGE)),
        lambda: stub.CompleteEntityTask(pb.EntityBatchResult(completionToken=HUGE)),
        lambda: stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=HUGE)),
        lambda: stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest(completionToken=HUGE)),
        lambda: stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken=HUGE)),
    ]
    for call in calls:
        refused(stub, call, Code.NOT_FOUND, "completion token 'xxx", "unknown or stale")


def test_huge_values_are_quoted_up_to_a_bounded_length(env) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    details = refused(
        stub,
        lambda: stub.StreamInstanceHistory(
            pb.StreamInstanceHistoryRequest(instanceId="o", executionId=wrappers_pb2.StringValue(value=HUGE))
        ),
        Code.INVALID_ARGUMENT,
        "executionId is 1000000 characters long",
    )
    assert HUGE[:300] not in details
    # A turn answered for another instance: the instanceId is quoted, cut at 200 characters.
    worker.complete_activity(worker.next("activityRequest"), None)
    item = worker.next("orchestratorRequest")
    response = pb.OrchestratorResponse(instanceId=HUGE, completionToken=item.completionToken)
    details = refused(stub, lambda: stub.CompleteOrchestratorTask(response), Code.INVALID_ARGUMENT,
                      "does not match instance 'o'", "(1,000,000 characters)")
    assert "x" * 200 + "..." in details and "x" * 201 not in details
    # A versions header that is not a JSON list of strings, quoted the same way.
    details = refused(stub, lambda: stub.QueryInstances(
        pb.QueryInstancesRequest(), metadata=[("x-durabletask-query-versions", "y" * 5000)]
    ), Code.INVALID_ARGUMENT, "JSON list of strings", "(5,000 characters)")


# --- item 5: results for another task, control characters in IDs, negative limits ---------------------


def test_activity_result_for_another_task_is_refused(env) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    item = worker.next("activityRequest")
    assert item.activityRequest.taskId == 1
    wrong = pb.ActivityResponse(instanceId="o", taskId=7, completionToken=item.completionToken)
    wrong.result.value = '"wrong"'
    refused(stub, lambda: stub.CompleteActivityTask(wrong), Code.INVALID_ARGUMENT, "taskId 7", "task 1")
    again = worker.next("activityRequest")  # handed back: offered again shortly, under a new token
    assert again.activityRequest.taskId == 1 and again.completionToken != item.completionToken
    # taskId 0 is accepted: the first task of SDKs that count from 0, or a field left unset.
    unset = pb.ActivityResponse(instanceId="o", completionToken=again.completionToken)
    unset.result.value = '"right"'
    stub.CompleteActivityTask(unset)
    turn = worker.next("orchestratorRequest")
    results = [e.taskCompleted for e in turn.orchestratorRequest.newEvents if e.HasField("taskCompleted")]
    assert [(r.taskScheduledId, r.result.value) for r in results] == [(1, '"right"')]


CONTROL_IDS = ["\x00" * 300, "a\x00b", "tab\there", "del\x7f"]


@pytest.mark.parametrize("bad", CONTROL_IDS)
def test_control_characters_in_client_ids(env, bad: str) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    words = "at most 256" if len(bad) > 256 else "control character"
    execution_id = wrappers_pb2.StringValue(value=bad)
    refused(stub, lambda: stub.StartInstance(pb.CreateInstanceRequest(instanceId="new", name="o", executionId=execution_id)),
            Code.INVALID_ARGUMENT, "executionId", words)
    refused(stub, lambda: stub.StreamInstanceHistory(
        pb.StreamInstanceHistoryRequest(instanceId="o", executionId=execution_id)), Code.INVALID_ARGUMENT, "executionId", words)
    for call in (
        lambda: stub.StartInstance(pb.CreateInstanceRequest(instanceId=bad, name="o")),
        lambda: stub.RaiseEvent(pb.RaiseEventRequest(instanceId=bad, name="e")),
        lambda: stub.TerminateInstance(pb.TerminateRequest(instanceId=bad)),
        lambda: stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=bad)),
        lambda: stub.SignalEntity(pb.SignalEntityRequest(instanceId="@c@" + bad, name="op")),
    ):
        refused(stub, call, Code.INVALID_ARGUMENT, "instanceId", words)


def sub_orchestration(bad: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=2)
    action.createSubOrchestration.name = "child"
    action.createSubOrchestration.instanceId = bad
    return action


def send_event(bad: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=2)
    action.sendEvent.instance.instanceId = bad
    action.sendEvent.name = "e"
    return action


def send_event_execution(bad: str) -> pb.OrchestratorAction:
    action = send_event("o")
    action.sendEvent.instance.executionId.value = bad
    return action


def terminate(bad: str) -> pb.OrchestratorAction:
    action = pb.OrchestratorAction(id=2)
    action.terminateOrchestration.instanceId = bad
    return action


def entity_signal(bad: str) -> pb.OrchestratorAction:
    return signal_action(2, "@counter@" + bad, "add", "r1")


def lock(bad: str) -> pb.OrchestratorAction:
    request = pb.EntityLockRequestedEvent(criticalSectionId="cs", lockSet=["@counter@" + bad], position=0)
    return entity_action(2, entityLockRequested=request)


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (sub_orchestration, "createSubOrchestration.instanceId"),
        (send_event, "sendEvent.instance.instanceId"),
        (send_event_execution, "sendEvent.instance.executionId"),
        (terminate, "terminateOrchestration.instanceId"),
        (entity_signal, "entity ID"),
        (lock, "entity ID"),
    ],
)
@pytest.mark.parametrize("bad", CONTROL_IDS[:2])
def test_control_characters_in_ids_of_orchestrator_actions(env, action, field: str, bad: str) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    worker.complete_activity(worker.next("activityRequest"), None)
    item = worker.next("orchestratorRequest")
    words = "at most 256" if len(bad) > 256 else "control character"
    refused(stub, lambda: worker.complete(item, action(bad)), Code.INVALID_ARGUMENT, field, words)
    worker.complete(worker.next("orchestratorRequest"), complete(2))


def test_control_characters_in_an_entity_signal_target(env) -> None:
    stub, worker = env
    stub.SignalEntity(pb.SignalEntityRequest(instanceId="@counter@a", name="add"))
    item = worker.next(ENTITY_ITEM)
    action = pb.OperationAction(sendSignal=pb.SendSignalAction(instanceId="@counter@\x00", name="add"))
    refused(stub, lambda: stub.CompleteEntityTask(batch_result(item, ok(), state="1", actions=[action])),
            Code.INVALID_ARGUMENT, "sendSignal.instanceId", "control character")


@pytest.mark.parametrize("field", ["maxConcurrentOrchestrationWorkItems", "maxConcurrentActivityWorkItems",
                                   "maxConcurrentEntityWorkItems"])
@pytest.mark.parametrize("rpc", ["GetWorkItems", "GetWorkItemBatches", "OpenWorkChannel"])
def test_negative_concurrency_limits_are_refused(field: str, rpc: str) -> None:
    request = pb.GetWorkItemsRequest(**{field: -1})
    with fast_sidecar() as (_, address), grpc.insecure_channel(address) as channel:
        stub = Stub(channel)
        batches = batches_grpc.WorkBatchesStub(channel)
        if rpc == "OpenWorkChannel":
            opening = [batches_pb.ChannelRequest(open=request)]
            open_stream = lambda: next(iter(batches.OpenWorkChannel(iter(opening), timeout=5)))  # noqa: E731
        elif rpc == "GetWorkItemBatches":
            open_stream = lambda: next(iter(batches.GetWorkItemBatches(request, timeout=5)))  # noqa: E731
        else:
            open_stream = lambda: next(iter(stub.GetWorkItems(request, timeout=5)))  # noqa: E731
        refused(stub, open_stream, Code.INVALID_ARGUMENT, field, "-1")


def test_a_timer_at_the_end_of_time_is_kept(env) -> None:
    stub, worker = env
    running_instance(stub, worker, "o")
    worker.complete_activity(worker.next("activityRequest"), None)
    last = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_999)
    worker.complete(worker.next("orchestratorRequest"), timer_at(last))
    chunks = stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId="o"))
    timers = [e.timerCreated.fireAt for c in chunks for e in c.events if e.HasField("timerCreated")]
    assert timers == [last]
