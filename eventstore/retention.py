"""What the store forgets: stream deletion, retention rules and redaction.

A stream ``s`` keeps its metadata in the stream ``$$s`` (KurrentDB's
convention, so the server's ``$$stream`` metadata and the store's API are one
thing): each ``$metadata`` event there replaces the last (its data is a JSON
object as bytes, or a dict appended in-process), and a ``$streamDeleted``
event tombstones ``s`` for ever. What the store honours of the metadata:

- ``$tb`` (truncate before): versions below it are gone. A soft delete
  writes ``$tb = last version + 1``: the stream reads as empty, and an
  append goes on from the next version (``NO_STREAM`` is accepted again).
- ``$maxCount``: only the newest that many events of the stream are kept.
- ``$maxAge`` (seconds): events older than that are gone.
- a tombstone: every event of ``s`` is gone, reads of ``s`` raise
  :class:`~eventstore.errors.StreamDeleted`, appends to ``s`` and ``$$s`` too.

Redaction removes one event's data and metadata; its id, stream, version,
seq, type and indexes stay. The redacted ids are kept in system keys
(``x redacted NUL id16`` -> stream) for ever, so reads mark the event as
redacted before and after a scavenge.

Every read of the store (``read_stream``, ``read_index``, ``read_all``,
``get``, subscriptions, export) passes through :meth:`Forgetting.filter`, so a
rule takes effect at once in both tiers; ``scavenge()``
(eventstore/scavenge.py) removes the bytes later. The rules of every stream
that has any are held in memory: loaded at open from the ``$$`` streams, and
updated under the writer lock when a ``$$`` append is queued.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, cast

from . import keys
from .errors import InvalidArgument, InvalidType, StreamDeleted, WrongExpectedVersion
from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Event,
    Expected,
    NewEvent,
    RedactedEvent,
    RemovedEvent,
)

METADATA_TYPE = "$metadata"
TOMBSTONE_TYPE = "$streamDeleted"
TRUNCATE_BEFORE = "$tb"
MAX_COUNT = "$maxCount"
MAX_AGE = "$maxAge"

# Bounds on the rules: a retention value outside them is a mistake, not a policy.
MAX_VERSION = (1 << 62) - 1
MAX_AGE_SECONDS = 1000 * 366 * 86400  # a thousand years

REDACTED_PREFIX = keys.SYSTEM + b"redacted" + keys.SEP
# Seq ranges scavenge removed: ``x removed NUL first8`` -> last8 (big-endian).
REMOVED_PREFIX = keys.SYSTEM + b"removed" + keys.SEP


def metadata_stream(stream: str) -> str:
    return "$$" + stream


def base_stream(stream: str) -> str:
    """The stream whose deletion governs ``stream`` (itself, or ``s`` for ``$$s``)."""
    return stream[2:] if stream.startswith("$$") and len(stream) > 2 else stream


def redacted_key(id16: bytes) -> bytes:
    return REDACTED_PREFIX + id16


def removed_item(first: int, last: int) -> tuple[bytes, bytes]:
    return REMOVED_PREFIX + first.to_bytes(8, "big"), last.to_bytes(8, "big")


class SeqRanges:
    """Disjoint, sorted seq ranges (first, last), merged where they touch."""

    __slots__ = ("ends", "starts")

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.add(pairs)

    def add(self, pairs: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for a, b in sorted([*zip(self.starts, self.ends, strict=True), *pairs]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        # Replaced whole: a reader bisecting the old lists is not disturbed.
        self.starts, self.ends = [m[0] for m in merged], [m[1] for m in merged]

    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def count(self) -> int:
        return sum(b - a + 1 for a, b in zip(self.starts, self.ends, strict=True))

    def within(self, low: int, high: int) -> Iterator[int]:
        """Every seq of the ranges in [low, high], ascending."""
        starts, ends = self.starts, self.ends
        i = max(bisect_right(starts, low) - 1, 0)
        while i < len(starts) and starts[i] <= high:
            yield from range(max(starts[i], low), min(ends[i], high) + 1)
            i += 1


def to_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


@dataclass(frozen=True)
class StreamRules:
    """What a stream's metadata asks the store to forget."""

    truncate_before: int = 0
    max_count: int | None = None
    max_age: int | None = None  # seconds
    tombstoned: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return (
            not self.tombstoned
            and self.truncate_before == 0
            and self.max_count is None
            and self.max_age is None
        )

    def floor(self, last_version: int, now_ms: int) -> tuple[int, int]:
        """(lowest version kept, lowest id millisecond kept)."""
        if self.tombstoned:
            return MAX_VERSION + 1, 0
        low = self.truncate_before
        if self.max_count is not None:
            low = max(low, last_version - self.max_count + 1)
        age_ms = 0 if self.max_age is None else now_ms - self.max_age * 1000
        return low, age_ms

    def keeps(self, version: int, id_ms: int, last_version: int, now_ms: int) -> bool:
        low, age_ms = self.floor(last_version, now_ms)
        return version >= low and id_ms >= age_ms


