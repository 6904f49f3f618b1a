"""The single-append fast paths (issue 21): caches of validated names and of
per-type key heads, the one-event write builder, the ext-byte test. Each
must write exactly what docs/FORMAT.md and the key layout say, and none may
let a str subclass's ``__eq__`` or ``__hash__`` meet a cache of plain text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import ANY, EventStore, NewEvent
from eventstore import records as records_module
from eventstore.errors import InvalidName
from eventstore.records import _EXT_HEADS, _NOT_EXT_HEADS, may_hold_ext, name_bytes

from .strategies import new_events, payloads


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(tmp_path / "store") as s:
        yield s


def _uncached(value: str, what: str) -> bytes:
    return records_module._checked_name(value, what)


@given(st.text(max_size=12) | st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 1025]))
def test_name_bytes_cached_answers_as_the_checks_do(value: str) -> None:
    for _ in range(2):  # the second call may come from the cache
        try:
            want: bytes | type[Exception] = _uncached(value, "stream name")
        except InvalidName:
            want = InvalidName
        try:
            got: bytes | type[Exception] = name_bytes(value, "stream name")
        except InvalidName:
            got = InvalidName
        assert got == want
    if want is InvalidName:
        assert value not in records_module._VALID_NAMES


class _Collides(str):
    """Equal to every str, with the hash of "a"."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("a")


def test_a_str_subclass_never_meets_the_name_cache() -> None:
    assert name_bytes("a", "stream name") == b"a"  # cached
    assert name_bytes(_Collides("b"), "stream name") == b"b"


def test_the_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "_MAX_VALID_NAMES", 3)
    monkeypatch.setattr(records_module, "_VALID_NAMES", {})
    for n in range(10):
        assert name_bytes(f"s{n}", "stream name") == f"s{n}".encode()
        assert len(records_module._VALID_NAMES) <= 3


def test_a_type_that_is_a_str_subclass_is_stored_as_its_own_text(store: EventStore) -> None:
    # "a" first, so that its key heads are cached; then a subclass that
    # claims to equal it, with its hash.
    store.append("s", [NewEvent("a", 1)])
    store.append("s", [NewEvent(_Collides("b"), 2)])
    store.append("s", [NewEvent(_Collides("b"), 3), NewEvent("a", 4)])
    events = list(store.read_stream("s"))
    assert [(e.type, e.data) for e in events] == [("a", 1), ("b", 2), ("b", 3), ("a", 4)]
    assert [type(e.type) for e in events] == [str] * 4
    assert [e.data for e in store.read_index("s", "type", "b")] == [2, 3]
    assert [e.data for e in store.read_index("s", "type", "a")] == [1, 4]
    assert [e.type for e in store.read_all()] == ["a", "b", "b", "a"]


def _check_layout(store: EventStore) -> None:
    """Every hot key and value of the store's events is what the format says,
    byte for byte: records and global entries packed whole by msgpack."""
    db = store._hot.db
    stored = list(store.read_all())
    want: dict[bytes, bytes] = {}
    last: dict[str, int] = {}
    for e in stored:
        stream_b = e.stream.encode()
        want[b"e" + stream_b + b"\0" + e.id.bytes] = msgpack.packb(
            [e.version, e.seq, e.type, e.data, e.metadata, e.indexes], use_bin_type=True
        )
        want[b"g" + e.id.bytes] = msgpack.packb([e.stream, e.type, e.seq], use_bin_type=True)
        entries = dict(e.indexes)
        if store._index_types:
            entries["type"] = e.type
        for name, value in entries.items():
            key = b"i" + stream_b + b"\0" + name.encode() + b"\0" + value.encode() + b"\0"
            want[key + e.id.bytes] = b""
        last[e.stream] = e.version
    for stream, version in last.items():
        want[b"m" + stream.encode() + b"\0"] = msgpack.packb([version])
    held = {k: v for k, v in db.iterator() if k[:1] in (b"e", b"g", b"i", b"m")}
    assert held == want


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "ü"]), new_events(max_size=1)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_single_event_appends_write_exactly_the_format(
    tmp_path_factory: pytest.TempPathFactory,
    appends: list[tuple[str, list[NewEvent]]],
    index_types: bool,
) -> None:
    path = tmp_path_factory.mktemp("s") / "store"
    with EventStore.open(path, index_types=index_types) as store:
        for stream, events in appends:
            store.append(stream, events)
        _check_layout(store)


