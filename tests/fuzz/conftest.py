"""The fuzz suite's sidecar: one in-process sidecar on a SQLite file, served over real gRPC, for the session.

Before any fuzzing, ``witnesses`` are made on it: finished instances (completed, failed,
terminated) with histories, a running one waiting on a timer in the year 9000, a suspended one,
and an entity with state. Every fuzz test ends by checking that the sidecar still answers Hello
and that the witnesses read back byte for byte as they did before (:meth:`FuzzSidecar.check`).

Requests that would legitimately delete the witnesses (DeleteTaskHub, CreateTaskHub with
``recreateIfExists``, PurgeInstances by filter, CleanEntityStorage) go to a second, scratch
sidecar instead (:meth:`FuzzSidecar.target_for`), so that they are fuzzed too.

Hypothesis keeps nothing in the repository: its database is off in every test's settings, and
its other files go to a directory under the system's temporary directory.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "durabletask-fuzz-hypothesis"))

import grpc  # noqa: E402
import pytest  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402
from google.protobuf.message import DecodeError, Message  # noqa: E402
from google.protobuf.message_factory import GetMessageClass  # noqa: E402

from durabletask.internal import orchestrator_service_pb2 as pb  # noqa: E402
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc  # noqa: E402
from durabletask.internal import work_batches_pb2 as batches_pb  # noqa: E402
from sidecar.dispatch import DispatchOptions  # noqa: E402
from sidecar.engine_events import to_timestamp  # noqa: E402
from sidecar.server import SidecarServer  # noqa: E402

SERVICES = (pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"], batches_pb.DESCRIPTOR.services_by_name["WorkBatches"])
# Every RPC of the sidecar, by name (the names are unique across its services).
METHODS = {method.name: method for service in SERVICES for method in service.methods}
RPCS = list(METHODS)
# The fuzzed sidecar's message limit: small, so that values up to the limit are cheap to make.
MESSAGE_LIMIT = 1024 * 1024
UNDECODABLE = "Exception deserializing request!"  # the one INTERNAL answer allowed (see sidecar/transport.py)
LONG_POLLS = frozenset({"WaitForInstanceStart", "WaitForInstanceCompletion"})
STREAMS = frozenset(name for name, method in METHODS.items() if method.server_streaming)
# How long one ordinary call may take before the sidecar counts as stuck.
CALL_TIMEOUT = 30.0
FAST = DispatchOptions(stream_grace=0.2, health_ping_interval=0.5, safety_poll=0.5)


class Outcome:
    """What one call got: its status code and message (OK and "" when it succeeded)."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"Outcome({self.code.name}, {self.details[:300]!r})"


