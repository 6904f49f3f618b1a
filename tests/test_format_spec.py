"""docs/FORMAT.md is exact: files that eventstore writes (ESDBWriter directly,
and a store's compaction and merge) decode with tests/spec_decoder.py, a
decoder written from the page alone, to the same events as ESDBReader reads,
with the tag index the records imply."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.events import Query, QueryItem
from eventstore.ids import ulid_from_int
from eventstore.records import encode_record

from . import spec_decoder as sd

TAGS = ["a", "b", "student:1", "course:7", "é", "\U0001f600", "\uffff", "z" * 30]
TYPES = ["x", "y", "z"]
STREAMS = [f"s{i}" for i in range(12)] + ["é", "\uffff", "\U00010000"]

EventSpec = tuple[int, str, list[str], dict[str, str], int]  # stream, type, tags, indexes, gap


def _implied(events: list[sd.Event]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in sorted(events, key=lambda e: e.seq):
        for t in e.tags:
            out.setdefault(t, []).append(e.seq)
    return dict(sorted(out.items(), key=lambda kv: kv[0].encode()))


def _compare(path: str) -> sd.Decoded:
    """The spec decoder and ESDBReader agree on everything a file holds."""
    dec = sd.decode(Path(path).read_bytes())
    with ESDBReader(path) as r:
        r.verify()
        assert [(e.stream, e.id, e.record) for e in dec.events] == list(r.iter_all_raw())
        got = list(r.read_all())
        assert [dec.events[p].id for p in dec.ulid_order] == [e.id.bytes for e in got]
        for p, e in zip(dec.ulid_order, got, strict=True):
            d = dec.events[p]
            assert (d.stream, d.version, d.seq, d.type, d.tags) == (
                e.stream,
                e.version,
                e.seq,
                e.type,
                e.tags,
            )
            assert (d.data, d.metadata, d.indexes) == (e.data, e.metadata, dict(e.indexes))
        assert dec.types == r.types()
        assert [
            (s.stream, s.first_version, s.count, s.first_id, s.last_id) for s in dec.spaces
        ] == [(s.stream, s.first_version, s.count, s.first_id, s.last_id) for s in r.spaces()]
        m = r.meta
        assert (m.event_count, m.space_count, m.block_count, m.record_bytes) == (
            dec.footer["event_count"],
            dec.footer["space_count"],
            dec.footer["block_count"],
            dec.footer["record_bytes"],
        )
        tagged = any(e.tags for e in dec.events)
        assert dec.version == (2 if tagged else 1)
        # The tag index is what the records imply, and ESDBReader's tag
        # queries answer it.
        assert dec.tags == _implied(dec.events)
        for tag, seqs in dec.tags.items():
            assert [e.seq for e in r.query(Query([QueryItem(tags=[tag])]))] == seqs
        for tag, ps in dec.postings.items():
            assert [(p.position, p.space, dec.types[p.type_id]) for p in ps] == [
                (p.position, sd_space(dec, p.position), dec.events[p.position].type) for p in ps
            ]
            assert all(tag in dec.events[p.position].tags for p in ps)
    return dec


def sd_space(dec: sd.Decoded, pos: int) -> int:
    return next(s.number for s in dec.spaces if s.first_pos <= pos < s.first_pos + s.count)


def _write(
    path: str, spec: list[EventSpec], codec: str, block_size: int, index_types: bool
) -> None:
    """Events in commit (seq) order; the writer takes them by stream, then seq."""
    versions: dict[str, int] = {}
    rows = []
    seq = 1
    for sn, type_, tags, indexes, gap in spec:
        stream = STREAMS[sn]
        v = versions.get(stream, 0)
        versions[stream] = v + 1
        uniq = sorted(set(tags), key=str.encode)
        rec = encode_record(v, seq, type_, {"n": seq, "b": b"\x00"}, None, indexes, uniq)
        rows.append((stream, (1 << 100 | seq).to_bytes(16, "big"), rec))
        seq += 1 + gap
    with ESDBWriter(path, codec=codec, block_size=block_size, index_types=index_types) as w:
        for stream, id16, rec in sorted(rows, key=lambda r: (r[0].encode(), r[1])):
            w.add(stream, id16, rec)


event_specs = st.lists(
    st.tuples(
        st.integers(0, len(STREAMS) - 1),
        st.sampled_from(TYPES),
        st.lists(st.sampled_from(TAGS), max_size=4),
        st.dictionaries(st.sampled_from(["k", "sku"]), st.sampled_from(["1", "2"]), max_size=2),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=event_specs,
    codec=st.sampled_from(["none", "zlib", "zstd"]),
    block_size=st.sampled_from([64, 512, 65536]),
    index_types=st.booleans(),
)
def test_writer_files_decode_the_same_both_ways(
    tmp_path: Path, spec: list[EventSpec], codec: str, block_size: int, index_types: bool
) -> None:
    path = tmp_path / "f.esdb"
    path.unlink(missing_ok=True)  # hypothesis runs many examples in one tmp_path
    _write(str(path), spec, codec, block_size, index_types)
    _compare(str(path))


def test_several_g_and_q_chunks(tmp_path: Path) -> None:
    """3000 distinct tags of 20 bytes pass one G chunk (about 32 KiB); 9000
    postings pass two Q chunks of 4096."""
    tags = [f"tag-{i:016d}" for i in range(3000)]
    spec: list[EventSpec] = [
        (
            i % 7,
            TYPES[i % 3],
            [tags[i], tags[(i + 1000) % 3000], tags[(i + 2000) % 3000]],
            {},
            i % 2,
        )
        for i in range(3000)
    ]
    path = str(tmp_path / "f.esdb")
    _write(path, spec, "zstd", 4096, True)
    dec = _compare(path)
    assert dec.g_chunks >= 2 and dec.q_chunks == 3
    assert sum(len(v) for v in dec.tags.values()) == 9000


def test_store_compaction_and_merge_decode_the_same_both_ways(tmp_path: Path) -> None:
    """Files a store writes (compaction, then merge) decode as ESDBReader
    reads them; their version is 2 exactly when the records carry tags."""
    with EventStore(str(tmp_path / "s")) as store:
        for round_ in range(4):
            for i in range(30):
                tags = [TAGS[(i + round_) % len(TAGS)], TAGS[i % 3]] if i % 4 else None
                store.append(
                    STREAMS[i % 5],
                    [NewEvent(TYPES[i % 3], {"i": i}, indexes={"k": str(i % 2)}, tags=tags)],
                )
            last = next(iter(store.read_all(backwards=True, limit=1)))
            store.compact(before=ulid_from_int(int(last.id) + 1))
        files = [f.path for f in store.archive_files()]
        assert len(files) == 4
        for path in files:
            _compare(path)
        store.merge_archives()
        merged = [f.path for f in store.archive_files()]
        assert len(merged) == 1
        dec = _compare(merged[0])
        assert len(dec.events) == 120
        assert [e.tags for e in store.read_all()] == [dec.events[p].tags for p in dec.ulid_order]
