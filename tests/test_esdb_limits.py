"""The writer obeys docs/FORMAT.md's rules and limits: names, the type index
entry, seq order, block sizes, and FileFull before any chunk passes its
bound (leaving the writer usable); the store's compaction cuts a range
whose file fills up instead of failing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from eventstore import EventStore, NewEvent
from eventstore.compaction import split_at
from eventstore.errors import FileFull, InvalidArgument, InvalidName
from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.esdb import writer as writer_mod
from eventstore.esdb.format import CHUNK, HEADER_SIZE
from eventstore.records import encode_record


def rec(version: int, seq: int, type_: str = "T", indexes: Any = None) -> bytes:
    return encode_record(version, seq, type_, None, None, indexes or {})


def uid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def add(w: ESDBWriter, via: str, stream: str, id16: bytes, record: bytes) -> None:
    if via == "add":
        w.add(stream, id16, record)
    else:
        w.add_stream(stream, [(id16, record)])


@pytest.mark.parametrize(
    ("type_", "indexes"),
    [
        ("", {}),
        ("a\x00b", {}),
        ("t" * 1025, {}),
        ("T", {"": "v"}),
        ("T", {"k": ""}),
        ("T", {"k": "v\x00"}),
        ("T", {"k" * 1025: "v"}),
    ],
)
@pytest.mark.parametrize("via", ["add", "stream"])
def test_writer_refuses_invalid_names(tmp_path: Path, type_: str, indexes: Any, via: str) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path)
    w.add("s", uid(1), rec(0, 1))
    with pytest.raises(InvalidName):
        add(w, via, "s", uid(2), rec(1, 2, type_, indexes))
    w.add("s", uid(2), rec(1, 2, "U", {"k": "v"}))  # the writer is as it was
    w.finish()
    with ESDBReader(path) as r:
        r.verify()
        assert r.types() == ["T", "U"] and r.meta.event_count == 2


def test_type_entry_must_equal_the_event_type(tmp_path: Path) -> None:
    w = ESDBWriter(str(tmp_path / "f.esdb"))
    with pytest.raises(InvalidArgument, match="differs from the event type"):
        w.add("s", uid(1), rec(0, 1, "T", {"type": "U"}))
    w.add("s", uid(1), rec(0, 1, "T", {"type": "T"}))  # the same: filed once
    w.finish()
    with ESDBReader(str(tmp_path / "f.esdb")) as r:
        r.verify()
        assert [e.version for e in r.read_index("s", "type", "T")] == [0]
    # Without a type index, "type" is an index name like any other.
    w = ESDBWriter(str(tmp_path / "g.esdb"), index_types=False)
    w.add("s", uid(1), rec(0, 1, "T", {"type": "U"}))
    w.finish()
    with ESDBReader(str(tmp_path / "g.esdb")) as r:
        r.verify()
        assert [e.version for e in r.read_index("s", "type", "U")] == [0]


def test_seq_must_rise_with_ulid_order(tmp_path: Path) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path)
    w.add("a", uid(1), rec(0, 2))
    w.add("b", uid(2), rec(0, 1))  # later id, smaller seq
    with pytest.raises(InvalidArgument, match="seq must rise with the ULID"):
        w.finish()
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")
    w = ESDBWriter(path)
    w.add("a", uid(1), rec(0, 2))
    w.add("b", uid(2), rec(0, 7))  # gaps are fine
    meta = w.finish()
    assert (meta.first_seq, meta.last_seq) == (2, 7)


def test_blocks_close_as_soon_as_they_reach_the_block_size(tmp_path: Path) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path, codec="none", block_size=4096)
    for i in range(600):
        w.add("s", uid(i + 1), encode_record(i, i + 1, "T", "x" * (i % 50), None, {}))
    w.finish()
    with ESDBReader(path) as r:
        _, boff = r._block_index()
        sizes = [CHUNK.unpack_from(r._map(), off)[4] for off in boff]
        assert len(sizes) > 5
        for bi, size in enumerate(sizes[:-1]):
            blk = r._block(bi)
            last = blk.offs[blk.n] - blk.offs[blk.n - 1]
            assert size >= 4096, (bi, size)
            assert size - 20 - last < 4096, (bi, size)  # not one event later than needed


def _full_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_types: bool = True, **limits: int
) -> ESDBWriter:
    for name, value in limits.items():
        monkeypatch.setattr(writer_mod, name, value)
    return ESDBWriter(
        str(tmp_path / "f.esdb"), codec="none", block_size=1024, index_types=index_types
    )


@pytest.mark.parametrize("via", ["add", "stream"])
def test_file_full_at_the_secondary_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    w = _full_writer(tmp_path, monkeypatch, MAX_RAW=4096)
    n = 0
    with pytest.raises(FileFull, match="secondary index") as full:
        for n in range(1000):
            add(w, via, "s", uid(n + 1), rec(n, n + 1, "T", {"k": f"{n:04d}" + "v" * 60}))
    assert full.value.event_id == uid(n + 1) and w.events == n
    meta = w.finish()
    assert meta.event_count == n > 10
    with ESDBReader(meta.path) as r:
        r.verify()
        x = r.space("s")
        assert x is not None
        assert CHUNK.unpack_from(r._map(), x.index_offset)[4] <= 4096


def test_file_full_at_the_type_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _full_writer(tmp_path, monkeypatch, index_types=False, MAX_RAW=4096)
    with pytest.raises(FileFull, match="type table"):
        for n in range(1000):
            w.add("s", uid(n + 1), rec(n, n + 1, f"Type{n:04d}" + "t" * 100))
    meta = w.finish()
    with ESDBReader(meta.path) as r:
        r.verify()
        assert len(r.types()) == meta.event_count > 10


def test_file_full_at_the_space_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _full_writer(tmp_path, monkeypatch, MAX_RAW=4096, INDEX_CHUNK_SIZE=1)
    with pytest.raises(FileFull, match="space directory"):
        for n in range(100):
            w.add(f"{n:04d}" + "s" * 900, uid(n + 1), rec(0, n + 1))
    meta = w.finish()
    with ESDBReader(meta.path) as r:
        r.verify()
        assert meta.space_count == 4


def test_file_full_at_blocks_and_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "MAX_BLOCKS", 5)
    w = ESDBWriter(str(tmp_path / "f.esdb"), block_size=1)
    with pytest.raises(FileFull, match="blocks"):
        for n in range(100):
            w.add("s", uid(n + 1), rec(n, n + 1))
    assert w.finish().block_count <= 5
    monkeypatch.setattr(writer_mod, "MAX_EVENTS", 7)
    w = ESDBWriter(str(tmp_path / "g.esdb"))
    with pytest.raises(FileFull, match="events"):
        w.add_stream("s", [(uid(n + 1), rec(n, n + 1)) for n in range(100)])
    assert w.finish().event_count == 7


def test_split_at_cuts_where_the_file_filled() -> None:
    lo, hi = uid(10), uid(100)
    assert split_at(lo, hi, FileFull("x", uid(40))) == [(lo, uid(40)), (uid(40), hi)]
    # the range's first event: it alone, then the rest
    assert split_at(lo, hi, FileFull("x", lo)) == [(lo, uid(11)), (uid(11), hi)]
    with pytest.raises(FileFull):  # one event that fits no file: refused as it is
        split_at(lo, uid(11), FileFull("x", lo))


def test_compaction_splits_a_stream_whose_index_fills_a_file(tmp_path: Path) -> None:
    """Issue 20's case: 68,000 events of one stream, each with a distinct 1 KB
    index value: 70 MB of index keys, more than one file's 64 MiB X chunk.
    compact() once failed with 'secondary index too large'; now it cuts the
    range where the file filled, and every read answers the same."""
    value = "v" * 1016
    with EventStore.open(str(tmp_path / "s")) as store:
        for b in range(0, 68_000, 4000):
            store.append(
                "s",
                [NewEvent("T", None, indexes={"k": f"{i:08d}{value}"}) for i in range(b, b + 4000)],
            )
        probe = [0, 1, 33_333, 63_000, 67_999]
        before = {i: list(store.read_index("s", "k", f"{i:08d}{value}")) for i in probe}
        tail = list(store.read_stream("s", from_version=67_990))
        result = store.compact(before=ULID())
        assert result.events == 68_000 and len(result.files) == 2
        assert [f.events for f in store.archive_files()] in ([63_974, 4026], [63_975, 4025])
        assert {i: list(store.read_index("s", "k", f"{i:08d}{value}")) for i in probe} == before
        assert list(store.read_stream("s", from_version=67_990)) == tail
        # Merging the two would not fit either: they are left as they are.
        assert store.merge_archives().files == []
        assert len(store.archive_files()) == 2
        store.verify()
        for f in result.files:
            with open(f, "rb") as fh:
                assert fh.read(HEADER_SIZE)[:4] == b"\x89ESD"


def test_writer_refuses_a_map_with_a_key_twice(tmp_path: Path) -> None:
    w = ESDBWriter(str(tmp_path / "f.esdb"))
    twice = b"\x96\x00\x01\xa1T\x82\xa1a\x01\xa1a\x02\xc0\x80"  # data {"a": 1, "a": 2}
    with pytest.raises(InvalidArgument, match="not an event record"):
        w.add("s", uid(1), twice)
    assert w.events == 0
    w.abort()
