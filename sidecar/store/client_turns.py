"""Client calls and workers' commits take turns at the SQLite store's one connection.

A client's call (StartInstance, a status query, a wait's first read) is one short transaction
that someone is waiting on; workers' results are group-committed, so a moment's wait only lets
more of them share a commit. With a plain lock, a client call queued behind every pending
commit: one client scheduling orchestrations one after another waited several transactions per
call while a worker was busy. :class:`TurnTakingLock` hands the lock, whenever both kinds wait,
to the kind that did not hold it last, so neither waits for more than one of the other's turns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_serving = threading.local()


@contextmanager
def serving_a_client() -> Iterator[None]:
    """Mark the store work this thread does meanwhile as a client call's."""
    before = getattr(_serving, "client", False)
    _serving.client = True
    try:
        yield
    finally:
        _serving.client = before


def for_a_client() -> bool:
    """True inside :func:`serving_a_client` on this thread."""
    return bool(getattr(_serving, "client", False))


class TurnTakingLock:
    """A re-entrant lock. While client calls and other work both wait, it goes to the kind that
    did not hold it last; otherwise to any waiter."""

    def __init__(self) -> None:
        mutex = threading.Lock()
        self._turns = (threading.Condition(mutex), threading.Condition(mutex))  # other work, client calls
        self._owner: int | None = None
        self._depth = 0
        self._waiting = [0, 0]
        self._last = 0

    def __enter__(self) -> TurnTakingLock:
        me = threading.get_ident()
        kind = 1 if for_a_client() else 0
        turn = self._turns[kind]
        with turn:
            if self._owner == me:
                self._depth += 1
                return self
            self._waiting[kind] += 1
            try:
                while self._owner is not None or (self._waiting[1 - kind] and self._last == kind):
                    turn.wait()
            except BaseException:
                self._waiting[kind] -= 1
                self._wake_next()  # one of the other kind may have been letting this one go first
                raise
            self._waiting[kind] -= 1
            self._owner, self._depth, self._last = me, 1, kind
            return self

    def __exit__(self, *exc: object) -> None:
        with self._turns[0]:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._wake_next()

    def _wake_next(self) -> None:
        """Wake one waiter of the kind whose turn it is (under the lock's mutex)."""
        other = 1 - self._last
        self._turns[other if self._waiting[other] else self._last].notify()
