"""Generate the ESDB conformance corpus (conformance/ at the repository root).

    python scripts/make_conformance.py [FOLDER]

Deterministic: the same code and library versions give the same bytes, so a
test regenerates the corpus and compares it with the committed files. Valid
files come from ESDBWriter (a fixed creation time, fixed ids); invalid ones
are valid files with one rule of docs/FORMAT.md broken and every checksum
recomputed, so only that rule's check can catch them. Beside each NAME.esdb,
NAME.json holds the expected outcome (conformance/README.md says how to read
it).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack
import zstandard

from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.esdb.format import (
    CHUNK,
    CODEC_NONE,
    CODEC_ZLIB,
    CODEC_ZSTD,
    FOOTER,
    FOOTER_CRC_SPAN,
    FOOTER_SIZE,
    FOOTER_V2,
    FOOTER_V2_SIZE,
    HEADER_SIZE,
)
from eventstore.records import MAX_RECORD_BYTES

CREATED = datetime(2024, 7, 3, 9, 46, 40, tzinfo=UTC)
T0 = 0x0190A0B0C0D0  # ms timestamp of every id (the worked example's)


def uid(n: int) -> bytes:
    return ((T0 << 80) | n).to_bytes(16, "big")


def record(
    version: int, seq: int, type_: str, data: Any, meta: Any, indexes: Any, tags: Any = ()
) -> bytes:
    fields = [version, seq, type_, data, meta, indexes] + ([list(tags)] if tags else [])
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


# -- low-level chunk surgery ---------------------------------------------------


def chunk(kind: str, codec: int, stored: bytes, raw_len: int, reserved: int = 0) -> bytes:
    head = CHUNK.pack(ord(kind), codec, reserved, len(stored), raw_len, 0)[:12]
    return head + struct.pack("<I", zlib.crc32(stored, zlib.crc32(head))) + stored


def raw_chunk(kind: str, payload: bytes) -> bytes:
    return chunk(kind, CODEC_NONE, payload, len(payload))


def zstd_chunk(kind: str, payload: bytes) -> bytes:
    stored = zstandard.ZstdCompressor(level=12).compress(payload)
    if len(stored) >= len(payload):  # as the writer does: never store a larger chunk
        return raw_chunk(kind, payload)
    return chunk(kind, CODEC_ZSTD, stored, len(payload))


def read_chunk(data: bytes, off: int) -> tuple[str, int, bytes, int]:
    """(kind, codec, stored bytes, raw length) of the chunk at ``off``."""
    kind, codec, _res, s, r, _crc = CHUNK.unpack_from(data, off)
    return chr(kind), codec, data[off + 16 : off + 16 + s], r


def payload_of(data: bytes, off: int) -> bytes:
    _k, codec, stored, r = read_chunk(data, off)
    if codec == CODEC_ZSTD:
        out: bytes = zstandard.ZstdDecompressor().decompress(stored, max_output_size=r)
        return out
    if codec == CODEC_ZLIB:
        return zlib.decompress(stored)
    return stored


def footer(data: bytes) -> list[Any]:
    return list(FOOTER.unpack_from(data, len(data) - FOOTER_SIZE))


def with_footer(data: bytes, fields: list[Any]) -> bytes:
    """``data`` with its footer replaced by ``fields`` (crc recomputed)."""
    packed = FOOTER.pack(*fields)
    body = packed[:FOOTER_CRC_SPAN]
    return (
        data[: len(data) - FOOTER_SIZE]
        + body
        + struct.pack("<I", zlib.crc32(body))
        + packed[FOOTER_CRC_SPAN + 4 :]
    )


@dataclass
class Layout:
    """A file split into its parts, to be put back together with some of them
    replaced: the data region is kept byte for byte (the K, S and X offsets
    into it stay right); the index region is re-laid, with the offsets in D,
    U and the footer recomputed. Chunks are kept as bytes (header and all)."""

    header: bytes
    data_region: bytes
    k: bytes
    s: list[bytes]
    d_payload: bytes
    t: bytes
    i: list[bytes]
    u_payload: bytes
    foot: list[Any]
    extra: list[bytes] = field(default_factory=list)  # chunks put before U, referenced by none
    squeeze: bool = False  # D and U stored with zstd (hostile ones: a small file)

    @classmethod
    def parse(cls, data: bytes) -> Layout:
        f = footer(data)
        k_off, d_off, u_off, t_off, region = f[0], f[1], f[2], f[3], f[13]

        def whole(off: int) -> bytes:
            s = CHUNK.unpack_from(data, off)[3]
            return data[off : off + 16 + s]

        d = payload_of(data, d_off)
        (n,) = struct.unpack_from("<I", d, 0)
        s_offs, p = [], 4
        for _ in range(n):
            s_offs.append(struct.unpack_from("<Q", d, p)[0])
            (ln,) = struct.unpack_from("<H", d, p + 16)
            p += 18 + ln
        u = payload_of(data, u_off)
        (c,) = struct.unpack_from("<I", u, 0)
        i_offs = [struct.unpack_from("<16sQI", u, 4 + 28 * j)[1] for j in range(c)]
        return cls(
            data[:HEADER_SIZE],
            data[HEADER_SIZE:region],
            whole(k_off),
            [whole(o) for o in s_offs],
            d,
            whole(t_off),
            [whole(o) for o in i_offs],
            u,
            f,
        )

    def emit(self) -> bytes:
        out = bytearray(self.header + self.data_region)
        f = list(self.foot)
        f[13] = len(out)
        f[0] = len(out)
        out += self.k
        s_offs = []
        for s in self.s:
            s_offs.append(len(out))
            out += s
        d = bytearray(self.d_payload)
        p = 4
        for o in s_offs:
            struct.pack_into("<Q", d, p, o)
            (ln,) = struct.unpack_from("<H", d, p + 16)
            p += 18 + ln
        f[1] = len(out)
        out += zstd_chunk("D", bytes(d)) if self.squeeze else raw_chunk("D", bytes(d))
        f[3] = len(out)
        out += self.t
        i_offs = []
        for i in self.i:
            i_offs.append(len(out))
            out += i
        for x in self.extra:
            out += x
        u = bytearray(self.u_payload)
        for j, o in enumerate(i_offs):
            struct.pack_into("<Q", u, 4 + 28 * j + 16, o)
        f[2] = len(out)
        out += zstd_chunk("U", bytes(u)) if self.squeeze else raw_chunk("U", bytes(u))
        out += bytes(FOOTER_SIZE)
        return with_footer(bytes(out), f)


def patch_data_chunk(data: bytes, off: int, payload: bytes) -> bytes:
    """The file with the codec-none chunk at ``off`` given a payload of the
    same length (crc recomputed)."""
    kind, codec, stored, _r = read_chunk(data, off)
    assert codec == CODEC_NONE and len(stored) == len(payload)
    return data[:off] + raw_chunk(kind, payload) + data[off + 16 + len(stored) :]


# -- the valid files -----------------------------------------------------------


Events = list[tuple[str, bytes, bytes]]  # (stream, id16, record), in writer order


def write(path: str, events: Events, **kw: Any) -> None:
    w = ESDBWriter(path, created=CREATED, **kw)
    for stream, id16, rec in events:
        w.add(stream, id16, rec)
    w.finish()


def worked_example() -> Events:
    return [
        ("c1", uid(1), record(0, 1, "page", {"url": "/"}, None, {})),
        ("c1", uid(2), record(1, 2, "buy", {"total": "9.99"}, None, {"sku": "x1"})),
    ]


def many_streams() -> Events:
    """Enough streams for several S chunks and enough events for several I
    chunks and blocks; ids interleave across streams (commit order)."""
    out: Events = []
    per: dict[str, list[tuple[bytes, bytes]]] = {}
    for i in range(3000):
        s = f"stream-{i % 700:04d}"
        lst = per.setdefault(s, [])
        n = i + 1
        t = ("Opened", "Changed", "Closed")[i % 3]
        lst.append((uid(n), record(len(lst), n, t, {"i": i}, {"by": "u1"}, {"k": str(i % 5)})))
    for s in sorted(per):
        out += [(s, a, b) for a, b in per[s]]
    return out


def postings_chunks() -> Events:
    """One stream of 16,400 events: its type index passes 16,384 postings."""
    return [("big", uid(i + 1), record(i, i + 1, "Tick", i, None, {})) for i in range(16400)]


def msgpack_conventions() -> Events:
    ext = msgpack.ExtType(5, b"\x01\x02")
    ts = msgpack.Timestamp(1720000000, 5)
    nonminimal = b"\x96\x00\x01\xa1T\xcf" + (7).to_bytes(8, "big") + b"\xc0\x80"  # data: 7 as u64
    return [
        ("m", uid(1), record(0, 1, "T", {"str": "text", "bin": b"\x00\xff"}, None, {})),
        (
            "m",
            uid(2),
            record(1, 2, "T", {1: "int key", 2.5: "float", None: "nil", False: "bool"}, None, {}),
        ),
        ("m", uid(3), record(2, 3, "T", {b"k": "bin key"}, [ext, ts], {})),
        ("m", uid(4), b"\x96\x03\x04" + nonminimal[3:]),
        (
            "m",
            uid(5),
            # version 4 as a u16 and seq 5 as a u32: non-minimal, allowed
            b"\x96\xcd\x00\x04\xce\x00\x00\x00\x05"
            + b"".join(
                msgpack.packb(x, use_bin_type=True)
                for x in ("T", [[[[]]]], {"deep": {"er": [1, -1, 2**63]}}, {})
            ),
        ),
    ]


def names() -> Events:
    long_name = "n" * 1024
    return [
        (long_name, uid(1), record(0, 1, "T" * 1024, None, None, {"i" * 1024: "v" * 1024})),
        ("zoë", uid(2), record(0, 2, "Ünïcode", None, None, {"type": "Ünïcode"})),
        ("\uffff", uid(3), record(0, 3, "T", None, None, {})),
        ("\U00010000", uid(4), record(0, 4, "T", None, None, {})),
    ]


def gaps() -> Events:
    """A stream continuing from an earlier file (first version 1000) and seq
    gaps (removed events), ULID order = seq order still."""
    return [
        ("a", uid(10), record(1000, 100, "T", None, None, {})),
        ("a", uid(30), record(1001, 300, "T", None, None, {})),
        ("b", uid(20), record(0, 200, "U", None, None, {})),
    ]


def largest_record() -> Events:
    prefix, suffix = b"\x96\x00\x01\xa3Big", b"\xc0\x80"
    # [0, 1, "Big", <bin 32 of n zero bytes>, nil, {}]: exactly the limit
    n = MAX_RECORD_BYTES - len(prefix) - 5 - len(suffix)
    rec = prefix + b"\xc6" + n.to_bytes(4, "big") + bytes(n) + suffix
    assert len(rec) == MAX_RECORD_BYTES
    return [("big", uid(1), rec)]


def tagged_example() -> Events:
    """FORMAT.md's version-2 worked example: the version-1 one with tags."""
    return [
        ("c1", uid(1), record(0, 1, "page", {"url": "/"}, None, {}, ["cart:7"])),
        (
            "c1",
            uid(2),
            record(1, 2, "buy", {"total": "9.99"}, None, {"sku": "x1"}, ["cart:7", "u:1"]),
        ),
    ]


