"""ESDBWriter: stream events in, get one immutable ESDB file out.

Memory stays bounded by the largest single stream: data blocks are written
as they fill, a stream's secondary index is held only until the stream ends,
the space index is spooled to an anonymous temporary file, and the ULID index
is external-sorted (sorted runs spilled to a temporary file, merged at finish).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import struct
import tempfile
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import IO, Any

import msgpack

from ..errors import FileFull, InvalidArgument, InvalidName
from ..records import MAX_RECORD_BYTES, TYPE_INDEX, inert_ext, name_bytes, reads_back
from .format import (
    BLOCK_INDEX_ENTRY,
    CODEC_NAMES,
    CODECS,
    DEFAULT_BLOCK_SIZE,
    FLAG_INDEX_TYPES,
    FOOTER,
    FOOTER_CRC_SPAN,
    FOOTER_MAGIC,
    FOOTER_SIZE,
    FORMAT_VERSION,
    HEADER,
    HEADER_MAGIC,
    INDEX_CHUNK_SIZE,
    KIND_BLOCK,
    KIND_BLOCK_INDEX,
    KIND_POSTINGS,
    KIND_SECONDARY,
    KIND_SPACE_DIR,
    KIND_SPACES,
    KIND_TYPES,
    KIND_ULID_DIR,
    KIND_ULIDS,
    MAX_COUNT,
    MAX_RAW,
    NO_ID,
    POSTINGS_PER_CHUNK,
    SECONDARY_HEADER,
    SECONDARY_TAIL,
    SPACE_DIR_ENTRY,
    SPACE_ENTRY,
    U16,
    U32,
    U64,
    ULID_DIR_ENTRY,
    FileMeta,
    created_datetime,
    frame_chunk,
)

# A ULID-index entry while sorting: id, pos, space, type, and the seq, so the
# merge can check that seq rises with ULID order (big-endian: bytes sort as numbers).
_RUN = struct.Struct(">16sIIIQ")
_RUN_PACK = _RUN.pack


_unpackb = msgpack.unpackb


def _where(stream: str, id16: bytes) -> str:
    """An event's place, for error messages (made only when there is an error)."""
    return f"stream {stream!r}, event {id16.hex()}"


def _check_fields(
    stream: str, id16: bytes, version: Any, seq: Any, type_: Any, indexes: Any
) -> None:
    """Refuse a record whose version, seq, type or indexes has the wrong type."""
    if type(version) is not int or type(seq) is not int or type(type_) is not str:
        raise InvalidArgument(f"{_where(stream, id16)}: malformed record")
    if type(indexes) is not dict:
        raise InvalidArgument(f"{_where(stream, id16)}: the record's indexes is not a map")
    for name, value in indexes.items():
        if type(name) is not str or type(value) is not str:
            raise InvalidArgument(f"{_where(stream, id16)}: index entries must map str to str")


def _not_a_record(stream: str, id16: bytes) -> InvalidArgument:
    return InvalidArgument(
        f"{_where(stream, id16)}: record is not an event record "
        "[version, seq, type, data, metadata, indexes]"
    )


Decoder = Callable[[str, bytes, bytes], tuple[int, int, str, dict[str, str]]]


def decode_full(stream: str, id16: bytes, record: bytes) -> tuple[int, int, str, dict[str, str]]:
    """Decode a record in full, data and metadata too, with the reader's
    options: a record the reader could not decode must not reach a file."""
    try:
        version, seq, type_, _data, _meta, indexes, *_tags = reads_back(record)
        if len(_tags) > 1:
            raise ValueError("too many fields")
    except Exception:
        raise _not_a_record(stream, id16) from None
    _check_fields(stream, id16, version, seq, type_, indexes)
    return version, seq, type_, indexes


