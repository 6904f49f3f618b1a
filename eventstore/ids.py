"""Monotonic ULIDs: 48-bit millisecond time, 80 random bits, strictly increasing.

Within one millisecond the previous id is incremented; when the wall clock
steps backwards the generator stays above the last id it made; on reopen it
is seeded with the highest id the store holds. Ids are made as integers and
16-byte strings; a :class:`ulid.ULID` is only built when a caller asks for one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from ulid import ULID

from .errors import IdOutOfRange, IdsExhausted, InvalidULID

MAX_ULID = (1 << 128) - 1
_RANDOM_BITS = 80
MAX_TIMESTAMP_MS = (1 << 48) - 1  # the last millisecond a ULID can name (in 10889)


def _clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MonotonicULIDs:
    """A thread-safe source of strictly increasing ULIDs.

    ``floor`` is an id the generator must stay above (the highest id already
    stored). ``clock`` returns Unix time in milliseconds; tests pass a fake one.
    """

    def __init__(self, floor: int = 0, clock: Callable[[], int] = _clock_ms) -> None:
        if not 0 <= floor <= MAX_ULID:
            raise InvalidULID(f"floor {floor} is not a 128-bit ULID")
        self._last = floor
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The highest id made (or the floor, if none was made yet)."""
        return self._last

    def now_ms(self) -> int:
        """The generator's clock: Unix time in milliseconds."""
        return self._clock()

    def raise_floor(self, floor: int) -> None:
        """Make every later id greater than ``floor``."""
        with self._lock:
            if floor > self._last:
                self._last = floor

    def next_int(self) -> int:
        with self._lock:
            return self._next()

    def next_ints(self, count: int) -> range:
        """``count`` consecutive increasing ids, made at one instant: the first
        as :meth:`next_int` makes it, the rest counting up from it, as ids
        made within one millisecond do."""
        with self._lock:
            first = self._next()
            last = first + count - 1
            if last > MAX_ULID:
                self._last = first - 1
                raise _exhausted(first - 1, count)
            self._last = last
            return range(first, last + 1)

    def _next(self) -> int:
        last = self._last
        ms = self._clock()
        if ms > last >> _RANDOM_BITS:
            value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        else:
            # Same millisecond, or the clock stepped back: count up from the
            # last id. A carry out of the random bits moves into the time part,
            # which keeps the order and costs at most a millisecond of skew.
            value = last + 1
        if value > MAX_ULID:
            raise _exhausted(last, 1)
        self._last = value
        return value


def _exhausted(last: int, count: int) -> IdsExhausted:
    return IdsExhausted(
        f"no room for {count} more id(s) above {ulid_from_int(last)}: the ULID space "
        "ends there. The store holds an id at the end of time (an import from before "
        "imports were checked?); export its events and import them into a new store"
    )


def check_importable(value: int, now_ms: int, tolerance_ms: int | None) -> None:
    """Refuse an id to import that lies more than ``tolerance_ms`` after
    ``now_ms`` (None: any time), or in the ULID space's last millisecond.

    Every later id is made above the highest stored one: one id far ahead
    pins all later ids and timestamps there (and age-based compaction stops),
    and one at the very end leaves no id to make at all.
    """
    ms = value >> _RANDOM_BITS
    if ms >= MAX_TIMESTAMP_MS:
        raise IdOutOfRange(
            f"id {ulid_from_int(value)} is in the last millisecond of the ULID space, "
            "which stays free so that later appends still get ids"
        )
    if tolerance_ms is not None and ms > now_ms + tolerance_ms:
        raise IdOutOfRange(
            f"id {ulid_from_int(value)} is timed {_fmt_ms(ms)}, "
            f"{(ms - now_ms) / 86_400_000:.1f} days after this machine's clock "
            f"({_fmt_ms(now_ms)}); imports accept up to {tolerance_ms / 1000:g} s ahead: "
            "every later id would be pinned after it. Check the clocks, or raise "
            "the tolerance (import_events(clock_tolerance=...))"
        )


def _fmt_ms(ms: int) -> str:
    try:
        when = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms after 1970"
    return when.isoformat(timespec="milliseconds")


def ulid_from_bytes(raw: bytes) -> ULID:
    """A :class:`ulid.ULID` around 16 trusted bytes, skipping re-validation."""
    u = ULID.__new__(ULID)
    u.bytes = raw
    return u


def ulid_from_int(value: int) -> ULID:
    return ulid_from_bytes(value.to_bytes(16, "big"))


def to_ulid_bytes(value: object) -> bytes:
    """16 raw bytes from a ULID, its 26-char string, or 16 bytes.

    Raises :class:`InvalidULID` (a ``ValueError``) for anything else.
    """
    if isinstance(value, ULID):
        return value.bytes
    if isinstance(value, str):
        if len(value) != 26:
            raise InvalidULID(f"{value!r} is not a ULID: expected 26 characters, got {len(value)}")
        try:
            return ULID.from_str(value).bytes
        except ValueError as exc:
            raise InvalidULID(f"{value!r} is not a ULID: {exc}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) != 16:
            raise InvalidULID(f"a ULID is 16 bytes, got {len(raw)}")
        return raw
    raise InvalidULID(f"expected a ULID or its 26-character string, got {type(value).__name__}")


class UlidRange(Sequence[ULID]):
    """Consecutive ULIDs as a read-only list, each :class:`ulid.ULID` built
    when it is read. An append's ids are consecutive integers, and building
    an object per id costs a fifth of an append's own Python time for the
    callers that never look at them. It is not a ``list``: ``list(ids)`` makes
    one (``json.dumps`` with ``default=str`` would write its repr)."""

    __slots__ = ("_ints",)

    def __init__(self, ints: range) -> None:
        self._ints = ints

    def __len__(self) -> int:
        return len(self._ints)

    @overload
    def __getitem__(self, index: int) -> ULID: ...

    @overload
    def __getitem__(self, index: slice) -> list[ULID]: ...

    def __getitem__(self, index: int | slice) -> ULID | list[ULID]:
        if isinstance(index, slice):
            return [ulid_from_int(i) for i in self._ints[index]]
        return ulid_from_int(self._ints[index])

    def __iter__(self) -> Iterator[ULID]:
        return map(ulid_from_int, self._ints)

    def __reversed__(self) -> Iterator[ULID]:
        return map(ulid_from_int, reversed(self._ints))

    def __contains__(self, value: object) -> bool:
        if isinstance(value, ULID):
            return int(value) in self._ints
        return any(u == value for u in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UlidRange):
            return self._ints == other._ints
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return repr(list(self))

    def __add__(self, other: Any) -> list[ULID]:
        return list(self) + list(other)

    def __radd__(self, other: Any) -> list[ULID]:
        return list(other) + list(self)

    def __mul__(self, n: int) -> list[ULID]:
        return list(self) * n

    __rmul__ = __mul__

    def __lt__(self, other: Any) -> bool:
        return list(self) < list(other)

    def __le__(self, other: Any) -> bool:
        return list(self) <= list(other)

    def __gt__(self, other: Any) -> bool:
        return list(self) > list(other)

    def __ge__(self, other: Any) -> bool:
        return list(self) >= list(other)

    def copy(self) -> list[ULID]:
        return list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))  # pickles (any protocol) as the list it reads as
