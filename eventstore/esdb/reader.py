"""ESDBReader: read one ESDB file through mmap, without LevelDB.

Nothing is trusted: every offset, length and count is checked against the
file and the chunk it came from before it is used, every chunk's crc32 is
checked before it is decompressed, and decompression never produces more
than the chunk header declares (itself capped at MAX_RAW). Anything wrong
raises :class:`CorruptFile` naming the file and the offset.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from itertools import count, islice, pairwise
from types import TracebackType
from typing import Any, NamedTuple

import msgpack
from ulid import ULID

from ..errors import CorruptFile, InvalidArgument, InvalidName, StoreClosed
from ..events import Event, Query
from ..ids import to_ulid_bytes
from ..records import MAX_NAME_BYTES, MAX_RECORD_BYTES, check_limit, inert_ext, name_bytes
from .format import (
    CHUNK,
    CHUNK_SIZE,
    CODEC_NAMES,
    CODEC_NONE,
    FLAG_INDEX_TYPES,
    FOOTER,
    FOOTER_CRC_SPAN,
    FOOTER_MAGIC,
    FOOTER_SIZE,
    FORMAT_VERSION,
    HEADER,
    HEADER_MAGIC,
    HEADER_SIZE,
    KIND_BLOCK,
    KIND_BLOCK_INDEX,
    KIND_NAMES,
    KIND_POSTINGS,
    KIND_SECONDARY,
    KIND_SPACE_DIR,
    KIND_SPACES,
    KIND_TYPES,
    KIND_ULID_DIR,
    KIND_ULIDS,
    KNOWN_FLAGS,
    MAX_COUNT,
    MAX_INDEX_CHUNK,
    MAX_RAW,
    MIN_CHUNK,
    NO_ID,
    POSTINGS_PER_CHUNK,
    SECONDARY_HEADER,
    SECONDARY_TAIL,
    SPACE_DIR_ENTRY,
    SPACE_ENTRY,
    U16,
    U32,
    ULID_DIR_ENTRY,
    FileMeta,
    SpaceInfo,
    created_datetime,
    decompress,
    name_problem,
)

_unpackb = msgpack.unpackb
_TUPLE_NEW = tuple.__new__
_ULID_NEW = ULID.__new__
_ARRAY32 = struct.Struct(">BI")

DEFAULT_CACHE_BYTES = 32 << 20
_BATCH = 32  # records per msgpack call when scanning
_BIG_ENDIAN = array("I", [1]).tobytes() != b"\x01\x00\x00\x00"

# Smallest encodings, for bounding a count by the bytes that must hold it
# before anything is built: a name is a u16 length and at least one byte.
_MIN_NAME = 3
_MIN_SPACE_DIR_ENTRY = SPACE_DIR_ENTRY.size + _MIN_NAME
_MIN_SPACE_ENTRY = 4 + _MIN_NAME + SPACE_ENTRY.size  # with its u32 entry offset
_MIN_KEY = 4 + 2 * _MIN_NAME + SECONDARY_TAIL.size  # with its u32 key offset
_MAX_ULID_CHUNK_ENTRIES = (MAX_INDEX_CHUNK - 4) // 28


def _u32_array(data: bytes) -> array[int]:
    """Little-endian u32s as a compact array (4 bytes each, not an int object)."""
    out = array("I")
    out.frombytes(data)
    if _BIG_ENDIAN:  # pragma: no cover - exotic platforms
        out.byteswap()
    return out


class Block(NamedTuple):
    """A decoded data block: its payload, entry count, record offsets, records base."""

    payload: bytes
    n: int
    offs: array[int]
    rbase: int


class UlidChunk(NamedTuple):
    ids: list[bytes]
    pos: tuple[int, ...]
    space: tuple[int, ...]
    type: tuple[int, ...]


class BlockCache:
    """A thread-safe LRU of decoded chunks, bounded by bytes, that many readers
    share: a store gives one to all its archive files, so the memory its
    cold tier keeps does not grow with the number of files (issue 19).
    Keys are (reader token, kind, index)."""

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 0:
            raise InvalidArgument(f"cache capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self.size = 0
        self._d: OrderedDict[tuple[int, int, int], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: tuple[int, int, int]) -> Any:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            self._d.move_to_end(key)
            return hit[0]

    def put(self, key: tuple[int, int, int], value: Any, size: int) -> None:
        if size > self.capacity:
            return
        with self._lock:
            if key in self._d:
                return
            self._d[key] = (value, size)
            self.size += size
            while self.size > self.capacity:
                _k, (_v, s) = self._d.popitem(last=False)
                self.size -= s

    def forget(self, token: int) -> None:
        """Drop one reader's entries (it closed, or moved to another cache)."""
        with self._lock:
            for key in [k for k in self._d if k[0] == token]:
                self.size -= self._d.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.size = 0


# Cache kinds of chunks kept raw for point lookups (beside the decoded kinds).
_RAW_ULIDS = -KIND_ULIDS
_RAW_SPACES = -KIND_SPACES

_TOKENS = count(1)  # a token per reader: its keys in a shared cache


class _Cache:
    """One reader's part of a :class:`BlockCache` (its own, or a shared one)."""

    __slots__ = ("shared", "token")

    def __init__(self, shared: BlockCache) -> None:
        self.shared = shared
        self.token = next(_TOKENS)

    def get(self, key: tuple[int, int]) -> Any:
        return self.shared.get((self.token, key[0], key[1]))

    def put(self, key: tuple[int, int], value: Any, size: int) -> None:
        self.shared.put((self.token, key[0], key[1]), value, size)

    def clear(self) -> None:
        self.shared.forget(self.token)


