"""EventStore: one object over the hot tier (LevelDB) and the cold tier (ESDB files).

Writes always go to the hot tier. Expected versions are checked, ids and
``seq`` assigned, and the append queued under one writer lock, so id order =
``seq`` order = commit order. The appender at the head of the queue writes
every queued append in one LevelDB write: with ``sync=True`` that is group
commit, many appends sharing one fsync.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

import msgpack
from ulid import ULID

from . import counters, dcb, forks, keys, retention, segments
from ._leveldb import plyvel
from .archive import (
    ARCHIVE_DIR,
    ArchiveFile,
    advice,
    check_entries,
    check_folder,
    classify_unnamed,
    highest_number,
    listing,
    open_files,
    parse_name,
)
from .counters import StoreStats
from .erasure import Erasure
from .errors import (
    AppendTooLarge,
    EventStoreError,
    InvalidArgument,
    InvalidNameType,
    InvalidType,
    NotAStore,
    StoreClosed,
    StoreDamaged,
    StoreNotFound,
    UsedAfterFork,
)
from .esdb.reader import BlockCache
from .events import (
    ANY,
    AppendCondition,
    AppendResult,
    Event,
    Expected,
    NewEvent,
    Query,
    QueryItem,
    RemovedEvent,
    Snapshot,
)
from .hot import HotTier, at_boundary
from .ids import (
    MonotonicULIDs,
    to_ulid_bytes,
    ulid_from_bytes,
)
from .prepare import (
    DEFAULT_MAX_APPEND_BYTES,
    DEFAULT_MAX_APPEND_EVENTS,
    Imported,
    _Prepared,
    prepare_import,
)
from .records import (
    check_limit,
    check_serialisable,
    name_bytes,
    unpack,
)
from .retention import StreamRules
from .scavenge import ScavengeResult, Scavenging
from .subscriptions import DEFAULT_PAGE_SIZE, Subscription
from .tiering import (
    DEFAULT_FILE_EVENTS,
    DEFAULT_MERGED_EVENTS,
    ArchiveInfo,
    CompactResult,
    Tiering,
    held_by,
)
from .transfer import HOT_DIR, BackupResult, Transfer
from .view import ArchiveSet, Tiers, View, take_view
from .writer import Writer

LAYOUT_VERSION = keys.LAYOUT_VERSION
# Decoded ESDB chunks kept for all archive files together (each reader alone: 32 MiB).
DEFAULT_ARCHIVE_CACHE_BYTES = 64 << 20

_packb = msgpack.packb

# How far ahead of this machine's clock an imported id may be timed.
DEFAULT_IMPORT_CLOCK_TOLERANCE = timedelta(days=1)


class IncompatibleStore(EventStoreError):
    """The store on disk was written by a newer eventstore, or with other options."""


# The manifest of a store that has never archived anything (no manifest key).
_NO_FILES: list[list[Any]] = []


class _State(NamedTuple):
    """A store's system keys as open() found them, checked for shape."""

    config: Any
    entries: list[list[Any]]
    next_file: int
    watermark: bytes
    strays: segments.Strays


# Names a store's own folder may hold besides its two tiers: the stores that
# eventstore.contrib.eventsourcing keeps for other purposes, and the folder
# mkfs puts at the root of a new volume (a store may own a whole volume).
_OWN_PREFIXES = ("eventsourcing-",)
_OWN_EXTRAS = ("lost+found",)
# What LevelDB leaves in a folder before its creation completes (CURRENT is
# written last): nothing that holds data.
_LEVELDB_SCAFFOLD = re.compile(r"(LOCK|LOG|LOG\.old|MANIFEST-[0-9]+|[0-9]+\.dbtmp)\Z")


def locate_store(path: str, create: bool) -> bool:
    """Decide, without writing anything, whether ``path`` is a store (False)
    or a store to create (True); raise if it is neither. A store is a folder
    whose ``hot/CURRENT`` exists; a new one is a missing or empty folder (or
    one whose creation was cut short before LevelDB wrote anything)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if create:
            return True
        raise StoreNotFound(
            f"no store at {path}: the folder does not exist "
            "(check the path; pass create=True to make a new store there)"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotAStore(f"{path} is not a folder, so it cannot be a store; nothing was created")
    hot = os.path.join(path, HOT_DIR)
    if os.path.isfile(os.path.join(hot, "CURRENT")):
        return False
    names = os.listdir(path)
    names = [n for n in names if n not in _OWN_EXTRAS]
    foreign = sorted(
        n for n in names if n not in (HOT_DIR, ARCHIVE_DIR) and not n.startswith(_OWN_PREFIXES)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise NotAStore(
            f"{path} is not an eventstore store: it holds other things ({shown}); "
            "nothing was created (open a new or empty folder, or the store's own folder)"
        )
    hot_files = os.listdir(hot) if os.path.isdir(hot) else None
    unfinished = (
        names == [HOT_DIR]
        and hot_files is not None
        and all(_LEVELDB_SCAFFOLD.match(n) for n in hot_files)
    )
    if names and not unfinished:
        what = (
            "its hot tier (hot/) is missing"
            if hot_files is None
            else "its hot tier has no CURRENT file (LevelDB would start it over, empty)"
        )
        raise StoreDamaged(f"store {path}: {what}; {advice(path)}")
    if create:
        return True
    what = "its creation was cut short before it held anything" if names else "the folder is empty"
    raise StoreNotFound(f"no store at {path}: {what} (pass create=True to make a new store there)")


def _limited(events: Iterator[Event], limit: int | None) -> Iterator[Event]:
    return events if limit is None else islice(events, limit)


def _used_after_fork(path: str) -> UsedAfterFork:
    return UsedAfterFork(
        f"store {path!r} was opened by process {os.getppid()} (or an ancestor) and this "
        f"process ({os.getpid()}) is a child forked from it: the handle is the parent's and "
        "refuses everything here. Open the store after the fork (one process owns a "
        "store), or reach it through `eventstore serve`; see docs/operations.md"
    )


class _Forked:
    """What a store's locks and hot tier become in a child after fork():
    any use raises UsedAfterFork. A lock another thread of the parent held at
    the fork would never be released here, and the database's files, log
    and lock are the parent's."""

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise _used_after_fork(self._path)

    def __enter__(self) -> None:
        raise _used_after_fork(self._path)

    def __exit__(self, *exc: object) -> None:
        return None


class _Owner:
    """The process that opened a store handle, and the handle's append bounds.

    One attribute for the three: an instance dict of more than 30 keys loses
    CPython's shared-key layout, and with it the fast path of every
    ``self.x`` on the append path (measured: 0.6 us of a 14 us append).
    """

    __slots__ = ("max_bytes", "max_events", "pid")

    def __init__(self, pid: int, max_events: int, max_bytes: int) -> None:
        self.pid = pid
        self.max_events = max_events
        self.max_bytes = max_bytes


# The parent's plyvel objects, in a child: never freed there (see _disown).
_DISOWNED: list[Any] = []


