"""The event record and the checks every name and value passes before a write.

A record is one msgpack array, the same bytes in both tiers:
``[version, seq, type, data, metadata, indexes]``. Decoding never runs code:
msgpack ext types come back as inert ``msgpack.ExtType`` values, and every
length is bounded by the bytes actually present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from .errors import (
    CorruptFile,
    InvalidArgument,
    InvalidName,
    InvalidNameType,
    InvalidType,
    UnserialisableData,
)

MAX_NAME_BYTES = 1024
TYPE_INDEX = "type"

Record = tuple[int, int, str, Any, Any, dict[str, str]]


def name_bytes(value: object, what: str) -> bytes:
    """UTF-8 bytes of a stream, index or type name, or :class:`InvalidName`."""
    if not isinstance(value, str):
        raise InvalidNameType(f"{what} must be a str, got {type(value).__name__}")
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
        name_bytes(value, f"value of index {name!r}")
        if index_types and name == TYPE_INDEX:
            raise InvalidName(
                "index name 'type' is reserved for the event type index "
                "(open the store with index_types=False to use it yourself)"
            )
        checked[name] = value
    return checked


def encode_record(
    version: int, seq: int, type_: str, data: Any, metadata: Any, indexes: dict[str, str]
) -> bytes:
    try:
        packed: bytes = msgpack.packb(
            [version, seq, type_, data, metadata, indexes], use_bin_type=True
        )
        return packed
    except (TypeError, ValueError, OverflowError):
        for field, value in (("data", data), ("metadata", metadata)):
            try:
                msgpack.packb(value, use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as exc:
                raise UnserialisableData(
                    f"event {field} of type {type_!r} cannot be stored: {exc} "
                    f"(offending value type: {_culprit(value)})"
                ) from None
        raise


def _culprit(value: Any) -> str:
    """The type name of the first value inside ``value`` that msgpack rejects."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            try:
                msgpack.packb(item, use_bin_type=True)
            except (TypeError, ValueError, OverflowError):
                return type(item).__name__
    return type(value).__name__


def check_serialisable(value: Any, field: str) -> bytes:
    """msgpack bytes of ``value``, or :class:`UnserialisableData` naming ``field``."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnserialisableData(
            f"{field} cannot be stored: {exc} (offending value type: {_culprit(value)})"
        ) from None


def unpack(raw: bytes) -> Any:
    """Decode msgpack bytes without running code and without following ext hooks."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def decode_record(raw: bytes, where: str = "record", offset: int = 0) -> Record:
    """The six fields of a record; :class:`CorruptFile` if they are not there."""
    try:
        rec = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptFile(where, offset, f"undecodable event record: {exc}") from None
    if not (
        type(rec) is list
        and len(rec) == 6
        and type(rec[0]) is int
        and type(rec[1]) is int
        and type(rec[2]) is str
        and type(rec[5]) is dict
    ):
        raise CorruptFile(where, offset, "malformed event record")
    return rec[0], rec[1], rec[2], rec[3], rec[4], rec[5]


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
