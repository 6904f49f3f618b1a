"""Store-wide counts kept with the commit, so ``stats()`` costs the same at a
hundred events and at a hundred million.

The one count that cannot be derived from the log's shape is the number of
streams (a stream exists once its first event is written; deletion and
tombstones leave it in place, as its ``m`` key stays). It lives in the
system key ``x counts`` as ``[streams, last_seq]``, put into the same LevelDB
batch as the appends (or import) it counts, so a crash keeps it and the
events together or neither. The ``last_seq`` beside it proves it current:
at open, a counter whose seq is not the log's (a store written by an older
eventstore, a hot tier rebuilt by ``eventstore repair``, which drops the
key) is recounted from the ``m`` keys, once, O(streams).

Events need no counter: seqs are dense, the archive files hold every seq up
to the last file's, and the hot tier the rest, less what a repair recorded
as lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
from ulid import ULID

from . import keys
from .ids import ulid_from_bytes

if TYPE_CHECKING:
    from .view import View

_unpackb = msgpack.unpackb


def pack_counts(streams: int, last_seq: int) -> bytes:
    """The value of ``x counts``."""
    packed: bytes = msgpack.packb([streams, last_seq])
    return packed


def read_counts(raw: bytes | None) -> tuple[int, int] | None:
    """(streams, last_seq) from the value of ``x counts``; None if absent or
    not a value this module writes (then the caller recounts)."""
    if raw is None:
        return None
    try:
        value = _unpackb(raw)
    except Exception:  # msgpack raises several unrelated types
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(type(v) is int and v >= 0 for v in value)
    ):
        return value[0], value[1]
    return None


def recount_streams(db: Any) -> int:
    """Streams with at least one event written: ``m`` keys whose last version
    is 0 or more (an append of no events to a new stream leaves -1). O(streams)."""
    n = 0
    it = db.iterator(prefix=keys.META, verify_checksums=True, fill_cache=False)
    try:
        for _key, raw in it:
            if int(_unpackb(raw)[0]) >= 0:
                n += 1
    finally:
        it.close()
    return n


def load_counts(db: Any, last_seq: int, writable: bool) -> int:
    """The stream count at open: from ``x counts`` if it is current, else
    recounted (and written, unless the store is read-only)."""
    counts = read_counts(db.get(keys.COUNTS, verify_checksums=True))
    if counts is not None and counts[1] == last_seq:
        return counts[0]
    streams = recount_streams(db)
    if writable and last_seq:
        # Saves the next open the recount; the next append writes it anyway.
        with contextlib.suppress(Exception):
            db.put(keys.COUNTS, pack_counts(streams, last_seq), sync=True)
    return streams


def fresh_streams(started: Iterable[bytes], versions: dict[bytes, int]) -> int:
    """How many of the streams that were at -1 before a write end at 0 or more."""
    return sum(1 for s in started if versions.get(s, -1) >= 0)


class StoreStats(NamedTuple):
    """What :meth:`EventStore.stats` returns: counts of one consistent view."""

    # Events a read can return, hot and cold: last_seq less the seqs a
    # repair lost and the husks a scavenge left (docs/guarantees.md). Events
    # a rule hides but no scavenge has removed yet are still counted.
    events: int
    hot_events: int  # of those, above the watermark (in LevelDB)
    cold_events: int  # of those, in archive files
    streams: int  # streams with at least one event
    last_seq: int
    archive_files: int
    watermark: ULID | None  # events with smaller ids are cold


def store_stats(
    view: View,
    streams_now: int,
    lost: list[tuple[int, int]],
    removed: list[tuple[int, int]],
) -> StoreStats:
    """What :meth:`EventStore.stats` returns, from ``view`` and the counts
    key; ``streams_now`` (the writer's count) stands in for a stale key, which
    only a store opened read-only has; ``lost`` are the seqs a repair lost,
    ``removed`` those a scavenge left husks of (O(ranges))."""
    files = view.files
    top = files[-1].last_seq if files else 0
    newest = view.hot.last_global()
    last_seq = max(top, 0 if newest is None else newest[1])
    counts = read_counts(view.hot.get_raw(keys.COUNTS))
    # A stale key only in a store opened read-only: then counted at open.
    streams = counts[0] if counts is not None and counts[1] == last_seq else streams_now
    husks_hot = sum(max(0, b - max(a, top + 1) + 1) for a, b in removed if b <= last_seq)
    husks_cold = sum(max(0, min(b, top) - a + 1) for a, b in removed)
    cold = sum(f.events for f in files) - husks_cold
    lost_hot = sum(max(0, b - max(a, top + 1) + 1) for a, b in lost if b <= last_seq)
    hot = last_seq - top - lost_hot - husks_hot
    return StoreStats(
        events=cold + hot,
        hot_events=hot,
        cold_events=cold,
        streams=streams,
        last_seq=last_seq,
        archive_files=len(files),
        watermark=None if view.watermark == bytes(16) else ulid_from_bytes(view.watermark),
    )
