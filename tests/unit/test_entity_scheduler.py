"""The pure entity scheduler: IDs, batch composition, per-sender order, locks, hopping, unlock."""

from __future__ import annotations

import random

import pytest

from sidecar import entity_scheduler as sched
from sidecar.entity_scheduler import LockHolder
from tests.unit.entity_queue_builders import NOW, call, lock, ops, signal, unlock

# --- entity IDs ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["@counter@a", "@Counter@a", "@COUNTER@Key With Spaces"])
def test_valid_entity_ids_are_normalized(value: str) -> None:
    parsed = sched.parse_entity_id(value)
    assert parsed.name == value.split("@")[1].lower()
    assert parsed.key == value.split("@")[2]
    assert sched.normalize_entity_id(value) == f"@{parsed.name}@{parsed.key}"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("counter@a", "form '@name@key'"),
        ("", "form '@name@key'"),
        ("@counter", "exactly two '@'"),
        ("@counter@a@b", "exactly two '@'"),
        ("@@a", "name is empty"),
        ("@counter@", "key is empty"),
    ],
)
def test_invalid_entity_ids_are_rejected_naming_the_id(value: str, words: str) -> None:
    with pytest.raises(sched.EntityIdError) as err:
        sched.parse_entity_id(value)
    assert f"'{value}'" in str(err.value) and words in str(err.value)


def test_query_prefix_normalization() -> None:
    assert sched.normalize_prefix("Counter") == "@counter"
    assert sched.normalize_prefix("@Counter@Ab") == "@counter@Ab"
    assert sched.normalize_prefix("@") == "@"
    assert sched.is_entity_id("@a@b") and not sched.is_entity_id("a")


# --- batches ---------------------------------------------------------------------------------


def test_batch_takes_queued_operations_in_order_across_senders() -> None:
    queue = [signal("c1", "a", seq=1), call("o1", "b", seq=2), signal("c2", "c", seq=3), signal("c1", "d", seq=4)]
    batch = sched.select_batch(None, queue)
    assert ops(batch) == [("c1", "a"), ("o1", "b"), ("c2", "c"), ("c1", "d")]


def test_batch_is_capped_by_count_and_bytes() -> None:
    queue = [signal("c", f"op{i}", seq=i + 1) for i in range(10)]
    assert [m.seq for m in sched.select_batch(None, queue, max_operations=3)] == [1, 2, 3]
    size = queue[0].size
    assert len(sched.select_batch(None, queue, max_bytes=size * 2 + 1)) == 2
    # The first operation is always taken, however large.
    assert len(sched.select_batch(None, queue, max_bytes=1)) == 1


def test_batch_of_empty_queue_is_empty() -> None:
    assert sched.select_batch(None, []) == []


def test_locked_entity_runs_only_its_holders_operations_and_others_keep_their_order() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [
        signal("client", "a", seq=1),
        call("orch-x", "b", seq=2),
        signal("orch-y", "c", seq=3),
        call("orch-x", "d", seq=4),
        signal("client", "e", seq=5),
    ]
    assert ops(sched.select_batch(holder, queue)) == [("orch-x", "b"), ("orch-x", "d")]
    # Once released, the others run in the order they arrived.
    rest = [m for m in queue if m.sender != "orch-x"]
    assert ops(sched.select_batch(None, rest)) == [("client", "a"), ("orch-y", "c"), ("client", "e")]


def test_batch_stops_at_a_lock_request_that_would_be_taken() -> None:
    queue = [signal("c", "a", seq=1), lock("orch-x", "cs", ["@e@k"], seq=2), signal("c", "b", seq=3)]
    assert ops(sched.select_batch(None, queue)) == [("c", "a")]


def test_batch_passes_a_lock_request_that_waits_for_another_holder() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [lock("orch-y", "cs2", ["@e@k"], seq=1), call("orch-x", "a", seq=2)]
    assert ops(sched.select_batch(holder, queue)) == [("orch-x", "a")]


