"""The ESDB tag index (format version 2): ``ESDBReader.query`` against a
Python filter of every event, version-1 files, damaged tag chunks, the full
check, and proof that a tag query decodes only the events it returns.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.errors import (
    CorruptFile,
    FileFull,
    InvalidArgument,
    InvalidName,
    InvalidType,
)
from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.esdb import format as fmt
from eventstore.esdb import writer as writer_mod
from eventstore.esdb.writer import WalkData
from eventstore.events import Event, Query, QueryItem
from eventstore.records import encode_record

TAGS = ["a", "b", "c", "student:1", "student:2", "course:7", "é", "z" * 40]
TYPES = ["x", "y", "z"]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ev:
    stream: str
    version: int
    seq: int
    type: str
    tags: tuple[str, ...]

    @property
    def id16(self) -> bytes:
        return (1 << 100 | self.seq).to_bytes(16, "big")  # ULID order = seq order

    def record(self) -> bytes:
        return encode_record(
            self.version, self.seq, self.type, {"s": self.seq}, None, {}, self.tags
        )


def make_events(spec: list[tuple[int, str, list[str]]], first_seq: int = 1) -> list[Ev]:
    """Events from (stream number, type, tags), in commit (seq) order; seqs
    skip a few numbers, as removed events leave gaps."""
    versions: dict[str, int] = {}
    out = []
    seq = first_seq
    for k, (sn, type_, tags) in enumerate(spec):
        stream = f"s{sn}"
        v = versions.get(stream, 0)
        versions[stream] = v + 1
        out.append(Ev(stream, v, seq, type_, tuple(sorted(set(tags), key=str.encode))))
        seq += 1 + (k % 3 == 2)
    return out


def write(path: str, events: list[Ev], walk: bool = False, **kwargs: Any) -> str:
    if walk:
        kwargs["decoder"] = WalkData()
    with ESDBWriter(path, **kwargs) as w:
        for e in sorted(events, key=lambda e: (e.stream.encode(), e.seq)):
            w.add(e.stream, e.id16, e.record())
    return path


def matches(e: Ev, query: Query) -> bool:
    if not query.items:
        return True
    return any(
        (not item.types or e.type in item.types) and set(item.tags) <= set(e.tags)
        for item in query.items
    )


def expected(events: list[Ev], query: Query, after: int | None, backwards: bool) -> list[int]:
    seqs = [e.seq for e in events if matches(e, query) and (after is None or e.seq > after)]
    return sorted(seqs, reverse=backwards)


def seqs(it: Iterator[Event]) -> list[int]:
    return [e.seq for e in it]


specs = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(TYPES),
        st.lists(st.sampled_from(TAGS), max_size=4),
    ),
    min_size=1,
    max_size=120,
)
items = st.builds(
    QueryItem,
    types=st.lists(st.sampled_from([*TYPES, "absent"]), max_size=2),
    tags=st.lists(st.sampled_from([*TAGS, "absent"]), max_size=3),
)
queries = st.builds(Query, items=st.lists(items, max_size=3))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=specs,
    qs=st.lists(
        st.tuples(queries, st.none() | st.integers(0, 200), st.booleans()), min_size=1, max_size=6
    ),
    walk=st.booleans(),
    codec=st.sampled_from(["none", "zstd", "zlib"]),
)
def test_query_is_the_filter_of_all_events(
    tmp_path_factory: pytest.TempPathFactory,
    spec: list[tuple[int, str, list[str]]],
    qs: list[tuple[Query, int | None, bool]],
    walk: bool,
    codec: str,
) -> None:
    events = make_events(spec)
    path = write(
        str(tmp_path_factory.mktemp("q") / "f.esdb"), events, walk, codec=codec, block_size=256
    )
    tagged = any(e.tags for e in events)
    with ESDBReader(path) as r:
        assert r.meta.format_version == (2 if tagged else 1)
        for query, after, backwards in qs:
            assert seqs(r.query(query, after, backwards)) == expected(
                events, query, after, backwards
            )
        assert [e.tags for e in r.read_all()] == [
            e.tags for e in sorted(events, key=lambda e: e.seq)
        ]
        r.verify()


def test_many_chunks_spilled_runs_and_long_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of tags (many G chunks), lists over several Q chunks, the
    sort spilled into many runs: still the filter, and the full check passes."""
    monkeypatch.setattr(writer_mod, "TAG_RUN_BYTES", 2048)
    monkeypatch.setattr(writer_mod, "INDEX_CHUNK_SIZE", 600)
    spec = []
    for i in range(9000):
        tags = [f"t{i % 2500}", "all"]
        if i % 7 == 0:
            tags.append("seven")
        if i % 3 == 0:
            tags.append("three")
        spec.append((i % 11, TYPES[i % 3], tags))
    events = make_events(spec)
    path = write(str(tmp_path / "big.esdb"), events)
    with ESDBReader(path) as r:
        d = r._tag_directory()
        assert len(d.offsets) > 10 and len(d.postings) >= 5
        for query, after in [
            (Query([QueryItem(tags=["all"])]), None),
            (Query([QueryItem(tags=["all"])]), 7000),
            (Query([QueryItem(tags=["seven", "three"])]), 100),
            (Query([QueryItem(tags=["all", "seven", "three"], types=["x"])]), None),
            (Query([QueryItem(tags=["t17"]), QueryItem(tags=["t2499", "seven"])]), None),
            (Query([QueryItem(tags=["seven"]), QueryItem(types=["y"], tags=["three"])]), 5000),
            (Query([QueryItem(types=["z"]), QueryItem(tags=["t5"])]), 12000),
        ]:
            for backwards in (False, True):
                got = seqs(r.query(query, after, backwards))
                assert got == expected(events, query, after, backwards)
        r.verify()