class WalkData:
    """Decode a record's version, seq, type and indexes, and only walk its
    data and metadata: msgpack checks their framing without building them,
    at half the cost of a full decode. For records already proven to decode
    (the store refuses data that would not read back when it is appended,
    and an archive file's records were checked when it was written)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        up = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=inert_ext)
        self._feed, self._header, self._unpack = up.feed, up.read_array_header, up.unpack
        self._skip, self._tell = up.skip, up.tell

    def __call__(
        self, stream: str, id16: bytes, record: bytes
    ) -> tuple[int, int, str, dict[str, str]]:
        unpack, tell = self._unpack, self._tell
        start = tell()
        try:
            self._feed(record)
            fields = self._header()
            if fields not in (6, 7):  # 7: with tags
                raise ValueError("not six or seven fields")
            version, seq, type_ = unpack(), unpack(), unpack()
            self._skip()
            self._skip()
            indexes = unpack()
            if fields == 7:
                self._skip()
            if tell() - start != len(record):
                raise ValueError("bytes after the record")
        except Exception:
            self._reset()  # drop what is left of the record
            raise _not_a_record(stream, id16) from None
        _check_fields(stream, id16, version, seq, type_, indexes)
        return version, seq, type_, indexes


RUN_ENTRIES = 1 << 17  # entries per sorted run (~10 MiB of Python objects)
_READ_ENTRIES = 2048  # entries read at a time from each run while merging
_ULID_CHUNK_ENTRIES = INDEX_CHUNK_SIZE // 28

# What the 64 MiB chunk bound allows one file (FORMAT.md, Limits): the block
# index holds 16 bytes per block, the ULID directory 28 per I chunk.
MAX_BLOCKS = MAX_RAW // BLOCK_INDEX_ENTRY.size
MAX_EVENTS = min(MAX_COUNT, (MAX_RAW - 4) // ULID_DIR_ENTRY.size * _ULID_CHUNK_ENTRIES)
_BLOCK_HEAD = 8  # a block payload's u32 count and its first record offset
_PER_EVENT = 20  # a ULID and a record offset per event in a block
_KEY_FIXED = 4 + 2 + 2 + SECONDARY_TAIL.size  # key offset, two name lengths, start, count


def x_payload(key_bytes: int, postings: int) -> int:
    """Size of an ``X`` payload whose keys (with their offsets) take
    ``key_bytes`` and which holds ``postings`` postings."""
    if postings <= POSTINGS_PER_CHUNK:
        return SECONDARY_HEADER.size + 4 + key_bytes + 4 * postings
    return SECONDARY_HEADER.size + 4 + key_bytes + 8 * -(-postings // POSTINGS_PER_CHUNK)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ESDBWriter:
    """Write one ESDB file; see the module docstring and docs/FORMAT.md.

    Events come in with :meth:`add`, grouped by stream, streams in UTF-8
    byte order, ULIDs strictly increasing within a stream and versions
    contiguous. The file appears at ``path`` only when :meth:`finish` returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        index_types: bool = True,
        codec: str = "zstd",
        block_size: int = DEFAULT_BLOCK_SIZE,
        decoder: Decoder | None = None,
        created: datetime | None = None,
    ) -> None:
        if codec not in CODECS:
            raise InvalidArgument(f"unknown codec {codec!r}; expected one of {sorted(CODECS)}")
        if type(block_size) is not int or not 1 <= block_size <= MAX_RAW // 2:
            raise InvalidArgument(f"block_size must be an int in 1..{MAX_RAW // 2}")
        if created is not None and (
            not isinstance(created, datetime) or created.tzinfo is None or created.year < 1970
        ):
            raise InvalidArgument("created must be an aware datetime from 1970 on")
        self._created_us = (
            None
            if created is None
            else (created - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        )
        self.path = os.fspath(path)
        if os.path.exists(self.path):
            raise FileExistsError(f"{self.path!r} already exists; ESDB files are never rewritten")
        self.tmp_path = self.path + ".tmp"
        self._dir = os.path.dirname(os.path.abspath(self.path))
        self._codec = CODECS[codec]
        self._index_types = bool(index_types)
        self._block_size = block_size
        # decode_full unless the caller vouches for its records (WalkData)
        self._decode: Decoder = decode_full if decoder is None else decoder
        # "x": created exclusively, never through a symlink planted at the name
        self._f: IO[bytes] = open(self.tmp_path, "xb")  # noqa: SIM115 (closed in finish/abort)
        self._spaces_spool: IO[bytes] | None = None
        self._runs: IO[bytes] | None = None
        self._done = False
        head = HEADER.pack(HEADER_MAGIC, FORMAT_VERSION, 0, 0)[:12]
        self._f.write(head + U32.pack(_crc(head)))
        self._offset = 16
        # data blocks
        self._blk_ids: list[bytes] = []
        self._blk_recs: list[bytes] = []
        self._blk_raw = 0
        self._blk_first_pos = 0
        self._block_index = array("Q")  # offset, first_pos pairs
        # file-wide
        self._pos = 0
        self._space_no = -1
        self._types: dict[str, int] = {}
        # type -> id, posting key, UTF-8 length
        self._type_info: dict[str, tuple[int, tuple[str, str], int]] = {}
        self._type_bytes = 4  # the type table's payload so far
        self._dir_bytes = 4  # the space directory's payload so far
        self._entry_heads: dict[tuple[str, str], bytes] = {}  # see _write_secondary
        self._first_seq: int | None = None
        self._last_seq = 0
        self._record_bytes = 0
        self._min_id = b""
        self._max_id = b""
        # current space
        self._stream_b = b""
        self._stream = ""
        self._sp_first_pos = 0
        self._sp_first_version = 0
        self._sp_next_version = 0
        self._sp_first_id = b""
        self._sp_last_id = b""
        self._sp_record_bytes = 0
        # (index name, value) -> relative positions in the current space
        self._postings: dict[tuple[str, str], array[int]] = {}
        self._sp_key_bytes = 0  # its X chunk's keys and key offsets
        self._sp_total = 0  # its postings
        # space index chunks (spooled) and their directory
        self._sp_entries: list[bytes] = []
        self._sp_entries_raw = 0
        self._sp_chunk_first = (0, b"")
        self._space_dir: list[tuple[int, int, bytes]] = []  # spool offset, first no, name
        # ULID index runs
        self._run: list[bytes] = []
        self._run_bounds: list[tuple[int, int]] = []  # (offset, count) in the runs file

    # -- adding ---------------------------------------------------------------

    @property
    def events(self) -> int:
        """How many events were added so far."""
        return self._pos

    def add(self, stream: str, id16: bytes, record: bytes) -> None:
        """Add one event: its stream, 16-byte ULID and unchanged record bytes.

        Everything is checked before anything changes, so a refused event
        leaves the writer as it was.
        """
        self._add_one(stream, id16, record)

    def add_stream(self, stream: str, events: Iterable[tuple[bytes, bytes]]) -> None:
        """Add consecutive events of one stream, each a (16-byte ULID, record
        bytes) pair: the same as :meth:`add` for each, with the same checks,
        at a fraction of the cost per event. On a refused event the writer
        holds every event before it."""
        it = iter(events)
        for id16, record in it:
            self._add_one(stream, id16, record)
            break
        else:
            return
        self._add_more(stream, it)

    def _add_more(self, stream: str, it: Iterator[tuple[bytes, bytes]]) -> None:
        """The rest of :meth:`add_stream`: :meth:`_add_one`'s work for events
        that continue the current space, with the writer's state in locals
        (written back at the end, also when an event is refused)."""
        decode, run_pack, limit = self._decode, _RUN_PACK, MAX_RECORD_BYTES
        index_types, type_info, block_size = self._index_types, self._type_info, self._block_size
        postings, space_no, first_pos = self._postings, self._space_no, self._sp_first_pos
        pos, next_version, last_id = self._pos, self._sp_next_version, self._sp_last_id
        first_id = last_id
        first_seq, last_seq = self._first_seq, self._last_seq
        blk_ids, blk_recs, blk_raw = self._blk_ids, self._blk_recs, self._blk_raw
        key_bytes, total = self._sp_key_bytes, self._sp_total
        max_events, block_index = MAX_EVENTS, self._block_index
        max_index_items = 2 * (MAX_BLOCKS - 2)  # _check_room's block test, as array items
        x_room = MAX_RAW - 20 - 4 * POSTINGS_PER_CHUNK - 16
        run, added = self._run, 0
        try:
            for id16, record in it:
                if type(id16) is not bytes or len(id16) != 16:
                    raise InvalidArgument(f"id16 must be 16 bytes, got {id16!r}")
                if type(record) is not bytes:
                    raise InvalidArgument(f"record must be bytes, got {type(record).__name__}")
                if id16 <= last_id:
                    raise InvalidArgument(
                        f"stream {stream!r}: ULID {id16.hex()} is not above the previous "
                        f"{last_id.hex()}; ULIDs must strictly increase within a stream"
                    )
                size = len(record)
                if size > limit:
                    raise InvalidArgument(
                        f"{_where(stream, id16)}: record of {size} bytes exceeds the ESDB limit"
                    )
                version, seq, type_, indexes = decode(stream, id16, record)
                if version != next_version:
                    raise InvalidArgument(
                        f"stream {stream!r}: version {version} follows {next_version - 1}; "
                        "versions within a stream must be contiguous"
                    )
                if version >= 1 << 63:
                    raise InvalidArgument(f"{_where(stream, id16)}: version {version} out of range")
                if not 0 <= seq < 1 << 64:
                    raise InvalidArgument(f"{_where(stream, id16)}: seq {seq} out of range")
                known = type_info.get(type_)
                new_type = known is None
                if known is None:
                    known = self._new_type(stream, id16, type_)
                rel = pos - first_pos
                # What the event adds to the space's X chunk, inline (the
                # common case: no new key); _index_cost is the full version.
                new_bytes, n_post = 0, len(indexes)
                slow = False
                for entry in indexes.items():
                    if entry not in postings:
                        slow = True
                        break
                if index_types:
                    if TYPE_INDEX in indexes or known[1] not in postings:
                        slow = True
                    n_post += 1
                if slow:
                    new_bytes, n_post = self._index_cost(stream, id16, type_, known, indexes, rel)
                t2 = total + n_post
                # Arithmetic only, unless the file is near a limit: an X
                # payload is at most 20 + its key bytes + 64 KiB of inline
                # postings + 8 bytes per 16,384 postings (see x_payload).
                if (
                    pos >= max_events
                    or key_bytes + new_bytes + (t2 >> 11) > x_room
                    or len(block_index) > max_index_items
                ):
                    self._check_room(id16, pos, key_bytes + new_bytes, t2)
                # Checked: from here on the event is added.
                key_bytes += new_bytes
                total = t2
                if blk_ids and _BLOCK_HEAD + blk_raw + _PER_EVENT + size > MAX_RAW:
                    self._pos, self._blk_raw = pos, blk_raw
                    self._flush_block()
                    blk_ids, blk_recs, blk_raw = self._blk_ids, self._blk_recs, 0
                next_version = version + 1
                last_id = id16
                for entry in indexes.items():
                    plist = postings.get(entry)
                    if plist is None:
                        postings[entry] = plist = array("I")
                    plist.append(rel)
                if new_type:
                    self._types[type_] = known[0]
                    type_info[type_] = known
                    self._type_bytes += 2 + known[2]
                if index_types:
                    plist = postings.get(known[1])
                    if plist is None:
                        postings[known[1]] = plist = array("I")
                    if not plist or plist[-1] != rel:
                        plist.append(rel)
                if seq > last_seq:
                    last_seq = seq
                if first_seq is None or seq < first_seq:
                    first_seq = seq
                added += size
                run.append(run_pack(id16, pos, space_no, known[0], seq))
                pos += 1
                if len(run) >= RUN_ENTRIES:
                    self._spill_run()
                    run = self._run
                blk_ids.append(id16)
                blk_recs.append(record)
                blk_raw += _PER_EVENT + size
                if _BLOCK_HEAD + blk_raw >= block_size:
                    self._pos = pos
                    self._flush_block()
                    blk_ids, blk_recs, blk_raw = self._blk_ids, self._blk_recs, 0
        finally:
            self._pos, self._sp_next_version, self._sp_last_id = pos, next_version, last_id
            self._first_seq, self._last_seq = first_seq, last_seq
            self._blk_raw = blk_raw
            self._sp_key_bytes, self._sp_total = key_bytes, total
            self._record_bytes += added
            self._sp_record_bytes += added
            # Ids rise within a stream: this run's ids lie in [first_id, last_id].
            if last_id > self._max_id:
                self._max_id = last_id
            if first_id < self._min_id or not self._min_id:
                self._min_id = first_id

    def _new_type(self, stream: str, id16: bytes, type_: str) -> tuple[int, tuple[str, str], int]:
        """A type not seen in this file yet: checked as a name, its would-be
        type-table entry (recorded only once its event is added)."""
        try:
            tb = name_bytes(type_, "event type")
        except InvalidName as exc:
            raise InvalidName(f"{_where(stream, id16)}: {exc}") from None
        if self._type_bytes + 2 + len(tb) > MAX_RAW:
            raise FileFull(f"{_where(stream, id16)}: the file's type table is full (64 MiB)", id16)
        return len(self._types), (TYPE_INDEX, type_), len(tb)

    def _index_cost(
        self,
        stream: str,
        id16: bytes,
        type_: str,
        known: tuple[int, tuple[str, str], int],
        indexes: dict[str, str],
        rel: int,
    ) -> tuple[int, int]:
        """(key bytes, postings) that this event adds to its space's ``X``
        chunk; new keys' names are checked here, once per space."""
        postings = self._postings
        new_bytes = 0
        n_post = len(indexes)
        for entry in indexes.items():
            if entry not in postings:
                name, value = entry
                try:
                    nb = name_bytes(name, "index name")
                    vb = name_bytes(value, f"value of index {name!r}")
                except InvalidName as exc:
                    raise InvalidName(f"{_where(stream, id16)}: {exc}") from None
                new_bytes += _KEY_FIXED + len(nb) + len(vb)
        if self._index_types:
            given = indexes.get(TYPE_INDEX)
            if given is None:
                n_post += 1
                if known[1] not in postings:
                    new_bytes += _KEY_FIXED + 4 + known[2]
            elif given != type_:
                raise InvalidArgument(
                    f"{_where(stream, id16)}: index entry type={given!r} differs from the "
                    f"event type {type_!r} in a file that indexes types"
                )
        return new_bytes, n_post

    def _check_room(self, id16: bytes, pos: int, key_bytes: int, total: int) -> None:
        """FileFull unless the file can take one more event (FORMAT.md, Limits)."""
        if pos >= MAX_EVENTS:
            raise FileFull(f"an ESDB file holds at most {MAX_EVENTS} events", id16)
        if len(self._block_index) // 2 + 2 > MAX_BLOCKS:
            raise FileFull(f"an ESDB file holds at most {MAX_BLOCKS} blocks", id16)
        if x_payload(key_bytes, total) > MAX_RAW:
            raise FileFull(
                f"stream {self._stream!r}: its secondary index in this file is full (64 MiB)",
                id16,
            )

    def _add_one(self, stream: str, id16: bytes, record: bytes) -> None:
        if self._done:
            raise InvalidArgument("this ESDBWriter has already finished or aborted")
        if type(id16) is not bytes or len(id16) != 16:
            raise InvalidArgument(f"id16 must be 16 bytes, got {id16!r}")
        if type(record) is not bytes:
            raise InvalidArgument(f"record must be bytes, got {type(record).__name__}")
        new_space = stream != self._stream or self._space_no < 0
        if new_space:
            stream_b = name_bytes(stream, "stream name")
            if self._space_no >= 0 and stream_b <= self._stream_b:
                raise InvalidArgument(
                    f"stream {stream!r} added after {self._stream!r}: streams must come in "
                    "UTF-8 byte order, each stream's events together"
                )
        elif id16 <= self._sp_last_id:
            raise InvalidArgument(
                f"stream {stream!r}: ULID {id16.hex()} is not above the previous "
                f"{self._sp_last_id.hex()}; ULIDs must strictly increase within a stream"
            )
        size = len(record)
        if size > MAX_RECORD_BYTES:
            raise InvalidArgument(
                f"{_where(stream, id16)}: record of {size} bytes exceeds the ESDB limit"
            )
        version, seq, type_, indexes = self._decode(stream, id16, record)
        if not 0 <= version < 1 << 63:
            raise InvalidArgument(f"{_where(stream, id16)}: version {version} out of range")
        if not new_space and version != self._sp_next_version:
            raise InvalidArgument(
                f"stream {stream!r}: version {version} follows {self._sp_next_version - 1}; "
                "versions within a stream must be contiguous"
            )
        if not 0 <= seq < 1 << 64:
            raise InvalidArgument(f"{_where(stream, id16)}: seq {seq} out of range")
        pos = self._pos
        known = self._type_info.get(type_) or self._new_type(stream, id16, type_)
        if new_space:
            # A new space may open a new S chunk: a directory entry more.
            if self._dir_bytes + SPACE_DIR_ENTRY.size + 2 + len(stream_b) > MAX_RAW:
                raise FileFull(f"{_where(stream, id16)}: the file's space directory is full", id16)
            saved = self._postings, self._sp_key_bytes, self._sp_total
            self._postings, self._sp_key_bytes, self._sp_total = {}, 0, 0
            try:
                new_bytes, n_post = self._index_cost(stream, id16, type_, known, indexes, 0)
            finally:
                self._postings, self._sp_key_bytes, self._sp_total = saved
            self._check_room(id16, pos, new_bytes, n_post)
        else:
            rel = pos - self._sp_first_pos
            new_bytes, n_post = self._index_cost(stream, id16, type_, known, indexes, rel)
            self._check_room(id16, pos, self._sp_key_bytes + new_bytes, self._sp_total + n_post)
        # Checked: from here on the event is added.
        blk_ids = self._blk_ids
        if blk_ids and _BLOCK_HEAD + self._blk_raw + _PER_EVENT + size > MAX_RAW:
            self._flush_block()
        if new_space:
            self._start_space(stream, stream_b)
            self._sp_first_version = version
            self._sp_first_id = id16
        self._sp_key_bytes += new_bytes
        self._sp_total += n_post
        self._sp_next_version = version + 1
        self._sp_last_id = id16
        rel = pos - self._sp_first_pos
        postings = self._postings
        for entry in indexes.items():
            plist = postings.get(entry)
            if plist is None:
                postings[entry] = plist = array("I")
            plist.append(rel)
        # Per type: its id in the file's type table and its posting key.
        if known[0] == len(self._types):
            self._types[type_] = known[0]
            self._type_info[type_] = known
            self._type_bytes += 2 + known[2]
        type_id = known[0]
        if self._index_types:
            plist = postings.get(known[1])
            if plist is None:
                postings[known[1]] = plist = array("I")
            if not plist or plist[-1] != rel:
                plist.append(rel)
        if seq > self._last_seq:
            self._last_seq = seq
        if self._first_seq is None or seq < self._first_seq:
            self._first_seq = seq
        if id16 > self._max_id:
            self._max_id = id16
        if id16 < self._min_id or not self._min_id:
            self._min_id = id16
        self._record_bytes += size
        self._sp_record_bytes += size
        self._pos = pos + 1
        run = self._run
        run.append(_RUN_PACK(id16, pos, self._space_no, type_id, seq))
        if len(run) >= RUN_ENTRIES:
            self._spill_run()
        blk_ids = self._blk_ids
        blk_ids.append(id16)
        self._blk_recs.append(record)
        self._blk_raw += _PER_EVENT + size
        if _BLOCK_HEAD + self._blk_raw >= self._block_size:
            self._flush_block()

    def _start_space(self, stream: str, stream_b: bytes) -> None:
        if self._space_no >= 0:
            self._end_space()
        self._space_no += 1
        self._stream, self._stream_b = stream, stream_b
        if not self._sp_entries:  # it will open an S chunk: a directory entry
            self._dir_bytes += SPACE_DIR_ENTRY.size + 2 + len(stream_b)
        self._sp_first_pos = self._pos
        self._sp_first_id = b""
        self._sp_last_id = b""
        self._sp_record_bytes = 0
        self._postings = {}
        self._sp_key_bytes = self._sp_total = 0

    def _end_space(self) -> None:
        index_offset, index_bytes = self._write_secondary()
        count = self._pos - self._sp_first_pos
        entry = (
            U16.pack(len(self._stream_b))
            + self._stream_b
            + SPACE_ENTRY.pack(
                self._sp_first_pos,
                count,
                self._sp_first_version,
                self._sp_first_id,
                self._sp_last_id,
                index_offset,
                self._sp_record_bytes,
                index_bytes,
            )
        )
        if not self._sp_entries:
            self._sp_chunk_first = (self._space_no, self._stream_b)
        self._sp_entries.append(entry)
        self._sp_entries_raw += len(entry) + 4
        if self._sp_entries_raw >= INDEX_CHUNK_SIZE:
            self._flush_spaces()
        self._postings = {}

    def _write_secondary(self) -> tuple[int, int]:
        """Write the current space's secondary index; (offset, stored bytes)."""
        if not self._postings:
            return 0, 0
        # (name, value) pairs of str sort as their UTF-8 bytes "name NUL value"
        # do (UTF-8 keeps code point order; names hold no NUL): index order.
        postings = self._postings
        keys = sorted(postings)
        # The same few (name, value) pairs recur in every space: their packed
        # entry heads are cached (bounded: cleared when full).
        heads = self._entry_heads
        if len(heads) > 4096:
            heads.clear()
        tail = SECONDARY_TAIL.pack
        entries: list[bytes] = []
        all_postings = array("I")
        start = 0
        for key in keys:
            head = heads.get(key)
            if head is None:
                name, value = key[0].encode(), key[1].encode()
                head = heads[key] = U16.pack(len(name)) + name + U16.pack(len(value)) + value
            plist = postings[key]
            n = len(plist)
            entries.append(head + tail(start, n))
            all_postings.extend(plist)
            start += n
        total = start
        if all_postings.itemsize != 4:  # pragma: no cover - exotic platforms
            raise RuntimeError("array('I') is not 32-bit here")
        if _BIG_ENDIAN:  # pragma: no cover
            all_postings.byteswap()
        written = 0
        pchunk_offsets: list[int] = []
        inline = total <= POSTINGS_PER_CHUNK
        if not inline:
            # P chunks first, so the X chunk can name them.
            for i in range(0, total, POSTINGS_PER_CHUNK):
                part = all_postings[i : i + POSTINGS_PER_CHUNK].tobytes()
                pchunk_offsets.append(self._offset)
                written += self._write(frame_chunk(KIND_POSTINGS, self._codec, part))
        key_offsets = array("I", [0])
        for e in entries:
            key_offsets.append(key_offsets[-1] + len(e))
        if _BIG_ENDIAN:  # pragma: no cover
            key_offsets.byteswap()
        raw = b"".join(
            [
                SECONDARY_HEADER.pack(len(keys), len(pchunk_offsets), total),
                b"".join(U64.pack(o) for o in pchunk_offsets),
                key_offsets.tobytes(),
                *entries,
                all_postings.tobytes() if inline else b"",
            ]
        )
        if len(raw) > MAX_RAW:
            raise InvalidArgument(f"stream {self._stream!r}: secondary index too large")
        offset = self._offset
        written += self._write(frame_chunk(KIND_SECONDARY, self._codec, raw))
        return offset, written

    def _flush_spaces(self) -> None:
        if not self._sp_entries:
            return
        if self._spaces_spool is None:
            self._spaces_spool = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115
        offsets = [0]
        for e in self._sp_entries:
            offsets.append(offsets[-1] + len(e))
        raw = b"".join(
            [
                U32.pack(len(self._sp_entries)),
                struct.pack(f"<{len(offsets)}I", *offsets),
                *self._sp_entries,
            ]
        )
        first_no, first_name = self._sp_chunk_first
        self._space_dir.append((self._spaces_spool.tell(), first_no, first_name))
        self._spaces_spool.write(frame_chunk(KIND_SPACES, self._codec, raw))
        self._sp_entries = []
        self._sp_entries_raw = 0

    def _flush_block(self) -> None:
        ids = self._blk_ids
        if not ids:
            return
        recs = self._blk_recs
        n = len(ids)
        offsets = [0] * (n + 1)
        total = 0
        for i, r in enumerate(recs):
            total += len(r)
            offsets[i + 1] = total
        raw = b"".join([U32.pack(n), *ids, struct.pack(f"<{n + 1}I", *offsets), *recs])
        self._block_index.append(self._offset)
        self._block_index.append(self._blk_first_pos)
        self._write(frame_chunk(KIND_BLOCK, self._codec, raw))
        self._blk_first_pos = self._pos
        self._blk_ids = []
        self._blk_recs = []
        self._blk_raw = 0

    def _spill_run(self) -> None:
        if not self._run:
            return
        if self._runs is None:
            self._runs = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115
        self._run.sort()
        self._run_bounds.append((self._runs.tell(), len(self._run)))
        self._runs.write(b"".join(self._run))
        self._run = []

    def _write(self, data: bytes) -> int:
        self._f.write(data)
        self._offset += len(data)
        return len(data)

    # -- finishing ------------------------------------------------------------

    def finish(self) -> FileMeta:
        """Write the indexes and footer, fsync, rename into place; the file's metadata."""
        if self._done:
            raise InvalidArgument("this ESDBWriter has already finished or aborted")
        try:
            meta = self._finish()
        except BaseException:
            self.abort()
            raise
        return meta

    def _finish(self) -> FileMeta:
        if self._space_no >= 0:
            self._end_space()
        self._flush_block()
        self._flush_spaces()
        codec = self._codec
        index_region = self._offset
        # block index
        bi = self._block_index
        if _BIG_ENDIAN:  # pragma: no cover
            bi.byteswap()
        if len(bi) * 8 > MAX_RAW:
            raise InvalidArgument("too many blocks for one ESDB file; split the input")
        block_index_offset = self._offset
        self._write(frame_chunk(KIND_BLOCK_INDEX, codec, bi.tobytes()))
        block_count = len(bi) // 2
        # space index chunks, copied from the spool, then their directory
        base = self._offset
        if self._spaces_spool is not None:
            spool = self._spaces_spool
            spool.seek(0)
            while chunk := spool.read(1 << 20):
                self._write(chunk)
        space_dir_offset = self._offset
        parts = [U32.pack(len(self._space_dir))]
        for off, first_no, name in self._space_dir:
            parts.append(SPACE_DIR_ENTRY.pack(base + off, first_no) + U16.pack(len(name)) + name)
        raw = b"".join(parts)
        if len(raw) > MAX_RAW:
            raise InvalidArgument("too many streams for one ESDB file; split the input")
        self._write(frame_chunk(KIND_SPACE_DIR, codec, raw))
        # type table
        type_table_offset = self._offset
        parts = [U32.pack(len(self._types))]
        for t in self._types:  # insertion order is type-id order
            tb = t.encode()
            parts.append(U16.pack(len(tb)) + tb)
        raw = b"".join(parts)
        if len(raw) > MAX_RAW:
            raise InvalidArgument("too many event types for one ESDB file")
        self._write(frame_chunk(KIND_TYPES, codec, raw))
        # ULID index: merge the sorted runs into chunks
        ulid_dir: list[bytes] = []
        prev = b""
        prev_seq = b""
        batch: list[bytes] = []
        for entry in self._merged_runs():
            id16 = entry[:16]
            if id16 == prev:
                raise InvalidArgument(f"ULID {id16.hex()} occurs twice in this file")
            seq_b = entry[28:]
            if seq_b <= prev_seq:
                raise InvalidArgument(
                    f"event {id16.hex()} has seq {int.from_bytes(seq_b, 'big')}, not above the "
                    f"seq {int.from_bytes(prev_seq, 'big')} of the event before it in ULID "
                    "order: seq must rise with the ULID"
                )
            prev, prev_seq = id16, seq_b
            batch.append(entry)
            if len(batch) == _ULID_CHUNK_ENTRIES:
                ulid_dir.append(self._write_ulid_chunk(batch))
                batch = []
        if batch:
            ulid_dir.append(self._write_ulid_chunk(batch))
        ulid_dir_offset = self._offset
        raw = U32.pack(len(ulid_dir)) + b"".join(ulid_dir)
        if len(raw) > MAX_RAW:
            raise InvalidArgument("too many events for one ESDB file; split the input")
        self._write(frame_chunk(KIND_ULID_DIR, codec, raw))
        # footer
        created_us = time.time_ns() // 1000 if self._created_us is None else self._created_us
        empty = self._pos == 0
        body = FOOTER.pack(
            block_index_offset,
            space_dir_offset,
            ulid_dir_offset,
            type_table_offset,
            self._pos,
            self._space_no + 1,
            block_count,
            0 if empty else self._first_seq,
            self._last_seq,
            NO_ID if empty else self._min_id,
            NO_ID if empty else self._max_id,
            created_us,
            self._record_bytes,
            index_region,
            codec,
            FLAG_INDEX_TYPES if self._index_types else 0,
            0,
            0,
            FORMAT_VERSION,
            FOOTER_SIZE,
            0,
            FOOTER_MAGIC,
        )
        head = body[:FOOTER_CRC_SPAN]
        self._write(head + U32.pack(_crc(head)) + FOOTER_MAGIC)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.rename(self.tmp_path, self.path)
        _fsync_dir(self._dir)
        self._done = True
        self._close_spools()
        return FileMeta(
            path=self.path,
            format_version=FORMAT_VERSION,
            codec=CODEC_NAMES[codec],
            created=created_datetime(created_us),
            event_count=self._pos,
            space_count=self._space_no + 1,
            block_count=block_count,
            first_id=None if empty else self._min_id,
            last_id=None if empty else self._max_id,
            first_seq=0 if empty else (self._first_seq or 0),
            last_seq=self._last_seq,
            index_types=self._index_types,
            file_size=self._offset,
            data_bytes=index_region - 16,
            index_bytes=self._offset - index_region - FOOTER_SIZE,
            record_bytes=self._record_bytes,
        )

    def _write_ulid_chunk(self, batch: list[bytes]) -> bytes:
        n = len(batch)
        cols = [_RUN.unpack(e) for e in batch]
        raw = b"".join(
            [
                U32.pack(n),
                *(c[0] for c in cols),
                struct.pack(f"<{n}I", *(c[1] for c in cols)),
                struct.pack(f"<{n}I", *(c[2] for c in cols)),
                struct.pack(f"<{n}I", *(c[3] for c in cols)),
            ]
        )
        offset = self._offset
        self._write(frame_chunk(KIND_ULIDS, self._codec, raw))
        return ULID_DIR_ENTRY.pack(batch[0][:16], offset, n)

    def _merged_runs(self) -> Iterator[bytes]:
        if self._runs is None:
            self._run.sort()
            return iter(self._run)
        self._spill_run()
        runs = self._runs
        return heapq.merge(*(_read_run(runs, off, n) for off, n in self._run_bounds))

    def abort(self) -> None:
        """Drop the temporary file; the target path is left untouched."""
        if self._done:
            return
        self._done = True
        try:
            self._f.close()
        finally:
            self._close_spools()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_path)

    def _close_spools(self) -> None:
        for spool in (self._spaces_spool, self._runs):
            if spool is not None:
                spool.close()
        self._spaces_spool = self._runs = None
        self._run = []

    def __enter__(self) -> ESDBWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()

    def __del__(self) -> None:
        f: Any = getattr(self, "_f", None)
        if f is not None and not getattr(self, "_done", True):
            self.abort()


def _read_run(f: IO[bytes], offset: int, count: int) -> Iterator[bytes]:
    """Entries of one sorted run, read a slice at a time (the merge interleaves runs)."""
    size = _RUN.size
    done = 0
    while done < count:
        n = min(_READ_ENTRIES, count - done)
        f.seek(offset + done * size)
        data = f.read(n * size)
        for i in range(0, n * size, size):
            yield data[i : i + size]
        done += n


def _crc(data: bytes) -> int:
    return zlib.crc32(data)


_BIG_ENDIAN = array("I", [1]).tobytes() != b"\x01\x00\x00\x00"
