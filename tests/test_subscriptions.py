"""Subscriptions: catch-up then live, no gaps and no duplicates, persistence,
projections. What a subscriber saw is always compared with ``read_all()``."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import InvalidArgument, InvalidULID, StoreClosed
from eventstore.events import Event
from eventstore.subscriptions import Projection, Subscription

CAN_COMPACT = hasattr(EventStore, "compact")
needs_compact = pytest.mark.skipif(not CAN_COMPACT, reason="EventStore.compact not there yet")

TYPES = ["A", "B", "C"]
STREAMS = ["order-1", "order-2", "cart-1", "cart-22"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore.open(tmp_path / "store")
    yield s
    s.close()


def ids(events: list[Event]) -> list[str]:
    return [str(e.id) for e in events]


def fill(store: EventStore, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        store.append(rnd.choice(STREAMS), [NewEvent(rnd.choice(TYPES), i)])


def drain(sub: Subscription) -> list[Event]:
    out = []
    while (event := sub.get(timeout=0)) is not None:
        out.append(event)
    return out


def wait_until_blocked(sub: Subscription) -> None:
    """Until a consumer waits for commits (a condition, checked, not a guess)."""
    deadline = time.monotonic() + 5
    while not sub._hub.cond._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the consumer never blocked"
        time.sleep(0.001)


# -- catch-up ------------------------------------------------------------------


@settings(max_examples=25)
@given(
    n=st.integers(0, 60),
    page_size=st.integers(1, 9),
    types=st.none() | st.sets(st.sampled_from(TYPES)),
    prefix=st.none() | st.sampled_from(["order-", "cart-2", "x", ""]),
    start=st.integers(0, 70),
    seed=st.integers(0, 100),
)
def test_catch_up_is_read_all(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    page_size: int,
    types: set[str] | None,
    prefix: str | None,
    start: int,
    seed: int,
) -> None:
    with EventStore.open(tmp_path_factory.mktemp("s")) as store:
        fill(store, n, seed)
        everything = list(store.read_all())
        after = everything[start].id if start < len(everything) else None
        expected = list(store.read_all(after=after, types=types, stream_prefix=prefix))
        with Subscription(
            store, after=after, types=types, stream_prefix=prefix, page_size=page_size
        ) as sub:
            got = drain(sub)
            assert got == expected
            assert sub.position == (got[-1].id if got else after)
            # Live: new events, matching or not, arrive in order after the old ones.
            store.append("order-9", [NewEvent("A", "new"), NewEvent("B", "new")])
            expected = list(store.read_all(after=after, types=types, stream_prefix=prefix))
            assert got + drain(sub) == expected


def test_iteration_and_timeouts(store: EventStore) -> None:
    fill(store, 5)
    sub = Subscription(store, page_size=2)
    it = iter(sub)
    assert [next(it).seq for _ in range(5)] == [1, 2, 3, 4, 5]
    assert sub.get(timeout=0) is None
    started = time.monotonic()
    assert sub.get(timeout=0.05) is None
    assert time.monotonic() - started >= 0.05
    sub.close()
    assert list(sub) == []
    assert sub.closed
    assert "closed" in repr(sub)


def test_bad_arguments_fail_at_once(store: EventStore) -> None:
    with pytest.raises(InvalidULID):
        Subscription(store, after="not a ulid")
    with pytest.raises(InvalidArgument):
        Subscription(store, page_size=0)
    with pytest.raises(ValueError):
        Subscription(store, types=["A\x00"])
    with pytest.raises(TypeError):
        Subscription(store, stream_prefix=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not both"):
        Subscription(store, after="01ARZ3NDEKTSV4RRFFQ69G5FAV", name="p")
    with pytest.raises(InvalidArgument, match="name="):
        Subscription(store).checkpoint()
    store.set_checkpoint("weird", {"position": 42})
    with pytest.raises(InvalidArgument, match="not a position"):
        Subscription(store, name="weird")


# -- live ---------------------------------------------------------------------


def test_live_delivery_wakes_a_blocked_consumer(store: EventStore) -> None:
    sub = Subscription(store)
    got: list[Event] = []
    done = threading.Event()

    def consume() -> None:
        for event in sub:
            got.append(event)
            if len(got) == 3:
                done.set()

    t = threading.Thread(target=consume)
    t.start()
    for n in range(3):
        wait_until_blocked(sub)
        store.append("s", [NewEvent("T", n)])
    assert done.wait(5)
    sub.close()
    t.join(5)
    assert not t.is_alive()
    assert got == list(store.read_all())


def test_close_from_another_thread_wakes_the_consumer(store: EventStore) -> None:
    sub = Subscription(store)
    results: list[Event | None] = []
    t = threading.Thread(target=lambda: results.append(sub.get()))
    t.start()
    wait_until_blocked(sub)
    closed_at = time.monotonic()
    sub.close()
    t.join(5)
    assert not t.is_alive() and results == [None]
    assert time.monotonic() - closed_at < 1.0
    sub.close()  # twice is fine


def test_closing_the_store_ends_its_subscriptions(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s")
    fill(store, 3)
    sub = Subscription(store)
    seen: list[Event] = []
    t = threading.Thread(target=lambda: seen.extend(sub))
    t.start()
    wait_until_blocked(sub)
    store.close()
    t.join(5)
    assert not t.is_alive()
    assert [e.seq for e in seen] == [1, 2, 3]
    assert sub.closed and sub.get(timeout=0) is None
    with pytest.raises(StoreClosed):
        Subscription(store)


def test_closing_the_store_in_the_middle_of_a_page(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s")
    store.append("a", [NewEvent("T", n) for n in range(600)])
    sub = Subscription(store)
    assert sub.get(timeout=0) is not None  # a page (a view of the store) is open
    store.close()
    assert sub.get(timeout=0) is None and sub.closed
    assert list(sub) == []


def test_a_slow_subscriber_never_blocks_appends(store: EventStore) -> None:
    sub = Subscription(store, page_size=10)
    store.append("s", [NewEvent("T", n) for n in range(5)])
    assert sub.get(timeout=0) is not None  # a page is open, and the consumer stops
    for _ in range(50):
        store.append("s", [NewEvent("T", n) for n in range(100)])
    assert [e.seq for e in drain(sub)] == list(range(2, 5006))


def test_pages_cut_short_by_age_lose_nothing(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eventstore.subscriptions as subscriptions

    monkeypatch.setattr(subscriptions, "MAX_PAGE_SECONDS", 0.0)  # a new view per event
    fill(store, 50)
    sub = Subscription(store, types=["A", "B"])
    got = [sub.get(timeout=0) for _ in range(10)]
    fill(store, 50, seed=2)
    got += drain(sub)
    assert got == list(store.read_all(types=["A", "B"]))


END_STREAM = "order-zz-end"


def race(
    store: EventStore,
    sub: Subscription,
    writers: int,
    appends: int,
    during: Callable[[], None] | None = None,
) -> list[Event]:
    """Writers append (single and multi-stream batches) while ``sub`` consumes
    live, and ``during()`` runs meanwhile. Once the writers are done an end
    marker is appended; returns everything the subscriber saw up to it."""
    seen: list[Event] = []

    def consume() -> None:
        for event in sub:
            seen.append(event)
            if event.stream == END_STREAM:
                return

    def write(k: int) -> None:
        rnd = random.Random(k)
        for n in range(appends):
            store.append_many(
                [
                    (
                        rnd.choice(STREAMS),
                        [NewEvent(rnd.choice(TYPES), [k, n, i]) for i in range(rnd.randint(1, 3))],
                        ANY,
                    )
                    for _ in range(rnd.randint(1, 2))
                ]
            )

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    if during is not None:
        during()
    for t in threads:
        t.join()
    store.append(END_STREAM, [NewEvent("A", "end")])
    consumer.join(30)
    assert not consumer.is_alive()
    return seen


@pytest.mark.parametrize(
    ("types", "prefix", "page_size"),
    [(None, None, 1000), (None, None, 3), (["A", "B"], "order-", 7)],
)
def test_racing_writers_no_gaps_no_duplicates(
    store: EventStore, types: list[str] | None, prefix: str | None, page_size: int
) -> None:
    fill(store, 200)  # something to catch up on first
    start = list(store.read_all(limit=50))[-1].id
    sub = Subscription(store, after=start, types=types, stream_prefix=prefix, page_size=page_size)
    seen = race(store, sub, writers=8, appends=150)
    assert ids(seen) == ids(list(store.read_all(after=start, types=types, stream_prefix=prefix)))
    sub.close()


def test_many_subscribers_see_the_same_log(store: EventStore) -> None:
    subs = [Subscription(store, page_size=5) for _ in range(4)]
    seen: list[list[Event]] = [[] for _ in subs]

    def consume(k: int) -> None:
        for event in subs[k]:
            seen[k].append(event)
            if event.stream == END_STREAM:
                return

    consumers = [threading.Thread(target=consume, args=(k,)) for k in range(len(subs))]
    for t in consumers:
        t.start()
    fill(store, 300)
    store.append(END_STREAM, [NewEvent("A")])
    for t in consumers:
        t.join(10)
        assert not t.is_alive()
    everything = ids(list(store.read_all()))
    assert all(ids(s) == everything for s in seen)


@needs_compact
def test_racing_writers_and_compactions(store: EventStore) -> None:
    fill(store, 500)
    sub = Subscription(store, page_size=20)
    rounds: list[int] = []

    def compact_repeatedly() -> None:
        for _ in range(5):
            newest = list(store.read_all(backwards=True, limit=1))
            if newest:
                store.compact(before=newest[0].id)
                rounds.append(1)

    seen = race(store, sub, writers=4, appends=150, during=compact_repeatedly)
    assert rounds
    assert ids(seen) == ids(list(store.read_all()))
    # A new subscriber from a position in the cold tier catches up across both tiers.
    middle = seen[len(seen) // 3]
    assert ids(drain(Subscription(store, after=middle.id, page_size=7))) == ids(
        seen[len(seen) // 3 + 1 :]
    )
    sub.close()


# -- persistent subscriptions ---------------------------------------------------------


def test_named_subscription_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 10)
        sub = Subscription(store, name="mailer")
        first = [sub.get(timeout=0) for _ in range(4)]
        sub.checkpoint()  # after the 4th
        sub.get(timeout=0)  # delivered but not checkpointed
        sub.close()
        assert store.get_checkpoint("mailer") == {"position": str(first[-1].id)}  # type: ignore[union-attr]
    with EventStore.open(path) as store:
        sub = Subscription(store, name="mailer")
        assert [e.seq for e in drain(sub)] == list(range(5, 11))
        sub.checkpoint(sub.get(timeout=0) or list(store.read_all())[6])  # an explicit event
        assert Subscription(store, name="mailer").get(timeout=0).seq == 8  # type: ignore[union-attr]
        # A plain position stored by hand works too; None means the beginning.
        store.set_checkpoint("mailer", str(list(store.read_all())[1].id))
        assert Subscription(store, name="mailer").get(timeout=0).seq == 3  # type: ignore[union-attr]
        store.set_checkpoint("mailer", None)
        assert Subscription(store, name="mailer").get(timeout=0).seq == 1  # type: ignore[union-attr]
        fresh = Subscription(store, name="new")
        fresh.checkpoint()  # nothing seen yet: the beginning
        assert store.get_checkpoint("new") == {"position": None}


class SubscriptionModel(RuleBasedStateMachine):
    """Random interleavings of appends, reads, checkpoints, restarts (and
    compactions) against a list model of the log."""

    def __init__(self) -> None:
        super().__init__()
        self.store: EventStore | None = None

    @initialize(
        types=st.none() | st.sets(st.sampled_from(TYPES), min_size=1),
        page_size=st.integers(1, 6),
    )
    def open(self, types: set[str] | None, page_size: int) -> None:
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.store = EventStore.open(self.dir.name)
        self.types = types
        self.page_size = page_size
        self.log: list[tuple[str, str, int]] = []  # (stream, type, data) in commit order
        self.delivered = 0  # how many matching events the subscription has handed out
        self.saved = 0  # ... as of its checkpoint
        self.sub = Subscription(self.store, types=types, name="m", page_size=page_size)

    def matching(self) -> list[tuple[str, str, int]]:
        return [e for e in self.log if self.types is None or e[1] in self.types]

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(STREAMS), st.sampled_from(TYPES)), min_size=1, max_size=4
        )
    )
    def append(self, batch: list[tuple[str, str]]) -> None:
        assert self.store is not None
        for stream, type_ in batch:
            self.log.append((stream, type_, len(self.log)))
        self.store.append_many(
            [(s, [NewEvent(t, n)], ANY) for (s, t, n) in self.log[-len(batch) :]]
        )

    @rule(k=st.integers(1, 8))
    def read(self, k: int) -> None:
        expected = self.matching()[self.delivered : self.delivered + k]
        got = []
        for _ in range(k):
            event = self.sub.get(timeout=0)
            if event is None:
                break
            got.append((event.stream, event.type, event.data))
        assert got == expected
        self.delivered += len(got)

    @rule()
    def checkpoint(self) -> None:
        self.sub.checkpoint()
        self.saved = self.delivered

    @rule()
    def restart(self) -> None:
        self.sub.close()
        self.sub = Subscription(
            self.store,
            types=self.types,
            name="m",  # type: ignore[arg-type]
            page_size=self.page_size,
        )
        self.delivered = self.saved

    @precondition(lambda self: CAN_COMPACT and bool(self.log))
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        assert self.store is not None
        everything = list(self.store.read_all())
        cut = data.draw(st.integers(0, len(everything) - 1))
        self.store.compact(before=everything[cut].id)

    @invariant()
    def log_matches(self) -> None:
        if self.store is not None:
            assert [(e.stream, e.type, e.data) for e in self.store.read_all()] == self.log

    def teardown(self) -> None:
        if self.store is not None:
            self.sub.close()
            self.store.close()
            self.dir.cleanup()


SubscriptionModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
test_subscription_model = SubscriptionModel.TestCase


# -- projections -----------------------------------------------------------------------


def fold(state: dict[str, Any], event: Event) -> dict[str, Any]:
    """Counts and sums per type; refuses an event out of order (a gap or a repeat)."""
    if event.seq <= state["last_seq"]:
        raise AssertionError(f"event {event.seq} applied again after {state['last_seq']}")
    state["last_seq"] = event.seq
    state["count"][event.type] = state["count"].get(event.type, 0) + 1
    state["sum"] += event.data if isinstance(event.data, int) else 0
    return state


def empty() -> dict[str, Any]:
    return {"last_seq": 0, "count": {}, "sum": 0}


def fold_all(events: Iterator[Event]) -> dict[str, Any]:
    state = empty()
    for event in events:
        state = fold(state, event)
    return state


def test_projection_catch_up_resume_and_types(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 120)
        proj = Projection(store, "totals", fold, empty, save_every=50, page_size=7)
        assert proj.catch_up() == 120
        assert proj.state == fold_all(store.read_all())
        stored = store.get_checkpoint("totals")
        assert stored == {"position": str(proj.position), "state": proj.state}
        fill(store, 30, seed=2)
        assert proj.catch_up() == 30
        assert proj.catch_up() == 0
        proj.close()
        only_a = Projection(store, "only-a", fold, empty, types=["A"])
        only_a.catch_up()
        assert only_a.state == fold_all(store.read_all(types=["A"]))
    with EventStore.open(path) as store:
        again = Projection(store, "totals", fold, empty)
        assert again.state == fold_all(store.read_all())  # loaded, not recomputed
        assert again.catch_up() == 0


def test_projection_that_fails_saves_nothing_of_the_failed_event(store: EventStore) -> None:
    fill(store, 10)
    boom = {"at": 7}

    def fragile(state: dict[str, Any], event: Event) -> dict[str, Any]:
        state = fold(state, event)
        if event.seq == boom["at"]:
            raise RuntimeError("read model down")
        return state

    proj = Projection(store, "p", fragile, empty, save_every=2)
    with pytest.raises(RuntimeError):
        proj.catch_up()
    assert proj.closed
    assert store.get_checkpoint("p")["state"]["last_seq"] == 6
    boom["at"] = -1
    again = Projection(store, "p", fragile, empty)
    assert again.catch_up() == 4
    assert again.state == fold_all(store.read_all())


def test_projection_runs_live_until_closed(store: EventStore) -> None:
    proj = Projection(store, "live", fold, empty, save_every=1000)
    caught_up = threading.Event()

    def applier(state: dict[str, Any], event: Event) -> dict[str, Any]:
        state = fold(state, event)
        if event.stream == END_STREAM:
            caught_up.set()
        return state

    proj._apply = applier
    t = threading.Thread(target=proj.run)
    t.start()
    fill(store, 200)
    store.append(END_STREAM, [NewEvent("A", 0)])
    assert caught_up.wait(10)
    proj.close()
    t.join(5)
    assert not t.is_alive()
    expected = fold_all(store.read_all())
    assert proj.state == expected
    assert store.get_checkpoint("live")["state"] == expected  # saved when it stopped
