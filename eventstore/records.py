"""The event record and the checks every name and value passes before a write.

A record is one msgpack array, the same bytes in both tiers:
``[version, seq, type, data, metadata, indexes]`` for an untagged event, and
``[version, seq, type, data, metadata, indexes, tags]`` for a tagged one
(``tags``: a non-empty array of distinct strs, sorted by their UTF-8 bytes).
Decoding never runs code (but a decoder you registered, see :mod:`eventstore.values`): eventstore's
ext types (aware datetimes, UUIDs, Decimals) decode to their values, other
ext values come back as inert ``msgpack.ExtType`` values, and every length
is bounded by the bytes actually present.
"""

from __future__ import annotations

import gc
import threading
import uuid
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import accumulate, compress
from typing import Any

import msgpack

from . import values
from .errors import (
    CorruptFile,
    InvalidArgument,
    InvalidName,
    InvalidNameType,
    InvalidType,
    UnserialisableData,
)

_TUPLE_NEW = tuple.__new__
MAX_NAME_BYTES = 1024
# The largest record the archive format holds (a 64 MiB chunk less its
# framing); the hot tier refuses larger ones, so every event can go cold.
MAX_RECORD_BYTES = (64 << 20) - 64
TYPE_INDEX = "type"

# The most tags one event carries: each is a key in the tag index.
MAX_TAGS = 256

Record = tuple[int, int, str, Any, Any, dict[str, str], tuple[str, ...]]


def plain_name(value: object, what: str) -> str:
    """``value`` as a plain str: a str subclass becomes the string it holds,
    so that checks, keys and the packed record all see the same text (and
    none of them a method the subclass overrides)."""
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise InvalidNameType(f"{what} must be a str, got {type(value).__name__}")
    return str.__str__(value)


# Names that passed name_bytes, by their plain text: appends and reads meet
# the same few streams and types again and again, and the checks and the
# encoding cost more than the lookup. Bounded (names of up to 128 bytes: a
# few MiB at most); cleared whole when full.
_VALID_NAMES: dict[str, bytes] = {}
_MAX_VALID_NAMES = 8192
_MAX_CACHED_NAME = 128


def name_bytes(value: object, what: str) -> bytes:
    """UTF-8 bytes of a stream, index or type name, or :class:`InvalidName`."""
    if type(value) is str:  # exact str only: a subclass's __hash__ and __eq__ never run
        known = _VALID_NAMES.get(value)
        if known is not None:
            return known
    plain = plain_name(value, what)
    raw = _checked_name(plain, what)
    if len(raw) <= _MAX_CACHED_NAME:
        if len(_VALID_NAMES) >= _MAX_VALID_NAMES:
            _VALID_NAMES.clear()
        _VALID_NAMES[plain] = raw
    return raw


def _checked_name(value: str, what: str) -> bytes:
    if not value:
        raise InvalidName(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidName(f"{what} {value!r} contains a NUL character")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"{what} {value!r} is not valid Unicode text") from None
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidName(f"{what} is {len(raw)} bytes long; the limit is {MAX_NAME_BYTES}")
    return raw


