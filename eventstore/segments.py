"""Segment keys: which archive files hold part of a stream.

One key per (stream, file), ``x seg NUL stream NUL first_id number``, whose
value is ``[number, first version, last version]``. A stream's keys list its
files in id order, so replaying it opens only the files that hold it.

Segment keys are written *before* the commit point, a bounded batch at a time,
from the finished file's own space index; readers ignore keys whose file
number their manifest does not name. So a compaction's commit batch holds the
manifest and watermark only, whatever the number of streams, and the keys of
files a merge replaced are deleted after its commit point, again in bounded
batches. File numbers are never reused while keys of theirs may exist: the
numbers a compaction or merge is making, and those it retired, are recorded
under ``x stray`` until their keys are known to be gone (swept at open after a
crash, see :func:`sweep`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import msgpack

from . import keys
from .archive import ArchiveFile, file_name, open_reader
from .errors import CorruptFile
from .esdb import ESDBReader

CHUNK = 4096  # keys per LevelDB batch

_NUMBER_LEN = 8
# The form before layout 2 had no file number: x seg NUL stream NUL first_id.
_LEGACY_SUFFIX = keys.ULID_LEN


def segment_key(stream_b: bytes, first_id: bytes, number: int) -> bytes:
    return keys.segment_prefix(stream_b) + first_id + number.to_bytes(_NUMBER_LEN, "big")


def _batches(db: Any, ops: Iterator[tuple[bytes, bytes | None]]) -> int:
    """Apply puts (value) and deletes (None) in unsynced batches of ``CHUNK``;
    the caller's synced commit makes them durable (LevelDB's log is ordered)."""
    n = 0
    batch = db.write_batch()
    for key, value in ops:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
        n += 1
        if n % CHUNK == 0:
            batch.write()
            batch = db.write_batch()
    batch.write()
    return n


def _file_keys(number: int, first_id: bytes, reader: ESDBReader) -> Iterator[tuple[bytes, bytes]]:
    packb = msgpack.packb
    for sp in reader.spaces(cache=False):
        yield (
            segment_key(sp.stream.encode(), first_id, number),
            packb([number, sp.first_version, sp.last_version]),
        )


def write(db: Any, f: ArchiveFile) -> int:
    """File the segment keys of a finished archive file, read from its space index."""
    return _batches(db, iter(_file_keys(f.number, f.first_id, f.reader)))


def delete(db: Any, number: int, first_id: bytes, reader: ESDBReader) -> int:
    """Delete the segment keys of file ``number``, found from its space index."""
    return _batches(db, ((key, None) for key, _ in _file_keys(number, first_id, reader)))


def _scan_delete(db: Any, numbers: set[int]) -> int:
    """Delete every segment key of the given file numbers by scanning all
    segment keys: the fallback for a file that is not on disk."""
    doomed = (
        (key, None)
        for key, value in db.iterator(prefix=keys.SEGMENT, fill_cache=False)
        if msgpack.unpackb(value)[0] in numbers
    )
    return _batches(db, doomed)


class Strays:
    """File numbers outside the manifest whose segment keys may exist:
    ``making`` (a compaction or merge is writing the file) and ``retired``
    (a merge replaced the file). Persisted under ``x stray``."""

    def __init__(self, making: set[int], retired: set[int]) -> None:
        self.making = making
        self.retired = retired

    @classmethod
    def load(cls, db: Any) -> Strays:
        raw = db.get(keys.STRAY)
        making, retired = ([], []) if raw is None else msgpack.unpackb(raw)
        return cls(set(making), set(retired))

    def after(self, made: set[int], retired: set[int]) -> Strays:
        """The strays once files ``made`` are committed and ``retired`` replaced."""
        return Strays(self.making - made, self.retired | retired)

    def value(self) -> bytes:
        packed: bytes = msgpack.packb([sorted(self.making), sorted(self.retired)])
        return packed

    def forget(self, db: Any) -> None:
        """Drop every number, durably: their keys and leftover files are gone."""
        self.making.clear()
        self.retired.clear()
        db.put(keys.STRAY, self.value(), sync=True)

    def highest(self) -> int:
        return max(self.making | self.retired, default=0)


def sweep(db: Any, folder: str, strays: Strays, named: set[int], own: set[int]) -> list[int]:
    """Delete the segment keys of every stray file number the manifest does
    not name (``named``); returns the ones swept. Runs at open, before the
    store's leftover files are removed, and leaves the numbers recorded:
    :meth:`Strays.forget` drops them once the files are gone. (A number
    being made that the manifest names was committed by a commit whose
    success went unreported: its keys are live.)

    A file being made has keys only once it is complete under its final name
    (they are written after the rename), and it is removed only after its
    keys are durably gone, so its file tells which keys to delete, and no
    file means no keys. The same holds for a retired file. But a file is
    read for its keys only if the store proved it its own (``own``): under
    a number's name may sit another file, whose space index would name the
    wrong keys. For those, and a retired file gone missing, every segment
    key is scanned.
    """
    if not (strays.making or strays.retired):
        return []
    swept = sorted((strays.making | strays.retired) - named)
    scan: set[int] = set()
    for number in swept:
        path = os.path.join(folder, file_name(number))
        if number not in own:
            if os.path.lexists(path) or number in strays.retired:
                scan.add(number)
            continue
        try:
            reader, _crc = open_reader(path)
            with reader:
                first_id = reader.meta.first_id
                if first_id is not None:
                    delete(db, number, first_id, reader)
        except (CorruptFile, OSError):
            scan.add(number)
    if scan:
        _scan_delete(db, scan)
    # Durable before any file goes (the deletes above are unsynced batches).
    db.put(keys.STRAY, strays.value(), sync=True)
    return swept


def migrate_legacy(db: Any) -> int:
    """Rewrite layout-1 segment keys (no file number in the key) in the
    current form; returns how many. Each batch puts the new keys and deletes
    the old ones together, so an interrupted migration resumes where it was."""
    start = len(keys.SEGMENT)

    def ops() -> Iterator[tuple[bytes, bytes | None]]:
        for key, value in db.iterator(prefix=keys.SEGMENT):
            if len(key) - key.index(keys.SEP, start) - 1 == _LEGACY_SUFFIX:
                yield key + int(msgpack.unpackb(value)[0]).to_bytes(_NUMBER_LEN, "big"), value
                yield key, None

    return _batches(db, ops()) // 2
