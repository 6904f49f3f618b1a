"""ESDB byte layout: constants, struct layouts, chunk framing, codecs.

docs/FORMAT.md is the specification; this module is its executable half.
Every multi-byte integer is little-endian, except ULIDs (16 raw big-endian
bytes, so byte order is time order).
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import zstandard
from ulid import ULID

from ..errors import CorruptFile
from ..ids import ulid_from_bytes
from ..records import MAX_NAME_BYTES

# The newest version this code reads. A file is written as the lowest version
# that holds it: 1 without tags, 2 (the tag index) with them.
FORMAT_VERSION = 2

HEADER_MAGIC = b"\x89ESDB\r\n\x1a"
FOOTER_MAGIC = HEADER_MAGIC[::-1]  # reads as the header magic when scanning backwards

# header: magic, format version, reserved, crc32 of the 12 bytes before it
HEADER = struct.Struct("<8sHHI")
HEADER_SIZE = HEADER.size  # 16

# chunk header: kind, codec, reserved, stored length, raw length, crc32
CHUNK = struct.Struct("<BBHIII")
CHUNK_SIZE = CHUNK.size  # 16

# footer: see FORMAT.md; the last 16 bytes (version, footer size, crc, magic)
# stay where they are in every future version so a reader can tell "newer"
# from "damaged".
FOOTER = struct.Struct("<QQQQQQQQQ16s16sQQQBBHIHHI8s")
FOOTER_SIZE = FOOTER.size  # 152
FOOTER_CRC_SPAN = FOOTER_SIZE - 12
# Version 2 adds a u64 (the tag directory's offset) before the last 16 bytes.
FOOTER_V2 = struct.Struct("<QQQQQQQQQ16s16sQQQBBHIQHHI8s")
FOOTER_V2_SIZE = FOOTER_V2.size  # 160
FOOTER_SIZES = {1: FOOTER_SIZE, 2: FOOTER_V2_SIZE}

# kinds of chunk
KIND_BLOCK = ord("B")
KIND_BLOCK_INDEX = ord("K")
KIND_SPACES = ord("S")
KIND_SPACE_DIR = ord("D")
KIND_ULIDS = ord("I")
KIND_ULID_DIR = ord("U")
KIND_TYPES = ord("T")
KIND_SECONDARY = ord("X")
KIND_POSTINGS = ord("P")
KIND_TAGS = ord("G")  # tag key chunk (version 2)
KIND_TAG_DIR = ord("H")  # tag directory (version 2)
KIND_TAG_POSTINGS = ord("Q")  # tag postings chunk (version 2)
KIND_NAMES = {
    KIND_BLOCK: "data block",
    KIND_BLOCK_INDEX: "block index",
    KIND_SPACES: "space index chunk",
    KIND_SPACE_DIR: "space directory",
    KIND_ULIDS: "ULID index chunk",
    KIND_ULID_DIR: "ULID directory",
    KIND_TYPES: "type table",
    KIND_SECONDARY: "secondary index",
    KIND_POSTINGS: "postings chunk",
    KIND_TAGS: "tag key chunk",
    KIND_TAG_DIR: "tag directory",
    KIND_TAG_POSTINGS: "tag postings chunk",
}

CODEC_NONE = 0
CODEC_ZLIB = 1
CODEC_ZSTD = 2
CODECS = {"none": CODEC_NONE, "zlib": CODEC_ZLIB, "zstd": CODEC_ZSTD}
CODEC_NAMES = {v: k for k, v in CODECS.items()}

FLAG_INDEX_TYPES = 1
KNOWN_FLAGS = FLAG_INDEX_TYPES

# No chunk decompresses to more than this: it bounds what hostile bytes can
# make a reader allocate, and it bounds the largest single event record.
MAX_RAW = 64 << 20
MAX_COUNT = (1 << 32) - 1  # events and spaces per file (positions are u32)
# Space (S) and ULID (I) index chunks are read whole for one lookup and
# decoded into one object per entry: capping them keeps a hostile (or a
# careless) file from costing hundreds of MiB per lookup (FORMAT.md, Limits).
MAX_INDEX_CHUNK = 1 << 20
# The smallest footprint of a chunk in a file: its header and one stored byte.
# Every chunk is referenced once, so a count of chunks is bounded by the bytes
# of the region holding them before anything is decoded.
MIN_CHUNK = 17
# The largest zstd window a reader must support (RFC 8878 section 3.1.1.1.2's
# recommendation); a frame that needs more is refused.
MAX_ZSTD_WINDOW = 8 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

DEFAULT_BLOCK_SIZE = 64 << 10
INDEX_CHUNK_SIZE = 32 << 10  # target raw size of space and ULID index chunks
POSTINGS_PER_CHUNK = 16384  # u32 postings per P chunk (64 KiB raw)
# Tag postings per Q chunk: 20 bytes each (seq, position, space, type id), so
# 80 KiB raw, about a data block: a one-tag lookup inflates little.
TAG_POSTINGS_PER_CHUNK = 4096
TAG_POSTING_SIZE = 20
# tag directory header: tag count, total postings, G chunks, Q chunks
TAG_DIR_HEADER = struct.Struct("<QQII")
# tag key entry tail, after its name: start, count (in the postings array)
TAG_TAIL = struct.Struct("<QQ")

# space entry, after its u16-length-prefixed name:
# first_pos, count, first_version, first_id, last_id, index_offset,
# record_bytes, index_bytes
SPACE_ENTRY = struct.Struct("<QQQ16s16sQQQ")
# ULID directory entry: first id, chunk offset, entry count
ULID_DIR_ENTRY = struct.Struct("<16sQI")
# space directory entry, before its u16-length-prefixed first stream name
SPACE_DIR_ENTRY = struct.Struct("<QQ")
# block index entry: chunk offset, first position
BLOCK_INDEX_ENTRY = struct.Struct("<QQ")
# secondary index header: key count, postings-chunk count, total postings
SECONDARY_HEADER = struct.Struct("<IIQ")
# secondary key entry tail, after name and value: start, count
SECONDARY_TAIL = struct.Struct("<QQ")

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

ZSTD_LEVEL = 3

NO_ID = bytes(16)


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the footer says about one ESDB file."""

    path: str
    format_version: int
    codec: str
    created: datetime
    event_count: int
    space_count: int
    block_count: int
    first_id: bytes | None
    last_id: bytes | None
    first_seq: int
    last_seq: int
    index_types: bool
    file_size: int
    data_bytes: int  # data blocks and per-space secondary indexes
    index_bytes: int  # the index region (block, space, type and ULID indexes)
    record_bytes: int  # sum of the uncompressed event record sizes

    @property
    def first_ulid(self) -> ULID | None:
        return None if self.first_id is None else ulid_from_bytes(self.first_id)

    @property
    def last_ulid(self) -> ULID | None:
        return None if self.last_id is None else ulid_from_bytes(self.last_id)


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    """One stream's space in one ESDB file."""

    stream: str
    count: int
    first_version: int
    last_version: int
    first_id: bytes
    last_id: bytes
    number: int  # rank of the space in the file (spaces are sorted by stream)
    first_pos: int  # file position of its first event
    index_offset: int  # offset of its secondary index chunk, 0 if none
    record_bytes: int  # sum of its uncompressed record sizes
    index_bytes: int  # stored size of its secondary index chunks

    @property
    def first_ulid(self) -> ULID:
        return ulid_from_bytes(self.first_id)

    @property
    def last_ulid(self) -> ULID:
        return ulid_from_bytes(self.last_id)