def _valid_int(value: Any, low: int, high: int) -> int | None:
    return value if type(value) is int and low <= value <= high else None


def parse_metadata(data: Any) -> dict[str, Any]:
    """A ``$metadata`` event's data as a dict ({} for anything else)."""
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, (bytes, str)) and data:
        try:
            loaded = json.loads(data)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def rules_of(last: NewEvent | Event | None) -> StreamRules:
    """The rules the last event of a ``$$`` stream sets. Values of the wrong
    type or out of bounds (written by a client through the server) are
    ignored, as KurrentDB ignores metadata it cannot parse."""
    if last is None:
        return StreamRules()
    if last.type == TOMBSTONE_TYPE:
        return StreamRules(tombstoned=True)
    if last.type != METADATA_TYPE:
        return StreamRules()
    meta = parse_metadata(last.data)
    return StreamRules(
        truncate_before=_valid_int(meta.get(TRUNCATE_BEFORE), 0, MAX_VERSION) or 0,
        max_count=_valid_int(meta.get(MAX_COUNT), 1, MAX_VERSION),
        max_age=_valid_int(meta.get(MAX_AGE), 1, MAX_AGE_SECONDS),
        metadata=meta,
    )


def check_retention(
    max_age: timedelta | int | None, max_count: int | None, truncate_before: int | None
) -> dict[str, int | None]:
    """Validate retention values given to the API: metadata keys -> values
    (None: remove the rule). Raises InvalidArgument or InvalidType."""
    out: dict[str, int | None] = {}
    if max_age is not None:
        if isinstance(max_age, timedelta):
            seconds = max_age.total_seconds()
            if seconds != int(seconds):
                raise InvalidArgument(f"max_age must be whole seconds, got {max_age!r}")
            age = int(seconds)
        elif type(max_age) is int:
            age = max_age
        else:
            raise InvalidType(f"max_age must be a timedelta or int seconds, got {max_age!r}")
        if not 1 <= age <= MAX_AGE_SECONDS:
            raise InvalidArgument(
                f"max_age must be between 1 second and 1000 years, got {age} seconds"
            )
        out[MAX_AGE] = age
    for name, key, value, low in (
        ("max_count", MAX_COUNT, max_count, 1),
        ("truncate_before", TRUNCATE_BEFORE, truncate_before, 0),
    ):
        if value is None:
            continue
        if type(value) is not int:
            raise InvalidType(f"{name} must be an int, got {value!r}")
        if not low <= value <= MAX_VERSION:
            raise InvalidArgument(f"{name} must be between {low} and {MAX_VERSION}, got {value}")
        out[key] = value
    return out


def metadata_event(metadata: Mapping[str, Any]) -> NewEvent:
    return NewEvent(METADATA_TYPE, json.dumps(dict(metadata), sort_keys=True).encode())


def tombstone_event() -> NewEvent:
    return NewEvent(TOMBSTONE_TYPE, b"")


def _id_ms(event: Event) -> int:
    return int.from_bytes(event.id.bytes[:6], "big")


def _place(event: Event) -> RemovedEvent:
    return RemovedEvent(event.id, event.stream, event.version, event.seq, event.type)


def redact_event(event: Event) -> Event:
    red: Event = tuple.__new__(
        RedactedEvent,
        # Index values and tags can be personal data as much as the data: they go too.
        (event.id, event.stream, event.version, event.seq, event.type, None, None, {}, ()),
    )
    return red


class Opener(Protocol):
    """What opens sealed events (eventstore/sealing.py's KeyStore)."""

    def open(self, event: Event) -> Event: ...