def test_a_one_tag_query_decodes_only_the_events_it_returns(tmp_path: Path) -> None:
    spec = [(i % 13, TYPES[i % 3], ["rare"] if i % 97 == 5 else ["common"]) for i in range(5000)]
    events = make_events(spec)
    path = write(str(tmp_path / "f.esdb"), events)
    with ESDBReader(path) as r:
        decoded = []
        batches = []
        event, decode_range = r._event, r._decode_range

        def counting_event(*args: Any) -> Event:
            decoded.append(args[3])
            return event(*args)

        def counting_range(*args: Any) -> Any:
            batches.append(args)
            return decode_range(*args)

        r._event = counting_event  # type: ignore[method-assign,assignment]
        r._decode_range = counting_range  # type: ignore[method-assign,assignment]
        for query, after in [
            (Query([QueryItem(tags=["rare"])]), None),
            (Query([QueryItem(tags=["rare"], types=["y"])]), None),
            (Query([QueryItem(tags=["rare", "common"])]), None),
            (Query([QueryItem(tags=["rare"])]), 2500),
        ]:
            decoded.clear()
            got = list(r.query(query, after))
            assert [e.seq for e in got] == expected(events, query, after, False)
            assert len(decoded) == len(got)
        assert batches == []
        assert len(expected(events, Query([QueryItem(tags=["rare"])]), None, False)) == 52
        # Lazy: taking the first event decodes one record.
        decoded.clear()
        it = r.query(Query([QueryItem(tags=["common"])]))
        next(it)
        assert len(decoded) == 1


