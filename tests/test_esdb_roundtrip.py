"""ESDB files read back exactly what was written, through every reader entry point.

A plain list of events is the model; hypothesis draws streams (including
names that are prefixes of each other and non-ASCII ones), payloads,
indexes, block sizes and codecs, and every read is compared with the model.
Chunk sizes are shrunk so small files still have many blocks, space chunks,
ULID chunks, postings chunks and spilled sort runs.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.errors import InvalidArgument, InvalidName, InvalidULID, StoreClosed
from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.esdb import reader as reader_mod
from eventstore.esdb import verify as verify_mod
from eventstore.esdb import writer as writer_mod
from eventstore.esdb.writer import WalkData
from eventstore.events import Event
from eventstore.ids import MonotonicULIDs, ulid_from_bytes
from eventstore.records import encode_record

from .strategies import payloads


@dataclass
class Ev:
    stream: str
    id16: bytes
    version: int
    seq: int
    type: str
    data: Any
    metadata: Any
    indexes: dict[str, str]

    def record(self) -> bytes:
        return encode_record(
            self.version, self.seq, self.type, self.data, self.metadata, self.indexes
        )

    def event(self) -> Event:
        return Event(
            ulid_from_bytes(self.id16),
            self.stream,
            self.version,
            self.seq,
            self.type,
            self.data,
            self.metadata,
            self.indexes,
        )


def writer_order(events: list[Ev]) -> list[Ev]:
    return sorted(events, key=lambda e: (e.stream.encode(), e.id16))


def write_file(path: str, events: list[Ev], via: str = "add", **kwargs: Any) -> None:
    """Write ``events`` one :meth:`~ESDBWriter.add` at a time, or (``via="stream"``)
    one :meth:`~ESDBWriter.add_stream` per stream with records walked, not
    decoded, as compaction writes them."""
    if via == "stream":
        kwargs["decoder"] = WalkData()
    with ESDBWriter(path, **kwargs) as w:
        if via == "stream":
            for stream, group in itertools.groupby(writer_order(events), lambda e: e.stream):
                w.add_stream(stream, ((e.id16, e.record()) for e in group))
        else:
            for e in writer_order(events):
                w.add(e.stream, e.id16, e.record())


def make_events(
    streams: list[str],
    picks: list[int],
    types: list[str],
    first_versions: dict[str, int],
    data: list[Any],
    indexes: list[dict[str, str]],
    seq0: int = 1,
) -> list[Ev]:
    """Events in global (ULID) order; event i goes to streams[picks[i]]."""
    ids = MonotonicULIDs().next_ints(len(picks))
    next_version = dict(first_versions)
    out = []
    for i, pick in enumerate(picks):
        s = streams[pick % len(streams)]
        v = next_version.get(s, 0)
        next_version[s] = v + 1
        out.append(
            Ev(
                s,
                ids[i].to_bytes(16, "big"),
                v,
                seq0 + i,
                types[i % len(types)],
                data[i % len(data)],
                {"n": i} if i % 3 else None,
                indexes[i % len(indexes)],
            )
        )
    return out


def sample_events(n: int = 500, n_streams: int = 7) -> list[Ev]:
    streams = ["a", "a/b", "ab", "b", "z", "Ωmega", "b\u00e9"][:n_streams]
    picks = [(i * 7 + i // 3) % n_streams for i in range(n)]
    return make_events(
        streams,
        picks,
        ["Created", "Paid", "Shipped"],
        {"ab": 10},
        [{"i": 1, "b": b"\x00\xff"}, [1, 2.5, None], "text", None],
        [{}, {"customer": "c1"}, {"customer": "c2", "region": "eu"}],
    )


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny index chunks and sort runs, so small files exercise every chunked path."""
    monkeypatch.setattr(writer_mod, "RUN_ENTRIES", 37)
    monkeypatch.setattr(writer_mod, "_READ_ENTRIES", 5)
    monkeypatch.setattr(writer_mod, "_ULID_CHUNK_ENTRIES", 11)
    monkeypatch.setattr(writer_mod, "INDEX_CHUNK_SIZE", 150)
    monkeypatch.setattr(writer_mod, "POSTINGS_PER_CHUNK", 6)
    monkeypatch.setattr(reader_mod, "POSTINGS_PER_CHUNK", 6)
    monkeypatch.setattr(verify_mod, "POSTINGS_PER_CHUNK", 6)


