"""Fuzz (c): random sequences of client and worker calls against the live sidecar.

Each example works on instances and entities of its own (IDs with a fresh prefix) and runs a
random sequence of: start (with reuse policies, scheduled starts, versions), raise, terminate
(recursive or not), suspend, resume, purge, rewind, restart, read (state, history, long poll),
signal an entity, skip graceful terminations, a request with hostile values, take the next work
item and answer it (sensible and hostile actions, activity results for the right, an unset or a
wrong task id, entity batch results with too few or too many results, abandon, complete twice),
hand back an old token again, or reopen the work-item stream. Work items left over from earlier
examples are answered by later ones. Same properties as the other fuzz tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.engine_events import to_timestamp
from tests.fuzz.conftest import METHODS, RPCS, FuzzSidecar, WorkStream
from tests.fuzz.hostile import messages

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
WORK_WAIT = 0.1  # how long a step waits for a work item

_STATUSES = [*pb.OrchestrationStatus.values(), 99]


def times() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Past, now, soon, far future, and out of range."""
    now = datetime.now(timezone.utc)
    valid = [now - timedelta(days=1), now, now + timedelta(seconds=0.2), datetime(9999, 12, 31, tzinfo=timezone.utc)]
    return st.one_of(
        st.sampled_from(valid).map(to_timestamp),
        st.sampled_from([timestamp_pb2.Timestamp(seconds=253402300800), timestamp_pb2.Timestamp(nanos=-1)]),
    )