def tagged_streams() -> Events:
    """Tagged and untagged events in several streams, tags in UTF-8 byte order
    (not UTF-16: U+FFFF before U+10000)."""
    tags = ["a", "b", "student:1", "course:7", "\uffff", "\U00010000", "é"]
    per: dict[str, list[tuple[bytes, bytes]]] = {}
    for i in range(40):
        s = ("s1", "s2", "zoë")[i % 3]
        lst = per.setdefault(s, [])
        mine = sorted({tags[i % 7], tags[(i * 3) % 7]}, key=str.encode) if i % 5 else []
        t = ("Opened", "Changed")[i % 2]
        lst.append((uid(i + 1), record(len(lst), i + 1, t, {"i": i}, None, {}, mine)))
    return [(s, a, b) for s in sorted(per) for a, b in per[s]]


def many_tags() -> Events:
    """1500 distinct 20-byte tags (several G chunks), 4500 postings (two Q chunks)."""
    tags = [f"tag-{i:016d}" for i in range(1500)]
    per: dict[str, list[tuple[bytes, bytes]]] = {}
    for i in range(1500):
        s = f"s{i % 7}"
        lst = per.setdefault(s, [])
        mine = sorted({tags[i], tags[(i + 500) % 1500], tags[(i + 1000) % 1500]})
        lst.append((uid(i + 1), record(len(lst), i + 1, "T", i, None, {}, mine)))
    return [(s, a, b) for s in sorted(per) for a, b in per[s]]


