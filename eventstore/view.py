"""A consistent view of both tiers: one LevelDB snapshot, plus the archive files
and watermark of that same moment.

Events with ids below the watermark are read from the archive files, the rest
from the hot tier, so every event is seen exactly once, whatever compaction or
merge runs meanwhile. A stream's archive files are found through its segment
keys, so replaying it never touches files that do not hold it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import chain
from typing import Any

import msgpack

from . import keys
from .archive import ArchiveFile
from .dcb import Plan
from .errors import CorruptFile
from .esdb.reader import BlockCache
from .events import Event, Query
from .hot import HotTier, HotView
from .segments import Strays

Segment = tuple[ArchiveFile, int, int]  # file, first and last version of the stream in it


class Tiers:
    """The archive files and watermark of one moment, with their lookup tables."""

    __slots__ = ("by_number", "files", "firsts", "watermark")

    def __init__(self, files: tuple[ArchiveFile, ...], watermark: bytes) -> None:
        self.files = files
        self.watermark = watermark
        self.firsts = [f.first_id for f in files]
        self.by_number = {f.number: f for f in files}


class ArchiveSet:
    """The archive folder and what the store holds of it, shared by the store
    and the collaborators it gives it to: ``tiers``, the files and watermark
    of this moment, replaced whole (by tiering's commit) under ``lock``, which
    a view takes too; the next file number; the numbers an interrupted
    compaction or merge left (``strays``); and the block cache every file's
    reader shares (``cache``)."""

    __slots__ = ("cache", "dir", "lock", "next_file", "strays", "tiers")

    def __init__(
        self, folder: str, tiers: Tiers, next_file: int, strays: Strays, cache: BlockCache
    ) -> None:
        self.dir = folder
        self.tiers = tiers
        self.next_file = next_file
        self.strays = strays
        # One budget for the decoded chunks of every archive file (issue 19).
        self.cache = cache
        # Guards the (files, watermark) pair: a view takes both and a LevelDB
        # snapshot under it; a compaction commits and swaps both under it.
        self.lock: Any = threading.Lock()  # Any: a forked handle puts a refuser here


def take_view(hot: HotTier, archive: ArchiveSet) -> View:
    """Both tiers as of now: the files and watermark, and a snapshot under them."""
    with archive.lock:
        tiers = archive.tiers
        return View(hot.view(tiers.watermark), tiers)


class View:
    __slots__ = ("by_number", "files", "firsts", "hot", "watermark")

    def __init__(self, hot: HotView, tiers: Tiers) -> None:
        self.hot = hot
        self.files = tiers.files
        self.watermark = tiers.watermark
        self.firsts = tiers.firsts
        self.by_number = tiers.by_number

    def segments(self, stream_b: bytes) -> list[Segment]:
        """The archive files holding part of a stream, oldest first.

        Keys of files this view's manifest does not name (being made, or
        replaced by a merge) are skipped. Damaged keys must not hide events,
        so what they say is checked against the files and the hot tier: each
        named file holds the stream with those versions, the versions run on
        from 0 without a gap, and the hot tier takes over right after them
        (a space lookup per file and two hot reads: cheap next to a replay).
        """
        out = []
        by_number = self.by_number
        strict = self.hot.strict
        stream = ""
        expected = 0
        at = -1  # index in self.files of the last file a key named
        try:
            stream = stream_b.decode()
            for _key, value in self.hot.items(keys.segment_prefix(stream_b)):
                number, first_version, last_version = msgpack.unpackb(value)
                f = by_number.get(number)
                if f is None:
                    continue
                space = f.reader.space(stream)
                index = bisect_left(self.firsts, f.first_id)
                if (
                    space is None
                    or (space.first_version, space.last_version) != (first_version, last_version)
                    or first_version < expected
                    or (first_version > expected and (strict or self._held(stream, at, index)))
                ):
                    raise _bad_segments(
                        stream,
                        f"a key names file {f.name} for versions "
                        f"{first_version}-{last_version}, expected from {expected}",
                    )
                out.append((f, first_version, last_version))
                expected = last_version + 1
                at = index
        except (ValueError, TypeError) as exc:  # a value that does not decode
            raise _bad_segments(
                stream or repr(stream_b), f"a key does not decode ({exc})"
            ) from None
        last = self.hot.stream_version(stream_b)
        if not strict:
            # A repair recorded losses: versions may have holes. A hole is
            # a loss only if no file past the last keyed one holds the
            # stream (a lost key would hide that file's events otherwise).
            first_hot = self.hot.first_version(stream_b) if last >= expected else None
            if (first_hot is not None and first_hot < expected) or (
                last >= expected
                and first_hot != expected
                and self._held(stream, at, len(self.files))
            ):
                raise _bad_segments(
                    stream, f"the archive keys end at version {expected - 1}, unexpected"
                )
            return out
        if last >= expected:
            first_hot = self.hot.first_version(stream_b)
            if first_hot != expected:
                raise _bad_segments(
                    stream,
                    f"versions {expected}-{last} are not in the archive keys, "
                    f"and the hot tier starts at {first_hot}",
                )
        elif last < expected - 1:
            raise _bad_segments(stream, f"keys reach version {expected - 1}, the stream {last}")
        return out

    def _held(self, stream: str, after: int, before: int) -> bool:
        """Whether a file between indexes ``after`` and ``before`` (both
        excluded) holds the stream: only asked where versions jump in a
        repaired store, so the probes are rare."""
        return any(f.reader.space(stream) is not None for f in self.files[after + 1 : before])

    def read_stream(
        self, stream: str, stream_b: bytes, from_version: int | None, backwards: bool
    ) -> Iterator[Event]:
        segments = self.segments(stream_b) if self.files else []
        if not segments:
            return self.hot.read_stream(stream, stream_b, from_version, backwards)
        # Each part is opened only when the reader gets to it; chaining them
        # in C spares every event a pass through a Python generator.
        parts = self._stream_parts(stream, stream_b, from_version, backwards, segments)
        return chain.from_iterable(parts)

    def _stream_parts(
        self,
        stream: str,
        stream_b: bytes,
        v: int | None,
        backwards: bool,
        segments: list[Segment],
    ) -> Iterator[Iterator[Event]]:
        if backwards:
            yield self.hot.read_stream(stream, stream_b, v, True)
            for f, first, _last in reversed(segments):
                if v is None or first <= v:
                    yield f.reader.read_stream(stream, v, True)
        else:
            for f, _first, last in segments:
                if v is None or last >= v:
                    yield f.reader.read_stream(stream, v, False)
            yield self.hot.read_stream(stream, stream_b, v, False)

    def read_index(
        self, stream: str, stream_b: bytes, name_b: bytes, value_b: bytes, backwards: bool
    ) -> Iterator[Event]:
        segments = self.segments(stream_b) if self.files else []
        hot = self.hot.read_index(stream, stream_b, name_b, value_b, backwards)
        if not segments:
            return hot
        name, value = name_b.decode(), value_b.decode()
        files = [f for f, _, _ in segments]

        def parts() -> Iterator[Iterator[Event]]:
            if backwards:
                yield hot
            for f in reversed(files) if backwards else files:
                yield f.reader.read_index(stream, name, value, backwards)
            if not backwards:
                yield hot

        return chain.from_iterable(parts())

    def get(self, id16: bytes) -> Event | None:
        if id16 >= self.watermark:
            return self.hot.get(id16)
        n = bisect_right(self.firsts, id16) - 1
        if n < 0 or id16 > self.files[n].last_id:
            return None
        return self.files[n].reader.get(id16)

    def read_all(
        self,
        after: bytes | None,
        backwards: bool,
        types: frozenset[str] | None,
        stream_prefix: str | None,
    ) -> Iterator[Event]:
        if not self.files:
            return self.hot.read_all(after, backwards, types, stream_prefix)
        return chain.from_iterable(self._all_parts(after, backwards, types, stream_prefix))

    def _all_parts(
        self,
        after: bytes | None,
        backwards: bool,
        types: frozenset[str] | None,
        stream_prefix: str | None,
    ) -> Iterator[Iterator[Event]]:
        if backwards:
            yield self.hot.read_all(after, True, types, stream_prefix)
            for f in reversed(self.files):
                if after is None or f.first_id < after:
                    yield f.reader.read_all(after, True, types, stream_prefix)
        else:
            for f in self.files:
                if after is None or f.last_id > after:
                    yield f.reader.read_all(after, False, types, stream_prefix)
            yield self.hot.read_all(after, False, types, stream_prefix)

    def query(
        self, query: Query, plan: Plan, after: int | None, backwards: bool
    ) -> Iterator[Event]:
        """Events matching the query with seq above ``after``: the archive
        files' (each disjoint, in seq order) then the hot tier's, or the
        other way backwards; before any retention filter."""
        if not self.files:
            return self.hot.query(plan, after, backwards)
        return chain.from_iterable(self._query_parts(query, plan, after, backwards))

    def _query_parts(
        self, query: Query, plan: Plan, after: int | None, backwards: bool
    ) -> Iterator[Iterator[Event]]:
        files = [f for f in self.files if after is None or f.last_seq > after]
        if backwards:
            yield self.hot.query(plan, after, True)
            for f in reversed(files):
                yield f.reader.query(query, after, True)
        else:
            for f in files:
                yield f.reader.query(query, after, False)
            yield self.hot.query(plan, after, False)

    def id_of_seq(self, seq: int, backwards: bool) -> bytes | None:
        """Id of the event with ``seq``, or the nearest one in the reading
        direction; None if there is none that way. Each file holds a gap-free
        seq range in id order, so inside a file this is arithmetic."""
        if backwards:
            found = self.hot.seek_seq(seq, True)
            if found is not None:
                return found
            for f in reversed(self.files):
                if seq >= f.first_seq:
                    return f.reader.id_at(min(seq, f.last_seq) - f.first_seq)
            return None
        for f in self.files:
            if seq <= f.last_seq:
                return f.reader.id_at(max(seq - f.first_seq, 0))
        return self.hot.seek_seq(seq, False)


def _bad_segments(stream: str, problem: str) -> CorruptFile:
    return CorruptFile(
        "hot tier (segment keys)",
        0,
        f"stream {stream!r}: {problem}; the archive keys are damaged "
        "(run `eventstore verify`, then `eventstore repair`)",
    )
