"""Tags, store.query and conditional appends (DCB, issue 18), in both tiers."""

from __future__ import annotations

import tempfile
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent, keys
from eventstore.errors import (
    ConditionFailed,
    InvalidArgument,
    InvalidName,
    InvalidType,
    WrongExpectedVersion,
)
from eventstore.events import NO_STREAM, AppendCondition, Event, Query, QueryItem
from eventstore.ids import ulid_from_int

TYPES = ["A", "B", "C"]
TAGS = ["t1", "t2", "t3", "course:7", "student:42"]


def _matches(event: Event, items: list[QueryItem]) -> bool:
    if not items:
        return True
    return any(
        (not item.types or event.type in item.types) and set(item.tags) <= set(event.tags)
        for item in items
    )


def _expected(store: EventStore, items: list[QueryItem], after: int | None) -> list[Event]:
    return [e for e in store.read_all() if _matches(e, items) and (after is None or e.seq > after)]


def _compact_through(store: EventStore, seq: int) -> None:
    """Move the events up to ``seq`` to the archive (and clean their hot copies)."""
    events = list(store.read_all())
    store.compact(before=ulid_from_int(int(events[seq - 1].id) + 1))
    store.cleanup()


def _t_keys(store: EventStore) -> list[bytes]:
    return [k for k, _ in store._hot.db.iterator(prefix=keys.TAG)]


def _hot_t_keys(store: EventStore) -> list[bytes]:
    w = store._archive.tiers.watermark
    return [k for k in _t_keys(store) if k[-16:] >= w]


@pytest.fixture
def store(tmp_path: Any) -> Any:
    with EventStore.open(str(tmp_path / "s")) as s:
        yield s


# -- tags --------------------------------------------------------------------


def test_tags_round_trip_both_tiers(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        r = store.append(
            "a",
            [
                NewEvent("T", 1, tags=["student:42", "course:7", "course:7"]),
                NewEvent("T", 2),
                NewEvent("T", 3, tags=[]),
                NewEvent("U", 4, tags=("é", "z")),
            ],
        )
        # Ten in bulk: the columns path falls back to rows for tagged parts.
        store.append("b", [NewEvent("V", n, tags=[f"n:{n % 3}"]) for n in range(10)])
        want = [("course:7", "student:42"), (), (), ("z", "é")]
        assert [e.tags for e in store.read_stream("a")] == want
        assert store.get(r.ids[0]).tags == ("course:7", "student:42")  # type: ignore[union-attr]
        hot = list(store.read_all())
        _compact_through(store, 8)
        assert store.archive_files()
        assert list(store.read_all()) == hot
        assert [e.tags for e in store.read_stream("a")] == want
        assert store.get(r.ids[0]).tags == ("course:7", "student:42")  # type: ignore[union-attr]
        store.verify()
    with EventStore.open(path) as store:
        assert list(store.read_all()) == hot
        # Untagged records keep six fields; tagged ones have seven.
        raw = [v for k, v in store._hot.db.iterator(prefix=keys.EVENT)]
        assert {len(msgpack.unpackb(v)) for v in raw} == {7}
        store.verify()


def test_tag_keys_hold_the_global_entry(store: EventStore) -> None:
    r = store.append("s", [NewEvent("T", tags=["x", "y"])])
    id16 = r.ids[0].bytes
    for tag in (b"x", b"y"):
        value = store._hot.db.get(keys.tag_key(tag, id16))
        assert msgpack.unpackb(value) == ["s", "T", 1]
    assert len(_t_keys(store)) == 2


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        ("x", InvalidType),
        (b"x", InvalidType),
        (7, InvalidType),
        ([""], InvalidName),
        (["a\x00b"], InvalidName),
        ([7], InvalidName),
        (["x" * 1025], InvalidName),
        ([f"t{n}" for n in range(257)], InvalidArgument),
    ],
)
def test_bad_tags_are_refused_and_write_nothing(store: EventStore, tags: Any, error: type) -> None:
    store.append("s", [NewEvent("T", tags=["ok"])])
    before = list(store.read_all())
    for n in (1, 12):  # one event at a time, and a bulk part
        events = [NewEvent("T", tags=["fine"])] * (n - 1) + [NewEvent("T", tags=tags)]
        with pytest.raises(error):
            store.append("s", events)
    assert list(store.read_all()) == before
    assert len(_t_keys(store)) == 1


# -- query --------------------------------------------------------------------