def test_batch_stops_at_the_holders_unlock() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [call("orch-x", "a", seq=1), unlock("orch-x", "cs1", seq=2), call("orch-x", "late", seq=3)]
    assert ops(sched.select_batch(holder, queue)) == [("orch-x", "a")]


# --- settling locks and unlocks -----------------------------------------------------------------


def test_single_entity_lock_is_granted_to_the_orchestration() -> None:
    queue = [lock("orch-x", "cs1", ["@e@k"], seq=1)]
    result = sched.settle("@e@k", None, queue, {"orch-x"}, NOW)
    assert result.holder == LockHolder("orch-x", "cs1")
    assert result.consumed == [1] and not result.forwards
    assert [(g.instance_id, g.event.entityLockGranted.criticalSectionId) for g in result.grants] == [("orch-x", "cs1")]


def test_lock_request_hops_along_the_sorted_set() -> None:
    lock_set = ["@a@1", "@b@1", "@c@1"]
    first = sched.settle("@a@1", None, [lock("orch-x", "cs", lock_set, 0, seq=1)], {"orch-x"}, NOW)
    assert first.holder == LockHolder("orch-x", "cs") and not first.grants
    (forward,) = first.forwards
    assert forward.target == "@b@1" and forward.sender == "orch-x"
    hop = forward.event.entityLockRequested
    assert list(hop.lockSet) == lock_set and hop.position == 1 and hop.criticalSectionId == "cs"

    second = sched.settle("@b@1", None, [sched.QueuedMessage(2, sched.LOCK, "orch-x", forward.event)], {"orch-x"}, NOW)
    (forward2,) = second.forwards
    assert forward2.target == "@c@1" and forward2.event.entityLockRequested.position == 2

    last = sched.settle("@c@1", None, [sched.QueuedMessage(3, sched.LOCK, "orch-x", forward2.event)], {"orch-x"}, NOW)
    assert not last.forwards
    assert [g.instance_id for g in last.grants] == ["orch-x"]


def test_lock_waits_for_operations_queued_before_it() -> None:
    queue = [signal("client", "a", seq=1), lock("orch-x", "cs", ["@e@k"], seq=2)]
    result = sched.settle("@e@k", None, queue, {"orch-x"}, NOW)
    assert result.holder is None and result.consumed == []
    # After the signal ran, the lock is taken.
    result = sched.settle("@e@k", None, queue[1:], {"orch-x"}, NOW)
    assert result.holder == LockHolder("orch-x", "cs")


def test_second_lock_request_waits_until_the_holder_unlocks() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [lock("orch-y", "cs2", ["@e@k"], seq=1), signal("client", "s", seq=2)]
    waiting = sched.settle("@e@k", holder, queue, {"orch-x", "orch-y"}, NOW)
    assert waiting.holder == holder and waiting.consumed == []

    queue.append(unlock("orch-x", "cs1", seq=3))
    released = sched.settle("@e@k", holder, queue, {"orch-x", "orch-y"}, NOW)
    # The unlock releases; the waiting request (queued before the signal) takes the lock next.
    assert released.consumed == [3, 1]
    assert released.holder == LockHolder("orch-y", "cs2")
    assert [g.instance_id for g in released.grants] == ["orch-y"]
    # The client's signal now waits for orch-y.
    assert sched.select_batch(released.holder, [m for m in queue if m.seq == 2]) == []


def test_unlock_waits_for_the_holders_earlier_operations() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [call("orch-x", "a", seq=1), unlock("orch-x", "cs1", seq=2)]
    assert sched.settle("@e@k", holder, queue, {"orch-x"}, NOW).consumed == []
    done = sched.settle("@e@k", holder, queue[1:], {"orch-x"}, NOW)
    assert done.holder is None and done.consumed == [2] and not done.dropped


