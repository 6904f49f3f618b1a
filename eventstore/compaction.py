"""Moving events from the hot tier into ESDB files, and folding files together.

These functions only read (a LevelDB snapshot, existing files) and write new
ESDB files; the store files their segment keys, commits them (manifest and
watermark) in one synced batch, and deletes the hot copies afterwards.

Hot keys come out of LevelDB grouped by stream and in id order, which is the
order an ESDB file wants, so a compaction streams: its memory is one stream's
secondary index postings, inside the writer.
"""

from __future__ import annotations

import heapq
import itertools
import operator
import os
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from . import keys
from .archive import ArchiveFile, file_name, from_meta
from .errors import FileFull
from .esdb import ESDBWriter
from .esdb.writer import WalkData
from .hot import LevelDBCorruption, damaged

Progress = Callable[[int], None]
_unpackb = msgpack.unpackb


def split_range(
    snap: Any, low: bytes, high: bytes, max_events: int, cut_at_holes: bool = False
) -> list[tuple[bytes, bytes]]:
    """Cut the ids in [low, high) into consecutive ranges of at most
    ``max_events`` events each, counting global log keys (no values read).

    With ``cut_at_holes`` (a store whose repair recorded lost events), a
    range also ends before every event whose seq does not follow the one
    before it: a lost event leaves a hole in its stream's versions, which no
    file can hold (FORMAT R3), and files without seq gaps inside keep every
    seq lookup of the reader exact; the hole falls between two files, where
    the segment keys and the manifest record it."""
    bounds = [low]
    count = 0
    it = snap.iterator(
        start=keys.GLOBAL + low,
        stop=keys.GLOBAL + high,
        include_value=cut_at_holes,
        fill_cache=False,
        verify_checksums=True,
    )
    try:
        if cut_at_holes:
            last_seq = None
            for key, entry in it:
                seq = int(_unpackb(entry)[2])
                if count == max_events or (last_seq is not None and seq != last_seq + 1):
                    bounds.append(key[1:])
                    count = 0
                last_seq = seq
                count += 1
        else:
            for key in it:
                if count == max_events:
                    bounds.append(key[1:])
                    count = 0
                count += 1
    except LevelDBCorruption as exc:
        raise damaged(exc) from None
    if count == 0:
        return []
    bounds.append(high)
    return list(itertools.pairwise(bounds))


def split_at(low: bytes, high: bytes, full: FileFull) -> list[tuple[bytes, bytes]]:
    """[low, high) cut where a file filled up (``full.event_id``, in the range):
    the part below it, then the rest. The writer takes events stream by
    stream, so the file that filled held every event of [low, high) of the
    streams before that event's and its own stream's events below it; the
    part below the event holds a subset of each, so it fits, or fills up at
    a smaller id, and the ranges shrink until they fit (one event always does,
    unless it alone passes a limit: that is refused as it is)."""
    cut = full.event_id
    if cut == low:  # the range's first event: it alone, then the rest
        cut = (int.from_bytes(low, "big") + 1).to_bytes(16, "big")
    if not low < cut < high:
        raise full
    return [(low, cut), (cut, high)]


def _hot_events(snap: Any, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(stream, id16, record) of every hot event with an id in [low, high),
    grouped by stream in key order, ids ascending. A stream costs a seek
    only to skip its events outside the range."""
    # fill_cache=False: a one-off scan of the whole range must not evict the
    # blocks that live reads use. verify_checksums: damaged hot data must stop
    # the compaction, not be copied into an immutable file.
    it = snap.iterator(
        start=keys.EVENT,
        stop=keys.prefix_end(keys.EVENT),
        fill_cache=False,
        verify_checksums=True,
    )
    sep = keys.SEP
    try:
        item = next(it, None)
        while item is not None:
            key = item[0]
            stream_b = key[1 : key.index(sep, 1)]
            prefix = keys.stream_prefix(stream_b)
            cut = len(prefix)
            if key[cut:] < low:  # archived events not cleaned up yet: skip them
                it.seek(prefix + low)
                item = next(it, None)
            stop = prefix + high
            while item is not None:
                key, value = item
                if not key.startswith(prefix):
                    break  # the next stream's first key: no seek needed
                if key >= stop:  # events newer than the range: skip the rest
                    it.seek(keys.prefix_end(prefix))
                    item = next(it, None)
                    break
                yield stream_b, key[cut:], value
                item = next(it, None)
    except LevelDBCorruption as exc:
        raise damaged(exc) from None


def write_file(
    folder: str,
    number: int,
    events: Iterator[tuple[bytes, bytes, bytes]],
    index_types: bool,
    progress: Progress | None = None,
) -> ArchiveFile | None:
    """Write ``events`` (grouped by stream, in writer order) as archive file
    ``number``; None if there were none. The writer fsyncs the file, renames
    it into place and fsyncs the folder. ``progress`` hears of every 4096
    events or so, at the end of a stream."""
    # The records come from the hot tier, which refused data that would not
    # read back when it was appended, or from archive files, which were
    # checked when they were written: walking data and metadata is enough.
    writer = ESDBWriter(
        os.path.join(folder, file_name(number)), index_types=index_types, decoder=WalkData()
    )
    add_stream = writer.add_stream
    told = 0
    try:
        # Each stream's run of (id16, record) pairs goes to the writer in one
        # call, picked out in C (groupby, map, itemgetter).
        for stream_b, group in itertools.groupby(events, _STREAM):
            add_stream(stream_b.decode(), map(_ID_AND_RECORD, group))
            if progress is not None and writer.events - told >= 4096:
                progress(writer.events - told)
                told = writer.events
        if writer.events == 0:
            writer.abort()
            return None
        meta = writer.finish()
    except BaseException:
        writer.abort()
        raise
    if progress is not None and meta.event_count > told:
        progress(meta.event_count - told)
    return from_meta(folder, number, meta)


_STREAM = operator.itemgetter(0)
_ID_AND_RECORD = operator.itemgetter(1, 2)


def compact_range(
    snap: Any,
    folder: str,
    number: int,
    low: bytes,
    high: bytes,
    index_types: bool,
    progress: Progress | None = None,
) -> ArchiveFile | None:
    """One archive file holding every hot event with an id in [low, high).
    A scan cut short by damaged data is caught by the store's seq check."""
    return write_file(folder, number, _hot_events(snap, low, high), index_types, progress)


def _spaces_of(n: int, f: ArchiveFile) -> Iterator[tuple[bytes, int, str]]:
    for sp in f.reader.spaces(cache=False):
        yield sp.stream.encode(), n, sp.stream


def _merged_events(files: list[ArchiveFile]) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Every event of adjacent files, grouped by stream: streams in byte order,
    and within a stream file by file (files hold disjoint, ordered id ranges)."""
    spaces = heapq.merge(*[_spaces_of(n, f) for n, f in enumerate(files)])
    for stream_b, n, stream in spaces:
        for id16, raw in files[n].reader.iter_raw(stream):
            yield stream_b, id16, raw


def merge_files(
    folder: str,
    number: int,
    files: list[ArchiveFile],
    index_types: bool,
    progress: Progress | None = None,
) -> ArchiveFile:
    """One archive file with every event of ``files`` (adjacent, in id order)."""
    result = write_file(folder, number, _merged_events(files), index_types, progress)
    assert result is not None, "merging files with events gives a file with events"
    return result


def fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