def test_single_event_appends_across_the_table_of_record_heads(store: EventStore) -> None:
    # Versions below 4096 take their record head from a table; 4095 is its
    # last entry, 4096 the first that is packed.
    store.append("s", [NewEvent("T", n) for n in range(4094)])
    for n in range(4094, 4099):
        store.append("s", [NewEvent("T", n, indexes={"k": "v"})])
    events = list(store.read_stream("s", from_version=4092))
    assert [(e.version, e.seq, e.data) for e in events] == [
        (n, n + 1, n) for n in range(4092, 4099)
    ]
    _check_layout(store)


@given(st.binary(max_size=64))
def test_may_hold_ext_finds_the_ext_head_bytes(raw: bytes) -> None:
    assert may_hold_ext(raw) == bool(raw.translate(None, _NOT_EXT_HEADS))


def test_may_hold_ext_knows_every_head_byte() -> None:
    for b in range(256):
        assert may_hold_ext(bytes([7, b, 7])) == (b in _EXT_HEADS)


@given(payloads)
def test_an_ext_value_among_payloads_is_still_found(value: Any) -> None:
    # A bad ExtType code is refused whatever surrounds it.
    bad = tuple.__new__(msgpack.ExtType, (300, b"x"))
    with pytest.raises(records_module.UnserialisableData):
        records_module.check_serialisable([value, bad], "event data")


def test_a_single_append_with_a_bad_ext_code_writes_nothing(store: EventStore) -> None:
    bad = tuple.__new__(msgpack.ExtType, (300, b"x"))
    with pytest.raises(records_module.UnserialisableData):
        store.append("s", [NewEvent("T", {"v": bad})], ANY)
    assert store.stream_version("s") == -1
    assert list(store.read_all()) == []


def test_long_names_are_checked_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "_VALID_NAMES", {})
    long = "x" * (records_module._MAX_CACHED_NAME + 1)
    assert name_bytes(long, "stream name") == long.encode()
    assert name_bytes("short", "stream name") == b"short"
    assert list(records_module._VALID_NAMES) == ["short"]


def test_long_stream_and_type_names_append_and_read_back(store: EventStore) -> None:
    stream, type_ = "s" * 1000, "T" * 1000
    for n in range(3):
        store.append(stream, [NewEvent(type_, n)])
    assert [(e.type, e.data) for e in store.read_stream(stream)] == [(type_, n) for n in range(3)]
    assert [e.data for e in store.read_index(stream, "type", type_)] == [0, 1, 2]
    _check_layout(store)


def test_the_counts_are_packed_under_the_writer_lock_as_pack_counts_packs_them(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An append packs ``x counts`` with the writer's reused Packer (packb
    # builds a Packer a call, ~1 us of a single append): the bytes must be
    # those counters.pack_counts makes, which open reads back.
    from eventstore import counters, keys

    def refuse(streams: int, last_seq: int) -> bytes:
        raise AssertionError("an append packed its counts with packb")

    want = counters.pack_counts
    monkeypatch.setattr(counters, "pack_counts", refuse)
    store.append("a", [NewEvent("T", 1)])
    assert store._hot.db.get(keys.COUNTS) == want(1, 1)
    store.append_many(
        [("b", [NewEvent("T", n) for n in range(20)], ANY), ("a", [NewEvent("T", 2)], ANY)]
    )
    assert store._hot.db.get(keys.COUNTS) == want(2, 22)
    assert counters.read_counts(store._hot.db.get(keys.COUNTS)) == (2, 22)