def test_query_semantics(store: EventStore) -> None:
    store.append("a", [NewEvent("A", tags=["x", "y"]), NewEvent("B", tags=["x"])])
    store.append("b", [NewEvent("A"), NewEvent("C", tags=["y"])])

    def seqs(q: Any, **kw: Any) -> list[int]:
        return [e.seq for e in store.query(q, **kw)]

    assert seqs([QueryItem(tags=["x"])]) == [1, 2]
    assert seqs(Query([QueryItem(tags=["x", "y"])])) == [1]
    assert seqs([QueryItem(types=["A"], tags=["x"])]) == [1]
    assert seqs([QueryItem(types=["A"])]) == [1, 3]
    assert seqs([QueryItem(tags=["y"]), QueryItem(types=["B"])]) == [1, 2, 4]
    assert seqs([QueryItem(tags=["y"]), QueryItem(tags=["x"])], backwards=True) == [4, 2, 1]
    assert seqs([]) == seqs(Query()) == [1, 2, 3, 4]
    assert seqs([QueryItem()]) == [1, 2, 3, 4]
    assert seqs([QueryItem(tags=["x"])], after=1) == [2]
    assert seqs([QueryItem(tags=["y"])], after=1, backwards=True) == [4]
    assert seqs([QueryItem(tags=["y"])], limit=1, backwards=True) == [4]
    assert seqs([QueryItem(tags=["nope"])]) == []
    assert seqs([QueryItem(tags=["x"])], after=99) == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (QueryItem(tags=["x"]), InvalidType),
        ("x", InvalidType),
        ([("x",)], InvalidType),
        ([QueryItem(types="A")], InvalidType),
        ([QueryItem(tags="x")], InvalidType),
        ([QueryItem(types=[""])], InvalidName),
        ([QueryItem(types=[3])], InvalidName),
        ([QueryItem(tags=["a\x00"])], InvalidName),
        (Query(items=3), InvalidType),  # type: ignore[arg-type]
    ],
)
def test_bad_queries(store: EventStore, query: Any, error: type) -> None:
    store.append("s", [NewEvent("T", tags=["x"])])
    with pytest.raises(error):
        store.query(query)
    with pytest.raises(error):
        store.append("s", [NewEvent("T")], condition=AppendCondition(query, None))
    assert store.last_seq == 1


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"after": -1}, InvalidArgument),
        ({"after": "3"}, InvalidType),
        ({"after": 1.5}, InvalidType),
        ({"after": True}, InvalidType),
        ({"limit": -1}, InvalidArgument),
        ({"backwards": "yes"}, InvalidType),
    ],
)
def test_bad_query_arguments(store: EventStore, kw: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        store.query([QueryItem(tags=["x"])], **kw)


def test_bad_conditions_write_nothing(store: EventStore) -> None:
    q = Query([QueryItem(tags=["x"])])
    for condition, error in [
        ((q, None), InvalidType),
        (AppendCondition(q, -1), InvalidArgument),
        (AppendCondition(q, "0"), InvalidType),  # type: ignore[arg-type]
    ]:
        with pytest.raises(error):
            store.append("s", [NewEvent("T", tags=["x"])], condition=condition)  # type: ignore[arg-type]
    assert store.last_seq == 0


events_st = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(TYPES),
        st.lists(st.sampled_from(TAGS), max_size=3),
    ),
    min_size=1,
    max_size=40,
)
item_st = st.builds(
    QueryItem,
    st.lists(st.sampled_from(TYPES), max_size=2),
    st.lists(st.sampled_from(TAGS), max_size=2),
)
query_st = st.lists(item_st, max_size=3)


