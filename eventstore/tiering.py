"""The store's cold-tier operations: compaction, merging, and cleanup of the
hot copies of archived events (docs/guarantees.md, "How events move to the cold tier").

The store holds a :class:`Tiering` and calls it; the public methods and
their documentation are the store's (:meth:`EventStore.compact` and so on).
Retention and scavenging belong beside compaction, here.
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
from typing import Any, NamedTuple

import msgpack
from ulid import ULID

from . import keys, segments
from .archive import ArchiveFile, Held, highest_number
from .compaction import compact_range, merge_files, split_at, split_range
from .errors import CorruptFile, FileFull, InvalidArgument, StoreClosed
from .hot import HotTier, LevelDBCorruption, damaged
from .ids import to_ulid_bytes, ulid_from_bytes
from .records import inert_ext, unpack
from .view import ArchiveSet, Tiers
from .writer import Writer

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
    """Compaction, merging and cleanup of the hot copies: a collaborator the
    store holds and calls. It works on the hot tier, the archive set and the
    writer it is given, under the store's maintenance lock (one compaction,
    merge or cleanup at a time); ``check_open`` is the store's check before
    a write (its process, open, writing)."""

    def __init__(
        self,
        path: str,
        hot: HotTier,
        archive: ArchiveSet,
        writer: Writer,
        maintenance: threading.Lock,
        index_types: bool,
        check_open: Callable[[], None],
    ) -> None:
        self.path = path
        self._hot = hot
        self._archive = archive
        self._writer = writer
        self._maintenance = maintenance
        self._index_types = index_types
        self._check_open = check_open
        self._cleaner: threading.Thread | None = None
        self._cleanup_from: bytes | None = None  # where cleanup's scan goes on
        # Events whose hot keys this process deleted since the last
        # compact_range of their namespaces (_compact_tombstones), and how
        # many compact_range calls cleanup made: the test's count of its work.
        self.tombstones = 0
        self.tombstone_compactions = 0

    def disown(self, refuse: Any) -> None:
        """In a child after fork(): the hot tier and the lock become ``refuse``."""
        self._hot = self._maintenance = refuse

    def compact(
        self,
        before: datetime | ULID | str | None = None,
        *,
        older_than: timedelta | None = None,
        max_file_events: int = DEFAULT_FILE_EVENTS,
        progress: Callable[[int], None] | None = None,
    ) -> CompactResult:
        """See :meth:`EventStore.compact`."""
        started = time.perf_counter()
        cutoff = self._cutoff(before, older_than)
        if type(max_file_events) is not int or max_file_events < 1:
            raise InvalidArgument(
                f"max_file_events must be a positive int, got {max_file_events!r}"
            )
        with self._maintenance:
            self._check_open()
            low = self._archive.tiers.watermark
            if cutoff <= low:
                return CompactResult([], 0, 0, time.perf_counter() - started)
            # Later appends get ids at or above the cutoff; wait until the ones
            # queued or being written are written, so the snapshot holds every
            # id below it (a batch leaves the queue only once it is written).
            w = self._writer
            with w._lock:
                w._ids.raise_floor(int.from_bytes(cutoff, "big") - 1)
                w._settle_queue()
                seq_at_floor = w._seq  # every later append is at or above the cutoff
                if w._queue:
                    last = w._queue[-1]
                    w._wait_for_queue(lambda: last.done)
            snap = self._hot.db.snapshot()
            made: list[ArchiveFile] = []
            committing = False
            try:
                # A range whose file fills up (a chunk would pass 64 MiB: one
                # stream's index keys, say) is cut where it did and redone;
                # the number of the file given up is used for the next.
                lost = self._hot.lost
                todo = split_range(snap, low, cutoff, max_file_events, bool(lost))[::-1]
                number = None
                while todo:
                    lo, hi = todo.pop()
                    if number is None:
                        number = self._take_file_number()
                    try:
                        f = compact_range(
                            snap, self._archive.dir, number, lo, hi, self._index_types, progress
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
            [os.path.join(self._archive.dir, f.name) for f in made],
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
                self._hot.db.put(keys.STRAY, self._archive.strays.value(), sync=True)
        except Exception:
            committing = True  # keep the files: the sweep needs them
        for f in made:
            f.reader.close()
            if not committing:
                _remove_quietly(os.path.join(self._archive.dir, f.name))
        if not committing:
            # Only now forget the numbers: a file whose number is still
            # reserved is one the next open may prove its own and remove.
            with contextlib.suppress(Exception):  # else the next open sweeps them
                strays = self._archive.strays.after(made={f.number for f in made}, retired=set())
                self._hot.db.put(keys.STRAY, strays.value(), sync=True)
                self._archive.strays = strays

    def _check_seqs(
        self, snap: Any, cutoff: bytes, seq_at_floor: int, made: list[ArchiveFile]
    ) -> None:
        """Refuse to commit new files unless they hold exactly the seqs below
        the cutoff that the archive does not hold yet, without a hole but
        the seqs a repair recorded as lost.

        LevelDB ends a scan quietly at a damaged block it cannot step past, so
        the scans' own counts cannot be trusted to notice; the gap-free log
        can. The events below the cutoff are those with seq up to the seq of
        the first event at or above it, less one; if there is none, up to the
        seq of the last append made before the id floor rose to the cutoff.
        """
        prev = self._archive.tiers.files[-1].last_seq if self._archive.tiers.files else 0
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
        # The seqs a repair recorded as lost are no file's: skipped, they
        # are the only holes allowed (between files, by split_range).
        lost = dict(self._hot.lost)

        def past_lost(seq: int) -> int:
            while seq in lost:
                seq = lost[seq] + 1
            return seq

        expected = past_lost(prev + 1)
        for f in made:
            if f.first_seq != expected or f.last_seq - f.first_seq + 1 != f.events:
                break
            expected = past_lost(f.last_seq + 1)
        else:
            if expected == past_lost(last + 1):
                return
        held = ", ".join(f"{f.first_seq}-{f.last_seq} ({f.events} events)" for f in made)
        raise CorruptFile(
            "hot tier",
            0,
            f"compaction read seqs [{held or 'none'}] but the log holds {prev + 1}-{last} "
            "below the cutoff: LevelDB skipped damaged data; nothing was moved",
        )

    def merge_archives(
        self,
        *,
        max_events: int = DEFAULT_MERGED_EVENTS,
        min_files: int = 2,
        fanout: int | None = None,
    ) -> CompactResult:
        """See :meth:`EventStore.merge_archives`."""
        started = time.perf_counter()
        if type(max_events) is not int or max_events < 1:
            raise InvalidArgument(f"max_events must be a positive int, got {max_events!r}")
        if fanout is not None and (type(fanout) is not int or fanout < 2):
            raise InvalidArgument(f"fanout must be an int of at least 2, got {fanout!r}")
        made: list[ArchiveFile] = []
        with self._maintenance:
            self._check_open()
            while True:
                merged_before = len(made)
                self._merge_runs(self._runs(max_events, fanout), min_files, made)
                # Tiered: a merge may complete a run one tier up.
                if fanout is None or len(made) == merged_before:
                    break
        return CompactResult(
            [os.path.join(self._archive.dir, f.name) for f in made],
            sum(f.events for f in made),
            sum(f.size for f in made),
            time.perf_counter() - started,
        )

    def _runs(self, max_events: int, fanout: int | None) -> list[list[ArchiveFile]]:
        """Runs of adjacent files to merge, the newest last, of at most
        ``max_events`` events each. Tiered (``fanout``): a run holds files
        of one size tier only (tier k: fanout**k to fanout**(k+1) - 1
        events) and at least ``fanout`` of them, so a merged file lands a
        tier up at least: each event is rewritten at most once per tier,
        and a large file is never rewritten for a small one's sake."""

        step = 2 if fanout is None else fanout

        def tier(events: int) -> int:
            k = 0
            while events >= step:
                events //= step
                k += 1
            return k

        runs: list[list[ArchiveFile]] = [[]]
        for f in self._archive.tiers.files:
            run = runs[-1]
            if run and (
                sum(g.events for g in run) + f.events > max_events
                # A gap between files is a repair's lost events: its
                # version holes cannot go into one file (FORMAT R3).
                or f.first_seq != run[-1].last_seq + 1
                or (fanout is not None and tier(f.events) != tier(run[0].events))
            ):
                runs.append([])
            runs[-1].append(f)
        if fanout is not None:
            runs = [run for run in runs if len(run) >= fanout]
        runs.reverse()
        return runs

    def _merge_runs(
        self, runs: list[list[ArchiveFile]], min_files: int, made: list[ArchiveFile]
    ) -> None:
        number = None
        while runs:
            run = runs.pop()
            if len(run) < max(min_files, 2):
                continue
            if number is None:
                number = self._take_file_number()
            try:
                merged = merge_files(self._archive.dir, number, run, self._index_types)
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
                self._commit_files(
                    added=[merged], removed=run, watermark=self._archive.tiers.watermark
                )
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
            self._hot.db.put(keys.STRAY, self._archive.strays.value(), sync=True)
            for old in run:
                _remove_quietly(os.path.join(self._archive.dir, old.name))
            strays = segments.Strays(
                set(self._archive.strays.making),
                self._archive.strays.retired - {old.number for old in run},
            )
            self._hot.db.put(keys.STRAY, strays.value(), sync=True)
            self._archive.strays = strays

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
        number = self._archive.next_file
        # Above any file in the folder, named or not (a file left alone at
        # open, say): a new file never takes an existing file's name.
        taken = os.listdir(self._archive.dir)
        number = max(number, highest_number(taken) + 1)
        self._archive.next_file = number + 1
        strays = segments.Strays(
            self._archive.strays.making | {number}, set(self._archive.strays.retired)
        )
        # Synced: the record that reserves the number is what lets the next
        # open prove a file of that number its own and remove it.
        self._hot.db.put(keys.STRAY, strays.value(), sync=True)
        self._archive.strays = strays
        return number

    def _commit_files(
        self, added: list[ArchiveFile], removed: list[ArchiveFile], watermark: bytes
    ) -> None:
        """The commit point: one synced batch names the new files in the
        manifest and moves the watermark. Their segment keys are already
        written; the replaced files' keys become stray, deleted afterwards."""
        gone = {f.number for f in removed}
        for f in added:  # the store's one budget for decoded chunks (issue 19)
            f.reader.share_cache(self._archive.cache)
        files = sorted(
            [f for f in self._archive.tiers.files if f.number not in gone] + added,
            key=lambda f: f.first_id,
        )
        strays = self._archive.strays.after(made={f.number for f in added}, retired=gone)
        batch = self._hot.db.write_batch(sync=True)
        batch.put(
            keys.MANIFEST,
            _packb({"next": self._archive.next_file, "files": [f.entry() for f in files]}),
        )
        batch.put(keys.WATERMARK, watermark)
        batch.put(keys.STRAY, strays.value())
        with self._archive.lock:
            try:
                batch.write()
            except BaseException:
                # The batch may be on disk all the same: remember the replaced
                # files as retired too (the open's sweep skips what its
                # manifest names), so no later write of the strays forgets them.
                self._archive.strays = segments.Strays(
                    set(self._archive.strays.making),
                    self._archive.strays.retired | gone,
                )
                raise
            self._archive.tiers = Tiers(tuple(files), watermark)
        self._archive.strays = strays

    def cleanup(self) -> int:
        """See :meth:`EventStore.cleanup`."""
        deleted = 0
        while True:
            with self._maintenance:
                self._check_open()
                n = self._delete_garbage()
                if n == 0:
                    self.tombstones += deleted
                    if deleted and self.tombstones >= self._hot_events():
                        self._compact_tombstones()
                    return deleted
            deleted += n

    def _hot_events(self) -> int:
        """The events above the watermark (seqs are dense: the newest seq
        less the archived events)."""
        cold = sum(f.events for f in self._archive.tiers.files)
        return max(self._writer._committed_seq - cold, 0)

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
        watermark = self._archive.tiers.watermark
        index_types = self._index_types
        delete = batch.delete
        unpackb = msgpack.unpackb
        last_stream, prefix = b"", b""
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
                delete(key)
                delete(keys.GLOBAL + id16)
                # Strings as the bytes they are in the keys: no UTF-8 decoding
                # and encoding again per event.
                record = unpackb(raw, raw=True, strict_map_key=False, ext_hook=inert_ext)
                if stream_b != last_stream:
                    last_stream, prefix = stream_b, keys.INDEX + stream_b + keys.SEP
                if index_types:
                    delete(prefix + b"type\x00" + record[2] + b"\x00" + id16)
                for name_b, value_b in record[5].items():
                    delete(prefix + name_b + b"\x00" + value_b + b"\x00" + id16)
                if len(record) > 6:  # its tags' t keys
                    for tag_b in record[6]:
                        delete(keys.TAG + tag_b + b"\x00" + id16)
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
        # Deleted keys stay as tombstones until LevelDB compacts them away.
        # Reads seek to the watermark and never walk them, but scans that
        # cross them (cleanup's own, a backwards read down to the watermark)
        # skip them one by one, and their bytes stay on disk. compact_range
        # rewrites the whole hot tier, so cleanup calls it only once the
        # tombstones since the last call are as many as the live hot events
        # (issue 19): a rewrite costs at most two per deleted event, whatever
        # the ratio of window to compaction interval, instead of one rewrite
        # of the hot tier per cleanup (half of cleanup's time at 100k events
        # moved out of 300k).
        self._hot.db.compact_range(start=keys.EVENT, stop=keys.prefix_end(keys.INDEX))
        self._hot.db.compact_range(start=keys.TAG, stop=keys.prefix_end(keys.TAG))
        self.tombstones = 0
        self.tombstone_compactions += 1

    @property
    def watermark(self) -> ULID | None:
        """See :attr:`EventStore.watermark`."""
        w = self._archive.tiers.watermark
        return None if w == bytes(16) else ulid_from_bytes(w)

    def archive_files(self) -> list[ArchiveInfo]:
        """See :meth:`EventStore.archive_files`."""
        return [
            ArchiveInfo(
                os.path.join(self._archive.dir, f.name),
                ulid_from_bytes(f.first_id),
                ulid_from_bytes(f.last_id),
                f.first_seq,
                f.last_seq,
                f.events,
                f.size,
            )
            for f in self._archive.tiers.files
        ]