def test_unlock_passes_other_senders_waiting_operations() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [signal("client", "a", seq=1), unlock("orch-x", "cs1", seq=2)]
    result = sched.settle("@e@k", holder, queue, {"orch-x"}, NOW)
    assert result.holder is None and result.consumed == [2]
    assert ops(sched.select_batch(None, queue[:1])) == [("client", "a")]


def test_stale_unlocks_and_requests_of_finished_orchestrations_are_dropped() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [unlock("orch-x", "old-section", seq=1), unlock("orch-z", "cs1", seq=2)]
    result = sched.settle("@e@k", holder, queue, {"orch-x"}, NOW)
    assert result.holder == holder and result.consumed == [1, 2] and len(result.dropped) == 2

    free = sched.settle("@e@k", None, [lock("orch-gone", "cs", ["@e@k"], seq=3)], set(), NOW)
    assert free.holder is None and free.consumed == [3] and not free.grants


def test_repeated_lock_request_of_the_holder_is_dropped() -> None:
    holder = LockHolder("orch-x", "cs1")
    result = sched.settle("@e@k", holder, [lock("orch-x", "cs1", ["@e@k"], seq=1)], {"orch-x"}, NOW)
    assert result.holder == holder and result.consumed == [1] and not result.grants


def test_unlock_then_relock_in_one_settlement() -> None:
    holder = LockHolder("orch-x", "cs1")
    queue = [unlock("orch-x", "cs1", seq=1), lock("orch-x", "cs2", ["@e@k"], seq=2)]
    result = sched.settle("@e@k", holder, queue, {"orch-x"}, NOW)
    assert result.holder == LockHolder("orch-x", "cs2") and result.consumed == [1, 2]


# --- no deadlock with overlapping sorted sets ------------------------------------------------


class _Hub:
    """Drives the pure scheduler for many entities and orchestrations, like the store does."""

    def __init__(self) -> None:
        self.holders: dict[str, LockHolder | None] = {}
        self.queues: dict[str, list[sched.QueuedMessage]] = {}
        self.granted: list[str] = []
        self.seq = 0

    def send(self, target: str, message: sched.QueuedMessage) -> None:
        self.seq += 1
        message.seq = self.seq
        self.queues.setdefault(target, []).append(message)
        self.holders.setdefault(target, None)
        self.settle(target)

    def settle(self, target: str) -> None:
        queue = self.queues[target]
        result = sched.settle(target, self.holders[target], queue, _Everyone(), NOW)
        self.queues[target] = [m for m in queue if m.seq not in result.consumed]
        self.holders[target] = result.holder
        for forward in result.forwards:
            self.send(forward.target, sched.QueuedMessage(0, sched.LOCK, forward.sender, forward.event))
        for grant in result.grants:
            self.granted.append(grant.instance_id)


class _Everyone:
    def __contains__(self, item: object) -> bool:
        return True


@pytest.mark.parametrize("seed", range(20))
def test_overlapping_sorted_lock_sets_never_deadlock(seed: int) -> None:
    rng = random.Random(seed)
    entity_ids = [f"@acct@{i}" for i in range(5)]
    orchestrations = {f"o{i}": sorted(rng.sample(entity_ids, rng.randint(1, 4))) for i in range(12)}
    hub = _Hub()
    # Requests arrive in a random order; each granted orchestration eventually unlocks everything.
    for name in rng.sample(sorted(orchestrations), len(orchestrations)):
        lock_set = orchestrations[name]
        hub.send(lock_set[0], lock(name, f"cs-{name}", lock_set, 0))
    done: set[str] = set()
    while len(done) < len(orchestrations):
        ready = [g for g in hub.granted if g not in done]
        assert ready, f"deadlock: granted {hub.granted}, holders {hub.holders}"
        name = rng.choice(ready)
        for target in orchestrations[name]:
            assert hub.holders[target] == LockHolder(name, f"cs-{name}")
        done.add(name)
        for target in orchestrations[name]:
            hub.send(target, unlock(name, f"cs-{name}", target))
    assert all(holder is None for holder in hub.holders.values())