@dataclass
class Valid:
    name: str
    what: str
    events: Callable[[], Events]
    options: dict[str, Any]
    list_events: bool = True


VALID = [
    Valid("valid-empty", "no events: zero counts, empty K, D, T and U", list, {}),
    Valid(
        "valid-v2-worked-example",
        "version 2: FORMAT.md's version-2 worked example (tags, codec none)",
        tagged_example,
        {"codec": "none"},
    ),
    Valid(
        "valid-v2-streams",
        "version 2: tagged and untagged events in three streams, non-ASCII tags, zlib",
        tagged_streams,
        {"codec": "zlib", "block_size": 256},
    ),
    Valid(
        "valid-v2-many-tags",
        "version 2: 1500 tags in several G chunks, 4500 postings in two Q chunks",
        many_tags,
        {},
        False,
    ),
    Valid("valid-worked-example", "FORMAT.md's worked example", worked_example, {"codec": "none"}),
    Valid(
        "valid-zstd-many",
        "700 streams in several S chunks, 3000 events in several blocks and I chunks, zstd",
        many_streams,
        {"block_size": 4096},
        False,
    ),
    Valid("valid-zlib-many", "the same with zlib", many_streams, {"codec": "zlib"}, False),
    Valid(
        "valid-postings-chunks",
        "16,400 postings under type=Tick: P chunks",
        postings_chunks,
        {},
        False,
    ),
    Valid(
        "valid-msgpack",
        "str and bin, map keys of every type, ext types, a timestamp, a non-minimal int",
        msgpack_conventions,
        {"codec": "none"},
    ),
    Valid(
        "valid-names",
        "1024-byte names, non-ASCII names in UTF-8 byte order, a given type index entry",
        names,
        {},
    ),
    Valid("valid-no-type-index", "index_types off", gaps, {"index_types": False}),
    Valid("valid-gaps", "versions from 1000, seq gaps", gaps, {"codec": "none"}),
    Valid(
        "valid-one-block",
        "one block stored raw, no secondary index: the codec cases' source",
        lambda: [
            ("s", uid(i + 1), record(i, i + 1, "Note", {"text": "no play " * 8}, None, {}))
            for i in range(20)
        ],
        {"codec": "none", "index_types": False, "block_size": 1 << 20},
    ),
    Valid(
        "valid-twins",
        "two streams whose X chunks are byte for byte equal",
        lambda: [
            ("a", uid(1), record(0, 1, "T", None, None, {})),
            ("b", uid(2), record(0, 2, "T", None, None, {})),
        ],
        {"codec": "none"},
    ),
    Valid(
        "valid-largest-record",
        f"one record of {MAX_RECORD_BYTES} bytes, the largest allowed",
        largest_record,
        {},
        False,
    ),
]


def digest(r: ESDBReader) -> str:
    """sha256 over, for each event in position order: id (16 bytes), u32
    length and UTF-8 bytes of its stream, u32 length and bytes of its record."""
    h = hashlib.sha256()
    for stream, id16, rec in r.iter_all_raw():
        sb = stream.encode()
        h.update(id16 + struct.pack("<I", len(sb)) + sb + struct.pack("<I", len(rec)) + rec)
    return h.hexdigest()


LISTED = 20  # longer lists are cut to their first 20 entries (digests cover the rest)


def space_digest(r: ESDBReader) -> str:
    """sha256 over, for each space in order: u32 length and UTF-8 bytes of its
    stream, u64 first version, u64 count, first and last id (16 bytes each)."""
    h = hashlib.sha256()
    for sp in r.spaces():
        sb = sp.stream.encode()
        h.update(struct.pack("<I", len(sb)) + sb)
        h.update(struct.pack("<QQ", sp.first_version, sp.count) + sp.first_id + sp.last_id)
    return h.hexdigest()


def tag_index(r: ESDBReader) -> dict[str, list[int]]:
    """tag -> the seqs of the events carrying it, ascending; tags in UTF-8
    byte order (what the file's records imply)."""
    out: dict[str, list[int]] = {}
    for e in r.read_all():
        for t in e.tags:
            out.setdefault(t, []).append(e.seq)
    return {t: sorted(out[t]) for t in sorted(out, key=str.encode)}


def tag_digest(tags: dict[str, list[int]]) -> str:
    """sha256 over, for each tag in UTF-8 byte order: u32 length and UTF-8
    bytes of the tag, u32 count, then its seqs ascending (u64 each)."""
    h = hashlib.sha256()
    for t, seqs in tags.items():
        tb = t.encode()
        h.update(struct.pack("<I", len(tb)) + tb + struct.pack("<I", len(seqs)))
        h.update(struct.pack(f"<{len(seqs)}Q", *seqs))
    return h.hexdigest()


