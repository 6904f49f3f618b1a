"""Soft delete and tombstone by KurrentDB's rules, as the server sees them.

The rules live in the store (eventstore/retention.py, and
``EventStore.delete_stream`` / ``tombstone_stream`` / ``stream_rules``): the
expected version of a deletion is checked under the writer lock with its
write, appends to a tombstoned stream raise :class:`StreamDeleted`, and an
append expecting ``NO_STREAM`` to a soft-deleted stream goes on from its next
version. This module keeps the server's view of one stream's state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import StreamDeleted
from .events import ANY, AppendResult, Expected
from .retention import (
    METADATA_TYPE,
    TOMBSTONE_TYPE,
    TRUNCATE_BEFORE,
    base_stream,
    metadata_stream,
    parse_metadata,
)
from .store import EventStore


class StreamState(NamedTuple):
    version: int  # the last version ever written, -1 if none
    truncate_before: int
    tombstoned: bool
    metadata: dict[str, Any]

    @property
    def visible(self) -> bool:
        """True when some version of the stream reads as present."""
        return not self.tombstoned and self.version >= max(self.truncate_before, 0)


def stream_state(store: EventStore, stream: str) -> StreamState:
    rules = store.stream_rules(stream)
    return StreamState(
        store.stream_version(stream),
        0 if rules.tombstoned else rules.truncate_before,
        rules.tombstoned,
        dict(rules.metadata),
    )


def effective_expected(state: StreamState, stream: str, expected: Any) -> Any:
    """The expected version to hand the store for an append (the store
    itself takes ``NO_STREAM`` on a soft-deleted stream)."""
    if state.tombstoned:
        raise StreamDeleted(stream)
    return expected


def delete_stream(store: EventStore, stream: str, expected_version: Expected = ANY) -> AppendResult:
    """``store.delete_stream`` (kept for callers of the server's module)."""
    return store.delete_stream(stream, expected_version)


def tombstone_stream(
    store: EventStore, stream: str, expected_version: Expected = ANY
) -> AppendResult:
    """``store.tombstone_stream``."""
    return store.tombstone_stream(stream, expected_version)


__all__ = [
    "METADATA_TYPE",
    "TOMBSTONE_TYPE",
    "TRUNCATE_BEFORE",
    "StreamDeleted",
    "StreamState",
    "base_stream",
    "delete_stream",
    "effective_expected",
    "metadata_stream",
    "parse_metadata",
    "stream_state",
    "tombstone_stream",
]
