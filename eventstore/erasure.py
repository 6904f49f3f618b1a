"""The store's forgetting API: stream deletion, retention, redaction.

A mixin of :class:`eventstore.store.EventStore`, on the store's own locks and
state (declared below for the type checker). The rules themselves are in
eventstore/retention.py; the physical removal in eventstore/scavenge.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgpack
from ulid import ULID

from .errors import EventNotFound, InvalidArgument, StreamDeleted, WrongExpectedVersion
from .events import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, Expected, NewEvent
from .hot import HotTier
from .ids import to_ulid_bytes
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
from .view import View

if TYPE_CHECKING:
    from .store import _Pending, _Writes


def _matches(expected: Expected, current: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return current == -1
    if expected is STREAM_EXISTS:
        return current >= 0
    return bool(expected == current)


class Erasure:
    """delete_stream, tombstone_stream, retention and redact, mixed into EventStore."""

    if TYPE_CHECKING:
        path: str
        _hot: HotTier
        _lock: threading.Lock
        _maintenance: threading.Lock
        _forget: Forgetting
        _index_types: bool

        def _check_open(self) -> None: ...
        def _view(self) -> View: ...
        def _ready_to_queue(self) -> None: ...
        def _current_version(self, stream_b: bytes) -> int: ...
        def _assign(self, parts: list[Any]) -> tuple[_Writes, list[AppendResult], list[Any]]: ...
        def _enqueue(self, writes: _Writes, versions: list[Any], last_seq: int) -> _Pending: ...
        def _commit(self, pending: _Pending) -> None: ...
        def get(self, event_id: ULID | str | bytes) -> Any: ...

    # -- deletion ------------------------------------------------------------

    def delete_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """Soft-delete ``stream`` (KurrentDB's Delete): it reads as empty from
        now on, in both tiers, and an append goes on from its next version
        (``NO_STREAM`` is accepted again). ``scavenge()`` removes the events'
        bytes. Returns the result of the metadata append to ``$$stream``.

        The expected version is checked under the writer lock with the write.

        Raises:
            WrongExpectedVersion: the stream is not at ``expected_version``, or it has no
                events to delete (actual -1); nothing is written.
            StreamDeleted: the stream was tombstoned.
            InvalidArgument: ``stream`` is a ``$$`` metadata stream.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """

        def events(version: int, rules: StreamRules) -> list[NewEvent]:
            visible = version >= 0 and version >= rules.truncate_before
            if not visible:
                raise WrongExpectedVersion(stream, expected_version, -1)
            if not _matches(expected_version, version):
                raise WrongExpectedVersion(stream, expected_version, version)
            return [metadata_event({**rules.metadata, TRUNCATE_BEFORE: version + 1})]

        return self._write_rules(stream, expected_version, events)

    def tombstone_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """Delete ``stream`` for ever (KurrentDB's Tombstone): every read of it
        and every append to it (or to ``$$stream``) raises
        :class:`StreamDeleted` from now on; ``scavenge()`` removes its events'
        bytes (the tombstone itself, in ``$$stream``, stays).

        Raises:
            WrongExpectedVersion: the stream is not at ``expected_version``; nothing is written.
            StreamDeleted: the stream was tombstoned already.
            InvalidArgument: ``stream`` is a ``$$`` metadata stream.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """

        def events(version: int, rules: StreamRules) -> list[NewEvent]:
            current = version if version >= rules.truncate_before else -1
            if not (
                _matches(expected_version, current)
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
        """Set the retention rules of ``stream`` (its ``$$stream`` metadata
        ``$maxAge`` in seconds, ``$maxCount``, ``$tb``); None removes a rule.
        Other metadata keys are kept. Every read honours the rules at once,
        in both tiers; ``scavenge()`` removes the bytes. Until a scavenge,
        loosening a rule brings the events it hid back; after one they are gone.

        Raises:
            InvalidArgument: a value is negative, zero where it cannot be, or absurd
                (``max_age`` over 1000 years or not whole seconds).
            InvalidType: a value is not an int (or a timedelta for ``max_age``).
            StreamDeleted: the stream was tombstoned.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
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
        """The deletion and retention rules of ``stream`` (and its other metadata).

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
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
        from .store import _check_expected, _Prepared  # the writer's own parts

        stream = plain_name(stream, "stream name")
        stream_b = name_bytes(stream, "stream name")
        if stream.startswith("$$"):
            raise InvalidArgument(
                f"{stream!r} is a metadata stream: delete or set rules on its stream"
            )
        _check_expected(expected_version)
        self._check_open()
        with self._lock:
            self._ready_to_queue()
            rules = self._forget.rules.get(stream, StreamRules())
            if rules.tombstoned:
                raise StreamDeleted(stream)
            events = list(make(self._current_version(stream_b), rules))
            part = _Prepared(metadata_stream(stream), events, ANY, self._index_types)
            writes, results, versions = self._assign([part])
            pending = self._enqueue(writes, versions, results[-1].last_seq)
            self._forget.set_rules(stream, rules_of(events[-1]))
        self._commit(pending)
        return results[0]

    # -- redaction -----------------------------------------------------------

    def redact(self, event_id: ULID | str | bytes) -> bool:
        """Remove the data and metadata of one event (for a regulator's
        request): from now on it reads as a :class:`RedactedEvent` (``data``
        and ``metadata`` None, ``redacted`` True) with its id, stream,
        version, seq, type and indexes unchanged, so histories keep their
        shape. ``scavenge()`` removes the bytes. Returns False if the event
        was redacted already (nothing changes).

        Raises:
            InvalidULID: ``event_id`` is not a ULID.
            EventNotFound: no event with this id is in the store (or a rule removed it).
            InvalidArgument: the event belongs to a ``$$`` metadata stream.
            StoreClosed: the store is closed, or refuses writes.
        """
        id16 = event_id.bytes if type(event_id) is ULID else to_ulid_bytes(event_id)
        self._check_open()
        with self._maintenance:
            event = self.get(id16)
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
        """The seq ranges (first, last) ``scavenge()`` removed: their events
        are husks that no read returns. A seq missing from reads but in none
        of these (nor in ``lost_seqs``) is a hidden event a scavenge has not
        reached yet, or damage that ``verify()`` reports."""
        return self._forget.removed.pairs()

    @property
    def redacted_ids(self) -> list[ULID]:
        """The ids of every redacted event, in id order."""
        return [ULID.from_bytes(i) for i in sorted(self._forget.redacted)]


_packb = msgpack.packb

__all__ = ["Erasure"]