# -- the model's answers ------------------------------------------------------


def m_stream(events: list[Ev], stream: str, from_version: int | None, backwards: bool) -> list[Ev]:
    mine = [e for e in writer_order(events) if e.stream == stream]
    if backwards:
        mine.reverse()
        if from_version is not None:
            mine = [e for e in mine if e.version <= from_version]
    elif from_version is not None:
        mine = [e for e in mine if e.version >= from_version]
    return mine


def m_index(
    events: list[Ev], stream: str, name: str, value: str, backwards: bool, index_types: bool
) -> list[Ev]:
    out = [
        e
        for e in writer_order(events)
        if e.stream == stream
        and (e.indexes.get(name) == value or (index_types and name == "type" and e.type == value))
    ]
    return out[::-1] if backwards else out


def m_all(
    events: list[Ev],
    after: bytes | None,
    backwards: bool,
    types: set[str] | None,
    prefix: str | None,
) -> list[Ev]:
    out = sorted(events, key=lambda e: e.id16)
    if backwards:
        out.reverse()
    if after is not None:
        out = [e for e in out if (e.id16 < after if backwards else e.id16 > after)]
    if types is not None:
        out = [e for e in out if e.type in types]
    if prefix is not None:
        out = [e for e in out if e.stream.startswith(prefix)]
    return out


def evs(it: Iterator[Event]) -> list[Event]:
    return list(it)