@settings(max_examples=40)
@given(
    events=events_st,
    queries=st.lists(
        st.tuples(
            query_st, st.none() | st.integers(0, 45), st.booleans(), st.none() | st.integers(0, 5)
        ),
        min_size=1,
        max_size=6,
    ),
    cut=st.floats(0, 1),
)
def test_query_is_filtered_read_all(
    events: list[tuple[str, str, list[str]]],
    queries: list[tuple[list[QueryItem], int | None, bool, int | None]],
    cut: float,
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = d + "/s"

        def check(store: EventStore) -> None:
            for items, after, backwards, limit in queries:
                want = _expected(store, items, after)
                if backwards:
                    want.reverse()
                if limit is not None:
                    want = want[:limit]
                assert list(store.query(items, after, limit, backwards)) == want

        with EventStore.open(path) as store:
            for n, (stream, type_, tags) in enumerate(events):
                store.append(stream, [NewEvent(type_, n, tags=tags)])
            check(store)
            half = int(len(events) * cut)
            if half:
                _compact_through(store, half)
                check(store)
            if half < len(events):
                _compact_through(store, len(events))
                store.merge_archives()
                check(store)
        with EventStore.open(path) as store:
            check(store)
            store.verify()


@pytest.mark.parametrize("backwards", [False, True])
def test_an_item_with_several_tags_reads_only_the_events_carrying_all(
    store: EventStore, monkeypatch: Any, backwards: bool
) -> None:
    # 600 events tag "common"; every 60th also "rare": [common, rare] must
    # read 10 records, not 600 (a leapfrog join over the tags' t keys).
    for n in range(600):
        tags = ["common", "rare"] if n % 60 == 7 else ["common"]
        store.append(f"s{n % 7}", [NewEvent("T", n, tags=tags), NewEvent("U", n)])
    from eventstore import hot

    read: list[int] = []
    real = hot.lazy_events

    def counted(ids: list[bytes], streams: Any, raws: list[bytes]) -> Any:
        read.append(len(raws))
        return real(ids, streams, raws)

    monkeypatch.setattr(hot, "lazy_events", counted)
    items = [QueryItem(tags=["rare", "common"])]
    got = list(store.query(items, backwards=backwards))
    assert [e.data for e in got] == sorted(range(7, 600, 60), reverse=backwards)
    assert sum(read) == 10
    read.clear()
    after = next(e.seq for e in got if e.data == 247)
    got = list(store.query(items, after=after, backwards=backwards))
    assert [e.data for e in got] == sorted(range(307, 600, 60), reverse=backwards)
    assert sum(read) == 5
    assert [e.data for e in store.query([QueryItem(tags=["rare", "none"])])] == []


# -- conditional appends -------------------------------------------------------


def test_condition_refuses_and_accepts(store: EventStore) -> None:
    q = Query([QueryItem(types=["Enrolled"], tags=["course:7"])])
    store.append("c", [NewEvent("Enrolled", tags=["course:7", "student:1"])])
    store.append("c", [NewEvent("Other", tags=["course:7"])])
    with pytest.raises(ConditionFailed) as info:
        store.append("c", [NewEvent("Enrolled", tags=["course:7"])], condition=AppendCondition(q))
    assert (info.value.after, info.value.seq) == (None, 1)
    with pytest.raises(ConditionFailed) as info:
        store.append_many([("c", [NewEvent("Enrolled")], 1)], condition=AppendCondition(q, 0))
    assert info.value.seq == 1
    assert store.last_seq == 2
    # An event of another type after the position does not count.
    r = store.append(
        "c", [NewEvent("Enrolled", tags=["course:7"])], condition=AppendCondition(q, 1)
    )
    assert r.first_seq == 3
    # Nothing matching at all.
    store.append("d", [NewEvent("X")], condition=AppendCondition(Query([QueryItem(tags=["zz"])])))
    assert store.last_seq == 4
    # An empty query matches everything.
    with pytest.raises(ConditionFailed):
        store.append("d", [NewEvent("X")], condition=AppendCondition(Query(), 3))
    store.append("d", [NewEvent("X")], condition=AppendCondition(Query(), 4))


def test_condition_with_expected_version(store: EventStore) -> None:
    q = Query([QueryItem(tags=["x"])])
    store.append("s", [NewEvent("T", tags=["x"])])
    # Both fail: the version check comes first, nothing is written either way.
    with pytest.raises(WrongExpectedVersion):
        store.append("s", [NewEvent("T")], NO_STREAM, condition=AppendCondition(q, 0))
    with pytest.raises(ConditionFailed):
        store.append("s", [NewEvent("T")], 0, condition=AppendCondition(q, 0))
    with pytest.raises(WrongExpectedVersion):
        store.append("s", [NewEvent("T")], 5, condition=AppendCondition(q, 1))
    assert store.last_seq == 1
    store.append("s", [NewEvent("T")], 0, condition=AppendCondition(q, 1))
    assert store.stream_version("s") == 1


def test_condition_across_tiers(store: EventStore) -> None:
    q = Query([QueryItem(tags=["x"])])
    store.append("s", [NewEvent("T", tags=["x"])] + [NewEvent("T")] * 5)
    _compact_through(store, 6)
    assert not _hot_t_keys(store)
    with pytest.raises(ConditionFailed):
        store.append("s", [NewEvent("T")], condition=AppendCondition(q, 0))
    store.append("s", [NewEvent("T")], condition=AppendCondition(q, 1))


def test_condition_at_the_head_reads_nothing(store: EventStore, monkeypatch: Any) -> None:
    store.append("s", [NewEvent("T", tags=["x"])] * 3)

    def no_reads(*args: object) -> None:
        raise AssertionError("the fast path read the log")

    monkeypatch.setattr(store, "_first_match", no_reads)
    q = Query([QueryItem(tags=["x"])])
    for _ in range(3):
        store.append("s", [NewEvent("T", tags=["x"])], condition=AppendCondition(q, store.last_seq))


class _SlowDB:
    """The hot tier's database, but the next batch waits for ``gate``."""

    def __init__(self, db: Any, gate: threading.Event, entered: threading.Event) -> None:
        self._db, self._gate, self._entered = db, gate, entered

    def write_batch(self, **kw: Any) -> Any:
        self._entered.set()
        self._gate.wait(10)
        return self._db.write_batch(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class _Hot:
    def __init__(self, hot: Any, db: Any) -> None:
        self._hot, self.db = hot, db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hot, name)


def test_condition_sees_queued_appends(store: EventStore) -> None:
    w = store._writer
    gate, entered = threading.Event(), threading.Event()
    real = w._hot
    w._hot = _Hot(real, _SlowDB(real.db, gate, entered))  # type: ignore[assignment]
    errors: list[BaseException] = []

    def append_tagged() -> None:
        try:
            store.append("s", [NewEvent("T", tags=["x"]), NewEvent("U", tags=["y"])])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=append_tagged)
    t.start()
    try:
        assert entered.wait(10)
        assert store.last_seq == 0  # queued, not written
        with pytest.raises(ConditionFailed) as info:
            store.append(
                "o", [NewEvent("T")], condition=AppendCondition(Query([QueryItem(tags=["y"])]), 0)
            )
        assert info.value.seq == 2
        with pytest.raises(ConditionFailed):
            store.append(
                "o",
                [NewEvent("T")],
                condition=AppendCondition(Query([QueryItem(types=["T"], tags=["x"])]), 0),
            )
    finally:
        w._hot = real
        gate.set()
        t.join(10)
    assert not errors
    assert store.last_seq == 2
    store.append("o", [NewEvent("T")], condition=AppendCondition(Query([QueryItem(tags=["y"])]), 2))


