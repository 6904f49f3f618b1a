"""Soft delete and tombstone, by KurrentDB's rules, on the ``$$stream`` convention.

A stream ``s`` has its metadata in the stream ``$$s``: each event of type
``$metadata`` there replaces the last one (its data is a JSON object, as
bytes, or a dict appended in-process). What the store honours of it:

- ``$tb`` (truncate before): versions below it read as absent. A soft
  delete writes ``$tb = last version + 1``, so the stream reads as not found,
  and an append goes on from the next version (expected ``NO_STREAM`` works
  on it again, as on KurrentDB). ``$all`` still holds the events: removing
  their bytes is the retention/scavenging work's (docs/guarantees.md, guarantee 11).
- A tombstone is an event of type ``$streamDeleted`` in ``$$s``: the stream
  (and its metadata stream) is deleted for ever; reads and appends refuse.

This sits on the store's public API: the check of the expected version and
the metadata write are two steps, so a delete racing an append to the same
stream may leave that append visible (the served path takes one lock for both).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from .errors import InvalidArgument, StreamDeleted, WrongExpectedVersion
from .events import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, NewEvent
from .store import EventStore

METADATA_TYPE = "$metadata"
TOMBSTONE_TYPE = "$streamDeleted"
TRUNCATE_BEFORE = "$tb"


class StreamState(NamedTuple):
    version: int  # the last version ever written, -1 if none
    truncate_before: int
    tombstoned: bool
    metadata: dict[str, Any]

    @property
    def visible(self) -> bool:
        """True when some version of the stream reads as present."""
        return not self.tombstoned and self.version >= max(self.truncate_before, 0)


def metadata_stream(stream: str) -> str:
    return "$$" + stream


def base_stream(stream: str) -> str:
    """The stream whose deletion governs ``stream`` (itself, or ``s`` for ``$$s``)."""
    return stream[2:] if stream.startswith("$$") and len(stream) > 2 else stream


def parse_metadata(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, bytes) and data:
        try:
            loaded = json.loads(data)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def stream_state(store: EventStore, stream: str) -> StreamState:
    version = store.stream_version(stream)
    last = next(store.read_stream(metadata_stream(stream), backwards=True, limit=1), None)
    if last is not None and last.type == TOMBSTONE_TYPE:
        return StreamState(version, 0, True, {})
    metadata = parse_metadata(last.data) if last is not None else {}
    tb = metadata.get(TRUNCATE_BEFORE, 0)
    return StreamState(version, tb if type(tb) is int and tb > 0 else 0, False, metadata)


def effective_expected(state: StreamState, stream: str, expected: Any) -> Any:
    """The expected version to hand the store for an append to a soft-deleted
    stream: there ``NO_STREAM`` means "as deleted", its last version."""
    if state.tombstoned:
        raise StreamDeleted(stream)
    if not state.visible and state.version >= 0:
        if expected is NO_STREAM:
            return state.version
        if expected is STREAM_EXISTS:
            raise WrongExpectedVersion(stream, expected, -1)
    return expected


def _check(state: StreamState, stream: str, expected: Any) -> None:
    if state.tombstoned:
        raise StreamDeleted(stream)
    current = state.version if state.visible else -1
    ok = (
        expected is ANY
        or (expected is NO_STREAM and current == -1)
        or (expected is STREAM_EXISTS and current >= 0)
        or (type(expected) is int and expected == state.version)
    )
    if not ok:
        raise WrongExpectedVersion(stream, expected, current)


def delete_stream(store: EventStore, stream: str, expected_version: Any = ANY) -> AppendResult:
    """Soft-delete ``stream``: it reads as not found until appended to again.

    Raises :class:`WrongExpectedVersion` (actual -1 for a stream that does
    not exist) or :class:`StreamDeleted`; nothing is written then.
    """
    if stream.startswith("$$"):
        raise InvalidArgument(f"cannot delete the metadata stream {stream!r}")
    state = stream_state(store, stream)
    if not state.visible and not state.tombstoned:
        raise WrongExpectedVersion(stream, expected_version, -1)
    _check(state, stream, expected_version)
    metadata = {**state.metadata, TRUNCATE_BEFORE: state.version + 1}
    event = NewEvent(METADATA_TYPE, json.dumps(metadata).encode(), None, None)
    return store.append(metadata_stream(stream), [event])


def tombstone_stream(store: EventStore, stream: str, expected_version: Any = ANY) -> AppendResult:
    """Delete ``stream`` for ever: it can never be read or appended to again."""
    if stream.startswith("$$"):
        raise InvalidArgument(f"cannot tombstone the metadata stream {stream!r}")
    state = stream_state(store, stream)
    _check(state, stream, expected_version)
    return store.append(metadata_stream(stream), [NewEvent(TOMBSTONE_TYPE, b"", None, None)])


__all__ = [
    "StreamDeleted",
    "StreamState",
    "delete_stream",
    "effective_expected",
    "stream_state",
    "tombstone_stream",
]
