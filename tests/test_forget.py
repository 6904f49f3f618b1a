"""Deletion, retention and redaction (issue 17): the store's API, both tiers, reopen."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from ulid import ULID

from eventstore import ANY, NO_STREAM, STREAM_EXISTS, EventStore, NewEvent
from eventstore.errors import (
    EventNotFound,
    EventStoreError,
    InvalidArgument,
    InvalidType,
    StreamDeleted,
    WrongExpectedVersion,
)
from eventstore.events import RedactedEvent
from eventstore.ids import ulid_from_int


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(str(tmp_path / "s")) as s:
        yield s


def _fill(store: EventStore, stream: str, n: int, start: int = 0) -> None:
    store.append(
        stream,
        [NewEvent("T", {"n": i}, {"m": i}, {"k": str(i % 2)}) for i in range(start, start + n)],
    )


def _compact_all(store: EventStore) -> None:
    last = next(store.read_all(backwards=True, limit=1), None)
    if last is not None:
        store.compact(before=ulid_from_int(int(last.id) + 1))


def _versions(store: EventStore, stream: str, **kw: object) -> list[int]:
    return [e.version for e in store.read_stream(stream, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize("cold", [False, True])
def test_soft_delete_hides_and_versions_go_on(tmp_path: Path, cold: bool) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        _fill(store, "a", 3)
        _fill(store, "b", 2)
        ids = [e.id for e in store.read_stream("a")]
        if cold:
            _compact_all(store)
        with pytest.raises(WrongExpectedVersion) as info:
            store.delete_stream("a", expected_version=1)
        assert info.value.actual == 2
        assert _versions(store, "a") == [0, 1, 2]  # nothing changed
        store.delete_stream("a", expected_version=2)
        assert _versions(store, "a") == []
        assert list(store.read_index("a", "k", "0")) == []
        assert [e.stream for e in store.read_all()] == ["b", "b", "$$a"]
        assert all(store.get(i) is None for i in ids)
        with pytest.raises(WrongExpectedVersion):  # nothing left to delete
            store.delete_stream("a")
        with pytest.raises(WrongExpectedVersion) as info:
            store.append("a", [NewEvent("T")], STREAM_EXISTS)
        assert info.value.actual == -1
        store.append("a", [NewEvent("Again")], NO_STREAM)
    with EventStore.open(path) as store:
        assert _versions(store, "a") == [3]
        assert store.stream_version("a") == 3
        assert store.stream_rules("a").truncate_before == 3
        store.append("a", [NewEvent("More")], 3)
        assert _versions(store, "a") == [3, 4]


def test_delete_unknown_stream_and_metadata_stream(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersion) as info:
        store.delete_stream("never")
    assert info.value.actual == -1
    with pytest.raises(InvalidArgument):
        store.delete_stream("$$x")
    assert store.last_seq == 0


@pytest.mark.parametrize("cold", [False, True])
def test_tombstone_is_for_ever(tmp_path: Path, cold: bool) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        _fill(store, "t", 2)
        _fill(store, "u", 1)
        first = next(store.read_stream("t")).id
        if cold:
            _compact_all(store)
        with pytest.raises(WrongExpectedVersion):
            store.tombstone_stream("t", expected_version=0)
        store.tombstone_stream("t", expected_version=1)
    with EventStore.open(path) as store:
        for read in (
            lambda: store.read_stream("t"),
            lambda: store.read_index("t", "k", "0"),
            lambda: store.read_stream("$$t"),
        ):
            with pytest.raises(StreamDeleted) as deleted:
                read()
            assert isinstance(deleted.value, LookupError)
        seq = store.last_seq
        for write in (
            lambda: store.append("t", [NewEvent("T")]),
            lambda: store.append("t", [NewEvent("T")], NO_STREAM),
            lambda: store.append("$$t", [NewEvent("$metadata", b"{}")]),
            lambda: store.append_many([("u", [NewEvent("T")], ANY), ("t", [NewEvent("T")], ANY)]),
            lambda: store.delete_stream("t"),
            lambda: store.tombstone_stream("t"),
            lambda: store.set_retention("t", max_count=1),
        ):
            with pytest.raises(StreamDeleted):
                write()
        assert store.last_seq == seq  # nothing written
        assert store.get(first) is None
        assert [e.stream for e in store.read_all()] == ["u", "$$t"]
        assert store.stream_rules("t").tombstoned


def test_tombstone_of_a_new_stream(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersion):
        store.tombstone_stream("n", expected_version=STREAM_EXISTS)
    store.tombstone_stream("n", expected_version=NO_STREAM)
    with pytest.raises(StreamDeleted):
        store.append("n", [NewEvent("T")])


@pytest.mark.parametrize("cold", [False, True])
def test_max_count_and_truncate_before(tmp_path: Path, cold: bool) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        _fill(store, "r", 6)
        if cold:
            _compact_all(store)
        store.set_retention("r", max_count=4)
        assert _versions(store, "r") == [2, 3, 4, 5]
        assert _versions(store, "r", backwards=True, limit=2) == [5, 4]
        assert _versions(store, "r", from_version=0, limit=1) == [2]
        assert [e.version for e in store.read_index("r", "k", "0")] == [2, 4]
        _fill(store, "r", 1, 6)  # one more pushes version 2 out, at once
        assert _versions(store, "r") == [3, 4, 5, 6]
        store.set_retention("r", max_count=4, truncate_before=5)
        assert _versions(store, "r") == [5, 6]
        assert [e.version for e in store.read_all() if e.stream == "r"] == [5, 6]
    with EventStore.open(path) as store:
        assert _versions(store, "r") == [5, 6]
        rules = store.stream_rules("r")
        assert (rules.max_count, rules.truncate_before, rules.max_age) == (4, 5, None)
        store.set_retention("r")  # all rules off: until a scavenge, they come back
        assert _versions(store, "r") == list(range(7))


@pytest.mark.parametrize("cold", [False, True])
def test_max_age(tmp_path: Path, cold: bool) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        _fill(store, "a", 3)
        newest = next(store.read_stream("a", backwards=True))
        if cold:
            _compact_all(store)
        born = newest.timestamp.timestamp()
        store.set_retention("a", max_age=timedelta(seconds=10))
        store._forget.clock = lambda: born + 5
        assert _versions(store, "a") == [0, 1, 2]
        store._forget.clock = lambda: born + 11
        assert _versions(store, "a") == []
        assert store.get(newest.id) is None
        assert list(store.read_all()) == [next(store.read_stream("$$a"))]


@pytest.mark.parametrize(
    ("kwargs", "error", "builtin"),
    [
        ({"max_count": 0}, InvalidArgument, ValueError),
        ({"max_count": -1}, InvalidArgument, ValueError),
        ({"max_count": 1 << 70}, InvalidArgument, ValueError),
        ({"truncate_before": -1}, InvalidArgument, ValueError),
        ({"max_age": 0}, InvalidArgument, ValueError),
        ({"max_age": timedelta(days=-1)}, InvalidArgument, ValueError),
        ({"max_age": timedelta(days=400_000)}, InvalidArgument, ValueError),
        ({"max_age": timedelta(milliseconds=1500)}, InvalidArgument, ValueError),
        ({"max_age": 1.5}, InvalidType, TypeError),
        ({"max_count": "3"}, InvalidType, TypeError),
        ({"max_count": True}, InvalidType, TypeError),
    ],
)
def test_bad_retention_changes_nothing(
    store: EventStore, kwargs: dict[str, object], error: type, builtin: type
) -> None:
    _fill(store, "a", 2)
    with pytest.raises(error) as info:
        store.set_retention("a", **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, EventStoreError) and isinstance(info.value, builtin)
    assert store.last_seq == 2 and _versions(store, "a") == [0, 1]
    with pytest.raises(InvalidArgument):
        store.set_retention("$$a", max_count=1)


@pytest.mark.parametrize("cold", [False, True])
def test_redact(tmp_path: Path, cold: bool) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        _fill(store, "p", 3)
        target = list(store.read_stream("p"))[1]
        if cold:
            _compact_all(store)
        assert store.redact(target.id) is True
        assert store.redact(str(target.id)) is False  # once is enough
    with EventStore.open(path) as store:
        got = store.get(target.id)
        assert isinstance(got, RedactedEvent) and got.redacted
        assert (got.id, got.stream, got.version, got.seq, got.type, got.indexes) == (
            target.id,
            "p",
            1,
            target.seq,
            "T",
            {},  # index values go with the data (docs/guarantees.md)
        )
        assert target.indexes == {"k": "1"}
        assert got.data is None and got.metadata is None
        events = list(store.read_stream("p"))
        assert [e.redacted for e in events] == [False, True, False]
        assert events[0].data == {"n": 0}
        assert [e.redacted for e in store.read_all()] == [False, True, False]
        assert list(store.read_index("p", "k", "1")) == []
        assert [e.redacted for e in store.read_index("p", "type", "T")] == [False, True, False]
        assert store.redacted_ids == [target.id]


def test_redact_bad_input(store: EventStore) -> None:
    _fill(store, "p", 1)
    store.set_retention("p", max_count=5)
    meta = next(store.read_stream("$$p"))
    with pytest.raises(EventNotFound) as info:
        store.redact(ULID())
    assert isinstance(info.value, LookupError)
    with pytest.raises(InvalidArgument):
        store.redact(meta.id)
    with pytest.raises(ValueError):
        store.redact("not a ulid")
    assert store.redacted_ids == []


def test_subscription_skips_deleted(store: EventStore) -> None:
    _fill(store, "a", 2)
    _fill(store, "b", 2)
    store.delete_stream("a")
    sub = store.subscribe()
    got = [sub.get(timeout=1) for _ in range(3)]
    assert [(e.stream, e.version) for e in got if e is not None] == [("b", 0), ("b", 1), ("$$a", 0)]
    assert sub.get(timeout=0) is None
    sub.close()


def test_imported_metadata_sets_the_rules(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "src")) as src:
        _fill(src, "a", 3)
        src.set_retention("a", max_count=1)
        _fill(src, "t", 1)
        src.tombstone_stream("t")
        log = list(src._view().read_all(None, False, None, None))  # the log as stored
    with EventStore.open(str(tmp_path / "dst")) as dst:
        assert dst.import_events(log) == len(log)
        assert _versions(dst, "a") == [2]
        with pytest.raises(StreamDeleted):
            dst.append("t", [NewEvent("T")])
        seq = dst.last_seq
        late = log[-2]._replace(id=ulid_from_int(int(log[-1].id) + 1), seq=seq + 1, version=1)
        with pytest.raises(StreamDeleted):  # an import into a tombstoned stream
            dst.import_events([late])
        assert dst.last_seq == seq