def test_racing_decisions_exactly_the_right_ones_win(store: EventStore) -> None:
    """Threads decide at the same position on overlapping queries: a winner's
    query matches no earlier winner's event, and every loser's query matches
    an event that landed after the position."""
    groups = [["a"], ["b"], ["a", "b"], ["c"]]  # the tags each thread's query asks for
    for _round in range(15):
        pos = store.last_seq
        barrier = threading.Barrier(8)
        outcome: dict[int, Any] = {}

        def decide(n: int, pos: int, barrier: threading.Barrier, outcome: dict[int, Any]) -> None:
            tags = groups[n % 4]
            q = Query([QueryItem(tags=[t]) for t in tags])
            barrier.wait()
            try:
                r = store.append(
                    f"s{n}", [NewEvent("D", n, tags=tags)], condition=AppendCondition(q, pos)
                )
                outcome[n] = r.first_seq
            except ConditionFailed as exc:
                outcome[n] = exc

        threads = [
            threading.Thread(target=decide, args=(n, pos, barrier, outcome)) for n in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        landed = {e.seq: e for e in store.read_all(from_seq=pos + 1)}
        assert len(landed) == sum(1 for v in outcome.values() if isinstance(v, int))
        for n, result in outcome.items():
            wanted = set(groups[n % 4])
            if isinstance(result, int):
                earlier = [e for s, e in landed.items() if s < result]
                assert not any(wanted & set(e.tags) for e in earlier)
            else:
                assert any(wanted & set(e.tags) for e in landed.values())
                assert result.seq in landed and wanted & set(landed[result.seq].tags)
        # "c" conflicts only with the other "c" decision: exactly one of them lands.
        assert sum(isinstance(outcome[n], int) for n in (3, 7)) == 1


# -- subscriptions ---------------------------------------------------------------


def test_subscribe_query_catches_up_then_follows(store: EventStore) -> None:
    store.append(
        "s", [NewEvent("T", 1, tags=["x"]), NewEvent("T", 2), NewEvent("U", 3, tags=["x"])]
    )
    q = [QueryItem(types=["T"], tags=["x"])]
    with store.subscribe(query=q, page_size=1) as sub:
        assert sub.get(timeout=1).data == 1  # type: ignore[union-attr]
        assert sub.get(timeout=0) is None
        store.append("s", [NewEvent("T", 4), NewEvent("T", 5, tags=["x", "y"])])
        assert sub.get(timeout=5).data == 5  # type: ignore[union-attr]
        assert sub.get(timeout=0) is None
    first = next(iter(store.read_all()))
    with store.subscribe(after=first.id, query=q) as sub:
        assert sub.get(timeout=1).data == 5  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument):
        store.subscribe(query=q, types=["T"])
    with pytest.raises(InvalidType):
        store.subscribe(query="x")  # type: ignore[arg-type]


