"""The values callers hand in and get back: NewEvent, Event, expected versions."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ulid import ULID


class ExpectedVersion(enum.Enum):
    """The symbolic expected versions; an ``int`` asks for that exact version."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

# What ``expected_version`` takes: a symbol or an exact version (-1: no
# stream). No ``Any`` and no ``str``, so ``expected_version="any"`` is a type
# error under mypy, not only at run time.
Expected = ExpectedVersion | int


class NewEvent(NamedTuple):
    """An event to append: its type, data, optional metadata, index entries and tags.

    ``indexes`` maps an index name to the value this event is filed under in
    its stream's secondary index ``name=value``. ``tags`` (``"student:42"``)
    file the event in the store-wide tag index that :meth:`EventStore.query`
    and conditional appends read (docs/dcb.md); validated like index values,
    duplicates dropped, kept sorted.
    """

    type: str
    data: Any = None
    metadata: Any = None
    indexes: Mapping[str, str] | None = None
    tags: Sequence[str] | None = None


class Event(NamedTuple):
    """A stored event. Equal in both tiers, forever."""

    id: ULID
    stream: str
    version: int
    seq: int
    type: str
    data: Any
    metadata: Any
    indexes: dict[str, str]
    tags: tuple[str, ...] = ()

    @property
    def timestamp(self) -> datetime:
        """When the event was appended: the ULID's millisecond time, in UTC."""
        ms = int.from_bytes(self.id.bytes[:6], "big")
        return datetime.fromtimestamp(ms / 1000, UTC)

    @property
    def redacted(self) -> bool:
        """True when ``redact()`` removed this event's data and metadata (both None)."""
        return False


class RedactedEvent(Event):
    """An event whose data and metadata ``redact()`` removed: both read as
    None, and its index values with them (``indexes`` is empty; the event is
    still filed under its type); id, stream, version, seq and type are its own.
    Equal (as a tuple) to an Event with those values."""

    __slots__ = ()

    @property
    def redacted(self) -> bool:
        return True


class RemovedEvent(NamedTuple):
    """What an export carries of an event the store removed or hides: its
    place in the log, none of its contents (:meth:`EventStore.export_events`).
    ``import_events`` makes it a husk whose seq is recorded as removed, so
    the imported store has the same seqs and versions (docs/guarantees.md)."""

    id: ULID
    stream: str
    version: int
    seq: int
    type: str

    @property
    def removed(self) -> bool:
        return True


class QueryItem(NamedTuple):
    """One clause of a :class:`Query`: an event matches when its type is one of
    ``types`` (or ``types`` is empty) and it carries every tag in ``tags``."""

    types: Sequence[str] = ()
    tags: Sequence[str] = ()


class Query(NamedTuple):
    """Events matching any of ``items``. No items: every event."""

    items: Sequence[QueryItem] = ()


class AppendCondition(NamedTuple):
    """Refuse an append (:class:`~eventstore.errors.ConditionFailed`) if an
    event matching ``fail_if_events_match`` has a seq above ``after`` (None:
    any such event at all). The DCB "fail if events match" rule."""

    fail_if_events_match: Query
    after: int | None = None


class AppendResult(NamedTuple):
    """What one stream's append wrote."""

    stream: str
    ids: Sequence[ULID]  # a UlidRange: a read-only list, ULIDs built when read
    first_version: int
    last_version: int
    first_seq: int
    last_seq: int


class Snapshot(NamedTuple):
    """An aggregate's state as of ``version`` of its stream."""

    stream: str
    version: int
    state: Any
