"""GroupCommitter: concurrent requests share transactions, each gets its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from sidecar.group_commit import GroupCommitter


class Recorder:
    """A store stand-in that records which requests each transaction held."""

    def __init__(self, *, fail_batches: bool = False) -> None:
        self.transactions: list[list[int]] = []
        self.fail_batches = fail_batches
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def batch(self, requests: Sequence[int]) -> list[BaseException | None]:
        self.gate.wait(5)
        if self.fail_batches:
            raise RuntimeError("the transaction failed")
        with self.lock:
            self.transactions.append(list(requests))
        return [ValueError(f"bad {r}") if r < 0 else None for r in requests]

    def one(self, request: int) -> None:
        self.gate.wait(5)
        with self.lock:
            self.transactions.append([request])
        if request < 0:
            raise ValueError(f"bad {request}")


def run_all(committer: GroupCommitter[int], requests: list[int]) -> dict[int, BaseException | None]:
    outcomes: dict[int, BaseException | None] = {}

    def submit(request: int) -> None:
        try:
            committer.submit(request)
            outcomes[request] = None
        except BaseException as exc:
            outcomes[request] = exc

    threads = [threading.Thread(target=submit, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a submitter never got its outcome"
    return outcomes


def test_a_lone_request_is_committed_at_once() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one)
    committer.submit(7)
    assert store.transactions == [[7]]


def test_requests_arriving_while_one_commits_share_the_next_transaction() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one, max_batch=8)
    store.gate.clear()  # the first commit blocks until the others queued up
    first = threading.Thread(target=committer.submit, args=(0,))
    first.start()
    others = threading.Thread(target=run_all, args=(committer, list(range(1, 21))))
    others.start()
    while len(committer._pending) < 20:  # noqa: SLF001 - wait until every request queued behind the first
        threading.Event().wait(0.001)
    store.gate.set()
    first.join(10)
    others.join(10)
    committed = sorted(r for tx in store.transactions for r in tx)
    assert committed == list(range(21)), "every request committed exactly once"
    assert store.transactions[0] == [0]
    assert all(len(tx) <= 8 for tx in store.transactions)
    assert len(store.transactions) == 1 + 3  # 20 waiting requests in batches of at most 8
    assert committer.batches == 3


def test_each_request_gets_its_own_error() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one)
    outcomes = run_all(committer, [1, -2, 3, -4, 5])
    assert outcomes[1] is None and outcomes[3] is None and outcomes[5] is None
    assert isinstance(outcomes[-2], ValueError) and "bad -2" in str(outcomes[-2])
    assert isinstance(outcomes[-4], ValueError)


def test_a_failed_batch_is_committed_request_by_request() -> None:
    store = Recorder(fail_batches=True)
    committer = GroupCommitter(store.batch, store.one)
    store.gate.clear()
    first = threading.Thread(target=committer.submit, args=(0,))
    first.start()
    others = threading.Thread(target=run_all, args=(committer, [1, -2, 3]))
    others.start()
    while len(committer._pending) < 3:  # noqa: SLF001
        threading.Event().wait(0.001)
    store.gate.set()
    first.join(10)
    others.join(10)
    assert sorted(r for tx in store.transactions for r in tx) == [-2, 0, 1, 3]
    assert all(len(tx) == 1 for tx in store.transactions)


def test_the_leader_s_own_error_is_raised() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one)
    with pytest.raises(ValueError, match="bad -1"):
        committer.submit(-1)
    committer.submit(2)  # the lead was handed back
    assert store.transactions[-1] == [2]


def test_a_failure_every_request_shares_is_not_retried_one_by_one() -> None:
    store = Recorder(fail_batches=True)
    committer = GroupCommitter(store.batch, store.one, shared_failure=lambda exc: isinstance(exc, RuntimeError))
    store.gate.clear()
    first = threading.Thread(target=committer.submit, args=(0,))
    first.start()
    outcomes: dict[int, BaseException | None] = {}
    others = threading.Thread(target=lambda: outcomes.update(run_all(committer, [1, 2, 3])))
    others.start()
    while len(committer._pending) < 3:  # noqa: SLF001
        threading.Event().wait(0.001)
    store.gate.set()
    first.join(10)
    others.join(10)
    assert [tx for tx in store.transactions if len(tx) == 1 and tx[0] != 0] == [], "no one-by-one commits"
    assert all(isinstance(outcomes[r], RuntimeError) for r in (1, 2, 3))


def test_submit_many_commits_a_thread_s_requests_together_with_their_own_errors() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one, max_batch=4)
    errors = committer.submit_many([1, -2, 3, 4, 5, -6])
    assert [e is None for e in errors] == [True, False, True, True, True, False]
    assert "bad -2" in str(errors[1]) and "bad -6" in str(errors[5])
    # The lead passes to the submitter's own later requests: batches of at most 4, in order.
    assert store.transactions == [[1, -2, 3, 4], [5, -6]]
    assert committer.submit_many([]) == []


def test_submit_many_waits_behind_a_commit_in_flight_and_joins_others() -> None:
    store = Recorder()
    committer = GroupCommitter(store.batch, store.one, max_batch=64)
    store.gate.clear()
    first = threading.Thread(target=committer.submit, args=(0,))
    first.start()
    while not committer._leading:  # noqa: SLF001 - the first commit is in flight
        threading.Event().wait(0.001)
    results: list[list[BaseException | None]] = []
    many = threading.Thread(target=lambda: results.append(committer.submit_many([1, 2, 3])))
    many.start()
    one = threading.Thread(target=run_all, args=(committer, [4]))
    one.start()
    while len(committer._pending) < 4:  # noqa: SLF001
        threading.Event().wait(0.001)
    store.gate.set()
    for thread in (first, many, one):
        thread.join(10)
    assert results == [[None, None, None]]
    assert store.transactions[0] == [0]
    assert sorted(store.transactions[1]) == [1, 2, 3, 4], "queued requests of both threads share one transaction"