def test_version_1_files_still_read_and_query(tmp_path: Path) -> None:
    """Untagged events make a version-1 file, byte for byte as before: the
    query scans it by type; items with tags match nothing there."""
    events = make_events([(i % 4, TYPES[i % 3], []) for i in range(300)])
    path = write(str(tmp_path / "v1.esdb"), events, block_size=512)
    data = Path(path).read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 1
    assert struct.unpack_from("<HH", data, len(data) - 16) == (1, fmt.FOOTER_SIZE)
    with ESDBReader(path) as r:
        assert r.meta.format_version == 1
        for query, after, backwards in [
            (Query(), None, False),
            (Query(), 150, True),
            (Query([QueryItem(types=["x"])]), 100, False),
            (Query([QueryItem(types=["x", "z"]), QueryItem(types=["y"])]), 30, True),
            (Query([QueryItem(tags=["a"])]), None, False),
            (Query([QueryItem(tags=["a"]), QueryItem(types=["z"])]), 400, False),
            (Query([QueryItem()]), 449, True),
        ]:
            assert seqs(r.query(query, after, backwards)) == expected(
                events, query, after, backwards
            )
        r.verify()
    # The committed conformance corpus: version-1 files of an older writer.
    for name in ("valid-small", "valid-gaps"):
        corpus = ROOT / "conformance" / f"{name}.esdb"
        if not corpus.exists():
            continue
        with ESDBReader(corpus) as r:
            every = [e.seq for e in r.read_all()]
            assert seqs(r.query(Query())) == sorted(every)
            assert seqs(r.query(Query([QueryItem(tags=["t"])]))) == []


def test_version_2_layout(tmp_path: Path) -> None:
    events = make_events([(0, "x", ["b", "a"]), (1, "y", []), (0, "x", ["a"])])
    path = write(str(tmp_path / "v2.esdb"), events, codec="none")
    data = Path(path).read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 2
    assert struct.unpack_from("<HH", data, len(data) - 16) == (2, fmt.FOOTER_V2_SIZE)
    tag_off = struct.unpack_from("<Q", data, len(data) - 24)[0]
    assert data[tag_off] == ord("H")
    # H: 2 tags, 3 postings, one G chunk, one Q chunk
    assert fmt.TAG_DIR_HEADER.unpack_from(data, tag_off + 16) == (2, 3, 1, 1)
    with ESDBReader(path) as r:
        assert r._tag_range(b"a") == (0, 2) and r._tag_range(b"b") == (2, 3)
        assert r._tag_range(b"c") is None
        q = r._tag_postings(0)
        assert list(q.seqs) == [1, 3, 1]  # a: seqs 1 and 3; b: seq 1
        assert [e.tags for e in r.read_stream("s0")] == [("a", "b"), ("a",)]


def test_query_refuses_bad_arguments(tmp_path: Path) -> None:
    path = write(str(tmp_path / "f.esdb"), make_events([(0, "x", ["a"])]))
    with ESDBReader(path) as r:
        with pytest.raises(InvalidType):
            list(r.query("a"))  # type: ignore[arg-type]
        with pytest.raises(InvalidType):
            list(r.query(Query([QueryItem(types="x")])))
        with pytest.raises(InvalidType):
            list(r.query(Query([QueryItem(tags="a")])))
        with pytest.raises(InvalidType):
            list(r.query(Query(["a"])))  # type: ignore[list-item]
        with pytest.raises(InvalidName):
            list(r.query(Query([QueryItem(tags=[""])])))
        with pytest.raises(InvalidName):
            list(r.query(Query([QueryItem(tags=["a\x00b"])])))
        with pytest.raises(InvalidArgument):
            list(r.query(Query(), after="3"))  # type: ignore[arg-type]
        assert seqs(r.query(Query([QueryItem(tags=["a"])]))) == [1]


@pytest.mark.parametrize(
    "tags, problem",
    [
        (["b", "a"], "sorted"),
        (["a", "a"], "distinct"),
        ("a", "list"),
        ([], "list"),
        ([1], "strs"),
        ([""], "empty"),
    ],
)
def test_writer_refuses_bad_tags_and_stays_usable(tmp_path: Path, tags: Any, problem: str) -> None:
    import msgpack

    bad = msgpack.packb([0, 1, "x", None, None, {}, tags], use_bin_type=True)
    good = encode_record(0, 2, "x", None, None, {}, ["a"])
    for decoder in (None, WalkData()):
        path = str(tmp_path / f"{problem}-{decoder is None}.esdb")
        w = ESDBWriter(path, decoder=decoder)
        with pytest.raises((InvalidArgument, InvalidName), match=problem):
            w.add("s", (1).to_bytes(16, "big"), bad)
        w.add("s", (2).to_bytes(16, "big"), good)
        w.finish()
        with ESDBReader(path) as r:
            assert seqs(r.query(Query([QueryItem(tags=["a"])]))) == [2]
            r.verify()


