"""Preparing an append: validating, packing and keying its events.

``_Prepared`` checks and packs one stream's part outside the writer lock;
``_rows`` and ``_columns`` build its keys (stream, global and index
entries) into ``_Writes`` once the writer has assigned versions, ids and
seqs under the lock; they are made as columns so the lock only joins them.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, repeat
from types import NoneType
from typing import Any

import msgpack

from . import keys
from .errors import (
    AppendTooLarge,
    EventStoreError,
    InvalidArgument,
    InvalidType,
    UnserialisableData,
)
from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Event,
    Expected,
    ExpectedVersion,
    NewEvent,
    RemovedEvent,
)
from .ids import check_importable, to_ulid_bytes
from .records import (
    MAX_RECORD_BYTES,
    TYPE_INDEX,
    Encoder,
    check_indexes,
    check_serialisable,
    check_tags,
    encode_record,
    encoder,
    first_bad_ext,
    may_hold_ext,
    name_bytes,
    plain_name,
    reads_back,
    refuse_bad_ext,
)

_packb = msgpack.packb

# One append (or append_many, or import batch) at most: far above what an
# application appends at once, far below what holds the writer lock for
# seconds or builds a gigabyte of keys. Configurable at open.
DEFAULT_MAX_APPEND_EVENTS = 100_000
DEFAULT_MAX_APPEND_BYTES = 64 << 20


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
        "tag_lists",
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
        # A plain list first: the ABC check costs more than the rest of this test.
        if type(events) is not list and (
            isinstance(events, (NewEvent, str, bytes)) or not isinstance(events, Sequence)
        ):
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
        # Per event its checked tags, or None when no event has any (the
        # common case: nothing per event is kept).
        self.tag_lists: list[tuple[str, ...]] | None = None
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
        types_, datas, metas, indexes, tags = zip(*events, strict=True)
        if set(map(type, types_)) != _JUST_STR or any(tags):
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
        type_heads = _TYPE_HEADS
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
            type_, data, metadata, indexes, tags = event
            checked = _NO_TAGS if tags is None else check_tags(tags)
            if checked:
                if self.tag_lists is None:
                    self.tag_lists = [()] * self.n
                self.tag_lists[n] = checked
            # Keyed by plain text, and the record takes its type from the
            # entry: the record, its global entry and its type index key
            # agree whatever a str subclass's __eq__ and __hash__ say.
            try:
                if type(type_) is str:  # across appends too: none of a subclass's code runs
                    global_head, type_prefix, type_ = type_heads[stream, type_]
                else:
                    global_head, type_prefix, type_ = by_type[type_]
            except (KeyError, TypeError):  # a new type, or no str at all
                type_ = plain_name(type_, "event type")
                type_b = name_bytes(type_, "event type")
                type_prefix = index_prefix + b"type\x00" + type_b + keys.SEP
                global_head = b"\x93" + pack(stream) + pack(type_)
                by_type[type_] = (global_head, type_prefix, type_)
                if len(type_prefix) <= _MAX_CACHED_PREFIX:  # bounded bytes too
                    if len(type_heads) >= _MAX_TYPE_HEADS:
                        type_heads.clear()
                    type_heads[stream, type_] = by_type[type_]  # type_ is plain text now
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
                if not checked:
                    packed = pack([type_, data, metadata, indexes])
                else:  # the 7th record field (docs/FORMAT.md)
                    packed = pack([type_, data, metadata, indexes, list(checked)])
                if may_hold_ext(packed):  # refuse_bad_ext's own first test: two calls fewer
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
    is lower than :func:`_columns`'s; every tagged part is written here."""
    if part.tag_lists is not None:
        _tagged_rows(writes, part, ids, version, seq, pack)
        return
    if part.n == 1:  # most commands append one event: no loop, fewer calls
        id16 = ids[0].to_bytes(16, "big")
        seq_b = pack(seq + 1)
        value = _RECORD_HEADS[version + 1] if version < 4095 else b"\x96" + pack(version + 1)
        if part.type_prefixes:
            writes.keys.extend(
                (
                    keys.EVENT + part.stream_b + keys.SEP + id16,
                    keys.GLOBAL + id16,
                    part.type_prefixes[0] + id16,
                )
            )
            writes.values.extend((value + seq_b + part.tails[0], part.g_heads[0] + seq_b, b""))
        else:
            writes.keys.extend((keys.EVENT + part.stream_b + keys.SEP + id16, keys.GLOBAL + id16))
            writes.values.extend((value + seq_b + part.tails[0], part.g_heads[0] + seq_b))
        if part.index_prefixes:
            writes.keys.extend([prefix + id16 for prefix in part.index_prefixes])
            writes.values.extend(repeat(b"", len(part.index_prefixes)))
        return
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
    if part.tag_lists is not None:
        _tagged_rows(writes, part, ids, version, seq, pack)
        return
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


