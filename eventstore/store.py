"""EventStore: one object over the hot tier (LevelDB) and the cold tier (ESDB files).

Writes always go to the hot tier. Expected versions are checked, ids and
``seq`` assigned, and the append queued under one writer lock, so id order =
``seq`` order = commit order. The appender at the head of the queue writes
every queued append in one LevelDB write: with ``sync=True`` that is group
commit, many appends sharing one fsync.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from itertools import chain, islice, repeat
from threading import get_ident
from types import NoneType
from typing import Any, NamedTuple

import msgpack
from ulid import ULID

from . import counters, forks, keys, segments
from ._leveldb import plyvel
from .archive import (
    ARCHIVE_DIR,
    ArchiveFile,
    advice,
    check_entries,
    check_folder,
    classify_unnamed,
    highest_number,
    listing,
    open_files,
    parse_name,
)
from .counters import Statistics
from .errors import (
    AppendTooLarge,
    EventStoreError,
    InvalidArgument,
    InvalidNameType,
    InvalidType,
    NotAStore,
    StoreClosed,
    StoreDamaged,
    StoreNotFound,
    UnserialisableData,
    UsedAfterFork,
    WritesRefused,
    WrongExpectedVersion,
)
from .esdb.reader import BlockCache
from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Event,
    Expected,
    ExpectedVersion,
    NewEvent,
    Snapshot,
)
from .hot import HotTier, at_boundary, storage_error
from .ids import (
    MonotonicULIDs,
    UlidRange,
    check_importable,
    to_ulid_bytes,
    ulid_from_bytes,
    ulid_from_int,
)
from .records import (
    MAX_RECORD_BYTES,
    TYPE_INDEX,
    Encoder,
    check_indexes,
    check_limit,
    check_serialisable,
    encode_record,
    encoder,
    first_bad_ext,
    name_bytes,
    plain_name,
    reads_back,
    refuse_bad_ext,
    unpack,
)
from .subscriptions import DEFAULT_PAGE_SIZE, Subscription
from .tiering import Tiering, held_by
from .transfer import HOT_DIR, Transfer
from .view import Tiers, View

# 2: segment keys carry the file number (eventstore/segments.py); layout-1
# stores are migrated when they open.
LAYOUT_VERSION = 2
# Decoded ESDB chunks kept for all archive files together (each reader alone: 32 MiB).
DEFAULT_ARCHIVE_CACHE_BYTES = 64 << 20

_packb = msgpack.packb

# One append (or append_many, or import batch) at most: far above what an
# application appends at once, far below what holds the writer lock for
# seconds or builds a gigabyte of keys. Configurable at open.
DEFAULT_MAX_APPEND_EVENTS = 100_000
DEFAULT_MAX_APPEND_BYTES = 64 << 20
# How far ahead of this machine's clock an imported id may be timed.
DEFAULT_IMPORT_CLOCK_TOLERANCE = timedelta(days=1)


class IncompatibleStore(EventStoreError):
    """The store on disk was written by a newer eventstore, or with other options."""


# The manifest of a store that has never archived anything (no manifest key).
_NO_FILES: list[list[Any]] = []


class _State(NamedTuple):
    """A store's system keys as open() found them, checked for shape."""

    config: Any
    entries: list[list[Any]]
    next_file: int
    watermark: bytes
    strays: segments.Strays


# Names a store's own folder may hold besides its two tiers: the stores that
# eventstore.contrib.eventsourcing keeps for other purposes, and the folder
# mkfs puts at the root of a new volume (a store may own a whole volume).
_OWN_PREFIXES = ("eventsourcing-",)
_OWN_EXTRAS = ("lost+found",)
# What LevelDB leaves in a folder before its creation completes (CURRENT is
# written last): nothing that holds data.
_LEVELDB_SCAFFOLD = re.compile(r"(LOCK|LOG|LOG\.old|MANIFEST-[0-9]+|[0-9]+\.dbtmp)\Z")