def created_datetime(created_us: int) -> datetime:
    return datetime.fromtimestamp(created_us / 1_000_000, UTC)


# -- codecs -----------------------------------------------------------------


class _Local(threading.local):
    # zstd contexts are not thread-safe; one pair per thread.
    def __init__(self) -> None:
        self.dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
        self.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)


_local = _Local()


def compress(codec: int, raw: bytes) -> bytes:
    if codec == CODEC_ZSTD:
        out: bytes = _local.cctx.compress(raw)
        return out
    if codec == CODEC_ZLIB:
        return zlib.compress(raw, 6)
    return raw


# Below this, compression cannot pay for its frame header: store raw without trying.
MIN_COMPRESS = 64


def frame_chunk(kind: int, codec: int, raw: bytes) -> bytes:
    """Header and stored payload of one chunk; a payload that does not shrink
    is stored raw (codec none), so a reader never inflates incompressible data."""
    stored = compress(codec, raw) if len(raw) >= MIN_COMPRESS else raw
    if len(stored) >= len(raw):
        codec, stored = CODEC_NONE, raw
    head = CHUNK.pack(kind, codec, 0, len(stored), len(raw), 0)[:12]
    crc = zlib.crc32(stored, zlib.crc32(head))
    return head + U32.pack(crc) + stored