class ESDBReader:
    """One ESDB file, read-only, safe to share between threads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        cache: BlockCache | None = None,
    ) -> None:
        """``cache``: a :class:`BlockCache` shared with other readers (then
        ``cache_bytes`` is ignored); by default the reader has its own."""
        self.path = os.fspath(path)
        self._mm: mmap.mmap | None = None
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_SIZE + FOOTER_SIZE:
                raise CorruptFile(self.path, 0, f"file of {size} bytes is too short for ESDB")
            try:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise CorruptFile(self.path, 0, f"cannot map the file: {exc}") from None
        self.size = size
        self._end = size - FOOTER_SIZE  # chunks live in [HEADER_SIZE, _end)
        self._cache = _Cache(BlockCache(cache_bytes) if cache is None else cache)
        self._lock = threading.Lock()
        self._bpos: list[int] | None = None
        self._boff: list[int] | None = None
        self._space_dir: tuple[list[bytes], list[int], list[int]] | None = None
        self._ulid_dir: tuple[list[bytes], list[int], list[int]] | None = None
        self._types: list[str] | None = None
        try:
            self.meta = self._read_footer()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------

    def share_cache(self, cache: BlockCache) -> None:
        """Keep decoded chunks in ``cache`` from now on (a store's budget for
        all its files), leaving the cache used so far."""
        old, self._cache = self._cache, _Cache(cache)
        old.clear()

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            mm.close()
        if hasattr(self, "_cache"):
            self._cache.clear()

    @property
    def closed(self) -> bool:
        return self._mm is None

    def __enter__(self) -> ESDBReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ESDBReader {self.path!r} {'closed' if self.closed else 'open'}>"

    def _map(self) -> mmap.mmap:
        mm = self._mm
        if mm is None:
            raise StoreClosed(f"ESDB reader of {self.path!r} is closed")
        return mm

    def _corrupt(self, offset: int, problem: str) -> CorruptFile:
        return CorruptFile(self.path, offset, problem)

    # -- header and footer ----------------------------------------------------

    def _read_footer(self) -> FileMeta:
        mm = self._map()
        size = self.size
        fstart = size - FOOTER_SIZE
        if mm[size - 8 :] != FOOTER_MAGIC:
            raise self._corrupt(size - 8, "bad footer magic (not an ESDB file, or truncated)")
        version, footer_size = struct.unpack_from("<HH", mm, size - 16)
        if version > FORMAT_VERSION:
            raise self._corrupt(
                size - 16,
                f"format version {version} is newer than this reader supports "
                f"({FORMAT_VERSION}); upgrade eventstore to read it",
            )
        if version < 1 or footer_size != FOOTER_SIZE:
            raise self._corrupt(size - 16, f"bad footer (version {version}, size {footer_size})")
        (crc,) = U32.unpack_from(mm, size - 12)
        if zlib.crc32(mm[fstart : fstart + FOOTER_CRC_SPAN]) != crc:
            raise self._corrupt(fstart, "footer checksum mismatch")
        magic, hversion, hres, hcrc = HEADER.unpack_from(mm, 0)
        if magic != HEADER_MAGIC:
            raise self._corrupt(0, "bad header magic (not an ESDB file)")
        if zlib.crc32(mm[0:12]) != hcrc:
            raise self._corrupt(0, "header checksum mismatch")
        if hversion != version:
            raise self._corrupt(8, f"header version {hversion} disagrees with footer {version}")
        if hres != 0:
            raise self._corrupt(10, "header: reserved bytes are not zero")
        (
            k_off,
            d_off,
            u_off,
            t_off,
            events,
            spaces,
            blocks,
            first_seq,
            last_seq,
            first_id,
            last_id,
            created_us,
            record_bytes,
            index_region,
            codec,
            flags,
            reserved16,
            reserved32,
            _v,
            _fs,
            _crc,
            _magic,
        ) = FOOTER.unpack_from(mm, fstart)
        if not HEADER_SIZE <= index_region <= self._end:
            raise self._corrupt(fstart + 120, f"index region offset {index_region} out of range")
        for name, off, at in (
            ("block index", k_off, 0),
            ("space directory", d_off, 8),
            ("ULID directory", u_off, 16),
            ("type table", t_off, 24),
        ):
            if not index_region <= off <= self._end - CHUNK_SIZE:
                raise self._corrupt(fstart + at, f"{name} offset {off} out of range")
        if events > MAX_COUNT or spaces > events or blocks > events:
            raise self._corrupt(
                fstart + 32, f"impossible counts: {events} events, {spaces} spaces, {blocks} blocks"
            )
        if (events == 0) != (spaces == 0) or (events == 0) != (blocks == 0):
            raise self._corrupt(fstart + 32, "counts disagree about whether the file is empty")
        if events and (first_id > last_id or first_seq > last_seq):
            raise self._corrupt(fstart + 56, "first id/seq above last id/seq")
        if codec not in CODEC_NAMES:
            raise self._corrupt(fstart + 128, f"unknown codec {codec}")
        if flags & ~KNOWN_FLAGS:
            raise self._corrupt(fstart + 129, f"unknown flags {flags:#x}")
        if reserved16 or reserved32:
            raise self._corrupt(fstart + 130, "footer: reserved bytes are not zero")
        if not events and (
            first_seq or last_seq or first_id != NO_ID or last_id != NO_ID or record_bytes
        ):
            raise self._corrupt(fstart + 56, "an empty file's ranges and byte count are not zero")
        # Each block is a chunk of its own in the data region: bound the
        # block count by the bytes there before the block index is decoded.
        if blocks * MIN_CHUNK > index_region - HEADER_SIZE:
            raise self._corrupt(
                fstart + 48, f"{blocks} blocks cannot fit in a data region of {index_region} bytes"
            )
        try:
            created = created_datetime(created_us)
        except (ValueError, OverflowError, OSError):
            raise self._corrupt(fstart + 104, f"creation time {created_us} out of range") from None
        self._k_off, self._d_off, self._u_off, self._t_off = k_off, d_off, u_off, t_off
        self._index_region = index_region
        self._events = events
        self._spaces = spaces
        self._blocks = blocks
        self._first_id = first_id
        self._last_id = last_id
        return FileMeta(
            path=self.path,
            format_version=version,
            codec=CODEC_NAMES[codec],
            created=created,
            event_count=events,
            space_count=spaces,
            block_count=blocks,
            first_id=first_id if events else None,
            last_id=last_id if events else None,
            first_seq=first_seq,
            last_seq=last_seq,
            index_types=bool(flags & FLAG_INDEX_TYPES),
            file_size=size,
            data_bytes=index_region - HEADER_SIZE,
            index_bytes=fstart - index_region,
            record_bytes=record_bytes,
        )

    # -- chunks ---------------------------------------------------------------

    def _chunk(self, offset: int, kind: int, most: int = MAX_RAW) -> bytes:
        """The raw payload of the chunk at ``offset``, checked and decompressed;
        ``most`` is the largest payload the caller's counts allow, refused
        from the chunk header before anything is read or inflated."""
        return self._chunk_ex(offset, kind, most)[0]

    def _chunk_ex(self, offset: int, kind: int, most: int = MAX_RAW) -> tuple[bytes, int]:
        """(raw payload, stored size including the header) of one chunk."""
        mm = self._map()
        what = KIND_NAMES.get(kind, "chunk")
        if not HEADER_SIZE <= offset <= self._end - CHUNK_SIZE:
            raise self._corrupt(offset, f"{what} offset out of range")
        k, codec, res, stored_len, raw_len, crc = CHUNK.unpack_from(mm, offset)
        if k != kind:
            raise self._corrupt(offset, f"expected a {what}, found chunk kind {k}")
        if res != 0:
            raise self._corrupt(offset + 2, f"{what}: reserved bytes are not zero")
        limit = MAX_INDEX_CHUNK if kind in (KIND_SPACES, KIND_ULIDS) else MAX_RAW
        if raw_len > limit:
            raise self._corrupt(offset + 8, f"{what} claims {raw_len} raw bytes (limit {limit})")
        if raw_len > most:
            raise self._corrupt(
                offset + 8, f"{what} of {raw_len} bytes is larger than the file's counts allow"
            )
        start = offset + CHUNK_SIZE
        stop = start + stored_len
        if stop > self._end:
            raise self._corrupt(offset + 4, f"{what} of {stored_len} bytes runs past the end")
        if codec not in CODEC_NAMES:
            raise self._corrupt(offset + 1, f"{what}: unknown codec {codec}")
        if codec == CODEC_NONE and stored_len != raw_len:
            raise self._corrupt(offset + 4, f"{what}: stored and raw lengths differ")
        if codec != CODEC_NONE and stored_len >= raw_len:
            raise self._corrupt(offset + 4, f"{what}: compressed, yet not smaller than its payload")
        stored = mm[start:stop]
        if zlib.crc32(stored, zlib.crc32(mm[offset : offset + 12])) != crc:
            raise self._corrupt(offset, f"{what} checksum mismatch")
        return decompress(codec, stored, raw_len, self.path, offset), CHUNK_SIZE + stored_len

    # -- block index and blocks ----------------------------------------------

    def _block_index(self) -> tuple[list[int], list[int]]:
        bpos, boff = self._bpos, self._boff
        if bpos is not None and boff is not None:
            return bpos, boff
        raw = self._chunk(self._k_off, KIND_BLOCK_INDEX, 16 * self._blocks)
        n = self._blocks
        if len(raw) != 16 * n:
            raise self._corrupt(self._k_off, f"block index holds {len(raw)} bytes for {n} blocks")
        flat = struct.unpack(f"<{2 * n}Q", raw)
        boff = list(flat[0::2])
        bpos = list(flat[1::2])
        prev_pos, prev_off = -1, HEADER_SIZE - 1
        for off, pos in zip(boff, bpos, strict=True):
            if pos <= prev_pos or off <= prev_off or off >= self._index_region:
                raise self._corrupt(self._k_off, "block index entries out of order or range")
            prev_pos, prev_off = pos, off
        if n and (bpos[0] != 0 or bpos[-1] >= self._events):
            raise self._corrupt(self._k_off, "block index does not cover the file's events")
        bpos.append(self._events)  # sentinel: block i holds [bpos[i], bpos[i+1])
        self._bpos, self._boff = bpos, boff
        return bpos, boff

    def _block(self, bi: int) -> Block:
        key = (KIND_BLOCK, bi)
        blk: Block | None = self._cache.get(key)
        if blk is not None:
            return blk
        bpos, boff = self._block_index()
        offset = boff[bi]
        payload = self._chunk(offset, KIND_BLOCK)
        size = len(payload)
        if size < 8:
            raise self._corrupt(offset, "data block too short")
        (n,) = U32.unpack_from(payload, 0)
        if n != bpos[bi + 1] - bpos[bi]:
            raise self._corrupt(
                offset, f"data block holds {n} events, block index says {bpos[bi + 1] - bpos[bi]}"
            )
        rbase = 8 + 20 * n
        if rbase > size:
            raise self._corrupt(offset, f"data block of {size} bytes cannot hold {n} entries")
        offs = _u32_array(payload[4 + 16 * n : rbase])
        if offs[0] != 0 or rbase + offs[n] != size:
            raise self._corrupt(offset, "data block record offsets do not match its size")
        if size - rbase > MAX_RECORD_BYTES and any(
            b - a > MAX_RECORD_BYTES for a, b in pairwise(offs)
        ):
            raise self._corrupt(offset, f"record above the limit of {MAX_RECORD_BYTES} bytes")
        blk = Block(payload, n, offs, rbase)
        self._cache.put(key, blk, size)
        return blk

    def _record_at(self, pos: int) -> tuple[bytes, bytes]:
        """(id16, record bytes) of the event at file position ``pos``."""
        bpos, _ = self._block_index()
        bi = bisect_right(bpos, pos) - 1
        blk = self._block(bi)
        k = pos - bpos[bi]
        a, b = blk.offs[k], blk.offs[k + 1]
        if a >= b:
            raise self._corrupt(self._boff[bi] if self._boff else 0, "empty or inverted record")
        p = blk.payload
        return p[4 + 16 * k : 20 + 16 * k], p[blk.rbase + a : blk.rbase + b]

    # -- spaces ---------------------------------------------------------------

    def _dir_of_spaces(self) -> tuple[list[bytes], list[int], list[int]]:
        d = self._space_dir
        if d is not None:
            return d
        most = min(self._spaces, (self._end - self._index_region) // MIN_CHUNK)
        raw = self._chunk(self._d_off, KIND_SPACE_DIR, 4 + most * (18 + MAX_NAME_BYTES))
        if len(raw) < 4:
            raise self._corrupt(self._d_off, "space directory too short")
        (n,) = U32.unpack_from(raw, 0)
        if (
            4 + n * _MIN_SPACE_DIR_ENTRY > len(raw)
            or n > self._spaces
            or n * MIN_CHUNK > self._end - self._index_region
        ):
            raise self._corrupt(self._d_off, f"space directory cannot hold {n} entries")
        names: list[bytes] = []
        offsets: list[int] = []
        first_nos: list[int] = []
        p = 4
        try:
            for _ in range(n):
                off, first_no = SPACE_DIR_ENTRY.unpack_from(raw, p)
                (ln,) = U16.unpack_from(raw, p + 16)
                name = raw[p + 18 : p + 18 + ln]
                if len(name) != ln:
                    raise struct.error("short name")
                p += 18 + ln
                if (names and name <= names[-1]) or (first_nos and first_no <= first_nos[-1]):
                    raise self._corrupt(self._d_off, "space directory out of order")
                if first_no >= self._spaces or not self._index_region <= off < self._end:
                    raise self._corrupt(self._d_off, "space directory entry out of range")
                names.append(name)
                offsets.append(off)
                first_nos.append(first_no)
        except struct.error:
            raise self._corrupt(self._d_off, f"space directory truncated at {len(names)}") from None
        if p != len(raw) or (n == 0) != (self._spaces == 0) or (n and first_nos[0] != 0):
            raise self._corrupt(self._d_off, "space directory does not match the footer")
        first_nos.append(self._spaces)
        d = self._space_dir = (names, offsets, first_nos)
        return d

    def _space_chunk(self, ci: int, keep: bool = True) -> tuple[list[bytes], list[SpaceInfo]]:
        """The names and entries of space chunk ``ci``; ``keep=False`` for a
        pass over every space that must not fill the cache."""
        key = (KIND_SPACES, ci)
        hit: tuple[list[bytes], list[SpaceInfo]] | None = self._cache.get(key)
        if hit is not None:
            return hit
        dnames, doffs, dnos = self._dir_of_spaces()
        offset = doffs[ci]
        raw = self._chunk(offset, KIND_SPACES)
        first_no = dnos[ci]
        expect = dnos[ci + 1] - first_no
        if 8 + expect * _MIN_SPACE_ENTRY > len(raw):
            raise self._corrupt(offset, f"space chunk of {len(raw)} bytes cannot hold {expect}")
        try:
            (n,) = U32.unpack_from(raw, 0)
            if n != expect:
                raise self._corrupt(offset, f"space chunk holds {n} spaces, not {expect}")
            offs = struct.unpack_from(f"<{n + 1}I", raw, 4)
            base = 8 + 4 * n
            names: list[bytes] = []
            infos: list[SpaceInfo] = []
            for i in range(n):
                info = self._raw_entry(ci, raw, n, i)  # each entry checked as a lookup checks it
                name = info.stream.encode()
                if names and name <= names[-1]:
                    raise self._corrupt(offset, "space chunk out of order")
                names.append(name)
                infos.append(info)
        except struct.error:
            raise self._corrupt(offset, "space chunk truncated") from None
        if base + offs[n] != len(raw) or (names and names[0] != dnames[ci]):
            raise self._corrupt(offset, "space chunk does not match the directory")
        hit = (names, infos)
        if keep:
            # A decoded entry costs ~380 bytes of Python objects beyond its raw bytes.
            self._cache.put(key, hit, len(raw) + 384 * n)
        return hit

    def spaces(self, *, cache: bool = True) -> Iterator[SpaceInfo]:
        """Every space of the file, in stream order. ``cache=False`` leaves the
        decoded chunk cache alone, for one pass over a file of many streams."""
        names, _, _ = self._dir_of_spaces()
        for ci in range(len(names)):
            yield from self._space_chunk(ci, cache)[1]

    def space(self, stream: str) -> SpaceInfo | None:
        """The space of ``stream``, or None; reads one space chunk at most."""
        return self._space_b(name_bytes(stream, "stream name"))

    def _space_b(self, stream_b: bytes) -> SpaceInfo | None:
        dnames, _, _ = self._dir_of_spaces()
        ci = bisect_right(dnames, stream_b) - 1
        if ci < 0:
            return None
        decoded: tuple[list[bytes], list[SpaceInfo]] | None = self._cache.get((KIND_SPACES, ci))
        if decoded is not None:
            names, infos = decoded
            i = bisect_left(names, stream_b)
            if i < len(names) and names[i] == stream_b:
                return infos[i]
            return None
        # Binary search over the raw chunk's names: one entry decoded (issue 19).
        raw, n = self._spaces_raw(ci)
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._raw_name(ci, raw, n, mid) < stream_b:
                lo = mid + 1
            else:
                hi = mid
        if lo < n and self._raw_name(ci, raw, n, lo) == stream_b:
            return self._raw_entry(ci, raw, n, lo)
        return None

    def _space_rank(self, stream_b: bytes) -> int:
        """How many spaces have a stream name below ``stream_b``."""
        dnames, _, dnos = self._dir_of_spaces()
        ci = bisect_right(dnames, stream_b) - 1
        if ci < 0:
            return 0
        names, _ = self._space_chunk(ci)
        return dnos[ci] + bisect_left(names, stream_b)

    def _space_entry(self, no: int) -> SpaceInfo:
        """Space number ``no`` for a point lookup: its chunk is cached raw
        and only this entry is decoded and checked (issue 19). A chunk that
        is cached decoded already serves it."""
        _, _, dnos = self._dir_of_spaces()
        if not 0 <= no < self._spaces:
            raise self._corrupt(self._u_off, f"space number {no} out of range")
        ci = bisect_right(dnos, no) - 1
        decoded: tuple[list[bytes], list[SpaceInfo]] | None = self._cache.get((KIND_SPACES, ci))
        if decoded is not None:
            return decoded[1][no - dnos[ci]]
        raw, n = self._spaces_raw(ci)
        return self._raw_entry(ci, raw, n, no - dnos[ci])

    def _spaces_raw(self, ci: int) -> tuple[bytes, int]:
        """Space chunk ``ci`` as its payload and entry count, cached raw."""
        key = (_RAW_SPACES, ci)
        raw: bytes | None = self._cache.get(key)
        _, doffs, dnos = self._dir_of_spaces()
        n = dnos[ci + 1] - dnos[ci]
        if raw is None:
            offset = doffs[ci]
            raw = self._chunk(offset, KIND_SPACES)
            if 8 + n * _MIN_SPACE_ENTRY > len(raw) or U32.unpack_from(raw, 0)[0] != n:
                raise self._corrupt(offset, f"space chunk of {len(raw)} bytes cannot hold {n}")
            # What the binary search relies on, checked once per load: the
            # names in order from the directory's, the entries tiling the chunk.
            names = [self._raw_name(ci, raw, n, i) for i in range(n)]
            if (
                names[0] != self._dir_of_spaces()[0][ci]
                or any(a >= b for a, b in pairwise(names))
                or 8 + 4 * n + U32.unpack_from(raw, 4 + 4 * n)[0] != len(raw)
            ):
                raise self._corrupt(offset, "space chunk out of order or not as the directory says")
            self._cache.put(key, raw, len(raw))
        return raw, n

    def _raw_name(self, ci: int, raw: bytes, n: int, i: int) -> bytes:
        """The stream name of entry ``i`` of a raw space chunk."""
        try:
            (a,) = U32.unpack_from(raw, 4 + 4 * i)
            p = 8 + 4 * n + a
            (ln,) = U16.unpack_from(raw, p)
        except struct.error:
            raise self._corrupt(self._dir_of_spaces()[1][ci], "space chunk truncated") from None
        return raw[p + 2 : p + 2 + ln]

    def _raw_entry(self, ci: int, raw: bytes, n: int, i: int) -> SpaceInfo:
        """Entry ``i`` of a raw space chunk, decoded and checked alone."""
        _, doffs, dnos = self._dir_of_spaces()
        offset = doffs[ci]
        base = 8 + 4 * n
        try:
            a, b = struct.unpack_from("<II", raw, 4 + 4 * i)
            p = base + a
            (ln,) = U16.unpack_from(raw, p)
            name = raw[p + 2 : p + 2 + ln]
            fields = SPACE_ENTRY.unpack_from(raw, p + 2 + ln)
        except struct.error:
            raise self._corrupt(offset, "space chunk truncated") from None
        if len(name) != ln or p + 2 + ln + SPACE_ENTRY.size != base + b:
            raise self._corrupt(offset, f"space entry {i} has the wrong length")
        bad = name_problem(name)
        if bad is not None:
            raise self._corrupt(offset, f"space entry {i}: stream {bad}")
        first_pos, count, first_version, fid, lid, ioff, rbytes, ibytes = fields
        if (
            count < 1
            or first_pos + count > self._events
            or first_version + count > 1 << 63
            or fid > lid
            or (ioff and not HEADER_SIZE <= ioff < self._index_region)
        ):
            raise self._corrupt(offset, f"space entry {i} out of range")
        return SpaceInfo(
            name.decode("utf-8"),
            count,
            first_version,
            first_version + count - 1,
            fid,
            lid,
            dnos[ci] + i,
            first_pos,
            ioff,
            rbytes,
            ibytes,
        )

    def _space_no(self, no: int) -> SpaceInfo:
        _, _, dnos = self._dir_of_spaces()
        if not 0 <= no < self._spaces:
            raise self._corrupt(self._u_off, f"space number {no} out of range")
        ci = bisect_right(dnos, no) - 1
        return self._space_chunk(ci)[1][no - dnos[ci]]

    # -- reading a stream -----------------------------------------------------

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """A stream's events of this file from ``from_version`` on (down, backwards).

        ``None`` starts at the first (or, backwards, the last) event; a
        version beyond the file's part of the stream in the reading
        direction gives nothing.
        """
        if from_version is not None and (type(from_version) is not int or from_version < 0):
            raise InvalidArgument(f"from_version must be a non-negative int, got {from_version!r}")
        check_limit(limit)
        sp = self.space(stream)
        if sp is None or limit == 0:
            return iter(())
        fv, lv = sp.first_version, sp.last_version
        if from_version is None:
            start = lv if backwards else fv
        elif backwards:
            if from_version < fv:
                return iter(())
            start = min(from_version, lv)
        else:
            if from_version > lv:
                return iter(())
            start = max(from_version, fv)
        it = self._scan(sp, start - fv, backwards)
        return it if limit is None else islice(it, limit)

    def _scan(self, sp: SpaceInfo, rel: int, backwards: bool) -> Iterator[Event]:
        """Events of one space from relative position ``rel``, block by block."""
        bpos, _ = self._block_index()
        stream = sp.stream
        lo = sp.first_pos
        hi = lo + sp.count
        p = lo + rel
        version = sp.first_version + rel
        bi = bisect_right(bpos, p) - 1
        step = -1 if backwards else 1
        new, tnew = _ULID_NEW, _TUPLE_NEW
        io_step = 16 * step
        while lo <= p < hi:
            blk = self._block(bi)
            b0 = bpos[bi]
            payload = blk.payload
            # Decode a few dozen records per msgpack call: one call per record
            # costs more, and a whole block at once keeps so many young
            # objects alive that the garbage collector's passes get dearer.
            if backwards:
                a = max(lo, b0) - b0
                b = p - b0 + 1
                batches = [(max(a, e - _BATCH), e) for e in range(b, a, -_BATCH)]
            else:
                a = p - b0
                b = min(hi, bpos[bi + 1]) - b0
                batches = [(s, min(b, s + _BATCH)) for s in range(a, b, _BATCH)]
            for s, e in batches:
                recs = self._decode_range(blk, s, e, bi)
                if backwards:
                    recs.reverse()
                    io = 4 + 16 * (e - 1)
                else:
                    io = 4 + 16 * s
                try:
                    for rec in recs:
                        if len(rec) == 6:
                            ver, seq, type_, data, meta, indexes = rec
                            tags: tuple[str, ...] = ()
                        else:
                            ver, seq, type_, data, meta, indexes, tag_list = rec
                            tags = tuple(tag_list)
                        if ver != version:
                            raise self._corrupt(
                                self._boff[bi] if self._boff else 0,
                                f"stream {stream!r}: record holds version {ver}, "
                                f"expected {version}",
                            )
                        u = new(ULID)
                        u.bytes = payload[io : io + 16]
                        io += io_step
                        version += step
                        yield tnew(Event, (u, stream, ver, seq, type_, data, meta, indexes, tags))
                except CorruptFile:
                    raise
                except (ValueError, TypeError):
                    at = self._boff[bi] if self._boff else 0
                    raise self._corrupt(at, f"malformed record in stream {stream!r}") from None
            p += step * (b - a)
            bi += step

    def _decode_range(self, blk: Block, a: int, b: int, bi: int) -> list[Any]:
        """The decoded records of entries [a, b) of a block, with one msgpack call."""
        offs = blk.offs
        rb = blk.rbase
        head = _ARRAY32.pack(0xDD, b - a)
        try:
            recs = _unpackb(
                head + blk.payload[rb + offs[a] : rb + offs[b]],
                raw=False,
                strict_map_key=False,
                ext_hook=inert_ext,
            )
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            off = self._boff[bi] if self._boff else 0
            raise self._corrupt(off, f"undecodable event records: {exc}") from None
        if type(recs) is not list:  # pragma: no cover - the header makes it a list
            raise self._corrupt(0, "undecodable event records")
        return recs

    def _event(self, stream: str, id16: bytes, raw: bytes, version: int, at: int) -> Event:
        try:
            ver, seq, type_, data, meta, indexes, *rest = _unpackb(
                raw, raw=False, strict_map_key=False, ext_hook=inert_ext
            )
            if len(rest) > 1:
                raise ValueError("too many fields")
            tags = tuple(rest[0]) if rest else ()
        except Exception as exc:
            raise self._corrupt(at, f"undecodable record of event {id16.hex()}: {exc}") from None
        if ver != version:
            raise self._corrupt(at, f"record holds version {ver}, expected {version}")
        u = _ULID_NEW(ULID)
        u.bytes = id16
        ev: Event = _TUPLE_NEW(Event, (u, stream, ver, seq, type_, data, meta, indexes, tags))
        return ev

    # -- secondary indexes ----------------------------------------------------

    def read_index(
        self,
        stream: str,
        name: str,
        value: str,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The events of ``stream`` in this file filed under index ``name=value``."""
        stream_b = name_bytes(stream, "stream name")
        name_b = name_bytes(name, "index name")
        value_b = name_bytes(value, "index value")
        check_limit(limit)
        sp = self._space_b(stream_b)
        if sp is None or sp.index_offset == 0 or limit == 0:
            return iter(())
        rels = self._postings(sp, name_b, value_b, backwards)
        if rels is None:
            return iter(())
        it = self._events_at(sp, rels)
        return it if limit is None else islice(it, limit)

    def _postings(
        self, sp: SpaceInfo, name_b: bytes, value_b: bytes, backwards: bool
    ) -> Iterator[int] | None:
        """Relative positions under ``name=value`` in ``sp``, or None if no such key."""
        off = sp.index_offset
        raw = self._chunk(off, KIND_SECONDARY)
        nkeys, npch, total, kbase, kend = self._secondary_layout(sp, raw)
        u32 = U32.unpack_from
        lo, hi = 0, nkeys
        target = (name_b, value_b)
        found = None
        try:
            # Keys are found by binary search over their offsets, read one at a
            # time: nothing per key is built.
            while lo < hi:
                mid = (lo + hi) // 2
                q = kbase + u32(raw, kbase - 4 * (nkeys + 1) + 4 * mid)[0]
                (ln,) = U16.unpack_from(raw, q)
                kname = raw[q + 2 : q + 2 + ln]
                q += 2 + ln
                (lv,) = U16.unpack_from(raw, q)
                kvalue = raw[q + 2 : q + 2 + lv]
                key = (kname, kvalue)
                if key == target:
                    found = SECONDARY_TAIL.unpack_from(raw, q + 2 + lv)
                    break
                if key < target:
                    lo = mid + 1
                else:
                    hi = mid
        except struct.error:
            raise self._corrupt(off, "secondary index truncated") from None
        if found is None:
            return None
        start, count = found
        if start + count > total or count > sp.count or count == 0:
            raise self._corrupt(off, "secondary index entry out of range")
        if npch == 0:
            rels: tuple[int, ...] = struct.unpack_from(f"<{count}I", raw, kend + 4 * start)
            return iter(rels[::-1] if backwards else rels)
        pch = struct.unpack_from(f"<{npch}Q", raw, SECONDARY_HEADER.size)
        return self._chunked_postings(pch, total, start, count, backwards)

    def _secondary_layout(self, sp: SpaceInfo, raw: bytes) -> tuple[int, int, int, int, int]:
        """(key count, P chunk count, postings, start of the keys area, its end)
        of a space's ``X`` payload, every count bounded by the bytes and the
        space before it is used (FORMAT.md, Secondary indexes)."""
        off = sp.index_offset
        if len(raw) < SECONDARY_HEADER.size + 4:
            raise self._corrupt(off, "secondary index too short")
        nkeys, npch, total = SECONDARY_HEADER.unpack_from(raw, 0)
        inline = total <= POSTINGS_PER_CHUNK
        if (
            nkeys == 0
            or nkeys > total
            or total > nkeys * sp.count
            or npch != (0 if inline else -(-total // POSTINGS_PER_CHUNK))
            or npch * MIN_CHUNK > self._index_region - HEADER_SIZE
        ):
            raise self._corrupt(off, f"secondary index counts impossible: {nkeys}, {npch}, {total}")
        kbase = SECONDARY_HEADER.size + 8 * npch + 4 * (nkeys + 1)
        if kbase + nkeys * (_MIN_KEY - 4) + (4 * total if inline else 0) > len(raw):
            raise self._corrupt(off, f"secondary index too short for {nkeys} keys")
        (klen,) = U32.unpack_from(raw, kbase - 4)
        kend = kbase + klen
        if kend + (4 * total if inline else 0) != len(raw):
            raise self._corrupt(off, "secondary index does not end where its postings do")
        return nkeys, npch, total, kbase, kend

    def _chunked_postings(
        self, pch: tuple[int, ...], total: int, start: int, count: int, backwards: bool
    ) -> Iterator[int]:
        per = POSTINGS_PER_CHUNK
        first, last = start // per, (start + count - 1) // per
        order = range(last, first - 1, -1) if backwards else range(first, last + 1)
        for j in order:
            n = min(per, total - j * per)
            raw = self._chunk(pch[j], KIND_POSTINGS, 4 * n)
            if len(raw) != 4 * n:
                raise self._corrupt(pch[j], f"postings chunk of {len(raw)} bytes, not {4 * n}")
            a = max(start, j * per) - j * per
            b = min(start + count, (j + 1) * per) - j * per
            rels = struct.unpack_from(f"<{b - a}I", raw, 4 * a)
            yield from (rels[::-1] if backwards else rels)

    def _events_at(self, sp: SpaceInfo, rels: Iterable[int]) -> Iterator[Event]:
        """The events of ``sp`` at the given relative positions."""
        bpos, boff = self._block_index()
        stream, count, fp, fv = sp.stream, sp.count, sp.first_pos, sp.first_version
        bi = -1
        b0 = b1 = 0
        blk: Block | None = None
        prev = -1
        for rel in rels:
            if rel >= count or rel == prev:
                raise self._corrupt(sp.index_offset, f"posting {rel} out of range in {stream!r}")
            prev = rel
            pos = fp + rel
            if blk is None or not b0 <= pos < b1:
                bi = bisect_right(bpos, pos) - 1
                blk = self._block(bi)
                b0, b1 = bpos[bi], bpos[bi + 1]
            k = pos - b0
            rb = blk.rbase
            raw = blk.payload[rb + blk.offs[k] : rb + blk.offs[k + 1]]
            yield self._event(
                stream, blk.payload[4 + 16 * k : 20 + 16 * k], raw, fv + rel, boff[bi]
            )

    # -- the ULID index -------------------------------------------------------

    def _dir_of_ulids(self) -> tuple[list[bytes], list[int], list[int]]:
        d = self._ulid_dir
        if d is not None:
            return d
        most = min(self._events, (self._end - self._index_region) // MIN_CHUNK)
        raw = self._chunk(self._u_off, KIND_ULID_DIR, 4 + ULID_DIR_ENTRY.size * most)
        if len(raw) < 4:
            raise self._corrupt(self._u_off, "ULID directory too short")
        (n,) = U32.unpack_from(raw, 0)
        if (
            len(raw) != 4 + ULID_DIR_ENTRY.size * n
            or n > self._events
            or n * MIN_CHUNK > self._end - self._index_region
        ):
            raise self._corrupt(self._u_off, f"ULID directory size does not fit {n} entries")
        ids: list[bytes] = []
        offs: list[int] = []
        counts: list[int] = []
        total = 0
        for fid, off, cnt in ULID_DIR_ENTRY.iter_unpack(raw[4:]):
            if (
                (ids and fid <= ids[-1])
                or not 0 < cnt <= _MAX_ULID_CHUNK_ENTRIES
                or not self._index_region <= off < self._end
            ):
                raise self._corrupt(self._u_off, f"ULID directory entry {len(ids)} is invalid")
            ids.append(fid)
            offs.append(off)
            counts.append(cnt)
            total += cnt
        if total != self._events:
            raise self._corrupt(self._u_off, f"ULID index of {total} events, not {self._events}")
        d = self._ulid_dir = (ids, offs, counts)
        return d

    def _ulid_chunk(self, ci: int) -> UlidChunk:
        key = (KIND_ULIDS, ci)
        hit: UlidChunk | None = self._cache.get(key)
        if hit is not None:
            return hit
        dids, doffs, dcounts = self._dir_of_ulids()
        off = doffs[ci]
        n = dcounts[ci]
        raw = self._chunk(off, KIND_ULIDS, 4 + 28 * n)
        if len(raw) != 4 + 28 * n or U32.unpack_from(raw, 0)[0] != n:
            raise self._corrupt(off, f"ULID index chunk does not hold {n} entries")
        end = 4 + 16 * n
        ids = [raw[i : i + 16] for i in range(4, end, 16)]
        if ids[0] != dids[ci]:
            raise self._corrupt(off, "ULID index chunk does not start where the directory says")
        fmt = f"<{n}I"
        hit = UlidChunk(
            ids,
            struct.unpack_from(fmt, raw, end),
            struct.unpack_from(fmt, raw, end + 4 * n),
            struct.unpack_from(fmt, raw, end + 8 * n),
        )
        self._cache.put(key, hit, len(raw) + 49 * n)
        return hit

    def _ulid_raw(self, ci: int) -> tuple[bytes, int]:
        """ULID index chunk ``ci`` as its checked payload and entry count,
        for point lookups: cached as the one bytes object it is (28 bytes an
        entry), where the decoded chunk costs ~77 (issue 19)."""
        key = (_RAW_ULIDS, ci)
        hit: tuple[bytes, int] | None = self._cache.get(key)
        if hit is not None:
            return hit
        dids, doffs, dcounts = self._dir_of_ulids()
        off = doffs[ci]
        n = dcounts[ci]
        raw = self._chunk(off, KIND_ULIDS, 4 + 28 * n)
        if len(raw) != 4 + 28 * n or U32.unpack_from(raw, 0)[0] != n:
            raise self._corrupt(off, f"ULID index chunk does not hold {n} entries")
        if raw[4:20] != dids[ci]:
            raise self._corrupt(off, "ULID index chunk does not start where the directory says")
        hit = (raw, n)
        self._cache.put(key, hit, len(raw))
        return hit

    def _locate(self, id16: bytes) -> tuple[int, int, int] | None:
        """(position, space number, type id) of the event with this id, or None."""
        if not self._events or id16 < self._first_id or id16 > self._last_id:
            return None
        dids, _, _ = self._dir_of_ulids()
        ci = bisect_right(dids, id16) - 1
        if ci < 0:
            return None
        raw, n = self._ulid_raw(ci)
        # Binary search over the raw ids: nothing per entry is built.
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            if raw[4 + 16 * mid : 20 + 16 * mid] < id16:
                lo = mid + 1
            else:
                hi = mid
        if lo == n or raw[4 + 16 * lo : 20 + 16 * lo] != id16:
            return None
        end = 4 + 16 * n + 4 * lo
        return (
            U32.unpack_from(raw, end)[0],
            U32.unpack_from(raw, end + 4 * n)[0],
            U32.unpack_from(raw, end + 8 * n)[0],
        )

    def get(self, event_id: ULID | str | bytes) -> Event | None:
        """The event with this ULID, or None if this file does not hold it."""
        id16 = to_ulid_bytes(event_id)
        hit = self._locate(id16)
        if hit is None:
            return None
        pos, space_no, _type = hit
        return self._event_at(pos, space_no, id16)

    def _event_at(self, pos: int, space_no: int, id16: bytes) -> Event:
        sp = self._space_entry(space_no)
        if not sp.first_pos <= pos < sp.first_pos + sp.count or pos >= self._events:
            raise self._corrupt(self._u_off, f"ULID index points outside space {sp.stream!r}")
        got, raw = self._record_at(pos)
        if got != id16:
            raise self._corrupt(self._u_off, f"ULID index entry {id16.hex()} finds {got.hex()}")
        return self._event(sp.stream, id16, raw, sp.first_version + pos - sp.first_pos, pos)

    def _type_table(self) -> list[str]:
        t = self._types
        if t is not None:
            return t
        raw = self._chunk(self._t_off, KIND_TYPES, 4 + self._events * (2 + MAX_NAME_BYTES))
        at = self._t_off
        if len(raw) < 4:
            raise self._corrupt(at, "type table too short")
        (n,) = U32.unpack_from(raw, 0)
        # Every listed type is some event's: bound n by the events and the
        # bytes before building anything, and refuse a repeat at once.
        if n > self._events or 4 + n * _MIN_NAME > len(raw):
            raise self._corrupt(at, f"type table cannot hold {n} types")
        names: list[str] = []
        seen: set[bytes] = set()
        p = 4
        for _ in range(n):
            if p + 2 > len(raw):
                raise self._corrupt(at, "type table truncated")
            (ln,) = U16.unpack_from(raw, p)
            b = raw[p + 2 : p + 2 + ln]
            if len(b) != ln:
                raise self._corrupt(at, "type table truncated")
            bad = name_problem(b)
            if bad is not None:
                raise self._corrupt(at, f"type {len(names)}: {bad}")
            if b in seen:
                raise self._corrupt(at, f"type table names {b!r} twice")
            seen.add(b)
            names.append(b.decode("utf-8"))
            p += 2 + ln
        if p != len(raw):
            raise self._corrupt(at, "type table has trailing bytes")
        self._types = names
        return names

    def types(self) -> list[str]:
        """The event types in this file, in type-id order."""
        return list(self._type_table())

    def read_all(
        self,
        after: ULID | str | bytes | None = None,
        backwards: bool = False,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """Every event of the file in ULID order, strictly after (or, backwards,
        before) ``after``; ``types`` and ``stream_prefix`` filter on the ULID
        index alone, so rejected events' blocks are never read."""
        after16 = None if after is None else to_ulid_bytes(after)
        check_limit(limit)
        type_ids: frozenset[int] | None = None
        if types is not None:
            if isinstance(types, str):
                types = [types]
            wanted = set(types)
            for t in wanted:
                if not isinstance(t, str):
                    raise InvalidName(f"event types must be str, got {type(t).__name__}")
            type_ids = frozenset(i for i, t in enumerate(self._type_table()) if t in wanted)
        lo_sp, hi_sp = 0, self._spaces
        if stream_prefix is not None:
            if not isinstance(stream_prefix, str):
                raise InvalidName(
                    f"stream_prefix must be a str, got {type(stream_prefix).__name__}"
                )
            if stream_prefix:
                pb = stream_prefix.encode("utf-8", "surrogatepass")
                # 0xFF never occurs in UTF-8, so prefix+0xFF is above every name with the prefix.
                lo_sp, hi_sp = self._space_rank(pb), self._space_rank(pb + b"\xff")
        if not self._events or type_ids == frozenset() or lo_sp >= hi_sp or limit == 0:
            return iter(())
        if lo_sp == 0 and hi_sp == self._spaces:
            lo_sp = hi_sp = -1  # no space filter
        it = self._all(after16, backwards, type_ids, lo_sp, hi_sp)
        return it if limit is None else islice(it, limit)

    def _all(
        self,
        after: bytes | None,
        backwards: bool,
        type_ids: frozenset[int] | None,
        lo_sp: int,
        hi_sp: int,
    ) -> Iterator[Event]:
        dids, _, _ = self._dir_of_ulids()
        nchunks = len(dids)
        if backwards:
            if after is None:
                ci, k = nchunks - 1, None
            else:
                ci = bisect_left(dids, after) - 1
                k = None
            if ci < 0:
                return
        else:
            if after is None:
                ci, k = 0, 0
            else:
                ci = max(bisect_right(dids, after) - 1, 0)
                k = None
        names: dict[int, SpaceInfo] = {}
        step = -1 if backwards else 1
        bpos, boff = self._block_index()
        blk: Block | None = None
        b0 = b1 = 0
        bi = -1
        while 0 <= ci < nchunks:
            ch = self._ulid_chunk(ci)
            ids, poss, sps, tys = ch
            n = len(ids)
            if k is None:
                if backwards:
                    k = n - 1 if after is None else bisect_left(ids, after) - 1
                else:
                    k = bisect_right(ids, after) if after is not None else 0
            while 0 <= k < n:
                sp_no = sps[k]
                if (type_ids is None or tys[k] in type_ids) and (
                    lo_sp < 0 or lo_sp <= sp_no < hi_sp
                ):
                    pos = poss[k]
                    sp = names.get(sp_no)
                    if sp is None:
                        sp = names[sp_no] = self._space_no(sp_no)
                    rel = pos - sp.first_pos
                    if not 0 <= rel < sp.count:
                        raise self._corrupt(self._u_off, "ULID index points outside its space")
                    if blk is None or not b0 <= pos < b1:
                        bi = bisect_right(bpos, pos) - 1
                        blk = self._block(bi)
                        b0, b1 = bpos[bi], bpos[bi + 1]
                    j = pos - b0
                    payload = blk.payload
                    id16 = ids[k]
                    if payload[4 + 16 * j : 20 + 16 * j] != id16:
                        raise self._corrupt(boff[bi], f"ULID index entry {id16.hex()} misplaced")
                    rb = blk.rbase
                    raw = payload[rb + blk.offs[j] : rb + blk.offs[j + 1]]
                    yield self._event(sp.stream, id16, raw, sp.first_version + rel, boff[bi])
                k += step
            ci += step
            k = None
            after = None

    def id_at(self, rank: int) -> bytes:
        """Id (16 bytes) of the event at ``rank`` (0-based) in the file's ULID
        order, which is also its seq order (FORMAT.md, I3). In a file without
        seq gaps (no removed events), the event with seq ``s`` is at rank
        ``s - meta.first_seq``.
        """
        if type(rank) is not int or not 0 <= rank < self._events:
            raise InvalidArgument(f"rank {rank!r} outside 0..{self._events - 1}")
        _, _, dcounts = self._dir_of_ulids()
        ci = 0
        while rank >= dcounts[ci]:
            rank -= dcounts[ci]
            ci += 1
        return self._ulid_chunk(ci).ids[rank]

    # -- raw access for merging files -----------------------------------------

    def iter_raw(self, stream: str) -> Iterator[tuple[bytes, bytes]]:
        """(id16, record bytes) of one space in ULID order, without decoding."""
        sp = self.space(stream)
        if sp is None:
            return iter(())
        return self._raw(sp)

    def _raw(self, sp: SpaceInfo) -> Iterator[tuple[bytes, bytes]]:
        bpos, _ = self._block_index()
        lo, hi = sp.first_pos, sp.first_pos + sp.count
        bi = bisect_right(bpos, lo) - 1
        p = lo
        while p < hi:
            blk = self._block(bi)
            b0 = bpos[bi]
            payload, offs, rb = blk.payload, blk.offs, blk.rbase
            for k in range(p - b0, min(hi, bpos[bi + 1]) - b0):
                yield payload[4 + 16 * k : 20 + 16 * k], payload[rb + offs[k] : rb + offs[k + 1]]
            p = bpos[bi + 1]
            bi += 1

    def iter_all_raw(self) -> Iterator[tuple[str, bytes, bytes]]:
        """(stream, id16, record bytes) of every event, grouped by stream in file order."""
        for sp in self.spaces(cache=False):
            stream = sp.stream
            for id16, raw in self._raw(sp):
                yield stream, id16, raw

    # -- checking -------------------------------------------------------------

    def verify(self) -> None:
        """Check every checksum and structural invariant; CorruptFile on the first problem."""
        from .verify import verify

        verify(self)

    def query(
        self, query: Query, after: int | None = None, backwards: bool = False
    ) -> Iterator[Event]:
        """The events of this file matching ``query`` (eventstore/dcb.py) with
        seq above ``after``, in seq order (descending backwards). A plain
        scan of the file, filtered by type when every item names types."""
        from itertools import dropwhile, takewhile

        from ..dcb import plan as make_plan

        checked = make_plan(query)
        meta = self.meta
        if not self._events or (after is not None and after >= meta.last_seq):
            return iter(())
        after16 = None
        gap_free = meta.last_seq - meta.first_seq + 1 == self._events
        if after is not None and after >= meta.first_seq and gap_free:
            after16 = self.id_at(after - meta.first_seq)
        events = self.read_all(None if backwards else after16, backwards, checked.scan_types)
        if after is not None:
            low = after
            if backwards:
                events = takewhile(lambda e: e.seq > low, events)
            elif after16 is None:
                events = dropwhile(lambda e: e.seq <= low, events)
        return events if checked.everything else filter(checked.matches_event, events)


__all__ = ["NO_ID", "ESDBReader"]
