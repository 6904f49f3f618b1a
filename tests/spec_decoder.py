"""An ESDB decoder (format versions 1 and 2) written from docs/FORMAT.md alone.

It shares no code with eventstore (plain Python, msgpack, zlib, zstandard) and
performs the page's full check: every rule it can check from the file, each
refusal naming the rule (``SpecError.rule``) and an offset. ``decode(data)``
returns the events in position order and the tag index as tag -> [seq].
"""

from __future__ import annotations

import bisect
import itertools
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zstandard

MAGIC = b"\x89ESDB\r\n\x1a"
END_MAGIC = b"\x1a\n\rBDSE\x89"
MIB = 1 << 20
MAX_RAW = 64 * MIB
MAX_RECORD = 67_108_800
P_CHUNK = 16384
Q_CHUNK = 4096
HEADER = 16
KNOWN = 2


class SpecError(ValueError):
    """A broken rule of docs/FORMAT.md: ``rule`` is its label."""

    def __init__(self, rule: str, offset: int, what: str) -> None:
        super().__init__(f"{rule} at {offset}: {what}")
        self.rule, self.offset, self.what = rule, offset, what


def need(ok: bool, rule: str, offset: int, what: str) -> None:
    if not ok:
        raise SpecError(rule, offset, what)


@dataclass
class Space:
    stream: str
    number: int
    first_pos: int
    count: int
    first_version: int
    first_id: bytes
    last_id: bytes
    x_off: int
    record_bytes: int
    index_bytes: int


@dataclass
class Event:
    position: int
    stream: str
    id: bytes
    record: bytes
    version: int
    seq: int
    type: str
    data: Any
    metadata: Any
    indexes: dict[str, str]
    tags: tuple[str, ...]


@dataclass
class Posting:
    seq: int
    position: int
    space: int
    type_id: int


@dataclass
class Decoded:
    version: int
    footer: dict[str, Any]
    types: list[str]
    spaces: list[Space]
    events: list[Event]  # position order
    ulid_order: list[int]  # positions in ULID order
    tags: dict[str, list[int]] = field(default_factory=dict)  # tag -> seqs
    postings: dict[str, list[Posting]] = field(default_factory=dict)
    g_chunks: int = 0
    q_chunks: int = 0


def rising(xs: Sequence[Any]) -> bool:
    return all(a < b for a, b in itertools.pairwise(xs))


def u(fmt: str, b: bytes, p: int) -> tuple[Any, ...]:
    return struct.unpack_from("<" + fmt, b, p)


def read_name(b: bytes, p: int, end: int, at: int) -> tuple[bytes, int]:
    """N1: a u16 length then 1..1024 bytes of UTF-8 without NUL."""
    need(p + 2 <= end, "N1", at, "name length past its area")
    (n,) = u("H", b, p)
    need(1 <= n <= 1024, "N1", at, f"name of {n} bytes")
    need(p + 2 + n <= end, "N1", at, "name past its area")
    raw = bytes(b[p + 2 : p + 2 + n])
    check_name(raw, at)
    return raw, p + 2 + n


def check_name(raw: bytes, at: int) -> None:
    need(0 < len(raw) <= 1024, "N1", at, "name length")
    need(b"\x00" not in raw, "N1", at, "NUL in a name")
    try:
        raw.decode("utf-8")  # strict: refuses surrogates and overlong forms
    except UnicodeDecodeError:
        raise SpecError("N1", at, "name is not UTF-8") from None


# -- codecs ---------------------------------------------------------------------


def inflate_zlib(stored: bytes, r: int, at: int) -> bytes:
    need(len(stored) >= 2, "Z5", at, "short zlib stream")
    need(not stored[1] & 0x20, "Z5", at, "zlib preset dictionary")
    d = zlib.decompressobj()
    try:
        out = d.decompress(stored, r)
        extra = d.decompress(d.unconsumed_tail, 1) if d.unconsumed_tail else b""
    except zlib.error as e:
        raise SpecError("Z5", at, f"zlib: {e}") from None
    need(not extra and d.eof, "Z5", at, "zlib stream longer than r or unfinished")
    need(d.unused_data == b"", "Z5", at, "bytes after the zlib stream")
    need(len(out) == r, "C5", at, "payload length differs from r")
    return out