def check_limit(limit: object) -> None:
    """Refuse a read ``limit`` that is not None or a non-negative int."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgument(f"limit must be a non-negative int or None, got {limit!r}")


def check_indexes(indexes: object, index_types: bool) -> dict[str, str]:
    """A plain dict of validated index entries (empty when ``indexes`` is None)."""
    if indexes is None:
        return {}
    if not isinstance(indexes, Mapping):
        raise InvalidType(f"indexes must be a mapping of str to str, got {type(indexes).__name__}")
    checked: dict[str, str] = {}
    for name, value in indexes.items():
        name_bytes(name, "index name")
        name, value = plain_name(name, "index name"), plain_name(value, "index value")
        name_bytes(value, f"value of index {name!r}")
        if name in checked:
            raise InvalidName(f"index name {name!r} is given twice")
        if index_types and name == TYPE_INDEX:
            raise InvalidName(
                "index name 'type' is reserved for the event type index "
                "(open the store with index_types=False to use it yourself)"
            )
        checked[name] = value
    return checked


def check_tags(tags: object) -> tuple[str, ...]:
    """Validated tags, duplicates dropped, sorted by UTF-8 bytes (empty for None)."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (Sequence, set, frozenset)):
        raise InvalidType(f"tags must be a sequence of str, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"an event carries at most {MAX_TAGS} tags, got {len(tags)}")
    seen: dict[bytes, str] = {}
    for tag in tags:
        tag = plain_name(tag, "tag")
        seen[name_bytes(tag, "tag")] = tag
    return tuple(seen[b] for b in sorted(seen))


def _ext(value: msgpack.ExtType) -> msgpack.ExtType:
    code, data = tuple.__getitem__(value, 0), tuple.__getitem__(value, 1)
    if type(code) is not int or not -128 <= code <= 127:
        raise TypeError(f"ext code {code!r} is not in -128..127")
    ext: msgpack.ExtType = _TUPLE_NEW(msgpack.ExtType, (code, data))
    return ext


_SECONDS = vars(msgpack.Timestamp)["seconds"]  # slot descriptors: read storage
_NANOSECONDS = vars(msgpack.Timestamp)["nanoseconds"]

# How the Encoder packs a subclass of a type msgpack packs: as its base
# type, read from its storage as msgpack reads it without ``strict_types``,
# not through methods the subclass overrides (a ``(str, Enum)`` member is
# its value, not ``str()`` of it). A dict subclass that overrides
# ``__iter__`` is read through its keys and ``__getitem__``, as ``dict()``
# reads it. In order: an ExtType is a tuple.
_CONVERSIONS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    (msgpack.ExtType, _ext),
    (list, list.copy),
    (tuple, lambda v: list(tuple.__iter__(v))),
    (dict, dict.copy),
    (str, str.__str__),
    (int, int.__int__),
    (float, float.__float__),
    ((bytes, bytearray), lambda v: bytes(memoryview(v))),
    (msgpack.Timestamp, lambda v: msgpack.Timestamp(_SECONDS.__get__(v), _NANOSECONDS.__get__(v))),
)


_EXT_EXACT = frozenset({datetime, uuid.UUID, Decimal})


