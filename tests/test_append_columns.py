"""The append path's two ways of preparing events: in bulk (every event
plain, the common case) and one event at a time (anything else, and the
errors). Both must key and record events alike, and neither may key what
user code changed while the record was packed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import UnserialisableData
from eventstore.prepare import _BULK, _Prepared
from eventstore.records import encoder

from .strategies import new_events


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(tmp_path / "store") as s:
        yield s


def columns(part: _Prepared) -> tuple[Any, ...]:
    """What a prepared part holds, with each index prefix paired with its event."""
    if part.index_each >= 0:
        owners = [n for n in range(part.n) for _ in range(part.index_each)]
    else:
        owners = part.index_owners
    assert len(owners) == len(part.index_prefixes)
    return (
        part.tails,
        part.g_heads,
        part.type_prefixes,
        list(zip(part.index_prefixes, owners, strict=True)),
    )


def one_at_a_time(stream: str, events: list[NewEvent], index_types: bool) -> _Prepared:
    part = _Prepared.__new__(_Prepared)
    part.stream, part.stream_b, part.n = stream, stream.encode(), len(events)
    part._pack_events(stream, events, index_types, encoder())
    return part


@settings(max_examples=300)
@given(events=new_events(max_size=8), index_types=st.booleans())
def test_bulk_and_one_at_a_time_prepare_the_same(events: list[NewEvent], index_types: bool) -> None:
    if not index_types:  # "type" is an ordinary index name then
        events = [e._replace(indexes={**(e.indexes or {}), "type": "t"}) for e in events]
    bulk = _Prepared("s-1", events, ANY, index_types)
    probe = _Prepared.__new__(_Prepared)
    probe.stream, probe.stream_b, probe.n = "s-1", b"s-1", len(events)
    assert probe._pack_plain("s-1", events, index_types, encoder())  # the bulk path was taken
    assert columns(bulk) == columns(one_at_a_time("s-1", events, index_types))


class WhenRead(dict):  # type: ignore[type-arg]
    """A dict subclass, converted while packing, which runs its __getitem__:
    user code in the middle of an append, here ``action``."""

    def __init__(self, action: Callable[[], object]) -> None:
        super().__init__(x=1)
        self.action = action

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(dict.keys(self)))

    def __getitem__(self, key: object) -> object:
        self.action()
        return dict.__getitem__(self, key)


@pytest.mark.parametrize("bulk", [True, False])
def test_index_entries_changed_while_packing_are_keyed_as_stored(
    store: EventStore, bulk: bool
) -> None:
    indexes = {"customer": "before"}
    # A str subclass type sends the append one event at a time.
    type_ = "T" if bulk else type("Name", (str,), {})("T")
    plain = [NewEvent(type_, {"n": n}) for n in range(_BULK)]
    r = store.append(
        "s",
        [
            *plain,
            NewEvent(
                type_, {"m": WhenRead(lambda: indexes.update(customer="after"))}, indexes=indexes
            ),
        ],
    )
    event = list(store.read_stream("s"))[-1]
    # The record holds the indexes as packed, after the change, and the
    # index keys must say what the record says.
    stored, other = "after", "before"
    assert event.indexes == {"customer": stored}
    for _ in range(2):  # hot, then cold
        assert [e.id for e in store.read_index("s", "customer", stored)] == [event.id]
        assert list(store.read_index("s", "customer", other)) == []
        store.compact(before=ULID.from_int(int(r.ids[-1]) + 1))


def test_a_bad_event_among_plain_ones_is_named(store: EventStore) -> None:
    events = [NewEvent("T", {"n": n}, indexes={"k": "v"}) for n in range(5)]
    events[3] = NewEvent("T", {"n": object()}, indexes={"k": "v"})
    with pytest.raises(UnserialisableData, match=r"data of event 3 \('T'\) of stream 's'"):
        store.append("s", events)
    assert store.stream_version("s") == -1


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), new_events(max_size=20)), min_size=1, max_size=3
    )
)
def test_the_hot_keys_are_exactly_what_the_records_say(
    tmp_path_factory: pytest.TempPathFactory, parts: list[tuple[str, list[NewEvent]]]
) -> None:
    with EventStore.open(tmp_path_factory.mktemp("s") / "store") as store:
        store.append_many([(stream, events, ANY) for stream, events in parts])
        db = store._hot.db
        stored = list(store.read_all())
        expected = {b"g" + e.id.bytes for e in stored} | {
            b"e" + e.stream.encode() + b"\0" + e.id.bytes for e in stored
        }
        for e in stored:
            for name, value in {**e.indexes, "type": e.type}.items():
                parts_b = (x.encode() + b"\0" for x in (e.stream, name, value))
                expected.add(b"i" + b"".join(parts_b) + e.id.bytes)
        held = {k for k in db.iterator(include_value=False) if k[:1] in (b"e", b"g", b"i")}
        assert held == expected
        pack = store._writer._packer.pack
        for e in stored:
            assert (
                db.get(b"e" + e.stream.encode() + b"\0" + e.id.bytes)[1:]
                == (pack([e.version, e.seq, e.type, e.data, e.metadata, e.indexes])[1:])
            )


def test_versions_past_the_table_of_record_heads(store: EventStore) -> None:
    # Records of the first 4096 versions take their head from a table; later
    # ones pack it. An append that crosses the line packs them all.
    store.append("s", [NewEvent("T", n) for n in range(4094)])
    store.append("s", [NewEvent("T", n) for n in range(4094, 4100)])
    store.append("s", [NewEvent("T", n) for n in range(4100, 4103)])
    events = list(store.read_stream("s", from_version=4090))
    want = [(n, n + 1, n) for n in range(4090, 4103)]
    assert [(e.version, e.seq, e.data) for e in events] == want


class Lying(list):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return list.__len__(self) + 1


@pytest.mark.parametrize("count", [_BULK - 2, _BULK + 2])
def test_an_event_list_that_changes_or_lies_is_read_once(store: EventStore, count: int) -> None:
    # The events are counted and packed from one copy, in both paths: a list
    # whose len() lies, or user code that shrinks it while its events are
    # packed, once made an append that reported events it never wrote (and
    # left gaps in seq and version).
    events: list[NewEvent] = [NewEvent("T", {"n": n}) for n in range(count)]
    # User code that takes the last event off the caller's list as it runs.
    events[0] = NewEvent("T", {"m": WhenRead(lambda: len(events) > 1 and events.pop())})
    r = store.append("x", events)
    lying = Lying(NewEvent("T", {"n": n}) for n in range(count))
    r2 = store.append("x", lying)
    stored = list(store.read_all())
    assert [e.seq for e in stored] == list(range(1, 2 * count + 1))
    assert [e.version for e in store.read_stream("x")] == list(range(2 * count))
    assert (r.last_seq, r2.first_seq, r2.last_seq) == (count, count + 1, 2 * count)
    store.verify()


def test_empty_indexes_filled_while_packing_store_alike_in_both_paths(store: EventStore) -> None:
    # One event at a time packs {} as the store's own empty dict; in bulk too,
    # so user code that fills the caller's {} meanwhile changes nothing.
    for count in (_BULK - 1, _BULK):
        empty: dict[str, str] = {}
        events = [NewEvent("T", {"n": n}) for n in range(count - 1)]
        fill = WhenRead(lambda empty=empty: empty.update(k="v"))  # type: ignore[misc]
        events.append(NewEvent("T", {"m": fill}, indexes=empty))
        store.append(f"s{count}", events)
        assert list(store.read_stream(f"s{count}"))[-1].indexes == {}
        assert list(store.read_index(f"s{count}", "k", "v")) == []