def expected_valid(path: str, v: Valid) -> dict[str, Any]:
    with ESDBReader(path) as r:
        m = r.meta
        spaces = [
            {
                "stream": sp.stream,
                "first_version": sp.first_version,
                "count": sp.count,
                "first_id": sp.first_id.hex(),
                "last_id": sp.last_id.hex(),
            }
            for sp in r.spaces()
        ]
        out: dict[str, Any] = {
            "valid": True,
            "what": v.what,
            "footer": {
                "event_count": m.event_count,
                "space_count": m.space_count,
                "block_count": m.block_count,
                "first_seq": m.first_seq,
                "last_seq": m.last_seq,
                "first_id": m.first_id.hex() if m.first_id else "00" * 16,
                "last_id": m.last_id.hex() if m.last_id else "00" * 16,
                "created_us": 1720000000000000,
                "record_bytes": m.record_bytes,
                "codec": m.codec,
                "index_types": m.index_types,
            },
            "types": r.types(),
            "spaces": spaces[:LISTED],
            "spaces_sha256": space_digest(r),
            "events_sha256": digest(r),
            "ulid_order_sha256": hashlib.sha256(
                b"".join(e.id.bytes for e in r.read_all())
            ).hexdigest(),
        }
        with open(path, "rb") as f:
            f.seek(-16, os.SEEK_END)
            out["format_version"] = struct.unpack("<H", f.read(2))[0]
        if out["format_version"] == 2:
            tags = tag_index(r)
            out["tag_count"] = len(tags)
            out["tags_sha256"] = tag_digest(tags)
            out["tags"] = [
                {"tag": t, "count": len(seqs), "seqs": seqs[:LISTED]}
                for t, seqs in list(tags.items())[:LISTED]
            ]
        if v.list_events:
            out["events"] = [
                {
                    "position": pos,
                    "id": id16.hex(),
                    "stream": stream,
                    "record": rec.hex(),
                }
                for pos, (stream, id16, rec) in enumerate(r.iter_all_raw())
            ]
        queries = []
        for sp in list(r.spaces())[:3]:
            for key in sorted(
                {
                    (k, v2)
                    for e in r.read_stream(sp.stream)
                    for k, v2 in _entries(e.indexes, e.type, m.index_types)
                }
            )[:4]:
                versions = [e.version for e in r.read_index(sp.stream, *key)]
                q: dict[str, Any] = {"stream": sp.stream, "name": key[0], "value": key[1]}
                q["count"] = len(versions)
                q["versions"] = versions if len(versions) <= LISTED else versions[:LISTED]
                queries.append(q)
        out["index_queries"] = queries
    return out


def _entries(indexes: dict[str, str], type_: str, index_types: bool) -> set[tuple[str, str]]:
    out = set(indexes.items())
    if index_types:
        out.add(("type", type_))
    return out


# -- the invalid files ---------------------------------------------------------


@dataclass
class Invalid:
    name: str
    rule: str
    breaks: str
    stage: str  # "open": refused when the file is opened; "verify": by the full check
    make: Callable[[dict[str, bytes]], bytes]


def _set(data: bytes, off: int, fmt: str, value: Any) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _fix_header(data: bytes) -> bytes:
    return data[:12] + struct.pack("<I", zlib.crc32(data[:12])) + data[16:]


def _footer_field(i: int, value: Any) -> Callable[[dict[str, bytes]], bytes]:
    def make(v: dict[str, bytes]) -> bytes:
        data = v["valid-worked-example"]
        f = footer(data)
        f[i] = value
        return with_footer(data, f)

    return make


WX = "valid-worked-example"
X_OFF, B_OFF = 0x10, 0x9C  # chunk offsets in the worked example


def _chunk_field(off: int, fmt: str, at: int, value: int) -> Callable[[dict[str, bytes]], bytes]:
    def make(v: dict[str, bytes]) -> bytes:
        data = _set(v[WX], off + at, fmt, value)
        kind, codec, res, s, r, _ = CHUNK.unpack_from(data, off)
        stored = data[off + 16 : off + 16 + s]
        return data[:off] + chunk(chr(kind), codec, stored, r, res) + data[off + 16 + s :]

    return make


def _block_codec(stored: Callable[[bytes], bytes]) -> Callable[[dict[str, bytes]], bytes]:
    """valid-one-block with its block stored by ``stored(payload)`` (codec
    from the first byte: zstd frames start 28 b5, skippable ones 50, zlib 78).
    The block is the file's only data chunk, at offset 16: only the index
    region moves."""

    def make(v: dict[str, bytes]) -> bytes:
        data = v["valid-one-block"]
        payload = payload_of(data, HEADER_SIZE)
        st = stored(payload)
        codec = CODEC_ZSTD if st[:1] in (b"\x28", b"\x50") else CODEC_ZLIB
        lay = Layout.parse(data)
        lay.data_region = chunk("B", codec, st, len(payload))
        return lay.emit()

    return make


def _zstd_frame(
    payload: bytes, window_desc: int | None = None, dict_id: int | None = None
) -> bytes:
    """A zstd frame of ``payload`` with a hand-made header: no single-segment
    flag (so a window descriptor), an optional dictionary id, a 4-byte
    content size; the blocks are zstd's own."""
    frame = zstandard.ZstdCompressor(level=3).compress(payload)
    blocks = frame[zstandard.frame_header_size(frame) :]
    fhd = (2 << 6) | (1 if dict_id is not None else 0)
    head = b"\x28\xb5\x2f\xfd" + bytes([fhd, 0x58 if window_desc is None else window_desc])
    if dict_id is not None:
        head += bytes([dict_id])
    return head + struct.pack("<I", len(payload)) + blocks


def _patched_record(old: bytes, new: bytes) -> Callable[[dict[str, bytes]], bytes]:
    """The worked example (codec none) with record bytes ``old`` replaced by
    ``new`` of the same length, inside the block (crc recomputed)."""

    def make(v: dict[str, bytes]) -> bytes:
        data = v[WX]
        payload = payload_of(data, B_OFF)
        assert len(old) == len(new) and payload.count(old) == 1
        return patch_data_chunk(data, B_OFF, payload.replace(old, new))

    return make


def _t_payload(names: list[bytes]) -> bytes:
    return struct.pack("<I", len(names)) + b"".join(struct.pack("<H", len(n)) + n for n in names)


def _relaid(
    change: Callable[[Layout], None], source: str = WX
) -> Callable[[dict[str, bytes]], bytes]:
    def make(v: dict[str, bytes]) -> bytes:
        lay = Layout.parse(v[source])
        change(lay)
        return lay.emit()

    return make


def _types(names: list[bytes]) -> Callable[[Layout], None]:
    def change(lay: Layout) -> None:
        lay.t = raw_chunk("T", _t_payload(names))

    return change


def _hostile_t(lay: Layout) -> None:
    # 4 Mi one-byte names (12 MiB, compressed to a few KB) would cost GiBs
    # as objects: refused from the count alone, above the file's 2 events.
    lay.t = zstd_chunk("T", _t_payload([b"a"] * (1 << 22)))


def _hostile_k(lay: Layout) -> None:
    lay.k = zstd_chunk("K", bytes(16 << 20))
    lay.foot[6] = 1 << 20  # block_count
    lay.foot[4] = 1 << 20  # event_count