def zstd_header(stored: bytes, r: int, at: int) -> None:
    """Z1-Z4 from the frame header (RFC 8878 3.1.1.1) before decoding."""
    need(stored[:4] == b"\x28\xb5\x2f\xfd", "Z1", at, "not a zstd frame")
    need(len(stored) >= 6, "Z1", at, "short zstd frame")
    fhd = stored[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    need(not fhd & 0x08, "Z1", at, "zstd reserved bit")
    p = 5
    window = 0
    if not single:
        wd = stored[p]
        p += 1
        log = 10 + (wd >> 3)
        base = 1 << log
        window = base + (base // 8) * (wd & 7)
    dsize = (0, 1, 2, 4)[dict_flag]
    need(len(stored) >= p + dsize, "Z1", at, "short zstd frame")
    dict_id = int.from_bytes(stored[p : p + dsize], "little")
    p += dsize
    need(dict_id == 0, "Z2", at, "zstd dictionary")
    fsize = (1 if single else 0, 2, 4, 8)[fcs_flag]
    need(fsize > 0, "Z4", at, "zstd frame without content size")
    need(len(stored) >= p + fsize, "Z1", at, "short zstd frame")
    fcs = int.from_bytes(stored[p : p + fsize], "little") + (256 if fsize == 2 else 0)
    if single:
        window = fcs
    need(window <= 8 * MIB, "Z3", at, f"zstd window {window}")
    need(fcs == r, "Z4", at, "zstd content size differs from r")


def inflate_zstd(stored: bytes, r: int, at: int) -> bytes:
    zstd_header(stored, r, at)
    d = zstandard.ZstdDecompressor(max_window_size=8 * MIB).decompressobj(read_across_frames=False)
    try:
        out = d.decompress(stored)
    except zstandard.ZstdError as e:
        raise SpecError("Z1", at, f"zstd: {e}") from None
    need(d.eof, "Z1", at, "unfinished zstd frame")
    need(d.unused_data == b"", "Z1", at, "bytes after the zstd frame")
    need(len(out) == r, "Z4", at, "zstd output differs from r")
    return out


# -- the file ----------------------------------------------------------------------


class Decoder:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.chunks: dict[int, int] = {}  # offset -> total length, for G1

    # header and footer (the open checks)
    def open(self) -> None:
        d = self.d
        n = len(d)
        need(n >= HEADER + 16, "F1", 0, "file too short")
        need(d[-8:] == END_MAGIC, "F1", n - 8, "end magic")
        version, size = u("HH", d, n - 16)
        need(version != 0, "F2", n - 16, "version 0")
        need(version <= KNOWN, "F2", n - 16, f"format version {version} is newer")
        need(size == (152 if version == 1 else 160), "F2", n - 14, f"footer size {size}")
        need(n >= HEADER + size, "F2", n - 14, "file shorter than header and footer")
        f = n - size
        (crc,) = u("I", d, n - 12)
        need(zlib.crc32(d[f : n - 12]) == crc, "F3", n - 12, "footer crc")
        need(d[:8] == MAGIC, "H1", 0, "header magic")
        need(zlib.crc32(d[:12]) == u("I", d, 12)[0], "H3", 12, "header crc")
        hv, hres = u("HH", d, 8)
        need(hv == version, "H2", 8, "header version differs from the footer's")
        need(hres == 0, "H2", 10, "header reserved bytes")
        self.version, self.foot_at = version, f
        (k, dd, uu, t, ev, sp, bl, fs, ls) = u("9Q", d, f)
        self.f: dict[str, Any] = {
            "k": k,
            "d": dd,
            "u": uu,
            "t": t,
            "event_count": ev,
            "space_count": sp,
            "block_count": bl,
            "first_seq": fs,
            "last_seq": ls,
            "first_id": bytes(d[f + 72 : f + 88]),
            "last_id": bytes(d[f + 88 : f + 104]),
            "created_us": u("Q", d, f + 104)[0],
            "record_bytes": u("Q", d, f + 112)[0],
            "region": u("Q", d, f + 120)[0],
            "codec": d[f + 128],
            "flags": d[f + 129],
        }
        res130, res132 = u("HI", d, f + 130)
        need(self.f["codec"] <= 2, "F4", f + 128, "footer codec")
        need(self.f["flags"] & ~1 == 0, "F5", f + 129, "unknown flag bits")
        need(res130 == 0 and res132 == 0, "F5", f + 130, "footer reserved bytes")
        self.index_types = bool(self.f["flags"] & 1)
        region = self.f["region"]
        need(HEADER <= region <= f, "F6", f + 120, "index region offset")
        offs = ["k", "d", "u", "t"]
        if version == 2:
            self.f["h"] = u("Q", d, f + 136)[0]
            offs.append("h")
            need(ev > 0, "F6", f + 32, "an empty version-2 file")
        for name in offs:
            need(region <= self.f[name] < f, "F6", f, f"offset of {name} outside the index region")
        need(ev < 1 << 32, "F7", f + 32, "event_count")
        need(sp <= ev and bl <= ev, "F7", f + 40, "space or block count above event_count")
        need((sp == 0) == (ev == 0) and (bl == 0) == (ev == 0), "F7", f + 40, "zero counts")
        need(self.f["first_id"] <= self.f["last_id"], "F7", f + 72, "first ULID > last")
        need(fs <= ls, "F7", f + 56, "first_seq > last_seq")
        if ev == 0:
            need(fs == ls == 0, "F7", f + 56, "an empty file's seqs")
            need(self.f["first_id"] == self.f["last_id"] == bytes(16), "F7", f + 72, "empty ids")
            need(self.f["record_bytes"] == 0, "F7", f + 112, "an empty file's record bytes")
        need(bl * 17 <= region - HEADER, "L2", f + 48, "block_count past the data region")

    # chunks
    def chunk(
        self, off: int, kind: str, data_region: bool, exact: int | None = None, bound: int = MAX_RAW
    ) -> bytes:
        d = self.d
        lo, hi = (HEADER, self.f["region"]) if data_region else (self.f["region"], self.foot_at)
        need(lo <= off and off + 16 <= hi, "G2", off, f"{kind} chunk outside its region")
        kb, codec, res, s, r, crc = u("BBHIII", d, off)
        need(chr(kb) == kind, "C1", off, f"chunk kind {chr(kb)!r}, expected {kind!r}")
        need(res == 0, "C2", off + 2, "chunk reserved bytes")
        need(codec <= 2, "C4", off + 1, f"codec {codec}")
        need(off + 16 + s <= hi, "G2", off, "chunk past its region")
        stored = bytes(d[off + 16 : off + 16 + s])
        need(zlib.crc32(stored, zlib.crc32(d[off : off + 12])) == crc, "C3", off + 12, "crc")
        need(r <= MAX_RAW, "C5", off + 8, f"raw length {r}")
        need(r <= bound, "L1" if bound == MIB else "L2", off + 8, f"raw length {r} > {bound}")
        if exact is not None:
            need(r == exact, "L2", off + 8, f"raw length {r}, the counts say {exact}")
        if codec == 0:
            need(s == r, "C6", off + 4, "codec 0 with s != r")
        else:
            need(s < r, "C6", off + 4, "compressed chunk not smaller than its payload")
        need(off not in self.chunks, "G1", off, "chunk referenced twice")
        self.chunks[off] = 16 + s
        if codec == 0:
            return stored
        if codec == 1:
            return inflate_zlib(stored, r, off)
        return inflate_zstd(stored, r, off)

    # the full check
    def decode(self) -> Decoded:
        self.open()
        f = self.f
        ev_n, sp_n, bl_n = f["event_count"], f["space_count"], f["block_count"]
        region, foot = f["region"], self.foot_at

        # K
        kp = self.chunk(f["k"], "K", False, exact=16 * bl_n)
        blocks = [u("QQ", kp, 16 * i) for i in range(bl_n)]
        for i, (off, fp) in enumerate(blocks):
            if i == 0:
                need(fp == 0, "K1", f["k"], "block 0's first position")
            else:
                need(off > blocks[i - 1][0] and fp > blocks[i - 1][1], "K1", f["k"], "order")
        if blocks:
            need(blocks[-1][1] < ev_n, "K1", f["k"], "last first_position")

        # D and S
        dp = self.chunk(f["d"], "D", False)
        need(len(dp) >= 4, "D1", f["d"], "short D")
        (c,) = u("I", dp, 0)
        need(c <= sp_n and c * 19 <= len(dp) - 4, "L2", f["d"], f"D claims {c} entries")
        need(c * 17 <= foot - region, "L2", f["d"], "S chunks past the index region")
        need((c == 0) == (ev_n == 0), "D1", f["d"], "c is 0 exactly when the file is empty")
        dents: list[tuple[int, int, bytes]] = []
        p = 4
        for _ in range(c):
            need(p + 16 <= len(dp), "D1", f["d"], "D entry past the payload")
            s_off, num = u("QQ", dp, p)
            name, p = read_name(dp, p + 16, len(dp), f["d"])
            dents.append((s_off, num, name))
        need(p == len(dp), "D1", f["d"], "D payload longer than its entries")
        for j, (_o, num, name) in enumerate(dents):
            if j == 0:
                need(num == 0, "D1", f["d"], "first number")
            else:
                need(num > dents[j - 1][1] and name > dents[j - 1][2], "D1", f["d"], "order")
            need(num < sp_n, "D1", f["d"], "space number past space_count")
        spaces: list[Space] = []
        for j, (s_off, num, name) in enumerate(dents):
            want = (dents[j + 1][1] if j + 1 < c else sp_n) - num
            sp = self.chunk(s_off, "S", False, bound=MIB)
            need(len(sp) >= 4, "S1", s_off, "short S")
            (m,) = u("I", sp, 0)
            need(m == want, "D1", s_off, f"S chunk holds {m} spaces, D says {want}")
            need(8 + 4 * m + 83 * m <= len(sp), "L2", s_off, "S entry count")
            eo = u(f"{m + 1}I", sp, 4)
            base = 8 + 4 * m
            need(eo[0] == 0 and rising(eo), "S1", s_off, "entry offsets")
            need(len(sp) == base + eo[-1], "S1", s_off, "S payload length")
            for i in range(m):
                a, b = base + eo[i], base + eo[i + 1]
                sname, q = read_name(sp, a, b, s_off)
                need(q + 80 == b, "S1", s_off, "entry does not take its range")
                fp, cnt, fv = u("QQQ", sp, q)
                fid, lid = bytes(sp[q + 24 : q + 40]), bytes(sp[q + 40 : q + 56])
                x_off, rb, ib = u("QQQ", sp, q + 56)
                number = num + i
                if i == 0:
                    need(sname == name, "D1", s_off, "D entry name differs from its chunk's")
                if spaces:
                    need(sname > spaces[-1].stream.encode(), "S1", s_off, "stream order")
                need(cnt >= 1, "S2", s_off, "count 0")
                need(fp == sum(x.count for x in spaces), "S2", s_off, "first_pos")
                need(fv + cnt <= 1 << 63, "S2", s_off, "first_version + count")
                need(fid <= lid, "S2", s_off, "first ULID > last")
                spaces.append(Space(sname.decode(), number, fp, cnt, fv, fid, lid, x_off, rb, ib))
        need(len(spaces) == sp_n, "F8", foot + 40, "space_count")
        need(sum(x.count for x in spaces) == ev_n, "F8", foot + 32, "space counts vs event_count")

        # T
        tp = self.chunk(f["t"], "T", False)
        need(len(tp) >= 4, "T1", f["t"], "short T")
        (tn,) = u("I", tp, 0)
        need(tn <= ev_n and tn * 3 <= len(tp) - 4, "L2", f["t"], f"T claims {tn} names")
        types: list[str] = []
        p = 4
        for _ in range(tn):
            tname, p = read_name(tp, p, len(tp), f["t"])
            types.append(tname.decode())
        need(p == len(tp), "T1", f["t"], "T payload longer than its names")
        need(len(set(types)) == len(types), "T2", f["t"], "duplicate type")
        type_id = {t: i for i, t in enumerate(types)}

        # blocks and records
        events: list[Event] = []
        starts = [x.first_pos for x in spaces]

        def space_of(pos: int) -> int:
            return bisect.bisect_right(starts, pos) - 1

        for i, (boff, fp) in enumerate(blocks):
            n_want = (blocks[i + 1][1] if i + 1 < bl_n else ev_n) - fp
            bp = self.chunk(boff, "B", True)
            need(len(bp) >= 4, "B1", boff, "short B")
            (n,) = u("I", bp, 0)
            need(n == n_want, "K1", boff, f"block holds {n} events, K says {n_want}")
            need(n >= 1 and 8 + 20 * n <= len(bp), "B1", boff, "block count")
            ids = [bytes(bp[4 + 16 * j : 20 + 16 * j]) for j in range(n)]
            ro = u(f"{n + 1}I", bp, 4 + 16 * n)
            area = 8 + 20 * n
            need(ro[0] == 0 and rising(ro), "B1", boff, "record offsets")
            need(len(bp) == area + ro[-1], "B1", boff, "block payload length")
            for j in range(n):
                pos = fp + j
                rec = bytes(bp[area + ro[j] : area + ro[j + 1]])
                sp_ = spaces[space_of(pos)]
                events.append(self.record(rec, pos, ids[j], sp_, type_id, boff))
        need(len(events) == ev_n, "K1", f["k"], "blocks hold fewer events than event_count")

        # spaces against their events (S2), types (T1-T4)
        for sp_ in spaces:
            evs = events[sp_.first_pos : sp_.first_pos + sp_.count]
            need(
                evs[0].id == sp_.first_id and evs[-1].id == sp_.last_id,
                "S2",
                f["d"],
                f"space {sp_.stream}: first or last ULID",
            )
            need(
                rising([e.id for e in evs]),
                "S2",
                f["d"],
                f"space {sp_.stream}: events not in ULID order",
            )
            need(sum(len(e.record) for e in evs) == sp_.record_bytes, "S3", f["d"], "record bytes")
        seen: list[str] = []
        for e in events:
            if e.type not in seen:
                seen.append(e.type)
        need(
            set(seen) == set(types),
            "T4" if len(types) > len(seen) else "T1",
            f["t"],
            "types listed vs types used",
        )
        need(seen == types, "T3", f["t"], "types not in order of first position")

        # U and I
        up = self.chunk(f["u"], "U", False)
        need(len(up) >= 4, "U1", f["u"], "short U")
        (uc,) = u("I", up, 0)
        need(uc <= ev_n, "L2", f["u"], f"U claims {uc} entries")
        need(len(up) == 4 + 28 * uc, "U1", f["u"], "U payload length")
        need(uc * 17 <= foot - region, "L2", f["u"], "U entries past the index region")
        order: list[int] = []
        last_id = b""
        total = 0
        for j in range(uc):
            first, (ioff, n) = bytes(up[4 + 28 * j : 20 + 28 * j]), u("QI", up, 20 + 28 * j)
            need(n >= 1, "U1", f["u"], "I chunk of no entries")
            total += n
            need(total <= ev_n, "U1", f["u"], "entries past event_count")
            ip = self.chunk(ioff, "I", False, exact=4 + 28 * n, bound=MIB)
            need(u("I", ip, 0)[0] == n, "U1", ioff, "I count differs from U's")
            for x in range(n):
                uid = bytes(ip[4 + 16 * x : 20 + 16 * x])
                pos, snum, tid = (u("I", ip, 4 + 16 * n + 4 * x + 4 * n * y)[0] for y in range(3))
                if x == 0:
                    need(uid == first, "U1", f["u"], "U entry's first ULID")
                need(uid > last_id, "I2", ioff, "ULIDs do not increase")
                last_id = uid
                need(pos < ev_n, "I2", ioff, "position")
                e = events[pos]
                need(e.id == uid and space_of(pos) == snum, "I2", ioff, "entry vs its position")
                need(tid < len(types) and types[tid] == e.type, "I2", ioff, "type id")
                order.append(pos)
        need(total == ev_n, "U1", f["u"], "I entries vs event_count")
        seqs = [events[p].seq for p in order]
        need(rising(seqs), "I3", f["u"], "seq does not rise with the ULID")

        # footer statistics (F8)
        if events:
            need(f["first_seq"] == seqs[0] and f["last_seq"] == seqs[-1], "F8", foot + 56, "seqs")
            need(
                f["first_id"] == events[order[0]].id and f["last_id"] == events[order[-1]].id,
                "F8",
                foot + 72,
                "ULIDs",
            )
        need(f["record_bytes"] == sum(len(e.record) for e in events), "F8", foot + 112, "bytes")

        # X and P
        for sp_ in spaces:
            self.secondary(sp_, events[sp_.first_pos : sp_.first_pos + sp_.count])

        out = Decoded(self.version, dict(f), types, spaces, events, order)
        # tag index
        if self.version == 2:
            self.tag_index(out, space_of, type_id)
        else:
            need(all(not e.tags for e in events), "R5", f["d"], "tags in a version-1 file")

        # G1: the chunks tile the bytes between header and footer
        at = HEADER
        for off in sorted(self.chunks):
            need(off == at, "G1", at, "gap or overlap between chunks")
            at = off + self.chunks[off]
        need(at == foot, "G1", at, "unreferenced bytes before the footer")
        return out

    def record(
        self, rec: bytes, pos: int, id16: bytes, sp: Space, type_id: dict[str, int], at: int
    ) -> Event:
        need(len(rec) <= MAX_RECORD, "R4", at, "record too long")
        try:
            r = msgpack.unpackb(
                rec,
                raw=False,
                strict_map_key=False,
                use_list=False,
                object_pairs_hook=_pairs,
                timestamp=0,
            )
        except _Duplicate:
            raise SpecError("R1", at, f"position {pos}: a map holds a key twice") from None
        except (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        ) as e:
            raise SpecError("R1", at, f"position {pos}: not one msgpack value: {e}") from None
        need(type(r) is tuple and len(r) in (6, 7), "R1", at, f"position {pos}: record shape")
        need(len(r) == 6 or self.version == 2, "R5", at, "a seven-element record in version 1")
        version, seq, type_, data, meta, indexes = r[:6]
        need(type(version) is int and 0 <= version < 1 << 63, "R2", at, "version")
        need(type(seq) is int and 0 <= seq < 1 << 64, "R2", at, "seq")
        need(type(type_) is str, "R2", at, "type is not a str")
        check_name(type_.encode("utf-8", "surrogatepass"), at)
        need(type_ in type_id, "R2", at, "type not in the type table")
        need(type(indexes) is dict, "R2", at, "indexes is not a map")
        for k, v in indexes.items():
            need(type(k) is str and type(v) is str, "R2", at, "index entry not str to str")
            check_name(k.encode(), at)
            check_name(v.encode(), at)
        tags: tuple[str, ...] = ()
        if len(r) == 7:
            t = r[6]
            need(type(t) is tuple and 1 <= len(t) <= 256, "R5", at, "tags array length")
            need(all(type(x) is str for x in t), "R5", at, "a tag is not a str")
            raw = [x.encode() for x in t]
            for x in raw:
                check_name(x, at)
            need(rising(raw), "R5", at, "tags not distinct and sorted by bytes")
            tags = tuple(t)
        need(version == sp.first_version + pos - sp.first_pos, "R3", at, f"position {pos}: version")
        return Event(pos, sp.stream, id16, rec, version, seq, type_, data, meta, indexes, tags)

    def secondary(self, sp: Space, evs: list[Event]) -> None:
        want: dict[tuple[bytes, bytes], list[int]] = {}
        for k, e in enumerate(evs):
            entries = {(a.encode(), b.encode()) for a, b in e.indexes.items()}
            if self.index_types:
                need(e.indexes.get("type", e.type) == e.type, "X5", sp.x_off, "type entry differs")
                entries.add((b"type", e.type.encode()))
            for key in entries:
                want.setdefault(key, []).append(k)
        if sp.x_off == 0:
            need(not want, "X4", self.f["d"], f"space {sp.stream} has entries but no X")
            need(sp.index_bytes == 0, "S3", self.f["d"], "index bytes without X")
            return
        xp = self.chunk(sp.x_off, "X", True)
        at = sp.x_off
        need(len(xp) >= 16, "X1", at, "short X")
        k, q, t = u("IIQ", xp, 0)
        need(1 <= k <= t <= k * sp.count, "L2", at, f"X counts k={k} t={t}")
        need(q == (0 if t <= P_CHUNK else -(-t // P_CHUNK)), "X3", at, f"q={q} for t={t}")
        need(q * 17 <= self.f["region"] - HEADER, "L2", at, "P chunks past the data region")
        need(16 + 8 * q + 4 * (k + 1) + 5 * k <= len(xp), "L2", at, "X counts past the payload")
        p_offs = u(f"{q}Q", xp, 16)
        base = 16 + 8 * q
        ko = u(f"{k + 1}I", xp, base)
        area = base + 4 * (k + 1)
        need(ko[0] == 0 and rising(ko), "X1", at, "key offsets")
        need(len(xp) == area + ko[-1] + (4 * t if q == 0 else 0), "X1", at, "X payload length")
        keys: list[tuple[bytes, bytes, int, int]] = []
        for i in range(k):
            a, b = area + ko[i], area + ko[i + 1]
            name, pp = read_name(xp, a, b, at)
            value, pp = read_name(xp, pp, b, at)
            need(pp + 16 == b, "X1", at, "key does not take its range")
            start, cnt = u("QQ", xp, pp)
            keys.append((name, value, start, cnt))
        size = self.chunks[at]
        if q == 0:
            post = list(u(f"{t}I", xp, area + ko[-1]))
        else:
            post = []
            for j, po in enumerate(p_offs):
                n = P_CHUNK if j + 1 < q else t - P_CHUNK * (q - 1)
                post += u(f"{n}I", self.chunk(po, "P", True, exact=4 * n), 0)
                size += self.chunks[po]
        need(sp.index_bytes == size, "S3", self.f["d"], f"space {sp.stream}: index bytes")
        start_at = 0
        got: dict[tuple[bytes, bytes], list[int]] = {}
        for i, (name, value, start, cnt) in enumerate(keys):
            if i:
                need((name, value) > keys[i - 1][:2], "X2", at, "keys not sorted")
            need(start == start_at and cnt >= 1, "X2", at, "starts not contiguous")
            start_at += cnt
            need(start_at <= t, "X2", at, "counts past t")
            ps = post[start : start + cnt]
            need(rising(ps), "X2", at, "postings order")
            need(ps[-1] < sp.count, "X2", at, "posting past the space")
            got[(name, value)] = ps
        need(start_at == t, "X2", at, "counts do not sum to t")
        need(got == want, "X4", at, f"space {sp.stream}: keys and postings vs the records")

    def tag_index(
        self, out: Decoded, space_of: Callable[[int], int], type_id: dict[str, int]
    ) -> None:
        f = self.f
        h = f["h"]
        ev_n = f["event_count"]
        region, foot = f["region"], self.foot_at
        hp = self.chunk(h, "H", False)
        need(len(hp) >= 24, "H1", h, "short H")
        g, t, c, q = u("QQII", hp, 0)
        need(1 <= c <= g <= t <= ev_n * 256, "H1", h, f"H counts g={g} t={t} c={c}")
        need(q == -(-t // Q_CHUNK), "H1", h, f"q={q} for t={t}")
        need((c + q) * 17 <= foot - region, "L2", h, "H chunk counts past the index region")
        need(24 + 8 * q + 19 * c <= len(hp), "L2", h, "H counts past the payload")
        q_offs = u(f"{q}Q", hp, 24)
        out.g_chunks, out.q_chunks = c, q
        p = 24 + 8 * q
        ents: list[tuple[int, int, bytes]] = []
        for _ in range(c):
            need(p + 16 <= len(hp), "H1", h, "H entry past the payload")
            g_off, num = u("QQ", hp, p)
            name, p = read_name(hp, p + 16, len(hp), h)
            ents.append((g_off, num, name))
        need(p == len(hp), "H1", h, "H payload longer than its entries")
        for j, (_o, num, name) in enumerate(ents):
            if j == 0:
                need(num == 0, "H1", h, "first number")
            else:
                need(num > ents[j - 1][1] and name > ents[j - 1][2], "H1", h, "entry order")
            need(num < g, "H1", h, "tag number past g")
        tags: list[tuple[bytes, int, int]] = []
        for j, (g_off, num, name) in enumerate(ents):
            want = (ents[j + 1][1] if j + 1 < c else g) - num
            gp = self.chunk(g_off, "G", False, bound=MIB)
            need(len(gp) >= 4, "G3", g_off, "short G")
            (m,) = u("I", gp, 0)
            need(m == want, "L2", g_off, f"G chunk holds {m} tags, H says {want}")
            need(8 + 23 * m <= len(gp), "L2", g_off, "G count past the payload")
            eo = u(f"{m + 1}I", gp, 4)
            base = 8 + 4 * m
            need(eo[0] == 0 and rising(eo), "G3", g_off, "entry offsets")
            need(len(gp) == base + eo[-1], "G3", g_off, "G payload length")
            for i in range(m):
                a, b = base + eo[i], base + eo[i + 1]
                tag, pp = read_name(gp, a, b, g_off)
                need(pp + 16 == b, "G3", g_off, "entry does not take its range")
                start, cnt = u("QQ", gp, pp)
                if i == 0:
                    need(tag == name, "H1", h, "H entry name differs from its chunk's")
                if tags:
                    need(tag > tags[-1][0], "G3", g_off, "tags not sorted by bytes")
                need(start == (tags[-1][1] + tags[-1][2] if tags else 0), "G3", g_off, "starts")
                need(1 <= cnt <= ev_n, "G3", g_off, "count")
                tags.append((tag, start, cnt))
        need(tags[-1][1] + tags[-1][2] == t, "G3", h, "tag counts do not sum to t")
        post: list[Posting] = []
        for j, qo in enumerate(q_offs):
            n = Q_CHUNK if j + 1 < q else t - Q_CHUNK * (q - 1)
            qp = self.chunk(qo, "Q", False, exact=20 * n)
            cols = (
                u(f"{n}Q", qp, 0),
                u(f"{n}I", qp, 8 * n),
                u(f"{n}I", qp, 12 * n),
                u(f"{n}I", qp, 16 * n),
            )
            post += [Posting(*x) for x in zip(*cols, strict=True)]
        implied = sum(len(e.tags) for e in out.events)
        need(t == implied, "H2", h, f"t={t}, the records hold {implied} (tag, event) pairs")
        for tag, start, cnt in tags:
            ps = post[start : start + cnt]
            at = q_offs[start // Q_CHUNK]
            need(rising([x.seq for x in ps]), "G3", at, "seqs within a tag do not increase")
            for x in ps:
                need(x.position < ev_n, "Q2", at, "posting position past event_count")
                e = out.events[x.position]
                need(space_of(x.position) == x.space, "Q2", at, "posting's space number")
                need(e.seq == x.seq, "Q2", at, "posting's seq is not its event's")
                need(
                    x.type_id < len(out.types) and out.types[x.type_id] == e.type,
                    "Q2",
                    at,
                    "posting's type id",
                )
                need(tag.decode() in e.tags, "Q2", at, "event does not carry the posting's tag")
            out.tags[tag.decode()] = [x.seq for x in ps]
            out.postings[tag.decode()] = ps


class _Duplicate(Exception):
    pass


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map, refusing a key that occurs twice (msgpack types kept apart:
    1, 1.0 and True are different keys)."""
    seen: set[Any] = set()
    for k, _ in pairs:
        fp = (type(k), k)
        try:
            if fp in seen:
                raise _Duplicate
            seen.add(fp)
        except TypeError:  # an unhashable key: compare the slow way
            if sum(1 for k2, _ in pairs if type(k2) is type(k) and k2 == k) > 1:
                raise _Duplicate from None
    try:
        return dict(pairs)
    except TypeError:
        return {i: kv for i, kv in enumerate(pairs)}


def decode(data: bytes) -> Decoded:
    """The full check of ``data``; its events and tag index."""
    return Decoder(data).decode()


def open_check(data: bytes) -> None:
    """The checks marked (open) only."""
    Decoder(data).open()