def test_writer_refuses_an_event_past_the_tag_index_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "MAX_TAG_POSTINGS", 3)
    events = make_events([(0, "x", ["a", "b"]), (0, "x", ["a", "b"])])
    w = ESDBWriter(str(tmp_path / "f.esdb"))
    w.add("s0", events[0].id16, events[0].record())
    with pytest.raises(FileFull):
        w.add("s0", events[1].id16, events[1].record())
    w.finish()


# -- damage -------------------------------------------------------------------


def _tag_chunks(data: bytes) -> list[int]:
    """Offsets of the G, H and Q chunks of a file (walking its chunk tiling)."""
    out, off, end = [], 16, len(data) - fmt.FOOTER_V2_SIZE
    while off < end:
        kind, _c, _r, stored, _raw, _crc = fmt.CHUNK.unpack_from(data, off)
        if kind in (fmt.KIND_TAGS, fmt.KIND_TAG_DIR, fmt.KIND_TAG_POSTINGS):
            out.append(off)
        off += 16 + stored
    assert off == end
    return out


def _damage_file(tmp_path: Path, codec: str) -> tuple[str, list[Ev]]:
    spec = [
        (i % 5, TYPES[i % 3], [f"t{i % 40}", "all"] + (["odd"] if i % 2 else []))
        for i in range(600)
    ]
    events = make_events(spec)
    return write(str(tmp_path / f"base-{codec}.esdb"), events, codec=codec), events


DAMAGE_QUERIES = [
    (Query([QueryItem(tags=["all"])]), None, False),
    (Query([QueryItem(tags=["odd", "t3"])]), 100, True),
    (Query([QueryItem(tags=["t7"], types=["y"]), QueryItem(tags=["t9"])]), None, False),
    (Query([QueryItem(tags=["absent"])]), None, False),
]


