"""Full check of one ESDB file: every checksum and every structural invariant.

Walks every chunk the footer reaches (so every byte of a well-formed file is
under some crc32), re-derives the ULID index, the secondary indexes and the
footer's statistics from the records, and compares. Memory stays bounded by
the largest space plus one chunk.
"""

from __future__ import annotations

import itertools
import struct
from typing import TYPE_CHECKING

import msgpack

from ..errors import CorruptFile
from ..records import inert_ext
from .format import (
    CHUNK_SIZE,
    FOOTER_SIZE,
    HEADER_SIZE,
    KIND_BLOCK,
    KIND_BLOCK_INDEX,
    KIND_POSTINGS,
    KIND_SECONDARY,
    KIND_SPACE_DIR,
    KIND_SPACES,
    KIND_TYPES,
    KIND_ULID_DIR,
    KIND_ULIDS,
    SECONDARY_HEADER,
    SECONDARY_TAIL,
    U16,
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
    stored = HEADER_SIZE + FOOTER_SIZE  # bytes accounted for by checked chunks

    def fail(offset: int, problem: str) -> CorruptFile:
        return CorruptFile(path, offset, problem)

    # Fixed index chunks (the reader checks their contents as it loads them).
    for off, kind in (
        (r._k_off, KIND_BLOCK_INDEX),
        (r._d_off, KIND_SPACE_DIR),
        (r._u_off, KIND_ULID_DIR),
        (r._t_off, KIND_TYPES),
    ):
        stored += r._chunk_ex(off, kind)[1]
    bpos, boff = r._block_index()
    _, doffs, _ = r._dir_of_spaces()
    _, uoffs, _ = r._dir_of_ulids()
    types = r._type_table()
    if len(set(types)) != len(types):
        raise fail(r._t_off, "type table names a type twice")
    type_ids = {t: i for i, t in enumerate(types)}

    # Spaces, their events and their secondary indexes, in file order.
    r._cache.clear()
    for ci, off in enumerate(doffs):
        stored += r._chunk_ex(off, KIND_SPACES)[1]
        r._space_chunk(ci)
    expect_pos = 0
    prev_name = b""
    first_seq: int | None = None
    last_seq = 0
    record_bytes = 0
    min_id = max_id = b""
    block_seen = -1
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
                stored += _check_block(r, bi)
                block_seen = bi
            at = boff[bi]
            if id16 <= prev_id:
                raise fail(at, f"stream {sp.stream!r}: ULIDs not strictly increasing")
            prev_id = id16
            first_id = first_id or id16
            try:
                rec = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
            except Exception as exc:
                raise fail(at, f"undecodable record of event {id16.hex()}: {exc}") from None
            if not (
                type(rec) is list
                and len(rec) == 6
                and type(rec[0]) is int
                and type(rec[1]) is int
                and type(rec[2]) is str
                and type(rec[5]) is dict
            ):
                raise fail(at, f"malformed record of event {id16.hex()}")
            version, seq, type_, _d, _m, indexes = rec
            if version != sp.first_version + rel:
                raise fail(at, f"stream {sp.stream!r}: version {version} at relative {rel}")
            first_seq = seq if first_seq is None else min(first_seq, seq)
            last_seq = max(last_seq, seq)
            rbytes += len(raw)
            if not min_id or id16 < min_id:
                min_id = id16
            max_id = max(max_id, id16)
            for name, value in indexes.items():
                if type(name) is not str or type(value) is not str:
                    raise fail(at, "index entries must map str to str")
                postings.setdefault((name.encode(), value.encode()), []).append(rel)
            if meta.index_types:
                plist = postings.setdefault((b"type", type_.encode()), [])
                if not plist or plist[-1] != rel:
                    plist.append(rel)
            if type_ not in type_ids:
                raise fail(r._t_off, f"event type {type_!r} missing from the type table")
            rel += 1
        if rel != sp.count:
            raise fail(r._d_off, f"space {sp.stream!r} holds {rel} events, not {sp.count}")
        if first_id != sp.first_id or prev_id != sp.last_id:
            raise fail(r._d_off, f"space {sp.stream!r}: first/last ULID disagree with its events")
        if rbytes != sp.record_bytes:
            raise fail(r._d_off, f"space {sp.stream!r}: record byte count disagrees")
        stored += _check_secondary(r, sp, postings)
        record_bytes += rbytes
    if expect_pos != meta.event_count:
        raise fail(r._d_off, f"spaces hold {expect_pos} events, footer says {meta.event_count}")
    if block_seen != len(boff) - 1:
        raise fail(r._k_off, "block index names blocks no space uses")
    if meta.event_count and (
        min_id != meta.first_id
        or max_id != meta.last_id
        or first_seq != meta.first_seq
        or last_seq != meta.last_seq
    ):
        raise fail(r.size - FOOTER_SIZE, "footer ULID or seq range disagrees with the events")
    if record_bytes != meta.record_bytes:
        raise fail(r.size - FOOTER_SIZE, "footer record byte count disagrees with the events")

    # The ULID index: strictly increasing, each entry finding its own event.
    prev = b""
    seen = 0
    for ci, off in enumerate(uoffs):
        stored += r._chunk_ex(off, KIND_ULIDS)[1]
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
            seen += 1
    if seen != meta.event_count:
        raise fail(r._u_off, f"ULID index holds {seen} entries, file {meta.event_count}")
    if stored != r.size:
        raise fail(HEADER_SIZE, f"{r.size - stored} bytes of the file belong to no checked chunk")


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
    r: ESDBReader, sp: object, expected: dict[tuple[bytes, bytes], list[int]]
) -> int:
    """Compare a space's stored secondary index with the one its records imply."""
    from .format import SpaceInfo

    assert isinstance(sp, SpaceInfo)
    off = sp.index_offset
    if off == 0:
        if expected:
            raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r} lacks its secondary index")
        if sp.index_bytes:
            raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r}: index byte count wrong")
        return 0
    raw, size = r._chunk_ex(off, KIND_SECONDARY)
    nkeys, npch, total = SECONDARY_HEADER.unpack_from(raw, 0)
    p = SECONDARY_HEADER.size
    pch = struct.unpack_from(f"<{npch}Q", raw, p)
    p += 8 * npch
    koffs = struct.unpack_from(f"<{nkeys + 1}I", raw, p)
    kbase = p + 4 * (nkeys + 1)
    keys: list[tuple[bytes, bytes, int, int]] = []
    for i in range(nkeys):
        q = kbase + koffs[i]
        (ln,) = U16.unpack_from(raw, q)
        name = raw[q + 2 : q + 2 + ln]
        q += 2 + ln
        (lv,) = U16.unpack_from(raw, q)
        value = raw[q + 2 : q + 2 + lv]
        start, count = SECONDARY_TAIL.unpack_from(raw, q + 2 + lv)
        if q + 2 + lv + SECONDARY_TAIL.size != kbase + koffs[i + 1]:
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
    for name, value, _start, _count in keys:
        rels = list(r._postings(sp, name, value, False) or ())
        if rels != expected[(name, value)]:
            raise CorruptFile(
                r.path, off, f"space {sp.stream!r}: postings of {name!r}={value!r} disagree"
            )
    for po in pch:
        size += r._chunk_ex(po, KIND_POSTINGS)[1]
    if size != sp.index_bytes:
        raise CorruptFile(r.path, r._d_off, f"space {sp.stream!r}: index byte count disagrees")
    if off + CHUNK_SIZE > r._index_region:
        raise CorruptFile(r.path, off, "secondary index outside the data region")
    return size