def _tagged_rows(
    writes: _Writes,
    part: _Prepared,
    ids: range,
    version: int,
    seq: int,
    pack: Callable[[Any], bytes],
) -> None:
    """The writes of a part some of whose events carry tags: each tagged
    record has 7 fields, and one ``t`` key per tag whose value is the
    event's global entry ([stream, type, seq]), so a tag query filters on
    type and seq without reading the record."""
    tag_lists = part.tag_lists
    assert tag_lists is not None
    put = writes.add
    ev_prefix = keys.stream_prefix(part.stream_b)
    type_prefixes: Sequence[bytes | None] = part.type_prefixes or (None,) * part.n
    id16s = []
    for id_int, tail, g_head, type_prefix, tags in zip(
        ids, part.tails, part.g_heads, type_prefixes, tag_lists, strict=True
    ):
        version += 1
        seq += 1
        id16 = id_int.to_bytes(16, "big")
        id16s.append(id16)
        seq_b = pack(seq)
        head = _TAGGED_HEADER if tags else _RECORD_HEADER
        put(ev_prefix + id16, head + pack(version) + seq_b + tail)
        entry = g_head + seq_b
        put(keys.GLOBAL + id16, entry)
        if type_prefix is not None:
            put(type_prefix + id16, b"")
        for tag in tags:
            put(keys.TAG + tag.encode() + keys.SEP + id16, entry)
    if part.index_prefixes:
        for prefix, id16 in zip(part.index_prefixes, _owners(part, id16s), strict=True):
            put(prefix + id16, b"")


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
# (stream, type) -> the global entry head and type index prefix of its
# events, and the type: plain str only. Bounded; cleared whole when full.
_TYPE_HEADS: dict[tuple[str, str], tuple[bytes, bytes, str]] = {}
_MAX_TYPE_HEADS = 4096
_MAX_CACHED_PREFIX = 256  # bytes of a type index prefix: a few MiB for the cache at most
_NO_INDEXES: dict[str, str] = {}  # only ever packed, never changed
_NO_TAGS: tuple[str, ...] = ()
_TAGGED_HEADER = b"\x97"  # a fixarray of 7: a record with tags
_BULK = 8  # events in one part from which columns beat a loop per event
_FEW_PUTS = 6  # puts up to which a Python loop beats map() drained by a deque
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
        # Python loop costs as much as the puts. But for the few puts of a
        # single event, whose loop costs less than the map and deque.
        if len(self.keys) <= _FEW_PUTS:
            for key, value in zip(self.keys, self.values, strict=True):
                put(key, value)
        else:
            _drain(map(put, self.keys, self.values))
        for keys_, values in self.columns:
            _drain(map(put, keys_, repeat(b"", len(keys_)) if values is None else values))


# An imported event, checked and packed before the writer lock: its id,
# stream and type bytes, plain indexes, record and tags.
Imported = tuple[bytes, bytes, bytes, dict[str, str], bytes, tuple[str, ...]]


def prepare_import(
    event: Event | RemovedEvent, now_ms: int, tolerance_ms: int | None, index_types: bool
) -> Imported:
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
    if isinstance(event, RemovedEvent):  # a husk, as a scavenge leaves it
        husk = encode_record(event.version, event.seq, type_, None, None, {})
        return id16, stream_b, type_b, {}, husk, ()
    indexes = check_indexes(event.indexes, index_types)
    # A redacted event lost its tags with its data (retention.redact_event).
    tags = () if getattr(event, "redacted", False) else check_tags(event.tags)
    record = encode_record(
        event.version, event.seq, type_, event.data, event.metadata, indexes, tags
    )
    if len(record) > MAX_RECORD_BYTES:
        raise InvalidArgument(
            f"event {event.id} is a record of {len(record)} bytes; "
            f"an event record holds at most {MAX_RECORD_BYTES}"
        )
    return id16, stream_b, type_b, indexes, record, tags


def import_rows(
    writes: _Writes, imported: Imported, seq: int, index_types: bool, pack: Callable[[Any], bytes]
) -> None:
    """The keys of one imported event (its record, global entry and index
    entries), as an append writes them (docs/FORMAT.md is the archive's; the
    layout is keys.py's)."""
    id16, stream_b, type_b, indexes, record, tags = imported
    put = writes.add
    put(keys.event_key(stream_b, id16), record)
    entry = pack([stream_b.decode(), type_b.decode(), seq])
    put(keys.GLOBAL + id16, entry)
    for tag in tags:
        put(keys.tag_key(tag.encode(), id16), entry)
    if index_types:
        put(keys.index_key(stream_b, b"type", type_b, id16), b"")
    for name, value in indexes.items():
        put(keys.index_key(stream_b, name.encode(), value.encode(), id16), b"")
