"""The store's forgetting API: stream deletion, retention, redaction.

A collaborator the store holds (``EventStore._erasure``), given the hot
tier, the writer and the rules; the store's public methods call it and carry
the docs. The rules themselves are in eventstore/retention.py; the physical
removal in eventstore/scavenge.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import msgpack
from ulid import ULID

from .errors import EventNotFound, InvalidArgument, StreamDeleted, WrongExpectedVersion
from .events import ANY, AppendResult, Expected, NewEvent
from .hot import HotTier
from .ids import to_ulid_bytes
from .prepare import _check_expected, _Prepared, _version_matches
from .records import name_bytes, plain_name
from .retention import (
    MAX_AGE,
    MAX_COUNT,
    TRUNCATE_BEFORE,
    Forgetting,
    StreamRules,
    check_retention,
    metadata_event,
    metadata_stream,
    redacted_key,
    rules_of,
    tombstone_event,
)
from .writer import Writer


class Erasure:
    """delete_stream, tombstone_stream, retention and redact, for the store."""

    def __init__(
        self,
        hot: HotTier,
        writer: Writer,
        forget: Forgetting,
        maintenance: threading.Lock,
        index_types: bool,
        check_open: Callable[[], None],
        get: Callable[[bytes], Any],
    ) -> None:
        self._hot = hot
        self._writer = writer
        self._forget = forget
        self._maintenance = maintenance
        self._index_types = index_types
        self._check_open = check_open
        self._get = get

    # -- deletion ------------------------------------------------------------

    def delete_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """See :meth:`eventstore.EventStore.delete_stream`."""

        def events(version: int, rules: StreamRules) -> list[NewEvent]:
            visible = version >= 0 and version >= rules.truncate_before
            if not visible:
                raise WrongExpectedVersion(stream, expected_version, -1)
            if not _version_matches(expected_version, version):
                raise WrongExpectedVersion(stream, expected_version, version)
            return [metadata_event({**rules.metadata, TRUNCATE_BEFORE: version + 1})]

        return self._write_rules(stream, expected_version, events)

    def tombstone_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """See :meth:`eventstore.EventStore.tombstone_stream`."""

        def events(version: int, rules: StreamRules) -> list[NewEvent]:
            current = version if version >= rules.truncate_before else -1
            if not (
                _version_matches(expected_version, current)
                or (type(expected_version) is int and expected_version == version)
            ):
                raise WrongExpectedVersion(stream, expected_version, current)
            return [tombstone_event()]

        return self._write_rules(stream, expected_version, events)

    # -- retention -----------------------------------------------------------

    def set_retention(
        self,
        stream: str,
        *,
        max_age: timedelta | int | None = None,
        max_count: int | None = None,
        truncate_before: int | None = None,
    ) -> AppendResult:
        """See :meth:`eventstore.EventStore.set_retention`."""
        values = check_retention(max_age, max_count, truncate_before)

        def events(version: int, rules: StreamRules) -> list[NewEvent]:
            meta = {
                k: v
                for k, v in rules.metadata.items()
                if k not in (MAX_AGE, MAX_COUNT, TRUNCATE_BEFORE)
            }
            meta.update(values)
            return [metadata_event(meta)]

        return self._write_rules(stream, ANY, events)

    def stream_rules(self, stream: str) -> StreamRules:
        """See :meth:`eventstore.EventStore.stream_rules`."""
        name_bytes(stream, "stream name")
        return self._forget.rules.get(plain_name(stream, "stream name"), StreamRules())

    def _write_rules(
        self,
        stream: str,
        expected_version: Expected,
        make: Callable[[int, StreamRules], Sequence[NewEvent]],
    ) -> AppendResult:
        """Append to ``$$stream`` the events ``make(version, rules)`` returns,
        deciding (and checking) under the writer lock, so that no append to
        ``stream`` slips between the check and the write."""
        stream = plain_name(stream, "stream name")
        stream_b = name_bytes(stream, "stream name")
        if stream.startswith("$$"):
            raise InvalidArgument(
                f"{stream!r} is a metadata stream: delete or set rules on its stream"
            )
        _check_expected(expected_version)
        self._check_open()
        w = self._writer
        with w._lock:
            w._ready_to_queue()
            rules = self._forget.rules.get(stream, StreamRules())
            if rules.tombstoned:
                raise StreamDeleted(stream)
            events = list(make(w._current_version(stream_b), rules))
            part = _Prepared(metadata_stream(stream), events, ANY, self._index_types)
            writes, results, versions, fresh = w._assign([part])
            pending = w._enqueue(writes, versions, results[-1].last_seq, fresh, [part])
            self._forget.set_rules(stream, rules_of(events[-1]))
        w._commit(pending)
        return results[0]

    # -- redaction -----------------------------------------------------------

    def redact(self, event_id: ULID | str | bytes) -> bool:
        """See :meth:`eventstore.EventStore.redact`."""
        id16 = event_id.bytes if type(event_id) is ULID else to_ulid_bytes(event_id)
        self._check_open()
        with self._maintenance:
            event = self._get(id16)
            if event is None:
                raise EventNotFound(f"no event with id {ULID.from_bytes(id16)} in the store")
            if id16 in self._forget.redacted:
                return False
            if event.stream.startswith("$$"):
                raise InvalidArgument(
                    f"event {event.id} is stream metadata ({event.stream!r}); it cannot be redacted"
                )
            self._hot.db.put(redacted_key(id16), event.stream.encode(), sync=True)
            self._forget.redacted[id16] = event.stream
        return True

    @property
    def removed_seqs(self) -> list[tuple[int, int]]:
        """See :meth:`eventstore.EventStore.removed_seqs`."""
        return self._forget.removed.pairs()

    @property
    def redacted_ids(self) -> list[ULID]:
        """See :meth:`eventstore.EventStore.redacted_ids`."""
        return [ULID.from_bytes(i) for i in sorted(self._forget.redacted)]


_packb = msgpack.packb

__all__ = ["Erasure"]