class Forgetting:
    """The rules and redactions of one store, in memory.

    ``rules`` maps a (base) stream to its rules, only for streams that have
    some; ``redacted`` maps a redacted id16 to its stream; ``removed`` holds
    the seqs scavenge removed (their events are husks, hidden from every read
    whatever the rules say later). All are changed in place, under the writer
    or maintenance lock; readers look up single keys (atomic under the GIL).
    """

    __slots__ = ("clock", "redacted", "removed", "rules", "sealing")

    def __init__(
        self,
        rules: dict[str, StreamRules],
        redacted: dict[bytes, str],
        removed: SeqRanges | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.redacted = redacted
        self.removed = SeqRanges() if removed is None else removed
        self.clock = clock
        # Set when the store was opened with shredding: every event read is
        # opened with it (decrypted, or shredded once its subject is forgotten).
        self.sealing: Opener | None = None

    @property
    def active(self) -> bool:
        return (
            bool(self.rules)
            or bool(self.redacted)
            or bool(self.removed)
            or self.sealing is not None
        )

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def set_rules(self, stream: str, rules: StreamRules) -> None:
        if rules.empty and not rules.metadata:
            self.rules.pop(stream, None)
        else:
            self.rules[stream] = rules

    def rules_for(self, stream: str) -> StreamRules | None:
        return self.rules.get(base_stream(stream)) if self.rules else None

    # -- appends (under the writer lock) ---------------------------------------

    def admit(self, stream: str, expected: Expected, version: int) -> bool | None:
        """Whether an append to ``stream`` expecting ``expected`` may go on at
        its ``version``, by the deletion rules: None when they have nothing to
        say (the plain check decides). Raises StreamDeleted for a tombstoned
        stream (or its ``$$`` stream), WrongExpectedVersion (actual -1) for
        STREAM_EXISTS on a soft-deleted stream."""
        rules = self.rules.get(base_stream(stream))
        if rules is None:
            return None
        if rules.tombstoned:
            raise StreamDeleted(base_stream(stream))
        if stream.startswith("$$") or not (0 <= version < rules.truncate_before):
            return None
        # Soft-deleted: the stream does not exist, yet its versions go on.
        if expected is NO_STREAM or expected is ANY:
            return True
        if expected is STREAM_EXISTS:
            raise WrongExpectedVersion(stream, expected, -1)
        return expected == version

    # -- reads -----------------------------------------------------------------

    def check_stream(self, stream: str) -> None:
        """Reads of a tombstoned stream (or its ``$$`` stream) refuse."""
        rules = self.rules.get(base_stream(stream)) if self.rules else None
        if rules is not None and rules.tombstoned:
            raise StreamDeleted(base_stream(stream))

    def filter(
        self, events: Iterator[Event], last_version: Callable[[str], int]
    ) -> Iterator[Event]:
        """``events`` without those the rules remove, redacted ones marked.
        ``last_version(stream)`` is the stream's last version in the same view
        (for ``$maxCount``). No rules and no redactions: ``events`` itself."""
        if not self.active:
            return events
        # Without places, only events come out.
        return cast(Iterator[Event], self._filtered(events, last_version))

    def classify(
        self, events: Iterator[Event], last_version: Callable[[str], int]
    ) -> Iterator[Event | RemovedEvent]:
        """``filter``, but an event removed or hidden comes as a
        :class:`RemovedEvent` (its place in the log) instead of not at all,
        and sealed events stay sealed (an export never holds their plain
        data: forgetting the subject reaches it too)."""
        return self._filtered(events, last_version, True)

    def _filtered(
        self, events: Iterator[Event], last_version: Callable[[str], int], places: bool = False
    ) -> Iterator[Event | RemovedEvent]:
        rules = self.rules
        redacted = self.redacted
        removed = self.removed
        sealing = None if places else self.sealing
        now_ms = self.now_ms()
        floors: dict[str, tuple[int, int]] = {}
        for event in events:
            stream = event.stream
            if removed and event.seq in removed:
                if places:
                    yield _place(event)
                continue
            if stream in rules:
                floor = floors.get(stream)
                if floor is None:
                    floor = floors[stream] = rules[stream].floor(last_version(stream), now_ms)
                if event.version < floor[0] or _id_ms(event) < floor[1]:
                    if places:
                        yield _place(event)
                    continue
            if redacted and event.id.bytes in redacted:
                event = redact_event(event)
            elif sealing is not None:
                event = sealing.open(event)
            yield event

    def one(self, event: Event | None, last_version: Callable[[str], int]) -> Event | None:
        """``get``'s answer under the rules."""
        if event is None:
            return None
        return cast(Event | None, next(self._filtered(iter((event,)), last_version), None))


def load(
    metadata_streams: Iterable[str],
    last_event: Callable[[str], Event | None],
    redactions: Iterable[tuple[bytes, bytes]],
    removals: Iterable[tuple[bytes, bytes]] = (),
) -> Forgetting:
    """The rules of a store at open: ``metadata_streams`` are its ``$$``
    streams, ``last_event`` reads the last event of one, ``redactions`` and
    ``removals`` are the (key, value) pairs under REDACTED_PREFIX and
    REMOVED_PREFIX."""
    rules = {}
    for meta in metadata_streams:
        found = rules_of(last_event(meta))
        if not found.empty or found.metadata:
            rules[base_stream(meta)] = found
    redacted = {key[len(REDACTED_PREFIX) :]: value.decode() for key, value in redactions}
    removed = SeqRanges(
        (int.from_bytes(key[len(REMOVED_PREFIX) :], "big"), int.from_bytes(value, "big"))
        for key, value in removals
    )
    return Forgetting(rules, redacted, removed)


__all__ = [
    "MAX_AGE",
    "MAX_COUNT",
    "METADATA_TYPE",
    "TOMBSTONE_TYPE",
    "TRUNCATE_BEFORE",
    "Forgetting",
    "RedactedEvent",
    "StreamRules",
    "base_stream",
    "check_retention",
    "metadata_stream",
    "parse_metadata",
    "rules_of",
]