def _hostile_d(lay: Layout) -> None:
    """600,000 directory entries, in order and in range, so that only their
    count (against the region that must hold their S chunks) gives them away."""
    region = lay.foot[13]  # an offset inside the index region
    entries = [struct.pack("<QQH", region, i, 7) + b"d%06d" % i for i in range(1, 600_000)]
    first = struct.pack("<QQH", 0, 0, 2) + b"c1"  # the real chunk (emit fixes its offset)
    lay.d_payload = struct.pack("<I", len(entries) + 1) + first + b"".join(entries)
    lay.squeeze = True
    lay.foot[4] = lay.foot[5] = len(entries) + 1  # event and space counts claimed to match


def _hostile_u(lay: Layout) -> None:
    """600,000 ULID directory entries, in order and in range: as above."""
    region = lay.foot[13]
    n = 600_000
    first = lay.u_payload[4:32]
    rest = b"".join(struct.pack("<16sQI", uid(1 << 40 | i), region, 1) for i in range(1, n))
    lay.u_payload = struct.pack("<I", n) + first + rest
    lay.squeeze = True
    lay.foot[4] = n + 1


def _big_s(v: dict[str, bytes]) -> bytes:
    """One S chunk of more than 1 MiB: 12,000 one-event streams written with
    the writer's S chunk size raised past the format's bound."""
    from eventstore.esdb import writer as writer_mod

    events = [
        (f"s{i:05d}", uid(i + 1), record(0, i + 1, "T", None, None, {})) for i in range(12000)
    ]
    saved = writer_mod.INDEX_CHUNK_SIZE
    writer_mod.INDEX_CHUNK_SIZE = 2 << 20
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s.esdb")
            write(path, events)
            with open(path, "rb") as f:
                return f.read()
    finally:
        writer_mod.INDEX_CHUNK_SIZE = saved


def _gap(lay: Layout) -> None:
    lay.extra.append(raw_chunk("T", _t_payload([b"page", b"buy"])))


def _twice(lay: Layout) -> None:
    """Space b's X offset is space a's (their X chunks are equal): one chunk
    referenced twice, the other by nothing."""
    sp = bytearray(payload_of(lay.s[0], 0))
    (m,) = struct.unpack_from("<I", sp, 0)
    offs = struct.unpack_from(f"<{m + 1}I", sp, 4)
    at = []
    for i in range(m):
        p = 8 + 4 * m + offs[i]
        (ln,) = struct.unpack_from("<H", sp, p)
        at.append(p + 2 + ln + 56)
    struct.pack_into("<Q", sp, at[1], struct.unpack_from("<Q", sp, at[0])[0])
    lay.s[0] = raw_chunk("S", bytes(sp))


def _swap_types(lay: Layout) -> None:
    """T lists buy before page, and the I chunk's type ids follow it: only
    the order of first appearance is broken."""
    lay.t = raw_chunk("T", _t_payload([b"buy", b"page"]))
    ip = bytearray(payload_of(lay.i[0], 0))
    struct.pack_into("<II", ip, len(ip) - 8, 1, 0)
    lay.i[0] = raw_chunk("I", bytes(ip))


def _seq_order(v: dict[str, bytes]) -> bytes:
    """Record 1's seq 2 made 0 (before record 0's 1 in ULID order), footer
    seqs made to agree: only seq-rises-with-ULID is broken."""
    data = _patched_record(b"\x96\x01\x02\xa3buy", b"\x96\x01\x00\xa3buy")(v)
    f = footer(data)
    f[7], f[8] = 0, 1
    return with_footer(data, f)


def _hostile_x(v: dict[str, bytes]) -> bytes:
    data = v[WX]
    x = bytearray(payload_of(data, X_OFF))
    struct.pack_into("<IIQ", x, 0, 0xFFFFFFFF, 0xFFFFFFFF, 1 << 40)
    return patch_data_chunk(data, X_OFF, bytes(x))


# -- version 2: the tag index re-laid ----------------------------------------------

V2X = "valid-v2-worked-example"
Posting = tuple[int, int, int, int]  # seq, position, space number, type id


def footer_v2(data: bytes) -> list[Any]:
    return list(FOOTER_V2.unpack_from(data, len(data) - FOOTER_V2_SIZE))


def tag_lists(data: bytes) -> tuple[int, list[tuple[bytes, list[Posting]]]]:
    """(offset where the tag chunks start, [(tag, its postings)]) of a
    version-2 file written by ESDBWriter (Q, G then H end its index region)."""
    f = footer_v2(data)
    h = payload_of(data, f[18])
    _g, _t, c, q = struct.unpack_from("<QQII", h, 0)
    q_offs = list(struct.unpack_from(f"<{q}Q", h, 24))
    p, g_offs = 24 + 8 * q, []
    for _ in range(c):
        g_offs.append(struct.unpack_from("<Q", h, p)[0])
        (ln,) = struct.unpack_from("<H", h, p + 16)
        p += 18 + ln
    posts: list[Posting] = []
    for qo in q_offs:
        qp = payload_of(data, qo)
        n = len(qp) // 20
        cols = [struct.unpack_from(f"<{n}Q", qp, 0)] + [
            struct.unpack_from(f"<{n}I", qp, 8 * n + 4 * n * k) for k in range(3)
        ]
        posts += list(zip(*cols, strict=True))
    out = []
    for go in g_offs:
        gp = payload_of(data, go)
        (m,) = struct.unpack_from("<I", gp, 0)
        offs = struct.unpack_from(f"<{m + 1}I", gp, 4)
        for i in range(m):
            a = 8 + 4 * m + offs[i]
            (ln,) = struct.unpack_from("<H", gp, a)
            start, cnt = struct.unpack_from("<QQ", gp, a + 2 + ln)
            out.append((gp[a + 2 : a + 2 + ln], posts[start : start + cnt]))
    return min(q_offs + g_offs), out