def locate_store(path: str, create: bool) -> bool:
    """Decide, without writing anything, whether ``path`` is a store (False)
    or a store to create (True); raise if it is neither. A store is a folder
    whose ``hot/CURRENT`` exists; a new one is a missing or empty folder (or
    one whose creation was cut short before LevelDB wrote anything)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if create:
            return True
        raise StoreNotFound(
            f"no store at {path}: the folder does not exist "
            "(check the path; pass create=True to make a new store there)"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotAStore(f"{path} is not a folder, so it cannot be a store; nothing was created")
    hot = os.path.join(path, HOT_DIR)
    if os.path.isfile(os.path.join(hot, "CURRENT")):
        return False
    names = os.listdir(path)
    names = [n for n in names if n not in _OWN_EXTRAS]
    foreign = sorted(
        n for n in names if n not in (HOT_DIR, ARCHIVE_DIR) and not n.startswith(_OWN_PREFIXES)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise NotAStore(
            f"{path} is not an eventstore store: it holds other things ({shown}); "
            "nothing was created (open a new or empty folder, or the store's own folder)"
        )
    hot_files = os.listdir(hot) if os.path.isdir(hot) else None
    unfinished = (
        names == [HOT_DIR]
        and hot_files is not None
        and all(_LEVELDB_SCAFFOLD.match(n) for n in hot_files)
    )
    if names and not unfinished:
        what = (
            "its hot tier (hot/) is missing"
            if hot_files is None
            else "its hot tier has no CURRENT file (LevelDB would start it over, empty)"
        )
        raise StoreDamaged(f"store {path}: {what}; {advice(path)}")
    if create:
        return True
    what = "its creation was cut short before it held anything" if names else "the folder is empty"
    raise StoreNotFound(f"no store at {path}: {what} (pass create=True to make a new store there)")


class _Prepared:
    """One stream's part of an append, validated and serialised outside the lock.

    It is kept as columns, one entry per event (but ``index_prefixes``, one
    per custom index entry), so that the writer lock builds every key with a
    few C-level ``map`` calls rather than a Python loop per event: each
    event's packed record less its first two fields (version and seq are
    assigned under the lock), the packed head of its global entry, its
    ``type`` index key prefix, and the prefixes of its other index keys,
    ``index_each`` to an event, or else owned as ``index_owners`` says.
    """

    __slots__ = (
        "expected",
        "g_heads",
        "index_each",
        "index_owners",
        "index_prefixes",
        "n",
        "size",
        "stream",
        "stream_b",
        "tails",
        "type_prefixes",
    )

    def __init__(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: object,
        index_types: bool,
        room: int = DEFAULT_MAX_APPEND_EVENTS,
    ) -> None:
        self.stream = stream = plain_name(stream, "stream name")
        self.stream_b = name_bytes(stream, "stream name")
        self.expected = _check_expected(expected)
        if isinstance(events, (NewEvent, str, bytes)) or not isinstance(events, Sequence):
            raise InvalidType(
                f"events for stream {stream!r} must be a list of NewEvent, "
                f"got {type(events).__name__}"
            )
        # A copy: a list subclass's len() or user code run while packing (a
        # conversion) must not change the events between count and records.
        events = tuple(events)
        if not events:
            raise InvalidArgument(f"append to stream {stream!r} has no events")
        self.n = len(events)
        if self.n > room:  # before a byte is packed
            raise AppendTooLarge(
                f"append to stream {stream!r} of {self.n} events: one append holds at "
                f"most {room} more (max_append_events at open); split it"
            )
        enc = encoder()
        enc.busy = True
        try:
            # In bulk only when there are enough events to pay for its fixed cost.
            if self.n < _BULK or not self._pack_plain(stream, events, index_types, enc):
                self._pack_events(stream, events, index_types, enc)
        finally:
            enc.busy = False
        if len(self.tails) != self.n:  # the columns are joined by map(), which would truncate
            raise AssertionError(f"{len(self.tails)} records for {self.n} events")
        # One record over the limit makes the sum over it: summed in C, and
        # searched only then.
        self.size = sum(map(len, self.tails))
        if self.size > _MAX_TAIL:
            for n, tail in enumerate(self.tails):
                if len(tail) > _MAX_TAIL:
                    raise InvalidArgument(
                        f"event {n} of stream {stream!r} is {len(tail) + 1} bytes packed; "
                        f"an event record holds at most {MAX_RECORD_BYTES}"
                    )

    def _pack_plain(
        self, stream: str, events: Sequence[NewEvent], index_types: bool, enc: Encoder
    ) -> bool:
        """The common case in bulk: every event a NewEvent whose type and index
        entries are valid plain str and whose indexes are a plain dict or None.
        Returns False, having packed nothing and run no user code, for
        anything else; :meth:`_pack_events` then takes one event at a time."""
        if set(map(type, events)) != _JUST_NEW_EVENT:
            return False
        types_, datas, metas, indexes = zip(*events, strict=True)
        if set(map(type, types_)) != _JUST_STR:
            return False
        index_types_seen = set(map(type, indexes))
        if not index_types_seen <= _PLAIN_INDEXES:
            return False
        if NoneType in index_types_seen or not all(indexes):
            # As one event at a time packs them: no indexes, None or {}, as
            # _NO_INDEXES, which no user code can fill while data is packed.
            indexes = tuple([d or _NO_INDEXES for d in indexes])
        pack = enc.pack
        index_prefix = keys.INDEX + self.stream_b + keys.SEP
        global_heads = {}
        type_prefixes = {}
        try:
            for type_ in set(types_):  # plain str, so hashing is str's own
                type_b = name_bytes(type_, "event type")
                # [stream, type, seq] less its seq: a fixarray of 3 and two strings.
                global_heads[type_] = b"\x93" + pack(stream) + pack(type_)
                type_prefixes[type_] = index_prefix + b"type\x00" + type_b + keys.SEP
            if not self._index_columns(indexes, index_types):
                return False
        except EventStoreError:
            return False  # the careful pass says which event, in order
        self.g_heads = list(map(global_heads.__getitem__, types_))
        self.type_prefixes = list(map(type_prefixes.__getitem__, types_)) if index_types else []
        suspect = enc.suspect
        suspect.clear()
        packed: list[bytes] = []
        try:
            # extend() keeps what it got, so len(packed) is the failing event.
            packed.extend(map(pack, map(list, zip(types_, datas, metas, indexes, strict=True))))
        except Exception as exc:  # msgpack raises several unrelated types
            n = len(packed)
            # An earlier record that would not read back comes first, as one
            # event at a time reports it.
            for k, record in enumerate(packed):
                if suspect or 0xFF in record:
                    try:
                        reads_back(record)
                    except Exception as earlier:
                        raise _unstorable(
                            stream, k, types_[k], datas[k], metas[k], earlier
                        ) from None
            raise _unstorable(stream, n, types_[n], datas[n], metas[n], exc) from None
        n = first_bad_ext(packed, datas, metas)  # an ExtType code msgpack would wrap?
        if n >= 0:
            bad = ValueError("an ExtType has a code outside -128..127")
            raise _unstorable(stream, n, types_[n], datas[n], metas[n], bad)
        if suspect:
            # A conversion ran (Encoder._default): decode-check every record,
            # and key the index entries by what was stored, as user code may
            # have changed an event's indexes while it ran.
            suspect.clear()
            stored_indexes = []
            for n, record in enumerate(packed):
                try:
                    stored_indexes.append(reads_back(record)[3])
                except Exception as exc:
                    raise _unstorable(stream, n, types_[n], datas[n], metas[n], exc) from None
            if not self._index_columns(stored_indexes, index_types):
                for stored in stored_indexes:
                    check_indexes(stored, index_types)  # raises for the entry that is not str
        elif 0xFF in b"".join(packed):  # Encoder.needs_check, for them all at once
            for n, record in enumerate(packed):
                if 0xFF in record:
                    try:
                        reads_back(record)
                    except Exception as exc:
                        raise _unstorable(stream, n, types_[n], datas[n], metas[n], exc) from None
        self.tails = list(map(_DROP_HEAD, packed))
        return True

    def _index_columns(self, indexes: Sequence[dict[str, str]], index_types: bool) -> bool:
        """The index key prefixes of events with these plain dicts of indexes
        (the ``type`` index aside), or False if an entry is not plain str: a
        subclass's ``__eq__`` and ``__hash__`` must not meet the cache of
        validated entries. Raises for an invalid entry."""
        index_prefix = keys.INDEX + self.stream_b + keys.SEP
        # Validated index entries (a bounded cache): the same few names and
        # values recur in every append.
        index_tails = _INDEX_TAILS
        prefixes: list[bytes] = []
        add_prefix = prefixes.append
        for entry in chain.from_iterable(map(dict.items, indexes)):
            if type(entry[0]) is not str or type(entry[1]) is not str:
                return False
            try:
                tail_b = index_tails[entry]
            except KeyError:
                tail_b = _index_tail(entry, index_types)
            add_prefix(index_prefix + tail_b)
        self.index_prefixes = prefixes
        self.index_each, self.index_owners = -1, []
        if prefixes:
            counts = set(map(len, indexes))
            if len(counts) == 1:
                self.index_each = counts.pop()
            else:
                owners = map(repeat, range(self.n), map(len, indexes))
                self.index_owners = list(chain.from_iterable(owners))
        return True

    def _pack_events(
        self, stream: str, events: Sequence[NewEvent], index_types: bool, enc: Encoder
    ) -> None:
        """Every case, one event at a time, raising for the first bad event."""
        pack = enc.pack
        suspect = enc.suspect
        suspect.clear()
        index_prefix = keys.INDEX + self.stream_b + keys.SEP
        # Per event type: its global entry head and its type index prefix.
        by_type: dict[str, tuple[bytes, bytes, str]] = {}
        index_tails = _INDEX_TAILS
        self.tails = []
        self.g_heads = []
        self.type_prefixes = []
        self.index_prefixes = []
        self.index_owners = []
        self.index_each = -1
        add_tail = self.tails.append
        add_global = self.g_heads.append
        add_type_prefix = self.type_prefixes.append
        add_prefix = self.index_prefixes.append
        add_owner = self.index_owners.append
        for n, event in enumerate(events):
            if type(event) is not NewEvent:
                raise InvalidType(
                    f"event {n} of stream {stream!r} must be a NewEvent, got {type(event).__name__}"
                )
            type_, data, metadata, indexes = event
            # Keyed by plain text, and the record takes its type from the
            # entry: the record, its global entry and its type index key
            # agree whatever a str subclass's __eq__ and __hash__ say.
            try:
                global_head, type_prefix, type_ = by_type[type_]
            except (KeyError, TypeError):  # a new type, or no str at all
                type_ = plain_name(type_, "event type")
                type_b = name_bytes(type_, "event type")
                type_prefix = index_prefix + b"type\x00" + type_b + keys.SEP
                global_head = b"\x93" + pack(stream) + pack(type_)
                by_type[type_] = (global_head, type_prefix, type_)
            if indexes:
                if type(indexes) is not dict:
                    indexes = check_indexes(indexes, index_types)
                for entry in indexes.items():
                    if type(entry[0]) is not str or type(entry[1]) is not str:
                        # Plain copies first: a subclass's __eq__ and __hash__
                        # must not meet the cache of plain entries.
                        indexes = check_indexes(indexes, index_types)
                        self._rekey(n, indexes, index_types)
                        break
                    try:
                        tail_b = index_tails[entry]
                    except KeyError:
                        tail_b = _index_tail(entry, index_types)
                    add_prefix(index_prefix + tail_b)
                    add_owner(n)
            else:
                if indexes is not None and not isinstance(indexes, Mapping):
                    check_indexes(indexes, index_types)  # raises the type error
                indexes = _NO_INDEXES
            try:
                packed = pack([type_, data, metadata, indexes])
                refuse_bad_ext(packed, data, metadata)
                if suspect or 0xFF in packed:  # Encoder.needs_check, inlined
                    converted = bool(suspect)
                    suspect.clear()
                    stored = reads_back(packed)
                    if converted:
                        # User code ran (a conversion) and may have changed
                        # this event's indexes: key them as they were stored.
                        self._rekey(n, check_indexes(stored[3], index_types), index_types)
            except EventStoreError:
                raise
            except Exception as exc:  # msgpack raises several unrelated types
                raise _unstorable(stream, n, type_, data, metadata, exc) from None
            add_tail(packed[1:])
            add_global(global_head)
            if index_types:
                add_type_prefix(type_prefix)

    def _rekey(self, n: int, indexes: dict[str, str], index_types: bool) -> None:
        """Event ``n``'s (the last one's) index key prefixes, from these plain
        entries, in place of those it had."""
        prefixes, owners = self.index_prefixes, self.index_owners
        while owners and owners[-1] == n:
            owners.pop()
            prefixes.pop()
        index_prefix = keys.INDEX + self.stream_b + keys.SEP
        for entry in indexes.items():
            tail_b = _INDEX_TAILS.get(entry) or _index_tail(entry, index_types)
            prefixes.append(index_prefix + tail_b)
            owners.append(n)


def _rows(
    writes: _Writes,
    part: _Prepared,
    ids: range,
    version: int,
    seq: int,
    pack: Callable[[Any], bytes],
) -> None:
    """The writes of a part with few events: a loop per event, whose fixed cost
    is lower than :func:`_columns`'s."""
    key_put = writes.keys.append
    value_put = writes.values.append
    ev_prefix = keys.stream_prefix(part.stream_b)
    global_tag = keys.GLOBAL
    type_prefixes: Sequence[bytes | None] = part.type_prefixes or (None,) * part.n
    id16s = []
    for id_int, tail, g_head, type_prefix in zip(
        ids, part.tails, part.g_heads, type_prefixes, strict=True
    ):
        version += 1
        seq += 1
        id16 = id_int.to_bytes(16, "big")
        id16s.append(id16)
        seq_b = pack(seq)
        key_put(ev_prefix + id16)
        value_put(b"\x96" + pack(version) + seq_b + tail)
        key_put(global_tag + id16)
        value_put(g_head + seq_b)
        if type_prefix is not None:
            key_put(type_prefix + id16)
            value_put(b"")
    if part.index_prefixes:
        for prefix, id16 in zip(part.index_prefixes, _owners(part, id16s), strict=True):
            key_put(prefix + id16)
            value_put(b"")


