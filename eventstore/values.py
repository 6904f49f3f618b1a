"""Values beyond msgpack's own: aware datetimes, UUIDs, Decimals, and your types.

Each is stored as a msgpack ext value with a code of eventstore's (the bytes
are specified in docs/FORMAT.md, "Ext types"), the same in both tiers:

======  =====================  ===============================================
code    Python value           ext data
======  =====================  ===============================================
120     aware ``datetime``     int64 UTC instant (us since 1970), int64 UTC
                               offset (us), a flags byte, the zone's name
121     ``uuid.UUID``          its 16 bytes
122     ``decimal.Decimal``    ``str(value)`` in ASCII
======  =====================  ===============================================

Decoding builds only these standard-library values from bounded bytes; data
that is not a valid encoding comes back as the inert ``msgpack.ExtType`` it
is, so a read never fails on it and never runs code. Codes 120..127 are
eventstore's; :func:`register_ext` gives codes 0..119 to your own types
(encoded when appended; decoded when read only if you registered a decoder).
"""

from __future__ import annotations

import builtins
import logging
import re
import struct
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from .errors import InvalidArgument

__all__ = [
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_UUID",
    "FIRST_RESERVED_CODE",
    "decode_builtin",
    "decode_ext",
    "register_ext",
    "unregister_ext",
    "zone",
]

log = logging.getLogger(__name__)

EXT_DATETIME = 120
EXT_UUID = 121
EXT_DECIMAL = 122
FIRST_RESERVED_CODE = 120  # 120..127 are eventstore's; 0..119 are yours

_TUPLE_NEW = tuple.__new__
_EPOCH = datetime(1970, 1, 1)  # naive: wall times are counted from it
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_DT_HEAD = struct.Struct(">qqB")
_FOLD, _KIND_SHIFT = 0x01, 1
_FIXED, _ZONE, _NAMED = 0, 1, 2  # the kinds of tzinfo kept
_MAX_ZONE_NAME = 255
# An IANA key: no absolute path, no "..": ZoneInfo reads a file named by it.
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
_UUID_INT = vars(uuid.UUID)["int"]  # slot descriptor: read storage, not a property


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    ext: msgpack.ExtType = _TUPLE_NEW(msgpack.ExtType, (code, data))
    return ext


# -- datetime ------------------------------------------------------------------------


def encode_datetime(value: datetime) -> msgpack.ExtType:
    """An aware datetime as ext 120; ``TypeError`` for a naive one, or a tzinfo
    that would not come back as itself."""
    tz = value.tzinfo
    offset = value.utcoffset()
    if tz is None or offset is None:
        raise TypeError(
            "a naive datetime (no tzinfo) cannot be stored: its instant is unknown; "
            "give it a timezone, e.g. value.replace(tzinfo=datetime.UTC)"
        )
    name = b""
    if type(tz) is timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]  # (offset[, name])
        kind = _NAMED if len(args) == 2 else _FIXED
        if kind == _NAMED:
            name = str(args[1]).encode("utf-8", "surrogatepass")
    elif type(tz) is ZoneInfo and tz.key is not None and _ZONE_KEY.fullmatch(tz.key):
        kind, name = _ZONE, tz.key.encode("ascii")
    else:
        raise TypeError(
            f"a datetime with tzinfo {type(tz).__name__} {tz!r} cannot be stored exactly: "
            "use datetime.timezone or zoneinfo.ZoneInfo(key)"
        )
    if len(name) > _MAX_ZONE_NAME:
        raise TypeError(f"time zone name is {len(name)} bytes; at most {_MAX_ZONE_NAME}")
    offset_us = offset // _US
    wall_us = (datetime.replace(value, tzinfo=None) - _EPOCH) // _US
    flags = (kind << _KIND_SHIFT) | (_FOLD if value.fold else 0)
    return _ext(EXT_DATETIME, _DT_HEAD.pack(wall_us - offset_us, offset_us, flags) + name)