def with_tag_lists(data: bytes, tags: list[tuple[bytes, list[Posting]]]) -> bytes:
    """``data`` with its tag index replaced by one laid from ``tags`` as given
    (in that order: one G chunk, Q chunks of 4096, raw), footer fixed."""
    cut, _old = tag_lists(data)
    out = bytearray(data[:cut])
    flat = [x for _t, ps in tags for x in ps]
    q_offs = []
    for j in range(0, len(flat), 4096):
        part = flat[j : j + 4096]
        cols = list(zip(*part, strict=True))
        n = len(part)
        q_offs.append(len(out))
        out += raw_chunk(
            "Q",
            struct.pack(f"<{n}Q", *cols[0]) + b"".join(struct.pack(f"<{n}I", *c) for c in cols[1:]),
        )
    entries, start = [], 0
    for tag, ps in tags:
        entries.append(struct.pack("<H", len(tag)) + tag + struct.pack("<QQ", start, len(ps)))
        start += len(ps)
    offs, a = [0], 0
    for e in entries:
        a += len(e)
        offs.append(a)
    g_off = len(out)
    out += raw_chunk(
        "G",
        struct.pack(f"<I{len(offs)}I", len(entries), *offs) + b"".join(entries),
    )
    first = tags[0][0]
    h = struct.pack("<QQII", len(tags), len(flat), 1, len(q_offs))
    h += struct.pack(f"<{len(q_offs)}Q", *q_offs)
    h += struct.pack("<QQH", g_off, 0, len(first)) + first
    f = footer_v2(data)
    f[18] = len(out)
    out += raw_chunk("H", h)
    return with_footer_v2(bytes(out), f)


def with_footer_v2(body: bytes, fields: list[Any]) -> bytes:
    """``body`` (everything before the footer) with a version-2 footer of
    ``fields`` (crc recomputed)."""
    packed = bytearray(FOOTER_V2.pack(*fields))
    struct.pack_into("<I", packed, 148, zlib.crc32(packed[:148]))
    return body + bytes(packed)


def _retag(
    change: Callable[[list[tuple[bytes, list[Posting]]]], None],
) -> Callable[[dict[str, bytes]], bytes]:
    def make(v: dict[str, bytes]) -> bytes:
        data = v[V2X]
        tags = tag_lists(data)[1]
        change(tags)
        return with_tag_lists(data, tags)

    return make


def _swap_tags(tags: list[tuple[bytes, list[Posting]]]) -> None:
    """The two tags listed in the wrong order (each keeps its own postings):
    only the tag order is broken."""
    tags.reverse()


def _wrong_seq(tags: list[tuple[bytes, list[Posting]]]) -> None:
    """cart:7's last posting (seq 2) says seq 3: still rising within the tag,
    the right position, but not that event's seq."""
    seq, pos, sp, tid = tags[0][1][-1]
    tags[0][1][-1] = (seq + 1, pos, sp, tid)


def _v2_footer_h(value: int) -> Callable[[dict[str, bytes]], bytes]:
    def make(v: dict[str, bytes]) -> bytes:
        data = v[V2X]
        f = footer_v2(data)
        f[18] = value
        return with_footer_v2(data[: len(data) - FOOTER_V2_SIZE], f)

    return make


def _v2_record(old: bytes, new: bytes) -> Callable[[dict[str, bytes]], bytes]:
    """The version-2 worked example (codec none, its block at 16) with record
    bytes ``old`` replaced by ``new`` of the same length."""

    def make(v: dict[str, bytes]) -> bytes:
        data = v[V2X]
        off = X_OFF
        kind = chr(data[off])
        while kind != "B":  # the block follows the X chunk
            off += 16 + CHUNK.unpack_from(data, off)[3]
            kind = chr(data[off])
        payload = payload_of(data, off)
        assert len(old) == len(new) and payload.count(old) == 1
        return patch_data_chunk(data, off, payload.replace(old, new))

    return make


def _v1_seven_fields(v: dict[str, bytes]) -> bytes:
    """The version-1 worked example whose record 0 became a seven-element
    record of the same length: data {} and tags ["tag1"]."""
    old = (
        bytes.fromhex("9600 01a4")
        + b"page"
        + bytes.fromhex("81a3")
        + b"url"
        + bytes.fromhex("a12fc080")
    )
    new = bytes.fromhex("9700 01a4") + b"page" + bytes.fromhex("80c080 91a4") + b"tag1"
    return _patched_record(old, new)(v)