class EventStore:
    """An embedded event store. Open it with :meth:`open`; close it or use ``with``."""

    def __init__(
        self,
        path: str,
        *,
        sync: bool = False,
        index_types: bool | None = None,
        create: bool = True,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
        max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES,
        archive_cache_bytes: int = DEFAULT_ARCHIVE_CACHE_BYTES,
        shredding: bool = False,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or path-like, got {type(path).__name__}")
        self.path = os.fspath(path)
        if not self.path:
            raise InvalidArgument("path must not be empty")
        self.sync = bool(sync)
        for name, bound in (
            ("max_append_events", max_append_events),
            ("max_append_bytes", max_append_bytes),
        ):
            if type(bound) is not int or bound < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {bound!r}")
        if type(archive_cache_bytes) is not int or archive_cache_bytes < 0:
            raise InvalidArgument(
                f"archive_cache_bytes must be an int >= 0, got {archive_cache_bytes!r}"
            )
        # One budget for the decoded chunks of every archive file (issue 19).
        cache = BlockCache(archive_cache_bytes)
        self._own = _Owner(os.getpid(), max_append_events, max_append_bytes)
        self._archive_dir = os.path.join(self.path, ARCHIVE_DIR)
        # Everything is checked before anything is written: a store that
        # refuses to open is left exactly as it was found.
        new = locate_store(self.path, create)
        if new:
            os.makedirs(self.path, exist_ok=True)
        check_folder(self._archive_dir)
        try:
            self._hot = HotTier(os.path.join(self.path, HOT_DIR), create=new)
        except plyvel.Error as exc:
            raise StoreDamaged(
                f"store {self.path}: its hot tier (LevelDB) does not open: {exc}; "
                f"{advice(self.path)}"
            ) from None
        files: tuple[ArchiveFile, ...] = ()
        try:
            state = self._read_state(index_types, create)
            files = tuple(open_files(self._archive_dir, state.entries))
            for f in files:
                f.reader.share_cache(cache)
            # Strays: numbers an interrupted compaction or merge was making or
            # had replaced, whose segment keys may exist.
            strays = state.strays
            named = {int(entry[0]) for entry in state.entries}
            reserved = (strays.making | strays.retired) - named
            ours, self.unexpected_files = classify_unnamed(
                self._archive_dir,
                {str(entry[1]) for entry in state.entries},
                reserved,
                held_by(self._hot.db, files, state.watermark),
            )
            # With no manifest, a file of the store's own naming that no
            # interrupted compaction explains means the manifest was lost.
            unexplained = [
                u.name
                for u in self.unexpected_files
                if (parsed := parse_name(u.name)) is not None and parsed[0] not in reserved
            ]
            if state.entries is _NO_FILES and unexplained:
                raise StoreDamaged(
                    f"store {self.path}: archive/ holds files of this store "
                    f"({', '.join(unexplained[:5])}) but the hot tier has no archive "
                    f"manifest naming them; {advice(self.path)}"
                )
            try:
                last = self._hot.view().last_global()
                if last is not None and (len(last[0]) != 16 or type(last[1]) is not int):
                    raise ValueError(f"the newest global entry is malformed: {last!r:.120}")
            except Exception as exc:  # plyvel's errors, or msgpack's on a damaged entry
                raise StoreDamaged(
                    f"store {self.path}: its hot tier (LevelDB) cannot be read: {exc}; "
                    f"{advice(self.path)}"
                ) from None
            # -- checked; from here on the open finishes interrupted work.
            self._index_types = self._settle_config(state.config, index_types)
            os.makedirs(self._archive_dir, exist_ok=True)
            # The segment keys of leftover numbers go first, then the files
            # proven the store's own, then the numbers.
            self.strays_swept = segments.sweep(
                self._hot.db,
                self._archive_dir,
                strays,
                named,
                {parsed[0] for parsed in map(parse_name, ours) if parsed and not parsed[1]},
            )
            for name in ours:
                os.remove(os.path.join(self._archive_dir, name))
            self.orphans_removed = ours
            if strays.making or strays.retired:
                strays.forget(self._hot.db)
            # Never reuse a number whose keys may exist, nor the name of a
            # file left alone in the folder.
            next_file = max(
                state.next_file,
                strays.highest() + 1,
                highest_number(listing(self._archive_dir)) + 1,
            )
            watermark = state.watermark
            floor = int.from_bytes(last[0], "big") if last else 0
            seq = last[1] if last else 0
            if files:  # when every event is cold, the files hold the highs
                floor = max(floor, int.from_bytes(files[-1].last_id, "big"))
                seq = max(seq, files[-1].last_seq)
            # Seqs a repair recorded lost were handed out once: never again
            # (a client may hold the position of the newest lost event).
            for _first, lost_last in self._hot.lost:
                seq = max(seq, lost_last)
            # Ids below the watermark belong to the archive: never hand one out,
            # even if the clock now reads earlier than the last cutoff.
            floor = max(floor, int.from_bytes(watermark, "big") - 1)
            # Streams so far (issue 19): kept with every commit from here on.
            streams = counters.load_counts(self._hot.db, seq, self._hot.read_only is None)
        except BaseException:
            for f in files:
                f.reader.close()
            self._hot.close()
            raise
        ids = MonotonicULIDs(floor)
        # The archive files and watermark of this moment: replaced whole, never edited.
        self._archive = ArchiveSet(
            self._archive_dir, Tiers(files, watermark), next_file, strays, cache
        )
        self._maintenance = threading.Lock()  # one compaction, merge or cleanup at a time
        # The writer lock, queue and group commit (eventstore/writer.py).
        self._writer = Writer(self._hot, self.path, self.sync, ids, seq, streams)
        check_open = _open_check(self.path, self._own, self._writer)
        check_readable = _readable_check(self.path, self._own, self._writer)
        # Collaborators, each given what it works on (eventstore/tiering.py,
        # eventstore/transfer.py); the public methods below call them.
        self._tiering = Tiering(
            self.path,
            self._hot,
            self._archive,
            self._writer,
            self._maintenance,
            self._index_types,
            check_open,
        )
        self._transfer = Transfer(
            self.path,
            self._hot,
            self._archive,
            self._maintenance,
            self._index_types,
            check_open,
            check_readable,
        )
        forks.own(self)  # disowned in a child after fork()
        # The deletion, retention and redaction rules (retention.py), which
        # the writer checks appends against and every read filters by.
        self._forget = self._load_forgetting()
        self._writer.forget = self._forget
        if shredding:
            from .sealing import KeyStore  # the crypto extra, only when asked for

            self._forget.sealing = KeyStore(self.path)
        self._erasure = Erasure(
            self._hot,
            self._writer,
            self._forget,
            self._maintenance,
            self._index_types,
            check_open,
            self.get,
        )
        self._scavenging = Scavenging(
            self._hot,
            self._archive,
            self._tiering,
            self._forget,
            self._maintenance,
            self._index_types,
            check_open,
            check_readable,
            self._writer.paused,
        )
        if watermark != bytes(16):  # finish what an interrupted cleanup left
            self._tiering._start_cleanup()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        sync: bool = False,
        index_types: bool | None = None,
        create: bool = True,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
        max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES,
        archive_cache_bytes: int = DEFAULT_ARCHIVE_CACHE_BYTES,
        shredding: bool = False,
    ) -> EventStore:
        """Open the store in folder ``path``, creating it if ``create`` (the
        default) and the folder is missing or empty.

        ``sync=True`` makes every append durable before it returns.
        ``index_types`` (fixed when the store is created, default True) files
        every event under ``type=<its type>`` in its stream's indexes.
        ``max_append_events`` and ``max_append_bytes`` bound one append,
        ``append_many`` or import batch (default 100,000 events and 64 MiB of
        packed type, data, metadata and indexes); a larger one raises
        :class:`AppendTooLarge` and writes nothing.
        ``archive_cache_bytes`` (default 64 MiB) bounds the decoded blocks
        and index chunks kept in memory for all archive files together.
        ``shredding=True`` (the ``crypto`` extra) opens the store's subject
        keys: ``seal`` and ``forget_subject`` work, and every read (streams,
        indexes, ``get``, ``read_all``, subscriptions, the server) returns
        sealed events decrypted, and those of a forgotten subject as
        ``ShreddedEvent``. Without it, reads return sealed events as stored.
        Raises :class:`StoreLocked` if another process has the store open,
        :class:`StoreNotFound` if there is no store and ``create`` is False,
        :class:`NotAStore` for a folder holding other things,
        :class:`StoreDamaged` (or :class:`ArchiveMismatch`) for a store whose
        files are missing or do not agree, :class:`UnsafePath` for an
        ``archive`` that is a symlink or a file in it that is not a regular
        file. None of them changes anything on disk.
        The handle belongs to this process: used in a child after ``fork()``
        it raises :class:`UsedAfterFork` (see docs/operations.md).
        """
        return _open(
            cls,
            os.fspath(path),
            sync=sync,
            index_types=index_types,
            create=create,
            max_append_events=max_append_events,
            max_append_bytes=max_append_bytes,
            archive_cache_bytes=archive_cache_bytes,
            shredding=shredding,
        )

    def _read_state(self, index_types: bool | None, create: bool) -> _State:
        """The store's system keys, checked for shape; :class:`StoreDamaged`
        if they are unreadable or missing where the store's files say they
        must exist. Reads only."""
        db = self._hot.db

        def damaged(problem: str) -> StoreDamaged:
            return StoreDamaged(f"store {self.path}: {problem}; {advice(self.path)}")

        try:
            config = self._hot.get_system(b"config")
            raw_manifest = db.get(keys.MANIFEST)
            watermark = db.get(keys.WATERMARK)
            raw_strays = db.get(keys.STRAY)
            it = db.iterator(include_value=False)
            try:
                any_key = next(it, None)
            finally:
                it.close()
        except plyvel.Error as exc:
            raise damaged(f"its hot tier (LevelDB) cannot be read: {exc}") from None
        except Exception as exc:  # msgpack raises several unrelated types
            raise damaged(f"its configuration does not decode: {exc}") from None
        archived = [n for n in listing(self._archive_dir) if parse_name(n) is not None]
        if config is None:
            # Only a store that never finished its creation lacks a
            # configuration, and such a store holds nothing yet.
            if any_key is not None or archived:
                raise damaged("its hot tier has no configuration but holds data")
            if not create:
                raise StoreNotFound(
                    f"no store at {self.path}: its creation was cut short before it held "
                    "anything (pass create=True to finish making it)"
                )
        elif not isinstance(config, dict) or not isinstance(config.get("layout"), int):
            raise IncompatibleStore(f"store {self.path!r} has an unreadable configuration")
        else:
            if config["layout"] > LAYOUT_VERSION:
                raise IncompatibleStore(
                    f"store {self.path!r} has layout version {config['layout']}; "
                    f"this eventstore reads up to {LAYOUT_VERSION}"
                )
            stored = bool(config.get("index_types", True))
            if index_types is not None and bool(index_types) != stored:
                raise IncompatibleStore(
                    f"store {self.path!r} was created with index_types={stored}; "
                    "it cannot be reopened with a different setting"
                )
        if raw_manifest is None:
            if watermark is not None:
                raise damaged("its hot tier has a watermark but no archive manifest")
            entries, next_file = _NO_FILES, 1
        else:
            try:
                manifest = unpack(raw_manifest)
            except Exception as exc:  # msgpack raises several unrelated types
                raise damaged(f"its archive manifest does not decode: {exc}") from None
            if (
                not isinstance(manifest, dict)
                or type(manifest.get("next")) is not int
                or manifest["next"] < 1
            ):
                raise damaged("its archive manifest is not one this store writes")
            entries = check_entries(manifest.get("files"), self.path)
            next_file = manifest["next"]
            if watermark is None and entries:
                raise damaged("its archive manifest names files but it has no watermark")
        if watermark is not None and len(watermark) != 16:
            raise damaged("its watermark is not a ULID")
        try:
            strays = segments.Strays.load(db) if raw_strays is not None else None
        except Exception as exc:  # msgpack raises several unrelated types
            raise damaged(f"its record of files being made does not decode: {exc}") from None
        if strays is None:
            strays = segments.Strays(set(), set())
        elif not all(type(n) is int for n in strays.making | strays.retired):
            raise damaged("its record of files being made is not one this store writes")
        return _State(
            config, entries, next_file, bytes(16) if watermark is None else watermark, strays
        )

    def _settle_config(self, config: Any, index_types: bool | None) -> bool:
        """The store's ``index_types``, writing the configuration of a new
        store and migrating an older layout (``config`` passed _read_state's checks)."""
        if config is None:
            chosen = True if index_types is None else bool(index_types)
            self._hot.db.put(
                keys.system_key(b"config"),
                _packb({"layout": LAYOUT_VERSION, "index_types": chosen}),
                sync=True,
            )
            return chosen
        stored = bool(config.get("index_types", True))
        if config["layout"] < LAYOUT_VERSION:
            if config["layout"] < 2:
                segments.migrate_legacy(self._hot.db)
            self._hot.db.put(
                keys.system_key(b"config"), _packb({**config, "layout": LAYOUT_VERSION}), sync=True
            )
        return stored

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store. Later calls raise :class:`StoreClosed`; closing twice is fine.

        In a child after ``fork()`` it raises :class:`UsedAfterFork` and
        releases nothing: the database and its lock are the parent's.
        """
        if self._own.pid != os.getpid():
            if self._writer.closed:
                return  # closed before the fork: nothing is held, nothing to refuse
            raise _used_after_fork(self.path)
        # (It stays in forks' weak set: disowning a closed store changes nothing.)
        w = self._writer
        with self._maintenance, w._lock:
            if w.closed:
                return
            # Refuse new appends first, then let the queued ones finish: under
            # steady durable appends the queue would otherwise never drain.
            w.closed = True
            w._wait_for_queue(lambda: not w._queue)
            self._hot.close()
            for f in self._archive.tiers.files:
                f.reader.close()
        with w._committed:
            w._committed.notify_all()

    def wait_for_commit(
        self,
        after_seq: int,
        timeout: float | None = None,
        *,
        until: Callable[[], bool] | None = None,
    ) -> int:
        """Block until an event with ``seq > after_seq`` is committed (and readable),
        the store closes, ``until()`` turns true (checked whenever waiters are
        woken), or ``timeout`` seconds pass. Returns the committed seq.

        Appends wake waiters directly; nothing polls.
        """
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        w = self._writer
        with w._committed:
            w._commit_waiters += 1
            try:
                w._committed.wait_for(
                    lambda: (
                        w._committed_seq > after_seq or w.closed or (until is not None and until())
                    ),
                    timeout,
                )
            finally:
                w._commit_waiters -= 1
            return w._committed_seq

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_for_commit` so it re-checks its ``until``."""
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        with self._writer._committed:
            self._writer._committed.notify_all()

    def subscribe(
        self,
        after: ULID | str | bytes | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        name: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        query: Query | Sequence[QueryItem] | None = None,
    ) -> Subscription:
        """Follow the global log after ``after`` (or from the checkpoint stored
        under ``name``): catch up, then deliver new events live as they commit.
        ``query`` delivers only the events matching it (:meth:`query`).
        See :class:`eventstore.subscriptions.Subscription`.

        Raises:
            InvalidULID: ``after`` is not a ULID.
            InvalidName: ``name``, a type or ``stream_prefix`` is not a valid name.
            InvalidArgument: ``page_size`` below 1, both ``after`` and ``name``, or a checkpoint
                that holds no position.
            StoreClosed: the store is closed.
        """
        self._check_open()
        return Subscription(
            self, after, types, stream_prefix, name, page_size=page_size, query=query
        )

    # -- moving whole stores -----------------------------------------------------

    def export_events(self, after: ULID | str | None = None) -> Iterator[Event | RemovedEvent]:
        """Every event after ``after`` in log order, as ``read_all`` returns
        them (redacted ones marked), and in place of each event deletion,
        retention or a scavenge removed or hides, a :class:`RemovedEvent`
        (its id, stream, version, seq and type): with them, ``import_events``
        rebuilds the same seqs, versions, gaps and redactions.

        Raises:
            InvalidULID: ``after`` is not a ULID.
            StoreClosed: the store is closed.
        """
        after16 = None if after is None else to_ulid_bytes(after)
        view = self._view()
        events = view.read_all(after16, False, None, None)
        if not self._forget.active:
            return iter(events)
        return self._forget.classify(events, _last_version(view))

    def import_events(
        self,
        events: Iterable[Event | RemovedEvent],
        *,
        batch_size: int = 4096,
        progress: Callable[[int], None] | None = None,
        clock_tolerance: timedelta | None = DEFAULT_IMPORT_CLOCK_TOLERANCE,
    ) -> int:
        """Append existing events keeping their ids, versions and seqs (an
        export's round trip). Each id must lie above every id the store holds,
        each seq continue the log without a gap, each version continue its
        stream; a violation raises :class:`InvalidArgument` before its batch
        (each written atomically) is written. A :class:`RemovedEvent` (from
        :meth:`export_events`) takes its place as a husk with its seq
        recorded as removed, as a scavenge leaves it; a redacted event
        (``redacted`` True) is recorded as redacted.

        A batch is ``batch_size`` events (at most the store's
        ``max_append_events``), or fewer when the next event would take it
        past ``max_append_bytes``. An id timed more than ``clock_tolerance``
        after this machine's clock (default one day; None: no limit), or in
        the last millisecond of the ULID space, raises :class:`IdOutOfRange`:
        every later id is made above it, so one id a century ahead would pin
        every later id and timestamp there, and the largest ULID would leave
        no id to make.

        Raises:
            InvalidArgument: an id not above the store's, or a seq or version that leaves a gap; its
                batch is not written.
            StoreClosed: the store is closed.
            IdOutOfRange: an id beyond ``clock_tolerance`` or in the ULID space's last millisecond.
            AppendTooLarge: ``batch_size`` above the store's ``max_append_events``.
        """
        self._check_open()
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size > self._own.max_events:
            raise AppendTooLarge(
                f"import batch_size {batch_size} is above the store's max_append_events "
                f"({self._own.max_events})"
            )
        tolerance_ms: int | None = None
        if clock_tolerance is not None:
            if not isinstance(clock_tolerance, timedelta) or clock_tolerance < timedelta(0):
                raise InvalidArgument(
                    f"clock_tolerance must be a timedelta >= 0 or None, got {clock_tolerance!r}"
                )
            tolerance_ms = clock_tolerance // timedelta(milliseconds=1)
        w = self._writer
        it = iter(events)
        carried: tuple[Event | RemovedEvent, Imported] | None = None
        total = 0
        while True:
            # Checked and packed before the writer lock: packing may run user
            # code (a subclass's conversion), which may append in turn.
            chunk: list[Event | RemovedEvent] = []
            prepared: list[Imported] = []
            size = 0
            now_ms = w._ids.now_ms()
            if carried is not None:
                chunk.append(carried[0])
                prepared.append(carried[1])
                size = len(carried[1][4])
                carried = None
            for event in it:
                ready = prepare_import(event, now_ms, tolerance_ms, self._index_types)
                if len(ready[4]) > self._own.max_bytes:
                    raise AppendTooLarge(
                        f"event {event.id} is a record of {len(ready[4])} bytes, above "
                        f"the store's max_append_bytes ({self._own.max_bytes})"
                    )
                if size + len(ready[4]) > self._own.max_bytes:
                    carried = (event, ready)  # starts the next batch
                    break
                chunk.append(event)
                prepared.append(ready)
                size += len(ready[4])
                if len(chunk) == batch_size:
                    break
            if not chunk:
                return total
            with w._lock:
                w._ready_to_queue()
                # An imported stream may be tombstoned (StreamDeleted);
                # imported $$ events set rules, as appended ones do.
                rules_updates = []
                gone: list[int] = []
                redacted: dict[bytes, str] = {}
                for event in chunk:
                    if self._forget.rules:
                        self._forget.admit(event.stream, ANY, event.version - 1)
                    if isinstance(event, RemovedEvent):
                        gone.append(event.seq)
                    elif getattr(event, "redacted", False):
                        redacted[event.id.bytes] = event.stream
                    elif event.stream.startswith("$$"):
                        rules_updates.append(
                            (retention.base_stream(event.stream), retention.rules_of(event))
                        )
                writes, versions, seq, fresh = w._assign_import(
                    chunk, prepared, self._archive.tiers.watermark, self._index_types
                )
                # Recorded in the batch that writes the husks, and known to
                # reads before they can see them.
                ranges = retention.to_ranges(gone)
                for first, last in ranges:
                    writes.add(*retention.removed_item(first, last))
                for id16, stream in redacted.items():
                    writes.add(retention.redacted_key(id16), stream.encode())
                self._forget.removed.add(ranges)
                self._forget.redacted.update(redacted)
                pending = w._enqueue(writes, versions, seq, fresh, chunk)
                for base, rules in rules_updates:
                    self._forget.set_rules(base, rules)
            w._commit(pending)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))

    # -- snapshots and checkpoints -------------------------------------------

    def save_snapshot(self, stream: str, version: int, state: Any) -> None:
        """Store ``state`` as the stream's state after event ``version`` (the latest
        snapshot replaces the previous one).

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            InvalidArgument: ``version`` is negative or beyond the stream's last event.
            UnserialisableData: ``state`` holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        if type(version) is not int or version < 0:
            raise InvalidArgument(f"snapshot version must be a non-negative int, got {version!r}")
        check_serialisable(state, f"snapshot state of stream {stream!r}")  # errors name state[...]
        value = check_serialisable([version, state], f"snapshot state of stream {stream!r}")
        with self._writer._lock:
            self._check_open()
            current = self._writer._current_version(stream_b)
            if version > current:
                raise InvalidArgument(
                    f"snapshot of stream {stream!r} at version {version}, "
                    f"but the stream is at version {current}"
                )
            self._hot.db.put(keys.snapshot_key(stream_b), value, sync=self.sync)

    def load_snapshot(self, stream: str) -> Snapshot | None:
        """The stream's latest snapshot, or None.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        raw = self._view().hot.get_raw(keys.snapshot_key(stream_b))
        if raw is None:
            return None
        version, state = unpack(raw)
        if self._forget.rules:  # -- h17 hook: a snapshot of hidden versions is hidden too
            rules = self._forget.rules_for(stream)
            if rules is not None and not rules.empty:
                low, _ = rules.floor(self.stream_version(stream), self._forget.now_ms())
                if version < low:
                    return None
        return Snapshot(stream, version, state)

    def get_checkpoint(self, name: str) -> Any:
        """The value stored for checkpoint ``name``, or None.

        Raises:
            InvalidName: ``name`` is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        raw = self._view().hot.get_raw(keys.checkpoint_key(name_bytes(name, "checkpoint name")))
        return None if raw is None else unpack(raw)

    def set_checkpoint(self, name: str, value: Any) -> None:
        """Store ``value`` (a position, or a projection's state with its position)
        under ``name``, atomically.

        Raises:
            InvalidName: ``name`` is empty, not a str or holds NUL.
            UnserialisableData: ``value`` holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        key, packed = _checkpoint_put(name, value)
        with self._writer._lock:
            self._check_open()
            self._hot.db.put(key, packed, sync=self.sync)

    @property
    def closed(self) -> bool:
        return self._writer.closed

    @property
    def max_append_events(self) -> int:
        """Events one append, ``append_many`` or import batch may hold."""
        return self._own.max_events

    @property
    def max_append_bytes(self) -> int:
        """Packed bytes (type, data, metadata, indexes) one append may hold."""
        return self._own.max_bytes

    def _disown(self) -> None:
        """In a child after fork(): make every use of this handle raise
        UsedAfterFork, and never free the parent's plyvel objects. Freeing
        them runs LevelDB's destructors, which wait for a compaction thread
        that does not exist here or lock a mutex a parent thread may have
        held at the fork, and close the parent's log file."""
        self._own.pid = 0  # no process's pid: _check_open refuses
        refuse: Any = _Forked(self.path)
        for obj in self._hot.disown():
            _keep_forever(obj)
        self._hot = refuse
        self._maintenance = self._archive.lock = refuse
        self._writer.disown(refuse)
        self._tiering.disown(refuse)
        self._transfer.disown(refuse)

    def _check_readable(self) -> None:
        # ~0.1 us, a syscall: for forks that bypass os.register_at_fork (a C
        # extension's fork()); _disown covers the rest, get()'s fast path too.
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        if self._writer.closed:
            raise StoreClosed(f"store {self.path!r} is closed")

    def _check_open(self) -> None:
        """Before a write: open, and writing. After a failed write the store
        refuses writes until it is reopened (ids, seqs and versions of the
        failed group were handed out, and LevelDB's log may end in a torn
        record that only a reopen puts behind it); reads go on."""
        if self._own.pid != os.getpid():
            raise _used_after_fork(self.path)
        self._writer.check_writable()

    # -- writes --------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: Expected = ANY,
        *,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically, if its version is as expected.

        ``expected_version`` is ANY, NO_STREAM, STREAM_EXISTS or the exact
        version of the stream's last event (-1 for a new stream). Raises
        :class:`WrongExpectedVersion` otherwise, writing nothing. More
        events or bytes than the store's bounds raise :class:`AppendTooLarge`.
        ``condition`` (an :class:`AppendCondition`) refuses the append with
        :class:`ConditionFailed` if an event matching its query has a seq
        above its ``after``: checked under the writer lock with the expected
        version, seeing appends queued before it (docs/dcb.md).

        Raises:
            WrongExpectedVersion: the stream's version is not ``expected_version``; nothing is
                written.
            InvalidName: the stream, an event type, an index name or value is empty, not a str or
                holds NUL.
            InvalidType: an event is not a ``NewEvent``, or ``expected_version`` is not one of the
                above.
            InvalidArgument: no events, or ``expected_version`` below -1.
            UnserialisableData: data or metadata msgpack cannot carry (the message names the field).
            StoreClosed: the store is closed, or an earlier write failed.
            AppendTooLarge: more events or bytes than the store's bounds.
            StreamDeleted: the stream (or, for ``$$s``, ``s``) was tombstoned.
            ConditionFailed: ``condition`` failed; nothing is written.
        """
        if condition is None:
            return self.append_many([(stream, events, expected_version)])[0]
        return self.append_many([(stream, events, expected_version)], condition=condition)[0]

    def append_many(
        self,
        appends: Iterable[tuple[str, Sequence[NewEvent], Expected]],
        *,
        checkpoint: tuple[str, Any] | None = None,
        condition: AppendCondition | None = None,
    ) -> list[AppendResult]:
        """Append to several streams in one atomic write: all of it lands or none.

        A stream may appear more than once; each part's expected version is
        checked against the stream as the earlier parts leave it.
        ``checkpoint=(name, value)`` stores a checkpoint in the same write, so
        a process manager records the events it emits and the position it
        consumed atomically. The whole append is bounded by the store's
        ``max_append_events`` and ``max_append_bytes`` (:class:`AppendTooLarge`).
        ``condition`` is checked for the whole append, as in :meth:`append`.

        Raises:
            WrongExpectedVersion: a part's stream is not at its expected version; nothing is
                written.
            InvalidName: as :meth:`append`.
            InvalidType: a part is not a ``(stream, events, expected_version)`` tuple, or as
                :meth:`append`.
            InvalidArgument: no parts, a part with no events, or as :meth:`append`.
            UnserialisableData: as :meth:`append`.
            StoreClosed: the store is closed, or an earlier write failed.
            AppendTooLarge: as :meth:`append`, for the whole call.
            StreamDeleted: a part's stream was tombstoned; nothing is written.
            ConditionFailed: ``condition`` failed; nothing is written.
        """
        self._check_open()  # at once: a forked or closed handle packs nothing
        checked = None if condition is None else _check_condition(condition)
        parts = []
        rules_updates: list[tuple[str, NewEvent]] = []
        room = self._own.max_events
        size = 0
        for item in appends:
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidType(
                    f"append_many takes (stream, events, expected_version) tuples, got {item!r:.80}"
                )
            part = _Prepared(item[0], item[1], item[2], self._index_types, room)
            room -= part.n
            size += part.size
            if size > self._own.max_bytes:
                raise AppendTooLarge(
                    f"append of {size} bytes or more (packed, up to stream {part.stream!r}): "
                    f"one append holds at most {self._own.max_bytes} "
                    "(max_append_bytes at open); split it"
                )
            parts.append(part)
            if part.stream.startswith("$$"):  # -- h17 hook: new rules of a stream
                rules_updates.append((retention.base_stream(part.stream), item[1][-1]))
        if not parts:
            raise InvalidArgument("append_many was given no appends")
        extra = None if checkpoint is None else _checkpoint_put(*checkpoint)
        w = self._writer
        with w._lock:
            w._ready_to_queue()
            writes, results, versions, fresh = w._assign(parts)  # expected versions first
            if checked is not None:
                plan, query, after = checked
                w.check_condition(plan, after, lambda a: self._first_match(query, plan, a))
            if extra is not None:
                writes.add(*extra)
            pending = w._enqueue(writes, versions, results[-1].last_seq, fresh, parts)
            for base, last in rules_updates:  # -- h17 hook
                self._forget.set_rules(base, retention.rules_of(last))
        w._commit(pending)
        return results

    # -- reads ---------------------------------------------------------------

    def _view(self) -> View:
        self._check_readable()
        return take_view(self._hot, self._archive)

    def stream_version(self, stream: str) -> int:
        """Version of the stream's last committed event; -1 if the stream does not exist.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            StoreClosed: the store is closed.
        """
        stream_b = name_bytes(stream, "stream name")
        return self._view().hot.stream_version(stream_b)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """A stream's events in order, from ``from_version`` on (or down, backwards).

        ``from_version=None`` starts at the first event, or the last when
        reading backwards. The view is taken when this is called.

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
            InvalidArgument: ``from_version`` or ``limit`` is negative or not an int.
            StoreClosed: the store is closed.
            StreamDeleted: the stream was tombstoned.
        """
        stream_b = name_bytes(stream, "stream name")
        if from_version is not None and (type(from_version) is not int or from_version < 0):
            raise InvalidArgument(f"from_version must be a non-negative int, got {from_version!r}")
        check_limit(limit)
        view = self._view()
        events = view.read_stream(stream, stream_b, from_version, backwards)
        if self._forget.active:  # -- h17 hook
            self._forget.check_stream(stream)
            events = self._forget.filter(events, _last_version(view))
        return _limited(events, limit)

    def read_index(
        self,
        stream: str,
        name: str,
        value: str,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The events of ``stream`` filed under index ``name=value``, in order.

        Raises:
            InvalidName: the stream, index name or value is empty, not a str or holds NUL.
            InvalidArgument: ``limit`` is negative or not an int.
            StoreClosed: the store is closed.
            StreamDeleted: the stream was tombstoned.
        """
        stream_b = name_bytes(stream, "stream name")
        name_b = name_bytes(name, "index name")
        value_b = name_bytes(value, "index value")
        check_limit(limit)
        view = self._view()
        events = view.read_index(stream, stream_b, name_b, value_b, backwards)
        if self._forget.active:  # -- h17 hook
            self._forget.check_stream(stream)
            events = self._forget.filter(events, _last_version(view))
            if self._forget.redacted and name_b != b"type":
                # A redacted event lost its index values (the type stays).
                events = (e for e in events if not e.redacted)
        return _limited(events, limit)

    def get(self, event_id: ULID | str | bytes) -> Event | None:
        """The event with this id, or None. A malformed id raises ``InvalidULID``.

        Raises:
            InvalidULID: ``event_id`` is not a ULID, its 26-character string or 16 bytes.
            StoreClosed: the store is closed.
        """
        id16 = event_id.bytes if type(event_id) is ULID else to_ulid_bytes(event_id)
        if self._writer.closed:
            self._check_readable()
        archive = self._archive
        tiers = archive.tiers
        if id16 >= tiers.watermark:
            # Hot: two point reads without a snapshot. Events never change, so
            # only a compaction racing us (moving the event cold, deleting its
            # hot keys) can make them disagree, and then the tiers differ.
            found = self._hot.get_event(id16)
            if found is not False and archive.tiers is tiers:
                if self._forget.active:  # -- h17 hook
                    return self._forget.one(found, self.stream_version)  # type: ignore[arg-type]
                return found  # type: ignore[return-value]
        view = self._view()
        if self._forget.active:  # -- h17 hook
            return self._forget.one(view.get(id16), _last_version(view))
        return view.get(id16)

    def read_all(
        self,
        after: ULID | str | bytes | None = None,
        backwards: bool = False,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        from_seq: int | None = None,
    ) -> Iterator[Event]:
        """The global log in commit order, strictly after position ``after``.

        Backwards, it yields the events before ``after`` (or from the newest),
        newest first. ``from_seq`` starts at that global sequence number
        instead (inclusive; downwards from it when backwards). ``types`` and
        ``stream_prefix`` filter on the global entry, so rejected events'
        records are never read.

        Raises:
            InvalidULID: ``after`` is not a ULID.
            InvalidName: a type or ``stream_prefix`` is not a str (an ``InvalidNameType``).
            InvalidArgument: ``from_seq`` or ``limit`` is negative, or both ``after`` and
                ``from_seq`` are given.
            StoreClosed: the store is closed.
        """
        after16 = None if after is None else to_ulid_bytes(after)
        if from_seq is not None:
            if type(from_seq) is not int or from_seq < 0:
                raise InvalidArgument(f"from_seq must be a non-negative int, got {from_seq!r}")
            if after is not None:
                raise InvalidArgument("give read_all either after or from_seq, not both")
        type_set = _check_types(types)
        if stream_prefix is not None and not isinstance(stream_prefix, str):
            raise InvalidNameType(
                f"stream_prefix must be a str, got {type(stream_prefix).__name__}"
            )
        check_limit(limit)
        view = self._view()
        if from_seq is not None:
            # Seq and id grow together: start from the id at that seq, inclusive.
            found = view.id_of_seq(from_seq, backwards)
            if found is None:
                return iter(())
            at = int.from_bytes(found, "big") + (1 if backwards else -1)
            after16 = at.to_bytes(16, "big")
        events = view.read_all(after16, backwards, type_set, stream_prefix)
        if self._forget.active:  # -- h17 hook
            events = self._forget.filter(events, _last_version(view))
        return _limited(events, limit)

    def query(
        self,
        query: Query | Sequence[QueryItem],
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> Iterator[Event]:
        """The events matching ``query`` with seq above ``after``, in seq order
        (newest first backwards), through both tiers (docs/dcb.md).

        An event matches an item when its type is one of the item's types
        (or it names none) and it carries every tag of the item; it matches
        the query when it matches any item; a query with no items matches
        every event. Deletion, retention and redaction apply as in
        :meth:`read_all` (a redacted event has no tags). When every item
        names a tag, the cost grows with the events carrying all of an item's
        tags (both tiers have a tag index); an item without tags
        makes the query a scan of the log (filtered by type when every item
        names types). The view is taken when this is called.

        Raises:
            InvalidType: ``query`` is not a Query or a sequence of QueryItem, or an item's
                types or tags are not sequences of str; ``after`` is not an int.
            InvalidName: a type or tag is empty, holds NUL or is too long.
            InvalidArgument: ``after`` or ``limit`` is negative, or an item has too many tags.
            StoreClosed: the store is closed.
        """
        plan = dcb.plan(query)
        after = dcb.check_after(after)
        check_limit(limit)
        if type(backwards) is not bool:
            raise InvalidType(f"backwards must be a bool, got {type(backwards).__name__}")
        return _limited(self._query(_as_query(plan), plan, after, backwards), limit)

    def _query(
        self, query: Query, plan: dcb.Plan, after: int | None, backwards: bool
    ) -> Iterator[Event]:
        view = self._view()
        events = view.query(query, plan, after, backwards)
        if self._forget.active:  # -- h17 hook
            events = self._forget.filter(events, _last_version(view))
            if self._forget.redacted and not plan.everything:
                # A redacted event lost its tags: match it again as it reads now.
                events = filter(plan.matches_event, events)
        return events

    def _first_match(self, query: Query, plan: dcb.Plan, after: int | None) -> int | None:
        """The seq of the first written event matching the query above ``after``."""
        event = next(self._query(query, plan, after, False), None)
        return None if event is None else event.seq

    def _load_forgetting(self) -> retention.Forgetting:
        """-- h17 hook: the rules of every ``$$`` stream and the redacted ids."""
        view = self._view()
        prefix = keys.META + b"$$"
        metas = [k[1:-1].decode() for k, _ in view.hot.items(prefix)]

        def last(meta: str) -> Event | None:
            return next(view.read_stream(meta, meta.encode(), None, True), None)

        return retention.load(
            metas,
            last,
            view.hot.items(retention.REDACTED_PREFIX),
            view.hot.items(retention.REMOVED_PREFIX),
        )

    @property
    def last_seq(self) -> int:
        """``seq`` of the newest committed event (0 for an empty store)."""
        self._check_readable()
        with self._writer._committed:
            return self._writer._committed_seq

    # -- moving events to the cold tier (eventstore/tiering.py) -------------------

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
        return self._tiering.compact(
            before, older_than=older_than, max_file_events=max_file_events, progress=progress
        )

    def merge_archives(
        self,
        *,
        max_events: int = DEFAULT_MERGED_EVENTS,
        min_files: int = 2,
        fanout: int | None = None,
    ) -> CompactResult:
        """Fold runs of adjacent archive files into single files of at most
        ``max_events`` events each, so years of daily compactions do not leave
        thousands of files. Readers holding the old files keep reading them.

        With ``fanout`` (say 8), the merge is size-tiered, for a schedule:
        only runs of at least ``fanout`` adjacent files of one size tier
        (``fanout**k`` to ``fanout**(k+1) - 1`` events) are merged, again
        until no such run is left, so an event is rewritten at most once per
        tier and a large file is never rewritten to take in a small one.
        Without it, every run of adjacent files up to ``max_events`` is merged.

        Raises:
            InvalidArgument: ``max_events`` is not a positive int, or
                ``fanout`` is not an int of at least 2.
            CorruptFile: an archive file being merged is damaged.
            StoreClosed: the store is closed.
        """
        return self._tiering.merge_archives(
            max_events=max_events, min_files=min_files, fanout=fanout
        )

    def cleanup(self) -> int:
        """Delete, now, the hot copies of archived events that a compaction left
        behind (normally a background thread does it after each compaction,
        a bounded batch at a time). Returns how many events' keys it deleted.

        Raises:
            StoreClosed: the store is closed.
        """
        return self._tiering.cleanup()

    @property
    def watermark(self) -> ULID | None:
        """Events with smaller ids live in archive files (None: nothing archived yet)."""
        return self._tiering.watermark

    def archive_files(self) -> list[ArchiveInfo]:
        """The archive files the manifest names, oldest first."""
        return self._tiering.archive_files()

    # -- whole-store operations (eventstore/transfer.py) ----------------------------

    def backup(self, dest: str | os.PathLike[str]) -> BackupResult:
        """A consistent online backup into the new folder ``dest``: a LevelDB
        snapshot copied into a new LevelDB, plus the archive files the manifest
        names (hard-linked where the filesystem allows: they never change).
        Appends and reads go on meanwhile; the backup is a store that opens.

        Raises:
            InvalidArgument: ``dest`` exists and is not an empty folder.
            StoreClosed: the store is closed.
            UnsafePath: ``dest`` is inside the store or a symlink.
        """
        return self._transfer.backup(dest)

    def log_gaps(self) -> tuple[int, int, list[tuple[int, int]]]:
        """How many events the log holds, its last seq, and the seq ranges
        missing below it: what ``eventstore repair`` reports. Unlike reads,
        it counts past gaps rather than refusing them.

        Raises:
            CorruptFile: an archive file or the hot tier is damaged where it is read.
            StoreClosed: the store is closed.
        """
        return self._transfer.log_gaps()

    def rebuild_segment_keys(self) -> int:
        """Write every segment key afresh from the archive files the manifest
        names, after deleting all there are: a repair may have lost some in
        a damaged block (and reads of those streams would refuse). Returns
        the number of keys written.

        Raises:
            WritesRefused: an earlier write failed, or the disk was full at open.
            StoreClosed: the store is closed.
        """
        return self._transfer.rebuild_segment_keys()

    @property
    def lost_seqs(self) -> list[tuple[int, int]]:
        """The seq ranges ``eventstore repair`` recorded as lost (first, last)."""
        return self._transfer.lost_seqs

    def record_repair(self, lost: list[tuple[int, int]]) -> None:
        """Record the seq ranges a repair found lost, durably: from then on reads
        and verify() take the log's holes as known (those of ``lost``, for
        verify), instead of refusing them as damage.

        Raises:
            WritesRefused: an earlier write failed, or the disk was full at open.
            StoreClosed: the store is closed.
        """
        self._transfer.record_repair(lost)

    def stats(self) -> StoreStats:
        """Event and stream counts of the store, per tier, in O(archive files):
        read from counters kept with every commit, not by counting.

        Raises:
            StoreClosed: the store is closed.
            StoreDamaged: the counts key is damaged.
        """
        return counters.store_stats(
            self._view(), self._writer._streams, self.lost_seqs, self.removed_seqs
        )

    # -- forgetting (eventstore/erasure.py, eventstore/scavenge.py) ---------

    def delete_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """Soft-delete ``stream`` (KurrentDB's Delete): it reads as empty from
        now on, in both tiers, and an append goes on from its next version
        (``NO_STREAM`` is accepted again). ``scavenge()`` removes the events'
        bytes. Returns the result of the metadata append to ``$$stream``.

        The expected version is checked under the writer lock with the write.

        Raises:
            WrongExpectedVersion: the stream is not at ``expected_version``, or it has no
                events to delete (actual -1); nothing is written.
            StreamDeleted: the stream was tombstoned.
            InvalidArgument: ``stream`` is a ``$$`` metadata stream.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
        return self._erasure.delete_stream(stream, expected_version)

    def tombstone_stream(self, stream: str, expected_version: Expected = ANY) -> AppendResult:
        """Delete ``stream`` for ever (KurrentDB's Tombstone): every read of it
        and every append to it (or to ``$$stream``) raises
        :class:`StreamDeleted` from now on; ``scavenge()`` removes its events'
        bytes (the tombstone itself, in ``$$stream``, stays).

        Raises:
            WrongExpectedVersion: the stream is not at ``expected_version``; nothing is written.
            StreamDeleted: the stream was tombstoned already.
            InvalidArgument: ``stream`` is a ``$$`` metadata stream.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
        return self._erasure.tombstone_stream(stream, expected_version)

    def set_retention(
        self,
        stream: str,
        *,
        max_age: timedelta | int | None = None,
        max_count: int | None = None,
        truncate_before: int | None = None,
    ) -> AppendResult:
        """Set the retention rules of ``stream`` (its ``$$stream`` metadata
        ``$maxAge`` in seconds, ``$maxCount``, ``$tb``); None removes a rule.
        Other metadata keys are kept. Every read honours the rules at once,
        in both tiers; ``scavenge()`` removes the bytes. Until a scavenge,
        loosening a rule brings the events it hid back; after one they are gone.

        Raises:
            InvalidArgument: a value is negative, zero where it cannot be, or absurd
                (``max_age`` over 1000 years or not whole seconds).
            InvalidType: a value is not an int (or a timedelta for ``max_age``).
            StreamDeleted: the stream was tombstoned.
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
        return self._erasure.set_retention(
            stream, max_age=max_age, max_count=max_count, truncate_before=truncate_before
        )

    def stream_rules(self, stream: str) -> StreamRules:
        """The deletion and retention rules of ``stream`` (and its other metadata).

        Raises:
            InvalidName: the stream name is empty, not a str or holds NUL.
        """
        return self._erasure.stream_rules(stream)

    def redact(self, event_id: ULID | str | bytes) -> bool:
        """Remove the data and metadata of one event (for a regulator's
        request): from now on it reads as a :class:`RedactedEvent` (``data``
        and ``metadata`` None, ``redacted`` True) with its id, stream,
        version, seq, type and indexes unchanged, so histories keep their
        shape. ``scavenge()`` removes the bytes. Returns False if the event
        was redacted already (nothing changes).

        Raises:
            InvalidULID: ``event_id`` is not a ULID.
            EventNotFound: no event with this id is in the store (or a rule removed it).
            InvalidArgument: the event belongs to a ``$$`` metadata stream.
            StoreClosed: the store is closed, or refuses writes.
        """
        return self._erasure.redact(event_id)

    @property
    def removed_seqs(self) -> list[tuple[int, int]]:
        """The seq ranges (first, last) ``scavenge()`` removed: their events
        are husks that no read returns. A seq missing from reads but in none
        of these (nor in ``lost_seqs``) is a hidden event a scavenge has not
        reached yet, or damage that ``verify()`` reports."""
        return self._erasure.removed_seqs

    # -- crypto-shredding (eventstore/sealing.py; open with shredding=True) --

    def _keys(self) -> Any:
        sealing = self._forget.sealing
        if sealing is None:
            raise InvalidArgument(
                f"store {self.path!r} was opened without shredding=True: it has no subject keys"
            )
        return sealing

    def seal(self, subject: str, event: NewEvent) -> NewEvent:
        """``event`` with its data and metadata encrypted under ``subject``'s
        key (made on first use), to append as any event: reads of this store
        return it decrypted until ``forget_subject(subject)``, shredded after.

        Raises:
            InvalidArgument: the store was opened without ``shredding=True``, or
                ``subject`` is empty or holds NUL.
            InvalidNameType: ``subject`` is not a str.
            UnserialisableData: the data or metadata cannot be stored.
        """
        self._check_open()
        sealed: NewEvent = self._keys().seal(subject, event)
        return sealed

    def forget_subject(self, subject: str) -> bool:
        """Delete ``subject``'s key, durably: from now on every event sealed
        under it reads as a ``ShreddedEvent`` (data and metadata None) in this
        store, and can never be opened from any backup or export either
        (unless a copy of the keys made before, by ``eventstore keys export``,
        survives: see docs/operations.md). False if it had no key.

        Raises:
            InvalidArgument: the store was opened without ``shredding=True``, or
                ``subject`` is empty or holds NUL.
            InvalidNameType: ``subject`` is not a str.
        """
        self._check_open()
        forgot: bool = self._keys().forget_subject(subject)
        return forgot

    def export_keys(self, dest: str | os.PathLike[str]) -> int:
        """Write the subject keys to ``dest`` (a new file, mode 0600) for a
        backup kept apart: ``backup()`` never copies them. A subject
        forgotten later stays in that copy until it is replaced by a new
        export. Returns how many keys were written.

        Raises:
            InvalidArgument: the store was opened without ``shredding=True``, or ``dest``
                exists.
        """
        self._check_readable()
        written: int = self._keys().export_keys(os.fspath(dest))
        return written

    @property
    def subjects(self) -> list[str]:
        """The subjects that have a key (a store opened with ``shredding=True``)."""
        found: list[str] = self._keys().subjects
        return found

    @property
    def redacted_ids(self) -> list[ULID]:
        """The ids of every redacted event, in id order."""
        return self._erasure.redacted_ids

    def scavenge(
        self, *, dry_run: bool = False, progress: Callable[[str, int], None] | None = None
    ) -> ScavengeResult:
        """Remove, from every file of the store, the data and metadata of
        the events that deletions, retention rules and redactions hide (see
        eventstore/scavenge.py for how, and docs/guarantees.md). Reads and
        appends go on meanwhile and answer the same throughout; they wait
        while its last step reopens the hot tier (tens of milliseconds) to
        rewrite LevelDB's MANIFEST. Backups made before keep the data.

        ``dry_run`` writes nothing and counts what a scavenge would do:
        ``removed + scrubbed == 0`` means the store holds no byte of an
        erased event. ``progress(step, n)`` hears of each step.

        Raises:
            CorruptFile: an archive file or the hot tier is damaged where it is read.
            StoreClosed: the store is closed, or refuses writes.
            StorageError: the disk failed (rewriting LevelDB's MANIFEST, say);
                the hot tier is open again, and close() retries the rewrite.
        """
        return self._scavenging.scavenge(dry_run=dry_run, progress=progress)

    def verify(self, progress: Callable[[int], None] | None = None) -> None:
        """Check the store end to end; :class:`CorruptFile` on the first problem.

        Every archive file's checksums and structure, the manifest against the
        files, every LevelDB block's checksum (a full scan of the hot tier),
        the segment keys against the files (each space of each file has its
        key, each key names a file that holds the stream with those versions),
        and the log: ids increasing, seq gap-free from 1, every global entry
        with its record and its index entries, versions dense per stream and
        equal to each stream's recorded version. It writes nothing.

        Raises:
            CorruptFile: the first problem found (its message names the file and what is wrong).
            StoreClosed: the store is closed.
        """
        self._transfer.verify(progress)

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        return f"<EventStore {self.path!r} {state}>"


def _open_check(path: str, own: _Owner, writer: Writer) -> Callable[[], None]:
    """What EventStore._check_open checks, for the collaborators: a function,
    so that they hold no reference back to the store."""

    def check_open() -> None:
        if own.pid != os.getpid():
            raise _used_after_fork(path)
        writer.check_writable()

    return check_open


def _readable_check(path: str, own: _Owner, writer: Writer) -> Callable[[], None]:
    """What EventStore._check_readable checks, for the collaborators."""

    def check_readable() -> None:
        if own.pid != os.getpid():
            raise _used_after_fork(path)
        if writer.closed:
            raise StoreClosed(f"store {path!r} is closed")

    return check_readable


def _last_version(view: View) -> Callable[[str], int]:
    """A stream's last version in ``view`` (for the retention rules)."""
    return lambda stream: view.hot.stream_version(stream.encode())


def _keep_forever(obj: Any) -> None:
    """One more reference to ``obj`` than anything will drop, so that not even
    the interpreter's shutdown frees it (a list would be cleared then)."""
    import ctypes  # only ever in a forked child

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    _DISOWNED.append(obj)


def _checkpoint_put(name: str, value: Any) -> tuple[bytes, bytes]:
    key = keys.checkpoint_key(name_bytes(name, "checkpoint name"))
    return key, check_serialisable(value, f"checkpoint {name!r}")


def _as_query(plan: dcb.Plan) -> Query:
    """The query as the archive files take it: a Query of plain QueryItems."""
    return plan.query


def _check_condition(condition: object) -> tuple[dcb.Plan, Query, int | None]:
    if not isinstance(condition, AppendCondition):
        raise InvalidType(f"condition must be an AppendCondition, got {type(condition).__name__}")
    query, after = tuple.__getitem__(condition, 0), tuple.__getitem__(condition, 1)
    plan = dcb.plan(query)
    return plan, _as_query(plan), dcb.check_after(after, "condition.after")


def _check_types(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    checked = frozenset(types)
    for type_ in checked:
        name_bytes(type_, "event type")
    return checked


# The boundary of the public entry points that are not on the hot path:
# raw plyvel, OS and decoding errors leave them as EventStoreErrors (reads
# are mapped at the hot tier's gate, appends where the batch is written).


@at_boundary("opening the store")
def _open(cls: type[EventStore], path: str, **options: Any) -> EventStore:
    return cls(path, **options)


for _name, _decoding in [
    ("compact", True),
    ("merge_archives", True),
    ("cleanup", True),
    ("backup", True),
    ("verify", True),
    ("load_snapshot", True),
    ("get_checkpoint", True),
    ("import_events", False),  # packs user values: their errors are theirs
    ("save_snapshot", False),
    ("set_checkpoint", False),
]:
    setattr(
        EventStore,
        _name,
        at_boundary(_name.replace("_", " "), _decoding)(getattr(EventStore, _name)),
    )

__all__ = ["EventStore", "IncompatibleStore", "ulid_from_bytes"]