def check_everything(path: str, events: list[Ev], index_types: bool = True) -> None:
    ordered = writer_order(events)
    with ESDBReader(path) as r:
        r.verify()
        m = r.meta
        assert m.event_count == len(events)
        streams = sorted({e.stream for e in events}, key=str.encode)
        assert m.space_count == len(streams)
        assert m.index_types is index_types
        if events:
            assert m.first_id == min(e.id16 for e in events)
            assert m.last_id == max(e.id16 for e in events)
            assert m.first_seq == min(e.seq for e in events)
            assert m.last_seq == max(e.seq for e in events)
        assert m.record_bytes == sum(len(e.record()) for e in events)
        assert m.file_size == os.path.getsize(path)
        # spaces
        infos = list(r.spaces())
        assert [s.stream for s in infos] == streams
        for s in infos:
            mine = [e for e in ordered if e.stream == s.stream]
            assert (s.count, s.first_version, s.last_version) == (
                len(mine),
                mine[0].version,
                mine[-1].version,
            )
            assert (s.first_id, s.last_id) == (mine[0].id16, mine[-1].id16)
            assert r.space(s.stream) == s
            assert list(r.iter_raw(s.stream)) == [(e.id16, e.record()) for e in mine]
        assert r.space("no such stream") is None
        assert list(r.iter_all_raw()) == [(e.stream, e.id16, e.record()) for e in ordered]
        # streams, all directions, a few start versions and limits
        for s in infos:
            for backwards in (False, True):
                starts: list[int | None] = [
                    None,
                    0,
                    s.first_version,
                    s.last_version,
                    s.last_version + 1,
                    (s.first_version + s.last_version) // 2,
                ]
                for fv in starts:
                    want = [e.event() for e in m_stream(events, s.stream, fv, backwards)]
                    assert evs(r.read_stream(s.stream, fv, backwards)) == want
                    assert evs(r.read_stream(s.stream, fv, backwards, limit=2)) == want[:2]
            # indexes
            keys = {(n, v) for e in ordered if e.stream == s.stream for n, v in e.indexes.items()}
            keys |= {("type", e.type) for e in ordered if e.stream == s.stream}
            keys.add(("customer", "nobody"))
            for name, value in keys:
                for backwards in (False, True):
                    want = [
                        e.event()
                        for e in m_index(events, s.stream, name, value, backwards, index_types)
                    ]
                    assert evs(r.read_index(s.stream, name, value, backwards)) == want
                    assert evs(r.read_index(s.stream, name, value, backwards, limit=1)) == want[:1]
        # point lookups
        for e in events:
            assert r.get(e.id16) == e.event()
        assert r.get(bytes(16)) is None
        assert r.get(b"\xff" * 16) is None
        if events:
            missing = (int.from_bytes(events[0].id16, "big") + 2**40).to_bytes(16, "big")
            if missing not in {e.id16 for e in events}:
                assert r.get(missing) is None
            assert r.get(ulid_from_bytes(events[-1].id16)) == events[-1].event()
            assert r.get(str(ulid_from_bytes(events[0].id16))) == events[0].event()
        # the global log
        afters: list[bytes | None] = [None, bytes(16), b"\xff" * 16]
        if events:
            ids = sorted(e.id16 for e in events)
            afters += [ids[0], ids[len(ids) // 2], ids[-1]]
        all_types = sorted({e.type for e in events})
        for after in afters:
            for backwards in (False, True):
                for types in (None, set(all_types[:1]), {"NoSuchType"}):
                    for prefix in (None, "", "a", "b", "zz"):
                        want = [e.event() for e in m_all(events, after, backwards, types, prefix)]
                        got = evs(r.read_all(after, backwards, types, prefix))
                        assert got == want, (after, backwards, types, prefix)


# -- tests --------------------------------------------------------------------


def test_sample_file_roundtrip(tmp_path: Any) -> None:
    events = sample_events()
    path = str(tmp_path / "f.esdb")
    write_file(path, events, block_size=512)
    check_everything(path, events)


@pytest.mark.parametrize("via", ["add", "stream"])
@pytest.mark.parametrize("codec", ["zstd", "zlib", "none"])
def test_small_chunks_every_codec(tmp_path: Any, small_chunks: None, codec: str, via: str) -> None:
    events = sample_events(300)
    path = str(tmp_path / "f.esdb")
    write_file(path, events, via, block_size=200, codec=codec)
    with ESDBReader(path) as r:
        assert r.meta.codec == codec
        assert r.meta.block_count > 10
        assert len(r._dir_of_spaces()[0]) > 1  # several space chunks
        assert len(r._dir_of_ulids()[0]) > 10  # several ULID chunks
    check_everything(path, events)


def test_index_types_off(tmp_path: Any) -> None:
    events = sample_events(100)
    path = str(tmp_path / "f.esdb")
    write_file(path, events, index_types=False)
    check_everything(path, events, index_types=False)
    with ESDBReader(path) as r:
        assert list(r.read_index("a", "type", "Created")) == []


def test_empty_file(tmp_path: Any) -> None:
    path = str(tmp_path / "empty.esdb")
    meta = ESDBWriter(path).finish()
    assert meta.event_count == 0 and meta.first_id is None
    check_everything(path, [])
    with ESDBReader(path) as r:
        assert list(r.read_all()) == [] and r.get(bytes(16)) is None


@pytest.mark.parametrize("via", ["add", "stream"])
def test_big_stream_chunked_postings(tmp_path: Any, via: str) -> None:
    """A stream past one postings chunk (16384) and many blocks, default sizes."""
    n = 40_000
    events = make_events(["big", "small"], [0] * n + [1], ["T", "U"], {}, [{"x": 1}], [{}])
    path = str(tmp_path / "big.esdb")
    write_file(path, events, via)
    with ESDBReader(path) as r:
        r.verify()
        assert r.meta.block_count > 1
        ts = list(r.read_index("big", "type", "T"))
        assert [e.version for e in ts] == list(range(0, n, 2))
        back = list(r.read_index("big", "type", "U", backwards=True, limit=3))
        assert [e.version for e in back] == [n - 1, n - 3, n - 5]
        got = [e.version for e in r.read_stream("big", 20_001, limit=3)]
        assert got == [20_001, 20_002, 20_003]
        assert [e.version for e in r.read_stream("big", 20_001, True, limit=2)] == [20_001, 20_000]
        assert sum(1 for _ in r.read_stream("big", backwards=True)) == n


_stream_names = st.sampled_from(["a", "a/b", "ab", "b", "\u00e9", "\u00e9t\u00e9", "z" * 30, "0"])


@settings(max_examples=25, deadline=None)
@given(
    streams=st.lists(_stream_names, min_size=1, max_size=5, unique=True),
    picks=st.lists(st.integers(0, 4), min_size=0, max_size=60),
    first=st.dictionaries(_stream_names, st.integers(0, 2**40), max_size=3),
    data=st.lists(payloads, min_size=1, max_size=5),
    indexes=st.lists(
        st.dictionaries(
            # names and values that prefix one another, and characters beyond
            # the BMP: the secondary index must sort as UTF-8 bytes do
            st.sampled_from(["customer", "r", "region", "r\u00e9gion", "\U0001f600"]),
            st.sampled_from(["c1", "c", "c2", "eu", "e", "\u00fc", "\U0001f600x"]),
            max_size=2,
        ),
        min_size=1,
        max_size=4,
    ),
    block_size=st.sampled_from([1, 64, 300, 4096]),
    codec=st.sampled_from(["zstd", "zlib", "none"]),
    index_types=st.booleans(),
    via=st.sampled_from(["add", "stream"]),
)
def test_roundtrip_property(
    tmp_path_factory: pytest.TempPathFactory,
    small_chunks: None,
    streams: list[str],
    picks: list[int],
    first: dict[str, int],
    data: list[Any],
    indexes: list[dict[str, str]],
    block_size: int,
    codec: str,
    index_types: bool,
    via: str,
) -> None:
    events = make_events(streams, picks, ["Created", "Paid", "Ünï"], first, data, indexes, 7)
    path = str(tmp_path_factory.mktemp("rt") / "f.esdb")
    write_file(path, events, via, block_size=block_size, codec=codec, index_types=index_types)
    check_everything(path, events, index_types)


def test_threads_share_one_reader(tmp_path: Any) -> None:
    events = sample_events(2000)
    path = str(tmp_path / "f.esdb")
    write_file(path, events, block_size=256)
    errors: list[BaseException] = []
    with ESDBReader(path, cache_bytes=4096) as r:  # tiny cache: threads race on eviction
        want_all = [e.event() for e in m_all(events, None, False, None, None)]
        want_a = [e.event() for e in m_stream(events, "a", None, False)]

        def work() -> None:
            try:
                for _ in range(3):
                    assert list(r.read_all()) == want_all
                    assert list(r.read_stream("a")) == want_a
                    for e in events[::50]:
                        assert r.get(e.id16) == e.event()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_reader_argument_errors_and_close(tmp_path: Any) -> None:
    events = sample_events(20)
    path = str(tmp_path / "f.esdb")
    write_file(path, events)
    r = ESDBReader(path)
    with pytest.raises(InvalidName):
        r.space("")
    with pytest.raises(InvalidName):
        list(r.read_index("a", "", "x"))
    with pytest.raises(InvalidArgument):
        r.read_stream("a", from_version=-1)
    with pytest.raises(InvalidArgument):
        r.read_stream("a", limit=-1)
    with pytest.raises(InvalidULID):
        r.get(b"short")
    with pytest.raises(InvalidName):
        r.read_all(stream_prefix=3)  # type: ignore[arg-type]
    assert list(r.read_stream("a", limit=0)) == []
    assert list(r.read_all(types="Created")) == [
        e.event() for e in m_all(events, None, False, {"Created"}, None)
    ]
    r.close()
    assert r.closed
    with pytest.raises(StoreClosed):
        r.get(events[0].id16)
    r.close()  # twice is fine
