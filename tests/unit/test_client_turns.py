"""The SQLite store's lock: client calls and other work take turns while both wait."""

from __future__ import annotations

import threading
import time

from sidecar.store.client_turns import TurnTakingLock, for_a_client, serving_a_client

WAIT = 5.0


def eventually(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_serving_a_client_marks_this_thread_only_and_nests() -> None:
    seen: list[bool] = []
    with serving_a_client():
        with serving_a_client():
            assert for_a_client()
        assert for_a_client()
        other = threading.Thread(target=lambda: seen.append(for_a_client()))
        other.start()
        other.join(WAIT)
    assert not for_a_client() and seen == [False]


def test_the_lock_is_reentrant() -> None:
    lock = TurnTakingLock()
    with lock, lock, serving_a_client(), lock:
        pass
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (lock.__enter__(), taken.set(), lock.__exit__()))
    thread.start()
    assert taken.wait(WAIT), "released after the nested holds"
    thread.join(WAIT)


def test_waiting_clients_and_other_work_alternate() -> None:
    lock = TurnTakingLock()
    order: list[str] = []
    done = threading.Barrier(7, timeout=WAIT)

    def take(kind: str) -> None:
        if kind == "client":
            with serving_a_client(), lock:
                order.append(kind)
        else:
            with lock:
                order.append(kind)
        done.wait()

    with lock:  # the last holder was other work: a client goes first
        threads = [threading.Thread(target=take, args=(kind,)) for kind in ["work"] * 3 + ["client"] * 3]
        for thread in threads:
            thread.start()
        eventually(lambda: lock._waiting == [3, 3], "all six waiting")  # noqa: SLF001
    done.wait()
    assert order == ["client", "work"] * 3


def test_one_kind_alone_is_never_held_back() -> None:
    lock = TurnTakingLock()
    count = [0]

    def take() -> None:
        for _ in range(200):
            with serving_a_client(), lock:
                count[0] += 1

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert count[0] == 800
