"""What the served RPCs do to the store, apart from any wire format: appends
with KurrentDB's idempotency and deletion rules, filters, read starting points.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..deletion import (
    StreamDeleted,
    base_stream,
    effective_expected,
    stream_state,
)
from ..errors import WrongExpectedVersion
from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, NewEvent
from ..store import EventStore
from .codec import UUID_INDEX, position_of

_STRIPES = 64


@dataclass(frozen=True)
class Appended:
    last_version: int
    last_seq: int

    @property
    def position(self) -> int:
        return position_of(self.last_seq)


class Operations:
    """The store calls behind the RPCs. Appends and deletions of one stream are
    serialised by a striped lock, so a tombstone check and the append it
    guards cannot interleave with a deletion of the same stream (through the
    server; see eventstore/deletion.py)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def _lock(self, stream: str) -> threading.Lock:
        return self._locks[zlib.crc32(base_stream(stream).encode()) % _STRIPES]

    def append(self, stream: str, events: Sequence[NewEvent], expected: Any) -> Appended:
        """Append as KurrentDB does; raises WrongExpectedVersion or StreamDeleted."""
        with self._lock(stream):
            state = stream_state(self.store, base_stream(stream))
            if state.tombstoned:
                raise StreamDeleted(base_stream(stream))
            if stream.startswith("$$"):
                store_expected, first = expected, 0
            else:
                store_expected = effective_expected(state, stream, expected)
                first = state.truncate_before  # where a stream deleted and made again starts
            done = self._already_appended(stream, events, expected, first)
            if done is not None:
                return done
            try:
                result = self.store.append(stream, events, store_expected)
            except WrongExpectedVersion:
                done = self._already_appended(stream, events, expected, first)
                if done is not None:
                    return done
                raise
            return Appended(result.last_version, result.last_seq)

    def append_many(self, parts: Sequence[tuple[str, Sequence[NewEvent], Any]]) -> list[Appended]:
        """One atomic append to several streams (the v2 multi-stream append)."""
        locks = sorted({id(self._lock(s)): self._lock(s) for s, _, _ in parts}.items())
        for _, lock in locks:
            lock.acquire()
        try:
            store_parts = []
            for stream, events, expected in parts:
                state = stream_state(self.store, base_stream(stream))
                if state.tombstoned:
                    raise StreamDeleted(base_stream(stream))
                store_parts.append((stream, events, effective_expected(state, stream, expected)))
            results = self.store.append_many(store_parts)
            return [Appended(r.last_version, r.last_seq) for r in results]
        finally:
            for _, lock in reversed(locks):
                lock.release()

    def _already_appended(
        self, stream: str, events: Sequence[NewEvent], expected: Any, first: int = 0
    ) -> Appended | None:
        """If these very event ids are already in the stream where this append
        would have put them, the append is a retry: answer as the first time.
        ``first`` is the version the stream starts at (after a soft delete,
        where an append expecting no stream put its events)."""
        if not events:
            return None
        ids = [e.indexes.get(UUID_INDEX) if e.indexes else None for e in events]
        if ids[0] is None:
            return None
        if isinstance(expected, int):
            start = expected + 1
        elif expected is NO_STREAM:
            start = first
        elif expected is ANY or expected is STREAM_EXISTS:
            found = next(self.store.read_index(stream, UUID_INDEX, ids[0], limit=1), None)
            if found is None:
                return None
            start = found.version
        else:
            return None
        stored = list(self.store.read_stream(stream, from_version=start, limit=len(ids)))
        if len(stored) != len(ids):
            return None
        if any(e.indexes.get(UUID_INDEX) != i for e, i in zip(stored, ids, strict=True)):
            return None
        return Appended(stored[-1].version, stored[-1].seq)


class EventFilter:
    """A KurrentDB read filter on the stream name or the event type: a regex
    (matched from the start, as .NET's Regex.IsMatch finds it anywhere: we
    search) or a list of prefixes."""

    def __init__(self, on_stream: bool, regex: str, prefixes: Sequence[str]) -> None:
        self.on_stream = on_stream
        self.prefixes = tuple(prefixes)
        self.pattern = re.compile(regex) if regex else None

    def matches(self, event: Event) -> bool:
        value = event.stream if self.on_stream else event.type
        if self.prefixes and not value.startswith(self.prefixes):
            return False
        return not (self.pattern is not None and self.pattern.search(value) is None)

    def store_hint(self) -> dict[str, Any]:
        """Arguments for ``read_all`` that narrow the scan without changing the answer."""
        if self.on_stream and len(self.prefixes) == 1 and self.pattern is None:
            return {"stream_prefix": self.prefixes[0]}
        return {}


def read_all_from(
    store: EventStore, from_seq: int, backwards: bool, filt: EventFilter | None
) -> Iterator[Event]:
    hint = filt.store_hint() if filt is not None else {}
    if from_seq < 1:
        return iter(())
    return store.read_all(from_seq=from_seq, backwards=backwards, **hint)


__all__ = ["Appended", "EventFilter", "Operations", "read_all_from"]
