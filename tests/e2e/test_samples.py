"""Every sample in samples/ runs end to end against the real sidecar and gives the right answer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from samples import (
    async_orchestrator,
    bank_transfer,
    dataclasses_io,
    durable_timer,
    entity_counter,
    eternal_orchestration,
    fan_out_fan_in,
    function_chaining,
    human_interaction,
    monitor,
    retries,
    saga,
    sub_orchestrations,
)
from tests.e2e.conftest import official_backend_mode


@pytest.fixture
def connect(sidecar) -> Iterator:
    """Starts a worker with a sample's functions and yields a client."""
    opened: list = []

    def _connect(sample) -> TaskHubGrpcClient:
        worker = TaskHubGrpcWorker(host_address=sidecar.address)
        sample.register(worker)
        worker.start()
        client = TaskHubGrpcClient(host_address=sidecar.address)
        opened.append((worker, client))
        return client

    yield _connect
    for worker, client in opened:
        client.close()
        worker.stop()


def test_function_chaining(connect) -> None:
    assert function_chaining.run(connect(function_chaining)) == [
        "Hello, Tokyo!",
        "Hello, Seattle!",
        "Hello, London!",
    ]


def test_fan_out_fan_in(connect) -> None:
    expected = sum(i * i for i in range(1, 21))
    assert fan_out_fan_in.run(connect(fan_out_fan_in)) == {"parallel": expected, "batched": expected}


def test_human_interaction_approved(connect) -> None:
    assert human_interaction.run(connect(human_interaction)) == "order A-17 placed, approved by Jane"


def test_human_interaction_times_out(connect) -> None:
    client = connect(human_interaction)
    instance_id = client.schedule_new_orchestration(
        human_interaction.approval_workflow, input={"id": "B-2", "timeout_seconds": 0.5}
    )
    state = client.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == "cancelled: no approval in time"


def test_durable_timer_and_scheduled_start(connect) -> None:
    client = connect(durable_timer)
    out = durable_timer.run(client)
    assert out["timer"] == {"result": "reminder sent: stand up", "waited_at_least": True}
    assert out["scheduled"]["result"] == "reminder sent: scheduled"


def test_sub_orchestrations(connect) -> None:
    results = sub_orchestrations.run(connect(sub_orchestrations))
    assert [r["device"] for r in results] == ["dev-1", "dev-2", "dev-3"]
    assert all(r["result"].endswith("firmware 2.0") for r in results)
    if not official_backend_mode():  # the official test backend records no parent for a child
        assert len({r["parent"] for r in results}) == 1 and results[0]["parent"]


def test_eternal_orchestration(connect) -> None:
    out = eternal_orchestration.run(connect(eternal_orchestration))
    assert out["rounds_completed"] == 5
    # continue_as_new discards old history: the last execution is short.
    assert out["history_events"] < 15


def test_monitor(connect) -> None:
    assert monitor.run(connect(monitor)) == {
        "found": {"status": "done", "checks": 3},
        "gave_up": {"status": "gave up", "checks": 3},
    }


def test_saga(connect) -> None:
    out = saga.run(connect(saga))
    assert out["happy"] == {"status": "booked", "steps": ["flight", "hotel", "car"]}
    assert out["compensated"]["status"] == "compensated"
    assert out["compensated"]["compensations"] == ["hotel cancelled", "flight cancelled"]
    assert "no availability for car" in out["compensated"]["error"]


def test_retries(connect) -> None:
    out = retries.run(connect(retries))
    assert out["recovers"] == "succeeded on attempt 3"
    assert out["gives_up"].startswith("gave up:") and "attempt 4 failed" in out["gives_up"]


def test_dataclass_input_and_output(connect) -> None:
    invoice = dataclasses_io.run(connect(dataclasses_io))
    assert invoice == dataclasses_io.Invoice("o-42", "Ada", 4.0, 2)


def test_entity_counter(connect) -> None:
    assert entity_counter.run(connect(entity_counter)) == {"function": 15, "class": 30, "stored_class_state": 30}


def test_bank_transfer(connect) -> None:
    out = bank_transfer.run(connect(bank_transfer))
    assert out["transfers"] == 12 and out["moved"] > 0
    assert out["total"] == 300 and min(out["balances"]) >= 0


def test_async_orchestrator(connect) -> None:
    out = async_orchestrator.run(connect(async_orchestrator))
    assert out["order"] == {
        "order": "order-7",
        "status": "approved",
        "supplier": "south",
        "price": 90,
        "reservation": "reserved:order-7",
        "shipment": "shipped:order-7",
        "messages": ["sent: order-7 confirmed", "sent: order-7 receipt"],
    }
    assert out["refused"].startswith("the orchestrator called asyncio.sleep() at ")
    assert "async_orchestrator.py:" in out["refused"] and "(in naps_with_asyncio)" in out["refused"]


def test_sample_main_runs_as_a_script(sidecar) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "samples.function_chaining", "--address", sidecar.address],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Hello, Seattle!" in proc.stdout