class Sequence:
    """One example's IDs and the calls it makes (each checked against the fuzz properties)."""

    def __init__(self, fuzz: FuzzSidecar, stream: list[WorkStream], data: st.DataObject, prefix: str,
                 old_tokens: list[tuple[str, str]]) -> None:
        self.fuzz = fuzz
        self.stream = stream
        self.data = data
        self.ids = [f"{prefix}-{k}" for k in range(3)]
        self.entities = [f"@counter@{prefix}", f"@other@{prefix}"]
        self.old_tokens = old_tokens

    def draw(self, strategy: st.SearchStrategy, label: str = "") -> object:  # type: ignore[type-arg]
        return self.data.draw(strategy, label=label or None)

    def instance_id(self) -> str:
        return str(self.draw(st.sampled_from(self.ids)))

    def send(self, rpc: str, request: Message) -> grpc.StatusCode:
        payload = request.SerializeToString()
        outcome = self.fuzz.call(rpc, payload)
        self.fuzz.check_outcome(rpc, len(payload), outcome)
        return outcome.code

    # --- client calls ------------------------------------------------------------------------------

    def start(self) -> None:
        request = pb.CreateInstanceRequest(instanceId=self.instance_id(), name=str(self.draw(st.sampled_from(
            ["orch", "other"]))))
        if self.draw(st.booleans()):
            request.input.value = '"in"'
        if self.draw(st.booleans()):
            request.scheduledStartTimestamp.CopyFrom(self.draw(times()))  # type: ignore[arg-type]
        if self.draw(st.booleans()):
            request.version.value = str(self.draw(st.sampled_from(["1", "2", ""])))
        if self.draw(st.booleans()):
            statuses = self.draw(st.lists(st.sampled_from(_STATUSES), max_size=3))
            request.orchestrationIdReusePolicy.replaceableStatus.extend(statuses)  # type: ignore[arg-type]
        self.send("StartInstance", request)

    def raise_event(self) -> None:
        request = pb.RaiseEventRequest(instanceId=self.instance_id(), name=str(self.draw(st.sampled_from(["e", "E", "f"]))))
        request.input.value = "1"
        self.send("RaiseEvent", request)

    def terminate(self) -> None:
        request = pb.TerminateRequest(instanceId=self.instance_id(), recursive=bool(self.draw(st.booleans())))
        self.send("TerminateInstance", request)

    def suspend(self) -> None:
        self.send("SuspendInstance", pb.SuspendRequest(instanceId=self.instance_id()))

    def resume(self) -> None:
        self.send("ResumeInstance", pb.ResumeRequest(instanceId=self.instance_id()))

    def purge(self) -> None:
        recursive = bool(self.draw(st.booleans()))
        if self.draw(st.booleans()):
            self.send("PurgeInstances", pb.PurgeInstancesRequest(instanceId=self.instance_id(), recursive=recursive))
        else:
            batch = pb.InstanceBatch(instanceIds=self.draw(st.lists(st.sampled_from(self.ids), max_size=3)))
            self.send("PurgeInstances", pb.PurgeInstancesRequest(instanceBatch=batch, recursive=recursive))

    def rewind(self) -> None:
        self.send("RewindInstance", pb.RewindInstanceRequest(instanceId=self.instance_id()))

    def restart(self) -> None:
        request = pb.RestartInstanceRequest(instanceId=self.instance_id(), restartWithNewInstanceId=False)
        self.send("RestartInstance", request)

    def read(self) -> None:
        rpc = str(self.draw(st.sampled_from(["GetInstance", "WaitForInstanceStart", "WaitForInstanceCompletion"])))
        self.send(rpc, pb.GetInstanceRequest(instanceId=self.instance_id(), getInputsAndOutputs=True))
        self.send("StreamInstanceHistory", pb.StreamInstanceHistoryRequest(instanceId=self.instance_id()))

    def signal(self) -> None:
        request = pb.SignalEntityRequest(instanceId=str(self.draw(st.sampled_from(self.entities))), name="add")
        if self.draw(st.booleans()):
            request.scheduledTime.CopyFrom(self.draw(times()))  # type: ignore[arg-type]
        self.send("SignalEntity", request)

    def skip_graceful(self) -> None:
        batch = pb.InstanceBatch(instanceIds=self.draw(st.lists(st.sampled_from(self.ids), min_size=1, max_size=3)))
        self.send("SkipGracefulOrchestrationTerminations",
                  pb.SkipGracefulOrchestrationTerminationsRequest(instanceBatch=batch))

    def hostile(self) -> None:
        rpc = str(self.draw(st.sampled_from(RPCS)))
        self.send(rpc, self.draw(messages(METHODS[rpc].input_type, small=True)))  # type: ignore[arg-type]

    # --- worker calls ------------------------------------------------------------------------------

    def work(self) -> None:
        # Every answer is drawn before the item is known: what hypothesis draws may not depend
        # on what the sidecar happens to send.
        how = self.draw(st.sampled_from(["answer", "answer", "answer", "hostile", "abandon", "twice"]))
        answers = {
            "orchestratorRequest": self.turn_answer(how == "hostile"),
            "activityRequest": self.activity_answer(how == "hostile"),
            "entityRequestV2": self.entity_answer(how == "hostile"),
        }
        item = self.stream[0].next(WORK_WAIT)
        if item is None:
            return
        kind = str(item.WhichOneof("request"))
        self.old_tokens.append((kind, item.completionToken))
        if how == "abandon":
            rpc, request = _ABANDON[kind]
            self.send(rpc, request(completionToken=item.completionToken))
            return
        rpc, response = answers[kind](item)
        self.send(rpc, response)
        if how == "twice":
            self.send(rpc, response)

    def turn_answer(self, hostile: bool) -> Callable[[pb.WorkItem], tuple[str, Message]]:
        if hostile:
            response: pb.OrchestratorResponse = self.draw(messages(pb.OrchestratorResponse.DESCRIPTOR, small=True))  # type: ignore[assignment]
        else:
            response = pb.OrchestratorResponse()
            for index in range(int(self.draw(st.integers(0, 4)))):  # type: ignore[call-overload]
                response.actions.append(self.action(index + 1))

        def answer(item: pb.WorkItem) -> tuple[str, Message]:
            if not hostile:
                response.instanceId = item.orchestratorRequest.instanceId
            response.completionToken = item.completionToken
            return "CompleteOrchestratorTask", response

        return answer

    def action(self, usual_id: int) -> pb.OrchestratorAction:
        """An action with the id an SDK would give it (``usual_id``), or now and then a duplicate or negative one."""
        odd_id = self.draw(st.one_of(st.none(), st.integers(-1, 5)))
        action = pb.OrchestratorAction(id=usual_id if odd_id is None else int(odd_id))  # type: ignore[call-overload]
        kind = self.draw(st.sampled_from(["task", "task", "task", "timer", "sub", "event", "complete", "terminate",
                                          "entity", "entity", "lock", "hostile"]))
        if kind == "task":
            action.scheduleTask.name = str(self.draw(st.sampled_from(["act", "act", "act", ""])))
        elif kind == "timer":
            action.createTimer.fireAt.CopyFrom(self.draw(times()))  # type: ignore[arg-type]
        elif kind == "sub":
            action.createSubOrchestration.name = "orch"
            action.createSubOrchestration.instanceId = str(self.draw(st.sampled_from([*self.ids, ""])))
        elif kind == "event":
            action.sendEvent.instance.instanceId = self.instance_id()
            action.sendEvent.name = "e"
        elif kind == "complete":
            action.completeOrchestration.orchestrationStatus = self.draw(st.sampled_from(_STATUSES))  # type: ignore[assignment]
            action.completeOrchestration.result.value = '"r"'
        elif kind == "terminate":
            action.terminateOrchestration.instanceId = self.instance_id()
            action.terminateOrchestration.recurse = bool(self.draw(st.booleans()))
        elif kind == "entity":
            which = str(self.draw(st.sampled_from(["entityOperationSignaled", "entityOperationCalled",
                                                   "entityUnlockSent"])))
            message = getattr(action.sendEntityMessage, which)
            message.targetInstanceId.value = str(self.draw(st.sampled_from(self.entities)))
            if which == "entityUnlockSent":
                message.criticalSectionId = "cs"
            else:
                message.requestId = f"r{action.id}"
                message.operation = "add"
        elif kind == "lock":
            lock = action.sendEntityMessage.entityLockRequested
            lock.criticalSectionId = "cs"
            lock.lockSet.extend(sorted(self.draw(st.sets(st.sampled_from(self.entities), min_size=1))))  # type: ignore[type-var]
        else:
            action = self.draw(messages(pb.OrchestratorAction.DESCRIPTOR, small=True))  # type: ignore[assignment]
        return action

    def activity_answer(self, hostile: bool) -> Callable[[pb.WorkItem], tuple[str, Message]]:
        drawn: pb.ActivityResponse = self.draw(messages(pb.ActivityResponse.DESCRIPTOR, small=True))  # type: ignore[assignment]
        task = self.draw(st.sampled_from(["right", "unset", "wrong"]))
        succeeded = bool(self.draw(st.booleans()))

        def answer(item: pb.WorkItem) -> tuple[str, Message]:
            request = item.activityRequest
            response = drawn
            if not hostile:
                task_id = {"right": request.taskId, "unset": 0, "wrong": request.taskId + 1}[str(task)]
                response = pb.ActivityResponse(instanceId=request.orchestrationInstance.instanceId, taskId=task_id)
                if succeeded:
                    response.result.value = '"done"'
                else:
                    response.failureDetails.errorType = "ValueError"
                    response.failureDetails.errorMessage = "no"
            response.completionToken = item.completionToken
            return "CompleteActivityTask", response

        return answer

    def entity_answer(self, hostile: bool) -> Callable[[pb.WorkItem], tuple[str, Message]]:
        drawn: pb.EntityBatchResult = self.draw(messages(pb.EntityBatchResult.DESCRIPTOR, small=True))  # type: ignore[assignment]
        results = self.draw(st.sampled_from(["none", "all", "one more"]))
        actions = pb.EntityBatchResult()
        if self.draw(st.booleans()):
            signal = actions.actions.add().sendSignal
            signal.instanceId = str(self.draw(st.sampled_from(self.entities)))
            signal.name = "add"
        if self.draw(st.booleans()):
            start = actions.actions.add().startNewOrchestration
            start.instanceId = self.instance_id()
            start.name = "orch"

        def answer(item: pb.WorkItem) -> tuple[str, Message]:
            result = drawn
            if not hostile:
                ran = len(item.entityRequestV2.operationRequests)
                count = {"none": 0, "all": ran, "one more": ran + 1}[str(results)]
                result = pb.EntityBatchResult(
                    results=[pb.OperationResult(success=pb.OperationResultSuccess()) for _ in range(count)],
                    actions=actions.actions,
                )
                result.entityState.value = "1"
            result.completionToken = item.completionToken
            return "CompleteEntityTask", result

        return answer

    def stale(self) -> None:
        index = int(self.draw(st.integers(0, 1000)))  # type: ignore[call-overload]
        if not self.old_tokens:
            return
        kind, token = self.old_tokens[index % len(self.old_tokens)]
        rpc, request = _ABANDON[kind]
        self.send(rpc, request(completionToken=token))

    def reopen(self) -> None:
        self.stream[0].close()
        self.stream[0] = WorkStream(self.fuzz.channel)

    def step(self) -> None:
        steps: list[Callable[[], None]] = [
            self.start, self.start, self.raise_event, self.terminate, self.suspend, self.resume, self.purge,
            self.rewind, self.restart, self.read, self.signal, self.skip_graceful, self.hostile,
            self.work, self.work, self.work, self.work, self.stale, self.reopen,
        ]
        self.draw(st.sampled_from(steps), label="step")()  # type: ignore[operator]


_ABANDON: dict[str, tuple[str, type[Message]]] = {
    "orchestratorRequest": ("AbandonTaskOrchestratorWorkItem", pb.AbandonOrchestrationTaskRequest),
    "activityRequest": ("AbandonTaskActivityWorkItem", pb.AbandonActivityTaskRequest),
    "entityRequestV2": ("AbandonTaskEntityWorkItem", pb.AbandonEntityTaskRequest),
}


def test_random_sequences_of_client_and_worker_calls(fuzz: FuzzSidecar) -> None:
    stream = [WorkStream(fuzz.channel)]
    old_tokens: list[tuple[str, str]] = []
    examples = itertools.count()

    @SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        sequence = Sequence(fuzz, stream, data, f"seq{next(examples)}", old_tokens)
        for _ in range(int(data.draw(st.integers(1, 15), label="steps"))):
            sequence.step()

    try:
        run()
    finally:
        stream[0].close()
    fuzz.check()
