"""The store's API one behaviour at a time: seeks, errors, options, locking."""

from __future__ import annotations

import collections
import enum
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
from ulid import ULID

from eventstore import ANY, NO_STREAM, STREAM_EXISTS, Event, EventStore, NewEvent
from eventstore.errors import (
    EventStoreError,
    InvalidArgument,
    InvalidName,
    InvalidULID,
    StoreClosed,
    StoreLocked,
    UnserialisableData,
    WrongExpectedVersion,
)
from eventstore.store import IncompatibleStore


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore.open(tmp_path / "store")
    yield s
    s.close()


def versions(events: object) -> list[int]:
    return [e.version for e in events]  # type: ignore[attr-defined]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 257])
def test_read_from_every_version_in_both_directions(store: EventStore, length: int) -> None:
    # Interleave another stream so the stream's keys are not the whole table.
    for n in range(length):
        store.append("s", [NewEvent("T", n)])
        store.append("other", [NewEvent("T", n)])
    for v in range(length + 2):
        assert versions(store.read_stream("s", v)) == list(range(v, length))
        assert versions(store.read_stream("s", v, backwards=True)) == list(
            range(min(v, length - 1), -1, -1)
        )


def test_read_from_a_version_in_a_bursty_stream(store: EventStore) -> None:
    # Ids cluster in bursts separated by pauses: interpolation alone would be
    # slow here, the search must still land exactly.
    for burst in range(6):
        store.append("s", [NewEvent("T", n) for n in range(200)])
        for _ in range(burst * 3):
            store.append("s", [NewEvent("T")])
        time.sleep(0.003)
    last = store.stream_version("s")
    for v in [0, 1, 199, 200, 201, 433, 650, last - 1, last]:
        assert next(store.read_stream("s", v)).version == v
        assert next(store.read_stream("s", v, backwards=True)).version == v


def test_limit_and_empty_reads(store: EventStore) -> None:
    store.append("s", [NewEvent("T", n) for n in range(5)])
    assert versions(store.read_stream("s", limit=2)) == [0, 1]
    assert versions(store.read_stream("s", backwards=True, limit=2)) == [4, 3]
    assert list(store.read_stream("s", limit=0)) == []
    assert list(store.read_stream("missing")) == []
    assert list(store.read_index("missing", "type", "T")) == []
    assert list(store.read_all(limit=0)) == []
    with pytest.raises(InvalidArgument):
        store.read_stream("s", limit=-1)
    with pytest.raises(InvalidArgument):
        store.read_stream("s", from_version=-1)


