"""Full check of one ESDB file: every checksum and every structural invariant.

Walks every chunk the footer reaches (so every byte of a well-formed file is
under some crc32), re-derives the ULID index, the secondary indexes and the
footer's statistics from the records, and compares. Memory stays bounded by
the largest space plus one chunk.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from typing import TYPE_CHECKING

from ..errors import CorruptFile
from ..records import TYPE_INDEX, reads_back
from .format import (
    CHUNK_SIZE,
    HEADER_SIZE,
    KIND_BLOCK,
    KIND_POSTINGS,
    KIND_SECONDARY,
    POSTINGS_PER_CHUNK,
    SECONDARY_HEADER,
    SECONDARY_TAIL,
    U16,
    U32,
    SpaceInfo,
    name_problem,
)

if TYPE_CHECKING:
    from .reader import ESDBReader


def verify(r: ESDBReader) -> None:
    try:
        _verify(r)
    except CorruptFile:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError, UnicodeError) as exc:
        raise CorruptFile(r.path, 0, f"structure check failed: {exc}") from None


def _verify(r: ESDBReader) -> None:
    path = r.path
    meta = r.meta
    # (offset, kind) of every chunk the file references, to prove at the end
    # that they tile the file: each referenced once, no gaps, no overlaps.
    data_chunks: list[int] = []
    index_chunks: list[int] = [r._k_off, r._d_off, r._u_off, r._t_off]

    def fail(offset: int, problem: str) -> CorruptFile:
        return CorruptFile(path, offset, problem)

    # The fixed index chunks: the reader checks them (bounds first) as it loads them.
    bpos, boff = r._block_index()
    _, doffs, _ = r._dir_of_spaces()
    _, uoffs, _ = r._dir_of_ulids()
    types = r._type_table()
    type_ids = {t: i for i, t in enumerate(types)}
    data_chunks += boff
    index_chunks += doffs
    index_chunks += uoffs

    # Spaces, their events and their secondary indexes, in file order.
    r._cache.clear()
    for ci, _off in enumerate(doffs):
        r._space_chunk(ci)
    expect_pos = 0
    prev_name = b""
    first_seq: int | None = None
    last_seq = 0
    record_bytes = 0
    min_id = max_id = b""
    block_seen = -1
    types_met = 0  # types in order of first appearance by position
    tag_pairs = 0  # (tag, event) pairs the records imply
    for sp in r.spaces(cache=False):
        name_b = sp.stream.encode()
        if name_b <= prev_name and sp.number:
            raise fail(r._d_off, f"space {sp.stream!r} out of order")
        prev_name = name_b
        if sp.first_pos != expect_pos:
            raise fail(r._d_off, f"space {sp.stream!r} starts at {sp.first_pos}, not {expect_pos}")
        expect_pos += sp.count
        postings: dict[tuple[bytes, bytes], list[int]] = {}
        prev_id = b""
        first_id = b""
        rbytes = 0
        rel = 0
        for id16, raw in r._raw(sp):
            bi = _block_of(bpos, sp.first_pos + rel)
            if bi != block_seen:
                _check_block(r, bi)
                block_seen = bi
            at = boff[bi]
            if id16 <= prev_id:
                raise fail(at, f"stream {sp.stream!r}: ULIDs not strictly increasing")
            prev_id = id16
            first_id = first_id or id16
            try:
                rec = reads_back(raw)  # every map's keys distinct too (R1)
            except Exception as exc:
                raise fail(at, f"undecodable record of event {id16.hex()}: {exc}") from None
            if not (
                type(rec) is list
                and 6 <= len(rec) <= 7
                and type(rec[0]) is int
                and type(rec[1]) is int
                and type(rec[2]) is str
                and type(rec[5]) is dict
                and (
                    len(rec) == 6
                    or (
                        type(rec[6]) is list
                        and bool(rec[6])
                        and all(type(t) is str for t in rec[6])
                        and [t.encode() for t in rec[6]] == sorted({t.encode() for t in rec[6]})
                    )
                )
            ):
                raise fail(at, f"malformed record of event {id16.hex()}")
            if len(rec) == 7:
                if meta.format_version < 2:
                    raise fail(at, f"event {id16.hex()}: a version-1 record has six fields")
                for t in rec[6]:
                    bad = name_problem(t.encode("utf-8", "surrogatepass"))
                    if bad is not None:
                        raise fail(at, f"event {id16.hex()}: tag: {bad}")
                tag_pairs += len(rec[6])
            version, seq, type_, _d, _m, indexes = rec[:6]
            if version != sp.first_version + rel:
                raise fail(at, f"stream {sp.stream!r}: version {version} at relative {rel}")
            if not 0 <= seq < 1 << 64:
                raise fail(at, f"event {id16.hex()}: seq {seq} out of range")
            first_seq = seq if first_seq is None else min(first_seq, seq)
            last_seq = max(last_seq, seq)
            rbytes += len(raw)
            if not min_id or id16 < min_id:
                min_id = id16
            max_id = max(max_id, id16)
            for name, value in indexes.items():
                if type(name) is not str or type(value) is not str:
                    raise fail(at, "index entries must map str to str")
                nb = name.encode("utf-8", "surrogatepass")
                vb = value.encode("utf-8", "surrogatepass")
                bad = name_problem(nb) or name_problem(vb)
                if bad is not None:
                    raise fail(at, f"event {id16.hex()}: index entry: {bad}")
                postings.setdefault((nb, vb), []).append(rel)
            if meta.index_types:
                given = indexes.get(TYPE_INDEX)
                if given is not None and given != type_:
                    raise fail(at, f"event {id16.hex()}: index type={given!r} is not its type")
                plist = postings.setdefault((b"type", type_.encode()), [])
                if not plist or plist[-1] != rel:
                    plist.append(rel)
            tid = type_ids.get(type_)
            if tid is None:
                raise fail(r._t_off, f"event type {type_!r} missing from the type table")
            if tid > types_met:
                raise fail(r._t_off, f"type table lists {types[types_met]!r} before {type_!r}")
            if tid == types_met:
                types_met += 1
            rel += 1
        if rel != sp.count:
            raise fail(r._d_off, f"space {sp.stream!r} holds {rel} events, not {sp.count}")
        if first_id != sp.first_id or prev_id != sp.last_id:
            raise fail(r._d_off, f"space {sp.stream!r}: first/last ULID disagree with its events")
        if rbytes != sp.record_bytes:
            raise fail(r._d_off, f"space {sp.stream!r}: record byte count disagrees")
        _check_secondary(r, sp, postings, data_chunks)
        record_bytes += rbytes
    if expect_pos != meta.event_count:
        raise fail(r._d_off, f"spaces hold {expect_pos} events, footer says {meta.event_count}")
    if block_seen != len(boff) - 1:
        raise fail(r._k_off, "block index names blocks no space uses")
    if types_met != len(types):
        raise fail(r._t_off, f"type table lists {len(types) - types_met} types no event has")
    if meta.event_count and (
        min_id != meta.first_id
        or max_id != meta.last_id
        or first_seq != meta.first_seq
        or last_seq != meta.last_seq
    ):
        raise fail(r._end, "footer ULID or seq range disagrees with the events")
    if record_bytes != meta.record_bytes:
        raise fail(r._end, "footer record byte count disagrees with the events")
    if meta.format_version >= 2:
        if not tag_pairs:
            raise fail(r._end, "a version-2 file without tagged events (it is written as 1)")
        index_chunks += _check_tags(r, tag_pairs)

    # The ULID index: strictly increasing, each entry finding its own event,
    # seq rising with it.
    prev = b""
    prev_seq = -1
    seen = 0
    for ci, off in enumerate(uoffs):
        ch = r._ulid_chunk(ci)
        for k, id16 in enumerate(ch.ids):
            if id16 <= prev:
                raise fail(off, "ULID index not strictly increasing")
            prev = id16
            pos, sp_no, tid = ch.pos[k], ch.space[k], ch.type[k]
            if pos >= meta.event_count:
                raise fail(off, f"ULID index position {pos} out of range")
            ev = r._event_at(pos, sp_no, id16)
            if tid >= len(types) or types[tid] != ev.type:
                raise fail(off, f"ULID index type of {id16.hex()} disagrees with its record")
            if ev.seq <= prev_seq:
                raise fail(off, f"event {id16.hex()}: seq {ev.seq} does not rise with the ULID")
            prev_seq = ev.seq
            seen += 1
    if seen != meta.event_count:
        raise fail(r._u_off, f"ULID index holds {seen} entries, file {meta.event_count}")
    _check_tiling(r, data_chunks, HEADER_SIZE, r._index_region, "data region")
    _check_tiling(r, index_chunks, r._index_region, r._end, "index region")


def _check_tags(r: ESDBReader, pairs: int) -> list[int]:
    """Check the tag index against the records; the offsets of its chunks.

    Every posting must name an event that has its seq, type and tag, and
    the postings must be strictly sorted by (tag, seq), so no pair is listed
    twice; as many postings as the records imply pairs then means each
    tagged event is listed under each of its tags exactly once."""
    d = r._tag_directory()
    at = r._tag_off
    if d.total != pairs:
        raise CorruptFile(r.path, at, f"tag index holds {d.total} postings, records imply {pairs}")
    chunks = [at, *d.offsets, *d.postings]
    prev_tag = b""
    expect = 0
    cur = r._tag_cursor()
    for ci in range(len(d.offsets)):
        names, spans = r._tag_chunk(ci)
        if d.firsts[ci + 1] - d.firsts[ci] != len(names):
            raise CorruptFile(r.path, d.offsets[ci], "tag key chunk count disagrees")
        for tag, (start, end) in zip(names, spans, strict=True):
            if tag <= prev_tag or start != expect:
                raise CorruptFile(r.path, d.offsets[ci], "tag keys out of order or not contiguous")
            prev_tag, expect = tag, end
            prev_seq = -1
            for g in range(start, end):
                seq, pos, space, tid = cur.at(g)
                if seq <= prev_seq:
                    raise CorruptFile(r.path, at, f"postings of tag {tag!r} not in seq order")
                prev_seq = seq
                if pos >= r.meta.event_count:
                    raise CorruptFile(r.path, at, f"tag posting position {pos} out of range")
                r._tagged_event(seq, (pos, space, tid, [tag]))
    if expect != d.total:
        raise CorruptFile(r.path, at, "tag keys do not cover the tag postings")
    return chunks


def _check_tiling(r: ESDBReader, offsets: list[int], start: int, end: int, what: str) -> None:
    """The chunks at ``offsets`` lie end to end from ``start`` to ``end``:
    every byte of the region is in exactly one referenced chunk."""
    at = start
    for off in sorted(offsets):
        if off != at:
            problem = "referenced twice" if off < at else f"{off - at} bytes no chunk references"
            raise CorruptFile(r.path, min(off, at), f"{what}: {problem}")
        (stored,) = U32.unpack_from(r._map(), off + 4)
        at = off + CHUNK_SIZE + stored
    if at != end:
        raise CorruptFile(r.path, at, f"{what}: {end - at} bytes no chunk references")


def _block_of(bpos: list[int], pos: int) -> int:
    from bisect import bisect_right

    return bisect_right(bpos, pos) - 1


def _check_block(r: ESDBReader, bi: int) -> int:
    """Stored size of block ``bi``, after checking its record offsets."""
    _, boff = r._block_index()
    size = r._chunk_ex(boff[bi], KIND_BLOCK)[1]
    blk = r._block(bi)
    offs = blk.offs
    for a, b in itertools.pairwise(offs):
        if a >= b:
            raise CorruptFile(r.path, boff[bi], "data block record offsets not increasing")
    if boff[bi] + size > r._index_region:
        raise CorruptFile(r.path, boff[bi], "data block overlaps the index region")
    return size


def _check_secondary(
    r: ESDBReader,
    sp: SpaceInfo,
    expected: dict[tuple[bytes, bytes], list[int]],
    data_chunks: list[int],
) -> None:
    """Compare a space's stored secondary index with the one its records imply,
    decoding it once."""
    off = sp.index_offset
    if off == 0:
        if expected:
            raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r} lacks its secondary index")
        if sp.index_bytes:
            raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r}: index byte count wrong")
        return
    if off + CHUNK_SIZE > r._index_region:
        raise CorruptFile(r.path, off, "secondary index outside the data region")
    raw, size = r._chunk_ex(off, KIND_SECONDARY)
    nkeys, npch, total, kbase, kend = r._secondary_layout(sp, raw)
    pch = struct.unpack_from(f"<{npch}Q", raw, SECONDARY_HEADER.size)
    koffs = struct.unpack_from(f"<{nkeys + 1}I", raw, kbase - 4 * (nkeys + 1))
    if koffs[0] != 0:
        raise CorruptFile(r.path, off, "secondary key offsets do not start at 0")
    keys: list[tuple[bytes, bytes, int, int]] = []
    for i in range(nkeys):
        q = kbase + koffs[i]
        (ln,) = U16.unpack_from(raw, q)
        name = raw[q + 2 : q + 2 + ln]
        q += 2 + ln
        (lv,) = U16.unpack_from(raw, q)
        value = raw[q + 2 : q + 2 + lv]
        start, count = SECONDARY_TAIL.unpack_from(raw, q + 2 + lv)
        if q + 2 + lv + SECONDARY_TAIL.size != kbase + koffs[i + 1] or len(value) != lv:
            raise CorruptFile(r.path, off, f"secondary key {i} has the wrong length")
        keys.append((name, value, start, count))
    if [(k[0], k[1]) for k in keys] != sorted(expected):
        raise CorruptFile(r.path, off, f"space {sp.stream!r}: secondary index keys disagree")
    expect_start = 0
    for _name, _value, start, count in keys:
        if start != expect_start:
            raise CorruptFile(r.path, off, "secondary index postings not contiguous")
        expect_start += count
    if expect_start != total:
        raise CorruptFile(r.path, off, "secondary index total disagrees")
    if npch == 0:
        allp = _u32s(raw[kend : kend + 4 * total])
    else:
        allp = array("I")
        for j, po in enumerate(pch):
            praw, psize = r._chunk_ex(po, KIND_POSTINGS)
            n = min(POSTINGS_PER_CHUNK, total - j * POSTINGS_PER_CHUNK)
            if len(praw) != 4 * n:
                raise CorruptFile(r.path, po, f"postings chunk of {len(praw)} bytes, not {4 * n}")
            allp += _u32s(praw)
            size += psize
            data_chunks.append(po)
    for name, value, start, count in keys:
        if list(allp[start : start + count]) != expected[(name, value)]:
            raise CorruptFile(
                r.path, off, f"space {sp.stream!r}: postings of {name!r}={value!r} disagree"
            )
    data_chunks.append(off)
    if size != sp.index_bytes:
        raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r}: index byte count disagrees")


def _u32s(data: bytes) -> array[int]:
    out = array("I")
    out.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover - exotic platforms
        out.byteswap()
    return out