INVALID = [
    Invalid(
        "invalid-header-magic",
        "H1",
        "header magic",
        "open",
        lambda v: _fix_header(b"\x88" + v[WX][1:]),
    ),
    Invalid("invalid-header-crc", "H3", "header crc32", "open", lambda v: _set(v[WX], 12, "<I", 0)),
    Invalid(
        "invalid-header-reserved",
        "H2",
        "header bytes 10..11 MUST be zero",
        "open",
        lambda v: _fix_header(_set(v[WX], 10, "<H", 1)),
    ),
    Invalid(
        "invalid-header-version",
        "H2",
        "header version MUST equal the footer's",
        "open",
        lambda v: _fix_header(_set(v[WX], 8, "<H", 2)),
    ),
    Invalid(
        "invalid-footer-magic", "F1", "footer end magic", "open", lambda v: v[WX][:-1] + b"\x88"
    ),
    Invalid(
        "invalid-footer-crc",
        "F3",
        "footer crc32",
        "open",
        lambda v: _set(v[WX], len(v[WX]) - 12, "<I", 0),
    ),
    Invalid(
        "invalid-footer-version-0",
        "F2",
        "format version 0 is no version",
        "open",
        _footer_field(18, 0),
    ),
    Invalid(
        "invalid-footer-version-3",
        "F2",
        "format version 3 is newer than version 2 readers: refused as newer",
        "open",
        _footer_field(18, 3),
    ),
    Invalid("invalid-footer-size", "F2", "footer size MUST be 152", "open", _footer_field(19, 160)),
    Invalid(
        "invalid-footer-reserved-130",
        "F5",
        "footer bytes 130..131 MUST be zero",
        "open",
        _footer_field(16, 1),
    ),
    Invalid(
        "invalid-footer-reserved-132",
        "F5",
        "footer bytes 132..135 MUST be zero",
        "open",
        _footer_field(17, 1),
    ),
    Invalid(
        "invalid-footer-flags", "F5", "unknown flag bits MUST be zero", "open", _footer_field(15, 3)
    ),
    Invalid(
        "invalid-footer-codec", "F4", "footer codec MUST be 0, 1 or 2", "open", _footer_field(14, 3)
    ),
    Invalid(
        "invalid-footer-offset",
        "F6",
        "index offsets MUST lie in the index region",
        "open",
        _footer_field(0, 0x10),
    ),
    Invalid(
        "invalid-footer-empty-seq",
        "F7",
        "an empty file's seqs MUST be 0",
        "open",
        lambda v: with_footer(
            v["valid-empty"], [*footer(v["valid-empty"])[:8], 5, *footer(v["valid-empty"])[9:]]
        ),
    ),
    Invalid(
        "invalid-chunk-reserved",
        "C2",
        "chunk bytes 2..3 MUST be zero",
        "verify",
        _chunk_field(B_OFF, "<H", 2, 1),
    ),
    Invalid(
        "invalid-chunk-crc",
        "C3",
        "chunk crc32",
        "verify",
        lambda v: _set(v[WX], B_OFF + 12, "<I", 0),
    ),
    Invalid(
        "invalid-chunk-codec",
        "C4",
        "codec MUST be 0, 1 or 2",
        "verify",
        _chunk_field(B_OFF, "<B", 1, 7),
    ),
    Invalid(
        "invalid-chunk-kind",
        "C1",
        "a chunk MUST be of the kind its reference expects",
        "verify",
        _chunk_field(B_OFF, "<B", 0, ord("X")),
    ),
    Invalid(
        "invalid-chunk-raw-too-large",
        "C5",
        "raw length MUST NOT exceed 64 MiB",
        "verify",
        _chunk_field(B_OFF, "<I", 8, (64 << 20) + 1),
    ),
    Invalid(
        "invalid-chunk-not-smaller",
        "C6",
        "a compressed chunk MUST be smaller than its payload",
        "verify",
        _block_codec(lambda p: zlib.compress(p, 0)),
    ),
    Invalid(
        "invalid-zstd-trailing",
        "Z1",
        "nothing MAY follow the zstd frame",
        "verify",
        _block_codec(lambda p: zstandard.ZstdCompressor().compress(p) + b"\x00"),
    ),
    Invalid(
        "invalid-zstd-skippable",
        "Z1",
        "a skippable frame is not allowed",
        "verify",
        _block_codec(
            lambda p: (
                b"\x50\x2a\x4d\x18" + struct.pack("<I", 0) + zstandard.ZstdCompressor().compress(p)
            )
        ),
    ),
    Invalid(
        "invalid-zstd-dictionary",
        "Z2",
        "a zstd frame MUST NOT name a dictionary",
        "verify",
        _block_codec(lambda p: _zstd_frame(p, dict_id=7)),
    ),
    Invalid(
        "invalid-zstd-window",
        "Z3",
        "a zstd window MUST NOT exceed 8 MiB",
        "verify",
        _block_codec(lambda p: _zstd_frame(p, window_desc=0x70)),
    ),
    Invalid(
        "invalid-zstd-no-size",
        "Z4",
        "a zstd frame MUST declare its content size",
        "verify",
        _block_codec(lambda p: zstandard.ZstdCompressor(write_content_size=False).compress(p)),
    ),
    Invalid(
        "invalid-zlib-dictionary",
        "Z5",
        "a zlib stream MUST NOT use a preset dictionary",
        "verify",
        _block_codec(lambda p: _zdict(p)),
    ),
    Invalid(
        "invalid-zlib-trailing",
        "Z5",
        "nothing MAY follow the zlib stream",
        "verify",
        _block_codec(lambda p: zlib.compress(p) + b"\x00"),
    ),
    Invalid(
        "invalid-name-empty-type",
        "N1",
        "names MUST NOT be empty",
        "verify",
        _relaid(_types([b"page", b""])),
    ),
    Invalid(
        "invalid-name-nul",
        "N1",
        "names MUST NOT hold NUL",
        "verify",
        _relaid(_types([b"page", b"b\x00y"])),
    ),
    Invalid(
        "invalid-name-utf8",
        "N1",
        "names MUST be UTF-8",
        "verify",
        _relaid(_types([b"page", b"bu\xff"])),
    ),
    Invalid(
        "invalid-type-duplicate",
        "T2",
        "type names MUST be distinct",
        "verify",
        _relaid(_types([b"page", b"page"])),
    ),
    Invalid(
        "invalid-type-order",
        "T3",
        "types MUST be listed in order of first position",
        "verify",
        _relaid(_swap_types),
    ),
    Invalid(
        "invalid-type-unused",
        "T4",
        "every listed type MUST be some event's",
        "verify",
        _relaid(_types([b"T", b"U", b"V"]), "valid-gaps"),
    ),
    Invalid(
        "invalid-record-version",
        "R3",
        "a record's version MUST be first_version + offset",
        "verify",
        _patched_record(b"\x96\x01\x02\xa3buy", b"\x96\x05\x02\xa3buy"),
    ),
    Invalid(
        "invalid-record-fields",
        "R1",
        "a record MUST be an array of exactly six",
        "verify",
        _patched_record(b"\x96\x01\x02\xa3buy", b"\x97\x01\x02\xa3buy"),
    ),
    Invalid(
        "invalid-record-duplicate-key",
        "R1",
        "a map in a record holds the same key twice",
        "verify",
        _patched_record(b"\x81\xa5total\xa49.99", b"\x82\xa2to\xa2ab\xa2to\xa1b"),
    ),
    Invalid("invalid-seq-order", "I3", "seq MUST rise with the ULID", "verify", _seq_order),
    Invalid(
        "invalid-index-type-differs",
        "X5",
        "with index_types, a given type entry MUST equal the event type",
        "verify",
        _patched_record(b"\xa3sku\xa2x1", b"\xa4type\xa1x"),
    ),
    Invalid(
        "invalid-chunk-unreferenced",
        "G1",
        "every byte MUST belong to a referenced chunk",
        "verify",
        _relaid(_gap),
    ),
    Invalid(
        "invalid-chunk-referenced-twice",
        "G1",
        "every chunk MUST be referenced once",
        "verify",
        _relaid(_twice, "valid-twins"),
    ),
    Invalid(
        "invalid-bound-type-table",
        "L2",
        "a type table of 4 Mi names in a file of 2 events",
        "verify",
        _relaid(_hostile_t),
    ),
    Invalid(
        "invalid-bound-block-index",
        "L2",
        "1 Mi blocks claimed in a 249-byte data region",
        "open",
        _relaid(_hostile_k),
    ),
    Invalid(
        "invalid-bound-space-directory",
        "L2",
        "a space directory of 600,000 entries, in order, in a small file",
        "verify",
        _relaid(_hostile_d),
    ),
    Invalid(
        "invalid-bound-ulid-directory",
        "L2",
        "a ULID directory of 600,000 entries, in order, in a small file",
        "verify",
        _relaid(_hostile_u),
    ),
    Invalid(
        "invalid-bound-space-chunk",
        "L1",
        "an S chunk's payload MUST NOT exceed 1 MiB",
        "verify",
        _big_s,
    ),
    Invalid(
        "invalid-bound-secondary",
        "L2",
        "an X chunk claiming 4 G keys and P chunks",
        "verify",
        _hostile_x,
    ),
    Invalid(
        "invalid-v2-tag-order",
        "G3",
        "version 2: tags MUST be sorted by their bytes (u:1 listed before cart:7)",
        "verify",
        _retag(_swap_tags),
    ),
    Invalid(
        "invalid-v2-posting-seq",
        "Q2",
        "version 2: a tag posting's seq MUST be its event's",
        "verify",
        _retag(_wrong_seq),
    ),
    Invalid(
        "invalid-v2-tag-directory-offset",
        "F6",
        "version 2: the tag directory offset MUST lie in the index region",
        "open",
        _v2_footer_h(HEADER_SIZE),
    ),
    Invalid(
        "invalid-v2-record-tags-order",
        "R5",
        "version 2: a record's tags MUST be sorted by their UTF-8 bytes",
        "verify",
        _v2_record(b"\x92\xa6cart:7\xa3u:1", b"\x92\xa3u:1\xa6cart:7"),
    ),
    Invalid(
        "invalid-v1-seven-fields",
        "R5",
        "a version-1 file MUST NOT hold a seven-element record",
        "verify",
        _v1_seven_fields,
    ),
]


