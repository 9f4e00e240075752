"""Crash test for entities: kill -9 the sidecar while transfers hold entity locks, restart it.

50 transfer orchestrations move money between 5 account entities inside critical sections.
The sidecar (a subprocess on a SQLite file) is killed mid-run and restarted on the same
file and port: every transfer must complete, and the total balance must be exact (no batch
applied twice, no lock lost or left behind).
"""

from __future__ import annotations

import threading

import pytest

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.worker import TaskHubGrpcWorker
from samples import bank_transfer
from tests.e2e.conftest import free_port
from tests.e2e.test_entities import require_entity_support

ACCOUNTS = 5
TRANSFERS = 50
OPENING_BALANCE = 100
WAIT = 120.0


class CountingAccount(bank_transfer.Account):
    """The sample's account, counting the operations it runs (for deciding when to crash)."""

    executed = 0
    crash_after = 0
    lock = threading.Lock()
    reached = threading.Event()

    def _tick(self) -> None:
        cls = CountingAccount
        with cls.lock:
            cls.executed += 1
            if cls.executed >= cls.crash_after:
                cls.reached.set()

    def deposit(self, amount: int) -> int:
        self._tick()
        return super().deposit(amount)

    def withdraw(self, amount: int) -> int:
        self._tick()
        return super().withdraw(amount)

    def balance(self) -> int:
        self._tick()
        return super().balance()


@pytest.mark.our_sidecar("kills and restarts this repository's sidecar process")
def test_kill_9_during_locked_transfers_keeps_the_total_and_completes_all(tmp_path, sidecar_process) -> None:
    db = tmp_path / "entities-crash.db"
    port = free_port()
    first = sidecar_process.start(db, port)
    require_entity_support(first.address)
    CountingAccount.executed = 0
    # Opening deposits, then about a third of the transfers' operations (3 per transfer).
    CountingAccount.crash_after = ACCOUNTS + TRANSFERS
    CountingAccount.reached.clear()

    worker = TaskHubGrpcWorker(
        host_address=first.address,
        resiliency_options=GrpcWorkerResiliencyOptions(
            reconnect_backoff_base_seconds=0.1, reconnect_backoff_cap_seconds=1.0
        ),
    )
    worker.add_entity(CountingAccount, name="account")
    for orchestrator in (bank_transfer.open_accounts, bank_transfer.transfer, bank_transfer.audit):
        worker.add_orchestrator(orchestrator)
    worker.start()
    keys = [f"acct-{i}" for i in range(ACCOUNTS)]
    try:
        with TaskHubGrpcClient(host_address=first.address) as client:
            opened = client.schedule_new_orchestration(
                bank_transfer.open_accounts, input={"keys": keys, "amount": OPENING_BALANCE}, instance_id="open"
            )
            state = client.wait_for_orchestration_completion(opened, timeout=WAIT)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            ids = []
            for i in range(TRANSFERS):
                source = i % ACCOUNTS
                target = (source + 1 + i % (ACCOUNTS - 1)) % ACCOUNTS
                params = {"from": keys[source], "to": keys[target], "amount": 10 + (i * 13) % 60}
                ids.append(client.schedule_new_orchestration(
                    bank_transfer.transfer, input=params, instance_id=f"transfer-{i:02d}"
                ))
        assert CountingAccount.reached.wait(timeout=WAIT), "the transfers never got going"
        first.kill()
        executed_at_kill = CountingAccount.executed

        second = sidecar_process.start(db, port)
        with TaskHubGrpcClient(host_address=second.address) as client:
            for instance_id in ids:
                state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
                assert state is not None, f"{instance_id} was lost"
                assert state.runtime_status == OrchestrationStatus.COMPLETED, (
                    instance_id, state.runtime_status, state.failure_details,
                )
            # Transfers were still running when the sidecar died: operations ran after the restart.
            assert CountingAccount.executed > executed_at_kill
            audit = client.schedule_new_orchestration(bank_transfer.audit, input=keys, instance_id="audit")
            state = client.wait_for_orchestration_completion(audit, timeout=WAIT)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
            snapshot = state.get_output()
            assert snapshot["total"] == ACCOUNTS * OPENING_BALANCE, snapshot
            assert min(snapshot["balances"]) >= 0
            for k in keys:
                meta = client.get_entity(bank_transfer.account(k))
                assert meta is not None and meta.get_locked_by() is None and meta.backlog_queue_size == 0
    finally:
        worker.stop(timeout=10)