def test_expected_versions(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersion):
        store.append("s", [NewEvent("T")], expected_version=STREAM_EXISTS)
    store.append("s", [NewEvent("T")], expected_version=NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as info:
        store.append("s", [NewEvent("T")], expected_version=NO_STREAM)
    assert "expected version NO_STREAM" in str(info.value)
    assert "actual version 0" in str(info.value)
    r = store.append("s", [NewEvent("T"), NewEvent("T")], expected_version=0)
    assert (r.first_version, r.last_version) == (1, 2)
    with pytest.raises(WrongExpectedVersion) as info:
        store.append("s", [NewEvent("T")], expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    store.append("s", [NewEvent("T")], expected_version=STREAM_EXISTS)
    store.append("s", [NewEvent("T")], expected_version=ANY)
    assert store.stream_version("s") == 4
    with pytest.raises(TypeError):
        store.append("s", [NewEvent("T")], expected_version="3")
    with pytest.raises(ValueError):
        store.append("s", [NewEvent("T")], expected_version=-2)


def test_append_many_is_all_or_nothing(store: EventStore) -> None:
    store.append("a", [NewEvent("T")])
    with pytest.raises(WrongExpectedVersion):
        store.append_many([("b", [NewEvent("T")], NO_STREAM), ("a", [NewEvent("T")], 5)])
    assert store.stream_version("b") == -1
    assert len(list(store.read_all())) == 1
    results = store.append_many(
        [("b", [NewEvent("T")], NO_STREAM), ("a", [NewEvent("T")], 0), ("b", [NewEvent("U")], 0)]
    )
    assert [(r.stream, r.first_version, r.first_seq) for r in results] == [
        ("b", 0, 2),
        ("a", 1, 3),
        ("b", 1, 4),
    ]
    # Every part landed under the ids it was given, consecutive across parts.
    log = list(store.read_all())[1:]
    assert [(e.stream, e.version, e.seq, e.id) for e in log] == [
        (r.stream, r.first_version, r.first_seq, r.ids[0]) for r in results
    ]
    assert [e.type for e in store.read_stream("b")] == ["T", "U"]
    ids = [int(r.ids[0]) for r in results]
    assert ids == list(range(ids[0], ids[0] + 3))


def test_unserialisable_data_names_the_field_and_type(store: EventStore) -> None:
    with pytest.raises(UnserialisableData) as info:
        store.append("s", [NewEvent("T", {"when": datetime.now()})])
    assert isinstance(info.value, TypeError)
    assert "data" in str(info.value) and "datetime" in str(info.value)
    with pytest.raises(UnserialisableData) as info:
        store.append("s", [NewEvent("T", 1, metadata=[{1, 2}])])
    assert "metadata" in str(info.value) and "set" in str(info.value)
    assert store.stream_version("s") == -1


class _HashableDict(dict):  # type: ignore[type-arg]
    def __hash__(self) -> int:
        return 0


# Values msgpack packs but cannot decode back: a tuple map key comes back as
# an unhashable list, ext code -1 must hold a valid timestamp.
UNREADABLE = [
    {("a", 1): 2},
    [{"deep": {(1, (2, 3)): None}}],
    {_HashableDict(a=1): 1},
    msgpack.ExtType._make((-1, b"x")),
]


@pytest.mark.parametrize("value", UNREADABLE, ids=["tuple-key", "nested", "dict-key", "ext-1"])
def test_values_that_would_not_read_back_are_refused(store: EventStore, value: object) -> None:
    store.append("s", [NewEvent("T", 0)])
    for call, field in (
        (lambda: store.append("s", [NewEvent("T", 1), NewEvent("T", value)]), "data of event 1"),
        (lambda: store.append("s", [NewEvent("T", metadata=value)]), "metadata of event 0"),
        (
            lambda: store.append_many(
                [("t", [NewEvent("T")], ANY), ("s", [NewEvent("T", value)], ANY)]
            ),
            "data",
        ),
        (lambda: store.save_snapshot("s", 0, value), "snapshot state"),
        (lambda: store.set_checkpoint("p", value), "checkpoint 'p'"),
    ):
        with pytest.raises(UnserialisableData) as info:
            call()
        assert field in str(info.value) and "read back" in str(info.value)
    assert [e.data for e in store.read_all()] == [0]
    assert store.load_snapshot("s") is None and store.get_checkpoint("p") is None


def test_values_that_look_suspect_but_read_back_are_stored(store: EventStore) -> None:
    # Each of these goes through the encoder's decode check (a tuple, a dict
    # subclass, a 0xFF byte) or its subclass conversion, and must still land.
    class Kind(enum.IntEnum):
        A = 7

    class Name(str):
        pass

    class Stamp(msgpack.Timestamp):
        pass

    values = [
        (1, 2),
        collections.OrderedDict(b=[(-1, 255)]),
        {Kind.A: Name("x"), 1.5: b"\xff", None: -1},
        Stamp(1, 2),
        msgpack.ExtType(5, b"\xff"),
    ]
    store.append("s", [NewEvent("T", v, metadata=v) for v in values])
    expected = [
        [1, 2],
        {"b": [[-1, 255]]},
        {7: "x", 1.5: b"\xff", None: -1},
        msgpack.Timestamp(1, 2),
        msgpack.ExtType(5, b"\xff"),
    ]
    assert [e.data for e in store.read_stream("s")] == expected
    assert [e.metadata for e in store.read_stream("s")] == expected


class Kind(str, enum.Enum):  # noqa: UP042 (the pattern StrEnum replaced, still common)
    PLACED = "placed"


class Level(enum.IntEnum):
    HIGH = 3

    def __int__(self) -> int:  # a subclass's conversion must not be trusted
        return 99


class Blob(bytearray):
    pass


class Ext(msgpack.ExtType):
    pass


def test_subclasses_are_stored_as_their_value_in_both_tiers(store: EventStore) -> None:
    # (str, Enum) members are their value, not str() of them ('Kind.PLACED'):
    # the hot keys are built from the value, and both tiers must agree.
    store.append(
        "s",
        [
            NewEvent(
                Kind.PLACED,
                {Kind.PLACED: Level.HIGH, "b": Blob(b"x"), "e": Ext(5, b"y")},
                metadata=[Kind.PLACED],
                indexes={"kind": Kind.PLACED},
            )
        ],
    )
    expected_data = {"placed": 3, "b": b"x", "e": msgpack.ExtType(5, b"y")}
    for tier in ("hot", "cold"):
        if tier == "cold":
            (last,) = store.read_all(backwards=True, limit=1)
            store.compact(before=ULID.from_int(int(last.id) + 1))
            store.cleanup()
        (event,) = store.read_stream("s")
        assert (event.type, event.data, event.metadata) == ("placed", expected_data, ["placed"])
        assert type(event.type) is str and event.indexes == {"kind": "placed"}
        assert [e.id for e in store.read_index("s", "kind", "placed")] == [event.id]
        assert [e.id for e in store.read_index("s", "type", "placed")] == [event.id]
        assert [e.id for e in store.read_all(types=["placed"])] == [event.id]
    assert store._hot.db.get(b"i", None) is None  # cleanup found every hot index key
    assert list(store._hot.db.iterator(prefix=b"i", include_value=False)) == []


@pytest.mark.parametrize("code", [-2, -100, -128])
def test_ext_values_with_any_code_read_back_in_both_tiers(store: EventStore, code: int) -> None:
    # ExtType's constructor refuses codes outside 0..127, but one made around
    # it packs; its record must stay readable, and read back as it went in.
    value = msgpack.ExtType._make((code, b"z"))
    r = store.append("s", [NewEvent("T", {"v": value})])
    assert store.get(r.ids[0]).data == {"v": value}  # type: ignore[union-attr]
    store.compact(before=ULID.from_int(int(r.ids[0]) + 1))
    assert [e.data for e in store.read_all()] == [{"v": value}]
    store.verify()


def test_an_append_made_while_packing_another_is_stored_intact(store: EventStore) -> None:
    # User code that runs in the middle of packing (a dict subclass that
    # overrides __iter__ is read through __getitem__) and appends again must
    # not share the Packer that is half-way through the first append's record.
    class Items(dict):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(list(dict.keys(self)))

        def __getitem__(self, key: object) -> object:
            store.append("inner", [NewEvent("T", {"inner": [1, 2]})])
            return dict.__getitem__(self, key)

    store.append("outer", [NewEvent("T", {"items": [1, 2], "more": Items(a=1)})])
    assert [e.data for e in store.read_stream("inner")] == [{"inner": [1, 2]}]
    assert [e.data for e in store.read_stream("outer")] == [{"items": [1, 2], "more": {"a": 1}}]


class Encodes(str):
    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"OTHER"


class HidesNul(str):
    def __contains__(self, item: object) -> bool:  # type: ignore[override]
        return False


class LooksFull(str):
    def __len__(self) -> int:
        return 5

    def __bool__(self) -> bool:
        return True


class EqualsAnything(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("cust")


def test_str_subclass_names_are_their_text_everywhere(store: EventStore) -> None:
    # Checks, hot keys and the packed record all use the text a subclass
    # holds, never its overridden methods; no cache is poisoned for later
    # plain appends. (Found in review.)
    r = store.append(
        Encodes("orders"), [NewEvent(Encodes("Placed"), indexes={Encodes("cust"): "c7"})]
    )
    store.append("b", [NewEvent("T", indexes={"cust": "c7"})])
    store.append("c", [NewEvent("T", indexes={EqualsAnything("zzz"): "v"})])
    store.append("d", [NewEvent("T", indexes={"cust": "c8"})])
    store.append("e", [NewEvent("Plain"), NewEvent(EqualsAnything("Other"))])
    for tier in ("hot", "cold"):
        if tier == "cold":
            (last,) = store.read_all(backwards=True, limit=1)
            store.compact(before=ULID.from_int(int(last.id) + 1))
            store.cleanup()
        event = store.get(r.ids[0])
        assert event is not None and (event.stream, event.type) == ("orders", "Placed")
        assert [e.id for e in store.read_index("orders", "type", "Placed")] == [event.id]
        assert [e.id for e in store.read_index("orders", "cust", "c7")] == [event.id]
        assert len(list(store.read_index("b", "cust", "c7"))) == 1
        assert [e.indexes for e in store.read_stream("c")] == [{"zzz": "v"}]
        assert len(list(store.read_index("c", "zzz", "v"))) == 1
        assert len(list(store.read_index("d", "cust", "c8"))) == 1
        for e in store.read_stream("e"):  # whatever type a record got, all agree on it
            assert e in store.read_index("e", "type", e.type)
            assert e in store.read_all(types=[e.type])
    for bad in (HidesNul("T\x00x"), LooksFull("")):
        for call in (
            lambda bad=bad: store.append(bad, [NewEvent("T")]),
            lambda bad=bad: store.append("s", [NewEvent(bad)]),
            lambda bad=bad: store.append("s", [NewEvent("T", indexes={"k": bad})]),
            lambda bad=bad: store.append("s", [NewEvent("T", indexes={bad: "v"})]),
        ):
            with pytest.raises(InvalidName):
                call()
    assert store.stream_version("s") == -1


class OwnHash(str):
    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return type(other) is OwnHash and str.__eq__(self, other)


class BigCode(msgpack.ExtType):
    pass


def test_values_that_would_change_on_the_way_are_refused(store: EventStore) -> None:
    for value in (
        {OwnHash("k"): 1, "k": 2},  # two keys that pack as one
        BigCode._make((200, b"x")),  # a code msgpack would wrap to -56
        {"x": Ext._make((-129, b"x"))},
    ):
        with pytest.raises(UnserialisableData):
            store.append("s", [NewEvent("T", value)])
    assert store.stream_version("s") == -1


def test_a_record_too_large_for_the_archive_is_refused(store: EventStore) -> None:
    from eventstore.records import MAX_RECORD_BYTES

    with pytest.raises(InvalidArgument, match="at most"):
        store.append("s", [NewEvent("T"), NewEvent("T", b"x" * MAX_RECORD_BYTES)])
    store.append("s", [NewEvent("T", b"x" * (MAX_RECORD_BYTES - 64))])  # fits, and moves
    (last,) = store.read_all(backwards=True, limit=1)
    assert store.compact(before=ULID.from_int(int(last.id) + 1)).events == 1


def test_data_that_fits_alone_but_not_in_its_record_is_refused(store: EventStore) -> None:
    deep: object = None
    depth = 0
    while True:  # the deepest data msgpack packs on its own
        deeper = [deep]
        try:
            msgpack.packb(deeper)
        except ValueError:
            break
        deep, depth = deeper, depth + 1
    with pytest.raises(UnserialisableData, match="event 0"):
        store.append("s", [NewEvent("T", deep)])
    assert store.stream_version("s") == -1


@pytest.mark.parametrize("bad", ["", "a\x00", 5, None, "\ud800", "x" * 2000, b"v"])
def test_bad_names_everywhere(store: EventStore, bad: object) -> None:
    for call in (
        lambda: store.append(bad, [NewEvent("T")]),  # type: ignore[arg-type]
        lambda: store.append("s", [NewEvent(bad)]),  # type: ignore[arg-type]
        lambda: store.append("s", [NewEvent("T", indexes={"k": bad})]),  # type: ignore[dict-item]
        lambda: store.append("s", [NewEvent("T", indexes={bad: "v"})]),  # type: ignore[dict-item]
        lambda: store.read_stream(bad),  # type: ignore[arg-type]
        lambda: store.read_index("s", bad, "v"),  # type: ignore[arg-type]
        lambda: store.stream_version(bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidName) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, EventStoreError)
    assert list(store.read_all()) == []


def test_unhashable_index_value_is_a_type_error(store: EventStore) -> None:
    with pytest.raises(InvalidName) as info:
        store.append("s", [NewEvent("T", indexes={"k": ["v"]})])  # type: ignore[dict-item]
    assert isinstance(info.value, TypeError)


def test_get_by_ulid_string_and_bytes(store: EventStore) -> None:
    r = store.append("s", [NewEvent("T", "x")])
    event = store.get(r.ids[0])
    assert isinstance(event, Event)
    assert store.get(str(r.ids[0])) == event == store.get(r.ids[0].bytes)
    assert store.get(ULID()) is None
    with pytest.raises(InvalidULID):
        store.get("not-a-ulid")
    with pytest.raises(ValueError):
        store.get("01ARZ3NDEKTSV4RRFFQ69G5FA!")


@pytest.mark.parametrize("length", [1, 31, 32, 255, 256, 1024])
def test_get_finds_events_of_streams_with_names_of_any_length(
    store: EventStore, length: int
) -> None:
    # get() slices short names out of the global entry and decodes longer
    # ones: cover both sides of each msgpack string header size.
    for stream in ("s" * length, ("é" * length)[: length // 2] or "é"):
        (eid,) = store.append(stream, [NewEvent("T", stream)]).ids
        got = store.get(eid)
        assert got is not None and got.stream == stream and got.data == stream
        # ... and the fast path found it itself (False would send get() to
        # the slower consistent read, hiding a wrong key).
        assert store._hot.get_event(eid.bytes) == got


def test_event_fields(store: EventStore) -> None:
    before = datetime.now(UTC)
    r = store.append(
        "order-42",
        [NewEvent("OrderPlaced", {"total": 42.99}, metadata={"user": "u1"}, indexes={"c": "c7"})],
    )
    (event,) = store.read_stream("order-42")
    assert event.id == r.ids[0] and isinstance(event.id, ULID)
    assert (event.stream, event.version, event.seq, event.type) == ("order-42", 0, 1, "OrderPlaced")
    assert event.data == {"total": 42.99} and event.metadata == {"user": "u1"}
    assert event.indexes == {"c": "c7"}
    assert event.timestamp.tzinfo is UTC
    assert abs((event.timestamp - before).total_seconds()) < 5
    assert event.timestamp == event.id.datetime


def test_bytes_stay_bytes(store: EventStore) -> None:
    store.append("s", [NewEvent("T", {"blob": b"\x00\xff", "text": "\x00"}, metadata=b"m")])
    (event,) = store.read_stream("s")
    assert event.data == {"blob": b"\x00\xff", "text": "\x00"}
    assert event.metadata == b"m"


def test_type_index_can_be_turned_off(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s", index_types=False) as store:
        store.append("s", [NewEvent("T", indexes={"type": "custom"})])
        assert list(store.read_index("s", "type", "T")) == []
        assert len(list(store.read_index("s", "type", "custom"))) == 1
    with pytest.raises(IncompatibleStore):
        EventStore.open(tmp_path / "s", index_types=True)
    with EventStore.open(tmp_path / "s") as store:  # the stored choice is kept
        store.append("s", [NewEvent("T")])
        assert list(store.read_index("s", "type", "T")) == []


def test_closed_store_refuses_everything(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.append("s", [NewEvent("T")])
    with pytest.raises(StoreClosed):
        store.read_stream("s")
    with pytest.raises(StoreClosed):
        store.get(ULID())


def test_second_open_in_the_same_process_is_locked(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s"), pytest.raises(StoreLocked) as info:
        EventStore.open(tmp_path / "s")
    assert str(tmp_path / "s") in str(info.value)


def test_second_process_gets_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path):
        code = (
            "import sys\n"
            "from eventstore import EventStore\n"
            "from eventstore.errors import StoreLocked\n"
            "try:\n"
            f"    EventStore.open({str(path)!r})\n"
            "except StoreLocked as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert str(path) in proc.stdout
    with EventStore.open(path):  # free again once the holder closed it
        pass


def test_ids_and_seq_resume_after_reopen(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s") as store:
        first = store.append("s", [NewEvent("T")] * 3)
    with EventStore.open(tmp_path / "s") as store:
        second = store.append("s", [NewEvent("T")])
        assert second.ids[0] > first.ids[-1]
        assert second.first_seq == 4
        assert [e.seq for e in store.read_all()] == [1, 2, 3, 4]


def test_read_all_positions_and_filters(store: EventStore) -> None:
    a = store.append("order-1", [NewEvent("Placed"), NewEvent("Paid")])
    b = store.append("cart-1", [NewEvent("Placed")])
    all_ids = a.ids + b.ids
    assert [e.id for e in store.read_all()] == all_ids
    assert [e.id for e in store.read_all(after=all_ids[0])] == all_ids[1:]
    assert [e.id for e in store.read_all(after=str(all_ids[1]))] == all_ids[2:]
    assert [e.id for e in store.read_all(backwards=True)] == all_ids[::-1]
    assert [e.id for e in store.read_all(after=all_ids[2], backwards=True)] == all_ids[1::-1]
    assert [e.type for e in store.read_all(types=["Placed"])] == ["Placed", "Placed"]
    assert [e.stream for e in store.read_all(types="Paid")] == ["order-1"]
    assert [e.stream for e in store.read_all(stream_prefix="cart")] == ["cart-1"]


def test_backward_reads_when_the_watermark_equals_an_event_id(store: EventStore) -> None:
    # compact(before=id) leaves the event with exactly that id hot, its keys
    # equal to the hot tier's lower bound; plyvel's reverse iterators used to
    # drop such a key (the model test found this).
    first = store.append("s", [NewEvent("T", 0)]).ids[0]
    store.compact(before=first)
    (event,) = store.read_stream("s")
    assert list(store.read_stream("s", backwards=True)) == [event]
    assert list(store.read_stream("s", 0, backwards=True)) == [event]
    assert list(store.read_index("s", "type", "T", backwards=True)) == [event]
    assert list(store.read_all(backwards=True)) == [event]
    assert list(store.read_all(from_seq=1, backwards=True)) == [event]


def test_ids_stay_above_the_watermark_after_reopen(tmp_path: Path) -> None:
    # A compaction at a cutoff ahead of every event, then a clock that reads
    # earlier after a restart: new ids must still land above the watermark,
    # or reads would ignore those events and cleanup would delete them.
    from eventstore import keys

    with EventStore.open(tmp_path / "s") as store:
        store.append("s", [NewEvent("T")])
        ahead = ULID.from_int(int(ULID()) + (60_000 << 80))  # a minute ahead of the clock
        store._hot.db.put(keys.WATERMARK, ahead.bytes)  # as such a compaction leaves it
        store._hot.db.put(keys.MANIFEST, msgpack.packb({"next": 1, "files": []}))  # and this
    with EventStore.open(tmp_path / "s") as store:
        r = store.append("s", [NewEvent("U")])
        assert r.ids[0].bytes >= ahead.bytes
        event = store.get(r.ids[0])
        assert event is not None and event.type == "U"