def _columns(
    writes: _Writes,
    part: _Prepared,
    ids: range,
    version: int,
    seq: int,
    pack: Callable[[Any], bytes],
) -> None:
    """The writes of a part as columns, each made by map() in C."""
    n = part.n
    add = writes.add_column
    id16s = list(map(int.to_bytes, ids, repeat(16, n)))  # big-endian by default
    new_versions = range(version + 1, version + n + 1)
    if version + n < len(_RECORD_HEADS):
        heads: Iterator[bytes] = map(_RECORD_HEADS.__getitem__, new_versions)
    else:
        heads = map(operator.add, repeat(_RECORD_HEADER, n), map(pack, new_versions))
    seqs = list(map(pack, range(seq + 1, seq + n + 1)))
    add(
        list(map(keys.stream_prefix(part.stream_b).__add__, id16s)),
        list(map(operator.add, map(operator.add, heads, seqs), part.tails)),
    )
    add(list(map(keys.GLOBAL.__add__, id16s)), list(map(operator.add, part.g_heads, seqs)))
    if part.type_prefixes:
        add(list(map(operator.add, part.type_prefixes, id16s)), None)
    if part.index_prefixes:
        index_keys = list(map(operator.add, part.index_prefixes, _owners(part, id16s)))
        if len(index_keys) != len(part.index_prefixes):  # map() stops at the shorter
            raise AssertionError("index keys and their events disagree")
        add(index_keys, None)


def _owners(part: _Prepared, id16s: list[bytes]) -> Iterable[bytes]:
    """The id of the event that owns each of ``part``'s index key prefixes."""
    each = part.index_each
    if each == 1:
        return id16s
    if each > 1:
        return chain.from_iterable(map(repeat, id16s, repeat(each, len(id16s))))
    return map(id16s.__getitem__, part.index_owners)


def _unstorable(
    stream: str, n: int, type_: str, data: Any, metadata: Any, exc: Exception
) -> UnserialisableData:
    """The error for event ``n`` that would not pack or read back, naming the
    field at fault."""
    where = f"event {n} ({type_!r}) of stream {stream!r}"
    check_serialisable(data, f"data of {where}")
    check_serialisable(metadata, f"metadata of {where}")
    # Each fits alone, not together (nesting deeper than msgpack allows).
    return UnserialisableData(f"{where} cannot be stored: {exc}")


# A record is a fixarray header, a version and a seq of up to 9 bytes each,
# and the tail: its packed [type, data, metadata, indexes] less the header.
_MAX_TAIL = MAX_RECORD_BYTES - 19
_RECORD_HEADER = b"\x96"  # a fixarray of 6
# The header and packed version of records of the first versions of a stream.
_RECORD_HEADS = [_RECORD_HEADER + _packb(version) for version in range(4096)]
_DROP_HEAD = operator.itemgetter(slice(1, None))
_INDEX_TAILS: dict[tuple[str, str], bytes] = {}
_NO_INDEXES: dict[str, str] = {}  # only ever packed, never changed
_BULK = 8  # events in one part from which columns beat a loop per event
_JUST_NEW_EVENT = {NewEvent}
_JUST_STR = {str}
_PLAIN_INDEXES = {dict, NoneType}


def _index_tail(entry: tuple[str, str], index_types: bool) -> bytes:
    """``name NUL value NUL`` of a valid index entry, or the error for a bad one."""
    name, value = entry
    check_indexes({name: value}, index_types)
    tail_b = name.encode() + keys.SEP + value.encode() + keys.SEP
    if not index_types and name == TYPE_INDEX:
        return tail_b  # valid here, but not under index_types=True: do not cache
    if len(_INDEX_TAILS) >= 4096:
        _INDEX_TAILS.clear()
    _INDEX_TAILS[entry] = tail_b
    return tail_b


def _check_expected(expected: object) -> Expected:
    """``expected`` as an :data:`Expected`, checked at run time too (callers
    without a type checker pass anything)."""
    if isinstance(expected, ExpectedVersion):
        return expected
    if type(expected) is not int:
        raise InvalidType(
            f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int, got {expected!r}"
        )
    if expected < -1:
        raise InvalidArgument(f"expected_version {expected} is below -1")
    return expected


