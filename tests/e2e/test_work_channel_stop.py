"""A worker that stops while its work channel is open: it waits for the outcomes of the results it
sent (nothing goes again one by one, nothing is refused as stale), and the work its last results
make goes to another worker without waiting out the stopping worker's stream grace period."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import work_batches_pb2 as batches_pb
from durabletask.internal.worker_channel import ChannelSender
from durabletask.worker import TaskHubGrpcWorker
from sidecar.servicer_batches import BatchServicer
from tests.e2e.conftest import FAST, eventually, fast_sidecar, official_backend_mode
from tests.e2e.test_work_channel import WAIT, Lines, double

pytestmark = pytest.mark.skipif(official_backend_mode(),
                                reason="WorkBatches is this repository's sidecar's service")


def one_step(ctx: task.OrchestrationContext, x: int):  # type: ignore[no-untyped-def]
    return (yield ctx.call_activity(double, input=x))


def test_a_worker_that_stops_with_a_result_unanswered_waits_for_its_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sidecar holds the settling of an orchestration's last turn until the worker is stopping.
    The worker ends its side of the channel and waits for the outcome instead of cancelling the call
    (which lost the outcome: the result went again one by one, and was refused as stale)."""
    settle = BatchServicer.complete_turns
    held, release = threading.Event(), threading.Event()

    def settle_late(self: BatchServicer, results: list[pb.OrchestratorResponse]) -> batches_pb.CompletionOutcomes:
        if any(a.HasField("completeOrchestration") for r in results for a in r.actions):
            held.set()
            release.wait(WAIT)
        return settle(self, results)

    monkeypatch.setattr(BatchServicer, "complete_turns", settle_late)
    lines = Lines()
    logger = logging.getLogger(f"test-work-channel-{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    with fast_sidecar() as (_, address), TaskHubGrpcClient(host_address=address) as client:
        worker = TaskHubGrpcWorker(host_address=address, logger=logger)
        worker.add_orchestrator(one_step)
        worker.add_activity(double)
        worker.start()
        stream = worker._stream  # noqa: SLF001
        iid = client.schedule_new_orchestration(one_step, input=21)
        assert held.wait(WAIT), "the last turn's result never reached the sidecar"
        sender = stream.batch_stub()
        assert isinstance(sender, ChannelSender)
        stopping = threading.Thread(target=worker.stop, daemon=True)
        stopping.start()
        eventually(lambda: sender._ended, WAIT, "the stopping worker to end its side of the channel")  # noqa: SLF001
        release.set()
        stopping.join(WAIT)
        assert not stopping.is_alive(), "the worker did not stop"
        state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
        assert state.serialized_output == "42"
    assert not [line for line in lines.lines if "one by one" in line], lines.lines
    assert not [line for line in lines.lines if "no longer holds" in line], lines.lines
    assert not [line for line in lines.lines if "closed the work-item stream" in line], lines.lines


def two_steps(ctx: task.OrchestrationContext, x: int):  # type: ignore[no-untyped-def]
    first = yield ctx.call_activity(double, input=x)
    return (yield ctx.call_activity(double, input=first))


def test_the_work_a_stopping_workers_last_results_make_goes_to_another_worker_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker A's first activity result is settled only once A is stopping (its side of the channel
    ended). The turn that result unblocks reaches worker B without waiting out A's stream's grace
    period (5 s here): the sidecar leases it to another stream once it has read the end of A's
    side, and A hands back at once what it is sent before that."""
    settle = BatchServicer.complete_activities
    held, release = threading.Event(), threading.Event()

    def settle_late(self: BatchServicer, results: list[pb.ActivityResponse]) -> batches_pb.CompletionOutcomes:
        if not held.is_set():
            held.set()
            release.wait(WAIT)
        return settle(self, results)

    monkeypatch.setattr(BatchServicer, "complete_activities", settle_late)
    options = dataclasses.replace(FAST, stream_grace=5.0)
    workers: list[TaskHubGrpcWorker] = []
    with fast_sidecar(options) as (_, address), TaskHubGrpcClient(host_address=address) as client:
        try:
            for _ in range(2):
                worker = TaskHubGrpcWorker(host_address=address)
                worker.add_orchestrator(two_steps)
                worker.add_activity(double)
                workers.append(worker)
            first, second = workers
            first.start()
            iid = client.schedule_new_orchestration(two_steps, input=5)
            assert held.wait(WAIT), "the first activity's result never reached the sidecar"
            second.start()
            assert second._stream.connected.wait(WAIT)  # noqa: SLF001
            sender = first._stream.batch_stub()  # noqa: SLF001
            assert isinstance(sender, ChannelSender)
            stopping = threading.Thread(target=first.stop, daemon=True)
            stopping.start()
            eventually(lambda: sender._ended, WAIT, "the stopping worker to end its side of the channel")  # noqa: SLF001
            released = time.monotonic()
            release.set()
            state = client.wait_for_orchestration_completion(iid, timeout=WAIT)
            took = time.monotonic() - released
            stopping.join(WAIT)
        finally:
            release.set()
            for worker in workers:
                worker.stop()
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.serialized_output == "20"
    assert took < 3.0, f"the next turn waited {took:.2f} s: it waited out the stopping worker's stream's grace"