# -- removal ---------------------------------------------------------------------


def test_redaction_drops_tags_and_scavenge_their_keys(store: EventStore) -> None:
    r = store.append("s", [NewEvent("T", 1, tags=["x"]), NewEvent("T", 2, tags=["x"])])
    store.append("gone", [NewEvent("T", 3, tags=["x", "y"])])
    store.redact(r.ids[0])
    assert [e.data for e in store.query([QueryItem(tags=["x"])])] == [2, 3]
    # Matched by type alone it is still there, redacted, without tags.
    red = next(iter(store.query([QueryItem(types=["T"])])))
    assert red.redacted and red.tags == ()
    store.delete_stream("gone")
    assert [e.data for e in store.query([QueryItem(tags=["x"])])] == [2]
    assert len(_t_keys(store)) == 4
    store.scavenge()
    assert [e.data for e in store.query([QueryItem(tags=["x"])])] == [2]
    assert _t_keys(store) == [keys.tag_key(b"x", r.ids[1].bytes)]
    store.verify()


def test_compaction_cleanup_removes_tag_keys(store: EventStore) -> None:
    store.append("s", [NewEvent("T", n, tags=["x", f"n{n}"]) for n in range(20)])
    _compact_through(store, 15)
    assert len(_t_keys(store)) == 10
    assert [e.data for e in store.query([QueryItem(tags=["x"])], after=10)] == list(range(10, 20))
    store.verify()


def test_layout_is_3_and_newer_is_refused(tmp_path: Any) -> None:
    from eventstore.store import IncompatibleStore

    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        store.append("s", [NewEvent("T", tags=["x"])])
        db = store._hot.db
        assert msgpack.unpackb(db.get(keys.system_key(b"config")))["layout"] == 3
        db.put(keys.system_key(b"config"), msgpack.packb({"layout": 2, "index_types": True}))
    with EventStore.open(path) as store:  # a layout-2 store is upgraded
        db = store._hot.db
        assert msgpack.unpackb(db.get(keys.system_key(b"config")))["layout"] == 3
        db.put(keys.system_key(b"config"), msgpack.packb({"layout": 4, "index_types": True}))
    with pytest.raises(IncompatibleStore):
        EventStore.open(path)


def test_export_import_carries_tags(tmp_path: Any) -> None:
    with EventStore.open(str(tmp_path / "a")) as a:
        a.append("s", [NewEvent("T", 1, tags=["x"]), NewEvent("T", 2)])
        r = a.append("s", [NewEvent("T", 3, tags=["y", "x"])])
        a.redact(r.ids[0])
        exported = list(a.export_events())
        with EventStore.open(str(tmp_path / "b")) as b:
            b.import_events(exported)
            assert [e.tags for e in b.read_all()] == [("x",), (), ()]
            assert [e.data for e in b.query([QueryItem(tags=["x"])])] == [1]
            b.verify()


def test_aio_query_and_condition(tmp_path: Any) -> None:
    import asyncio

    from eventstore.aio import AsyncEventStore

    async def main() -> None:
        async with await AsyncEventStore.open(str(tmp_path / "s")) as astore:
            q = Query([QueryItem(tags=["x"])])
            await astore.append("s", [NewEvent("T", 1, tags=["x"])], condition=AppendCondition(q))
            with pytest.raises(ConditionFailed):
                await astore.append_many(
                    [("s", [NewEvent("T")], 0)], condition=AppendCondition(q, 0)
                )
            assert [e.data async for e in astore.query(q)] == [1]
            assert [e.data async for e in astore.query([QueryItem(tags=["y"])])] == []

    asyncio.run(main())


def test_a_query_changed_after_use_is_planned_anew(store: EventStore) -> None:
    # Plans are kept by value: mutating the caller's lists between calls must
    # change the answer, and a bad value must be refused every time.
    store.append("s", [NewEvent("A", 1, tags=["a"]), NewEvent("B", 2, tags=["b"])])
    tags = ["a"]
    items = [QueryItem(tags=tags)]
    assert [e.data for e in store.query(items)] == [1]
    tags[0] = "b"
    assert [e.data for e in store.query(items)] == [2]
    items.append(QueryItem(types=["A"]))
    assert [e.data for e in store.query(items)] == [1, 2]
    for _ in range(2):
        with pytest.raises(InvalidName):
            list(store.query([QueryItem(tags=["a\x00"])]))