def _decode_datetime(data: bytes) -> datetime | None:
    if len(data) < _DT_HEAD.size or len(data) > _DT_HEAD.size + _MAX_ZONE_NAME:
        return None
    instant_us, offset_us, flags = _DT_HEAD.unpack_from(data)
    kind = flags >> _KIND_SHIFT
    name_b = data[_DT_HEAD.size :]
    if not -_DAY_US < offset_us < _DAY_US or kind > _NAMED or (kind == _FIXED) != (not name_b):
        return None
    try:
        wall = _EPOCH + timedelta(microseconds=instant_us + offset_us)
        offset = timedelta(microseconds=offset_us)
        tz: timezone | ZoneInfo
        if kind == _FIXED:
            tz = timezone(offset)
        elif kind == _NAMED:
            tz = timezone(offset, name_b.decode("utf-8", "surrogatepass"))
        else:
            tz = zone(name_b.decode("ascii"))
    except Exception:  # out of range, bad text, a zone this machine lacks
        return None
    return wall.replace(tzinfo=tz, fold=flags & _FOLD)


def zone(key: str) -> ZoneInfo:
    """``ZoneInfo(key)`` for a well-formed IANA key this machine has;
    ``ValueError`` otherwise (ZoneInfo opens a file named by the key: no
    absolute paths, no ``..``)."""
    if len(key) > _MAX_ZONE_NAME or not _ZONE_KEY.fullmatch(key):
        raise ValueError(f"{key[:60]!r} is not an IANA time zone key")
    try:
        return ZoneInfo(key)
    except Exception:  # ZoneInfoNotFoundError, or a file that is no zone
        raise ValueError(f"time zone {key!r} is not known on this machine") from None


# -- UUID and Decimal ----------------------------------------------------------------


def encode_uuid(value: uuid.UUID) -> msgpack.ExtType:
    return _ext(EXT_UUID, _UUID_INT.__get__(value).to_bytes(16, "big"))


def _decode_uuid(data: bytes) -> uuid.UUID | None:
    return uuid.UUID(bytes=bytes(data)) if len(data) == 16 else None


def encode_decimal(value: Decimal) -> msgpack.ExtType:
    return _ext(EXT_DECIMAL, Decimal.__str__(value).encode("ascii"))


def _decode_decimal(data: bytes) -> Decimal | None:
    try:
        text = bytes(data).decode("ascii")
        value = Decimal(text)
    except Exception:  # not ASCII, not a number (or a context that does not trap that)
        return None
    # Only the canonical text: Decimal() also takes spaces and underscores.
    return value if Decimal.__str__(value) == text else None


_BUILTIN_DECODERS: dict[int, Callable[[bytes], Any]] = {
    EXT_DATETIME: _decode_datetime,
    EXT_UUID: _decode_uuid,
    EXT_DECIMAL: _decode_decimal,
}

# -- your types ---------------------------------------------------------------------

_registry_lock = threading.Lock()
# Replaced whole, never edited: readers use them without the lock.
_encoders: dict[type, tuple[int, Callable[[Any], bytes]]] = {}
_decoders: dict[int, Callable[[bytes], Any]] = {}


