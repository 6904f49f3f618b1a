"""Whole-store operations: a consistent online backup, and end-to-end checks.

The store holds a :class:`Transfer` and calls it; the public methods and
their documentation are the store's (:meth:`EventStore.backup` and so on).
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, NamedTuple

import msgpack

from . import keys, segments
from ._leveldb import plyvel
from .archive import ARCHIVE_DIR
from .compaction import fsync_folder
from .errors import CorruptFile, InvalidArgument, UnsafePath
from .hot import REPAIRED, HotTier, HotView
from .records import TYPE_INDEX
from .view import ArchiveSet, View, take_view

HOT_DIR = "hot"
_packb = msgpack.packb

# A backup is built in DEST + PARTIAL_SUFFIX, marked with PARTIAL_MARK until
# it is complete: only a folder so marked is ever deleted as a leftover.
PARTIAL_SUFFIX = ".partial"
PARTIAL_MARK = ".eventstore-backup-in-progress"
_MARK_TEXT = b"an eventstore backup in progress; deleted by the next backup to this destination\n"


def _clear_partial(tmp: str) -> None:
    """Remove a leftover staging folder of an earlier backup, if it is
    provably one (a real folder holding our mark); refuse anything else."""
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(
            f"{tmp!r} (where a backup is staged) is a symlink; not following it. Remove it"
        )
    try:
        mark = os.lstat(os.path.join(tmp, PARTIAL_MARK))
        ours = stat.S_ISDIR(st.st_mode) and stat.S_ISREG(mark.st_mode)
    except (FileNotFoundError, NotADirectoryError):
        ours = False
    if not ours:
        raise InvalidArgument(
            f"{tmp!r} (where a backup is staged) exists and is not a backup in progress "
            "of eventstore; move it away, or back up to another destination"
        )
    shutil.rmtree(tmp)


class BackupResult(NamedTuple):
    """What a backup wrote."""

    path: str
    events: int
    files: int
    linked: int
    bytes: int
    seconds: float


class Transfer:
    """Backup, log gaps, repair bookkeeping and the end-to-end check: a
    collaborator the store holds and calls, on the hot tier and archive set
    it is given, under the store's maintenance lock. ``check_open`` and
    ``check_readable`` are the store's checks before a write and a read."""

    def __init__(
        self,
        path: str,
        hot: HotTier,
        archive: ArchiveSet,
        maintenance: threading.Lock,
        index_types: bool,
        check_open: Callable[[], None],
        check_readable: Callable[[], None],
    ) -> None:
        self.path = path
        self._hot = hot
        self._archive = archive
        self._maintenance = maintenance
        self._index_types = index_types
        self._check_open = check_open
        self._check_readable = check_readable

    def disown(self, refuse: Any) -> None:
        """In a child after fork(): the hot tier and the lock become ``refuse``."""
        self._hot = self._maintenance = refuse

    def _view(self) -> View:
        self._check_readable()
        return take_view(self._hot, self._archive)

    def backup(self, dest: str | os.PathLike[str]) -> BackupResult:
        """See :meth:`EventStore.backup`."""
        self._check_readable()  # before anything is made (a closed or forked handle)
        started = time.perf_counter()
        dest = os.fspath(dest)
        self._check_backup_dest(dest)
        tmp = dest.rstrip("/") + PARTIAL_SUFFIX
        _clear_partial(tmp)
        os.mkdir(tmp)  # exclusive: fails if anything took the name meanwhile
        try:
            return self._backup_into(tmp, dest, started)
        except BaseException:
            # Ours (we just made it): never leave half a backup behind.
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _check_backup_dest(self, dest: str) -> None:
        if not dest:
            raise InvalidArgument("backup destination must not be empty")
        home = os.path.realpath(self.path)
        target = os.path.realpath(dest)
        if target == home or target.startswith(home.rstrip(os.sep) + os.sep):
            raise UnsafePath(
                f"backup destination {dest!r} is inside the store {self.path!r}; "
                "a backup must live outside the folder it copies"
            )
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"backup destination {dest!r} is a symlink; give a real folder")
        if not stat.S_ISDIR(st.st_mode) or os.listdir(dest):
            raise InvalidArgument(f"backup destination {dest!r} exists and is not an empty folder")

    def _backup_into(self, tmp: str, dest: str, started: float) -> BackupResult:
        # The mark says the folder is ours, so a later backup may delete it.
        mark = os.open(
            os.path.join(tmp, PARTIAL_MARK),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
            0o644,
        )
        try:
            os.write(mark, _MARK_TEXT)
        finally:
            os.close(mark)
        os.mkdir(os.path.join(tmp, ARCHIVE_DIR))
        with self._maintenance:  # no compaction or merge swaps files meanwhile
            self._check_readable()  # a backup writes nothing here: it goes on after a failed write
            with self._archive.lock:
                snap = self._hot.db.snapshot()
                tiers = self._archive.tiers
            linked = size = 0
            for f in tiers.files:
                source = os.path.join(self._archive.dir, f.name)
                target = os.path.join(tmp, ARCHIVE_DIR, f.name)
                try:
                    os.link(source, target)
                    linked += 1
                except OSError:
                    shutil.copyfile(source, target)
                size += f.size
            copy = plyvel.DB(
                os.path.join(tmp, HOT_DIR), create_if_missing=True, error_if_exists=True
            )
            try:
                batch = copy.write_batch()
                for n, (key, value) in enumerate(snap.iterator(), 1):
                    batch.put(key, value)
                    size += len(key) + len(value)
                    if n % 10_000 == 0:
                        batch.write()
                        batch = copy.write_batch()
                batch.write()
                copy.put(keys.system_key(b"backup"), _packb(time.time()), sync=True)
                last = HotView(snap, tiers.watermark, self._hot.gate).last_global()
            finally:
                copy.close()
                snap.close()  # before close() can free the database under it
        events = max(last[1] if last else 0, tiers.files[-1].last_seq if tiers.files else 0)
        fsync_folder(os.path.join(tmp, ARCHIVE_DIR))
        os.remove(os.path.join(tmp, PARTIAL_MARK))  # complete: a store, nothing else
        fsync_folder(tmp)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.rename(tmp, dest)
        fsync_folder(os.path.dirname(os.path.abspath(dest)))
        return BackupResult(
            dest, events, len(tiers.files), linked, size, time.perf_counter() - started
        )

    def log_gaps(self) -> tuple[int, int, list[tuple[int, int]]]:
        """See :meth:`EventStore.log_gaps`."""
        view = self._view()
        seqs = chain.from_iterable(
            [range(f.first_seq, f.last_seq + 1) for f in view.files] + [view.hot.global_seqs()]
        )
        n = last = 0
        missing = []
        for seq in seqs:
            if seq > last + 1:
                missing.append((last + 1, seq - 1))
            n += 1
            last = max(last, seq)
        # The newest events lost leave no gap below the last seq; the streams'
        # versions still count them.
        written = view.hot.events_written()
        if written > last:
            missing.append((last + 1, written))
            last = written
        return n, last, missing

    def rebuild_segment_keys(self) -> int:
        """See :meth:`EventStore.rebuild_segment_keys`."""
        with self._maintenance:
            self._check_open()
            db = self._hot.db
            stale = db.iterator(prefix=keys.SEGMENT, include_value=False)
            segments._batches(db, ((key, None) for key in stale))
            written = sum(segments.write(db, f) for f in self._archive.tiers.files)
            db.put(keys.system_key(b"segments-rebuilt"), _packb(time.time()), sync=True)
            return written

    @property
    def lost_seqs(self) -> list[tuple[int, int]]:
        """See :attr:`EventStore.lost_seqs`."""
        return self._hot.lost

    def record_repair(self, lost: list[tuple[int, int]]) -> None:
        """See :meth:`EventStore.record_repair`."""
        self._check_open()
        value = _packb({"lost": [list(r) for r in lost], "at": time.time()})
        self._hot.db.put(keys.system_key(REPAIRED), value, sync=True)
        self._hot.repaired = {"lost": [list(r) for r in lost]}

    def verify(self, progress: Callable[[int], None] | None = None) -> None:
        """See :meth:`EventStore.verify`."""
        with self._maintenance:  # no compaction or merge changes files or keys meanwhile
            view = self._view()
            self._verify_files(view)
            view.hot.check_blocks()
            self._verify_segments(view)
            self._verify_log(view, progress)

    def _verify_files(self, view: View) -> None:
        for f in view.files:
            path = os.path.join(self._archive.dir, f.name)
            if not os.path.exists(path):
                raise CorruptFile(path, 0, "named by the manifest but missing")
            f.reader.verify()
            meta = f.reader.meta
            if (meta.first_id, meta.last_id, meta.first_seq, meta.last_seq, meta.event_count) != (
                f.first_id,
                f.last_id,
                f.first_seq,
                f.last_seq,
                f.events,
            ):
                raise CorruptFile(path, 0, "does not hold what the manifest says")

    def _verify_segments(self, view: View) -> None:
        where = f"{self.path} (segment keys)"
        expected = 0
        for f in view.files:
            for sp in f.reader.spaces(cache=False):
                expected += 1
                key = segments.segment_key(sp.stream.encode(), f.first_id, f.number)
                raw = view.hot.get_raw(key)
                if raw is None:
                    raise CorruptFile(where, 0, f"no key for stream {sp.stream!r} in {f.name}")
                if _decoded(raw) != [f.number, sp.first_version, sp.last_version]:
                    raise CorruptFile(
                        where, 0, f"the key of stream {sp.stream!r} in {f.name} says {raw!r}"
                    )
        found = 0
        cut = len(keys.SEGMENT)
        for key, raw in view.hot.items(keys.SEGMENT):
            found += 1
            value = _decoded(raw)
            owner = view.by_number.get(value[0]) if isinstance(value, list) and value else None
            # x seg NUL stream NUL first_id(16) number(8)
            stream_b, number = key[cut:-25], int.from_bytes(key[-8:], "big")
            if (
                owner is None
                or key[-25:-24] != keys.SEP
                or number != owner.number
                or key[-24:-8] != owner.first_id
            ):
                raise CorruptFile(where, 0, f"key {key!r} names no archive file: {value!r}")
            try:
                space = owner.reader.space(stream_b.decode())
            except (UnicodeDecodeError, ValueError):
                space = None
            if space is None:
                raise CorruptFile(where, 0, f"key {key!r}: {owner.name} does not hold that stream")
        if found != expected:
            raise CorruptFile(where, 0, f"{found} keys for {expected} spaces in the archive")

    def _verify_tags(self, view: View, expected: int) -> None:
        """The hot ``t`` keys are exactly those of the hot events (each found
        by _verify_log), and each holds its event's [stream, type, seq]."""
        found = 0
        for key, value in _tag_keys(view):
            found += 1
            entry = _decoded(value)
            event = view.hot.get(key[-16:])
            if (
                event is None
                or not isinstance(entry, list)
                or entry != [event.stream, event.type, event.seq]
                or key[1:-17].decode(errors="replace") not in event.tags
            ):
                raise CorruptFile(
                    f"{self.path} (hot tier)", 0, f"tag entry {key!r} does not match an event"
                )
        if found != expected:
            raise CorruptFile(
                f"{self.path} (hot tier)", 0, f"{found} tag entries for {expected} event tags"
            )

    def _verify_log(self, view: View, progress: Callable[[int], None] | None) -> None:
        seq, last_id = 0, b""
        versions: dict[str, int] = {}
        hot = view.hot
        # Holes a repair recorded (the events were lost): first seq -> last.
        known = dict(self.lost_seqs)
        tagged = 0  # t keys the hot events should have
        for n, event in enumerate(view.read_all(None, False, None, None), 1):
            where = f"{self.path} (event {event.id})"
            if event.seq != seq + 1 and known.get(seq + 1) != event.seq - 1:
                raise CorruptFile(where, 0, f"seq {event.seq} after {seq}: the log has a gap")
            if event.id.bytes <= last_id:
                raise CorruptFile(where, 0, "ids out of order")
            expected = versions.get(event.stream, -1) + 1
            if event.version != expected and not (known and event.version > expected):
                raise CorruptFile(where, 0, f"version {event.version}, expected {expected}")
            if event.id.bytes >= view.watermark:
                # Index entries live in blocks of their own: a damaged one would
                # hide the event from read_index.
                stream_b, id16 = event.stream.encode(), event.id.bytes
                entries = dict(event.indexes)
                if self._index_types:
                    entries[TYPE_INDEX] = event.type
                for name, value in entries.items():
                    ikey = keys.index_key(stream_b, name.encode(), value.encode(), id16)
                    if hot.get_raw(ikey) is None:
                        raise CorruptFile(where, 0, f"index entry {name}={value} is missing")
                for tag in event.tags:
                    if hot.get_raw(keys.tag_key(tag.encode(), id16)) is None:
                        raise CorruptFile(where, 0, f"tag entry {tag!r} is missing")
                tagged += len(event.tags)
            versions[event.stream] = event.version
            seq, last_id = event.seq, event.id.bytes
            if progress is not None and n % 4096 == 0:
                progress(4096)
        self._verify_tags(view, tagged)
        for stream, version in versions.items():
            recorded = hot.stream_version(stream.encode())
            # After a repair lost a stream's last events, its version stays
            # (versions are never handed out twice).
            if recorded != version and not (known and recorded > version):
                raise CorruptFile(
                    self.path,
                    0,
                    f"stream {stream!r} records version {recorded}, its events end at {version}",
                )


def _tag_keys(view: View) -> Iterator[tuple[bytes, bytes]]:
    """Every hot ``t`` key at or above the watermark, with its value."""
    start, stop = keys.TAG, keys.prefix_end(keys.TAG)
    while True:
        page = view.hot.page(start, stop, 4096)
        for key, value in page:
            if key[-16:] >= view.watermark:
                yield key, value
        if len(page) < 4096:
            return
        start = page[-1][0] + b"\x00"


def _decoded(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw)
    except (ValueError, TypeError):
        return None
