"""docs/FORMAT.md is exact: files that eventstore writes (ESDBWriter directly,
and a store's compaction and merge) decode with tests/spec_decoder.py, a
decoder written from the page alone, to the same events as ESDBReader reads,
with the tag index the records imply."""

from __future__ import annotations

from datetime import UTC, datetime
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
    appended: list[tuple[str, ...]] = []
    with EventStore(str(tmp_path / "s")) as store:
        for round_ in range(4):
            for i in range(30):
                tags = [TAGS[(i + round_) % len(TAGS)], TAGS[i % 3]] if i % 4 else None
                appended.append(tuple(sorted(set(tags or ()), key=str.encode)))
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
        assert [e.tags for e in store.read_all()] == appended
        for f in store.archive_files():
            with ESDBReader(f.path) as reader:
                assert reader.meta.format_version == 2


# -- the version-2 worked example of docs/FORMAT.md ------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"
V2_BEGIN = "<!-- v2 example: generated by tests/test_format_spec.py, v2_example() -->\n"
V2_END = "<!-- end of v2 example -->\n"


def _v2_example_file(path: str) -> bytes:
    """The version-1 worked example's two events, tagged; codec none."""
    ids = [bytes.fromhex("0190a0b0c0d0" + "00" * 9 + f"0{i}") for i in (1, 2)]
    with ESDBWriter(path, codec="none", created=datetime(2024, 7, 3, 9, 46, 40, tzinfo=UTC)) as w:
        w.add("c1", ids[0], encode_record(0, 1, "page", {"url": "/"}, None, {}, ["cart:7"]))
        w.add(
            "c1",
            ids[1],
            encode_record(1, 2, "buy", {"total": "9.99"}, None, {"sku": "x1"}, ["cart:7", "u:1"]),
        )
    return Path(path).read_bytes()


def _dump(data: bytes) -> str:
    lines = []
    for at in range(0, len(data), 16):
        row = data[at : at + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{at:04x}  {' '.join(f'{b:02x}' for b in row):<47}   {text}")
    return "\n".join(lines)


def v2_example(path: str) -> str:
    """The markdown of FORMAT.md's version-2 example: hex dump, and a table of
    the chunks and the tag index's fields, all read from the file."""
    data = _v2_example_file(path)
    dec = sd.Decoder(data)
    out = dec.decode()
    f = dec.f
    size = len(data) - dec.foot_at
    names = {f["k"]: "block index", f["d"]: "space directory", f["u"]: "ULID directory"}
    names |= {f["t"]: "type table", f["h"]: "tag directory"}
    rows = [("000", "00f", "header: magic, version 2, reserved, crc32")]
    for off in sorted(dec.chunks):
        kind = chr(data[off])
        end = off + dec.chunks[off] - 1
        what = {"B": "data block", "X": "secondary index of `c1`", "S": "space index chunk"}
        what |= {"I": "ULID index chunk", "Q": "tag postings", "G": "tag keys"}
        label = names.get(off, what.get(kind, kind))
        rows.append((f"{off:03x}", f"{end:03x}", f"`{kind}` chunk ({label}), header and payload"))
        if kind == "Q":
            ps = [p for t in out.postings.values() for p in t]
            rows.append(
                (
                    f"{off + 16:03x}",
                    f"{end:03x}",
                    f"{len(ps)} postings as columns: seqs {', '.join(str(p.seq) for p in ps)}; "
                    f"positions {', '.join(str(p.position) for p in ps)}; space numbers "
                    f"{', '.join(str(p.space) for p in ps)}; type ids "
                    f"{', '.join(str(p.type_id) for p in ps)}",
                )
            )
        if kind == "G":
            ents = []
            start = 0
            for t, seqs in out.tags.items():
                ents.append(f"`{t}` start {start} count {len(seqs)}")
                start += len(seqs)
            rows.append(
                (
                    f"{off + 16:03x}",
                    f"{end:03x}",
                    f"*m* = {len(ents)}; entry offsets; " + ", ".join(ents),
                )
            )
        if kind == "H":
            first = next(iter(out.tags))
            q_offs = [o for o in sorted(dec.chunks) if chr(data[o]) == "Q"]
            g_offs = [o for o in sorted(dec.chunks) if chr(data[o]) == "G"]
            rows.append(
                (
                    f"{off + 16:03x}",
                    f"{end:03x}",
                    f"*g* = {len(out.tags)} tags, *t* = {sum(map(len, out.tags.values()))} "
                    f"postings, *c* = {out.g_chunks} `G`, *q* = {out.q_chunks} `Q`; `Q` at "
                    f"{', '.join(hex(o) for o in q_offs)}; entry: `G` at {hex(g_offs[0])}, "
                    f"first tag 0, `{first}`",
                )
            )
    foot = dec.foot_at
    rows.append(
        (
            f"{foot:03x}",
            f"{foot + 135:03x}",
            "footer bytes 0..136, as in version 1 (`K`, `D`, `U`, `T` offsets, counts, seqs, "
            "ULIDs, created, record bytes, index region, codec, flags, reserved)",
        )
    )
    rows.append((f"{foot + 136:03x}", f"{foot + 143:03x}", f"offset of `H`: 0x{f['h']:x}"))
    rows.append(
        (
            f"{foot + 144:03x}",
            f"{len(data) - 1:03x}",
            f"version 2, footer size {size}, crc32, end magic",
        )
    )
    table = "\n".join(f"| {a}\u2013{b} | {w} |" for a, b, w in rows)
    return (
        V2_BEGIN
        + f"The file is {len(data)} bytes:\n\n```\n{_dump(data)}\n```\n\n"
        + "| bytes (first\u2013last, inclusive) | meaning |\n| --- | --- |\n"
        + table
        + "\n"
        + V2_END
    )


def test_version_2_worked_example_is_what_the_writer_writes(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    want = v2_example(str(tmp_path / "v2.esdb"))
    assert V2_BEGIN in text and V2_END in text
    got = text[text.index(V2_BEGIN) : text.index(V2_END) + len(V2_END)]
    assert got == want, "regenerate: python -m tests.test_format_spec > /tmp/x.md"


if __name__ == "__main__":  # print the example, to paste into docs/FORMAT.md
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sys.stdout.write(v2_example(str(Path(tmp) / "v2.esdb")))