class WorkStream:
    """A GetWorkItems stream whose work items (health pings left out) are collected in a queue."""

    def __init__(self, channel: grpc.Channel, request: pb.GetWorkItemsRequest | None = None) -> None:
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self.opened = threading.Event()
        self._call = pb_grpc.TaskHubSidecarServiceStub(channel).GetWorkItems(request or pb.GetWorkItemsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "no health ping when the stream opened"

    def _read(self) -> None:
        try:
            for item in self._call:
                self.opened.set()
                if not item.HasField("healthPing"):
                    self.items.put(item)
        except grpc.RpcError:
            pass

    def next(self, timeout: float) -> pb.WorkItem | None:
        """The next work item, or None when none came within ``timeout`` seconds."""
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Cancel the stream (its unfinished items go back to the queue after the grace period)."""
        self._call.cancel()
        self._thread.join(timeout=10)


class FuzzSidecar:
    """The fuzzed sidecar and its scratch twin, raw callers for every RPC, and the witnesses' snapshot."""

    def __init__(self, directory: Path) -> None:
        self.server = SidecarServer(str(directory / "fuzz.db"), host="localhost", max_message_size=MESSAGE_LIMIT,
                                    dispatch_options=FAST)
        self.scratch = SidecarServer(str(directory / "scratch.db"), host="localhost", max_message_size=MESSAGE_LIMIT,
                                     dispatch_options=FAST)
        options = [("grpc.max_receive_message_length", 64 * MESSAGE_LIMIT),
                   ("grpc.max_send_message_length", 64 * MESSAGE_LIMIT)]
        self.channel = grpc.insecure_channel(f"localhost:{self.server.start(0)}", options=options)
        self.scratch_channel = grpc.insecure_channel(f"localhost:{self.scratch.start(0)}", options=options)
        self.stub = pb_grpc.TaskHubSidecarServiceStub(self.channel)
        self.witness_ids: list[str] = []
        self.witness_entity = ""
        self.before: list[bytes] = []
        self.seen: Counter[tuple[str, str]] = Counter()  # (rpc, status name) -> calls

    def close(self) -> None:
        self.channel.close()
        self.scratch_channel.close()
        self.server.stop(grace=0.2)
        self.scratch.stop(grace=0.2)

    # --- raw calls -------------------------------------------------------------------------------

    def call(self, rpc: str, data: bytes, channel: grpc.Channel | None = None) -> Outcome:
        """Send ``data`` as the request of ``rpc`` (no serialization) and return what came back.

        Long polls get a short deadline; a stream is read to its end (StreamInstanceHistory)
        or up to its first item (GetWorkItems), then cancelled.
        """
        channel = channel or self.target_for(rpc, data)
        path = f"/{METHODS[rpc].containing_service.full_name}/{rpc}"
        try:
            if rpc not in STREAMS:
                timeout = 0.05 if rpc in LONG_POLLS else CALL_TIMEOUT
                channel.unary_unary(path)(data, timeout=timeout)
            elif rpc in ("GetWorkItems", "GetWorkItemBatches"):
                responses = channel.unary_stream(path)(data, timeout=CALL_TIMEOUT)
                try:
                    next(responses)
                finally:
                    responses.cancel()
            else:
                for _ in channel.unary_stream(path)(data, timeout=CALL_TIMEOUT):
                    pass
        except grpc.RpcError as exc:
            return Outcome(exc.code(), exc.details() or "")
        return Outcome(grpc.StatusCode.OK)

    def target_for(self, rpc: str, data: bytes) -> grpc.Channel:
        """The scratch sidecar for requests that may delete the witnesses as they are meant to; else the fuzzed one."""
        if rpc in ("DeleteTaskHub", "CleanEntityStorage"):
            return self.scratch_channel
        parsed = _parse(rpc, data)
        if rpc == "CreateTaskHub" and (parsed is None or parsed.recreateIfExists):  # type: ignore[attr-defined]
            return self.scratch_channel
        if rpc == "PurgeInstances" and (parsed is None or parsed.HasField("purgeInstanceFilter")):
            return self.scratch_channel
        return self.channel

    # --- the properties --------------------------------------------------------------------------

    def check_outcome(self, rpc: str, size: int, outcome: Outcome) -> None:
        """No INTERNAL or UNKNOWN from the handlers; RESOURCE_EXHAUSTED only for oversize requests; no stuck calls."""
        code = outcome.code
        self.seen[rpc, code.name] += 1
        if code == grpc.StatusCode.INTERNAL:
            assert outcome.details == UNDECODABLE, f"{rpc}: {outcome}"
        assert code != grpc.StatusCode.UNKNOWN, f"{rpc}: {outcome}"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert size > MESSAGE_LIMIT, f"{rpc} ({size} bytes): {outcome}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert rpc in LONG_POLLS, f"{rpc} did not answer within {CALL_TIMEOUT}s"
        assert code != grpc.StatusCode.UNAVAILABLE, f"{rpc}: {outcome}"

    def check(self) -> None:
        """The sidecar still serves (Hello, on both) and the witnesses are unchanged."""
        self.stub.Hello(empty_pb2.Empty(), timeout=10)
        pb_grpc.TaskHubSidecarServiceStub(self.scratch_channel).Hello(empty_pb2.Empty(), timeout=10)
        assert self.snapshot() == self.before

    def snapshot(self) -> list[bytes]:
        """Each witness (GetInstance with payloads, and its history) and the witness entity, serialized."""
        seen: list[bytes] = []
        for instance_id in self.witness_ids:
            state = self.stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True))
            seen.append(state.SerializeToString(deterministic=True))
            chunks = self.stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=instance_id))
            seen.extend(event.SerializeToString(deterministic=True) for chunk in chunks for event in chunk.events)
        entity = self.stub.GetEntity(pb.GetEntityRequest(instanceId=self.witness_entity, includeState=True))
        seen.append(entity.SerializeToString(deterministic=True))
        return seen

    # --- the witnesses ---------------------------------------------------------------------------

    def make_witnesses(self) -> None:
        """Instances and an entity in every resting state, made with a raw worker before any fuzzing."""
        prefix = f"witness-{uuid.uuid4().hex[:8]}"
        stream = WorkStream(self.channel)
        try:
            for name, ending in (("completed", "complete"), ("failed", "fail"), ("timer", "timer"),
                                 ("suspended", "suspend"), ("terminated", "terminate")):
                instance_id = f"{prefix}-{name}"
                request = pb.CreateInstanceRequest(instanceId=instance_id, name="witness", tags={"k": "v"})
                request.input.value = '"in"'
                self.stub.StartInstance(request)
                self._drive(stream, instance_id, ending)
                self.witness_ids.append(instance_id)
            self.witness_entity = f"@witness@{prefix}"
            self.stub.SignalEntity(pb.SignalEntityRequest(instanceId=self.witness_entity, name="set"))
            item = _take(stream, "entityRequestV2")
            result = pb.EntityBatchResult(
                results=[pb.OperationResult(success=pb.OperationResultSuccess())], completionToken=item.completionToken
            )
            result.entityState.value = '"state"'
            self.stub.CompleteEntityTask(result)
        finally:
            stream.close()
        self._assert_no_work()
        self.before = self.snapshot()

    def _drive(self, stream: WorkStream, instance_id: str, ending: str) -> None:
        """First turn schedules an activity; its result comes back; the second turn ends as ``ending`` says."""
        turn = _take(stream, "orchestratorRequest")
        action = pb.OrchestratorAction(id=1)
        action.scheduleTask.name = "step"
        self._complete(turn, instance_id, action)
        activity = _take(stream, "activityRequest")
        response = pb.ActivityResponse(instanceId=instance_id, taskId=activity.activityRequest.taskId,
                                       completionToken=activity.completionToken)
        response.result.value = '"done"'
        self.stub.CompleteActivityTask(response)
        turn = _take(stream, "orchestratorRequest")
        if ending == "suspend":
            self._complete(turn, instance_id)
            self.stub.SuspendInstance(pb.SuspendRequest(instanceId=instance_id))
            _eventually(lambda: self._status(instance_id) == pb.ORCHESTRATION_STATUS_SUSPENDED, "suspension")
            return
        if ending == "terminate":
            self._complete(turn, instance_id)
            self.stub.TerminateInstance(pb.TerminateRequest(instanceId=instance_id))
            return
        action = pb.OrchestratorAction(id=2)
        if ending == "timer":
            action.createTimer.fireAt.CopyFrom(to_timestamp(datetime(9000, 1, 1, tzinfo=timezone.utc)))
        else:
            done = action.completeOrchestration
            done.orchestrationStatus = (  # type: ignore[assignment]
                pb.ORCHESTRATION_STATUS_COMPLETED if ending == "complete" else pb.ORCHESTRATION_STATUS_FAILED
            )
            if ending == "complete":
                done.result.value = '"out"'
            else:
                done.failureDetails.errorType = "ValueError"
                done.failureDetails.errorMessage = "failed on purpose"
        self._complete(turn, instance_id, action)

    def _complete(self, turn: pb.WorkItem, instance_id: str, *actions: pb.OrchestratorAction) -> None:
        self.stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(instanceId=instance_id, completionToken=turn.completionToken, actions=actions)
        )

    def _status(self, instance_id: str) -> int:
        return int(self.stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id)).orchestrationState
                   .orchestrationStatus)

    def _assert_no_work(self) -> None:
        """No witness has work left for a worker (fuzzed workers must not be able to change them)."""
        stream = WorkStream(self.channel)
        try:
            item = stream.next(timeout=0.5)
            assert item is None, f"a witness still has work: {item}"
        finally:
            stream.close()


def _parse(rpc: str, data: bytes) -> Message | None:
    """``data`` as ``rpc``'s request message, or None when it does not parse."""
    cls = GetMessageClass(METHODS[rpc].input_type)
    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None


def _take(stream: WorkStream, kind: str) -> pb.WorkItem:
    item = stream.next(timeout=10)
    assert item is not None and item.WhichOneof("request") == kind, item
    return item


def _eventually(probe: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.02)


@pytest.fixture(scope="session")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzSidecar]:
    """The fuzzed sidecar with its witnesses made (see the module docstring)."""
    sidecar = FuzzSidecar(tmp_path_factory.mktemp("fuzz"))
    try:
        sidecar.make_witnesses()
        yield sidecar
        if os.environ.get("DURABLETASK_FUZZ_REPORT"):
            for (rpc, code), count in sorted(sidecar.seen.items()):
                print(f"{rpc:40} {code:20} {count}")
    finally:
        sidecar.close()

