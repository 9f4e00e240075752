"""Replay-testing a code change against a real instance, and line-numbered non-determinism on a real worker.

An instance runs on the in-process sidecar to a durable pause; its history, fetched with the
client, replays against the same code and fails against a changed version with the line of the
changed call. Then the changed code runs on a worker: the instance fails, and its failure
details name that line too.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.testing import fetch_histories, load_history, replay_histories, save_history
from durabletask.worker import TaskHubGrpcWorker
from samples import replay_testing
from tests.e2e.conftest import InProcessSidecar, eventually

WAIT = 10.0


def reserve(ctx: task.ActivityContext, item: str) -> str:
    return f"reserved {item}"


def order(ctx: task.OrchestrationContext, item: str):
    reservation = yield ctx.call_activity(reserve, input=item)
    ctx.set_custom_status("awaiting payment")
    paid = yield ctx.wait_for_external_event("pay")
    return [reservation, paid]


def order_changed(ctx: task.OrchestrationContext, item: str):
    reservation = yield ctx.call_activity("reserve_twice", input=item)
    paid = yield ctx.wait_for_external_event("pay")
    return [reservation, paid]


order_changed.__name__ = "order"
CHANGED_LINE = order_changed.__code__.co_firstlineno + 1


def start_worker(address: str, orchestrator: Any) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_orchestrator(orchestrator)
    worker.add_activity(reserve)
    worker.start()
    return worker


def test_fetched_history_replays_and_a_changed_version_fails_naming_the_line(
    sidecar: InProcessSidecar, tmp_path: Path
) -> None:
    iid = f"order-{uuid.uuid4().hex[:8]}"
    with TaskHubGrpcClient(host_address=sidecar.address) as client:
        worker = start_worker(sidecar.address, order)
        try:
            client.schedule_new_orchestration(order, input="book", instance_id=iid)

            def paused() -> bool:
                state = client.get_orchestration_state(iid)
                return state is not None and state.serialized_custom_status == '"awaiting payment"'

            eventually(paused, WAIT, "the instance to wait for payment")
        finally:
            worker.stop()

        histories = fetch_histories(client, name="order")
        assert list(histories) == [iid]
        saved = tmp_path / f"{iid}.json"
        save_history(saved, histories[iid])
        assert load_history(saved) == histories[iid]

        for recorded in (histories, [saved]):
            (outcome,) = replay_histories(order, recorded).values()
            assert outcome.status is OrchestrationStatus.RUNNING
            assert outcome.waiting_for == ["wait_for_external_event('pay')"]
            assert outcome.get_custom_status() == "awaiting payment"
            with pytest.raises(task.NonDeterminismError) as caught:
                replay_histories(order_changed, recorded)
            assert f"{__file__}:{CHANGED_LINE} (in order_changed)" in str(caught.value)
            assert "expected call_activity('reserve_twice') but history has a taskScheduled('reserve') at id 1" in str(
                caught.value
            )

        worker = start_worker(sidecar.address, order_changed)
        try:
            client.raise_orchestration_event(iid, "pay", data=True)
            state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        finally:
            worker.stop()
        assert state is not None and state.runtime_status is OrchestrationStatus.FAILED
        details = state.failure_details
        assert details is not None and details.error_type == "durabletask.task.NonDeterminismError"
        assert f"{__file__}:{CHANGED_LINE} (in order_changed)" in details.message
        # The event's time follows when the backend stamps its events (the official test backend does not).
        assert "from taskScheduled event ID 1" in details.message


def test_replay_testing_sample(sidecar: InProcessSidecar) -> None:
    worker = TaskHubGrpcWorker(host_address=sidecar.address)
    replay_testing.register(worker)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=sidecar.address) as client:
            report = replay_testing.run(client, timeout=WAIT)
    finally:
        worker.stop()
    assert report["current code"]["status"] == "RUNNING"
    assert len(report["current code"]["waiting for"]) == 2  # the approval event and its timeout
    line = replay_testing.approval_workflow_v2.__code__.co_firstlineno + 2
    assert report["changed code"].startswith("code:    call_activity('audit_order') at ")
    assert report["changed code"].endswith(f"replay_testing.py:{line} (in approval_workflow_v2)")