def register_ext(
    code: int,
    type: type | None = None,
    *,
    encode: Callable[[Any], bytes] | None = None,
    decode: Callable[[bytes], Any] | None = None,
) -> None:
    """Store values of ``type`` as msgpack ext ``code`` (0..119), in this process.

    ``encode(value)`` returns the ext's bytes; it runs when a value of
    ``type`` (or a subclass) is appended. ``decode(data)``, if given, builds
    the value again when an event holding ext ``code`` is read (in both tiers,
    and while compacting); without one, reads return the inert
    ``msgpack.ExtType(code, data)``, so a store stays readable by a process
    that never registered your codec. A decoder that raises is logged and its
    value returned inert: a read never fails on your code. Registering a code
    again replaces its codec; :func:`unregister_ext` removes it.
    """
    global _encoders, _decoders
    if builtins.type(code) is not int:
        raise InvalidArgument(f"ext code must be an int, got {code!r}")
    if not 0 <= code < FIRST_RESERVED_CODE:
        raise InvalidArgument(
            f"ext code {code} is not yours: use 0..{FIRST_RESERVED_CODE - 1} "
            f"({FIRST_RESERVED_CODE}..127 are eventstore's, negative codes msgpack's)"
        )
    if (type is None) != (encode is None):
        raise InvalidArgument("register_ext needs both type and encode, or neither")
    if type is not None and not isinstance(type, builtins.type):
        raise InvalidArgument(f"register_ext wants a class, got {type!r}")
    if encode is None and decode is None:
        raise InvalidArgument("register_ext needs an encoder (type and encode) or a decoder")
    for fn in (encode, decode):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{fn!r} is not callable")
    with _registry_lock:
        encoders = {t: e for t, e in _encoders.items() if e[0] != code}
        if type is not None and encode is not None:
            if type in _BUILTIN_TYPES:
                raise InvalidArgument(f"{type.__name__} is stored by eventstore itself")
            encoders[type] = (code, encode)
        decoders = {c: d for c, d in _decoders.items() if c != code}
        if decode is not None:
            decoders[code] = decode
        _encoders, _decoders = encoders, decoders


def unregister_ext(code: int) -> None:
    """Forget the codec of ext ``code``: its values are refused when appended
    and come back inert when read."""
    global _encoders, _decoders
    with _registry_lock:
        _encoders = {t: e for t, e in _encoders.items() if e[0] != code}
        _decoders = {c: d for c, d in _decoders.items() if c != code}


_BUILTIN_TYPES = (datetime, uuid.UUID, Decimal)


def encode_value(value: Any) -> msgpack.ExtType | None:
    """The ext value for a value msgpack does not pack itself, or None if
    neither eventstore nor a registered codec stores its type. Raises
    ``TypeError`` for a value of a known type that cannot be stored."""
    encoders = _encoders
    if encoders:
        for klass in builtins.type(value).__mro__:
            entry = encoders.get(klass)
            if entry is not None:
                code, encode = entry
                try:
                    data = encode(value)
                except Exception as exc:
                    raise TypeError(
                        f"the encoder registered for {klass.__name__} (ext {code}) failed: {exc!r}"
                    ) from exc
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(
                        f"the encoder registered for {klass.__name__} (ext {code}) returned "
                        f"{builtins.type(data).__name__}, not bytes"
                    )
                return _ext(code, bytes(data))
    if isinstance(value, datetime):
        return encode_datetime(value)
    if isinstance(value, uuid.UUID):
        return encode_uuid(value)
    if isinstance(value, Decimal):
        return encode_decimal(value)
    return None


def decode_builtin(code: int, data: bytes) -> Any:
    """:func:`decode_ext` without registered decoders: eventstore's own types
    only, so checks of stored bytes (``verify``, compaction) run no user code."""
    builtin = _BUILTIN_DECODERS.get(code)
    if builtin is not None:
        value = builtin(data)
        if value is not None:
            return value
    return _ext(code, data)


def decode_ext(code: int, data: bytes) -> Any:
    """The ext hook of every decode: eventstore's types and registered
    decoders build their value; anything else, or bytes that are not a
    valid encoding, comes back as the inert ``msgpack.ExtType`` it is
    (whatever its code: ``ExtType``'s own constructor refuses codes outside
    0..127). Never raises."""
    builtin = _BUILTIN_DECODERS.get(code)
    if builtin is not None:
        value = builtin(data)
        if value is not None:
            return value
    else:
        decoder = _decoders.get(code)
        if decoder is not None:
            try:
                return decoder(data)
            except Exception:
                log.warning("the decoder registered for ext %d failed", code, exc_info=True)
    return _ext(code, data)