def decompress(codec: int, stored: bytes, raw_len: int, path: str, offset: int) -> bytes:
    """Decompress exactly ``raw_len`` bytes, allocating no more than that.

    Enforces FORMAT.md's codec rules: zstd is one frame (no skippable frame,
    no dictionary, a declared content size equal to ``raw_len``, a window of
    at most 8 MiB, nothing after it); zlib is one stream without a preset
    dictionary and nothing after it; a compressed chunk is smaller than its
    payload (else it would have been stored raw).
    """
    if codec != CODEC_NONE and len(stored) >= raw_len:
        raise CorruptFile(
            path, offset, f"compressed chunk of {len(stored)} bytes is not below its {raw_len}"
        )
    try:
        if codec == CODEC_NONE:
            out = stored
        elif codec == CODEC_ZSTD:
            out = _zstd(stored, raw_len, path, offset)
        elif codec == CODEC_ZLIB:
            if len(stored) < 2 or stored[1] & 0x20:
                raise CorruptFile(path, offset, "zlib stream with a preset dictionary")
            d = zlib.decompressobj()
            out = d.decompress(stored, raw_len)
            if d.unconsumed_tail or d.unused_data or not d.eof:
                raise CorruptFile(path, offset, "zlib stream does not end where the chunk does")
        else:
            raise CorruptFile(path, offset, f"unknown codec {codec}")
    except CorruptFile:
        raise
    except (zstandard.ZstdError, zlib.error, MemoryError, ValueError) as exc:
        raise CorruptFile(path, offset, f"cannot decompress chunk: {exc}") from None
    if len(out) != raw_len:
        raise CorruptFile(
            path, offset, f"chunk decompressed to {len(out)} bytes, header says {raw_len}"
        )
    return out


def _zstd(stored: bytes, raw_len: int, path: str, offset: int) -> bytes:
    if stored[:4] != ZSTD_MAGIC:
        raise CorruptFile(path, offset, "zstd chunk does not start with a zstd frame")
    params = zstandard.get_frame_parameters(stored)
    if params.content_size != raw_len:
        raise CorruptFile(
            path, offset, f"zstd frame declares {params.content_size} bytes, chunk header {raw_len}"
        )
    if params.dict_id != 0:
        raise CorruptFile(path, offset, f"zstd frame needs dictionary {params.dict_id}")
    if params.window_size > MAX_ZSTD_WINDOW:
        raise CorruptFile(path, offset, f"zstd frame needs a {params.window_size}-byte window")
    # A decompression object, unlike one-shot decompress(), reports bytes
    # after the frame; libzstd stops at the declared content size.
    d = _local.dctx.decompressobj()
    out: bytes = d.decompress(stored)
    if not d.eof or d.unused_data:
        raise CorruptFile(path, offset, "zstd frame does not end where the chunk does")
    return out


def name_problem(b: bytes) -> str | None:
    """What makes ``b`` no valid name (FORMAT.md, Names), or None."""
    if not b:
        return "empty name"
    if len(b) > MAX_NAME_BYTES:
        return f"name of {len(b)} bytes (limit {MAX_NAME_BYTES})"
    if 0 in b:
        return "name holds a NUL byte"
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return "name is not UTF-8"
    return None