def _run_damaged(path: str, events: list[Ev], exact: bool) -> None:
    """Every query either raises CorruptFile or answers: exactly the truth
    when ``exact`` (damage a crc catches), else never an event that does
    not match, in order, each once; within bounded time and memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            r = ESDBReader(path)
        except CorruptFile:
            return
        with r:
            for query, after, backwards in DAMAGE_QUERIES:
                truth = expected(events, query, after, backwards)
                try:
                    got = seqs(r.query(query, after, backwards))
                except CorruptFile:
                    continue
                if exact:
                    assert got == truth
                else:
                    assert set(got) <= set(truth)
                    assert got == sorted(set(got), reverse=backwards)
            with pytest.raises(CorruptFile):
                r.verify()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 10
    assert peak < 64 << 20


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    codec=st.sampled_from(["zstd", "none"]),
    where=st.floats(0, 1, exclude_max=True),
    chunk=st.integers(0, 1000),
    mask=st.integers(1, 255),
)
def test_flipped_bytes_in_the_tag_index(
    tmp_path_factory: pytest.TempPathFactory, codec: str, where: float, chunk: int, mask: int
) -> None:
    tmp = tmp_path_factory.mktemp("flip")
    base, events = _damage_file(tmp, codec)
    data = bytearray(Path(base).read_bytes())
    offs = _tag_chunks(bytes(data))
    off = offs[chunk % len(offs)]
    stored = fmt.CHUNK.unpack_from(data, off)[3]
    data[off + int((16 + stored) * where)] ^= mask
    path = tmp / "x.esdb"
    path.write_bytes(bytes(data))
    _run_damaged(str(path), events, exact=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    where=st.floats(0, 1, exclude_max=True),
    chunk=st.integers(0, 1000),
    value=st.integers(0, 255),
)
def test_hostile_tag_index_with_valid_checksums(
    tmp_path_factory: pytest.TempPathFactory, where: float, chunk: int, value: int
) -> None:
    """Bytes of a tag chunk's payload changed and its crc recomputed (codec
    none, so the payload is the stored bytes): the reader's checks, not the
    crc, must catch it."""
    tmp = tmp_path_factory.mktemp("hostile")
    base, events = _damage_file(tmp, "none")
    data = bytearray(Path(base).read_bytes())
    offs = _tag_chunks(bytes(data))
    off = offs[chunk % len(offs)]
    stored = fmt.CHUNK.unpack_from(data, off)[3]
    at = off + 16 + int(stored * where)
    if data[at] == value:
        value ^= 1
    data[at] = value
    crc = zlib.crc32(bytes(data[off + 16 : off + 16 + stored]), zlib.crc32(data[off : off + 12]))
    struct.pack_into("<I", data, off + 12, crc)
    path = tmp / "x.esdb"
    path.write_bytes(bytes(data))
    _run_damaged(str(path), events, exact=False)


@pytest.mark.parametrize("cut", [0.999, 0.99, 0.9, 0.7])
def test_truncated_v2_file(tmp_path: Path, cut: float) -> None:
    base, _ = _damage_file(tmp_path, "zstd")
    data = Path(base).read_bytes()
    path = tmp_path / "cut.esdb"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CorruptFile):
        ESDBReader(path)


def test_hostile_tag_directory_counts_fail_fast(tmp_path: Path) -> None:
    """A tag directory claiming billions of tags and postings, with a valid
    crc, is refused from its header before anything is built."""
    base, _ = _damage_file(tmp_path, "none")
    data = bytearray(Path(base).read_bytes())
    tag_off = struct.unpack_from("<Q", data, len(data) - 24)[0]
    for fields in [(2**40, 2**41, 1, 2**29), (1, 2**33, 1, 2**21), (5, 4, 1, 1), (0, 0, 0, 0)]:
        bad = bytearray(data)
        fmt.TAG_DIR_HEADER.pack_into(bad, tag_off + 16, *fields)
        stored = fmt.CHUNK.unpack_from(bad, tag_off)[3]
        crc = zlib.crc32(
            bytes(bad[tag_off + 16 : tag_off + 16 + stored]),
            zlib.crc32(bad[tag_off : tag_off + 12]),
        )
        struct.pack_into("<I", bad, tag_off + 12, crc)
        path = tmp_path / "h.esdb"
        path.write_bytes(bytes(bad))
        tracemalloc.start()
        try:
            with ESDBReader(path) as r, pytest.raises(CorruptFile, match="tag directory"):
                list(r.query(Query([QueryItem(tags=["all"])])))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20


def test_footer_tag_offset_is_checked_at_open(tmp_path: Path) -> None:
    base, _ = _damage_file(tmp_path, "zstd")
    data = bytearray(Path(base).read_bytes())
    fstart = len(data) - fmt.FOOTER_V2_SIZE
    for value in (0, 5, len(data)):
        bad = bytearray(data)
        struct.pack_into("<Q", bad, fstart + 136, value)
        struct.pack_into("<I", bad, len(bad) - 12, zlib.crc32(bad[fstart : len(bad) - 12]))
        path = tmp_path / "f.esdb"
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptFile, match="tag directory offset"):
            ESDBReader(path)


# -- the full check -----------------------------------------------------------


def _write_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mangle: Any) -> str:
    """A file whose writer filed tags through ``mangle(tags, seq)``."""
    original = writer_mod.ESDBWriter._add_tags

    def add_tags(self: Any, tags: list[bytes], seq: int, *rest: Any) -> None:
        tags = mangle(tags, seq)
        if tags:
            original(self, tags, seq, *rest)

    monkeypatch.setattr(writer_mod.ESDBWriter, "_add_tags", add_tags)
    events = make_events([(i % 3, "x", ["a", "b"] if i % 2 else ["a"]) for i in range(50)])
    path = write(str(tmp_path / "m.esdb"), events)
    monkeypatch.setattr(writer_mod.ESDBWriter, "_add_tags", original)
    return path


@pytest.mark.parametrize(
    "mangle, problem",
    [
        (lambda tags, seq: tags[:1] if seq == 10 else tags, "records imply"),
        (lambda tags, seq: [b"zz", *tags[1:]] if seq == 9 else tags, "lacks a tag"),
        (lambda tags, seq: [*tags, b"zz"] if seq == 5 else tags, "records imply"),
    ],
)
def test_verify_catches_an_inconsistent_tag_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mangle: Any, problem: str
) -> None:
    path = _write_with(tmp_path, monkeypatch, mangle)
    with ESDBReader(path) as r, pytest.raises(CorruptFile, match=problem):
        r.verify()


def test_verify_catches_swapped_postings(tmp_path: Path) -> None:
    """Two postings of a tag swapped (crc recomputed): out of seq order."""
    events = make_events([(i % 3, "x", ["a"]) for i in range(20)])
    path = write(str(tmp_path / "s.esdb"), events, codec="none")
    data = bytearray(Path(path).read_bytes())
    (q,) = [o for o in _tag_chunks(bytes(data)) if data[o] == fmt.KIND_TAG_POSTINGS]
    p = q + 16
    a, b = data[p : p + 8], data[p + 8 : p + 16]
    data[p : p + 8], data[p + 8 : p + 16] = b, a
    stored = fmt.CHUNK.unpack_from(data, q)[3]
    struct.pack_into(
        "<I", data, q + 12, zlib.crc32(bytes(data[p : p + stored]), zlib.crc32(data[q : q + 12]))
    )
    Path(path).write_bytes(bytes(data))
    with ESDBReader(path) as r:
        with pytest.raises(CorruptFile):
            r.verify()
        with pytest.raises(CorruptFile):
            list(r.query(Query([QueryItem(tags=["a"])])))


def test_verify_refuses_tagged_records_in_a_version_1_file(tmp_path: Path) -> None:
    """A version-1 file's records have six fields: a seventh is damage there."""
    events = make_events([(0, "x", ["a"]), (0, "x", [])])
    path = write(str(tmp_path / "t.esdb"), events, codec="none")
    data = bytearray(Path(path).read_bytes())
    # Make it claim version 1 with a 152-byte footer: drop the tag chunks'
    # footer field by rebuilding the footer (the chunks stay, unreferenced).
    fstart = len(data) - fmt.FOOTER_V2_SIZE
    fields = list(fmt.FOOTER_V2.unpack_from(data, fstart))
    v1 = fmt.FOOTER.pack(*fields[:18], 1, fmt.FOOTER_SIZE, 0, fmt.FOOTER_MAGIC)
    v1 = v1[:-12] + struct.pack("<I", zlib.crc32(v1[:-12])) + fmt.FOOTER_MAGIC
    out = bytearray(data[:fstart] + v1)
    head = fmt.HEADER.pack(fmt.HEADER_MAGIC, 1, 0, 0)[:12]
    out[:16] = head + struct.pack("<I", zlib.crc32(head))
    Path(path).write_bytes(bytes(out))
    with ESDBReader(path) as r, pytest.raises(CorruptFile, match="six fields"):
        r.verify()


def test_merge_paths_regenerate_the_tag_index(tmp_path: Path) -> None:
    """Compaction and merges copy records through ESDBWriter (WalkData):
    the copy of a version-2 file has the same tag index."""
    events = make_events([(i % 4, TYPES[i % 3], TAGS[i % 5 : i % 5 + 2]) for i in range(200)])
    src = write(str(tmp_path / "src.esdb"), events)
    dst = str(tmp_path / "dst.esdb")
    with ESDBReader(src) as r, ESDBWriter(dst, decoder=WalkData()) as w:
        for sp in r.spaces():
            w.add_stream(sp.stream, r.iter_raw(sp.stream))
    with ESDBReader(src) as a, ESDBReader(dst) as b:
        assert b.meta.format_version == 2
        b.verify()
        for tag in TAGS:
            q = Query([QueryItem(tags=[tag])])
            assert seqs(a.query(q)) == seqs(b.query(q)) == expected(events, q, None, False)
    os.remove(dst)