class Encoder:
    """Packs user values (event data, metadata, snapshots) into msgpack, refusing
    any value that would not decode back.

    msgpack packs a tuple used as a map key, but decodes it as a list, which
    cannot be a dict key; and an ``ExtType`` with code -1 that is not a valid
    timestamp packs but never decodes. Rather than decode every record again,
    the packer runs with ``strict_types`` (faster, and it hands subclasses of
    the built-ins to :meth:`_default`): only a value that went through a
    conversion there (a tuple, a subclass), or whose bytes hold 0xFF (ext
    -1's type byte, never in UTF-8), is decoded once to prove it reads back,
    with every map's keys distinct.
    """

    __slots__ = ("busy", "pack", "suspect")

    def __init__(self) -> None:
        # Values that might be map keys; a non-empty list means "decode to check".
        self.suspect: list[object] = []
        # Set while packing: user code run by a conversion (a dict subclass's
        # __getitem__, say) that appends again gets a fresh Encoder, as a
        # Packer cannot pack two values at once.
        self.busy = False
        self.pack: Callable[[Any], bytes] = msgpack.Packer(
            use_bin_type=True, autoreset=True, strict_types=True, default=self._default
        ).pack

    def _default(self, value: Any) -> Any:
        """Subclasses of the types msgpack packs go as their base type (see
        ``_CONVERSIONS``); each is decode-checked, as a tuple may be a map key
        and a converted subclass may now equal another key of its map.
        Registered codecs and eventstore's own ext types (datetime, UUID,
        Decimal) come first."""
        ext = values.encode_value(value)
        if ext is not None:
            if type(value) not in _EXT_EXACT:
                # A subclass (or a registered type) may be unequal to a key
                # its decoded value equals.
                self.suspect.append(value)
            return ext
        for base, convert in _CONVERSIONS:
            if isinstance(value, base):
                self.suspect.append(value)
                return convert(value)
        raise TypeError(
            f"msgpack cannot carry {type(value).__name__} values (store it as a str, "
            "bytes or a dict, or register a codec with eventstore.values.register_ext)"
        )

    def needs_check(self, packed: bytes) -> bool:
        """Whether ``packed`` (the last value packed) must be decoded to prove it
        reads back."""
        if self.suspect:
            self.suspect.clear()
            return True
        return 0xFF in packed  # an int needle is a memchr, 7x faster than a bytes one

    def check(self, value: Any, field: str) -> bytes:
        """msgpack bytes of ``value``, or :class:`UnserialisableData` naming
        ``field`` and the path of the offending value inside it."""
        self.suspect.clear()
        self.busy = True
        try:
            packed = self.pack(value)
            refuse_bad_ext(packed, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnserialisableData(
                f"{field} cannot be stored: {_culprit(value, _root_name(field)) or exc}"
            ) from None
        finally:
            self.busy = False
        if self.needs_check(packed):
            try:
                reads_back(packed)
            except Exception as exc:  # msgpack raises several unrelated types
                raise UnserialisableData(
                    f"{field} cannot be stored: it would not read back ({exc}); map keys "
                    "must be distinct str, bytes, int, float, bool or None, and ext "
                    "code -1 is reserved for msgpack timestamps"
                ) from None
        return packed


_local = threading.local()


def encoder() -> Encoder:
    """This thread's :class:`Encoder` (a reused Packer is 4x faster than
    ``packb``), or a new one if this thread is packing already."""
    try:
        enc: Encoder = _local.encoder
    except AttributeError:
        enc = _local.encoder = Encoder()
    return Encoder() if enc.busy else enc


def _distinct_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise ValueError("a map holds the same key twice")
    return mapping


def reads_back(packed: bytes) -> Any:
    """``packed`` decoded, or an exception unless it decodes as the value that
    was packed: every map key hashable and distinct (eventstore's ext types
    decoded: a datetime key must not meet an equal one), every ext value
    valid."""
    return msgpack.unpackb(
        packed,
        raw=False,
        strict_map_key=False,
        ext_hook=values.decode_builtin,  # no user decoder runs in a check
        object_pairs_hook=_distinct_keys,
    )


def inert_ext(code: int, data: bytes) -> Any:
    """The ext hook of every decode (:func:`eventstore.values.decode_ext`):
    eventstore's ext types and registered decoders build their values,
    anything else comes back as the ``msgpack.ExtType`` it went in as,
    whatever its code. Never raises. (Code -1 is msgpack's timestamp:
    decoded before any hook, and checked when appended.)"""
    return values.decode_ext(code, data)


# The bytes that start an ext value in msgpack (fixext 1..16, ext 8/16/32),
# and a table that deletes every other byte: a C-speed test of whether packed
# bytes may hold an ext value at all.
_EXT_HEADS = bytes([0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8])
_NOT_EXT_HEADS = bytes(b for b in range(256) if b not in _EXT_HEADS)
_MARK_EXT_HEADS = bytes(1 if b in _EXT_HEADS else 0 for b in range(256))


def may_hold_ext(packed: bytes) -> bool:
    """Whether ``packed`` holds a byte that starts an ext value (often a
    false alarm: such bytes occur inside floats, ints and strings)."""
    # Eight memchr calls (an int needle): a third of a translate() that
    # deletes every other byte, on a record of ~90 bytes.
    return (
        0xC7 in packed
        or 0xC8 in packed
        or 0xC9 in packed
        or 0xD4 in packed
        or 0xD5 in packed
        or 0xD6 in packed
        or 0xD7 in packed
        or 0xD8 in packed
    )


class _ExtFound(Exception):
    pass


def _ext_found(code: int, data: bytes) -> Any:
    raise _ExtFound


def holds_ext(packed: bytes) -> bool:
    """Whether ``packed`` holds an ext value: decoded (in C, strings left
    undecoded) only if its bytes may."""
    if not may_hold_ext(packed):
        return False
    try:
        msgpack.unpackb(packed, raw=True, strict_map_key=False, ext_hook=_ext_found)
    except _ExtFound:
        return True
    except Exception:  # would not decode: let the walk decide
        return True
    return False


def refuse_bad_ext(packed: bytes, *originals: Any) -> None:
    """``ValueError`` if the values ``packed`` was made from hold an
    ``ExtType`` whose code is outside -128..127: msgpack packs only the low
    byte of the code, which would store it as another code. (ExtType's
    constructor refuses such codes, but ``_replace``, ``_make`` and
    ``tuple.__new__`` do not.) The values are walked only when the packed
    bytes hold an ext value."""
    if holds_ext(packed):
        trouble = max(map(_ext_trouble, originals), default=_FINE)
        if trouble == _BAD_CODE:
            raise ValueError("an ExtType has a code outside -128..127")
        if trouble == _DECODED_CODE:
            reads_back(packed)  # as a key, it may now equal another key of its map


def first_bad_ext(packed: list[bytes], *columns: Sequence[Any]) -> int:
    """The index of the first of ``packed`` (made from ``columns[k][n]`` for
    record ``n``) whose values hold an ``ExtType`` with a code outside
    -128..127, or -1. For a batch: the bytes are searched at once, and only
    records with a byte that may start an ext value are looked into."""
    joined = b"".join(packed)
    if not joined.translate(None, _NOT_EXT_HEADS):
        return -1
    # Every ext head byte made 0x01, the rest 0x00: one find() per record hit.
    marks = joined.translate(_MARK_EXT_HEADS)
    ends = list(accumulate(map(len, packed)))
    find = marks.find
    order: list[int] = []
    i = find(1)
    while i >= 0:
        n = bisect_right(ends, i)
        order.append(n)
        i = find(1, ends[n])  # on from the next record: one hit a record is enough
    values = [column[n] for n in order for column in columns]
    if not _may_hold_ext_type(values):
        return -1
    for n in order:
        trouble = max(_ext_trouble(column[n]) for column in columns)
        if trouble == _BAD_CODE:
            return n
        if trouble == _DECODED_CODE:
            try:
                reads_back(packed[n])
            except Exception:  # keys that collide once decoded
                return n
    return -1


def _may_hold_ext_type(values: list[Any]) -> bool:
    """Whether ``values`` may hold an ``ExtType``: a breadth-first walk in C
    (``gc.get_referents`` of plain containers), level by level; any type
    but the plain ones (a subclass, say) makes it answer True, for the
    walk in Python to decide."""
    level = values
    while level:
        kinds = set(map(type, level))
        if not kinds <= _KNOWN:
            return True
        if not kinds & _CONTAINERS:
            return False
        level = gc.get_referents(*compress(level, map(_CONTAINERS.__contains__, map(type, level))))
    return False


# Leaves: nothing inside them can be an ExtType.
_PLAIN = frozenset(
    {str, int, float, bool, bytes, type(None), datetime, uuid.UUID, Decimal, msgpack.Timestamp}
)
_CONTAINERS = frozenset({dict, list, tuple})
_KNOWN = _PLAIN | _CONTAINERS


_FINE, _DECODED_CODE, _BAD_CODE = 0, 1, 2


def _ext_trouble(value: Any) -> int:
    """``_BAD_CODE`` if ``value`` holds an ``ExtType`` with a code outside
    -128..127; else ``_DECODED_CODE`` if it holds one with a code that reads
    decode (eventstore's 120..122: made by hand, it may decode to a value
    equal to another key of its map); else ``_FINE``."""
    found = _FINE
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind in _PLAIN:
            continue
        if kind is dict:
            extend(item.keys())
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif isinstance(item, msgpack.ExtType):
            code = tuple.__getitem__(item, 0)
            if type(code) is not int or not -128 <= code <= 127:
                return _BAD_CODE
            if code in _DECODED_CODES:
                found = _DECODED_CODE
        elif isinstance(item, dict):  # subclasses, read as the Encoder reads them
            extend(dict.keys(item))
            extend(dict.values(item))
        elif isinstance(item, list):
            extend(list.__iter__(item))
        elif isinstance(item, tuple):
            extend(tuple.__iter__(item))
    return found


_DECODED_CODES = frozenset({values.EXT_DATETIME, values.EXT_UUID, values.EXT_DECIMAL})


def _children(item: Any, path: str) -> list[tuple[Any, str]]:
    """The values inside a container, with their paths; read through the
    base types' own methods, as the Encoder reads subclasses."""
    if isinstance(item, msgpack.ExtType):
        return []
    if isinstance(item, dict):
        out: list[tuple[Any, str]] = []
        for key, value in dict.items(item):
            out.append((key, f"{path} (a key)" if path else " (a key)"))
            out.append((value, f"{path}[{key!r}]"))
        return out
    if isinstance(item, list):
        return [(v, f"{path}[{n}]") for n, v in enumerate(list.__iter__(item))]
    if isinstance(item, tuple):
        return [(v, f"{path}[{n}]") for n, v in enumerate(tuple.__iter__(item))]
    return []


def _bad_ext_path(value: Any, root: str) -> str | None:
    stack = [(value, root)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, msgpack.ExtType):
            code = tuple.__getitem__(item, 0)
            if type(code) is not int or not -128 <= code <= 127:
                return f" at {path}" if path else ""
        else:
            stack.extend(reversed(_children(item, path)))
    return None


def encode_record(
    version: int,
    seq: int,
    type_: str,
    data: Any,
    metadata: Any,
    indexes: dict[str, str],
    tags: Sequence[str] = (),
) -> bytes:
    """A whole record, for a caller that validated nothing yet (imports).
    ``tags`` must already be checked (:func:`check_tags`)."""
    enc = encoder()
    fields = [version, seq, type_, data, metadata, indexes]
    if tags:
        fields.append(list(tags))
    try:
        return enc.check(fields, "event record")
    except UnserialisableData:
        enc.check(data, f"event data of type {type_!r}")
        enc.check(metadata, f"event metadata of type {type_!r}")
        raise


def _root_name(field: str) -> str:
    """What a field's values are called in error paths: ``data``, ``metadata``..."""
    for word in field.split()[:2]:
        if word in ("data", "metadata", "state"):
            return word
    return "value"


def _culprit(value: Any, root: str) -> str | None:
    """Where inside ``value`` (named ``root``) the first value msgpack cannot
    carry is, and why: ``data['items'][3]['price'] is a Money: ...``; None if
    no single value is at fault (say, nesting too deep)."""
    bad = _bad_ext_path(value, root)
    if bad is not None:
        return f"the ExtType{bad} has a code outside -128..127 (msgpack would store another)"
    stack = [(value, root)]
    while stack:
        item, path = stack.pop()
        children = _children(item, path)
        if children or isinstance(item, (dict, list, tuple, msgpack.ExtType)):
            if isinstance(item, msgpack.ExtType) and not isinstance(
                tuple.__getitem__(item, 1), (bytes, bytearray)
            ):
                return f"{path} is an ExtType whose data is not bytes"
            stack.extend(reversed(children))
            continue
        try:
            Encoder().pack(item)
        except (TypeError, ValueError, OverflowError) as exc:
            what = type(item).__name__
            article = "an" if what[:1].lower() in "aeiou" else "a"
            return f"{path} is {article} {what}: {exc}"
    return None


def check_serialisable(value: Any, field: str) -> bytes:
    """msgpack bytes of ``value``, or :class:`UnserialisableData` naming ``field``."""
    return encoder().check(value, field)


def unpack(raw: bytes) -> Any:
    """Decode msgpack bytes without running code (ext values come back inert)."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)


def decode_record(raw: bytes, where: str = "record", offset: int = 0) -> Record:
    """The seven fields of a record (tags ``()`` when it has six);
    :class:`CorruptFile` if they are not there."""
    try:
        rec = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptFile(where, offset, f"undecodable event record: {exc}") from None
    if not (
        type(rec) is list
        and 6 <= len(rec) <= 7
        and type(rec[0]) is int
        and type(rec[1]) is int
        and type(rec[2]) is str
        and type(rec[5]) is dict
    ):
        raise CorruptFile(where, offset, "malformed event record")
    tags: tuple[str, ...] = ()
    if len(rec) == 7:
        raw_tags = rec[6]
        if (
            type(raw_tags) is not list
            or not raw_tags
            or any(type(t) is not str for t in raw_tags)
            or [t.encode() for t in raw_tags] != sorted({t.encode() for t in raw_tags})
        ):
            raise CorruptFile(where, offset, "malformed tags in event record")
        tags = tuple(raw_tags)
    return rec[0], rec[1], rec[2], rec[3], rec[4], rec[5], tags


def record_version(raw: bytes) -> int:
    """The version field of a record, read from its first bytes without a full decode."""
    # A record is a fixarray (0x96) whose first element is a non-negative int.
    tag = raw[1]
    if tag < 0x80:
        return tag
    if tag == 0xCC:
        return raw[2]
    if tag == 0xCD:
        return int.from_bytes(raw[2:4], "big")
    if tag == 0xCE:
        return int.from_bytes(raw[2:6], "big")
    if tag == 0xCF:
        return int.from_bytes(raw[2:10], "big")
    raise ValueError("record does not start with a version")
