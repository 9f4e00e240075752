"""StartInstance calls that arrive together are created in one transaction (a group commit), and each
call gets its own answer once that transaction has committed."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import grpc
import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from sidecar.hub.instances import NewInstance
from sidecar.store import InstanceExistsError
from tests.e2e.conftest import eventually, fast_sidecar

TIMEOUT = 20.0


def test_starts_that_arrive_together_share_a_transaction_and_each_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fast_sidecar() as (server, address):
        hub = server.hub
        gate = threading.Event()
        batches: list[list[str]] = []
        create_one, create_many = hub.create_instance, hub.create_instances

        def held_create_one(*args: object) -> None:  # the first start holds its commit while the others queue
            gate.wait(TIMEOUT)
            create_one(*args)  # type: ignore[arg-type]

        def recorded_create_many(requests: Sequence[NewInstance]) -> list[InstanceExistsError | None]:
            batches.append([r.instance.instance_id for r in requests])
            return create_many(requests)

        monkeypatch.setattr(hub, "create_instance", held_create_one)
        monkeypatch.setattr(hub, "create_instances", recorded_create_many)

        channel = grpc.insecure_channel(address)
        stub = pb_grpc.TaskHubSidecarServiceStub(channel)
        answers: dict[int, str] = {}

        def start(n: int, instance_id: str) -> None:
            try:
                stub.StartInstance(pb.CreateInstanceRequest(name="orch", instanceId=instance_id), timeout=TIMEOUT)
                # Answered only after the commit: the instance is there to read.
                answers[n] = "created" if hub.get_instance(instance_id) is not None else "missing"
            except grpc.RpcError as error:
                answers[n] = error.code().name

        try:
            calls = [threading.Thread(target=start, args=(0, "first"))]
            calls[0].start()
            eventually(lambda: server.servicer._creations._leading, TIMEOUT, "the first start to hold its commit")
            ids = ["a", "b", "c", "dup", "dup"]
            calls += [threading.Thread(target=start, args=(n, iid)) for n, iid in enumerate(ids, 1)]
            for call in calls[1:]:
                call.start()
            eventually(lambda: len(server.servicer._creations._pending) == len(ids), TIMEOUT,
                       "the other starts to wait behind it")
            gate.set()
            for call in calls:
                call.join(TIMEOUT)
                assert not call.is_alive()
        finally:
            gate.set()
            channel.close()

        assert [sorted(batch) for batch in batches] == [sorted(ids)]  # one transaction for the five that waited
        assert [answers[n] for n in range(4)] == ["created"] * 4
        assert sorted([answers[4], answers[5]]) == ["ALREADY_EXISTS", "created"]
        for iid in ["first", *ids]:
            inst = hub.get_instance(iid)
            assert inst is not None and inst.status == pb.ORCHESTRATION_STATUS_PENDING