def _version_matches(expected: Expected, current: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return current == -1
    if expected is STREAM_EXISTS:
        return current >= 0
    return bool(expected == current)


def _drain(it: Iterator[Any]) -> None:
    deque(it, maxlen=0)


class _Writes:
    """The puts of one batch: single puts as two flat lists of bytes, always
    appended together, and columns of keys with their values (None for
    empty ones). Bytes are invisible to the garbage collector; a tuple per
    put would be one more live object for it to walk, and appends make
    several per event."""

    __slots__ = ("columns", "keys", "values")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.columns: list[tuple[list[bytes], list[bytes] | None]] = []

    def add(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self.values.append(value)

    def add_column(self, keys_: list[bytes], values: list[bytes] | None) -> None:
        self.columns.append((keys_, values))

    def put_into(self, put: Callable[[bytes, bytes], None]) -> None:
        # The put loops run in C (map, drained by a zero-length deque): a
        # Python loop costs as much as the puts.
        _drain(map(put, self.keys, self.values))
        for keys_, values in self.columns:
            _drain(map(put, keys_, repeat(b"", len(keys_)) if values is None else values))


class _Pending:
    """An append in the writer queue, in id order.

    Its ``writes`` are made under the writer lock but put into a LevelDB batch
    by the leader that writes it: plyvel releases the GIL on every put, and
    under contention each release hands the GIL to another thread, so puts
    are best made by one thread while the others wait. ``wake`` is held from
    birth and released exactly once, by a leader: when this append has been
    written, or when it is this append's turn to lead. So each appender
    wakes once (but after a leader that was cut short). An append that
    leads from birth (the queue was empty) waits for nobody and has no
    ``wake``.

    ``owner`` is the appending thread. An append whose thread is found
    outside it was abandoned (a KeyboardInterrupt cut it short before it was
    written): that thread waits for it when it next appends, and leads it
    when it heads the queue, as nobody else will; so do close() and
    compact() on that thread.
    """

    __slots__ = (
        "done",
        "error",
        "last_seq",
        "leads",
        "owner",
        "streams",
        "versions",
        "wake",
        "writes",
    )

    def __init__(
        self,
        writes: _Writes,
        versions: list[tuple[bytes, int]],
        last_seq: int,
        leads: bool,
        streams: int,
    ) -> None:
        self.writes = writes
        self.versions = versions
        self.last_seq = last_seq
        self.streams = streams  # the store's stream count once this is written
        self.done = False
        self.leads = leads
        self.owner = get_ident()
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None
        if not leads:
            self.wake = threading.Lock()
            self.wake.acquire()


def _release(wake: threading.Lock | None) -> None:
    """Make sure ``wake`` is released. None: it leads, and waits for nobody;
    already released: by a leader cut short, before this one."""
    if wake is not None:
        with contextlib.suppress(RuntimeError):
            wake.release()


_STALLED = 0.5  # seconds an appender waits before it checks for lost wake-ups
_VERSION_CACHE = 1 << 16  # streams whose committed version is kept in memory


# An imported event, checked: id, stream and type bytes, plain indexes, record.
_Imported = tuple[bytes, bytes, bytes, dict[str, str], bytes]


def _limited(events: Iterator[Event], limit: int | None) -> Iterator[Event]:
    return events if limit is None else islice(events, limit)


def _used_after_fork(path: str) -> UsedAfterFork:
    return UsedAfterFork(
        f"store {path!r} was opened by process {os.getppid()} (or an ancestor) and this "
        f"process ({os.getpid()}) is a child forked from it: the handle is the parent's and "
        "refuses everything here. Open the store after the fork (one process owns a "
        "store), or reach it through `eventstore serve`; see docs/operations.md"
    )


class _Forked:
    """What a store's locks and hot tier become in a child after fork():
    any use raises UsedAfterFork. A lock another thread of the parent held at
    the fork would never be released here, and the database's files, log
    and lock are the parent's."""

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise _used_after_fork(self._path)

    def __enter__(self) -> None:
        raise _used_after_fork(self._path)

    def __exit__(self, *exc: object) -> None:
        return None


class _Owner:
    """The process that opened a store handle, and the handle's append bounds.

    One attribute for the three: an instance dict of more than 30 keys loses
    CPython's shared-key layout, and with it the fast path of every
    ``self.x`` on the append path (measured: 0.6 us of a 14 us append).
    """

    __slots__ = ("max_bytes", "max_events", "pid")

    def __init__(self, pid: int, max_events: int, max_bytes: int) -> None:
        self.pid = pid
        self.max_events = max_events
        self.max_bytes = max_bytes


# The parent's plyvel objects, in a child: never freed there (see _disown).
_DISOWNED: list[Any] = []


class EventStore(Tiering, Transfer, Statistics):
    """An embedded event store. Open it with :meth:`open`; close it or use ``with``."""

    def __init__(
        self,
        path: str,
        *,
        sync: bool = False,
        index_types: bool | None = None,
        create: bool = True,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
        max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES,
        archive_cache_bytes: int = DEFAULT_ARCHIVE_CACHE_BYTES,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or path-like, got {type(path).__name__}")
        self.path = os.fspath(path)
        if not self.path:
            raise InvalidArgument("path must not be empty")
        self.sync = bool(sync)
        for name, bound in (
            ("max_append_events", max_append_events),
            ("max_append_bytes", max_append_bytes),
        ):
            if type(bound) is not int or bound < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {bound!r}")
        if type(archive_cache_bytes) is not int or archive_cache_bytes < 0:
            raise InvalidArgument(
                f"archive_cache_bytes must be an int >= 0, got {archive_cache_bytes!r}"
            )
        # One budget for the decoded chunks of every archive file (issue 19).
        self._block_cache = BlockCache(archive_cache_bytes)
        self._own = _Owner(os.getpid(), max_append_events, max_append_bytes)
        self._archive_dir = os.path.join(self.path, ARCHIVE_DIR)
        # Everything is checked before anything is written: a store that
        # refuses to open is left exactly as it was found.
        new = locate_store(self.path, create)
        if new:
            os.makedirs(self.path, exist_ok=True)
        check_folder(self._archive_dir)
        try:
            self._hot = HotTier(os.path.join(self.path, HOT_DIR), create=new)
        except plyvel.Error as exc:
            raise StoreDamaged(
                f"store {self.path}: its hot tier (LevelDB) does not open: {exc}; "
                f"{advice(self.path)}"
            ) from None
        files: tuple[ArchiveFile, ...] = ()
        try:
            state = self._read_state(index_types, create)
            files = tuple(open_files(self._archive_dir, state.entries))
            for f in files:
                f.reader.share_cache(self._block_cache)
            # Strays: numbers an interrupted compaction or merge was making or
            # had replaced, whose segment keys may exist.
            self._strays = state.strays
            named = {int(entry[0]) for entry in state.entries}
            reserved = (self._strays.making | self._strays.retired) - named
            ours, self.unexpected_files = classify_unnamed(
                self._archive_dir,
                {str(entry[1]) for entry in state.entries},
                reserved,
                held_by(self._hot.db, files, state.watermark),
            )
            # With no manifest, a file of the store's own naming that no
            # interrupted compaction explains means the manifest was lost.
            unexplained = [
                u.name
                for u in self.unexpected_files
                if (parsed := parse_name(u.name)) is not None and parsed[0] not in reserved
            ]
            if state.entries is _NO_FILES and unexplained:
                raise StoreDamaged(
                    f"store {self.path}: archive/ holds files of this store "
                    f"({', '.join(unexplained[:5])}) but the hot tier has no archive "
                    f"manifest naming them; {advice(self.path)}"
                )
            try:
                last = self._hot.view().last_global()
                if last is not None and (len(last[0]) != 16 or type(last[1]) is not int):
                    raise ValueError(f"the newest global entry is malformed: {last!r:.120}")
            except Exception as exc:  # plyvel's errors, or msgpack's on a damaged entry
                raise StoreDamaged(
                    f"store {self.path}: its hot tier (LevelDB) cannot be read: {exc}; "
                    f"{advice(self.path)}"
                ) from None
            # -- checked; from here on the open finishes interrupted work.
            self._index_types = self._settle_config(state.config, index_types)
            os.makedirs(self._archive_dir, exist_ok=True)
            # The segment keys of leftover numbers go first, then the files
            # proven the store's own, then the numbers.
            self.strays_swept = segments.sweep(
                self._hot.db,
                self._archive_dir,
                self._strays,
                named,
                {parsed[0] for parsed in map(parse_name, ours) if parsed and not parsed[1]},
            )
            for name in ours:
                os.remove(os.path.join(self._archive_dir, name))
            self.orphans_removed = ours
            if self._strays.making or self._strays.retired:
                self._strays.forget()
            # Never reuse a number whose keys may exist, nor the name of a
            # file left alone in the folder.
            self._next_file = max(
                state.next_file,
                self._strays.highest() + 1,
                highest_number(listing(self._archive_dir)) + 1,
            )
            watermark = state.watermark
            floor = int.from_bytes(last[0], "big") if last else 0
            self._seq = last[1] if last else 0
            if files:  # when every event is cold, the files hold the highs
                floor = max(floor, int.from_bytes(files[-1].last_id, "big"))
                self._seq = max(self._seq, files[-1].last_seq)
            # Ids below the watermark belong to the archive: never hand one out,
            # even if the clock now reads earlier than the last cutoff.
            floor = max(floor, int.from_bytes(watermark, "big") - 1)
            # Streams so far (issue 19): kept with every commit from here on.
            self._streams = counters.load_counts(
                self._hot.db, self._seq, self._hot.read_only is None
            )
        except BaseException:
            for f in files:
                f.reader.close()
            self._hot.close()
            raise
        self._ids = MonotonicULIDs(floor)
        # The archive files and watermark of this moment: replaced whole, never edited.
        self._tiers = Tiers(files, watermark)
        # Guards the (files, watermark) pair: a view takes both and a LevelDB
        # snapshot under it; a compaction commits and swaps both under it.
        self._tier_lock = threading.Lock()
        self._maintenance = threading.Lock()  # one compaction, merge or cleanup at a time
        self._lock = threading.Lock()  # versions, ids, seq and queue order
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)  # under _lock only
        self._written = threading.Condition(self._lock)  # a queued group was written
        self._drain_waiters = 0  # threads waiting on _written, under _lock
        self._leading = False  # a thread is inside _lead, under _lock
        self._in_flight: dict[int, _Pending] = {}  # thread -> its append being written
        self._queue: list[_Pending] = []
        self._reserved: dict[bytes, int] = {}  # stream -> version of queued, unwritten appends
        # stream -> committed version, for expected-version checks without a
        # LevelDB read under the writer lock; bounded, oldest entries dropped.
        self._versions: dict[bytes, int] = {}
        self._closed = False
        self._failed: BaseException | None = None
        # Woken after every commit: live subscribers wait here, not on a timer.
        self._committed = threading.Condition(threading.Lock())
        self._committed_seq = self._seq
        # Threads in wait_for_commit, under _committed's lock: a commit
        # notifies only when there are some (notify_all costs ~1 us even then).
        self._commit_waiters = 0
        self._cleaner: threading.Thread | None = None
        self._cleanup_from: bytes | None = None  # where cleanup's scan goes on
        forks.own(self)  # disowned in a child after fork()
        if watermark != bytes(16):  # finish what an interrupted cleanup left
            self._start_cleanup()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        sync: bool = False,
        index_types: bool | None = None,
        create: bool = True,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
        max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES,
        archive_cache_bytes: int = DEFAULT_ARCHIVE_CACHE_BYTES,
    ) -> EventStore:
        """Open the store in folder ``path``, creating it if ``create`` (the
        default) and the folder is missing or empty.

        ``sync=True`` makes every append durable before it returns.
        ``index_types`` (fixed when the store is created, default True) files
        every event under ``type=<its type>`` in its stream's indexes.
        ``max_append_events`` and ``max_append_bytes`` bound one append,
        ``append_many`` or import batch (default 100,000 events and 64 MiB of
        packed type, data, metadata and indexes); a larger one raises
        :class:`AppendTooLarge` and writes nothing.
        ``archive_cache_bytes`` (default 64 MiB) bounds the decoded blocks
        and index chunks kept in memory for all archive files together.
        Raises :class:`StoreLocked` if another process has the store open,
        :class:`StoreNotFound` if there is no store and ``create`` is False,
        :class:`NotAStore` for a folder holding other things,
        :class:`StoreDamaged` (or :class:`ArchiveMismatch`) for a store whose
        files are missing or do not agree, :class:`UnsafePath` for an
        ``archive`` that is a symlink or a file in it that is not a regular
        file. None of them changes anything on disk.
        The handle belongs to this process: used in a child after ``fork()``
        it raises :class:`UsedAfterFork` (see docs/operations.md).
        """
        return _open(
            cls,
            os.fspath(path),
            sync=sync,
            index_types=index_types,
            create=create,
            max_append_events=max_append_events,
            max_append_bytes=max_append_bytes,
            archive_cache_bytes=archive_cache_bytes,
        )

    def _read_state(self, index_types: bool | None, create: bool) -> _State:
        """The store's system keys, checked for shape; :class:`StoreDamaged`
        if they are unreadable or missing where the store's files say they
        must exist. Reads only."""
        db = self._hot.db

        def damaged(problem: str) -> StoreDamaged:
            return StoreDamaged(f"store {self.path}: {problem}; {advice(self.path)}")

        try:
            config = self._hot.get_system(b"config")
            raw_manifest = db.get(keys.MANIFEST)
            watermark = db.get(keys.WATERMARK)
            raw_strays = db.get(keys.STRAY)
            it = db.iterator(include_value=False)
            try:
                any_key = next(it, None)
            finally:
                it.close()
        except plyvel.Error as exc:
            raise damaged(f"its hot tier (LevelDB) cannot be read: {exc}") from None
        except Exception as exc:  # msgpack raises several unrelated types
            raise damaged(f"its configuration does not decode: {exc}") from None
        archived = [n for n in listing(self._archive_dir) if parse_name(n) is not None]
        if config is None:
            # Only a store that never finished its creation lacks a
            # configuration, and such a store holds nothing yet.
            if any_key is not None or archived:
                raise damaged("its hot tier has no configuration but holds data")
            if not create:
                raise StoreNotFound(
                    f"no store at {self.path}: its creation was cut short before it held "
                    "anything (pass create=True to finish making it)"
                )
        elif not isinstance(config, dict) or not isinstance(config.get("layout"), int):
            raise IncompatibleStore(f"store {self.path!r} has an unreadable configuration")
        else:
            if config["layout"] > LAYOUT_VERSION:
                raise IncompatibleStore(
                    f"store {self.path!r} has layout version {config['layout']}; "
                    f"this eventstore reads up to {LAYOUT_VERSION}"
                )
            stored = bool(config.get("index_types", True))
            if index_types is not None and bool(index_types) != stored:
                raise IncompatibleStore(
                    f"store {self.path!r} was created with index_types={stored}; "
                    "it cannot be reopened with a different setting"
                )
        if raw_manifest is None:
            if watermark is not None:
                raise damaged("its hot tier has a watermark but no archive manifest")
            entries, next_file = _NO_FILES, 1
        else:
            try:
                manifest = unpack(raw_manifest)
            except Exception as exc:  # msgpack raises several unrelated types
                raise damaged(f"its archive manifest does not decode: {exc}") from None
            if (
                not isinstance(manifest, dict)
                or type(manifest.get("next")) is not int
                or manifest["next"] < 1
            ):
                raise damaged("its archive manifest is not one this store writes")
            entries = check_entries(manifest.get("files"), self.path)
            next_file = manifest["next"]
            if watermark is None and entries:
                raise damaged("its archive manifest names files but it has no watermark")
        if watermark is not None and len(watermark) != 16:
            raise damaged("its watermark is not a ULID")
        try:
            strays = segments.Strays.load(db) if raw_strays is not None else None
        except Exception as exc:  # msgpack raises several unrelated types
            raise damaged(f"its record of files being made does not decode: {exc}") from None
        if strays is None:
            strays = segments.Strays(db, set(), set())
        elif not all(type(n) is int for n in strays.making | strays.retired):
            raise damaged("its record of files being made is not one this store writes")
        return _State(
            config, entries, next_file, bytes(16) if watermark is None else watermark, strays
        )

    def _settle_config(self, config: Any, index_types: bool | None) -> bool:
        """The store's ``index_types``, writing the configuration of a new
        store and migrating an older layout (``config`` passed _read_state's checks)."""
        if config is None:
            chosen = True if index_types is None else bool(index_types)
            self._hot.db.put(
                keys.system_key(b"config"),
                _packb({"layout": LAYOUT_VERSION, "index_types": chosen}),
                sync=True,
            )
            return chosen
        stored = bool(config.get("index_types", True))
        if config["layout"] < LAYOUT_VERSION:
            segments.migrate_legacy(self._hot.db)
            self._hot.db.put(
                keys.system_key(b"config"), _packb({**config, "layout": LAYOUT_VERSION}), sync=True
            )
        return stored

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store. Later calls raise :class:`StoreClosed`; closing twice is fine.

        In a child after ``fork()`` it raises :class:`UsedAfterFork` and
        releases nothing: the database and its lock are the parent's.
        """
        if self._own.pid != os.getpid():
            if self._closed:
                return  # closed before the fork: nothing is held, nothing to refuse
            raise _used_after_fork(self.path)
        # (It stays in forks' weak set: disowning a closed store changes nothing.)
        with self._maintenance, self._lock:
            if self._closed:
                return
            # Refuse new appends first, then let the queued ones finish: under
            # steady durable appends the queue would otherwise never drain.
            self._closed = True
            self._wait_for_queue(lambda: not self._queue)
            self._hot.close()
            for f in self._tiers.files:
                f.reader.close()
        with self._committed:
            self._committed.notify_all()

    def wait_for_commit(
        self,
        after_seq: int,
        timeout: float | None = None,
        *,
        until: Callable[[], bool] | None = None,
    ) -> int:
        """Block until an event with ``seq > after_seq`` is committed (and readable),
        the store closes, ``until()`` turns true (checked whenever waiters are
        woken), or ``timeout`` seconds pass. Returns the committed seq.

        Appends wake waiters directly; nothing polls.
        """
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        with self._committed:
            self._commit_waiters += 1
            try:
                self._committed.wait_for(
                    lambda: (
                        self._committed_seq > after_seq
                        or self._closed
                        or (until is not None and until())
                    ),
                    timeout,
                )
            finally:
                self._commit_waiters -= 1
            return self._committed_seq

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_for_commit` so it re-checks its ``until``."""
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        with self._committed:
            self._committed.notify_all()

    def subscribe(
        self,
        after: ULID | str | bytes | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        name: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Subscription:
        """Follow the global log after ``after`` (or from the checkpoint stored
        under ``name``): catch up, then deliver new events live as they commit.
        See :class:`eventstore.subscriptions.Subscription`.

        Raises:
            InvalidULID: ``after`` is not a ULID.
            InvalidName: ``name``, a type or ``stream_prefix`` is not a valid name.
            InvalidArgument: ``page_size`` below 1, both ``after`` and ``name``, or a checkpoint
                that holds no position.
            StoreClosed: the store is closed.
        """
        self._check_open()
        return Subscription(self, after, types, stream_prefix, name, page_size=page_size)

    # -- moving whole stores -----------------------------------------------------

    def import_events(
        self,
        events: Iterable[Event],
        *,
        batch_size: int = 4096,
        progress: Callable[[int], None] | None = None,
        clock_tolerance: timedelta | None = DEFAULT_IMPORT_CLOCK_TOLERANCE,
    ) -> int:
        """Append existing events keeping their ids, versions and seqs (an
        export's round trip). Each id must lie above every id the store holds,
        each seq continue the log without a gap, each version continue its
        stream; a violation raises :class:`InvalidArgument` before its batch
        (each written atomically) is written.

        A batch is ``batch_size`` events (at most the store's
        ``max_append_events``), or fewer when the next event would take it
        past ``max_append_bytes``. An id timed more than ``clock_tolerance``
        after this machine's clock (default one day; None: no limit), or in
        the last millisecond of the ULID space, raises :class:`IdOutOfRange`:
        every later id is made above it, so one id a century ahead would pin
        every later id and timestamp there, and the largest ULID would leave
        no id to make.

        Raises:
            InvalidArgument: an id not above the store's, or a seq or version that leaves a gap; its
                batch is not written.
            StoreClosed: the store is closed.
            IdOutOfRange: an id beyond ``clock_tolerance`` or in the ULID space's last millisecond.
            AppendTooLarge: ``batch_size`` above the store's ``max_append_events``.
        """
        self._check_open()
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size > self._own.max_events:
            raise AppendTooLarge(
                f"import batch_size {batch_size} is above the store's max_append_events "
                f"({self._own.max_events})"
            )
        tolerance_ms: int | None = None
        if clock_tolerance is not None:
            if not isinstance(clock_tolerance, timedelta) or clock_tolerance < timedelta(0):
                raise InvalidArgument(
                    f"clock_tolerance must be a timedelta >= 0 or None, got {clock_tolerance!r}"
                )
            tolerance_ms = clock_tolerance // timedelta(milliseconds=1)
        it = iter(events)
        carried: tuple[Event, _Imported] | None = None
        total = 0
        while True:
            # Checked and packed before the writer lock: packing may run user
            # code (a subclass's conversion), which may append in turn.
            chunk: list[Event] = []
            prepared: list[_Imported] = []
            size = 0
            now_ms = self._ids.now_ms()
            if carried is not None:
                chunk.append(carried[0])
                prepared.append(carried[1])
                size = len(carried[1][4])
                carried = None
            for event in it:
                ready = self._prepare_import(event, now_ms, tolerance_ms)
                if len(ready[4]) > self._own.max_bytes:
                    raise AppendTooLarge(
                        f"event {event.id} is a record of {len(ready[4])} bytes, above "
                        f"the store's max_append_bytes ({self._own.max_bytes})"
                    )
                if size + len(ready[4]) > self._own.max_bytes:
                    carried = (event, ready)  # starts the next batch
                    break
                chunk.append(event)
                prepared.append(ready)
                size += len(ready[4])
                if len(chunk) == batch_size:
                    break
            if not chunk:
                return total
            with self._lock:
                self._ready_to_queue()
                writes = _Writes()
                put = writes.add
                last_id, seq = self._ids.last, self._seq
                versions: dict[bytes, int] = {}
                started: list[bytes] = []  # streams at -1 before this batch
                for event, (id16, stream_b, type_b, indexes, record) in zip(
                    chunk, prepared, strict=True
                ):
                    id_int = int.from_bytes(id16, "big")
                    if id_int <= last_id or id16 < self._tiers.watermark:
                        raise InvalidArgument(
                            f"event {event.id} is not above the store's newest id "
                            f"{ulid_from_int(last_id)}: imports only extend a store"
                        )
                    if event.seq != seq + 1:
                        raise InvalidArgument(
                            f"event {event.id} has seq {event.seq}, expected {seq + 1}"
                        )
                    current = versions.get(stream_b)
                    if current is None:
                        current = self._current_version(stream_b)
                        if current < 0:
                            started.append(stream_b)
                    if event.version != current + 1:
                        raise InvalidArgument(
                            f"event {event.id} of stream {event.stream!r} has version "
                            f"{event.version}, expected {current + 1}"
                        )
                    put(keys.event_key(stream_b, id16), record)
                    put(
                        keys.GLOBAL + id16,
                        _packb([stream_b.decode(), type_b.decode(), event.seq]),
                    )
                    if self._index_types:
                        put(keys.index_key(stream_b, b"type", type_b, id16), b"")
                    for name, value in indexes.items():
                        put(keys.index_key(stream_b, name.encode(), value.encode(), id16), b"")
                    versions[stream_b] = event.version
                    last_id, seq = id_int, event.seq
                for stream_b, version in versions.items():
                    put(keys.meta_key(stream_b), _packb([version]))
                self._ids.raise_floor(last_id)
                fresh = counters.fresh_streams(started, versions)
                pending = self._enqueue(writes, list(versions.items()), seq, fresh)
            self._commit(pending)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))

    def _prepare_import(self, event: Event, now_ms: int, tolerance_ms: int | None) -> _Imported:
        """An imported event's id, stream and type bytes, plain indexes and
        record, checked; its place in the log is checked under the lock."""
        if type(event.version) is not int or type(event.seq) is not int:
            raise InvalidArgument(
                f"event {event.id} has version {event.version!r} and seq {event.seq!r}; "
                "both must be ints"
            )
        id16 = to_ulid_bytes(event.id)
        check_importable(int.from_bytes(id16, "big"), now_ms, tolerance_ms)
        stream_b = name_bytes(event.stream, "stream name")
        type_ = plain_name(event.type, "event type")
        type_b = name_bytes(type_, "event type")
        indexes = check_indexes(event.indexes, self._index_types)
        record = encode_record(event.version, event.seq, type_, event.data, event.metadata, indexes)
        if len(record) > MAX_RECORD_BYTES:
            raise InvalidArgument(
                f"event {event.id} is a record of {len(record)} bytes; "
                f"an event record holds at most {MAX_RECORD_BYTES}"
            )
        return id16, stream_b, type_b, indexes, record

    # -- snapshots and checkpoints -------------------------------------------

    def save_snapshot(self, stream: str, version: int, state: Any) -> None:
        """Store ``state`` as the stream's state after event ``version`` (the latest
        snapshot replaces the previous one).

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            InvalidArgument: ``version`` is negative or beyond the stream's last event.
            UnserialisableData: ``state`` holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        if type(version) is not int or version < 0:
            raise InvalidArgument(f"snapshot version must be a non-negative int, got {version!r}")
        check_serialisable(state, f"snapshot state of stream {stream!r}")  # errors name state[...]
        value = check_serialisable([version, state], f"snapshot state of stream {stream!r}")
        with self._lock:
            self._check_open()
            current = self._current_version(stream_b)
            if version > current:
                raise InvalidArgument(
                    f"snapshot of stream {stream!r} at version {version}, "
                    f"but the stream is at version {current}"
                )
            self._hot.db.put(keys.snapshot_key(stream_b), value, sync=self.sync)

    def load_snapshot(self, stream: str) -> Snapshot | None:
        """The stream's latest snapshot, or None.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        raw = self._view().hot.get_raw(keys.snapshot_key(stream_b))
        if raw is None:
            return None
        version, state = unpack(raw)
        return Snapshot(stream, version, state)

    def get_checkpoint(self, name: str) -> Any:
        """The value stored for checkpoint ``name``, or None.

        Raises:
            InvalidName: ``name`` is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        raw = self._view().hot.get_raw(keys.checkpoint_key(name_bytes(name, "checkpoint name")))
        return None if raw is None else unpack(raw)

    def set_checkpoint(self, name: str, value: Any) -> None:
        """Store ``value`` (a position, or a projection's state with its position)
        under ``name``, atomically.

        Raises:
            InvalidName: ``name`` is empty, not a str or holds NUL.
            UnserialisableData: ``value`` holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        key, packed = _checkpoint_put(name, value)
        with self._lock:
            self._check_open()
            self._hot.db.put(key, packed, sync=self.sync)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_append_events(self) -> int:
        """Events one append, ``append_many`` or import batch may hold."""
        return self._own.max_events

    @property
    def max_append_bytes(self) -> int:
        """Packed bytes (type, data, metadata, indexes) one append may hold."""
        return self._own.max_bytes

    def _disown(self) -> None:
        """In a child after fork(): make every use of this handle raise
        UsedAfterFork, and never free the parent's plyvel objects. Freeing
        them runs LevelDB's destructors, which wait for a compaction thread
        that does not exist here or lock a mutex a parent thread may have
        held at the fork, and close the parent's log file."""
        self._own.pid = 0  # no process's pid: _check_open refuses
        refuse: Any = _Forked(self.path)
        for obj in self._hot.disown():
            _keep_forever(obj)
        self._hot = refuse
        self._lock = self._maintenance = self._tier_lock = refuse
        self._written = self._committed = refuse

    def _check_readable(self) -> None:
        # ~0.1 us, a syscall: for forks that bypass os.register_at_fork (a C
        # extension's fork()); _disown covers the rest, get()'s fast path too.
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        if self._closed:
            raise StoreClosed(f"store {self.path!r} is closed")

    def _check_open(self) -> None:
        """Before a write: open, and writing. After a failed write the store
        refuses writes until it is reopened (ids, seqs and versions of the
        failed group were handed out, and LevelDB's log may end in a torn
        record that only a reopen puts behind it); reads go on."""
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        if self._closed:
            raise StoreClosed(f"store {self.path!r} is closed")
        if self._failed is not None:
            raise WritesRefused(
                f"store {self.path!r} failed to write ({self._failed!r}) and refuses writes; "
                "reads go on. Fix the cause (free space), then close and reopen it"
            )
        if self._hot.read_only is not None:
            raise WritesRefused(f"store {self.path!r} refuses writes: {self._hot.read_only}")

    # -- writes --------------------------------------------------------------

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically, if its version is as expected.

        ``expected_version`` is ANY, NO_STREAM, STREAM_EXISTS or the exact
        version of the stream's last event (-1 for a new stream). Raises
        :class:`WrongExpectedVersion` otherwise, writing nothing. More
        events or bytes than the store's bounds raise :class:`AppendTooLarge`.

        Raises:
            WrongExpectedVersion: the stream's version is not ``expected_version``; nothing is
                written.
            InvalidName: the stream, an event type, an index name or value is empty, not a str or
                holds NUL.
            InvalidType: an event is not a ``NewEvent``, or ``expected_version`` is not one of the
                above.
            InvalidArgument: no events, or ``expected_version`` below -1.
            UnserialisableData: data or metadata msgpack cannot carry (the message names the field).
            StoreClosed: the store is closed, or an earlier write failed.
            AppendTooLarge: more events or bytes than the store's bounds.
        """
        return self.append_many([(stream, events, expected_version)])[0]

    def append_many(
        self,
        appends: Iterable[tuple[str, Sequence[NewEvent], Expected]],
        *,
        checkpoint: tuple[str, Any] | None = None,
    ) -> list[AppendResult]:
        """Append to several streams in one atomic write: all of it lands or none.

        A stream may appear more than once; each part's expected version is
        checked against the stream as the earlier parts leave it.
        ``checkpoint=(name, value)`` stores a checkpoint in the same write, so
        a process manager records the events it emits and the position it
        consumed atomically. The whole append is bounded by the store's
        ``max_append_events`` and ``max_append_bytes`` (:class:`AppendTooLarge`).

        Raises:
            WrongExpectedVersion: a part's stream is not at its expected version; nothing is
                written.
            InvalidName: as :meth:`append`.
            InvalidType: a part is not a ``(stream, events, expected_version)`` tuple, or as
                :meth:`append`.
            InvalidArgument: no parts, a part with no events, or as :meth:`append`.
            UnserialisableData: as :meth:`append`.
            StoreClosed: the store is closed, or an earlier write failed.
            AppendTooLarge: as :meth:`append`, for the whole call.
        """
        self._check_open()  # at once: a forked or closed handle packs nothing
        parts = []
        room = self._own.max_events
        size = 0
        for item in appends:
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidType(
                    f"append_many takes (stream, events, expected_version) tuples, got {item!r:.80}"
                )
            part = _Prepared(item[0], item[1], item[2], self._index_types, room)
            room -= part.n
            size += part.size
            if size > self._own.max_bytes:
                raise AppendTooLarge(
                    f"append of {size} bytes or more (packed, up to stream {part.stream!r}): "
                    f"one append holds at most {self._own.max_bytes} "
                    "(max_append_bytes at open); split it"
                )
            parts.append(part)
        if not parts:
            raise InvalidArgument("append_many was given no appends")
        extra = None if checkpoint is None else _checkpoint_put(*checkpoint)
        with self._lock:
            self._ready_to_queue()
            writes, results, versions, fresh = self._assign(parts)
            if extra is not None:
                writes.add(*extra)
            pending = self._enqueue(writes, versions, results[-1].last_seq, fresh)
        self._commit(pending)
        return results

    def _assign(
        self, parts: list[_Prepared]
    ) -> tuple[_Writes, list[AppendResult], list[tuple[bytes, int]], int]:
        """Check versions, assign ids and seqs, make the writes (and count the
        streams they start). Under the writer
        lock, so nothing here should release the GIL: no LevelDB calls, but for
        the version of a stream the version cache does not hold. It changes
        nothing but the id generator (ids may be skipped): the seqs and
        versions it hands out are taken by _enqueue."""
        current: dict[bytes, int] = {}
        starts = []
        started: list[bytes] = []  # streams at -1 before this append
        total = 0
        for part in parts:
            version = current.get(part.stream_b)
            if version is None:
                version = self._current_version(part.stream_b)
                if version < 0:
                    started.append(part.stream_b)
            if not _version_matches(part.expected, version):
                raise WrongExpectedVersion(part.stream, part.expected, version)
            starts.append(version)
            current[part.stream_b] = version + part.n
            total += part.n
        ids = self._ids.next_ints(total)
        seq = self._seq
        writes = _Writes()
        pack = self._packer.pack
        results = []
        start = 0
        for part, version in zip(parts, starts, strict=True):
            n = part.n
            part_ids = ids[start : start + n]
            start += n
            if n < _BULK:
                _rows(writes, part, part_ids, version, seq, pack)
            else:
                _columns(writes, part, part_ids, version, seq, pack)
            results.append(
                AppendResult(
                    part.stream, UlidRange(part_ids), version + 1, version + n, seq + 1, seq + n
                )
            )
            seq += n
        versions = list(current.items())
        for stream_b, version in versions:
            writes.add(keys.meta_key(stream_b), pack([version]))
        return writes, results, versions, counters.fresh_streams(started, current)

    def _current_version(self, stream_b: bytes) -> int:
        version = self._reserved.get(stream_b)
        if version is None:
            version = self._versions.get(stream_b)
        if version is not None:
            return version
        try:
            raw = self._hot.db.get(keys.meta_key(stream_b), verify_checksums=True)
            return -1 if raw is None else int(msgpack.unpackb(raw)[0])
        except Exception as exc:
            mapped = storage_error(exc, f"reading the version of stream {stream_b!r}")
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    def _enqueue(
        self, writes: _Writes, versions: list[tuple[bytes, int]], last_seq: int, fresh: int
    ) -> _Pending:
        """Queue writes whose seqs end at ``last_seq``, which leave streams
        at ``versions`` and start ``fresh`` new ones. Under the writer lock."""
        # Whenever the queue is not empty its head leads; an appender that
        # finds it empty is the head, and nobody else will wake it. One that
        # finds its own thread's append at the head finds it abandoned, and
        # leads it (and whatever queued behind it) with its own.
        queue = self._queue
        me = get_ident()
        # (Its own head that is done is not abandoned: a leader cut short in
        # _written_group woke one appender of that group to lead it again.)
        leads = not queue or (queue[0].owner == me and not queue[0].done)
        pending = _Pending(writes, versions, last_seq, leads, self._streams + fresh)
        self._in_flight[me] = pending
        # The append takes its place here, and the seq and versions follow.
        # A KeyboardInterrupt lands only after a call: before the queue's
        # append nothing has changed, and after it _settle_queue finishes.
        queue.append(pending)
        self._seq = last_seq
        self._streams = pending.streams
        self._reserved.update(versions)
        return pending

    def _ready_to_queue(self) -> None:
        """Under the writer lock, before an append reads seqs and versions: the
        store is open, an append this thread abandoned (see _Pending) is
        written first (led by this thread when it heads the queue), and a
        cut-short _enqueue is settled. (The callers checked the pid before
        the lock: the syscall once per append.)"""
        if self._closed or self._failed is not None:
            self._check_open()
        left = self._in_flight.get(get_ident())
        if left is not None and not left.done:
            self._wait_for_queue(lambda: left.done)
            self._check_open()
        self._settle_queue()

    def _settle_queue(self) -> None:
        """Under the writer lock, before seqs and versions are read: take those
        of a queued append whose _enqueue a KeyboardInterrupt cut short."""
        queue = self._queue
        if queue and queue[-1].last_seq > self._seq:
            self._seq = queue[-1].last_seq
            self._streams = queue[-1].streams
            self._reserved.update(queue[-1].versions)

    def _wait_for_queue(self, written: Callable[[], bool]) -> None:
        """Under the writer lock: wait until ``written()``, leading any append
        this thread abandoned at the head of the queue (see _Pending)."""
        me = get_ident()
        self._drain_waiters += 1
        try:
            while not written():
                head = self._queue[0]
                if head.owner == me and not head.done:
                    self._lock.release()
                    try:
                        self._lead()
                    finally:
                        self._lock.acquire()
                else:
                    self._written.wait()
        finally:
            self._drain_waiters -= 1

    def _commit(self, pending: _Pending) -> None:
        """Wait until ``pending`` is written.

        The head of the queue leads: it writes every queued append in one
        LevelDB write (one fsync with ``sync=True``) while later appenders
        queue up behind it; then it wakes each of them, and the new head to
        lead the next group.
        """
        if not pending.leads:
            self._await_turn(pending)
        if not pending.done:
            self._lead()
        self._in_flight.pop(pending.owner, None)
        if pending.error is not None:
            # DiskFull, StorageError or damage, as the failure was; an
            # interrupt of the leader stops the store as a StoreClosed.
            doing = f"append to {self.path!r} failed to write"
            mapped = storage_error(pending.error, doing)
            if mapped is None or mapped is pending.error:
                mapped = StoreClosed(f"{doing}: {pending.error!r}")
            raise mapped from pending.error

    def _await_turn(self, pending: _Pending) -> None:
        """Wait until ``pending`` is written, or it is its turn to lead.

        A leader wakes it for either. If a KeyboardInterrupt cut that leader's
        wake-ups short, the wait times out, and the appender finds its append
        written, or itself at the head with nobody leading: then it leads.
        """
        wake = pending.wake
        assert wake is not None, "only an append queued behind another waits"
        while not wake.acquire(timeout=_STALLED):
            with self._lock:
                if pending.done or (self._queue[0] is pending and not self._leading):
                    return

    def _lead(self) -> None:
        """Write the queue (its head is the caller's) as one LevelDB batch."""
        with self._lock:
            self._settle_queue()  # this group may hold a cut-short _enqueue's append
            group = list(self._queue)
            self._leading = True
        failed = self._failed
        if failed is None:
            try:
                batch = self._hot.db.write_batch(sync=self.sync)
                put = batch.put
                for item in group:
                    item.writes.put_into(put)
                # The counts with the events they count (eventstore/counters.py).
                put(keys.COUNTS, counters.pack_counts(group[-1].streams, group[-1].last_seq))
                batch.write()
            except BaseException as exc:
                # Ids, seqs and versions of the whole group were handed out;
                # continuing would leave gaps, so the store stops here.
                self._failed = failed = exc
        self._written_group(group, failed)
        if failed is None:
            with self._committed:
                # max: the next leader, woken above, may have published first.
                if group[-1].last_seq > self._committed_seq:
                    self._committed_seq = group[-1].last_seq
                if self._commit_waiters:
                    self._committed.notify_all()

    def _written_group(self, group: list[_Pending], failed: BaseException | None) -> None:
        """Mark a group written (or failed), take it off the queue, and wake its
        appenders and the next head to lead.

        A KeyboardInterrupt can cut this short anywhere, so the ``finally``
        wakes whoever must go on: all the group if it left the queue, or else
        one appender of it still not done, which leads the queue again (the
        group with it: rewriting the same keys changes nothing), never two.
        """
        n = len(group)
        with self._lock:
            left = False
            try:
                for item in group:
                    item.error = failed
                    item.done = True
                del self._queue[:n]
                left = True  # no call between these two: no interrupt either
                # Versions before reservations: cut short, a stream is still
                # found in one of them.
                versions = self._versions
                for item in group:
                    for stream_b, version in item.versions:
                        versions.pop(stream_b, None)  # re-inserted as the newest
                        versions[stream_b] = version
                        if self._reserved.get(stream_b) == version:
                            del self._reserved[stream_b]
                if len(versions) > _VERSION_CACHE:
                    for stream_b in list(islice(versions, len(versions) - _VERSION_CACHE // 2)):
                        del versions[stream_b]
            finally:
                self._leading = False  # first, and no call before it: never left stale
                if not left and all(item.done for item in group):
                    del self._queue[:n]
                    left = True
                if left:
                    if self._queue:
                        _release(self._queue[0].wake)
                    for item in group[1:]:
                        _release(item.wake)
                else:
                    for item in group[1:]:
                        if not item.done:
                            _release(item.wake)
                            break
                if self._drain_waiters:  # close() and compact() wait for the queue
                    self._written.notify_all()

    # -- reads ---------------------------------------------------------------

    def _view(self) -> View:
        self._check_readable()
        with self._tier_lock:
            tiers = self._tiers
            return View(self._hot.view(tiers.watermark), tiers)

    def stream_version(self, stream: str) -> int:
        """Version of the stream's last committed event; -1 if the stream does not exist.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        return self._view().hot.stream_version(stream_b)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """A stream's events in order, from ``from_version`` on (or down, backwards).

        ``from_version=None`` starts at the first event, or the last when
        reading backwards. The view is taken when this is called.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            InvalidArgument: ``from_version`` or ``limit`` is negative or not an int.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        if from_version is not None and (type(from_version) is not int or from_version < 0):
            raise InvalidArgument(f"from_version must be a non-negative int, got {from_version!r}")
        check_limit(limit)
        view = self._view()
        return _limited(view.read_stream(stream, stream_b, from_version, backwards), limit)

    def read_index(
        self,
        stream: str,
        name: str,
        value: str,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The events of ``stream`` filed under index ``name=value``, in order.

        Raises:
            InvalidName: the stream, index name or value is empty, not a str or holds NUL.
            InvalidArgument: ``limit`` is negative or not an int.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        name_b = name_bytes(name, "index name")
        value_b = name_bytes(value, "index value")
        check_limit(limit)
        view = self._view()
        return _limited(view.read_index(stream, stream_b, name_b, value_b, backwards), limit)

    def get(self, event_id: ULID | str | bytes) -> Event | None:
        """The event with this id, or None. A malformed id raises ``InvalidULID``.

        Raises:
            InvalidULID: ``event_id`` is not a ULID, its 26-character string or 16 bytes.
            StoreClosed: the store is closed.
        """
        id16 = event_id.bytes if type(event_id) is ULID else to_ulid_bytes(event_id)
        if self._closed:
            self._check_readable()
        tiers = self._tiers
        if id16 >= tiers.watermark:
            # Hot: two point reads without a snapshot. Events never change, so
            # only a compaction racing us (moving the event cold, deleting its
            # hot keys) can make them disagree, and then the tiers differ.
            found = self._hot.get_event(id16)
            if found is not False and self._tiers is tiers:
                return found  # type: ignore[return-value]
        return self._view().get(id16)

    def read_all(
        self,
        after: ULID | str | bytes | None = None,
        backwards: bool = False,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        from_seq: int | None = None,
    ) -> Iterator[Event]:
        """The global log in commit order, strictly after position ``after``.

        Backwards, it yields the events before ``after`` (or from the newest),
        newest first. ``from_seq`` starts at that global sequence number
        instead (inclusive; downwards from it when backwards). ``types`` and
        ``stream_prefix`` filter on the global entry, so rejected events'
        records are never read.

        Raises:
            InvalidULID: ``after`` is not a ULID.
            InvalidName: a type or ``stream_prefix`` is not a str (an ``InvalidNameType``).
            InvalidArgument: ``from_seq`` or ``limit`` is negative, or both ``after`` and
                ``from_seq`` are given.
            StoreClosed: the store is closed.
        """
        after16 = None if after is None else to_ulid_bytes(after)
        if from_seq is not None:
            if type(from_seq) is not int or from_seq < 0:
                raise InvalidArgument(f"from_seq must be a non-negative int, got {from_seq!r}")
            if after is not None:
                raise InvalidArgument("give read_all either after or from_seq, not both")
        type_set = _check_types(types)
        if stream_prefix is not None and not isinstance(stream_prefix, str):
            raise InvalidNameType(
                f"stream_prefix must be a str, got {type(stream_prefix).__name__}"
            )
        check_limit(limit)
        view = self._view()
        if from_seq is not None:
            # Seq and id grow together: start from the id at that seq, inclusive.
            found = view.id_of_seq(from_seq, backwards)
            if found is None:
                return iter(())
            at = int.from_bytes(found, "big") + (1 if backwards else -1)
            after16 = at.to_bytes(16, "big")
        return _limited(view.read_all(after16, backwards, type_set, stream_prefix), limit)

    @property
    def last_seq(self) -> int:
        """``seq`` of the newest committed event (0 for an empty store)."""
        self._check_readable()
        with self._committed:
            return self._committed_seq

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventStore {self.path!r} {state}>"


def _keep_forever(obj: Any) -> None:
    """One more reference to ``obj`` than anything will drop, so that not even
    the interpreter's shutdown frees it (a list would be cleared then)."""
    import ctypes  # only ever in a forked child

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    _DISOWNED.append(obj)


def _checkpoint_put(name: str, value: Any) -> tuple[bytes, bytes]:
    key = keys.checkpoint_key(name_bytes(name, "checkpoint name"))
    return key, check_serialisable(value, f"checkpoint {name!r}")


def _check_types(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    checked = frozenset(types)
    for type_ in checked:
        name_bytes(type_, "event type")
    return checked


# The boundary of the public entry points that are not on the hot path:
# raw plyvel, OS and decoding errors leave them as EventStoreErrors (reads
# are mapped at the hot tier's gate, appends where the batch is written).


@at_boundary("opening the store")
def _open(cls: type[EventStore], path: str, **options: Any) -> EventStore:
    return cls(path, **options)


for _name, _decoding in [
    ("compact", True),
    ("merge_archives", True),
    ("cleanup", True),
    ("backup", True),
    ("verify", True),
    ("load_snapshot", True),
    ("get_checkpoint", True),
    ("import_events", False),  # packs user values: their errors are theirs
    ("save_snapshot", False),
    ("set_checkpoint", False),
]:
    setattr(
        EventStore,
        _name,
        at_boundary(_name.replace("_", " "), _decoding)(getattr(EventStore, _name)),
    )

__all__ = ["EventStore", "IncompatibleStore", "ulid_from_bytes"]
