"""One event, two views: how a stored :class:`Event` looks on KurrentDB's wire,
and how an event proposed over the wire is stored (see docs/server.md).

- Positions: ``commit_position = prepare_position = seq * POSITION_STEP``.
  ``seq`` never changes (not across compaction, merge or restart), so neither
  do positions; the step keeps them from being contiguous, as KurrentDB's are
  not, so that no client comes to rely on ``position + 1``.
- Event ids: a client's UUID is kept in the reserved index ``$uuid`` of the
  event's stream (which also finds it again for idempotent re-appends); an
  event appended in-process shows its ULID's 128 bits as its UUID.
- Data and custom metadata arrive as bytes and are stored as bytes; an
  in-process event's msgpack values are shown as JSON when JSON can carry
  them exactly, else as msgpack. The content type is kept in the reserved
  index ``$content-type`` only when it is not the one the data implies.
"""

from __future__ import annotations

import json
import math
from typing import Any
from uuid import UUID

import msgpack

from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, NewEvent

POSITION_STEP = 256
UUID_INDEX = "$uuid"
CONTENT_TYPE_INDEX = "$content-type"
OCTET_STREAM = "application/octet-stream"
JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/vnd.msgpack"
TICKS_PER_MS = 10_000  # KurrentDB's "created" is in 100 ns ticks since the Unix epoch

# KurrentDB's numbers for the symbolic expected versions, in error texts and v2.
EXPECTED_NUMBERS: dict[Any, int] = {NO_STREAM: -1, ANY: -2, STREAM_EXISTS: -4}


def position_of(seq: int) -> int:
    return seq * POSITION_STEP


def first_seq_at(position: int) -> int:
    """The first seq whose position is at or after ``position``."""
    return max(1, math.ceil(position / POSITION_STEP))


def event_uuid(event: Event) -> str:
    stored = event.indexes.get(UUID_INDEX)
    if stored is not None:
        return stored
    return str(UUID(bytes=event.id.bytes))


def created_ticks(event: Event) -> int:
    return int.from_bytes(event.id.bytes[:6], "big") * TICKS_PER_MS


def _json_exact(value: Any) -> bool:
    """True when JSON carries ``value`` and gives it back unchanged."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    return False  # bytes inside, tuples (msgpack gives lists back), ...


def encode_value(value: Any) -> tuple[bytes, str]:
    """Bytes and content type of an in-process data or metadata value."""
    if isinstance(value, bytes):
        return value, OCTET_STREAM
    if _json_exact(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), JSON_TYPE
    return msgpack.packb(value, use_bin_type=True), MSGPACK_TYPE


def wire_data(event: Event) -> tuple[bytes, str]:
    """The data bytes and content type a client sees."""
    data, implied = encode_value(event.data)
    return data, event.indexes.get(CONTENT_TYPE_INDEX, implied)


def wire_metadata(event: Event) -> bytes:
    if event.metadata is None:
        return b""
    return encode_value(event.metadata)[0]


def new_event(
    event_type: str, content_type: str, uuid: str, data: bytes, custom_metadata: bytes
) -> NewEvent:
    """How an event proposed over gRPC is stored."""
    indexes = {UUID_INDEX: uuid}
    if content_type != OCTET_STREAM:
        indexes[CONTENT_TYPE_INDEX] = content_type
    return NewEvent(event_type, data, custom_metadata or None, indexes)


def parse_uuid(uuid_msg: Any) -> str:
    """The canonical text of a ``shared.UUID`` (string or structured form)."""
    form = uuid_msg.WhichOneof("value")
    if form == "string":
        return str(UUID(uuid_msg.string))
    if form == "structured":
        most = uuid_msg.structured.most_significant_bits & (2**64 - 1)
        least = uuid_msg.structured.least_significant_bits & (2**64 - 1)
        return str(UUID(int=(most << 64) | least))
    raise ValueError("event id is missing")


def expected_number(expected: Any) -> int:
    return expected if isinstance(expected, int) else EXPECTED_NUMBERS[expected]
