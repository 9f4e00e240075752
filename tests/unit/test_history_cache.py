"""The sidecar's history cache (bounds, checks against the store) and the running history summary."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import proto_helpers as ph
from sidecar import engine_events
from sidecar.engine_history import HistorySummary, select_new_events
from sidecar.hub import TaskHub
from sidecar.hub.history_cache import HistoryCache, HistoryView, TurnNote
from sidecar.model import InstanceSnapshot
from sidecar.store import Store, open_store

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def raised(name: str) -> pb.HistoryEvent:
    event = engine_events.new_event(T0)
    event.eventRaised.name = name
    return event


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory")
    try:
        yield s
    finally:
        s.close()


def create(store: Store, iid: str, execution_id: str = "e1") -> None:
    """A (new or again created) instance row: its history starts over."""
    inst = InstanceSnapshot(instance_id=iid, execution_id=execution_id, name="orch",
                            status=pb.ORCHESTRATION_STATUS_RUNNING, created_at=T0, last_updated_at=T0)
    started = engine_events.new_execution_started(name="orch", instance_id=iid, execution_id=execution_id, now=T0)
    TaskHub(store).create_instance(inst, started, T0, T0, replaceable=[pb.ORCHESTRATION_STATUS_RUNNING])


def append(store: Store, iid: str, events: list[pb.HistoryEvent]) -> None:
    store.run(lambda tx: tx.append_history(iid, events))


def replace(store: Store, iid: str, events: list[pb.HistoryEvent]) -> None:
    store.run(lambda tx: tx.replace_history(iid, events))


def load(cache: HistoryCache, store: Store, iid: str, execution_id: str = "e1") -> HistoryView:
    """Load through the cache; the view must be exactly the stored history."""
    view = store.run(lambda tx: cache.load(tx, iid, execution_id))
    stored = store.run(lambda tx: tx.history_rows(iid))
    assert list(view.events) == [event for _, event in stored]
    assert view.first_seq == (stored[0][0] if stored else 0) and view.execution_id == execution_id
    return view


def names(view: HistoryView) -> list[str]:
    return [e.eventRaised.name for e in view.events]


def view_of(*event_names: str, first_seq: int = 0) -> HistoryView:
    return HistoryView.of("key", "e", [(first_seq + i, raised(n)) for i, n in enumerate(event_names)])


# ------------------------------------------------------------------ views


def test_a_view_and_its_extension() -> None:
    view = view_of("a", "b", first_seq=4)
    assert (view.first_seq, view.next_seq) == (4, 6)
    longer = view.extended([raised("c")])
    assert (longer.first_seq, longer.next_seq, names(longer)) == (4, 7, ["a", "b", "c"])
    assert names(view) == ["a", "b"], "extending returns a new view"
    assert view.extended([]) is view
    scheduled = longer.extended([ph.new_task_scheduled_event(7, "act")])
    assert scheduled.summary.admitted[("task", 7)] == 1 and longer.summary.admitted[("task", 7)] == 0
    empty = HistoryView.of(None, "e", [])
    assert (empty.first_seq, empty.next_seq, empty.events) == (0, 0, ())


def test_load_extends_a_cached_view_with_what_was_appended_since(store: Store) -> None:
    cache = HistoryCache()
    create(store, "a")
    append(store, "a", [raised("a"), raised("b")])
    cache.put("a", load(cache, store, "a"))
    append(store, "a", [raised("c")])
    view = load(cache, store, "a")
    assert names(view) == ["a", "b", "c"] and view.first_seq == 0


@pytest.mark.parametrize("history", [["x"], ["x", "y", "z", "w", "v"], []])
def test_load_reads_again_a_history_that_was_replaced(store: Store, history: list[str]) -> None:
    cache = HistoryCache()
    create(store, "a")
    append(store, "a", [raised("a"), raised("b"), raised("c")])
    cache.put("a", load(cache, store, "a"))
    replace(store, "a", [raised(n) for n in history])
    append(store, "a", [raised("tail")])
    assert names(load(cache, store, "a")) == [*history, "tail"]


def test_load_reads_again_the_history_of_an_instance_created_again(store: Store) -> None:
    cache = HistoryCache()
    create(store, "a")
    append(store, "a", [raised(f"old{i}") for i in range(3)])
    cache.put("a", load(cache, store, "a"))
    create(store, "a")  # the same execution ID again: a new history, numbered from the start
    append(store, "a", [raised(f"new{i}") for i in range(5)])
    assert names(load(cache, store, "a")) == [f"new{i}" for i in range(5)]


def test_load_ignores_a_view_of_another_execution(store: Store) -> None:
    cache = HistoryCache()
    create(store, "a")
    append(store, "a", [raised("a"), raised("b")])
    cache.put("a", load(cache, store, "a", "e1"))
    view = load(cache, store, "a", "e2")
    assert view.execution_id == "e2" and names(view) == ["a", "b"]


def test_capacity_evicts_the_least_recently_used_views() -> None:
    cache = HistoryCache(capacity=2)
    views = {iid: view_of(iid) for iid in "abc"}
    cache.put("a", views["a"])
    cache.put("b", views["b"])
    cache.put("a", views["a"])
    cache.put("c", views["c"])
    assert len(cache) == 2 and set(cache._views) == {"a", "c"} and cache.event_count == 2


def test_the_event_budget_evicts_views_and_refuses_one_too_large() -> None:
    cache = HistoryCache(capacity=10, max_events=5)
    big = view_of("0", "1", "2")
    cache.put("a", big)
    cache.put("b", big)  # 6 events > 5: the oldest view goes
    assert set(cache._views) == {"b"} and cache.event_count == 3
    cache.put("c", view_of(*"012345"))
    assert set(cache._views) == {"b"}, "a view over the whole budget is not kept"
    cache.put("b", view_of(*"012345"))
    assert len(cache) == 0 and cache.event_count == 0, "and it drops the instance's older view"


def test_discard_clear_and_capacity_zero() -> None:
    view = view_of("a", "b")
    cache = HistoryCache()
    cache.put("a", view)
    cache.put("b", view)
    cache.discard("a")
    cache.discard("missing")
    assert set(cache._views) == {"b"} and cache.event_count == 2
    cache.clear()
    assert len(cache) == 0 and cache.event_count == 0
    off = HistoryCache(capacity=0)
    off.put("a", view)
    assert len(off) == 0


# ------------------------------------------------------------ the summary


def scheduled(kind: str, event_id: int) -> pb.HistoryEvent:
    if kind == "task":
        return ph.new_task_scheduled_event(event_id, "act")
    if kind == "timer":
        return ph.new_timer_created_event(event_id, T0)
    return ph.new_sub_orchestration_created_event(event_id, "child", f"c{event_id}")


def resolved(kind: str, event_id: int, rng: random.Random) -> pb.HistoryEvent:
    if kind == "task":
        return ph.new_task_completed_event(event_id) if rng.random() < 0.5 else ph.new_task_failed_event(
            event_id, ValueError("x"))
    if kind == "timer":
        return ph.new_timer_fired_event(event_id, T0)
    if kind == "entity":
        return ph.new_entity_operation_completed_event(f"r{event_id}")
    if kind == "lock":
        return ph.new_entity_lock_granted_event(f"s{event_id}")
    return ph.new_sub_orchestration_completed_event(event_id)


def random_events(rng: random.Random, count: int) -> list[pb.HistoryEvent]:
    events: list[pb.HistoryEvent] = []
    for _ in range(count):
        kind = rng.choice(["task", "timer", "sub", "entity", "lock", "raised", "start"])
        event_id = rng.randint(1, 6)
        if kind == "raised":
            events.append(raised("e"))
        elif kind == "start":
            events.append(ph.new_execution_started_event("orch", "i"))
        elif kind in ("task", "timer", "sub") and rng.random() < 0.5:
            events.append(scheduled(kind, event_id))
        else:
            events.append(resolved(kind, event_id, rng))
    return events


@pytest.mark.parametrize("seed", range(40))
def test_a_summary_grown_turn_by_turn_selects_what_the_whole_history_selects(seed: int) -> None:
    rng = random.Random(seed)
    history: list[pb.HistoryEvent] = []
    summary = HistorySummary()
    for _ in range(8):
        inbox = random_events(rng, rng.randint(0, 6))
        selected = select_new_events(summary, inbox)
        assert selected == select_new_events(history, inbox) == select_new_events(HistorySummary(history), inbox)
        appended = random_events(rng, rng.randint(0, 5)) + [inbox[i] for i in selected[0]]
        before = summary.copy()
        summary.add(appended)
        assert (before.admitted, before.used) == (HistorySummary(history).admitted, HistorySummary(history).used), (
            "a copy does not change with the summary it was taken from"
        )
        history.extend(appended)
    assert summary.admitted == HistorySummary(history).admitted
    assert summary.used == HistorySummary(history).used


def test_the_byte_budget_evicts_views_and_refuses_one_too_large() -> None:
    one = view_of("a" * 100)
    assert one.size == raised("a" * 100).ByteSize() and one.extended([raised("b")]).size == one.size + raised("b").ByteSize()
    cache = HistoryCache(capacity=10, max_bytes=2 * one.size + 1)
    cache.put("a", one)
    cache.put("b", view_of("b" * 100))
    cache.put("c", view_of("c" * 100))
    assert set(cache._views) == {"b", "c"} and cache.byte_count == 2 * one.size
    cache.put("d", view_of("d" * 500))  # larger than the whole budget: not kept
    assert "d" not in cache._views
    cache.clear()
    assert cache.byte_count == 0


def test_a_history_without_a_key_is_read_in_full(store: Store) -> None:
    cache = HistoryCache()
    create(store, "a")
    append(store, "a", [raised("a"), raised("b")])
    store.run(lambda tx: tx.db.execute("UPDATE instances SET history_key = NULL WHERE instance_id = 'a'"))
    view = load(cache, store, "a")
    assert view.key is None
    cache.put("a", view)
    reads: list[int] = []

    def spy(tx):  # type: ignore[no-untyped-def]
        original = tx.history_rows

        def rows(iid: str, from_seq: int = 0):  # type: ignore[no-untyped-def]
            reads.append(from_seq)
            return original(iid, from_seq)

        tx.history_rows = rows
        return cache.load(tx, "a", "e1")

    assert names(store.run(spy)) == ["a", "b"]
    assert reads == [0], "no key: nothing proves the cached view is this history's prefix"


# ------------------------------------------------------------------ turn notes


def noted(view: HistoryView, appended: list[pb.HistoryEvent], delivered: int, token: str = "t1") -> TurnNote:
    """The note of a turn that appended ``appended`` (its first ``delivered`` its new events) to ``view``."""
    return TurnNote(token, view.key, view.execution_id, view.first_seq, len(view.events), tuple(appended), delivered)


def test_a_turn_note_names_the_turn_that_ends_the_history() -> None:
    cache = HistoryCache()
    before = view_of("a", "b", first_seq=3)
    appended = [raised("c"), raised("d"), raised("closing")]
    note = noted(before, appended, delivered=2)
    cache.note_turn("i", note)
    after = before.extended(appended)
    assert note.seen == 4
    assert cache.prior_turn("i", after) is note
    # The same events read again from the store (other objects, equal) are the same history.
    assert cache.prior_turn("i", view_of("a", "b", "c", "d", "closing", first_seq=3)) is note
    assert cache.prior_turn("other", after) is None


@pytest.mark.parametrize("case", ["not applied", "grown since", "other events", "other key", "other execution",
                                  "other first seq", "no key"])
def test_a_turn_note_is_trusted_only_for_the_history_that_turn_left(case: str) -> None:
    cache = HistoryCache()
    before = HistoryView.of(None if case == "no key" else "key", "e", [(0, raised("a"))])
    appended = [raised("b"), raised("closing")]
    cache.note_turn("i", noted(before, appended, delivered=1))
    after = before.extended(appended)
    stored = {
        "not applied": before,  # the turn's transaction failed
        "grown since": after.extended([raised("more")]),
        "other events": before.extended([raised("b"), raised("other")]),
        "other key": HistoryView("key2", "e", 0, after.events, after.summary),
        "other execution": HistoryView("key", "e2", 0, after.events, after.summary),
        "other first seq": HistoryView("key", "e", 1, after.events, after.summary),
        "no key": after,
    }[case]
    assert cache.prior_turn("i", stored) is None


def test_turn_notes_are_bounded_and_forgotten_with_the_view() -> None:
    cache = HistoryCache(capacity=2, max_events=4)
    base = view_of("a")
    for iid in "xyz":
        cache.note_turn(iid, noted(base, [raised(iid)], delivered=1, token=iid))
    assert list(cache._turns) == ["y", "z"]
    cache.note_turn("w", noted(base, [raised("w")] * 3, delivered=1))  # 1 + 3 events: "y" goes
    assert list(cache._turns) == ["z", "w"] and cache._noted == 4
    cache.note_turn("v", noted(base, [raised("v")] * 5, delivered=1))  # more than the budget alone
    assert "v" not in cache._turns
    cache.discard("z")
    assert list(cache._turns) == ["w"] and cache._noted == 3
    cache.clear()
    assert not cache._turns and cache._noted == 0
    off = HistoryCache(capacity=0)
    off.note_turn("a", noted(base, [raised("a")], delivered=1))
    assert off.prior_turn("a", base.extended([raised("a")])) is None


def test_extended_views_share_their_events_and_never_see_each_others_appends() -> None:
    view = view_of("a", "b")
    longer = view.extended([raised("c")])
    assert longer.events._items is view.events._items, "the tip's list is extended, not copied"
    # Extending the shorter view again (a turn whose transaction failed extended it first) forks.
    other = view.extended([raised("x"), raised("y")])
    assert other.events._items is not view.events._items
    assert (names(view), names(longer), names(other)) == (["a", "b"], ["a", "b", "c"], ["a", "b", "x", "y"])
    events = other.events
    assert len(events) == 4 and events[-1].eventRaised.name == "y" and events[1] == raised("b")
    assert [e.eventRaised.name for e in events[1:3]] == ["b", "x"]
    assert [e.eventRaised.name for e in events[::-2]] == ["y", "b"]
    assert events == [raised(n) for n in "abxy"] and events != [raised(n) for n in "abx"] and view.events != ()
    with pytest.raises(IndexError):
        events[4]  # noqa: B018
    with pytest.raises(IndexError):
        view.events[-3]  # noqa: B018
    request = pb.OrchestratorRequest(pastEvents=longer.events)
    assert [e.eventRaised.name for e in request.pastEvents] == ["a", "b", "c"]


def test_views_of_turns_out_on_leases_are_kept_by_token_within_bounds() -> None:
    cache = HistoryCache(capacity=2)
    first, second, third = view_of("a"), view_of("b"), view_of("c")
    cache.lease("t1", first)
    assert cache.leased_view("t1") is first
    assert cache.leased_view("t1") is None, "handed out once"
    for token, view in (("t1", first), ("t2", second), ("t3", third)):
        cache.lease(token, view)
    assert cache.leased_view("t1") is None, "the oldest went beyond the capacity"
    assert cache.leased_view("t2") is second
    cache.clear()
    assert cache.leased_view("t3") is None
    small = HistoryCache(max_events=1)
    small.lease("t", view_of("a", "b"))
    assert small.leased_view("t") is None, "a view over the bounds is not kept"