def _zdict(p: bytes) -> bytes:
    c = zlib.compressobj(zdict=b"page buy total")
    return c.compress(p) + c.flush()


def generate(folder: str) -> list[str]:
    """Write the corpus into ``folder`` (emptied first); the names written."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith((".esdb", ".json")):
                os.remove(os.path.join(folder, name))
    os.makedirs(folder, exist_ok=True)
    made: list[str] = []
    valid: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in VALID:
            path = os.path.join(tmp, v.name + ".esdb")
            write(path, v.events(), **v.options)
            with open(path, "rb") as f:
                valid[v.name] = f.read()
            _put(folder, v.name, valid[v.name], expected_valid(path, v))
            made.append(v.name)
    for inv in INVALID:
        data = inv.make(valid)
        _put(
            folder,
            inv.name,
            data,
            {"valid": False, "rule": inv.rule, "breaks": inv.breaks, "stage": inv.stage},
        )
        made.append(inv.name)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme())
    return made


README_HEAD = """\
# ESDB conformance corpus

Small ESDB files, each with its expected outcome beside it, to check any
reader of the format (docs/FORMAT.md) in any language. Everything here is
made by `scripts/make_conformance.py` (deterministic; a test regenerates it
and compares byte for byte; do not edit by hand: change the script and rerun
it). A compressor upgrade that changes zstd or zlib output is the one reason
the files can change without a change of the format: rerun the script.

`NAME.esdb` is the file, `NAME.json` the expected outcome:

- `"valid": true`: a reader MUST open the file, its full check MUST pass,
  and it MUST read back: `footer` (the footer's fields), `types` (the type
  table in type-id order), `spaces` (the first 20 spaces in order) and
  `spaces_sha256`, `events` (for small files: every event in position order
  with its id and record bytes in hex) and `events_sha256`,
  `ulid_order_sha256`, and `index_queries` (stream, index name and value,
  the number of events and the first 20 versions, in order),
  `format_version`; for version 2, `tag_count`, `tags_sha256` and `tags`
  (the first 20 tags in UTF-8 byte order, each with its count and first 20
  seqs): the tag index MUST answer what the records' tags imply.
- `"valid": false`: the file breaks exactly the rule `rule` of FORMAT.md
  (`breaks` says how; every checksum in it is right, so only that rule's
  check catches it). `stage` says when a reader MUST refuse it: `open`
  (before any read answers), or `verify` (a full check MUST refuse it; a
  read that meets the damage MUST refuse too, and no read may answer with
  anything the damage made up). A reader MUST refuse each within bounded
  time and memory: this project's does within 2 s and 50 MiB, whatever the
  file's counts claim (the `invalid-bound-*` files claim up to millions of
  entries in files of 2 KB to 1 MB).

Digests (sha256, lowercase hex):

- `events_sha256`: over, for each event in position order: its id (16
  bytes), u32 length and UTF-8 bytes of its stream, u32 length and bytes of
  its record (u32 little-endian).
- `spaces_sha256`: over, for each space in order: u32 length and UTF-8 bytes
  of its stream, u64 first version, u64 count, first and last id (16 bytes
  each).
- `ulid_order_sha256`: over the ids (16 bytes each) of every event in ULID
  order.
- `tags_sha256`: over, for each tag in UTF-8 byte order: u32 length and
  UTF-8 bytes of the tag, u32 count, then the seqs of its events ascending
  (u64 each).

| file | expected | what |
| --- | --- | --- |
"""


def readme() -> str:
    rows = [f"| `{v.name}` | valid | {v.what} |" for v in VALID]
    rows += [f"| `{i.name}` | refused at {i.stage}: **{i.rule}** | {i.breaks} |" for i in INVALID]
    return README_HEAD + "\n".join(rows) + "\n"


def _put(folder: str, name: str, data: bytes, expected: dict[str, Any]) -> None:
    with open(os.path.join(folder, name + ".esdb"), "wb") as f:
        f.write(data)
    with open(os.path.join(folder, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def main() -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "conformance")
    names = generate(folder)
    print(f"{len(names)} files in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
