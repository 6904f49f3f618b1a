"""The store's cold-tier operations: compaction, merging, and cleanup of the
hot copies of archived events (docs/guarantees.md, "How events move to the cold tier").

A mixin of :class:`eventstore.store.EventStore`: it works on the store's own
locks and state, declared below for the type checker.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
from ulid import ULID

from . import keys, segments
from .archive import ArchiveFile, Held, highest_number
from .compaction import compact_range, merge_files, split_at, split_range
from .errors import CorruptFile, FileFull, InvalidArgument, StoreClosed
from .esdb.reader import BlockCache
from .hot import HotTier, LevelDBCorruption, damaged
from .ids import MonotonicULIDs, to_ulid_bytes, ulid_from_bytes
from .records import unpack
from .view import Tiers

_packb = msgpack.packb

DEFAULT_FILE_EVENTS = 4_000_000
DEFAULT_MERGED_EVENTS = 16_000_000


class CompactResult(NamedTuple):
    """What a compaction or merge did."""

    files: list[str]
    events: int
    bytes: int
    seconds: float


class ArchiveInfo(NamedTuple):
    """One archive file, as :meth:`EventStore.archive_files` lists it."""

    path: str
    first_id: ULID
    last_id: ULID
    first_seq: int
    last_seq: int
    events: int
    bytes: int


def held_by(db: Any, files: Sequence[ArchiveFile], watermark: bytes) -> Held:
    """Whether the store (its named ``files``, and the hot tier at and above
    the ``watermark``) holds the event with a given id at a given seq: the
    test that an unnamed file holds nothing the store would lose with it."""
    firsts = [f.first_id for f in files]

    def held(id16: bytes, seq: int) -> bool:
        try:
            at = bisect_right(firsts, id16) - 1
            if at >= 0 and id16 <= files[at].last_id:
                event = files[at].reader.get(id16)
                return event is not None and event.seq == seq
            if id16 < watermark:
                return False  # hot keys below the watermark are garbage, going
            entry = db.get(keys.GLOBAL + id16)
            return entry is not None and int(unpack(entry)[2]) == seq
        except Exception:  # unreadable or damaged: not proof of anything
            return False

    return held


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class Tiering:
    """Compaction, merging and cleanup, mixed into EventStore."""

    if TYPE_CHECKING:
        path: str
        _hot: HotTier
        _ids: MonotonicULIDs
        _index_types: bool
        _archive_dir: str
        _tiers: Tiers
        _next_file: int
        _strays: segments.Strays
        _lock: threading.Lock
        _queue: list[Any]
        _seq: int
        _tier_lock: threading.Lock
        _block_cache: BlockCache
        _cleanup_from: bytes | None
        _maintenance: threading.Lock
        _cleaner: threading.Thread | None

        def _check_open(self) -> None: ...

        def _wait_for_queue(self, written: Callable[[], bool]) -> None: ...

        def _settle_queue(self) -> None: ...

    def compact(
        self,
        before: datetime | ULID | str | None = None,
        *,
        older_than: timedelta | None = None,
        max_file_events: int = DEFAULT_FILE_EVENTS,
        progress: Callable[[int], None] | None = None,
    ) -> CompactResult:
        """Move every event with an id in [watermark, cutoff) into new ESDB files.

        The cutoff is ``before`` (a datetime, or a ULID: events with smaller
        ids move) or now minus ``older_than``. A cutoff at or below the
        watermark is a no-op; one in the future is an :class:`InvalidArgument`.
        Above ``max_file_events`` the range is split into several files, and
        a range whose file would pass a format limit (FileFull) is cut where
        it filled and written again as two. ``progress`` is called with
        counts of events written (a file written again counts again). Reads and
        appends go on meanwhile and answer the same throughout.

        Raises:
            InvalidArgument: both or neither of ``before`` and ``older_than``, or a cutoff in the
                future.
            InvalidULID: ``before`` is neither a datetime nor a ULID.
            CorruptFile: a damaged hot-tier block was found while copying; nothing is committed.
            StoreClosed: the store is closed.
        """
        started = time.perf_counter()
        cutoff = self._cutoff(before, older_than)
        if type(max_file_events) is not int or max_file_events < 1:
            raise InvalidArgument(
                f"max_file_events must be a positive int, got {max_file_events!r}"
            )
        with self._maintenance:
            self._check_open()
            low = self._tiers.watermark
            if cutoff <= low:
                return CompactResult([], 0, 0, time.perf_counter() - started)
            # Later appends get ids at or above the cutoff; wait until the ones
            # queued or being written are written, so the snapshot holds every
            # id below it (a batch leaves the queue only once it is written).
            with self._lock:
                self._ids.raise_floor(int.from_bytes(cutoff, "big") - 1)
                self._settle_queue()
                seq_at_floor = self._seq  # every later append is at or above the cutoff
                if self._queue:
                    last = self._queue[-1]
                    self._wait_for_queue(lambda: last.done)
            snap = self._hot.db.snapshot()
            made: list[ArchiveFile] = []
            committing = False
            try:
                # A range whose file fills up (a chunk would pass 64 MiB: one
                # stream's index keys, say) is cut where it did and redone;
                # the number of the file given up is used for the next.
                todo = split_range(snap, low, cutoff, max_file_events)[::-1]
                number = None
                while todo:
                    lo, hi = todo.pop()
                    if number is None:
                        number = self._take_file_number()
                    try:
                        f = compact_range(
                            snap, self._archive_dir, number, lo, hi, self._index_types, progress
                        )
                    except FileFull as full:
                        todo += split_at(lo, hi, full)[::-1]
                        continue
                    if f is not None:
                        number = None
                        made.append(f)
                        segments.write(self._hot.db, f)
                self._check_seqs(snap, cutoff, seq_at_floor, made)
                committing = True
                self._commit_files(added=made, removed=[], watermark=cutoff)
            except BaseException:
                self._abandon(made, committing)
                raise
            finally:
                # Released here, under the maintenance lock that close() takes:
                # a plyvel snapshot freed after its database closes crashes.
                snap.close()
            self._start_cleanup()
        return CompactResult(
            [os.path.join(self._archive_dir, f.name) for f in made],
            sum(f.events for f in made),
            sum(f.size for f in made),
            time.perf_counter() - started,
        )

    def _abandon(self, made: list[ArchiveFile], committing: bool) -> None:
        """Undo a compaction or merge that failed before its commit point:
        delete the new files' segment keys and forget their numbers, durably,
        and only then remove the files. If that fails too, or if the commit
        itself failed (its batch may be on disk all the same), files, keys
        and numbers stay as they are: the next open keeps what its manifest
        names and sweeps the rest, reading each file for its keys."""
        try:
            if not committing:
                for f in made:
                    segments.delete(self._hot.db, f.number, f.first_id, f.reader)
                # The deletes durable (LevelDB's log is ordered) before a file goes.
                self._hot.db.put(keys.STRAY, self._strays.value(), sync=True)
        except Exception:
            committing = True  # keep the files: the sweep needs them
        for f in made:
            f.reader.close()
            if not committing:
                _remove_quietly(os.path.join(self._archive_dir, f.name))
        if not committing:
            # Only now forget the numbers: a file whose number is still
            # reserved is one the next open may prove its own and remove.
            with contextlib.suppress(Exception):  # else the next open sweeps them
                strays = self._strays.after(made={f.number for f in made}, retired=set())
                self._hot.db.put(keys.STRAY, strays.value(), sync=True)
                self._strays = strays

    def _check_seqs(
        self, snap: Any, cutoff: bytes, seq_at_floor: int, made: list[ArchiveFile]
    ) -> None:
        """Refuse to commit new files unless they hold exactly the seqs below
        the cutoff that the archive does not hold yet, without a hole.

        LevelDB ends a scan quietly at a damaged block it cannot step past, so
        the scans' own counts cannot be trusted to notice; the gap-free log
        can. The events below the cutoff are those with seq up to the seq of
        the first event at or above it, less one; if there is none, up to the
        seq of the last append made before the id floor rose to the cutoff.
        """
        prev = self._tiers.files[-1].last_seq if self._tiers.files else 0
        it = snap.iterator(
            start=keys.GLOBAL + cutoff, stop=keys.prefix_end(keys.GLOBAL), verify_checksums=True
        )
        try:
            above = next(it, None)
        except LevelDBCorruption as exc:
            raise damaged(exc) from None
        finally:
            it.close()
        last = seq_at_floor if above is None else int(unpack(above[1])[2]) - 1
        expected = prev + 1
        for f in made:
            if f.first_seq != expected or f.last_seq - f.first_seq + 1 != f.events:
                break
            expected = f.last_seq + 1
        else:
            if expected == last + 1:
                return
        held = ", ".join(f"{f.first_seq}-{f.last_seq} ({f.events} events)" for f in made)
        raise CorruptFile(
            "hot tier",
            0,
            f"compaction read seqs [{held or 'none'}] but the log holds {prev + 1}-{last} "
            "below the cutoff: LevelDB skipped damaged data; nothing was moved",
        )

    def merge_archives(
        self, *, max_events: int = DEFAULT_MERGED_EVENTS, min_files: int = 2
    ) -> CompactResult:
        """Fold runs of adjacent archive files into single files of at most
        ``max_events`` events each, so years of daily compactions do not leave
        thousands of files. Readers holding the old files keep reading them.

        Raises:
            InvalidArgument: ``max_events`` is not a positive int.
            CorruptFile: an archive file being merged is damaged.
            StoreClosed: the store is closed.
        """
        started = time.perf_counter()
        if type(max_events) is not int or max_events < 1:
            raise InvalidArgument(f"max_events must be a positive int, got {max_events!r}")
        made: list[ArchiveFile] = []
        with self._maintenance:
            self._check_open()
            runs: list[list[ArchiveFile]] = [[]]
            for f in self._tiers.files:
                if runs[-1] and sum(g.events for g in runs[-1]) + f.events > max_events:
                    runs.append([])
                runs[-1].append(f)
            runs.reverse()
            number = None
            while runs:
                run = runs.pop()
                if len(run) < max(min_files, 2):
                    continue
                if number is None:
                    number = self._take_file_number()
                try:
                    merged = merge_files(self._archive_dir, number, run, self._index_types)
                except FileFull:
                    # Too much for one file: merge each half of the run.
                    half = len(run) // 2
                    runs += [part for part in (run[half:], run[:half]) if len(part) >= 2]
                    continue
                number = None
                committing = False
                try:
                    segments.write(self._hot.db, merged)
                    committing = True
                    self._commit_files(added=[merged], removed=run, watermark=self._tiers.watermark)
                except BaseException:
                    self._abandon([merged], committing)
                    raise
                made.append(merged)
                # Past the commit point: the replaced files' keys go, durably,
                # then the files (open views keep their own mapping of them),
                # then the numbers (reserved until the files are gone, so
                # that an open after a crash here proves the files its own).
                for old in run:
                    segments.delete(self._hot.db, old.number, old.first_id, old.reader)
                self._hot.db.put(keys.STRAY, self._strays.value(), sync=True)
                for old in run:
                    _remove_quietly(os.path.join(self._archive_dir, old.name))
                strays = segments.Strays(
                    self._hot.db,
                    set(self._strays.making),
                    self._strays.retired - {old.number for old in run},
                )
                self._hot.db.put(keys.STRAY, strays.value(), sync=True)
                self._strays = strays
        return CompactResult(
            [os.path.join(self._archive_dir, f.name) for f in made],
            sum(f.events for f in made),
            sum(f.size for f in made),
            time.perf_counter() - started,
        )

    def _cutoff(self, before: Any, older_than: timedelta | None) -> bytes:
        if (before is None) == (older_than is None):
            raise InvalidArgument("give compact() exactly one of before= or older_than=")
        now_ms = time.time_ns() // 1_000_000
        if older_than is not None:
            if not isinstance(older_than, timedelta) or older_than < timedelta(0):
                raise InvalidArgument(
                    f"older_than must be a non-negative timedelta, got {older_than!r}"
                )
            ms = now_ms - int(older_than / timedelta(milliseconds=1))
            return (max(ms, 0) << 80).to_bytes(16, "big")
        if isinstance(before, datetime):
            if before.tzinfo is None:
                raise InvalidArgument(
                    "before= needs an aware datetime (say, with tzinfo=timezone.utc)"
                )
            ms = int(before.timestamp() * 1000)
            if ms > now_ms:
                raise InvalidArgument(f"cutoff {before.isoformat()} is in the future")
            return (max(ms, 0) << 80).to_bytes(16, "big")
        cutoff = to_ulid_bytes(before)
        if int.from_bytes(cutoff[:6], "big") > now_ms:
            raise InvalidArgument(f"cutoff {ulid_from_bytes(cutoff)} is in the future")
        return cutoff

    def _take_file_number(self) -> int:
        """A new file number, recorded as being made before any key of it is
        written, so that a crash leaves it to be swept, never reused."""
        number = self._next_file
        # Above any file in the folder, named or not (a file left alone at
        # open, say): a new file never takes an existing file's name.
        taken = os.listdir(self._archive_dir)
        number = max(number, highest_number(taken) + 1)
        self._next_file = number + 1
        strays = segments.Strays(
            self._hot.db, self._strays.making | {number}, set(self._strays.retired)
        )
        # Synced: the record that reserves the number is what lets the next
        # open prove a file of that number its own and remove it.
        self._hot.db.put(keys.STRAY, strays.value(), sync=True)
        self._strays = strays
        return number

    def _commit_files(
        self, added: list[ArchiveFile], removed: list[ArchiveFile], watermark: bytes
    ) -> None:
        """The commit point: one synced batch names the new files in the
        manifest and moves the watermark. Their segment keys are already
        written; the replaced files' keys become stray, deleted afterwards."""
        gone = {f.number for f in removed}
        for f in added:  # the store's one budget for decoded chunks (issue 19)
            f.reader.share_cache(self._block_cache)
        files = sorted(
            [f for f in self._tiers.files if f.number not in gone] + added, key=lambda f: f.first_id
        )
        strays = self._strays.after(made={f.number for f in added}, retired=gone)
        batch = self._hot.db.write_batch(sync=True)
        batch.put(
            keys.MANIFEST, _packb({"next": self._next_file, "files": [f.entry() for f in files]})
        )
        batch.put(keys.WATERMARK, watermark)
        batch.put(keys.STRAY, strays.value())
        with self._tier_lock:
            try:
                batch.write()
            except BaseException:
                # The batch may be on disk all the same: remember the replaced
                # files as retired too (the open's sweep skips what its
                # manifest names), so no later write of the strays forgets them.
                self._strays = segments.Strays(
                    self._hot.db, set(self._strays.making), self._strays.retired | gone
                )
                raise
            self._tiers = Tiers(tuple(files), watermark)
        self._strays = strays

    def cleanup(self) -> int:
        """Delete, now, the hot copies of archived events that a compaction left
        behind (normally a background thread does it after each compaction,
        a bounded batch at a time). Returns how many events' keys it deleted.

        Raises:
            StoreClosed: the store is closed.
        """
        deleted = 0
        while True:
            with self._maintenance:
                self._check_open()
                n = self._delete_garbage()
                if n == 0:
                    if deleted:
                        self._compact_tombstones()
                    return deleted
            deleted += n

    def _start_cleanup(self) -> None:
        thread = self._cleaner
        if thread is None or not thread.is_alive():
            self._cleaner = threading.Thread(
                target=self._cleanup_quietly, name="eventstore-cleanup", daemon=True
            )
            self._cleaner.start()

    def _cleanup_quietly(self) -> None:
        with contextlib.suppress(StoreClosed):  # resumed at the next open
            self.cleanup()

    def _delete_garbage(self, chunk: int = 4096) -> int:
        """Delete the hot keys of up to ``chunk`` events below the watermark.
        Safe to stop anywhere: what is left is found again from the global log."""
        snap = self._hot.db.snapshot()
        batch = self._hot.db.write_batch()
        n = 0
        try:
            n = self._delete_some(snap, batch, chunk)
        finally:
            snap.close()  # under the maintenance lock; also frees the deleted keys
        if n:
            batch.write()
        return n

    def _delete_some(self, snap: Any, batch: Any, chunk: int) -> int:
        """Put the deletes of up to ``chunk`` events' hot keys into ``batch``.

        Stream by stream (issue 19): a stream's archived events are the
        start of its ``e`` range, below the watermark, read in one
        sequential scan that gives each event's keys (its ``g`` key from the
        id, its index keys from the record), then one seek to the next
        stream. The global log was walked before, with a random lookup and a
        decode per event: ~12k events/s against a hot tier of 300k. What the
        scans leave (a ``g`` key whose record was lost) is swept from the
        global log at the end."""
        watermark = self._tiers.watermark
        index_types = self._index_types
        n = 0
        # fill_cache=False: deleting old events must not evict the blocks that
        # live reads keep in LevelDB's cache.
        it = snap.iterator(
            start=self._cleanup_from or keys.EVENT,
            stop=keys.prefix_end(keys.EVENT),
            fill_cache=False,
        )
        try:
            from_start = self._cleanup_from is None
            while n < chunk:
                try:
                    key, raw = next(it)
                except StopIteration:
                    self._cleanup_from = None
                    if from_start or n:
                        break
                    # Began mid-way: garbage may lie before (a later compaction's).
                    return n + self._delete_some(snap, batch, chunk - n)
                sep = key.index(keys.SEP, 1)
                stream_b, id16 = key[1:sep], key[sep + 1 :]
                if id16 >= watermark:  # the rest of this stream is hot: next one
                    it.seek(keys.prefix_end(key[: sep + 1]))
                    continue
                batch.delete(key)
                batch.delete(keys.GLOBAL + id16)
                record = unpack(raw)
                if index_types:
                    batch.delete(keys.index_key(stream_b, b"type", record[2].encode(), id16))
                for name, value in record[5].items():
                    batch.delete(keys.index_key(stream_b, name.encode(), value.encode(), id16))
                n += 1
            else:
                self._cleanup_from = key + b"\x00"  # just above the last key deleted
                return n
        finally:
            it.close()
        if n == 0:
            # Nothing left in the streams: global entries without a record
            # (its keys but custom index keys are known from the entry).
            g = snap.iterator(start=keys.GLOBAL, stop=keys.GLOBAL + watermark, fill_cache=False)
            try:
                for key, entry in islice(g, chunk):
                    stream, type_, _seq = unpack(entry)
                    stream_b, id16 = stream.encode(), key[1:]
                    batch.delete(key)
                    batch.delete(keys.event_key(stream_b, id16))
                    if index_types:
                        batch.delete(keys.index_key(stream_b, b"type", type_.encode(), id16))
                    n += 1
            finally:
                g.close()
        return n

    def _compact_tombstones(self) -> None:
        # Deleted keys stay as tombstones until LevelDB compacts them away,
        # and every seek into the event and index namespaces would have to
        # skip over them: compact those namespaces once the deletion is done.
        self._hot.db.compact_range(start=keys.EVENT, stop=keys.prefix_end(keys.INDEX))

    @property
    def watermark(self) -> ULID | None:
        """Events with smaller ids live in archive files (None: nothing archived yet)."""
        w = self._tiers.watermark
        return None if w == bytes(16) else ulid_from_bytes(w)

    def archive_files(self) -> list[ArchiveInfo]:
        """The archive files the manifest names, oldest first."""
        return [
            ArchiveInfo(
                os.path.join(self._archive_dir, f.name),
                ulid_from_bytes(f.first_id),
                ulid_from_bytes(f.last_id),
                f.first_seq,
                f.last_seq,
                f.events,
                f.size,
            )
            for f in self._tiers.files
        ]
