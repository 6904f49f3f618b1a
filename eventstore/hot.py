"""The hot tier: events in LevelDB (plyvel) under the key layout of keys.py.

:class:`HotTier` owns the database handle and applies write batches;
:class:`HotView` answers reads against one LevelDB snapshot, so a read that
touches several keys (an index entry and its record, a global entry and its
record) sees one consistent moment. Keys below the watermark belong to the
cold tier (they are garbage awaiting deletion) and every read here skips them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import gc
import heapq
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain, islice, repeat, takewhile
from threading import get_ident
from typing import Any, NamedTuple, TypeVar

import msgpack
from ulid import ULID

from . import keys
from ._leveldb import plyvel
from .dcb import Plan
from .errors import (
    CorruptFile,
    DiskFull,
    EventStoreError,
    StorageError,
    StoreClosed,
    StoreDamaged,
    StoreLocked,
)
from .events import Event
from .ids import ulid_from_bytes
from .manifest import CRC32C as _CRC32C
from .manifest import mask as _mask
from .manifest import scrub as _scrub_manifest
from .records import inert_ext, record_version

_NO_ID = bytes(16)
_TUPLE_NEW = tuple.__new__
_new_ulid = ULID.__new__
_unpackb = msgpack.unpackb


def make_event(id16: bytes, stream: str, raw: bytes, where: str = "hot tier") -> Event:
    """An :class:`Event` from its id, stream and record bytes."""
    try:
        rec = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
        version, seq, type_, data, metadata, indexes, *rest = rec
        if len(rest) > 1:
            raise ValueError(f"{len(rec)} fields")
        tags = tuple(rest[0]) if rest else ()
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptFile(where, 0, f"undecodable record of event {id16.hex()}: {exc}") from None
    event: Event = _TUPLE_NEW(
        Event, (ulid_from_bytes(id16), stream, version, seq, type_, data, metadata, indexes, tags)
    )
    return event


def decode_event(id16: bytes, stream: str, raw: bytes) -> Event:
    """:func:`make_event` for the replay loop: one msgpack call, one ULID and
    one tuple; a record of the wrong shape is decoded again by
    :func:`make_event`, for its precise error."""
    try:
        rec = _unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
        if type(rec) is list and len(rec) == 6:
            u = _new_ulid(ULID)
            u.bytes = id16
            event: Event = _TUPLE_NEW(
                Event, (u, stream, rec[0], rec[1], rec[2], rec[3], rec[4], rec[5], ())
            )
            return event
    except Exception:  # msgpack raises several unrelated types on bad input
        pass
    return make_event(id16, stream, raw)


def lazy_events(ids: list[bytes], streams: list[str] | str, raws: list[bytes]) -> Iterator[Event]:
    """Events from parallel lists of ids, streams (or one stream for all) and
    records, each decoded only when the reader asks for it.

    A page holds bytes, which the garbage collector ignores. Decoding a whole
    page up front would keep hundreds of events' dicts alive at once, and the
    collector, run every few hundred allocations, would walk them again and
    again: that tripled the cost of a replay.
    """
    return map(decode_event, ids, repeat(streams) if isinstance(streams, str) else streams, raws)


# What plyvel raises when LevelDB finds a block whose checksum is wrong.
LevelDBCorruption = plyvel.CorruptionError


def _message(exc: BaseException) -> str:
    """plyvel's messages are bytes; show them as text."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def damaged(exc: Exception, where: str = "hot tier") -> CorruptFile:
    """The error for a LevelDB block that failed its checksum."""
    return CorruptFile(where, 0, f"LevelDB refused a damaged block: {_message(exc)}")


_FULL = {errno.ENOSPC, errno.EDQUOT}
# LevelDB reports a failed write as text only ("IO error: ...: No space left on device").
_FULL_TEXT = tuple(os.strerror(code) for code in _FULL)


def storage_error(exc: BaseException, doing: str, decoding: bool = True) -> EventStoreError | None:
    """The EventStoreError for a failure of the disk or of LevelDB while
    ``doing`` something, or None for an exception that is neither (a bug, or
    an interrupt, which stays what it is). One mapping for every boundary:
    damage is :class:`CorruptFile`, a full disk :class:`DiskFull`, any other
    refusal of the OS :class:`StorageError`. ``decoding``: nothing but
    stored bytes were decoded (no user code ran), so a ValueError, KeyError,
    IndexError or TypeError means a damaged value."""
    if isinstance(exc, EventStoreError):
        return exc
    if isinstance(exc, LevelDBCorruption):
        return damaged(exc, doing)
    if isinstance(exc, (plyvel.Error, OSError)):
        text = _message(exc) if isinstance(exc, plyvel.Error) else str(exc)
        code = getattr(exc, "errno", None)
        if code in _FULL or any(t in text for t in _FULL_TEXT):
            return DiskFull(errno.ENOSPC, f"{doing}: the disk is full ({text})")
        return StorageError(code or errno.EIO, f"{doing}: {text}")
    if decoding and isinstance(
        exc, (ValueError, KeyError, IndexError, TypeError, msgpack.UnpackException)
    ):
        # Raised by decoding a stored value (msgpack's errors are ValueErrors,
        # a bad UTF-8 name a UnicodeDecodeError): the bytes are damaged.
        return StoreDamaged(f"{doing}: a stored value does not decode ({exc!r})")
    return None


F = TypeVar("F", bound=Callable[..., Any])


def at_boundary(doing: str, decoding: bool = True) -> Callable[[F], F]:
    """Wrap a public entry point so that storage failures leave it as the
    EventStoreError :func:`storage_error` makes (the cause kept as
    ``__cause__``), never as a raw plyvel, OS or decoding error."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                mapped = storage_error(exc, f"{doing} failed", decoding)
                if mapped is None or mapped is exc:
                    raise
                raise mapped from exc

        return wrapper  # type: ignore[return-value]

    return wrap


# Bloom filters spare point lookups (get, expected-version checks) a block
# read per table that cannot hold the key; the larger cache and write buffer
# suit a store that appends in batches and replays recent streams.
# paranoid_checks: a damaged log record or table refuses the open instead of
# being skipped (LevelDB would then delete the old log: acknowledged events
# gone). Measured in scripts/bench.py (docs/benchmarks.md).
LEVELDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 16 << 20,
    "lru_cache_size": 64 << 20,
    "bloom_filter_bits": 10,
    "paranoid_checks": True,
}

# The system key where `eventstore repair` records the seqs it found lost.
REPAIRED = b"repaired"

# Reads check LevelDB's block checksums (a block is checked once, when read
# from disk into the cache; see docs/benchmarks.md for the price).
VERIFY_CHECKSUMS = True


def _damaged_store(path: str, exc: BaseException) -> StoreDamaged:
    store = os.path.dirname(os.path.abspath(path))
    return StoreDamaged(
        f"store {store!r}: its hot tier (LevelDB, {path!r}) is damaged: {_message(exc)}. "
        "Nothing was changed. Take a copy of the store folder, then run "
        f"`eventstore repair {store}`, or restore a backup."
    )


# -- a log whose last records only look torn ------------------------------------
#
# Paranoid checks refuse a log record that fails its checksum, but a record
# that runs past the end of the file is taken for an append a crash cut
# short, and dropped without a word, with every record after it. A flipped
# bit in a length field of the log's last block does exactly that to whole,
# acknowledged sync=True appends. So before LevelDB opens, the last block of
# each log is read: a record running past the end whose checksum passes over
# a prefix of the bytes there is whole, and its length damaged. (A real
# torn write leaves fewer bytes than it was checksummed over.) The format
# is LevelDB's doc/log_format.md.

_LOG_BLOCK = 32768
_LOG_HEADER = 7


def _whole_prefix(kind: int, rest: bytes, crc: int) -> int | None:
    """The length of the prefix of ``rest`` that the header's checksum
    covers, if any does (the record is whole: its length field is damaged)."""
    table = _CRC32C
    running = table[(0xFFFFFFFF ^ kind) & 0xFF] ^ (0xFFFFFFFF >> 8)
    for n, byte in enumerate(rest, 1):
        running = table[(running ^ byte) & 0xFF] ^ (running >> 8)
        if _mask(running) == crc:
            return n
    return None


def _damaged_log_tail(log: str) -> tuple[str, int, int] | None:
    """What is wrong with the tail of a LevelDB log file (and where the
    damaged header is, and the length its checksum passes over), or None.

    Records never cross a 32 KiB block, so the last block is walked from its
    start; a record that runs past the end of the file is checked for a
    prefix its checksum passes. A torn write passes for none (but by a 2^-32
    chance per byte: then the open refuses a crash as damage, and
    `eventstore repair` loses nothing)."""
    size = os.path.getsize(log)
    start = max(size - 1, 0) // _LOG_BLOCK * _LOG_BLOCK
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read()
    pos = 0
    while pos + _LOG_HEADER <= len(data):
        crc = int.from_bytes(data[pos : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0 and crc == 0:
            return None  # preallocated zeros
        end = pos + _LOG_HEADER + length
        if end > len(data):
            rest = data[pos + _LOG_HEADER :]
            whole = _whole_prefix(kind, rest, crc) if kind in (1, 2, 3, 4) else None
            if whole is not None:
                return (
                    f"the record at offset {start + pos} of {log} is whole (its checksum "
                    f"passes over {whole} bytes) but its length field says {length}",
                    start + pos,
                    whole,
                )
            return None  # a write a crash cut short: never acknowledged
        pos = end
    return None


def open_leveldb(path: str, create: bool = True) -> Any:
    # create=False for a store that exists: a LevelDB without its CURRENT
    # file must fail, not come back new and empty beside the archive.
    try:
        logs = sorted(name for name in os.listdir(path) if name.endswith(".log"))
    except FileNotFoundError:
        logs = []
    for name in logs:
        try:
            found = _damaged_log_tail(os.path.join(path, name))
        except FileNotFoundError:
            # Read before LevelDB takes the LOCK: a log that vanished meanwhile
            # was folded into a table by a process holding the store, and
            # opening it below says StoreLocked.
            continue
        if found is not None:
            raise _damaged_store(path, Exception(found[0]))
    try:
        return plyvel.DB(path, create_if_missing=create, **LEVELDB_OPTIONS)
    except plyvel.IOError as exc:
        if "lock" in _message(exc):
            raise StoreLocked(
                f"store {path!r} is already open in another process or handle ({exc})"
            ) from None
        mapped = storage_error(exc, f"opening the hot tier {path!r}")
        assert mapped is not None  # an OSError always maps
        raise mapped from exc
    except plyvel.CorruptionError as exc:
        raise _damaged_store(path, exc) from None


# -- opening on a full disk ---------------------------------------------------
#
# LevelDB writes at every open: it turns the log into a table (up to
# write_buffer_size) and writes a new MANIFEST, CURRENT and log. On a full
# disk that fails, so the hot tier is opened read-only from a scratch copy:
# the log and MANIFEST copied, the tables symlinked (LevelDB only reads
# them; the links are what it deletes). The store's own LOCK is held
# meanwhile, so no other process writes what the copy stands for.

SCRATCH_ENV = "EVENTSTORE_SCRATCH"


def _scratch_root() -> str:
    chosen = os.environ.get(SCRATCH_ENV)
    if chosen:
        return chosen
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def _remove_stale_copies(root: str) -> None:
    """Scratch copies left by processes that died (they hold RAM in /dev/shm)."""
    for name in os.listdir(root):
        parts = name.split("-")
        if name.startswith("eventstore-readonly-") and len(parts) > 3 and parts[2].isdigit():
            try:
                os.kill(int(parts[2]), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            except OSError:
                pass  # alive, another user's


class _ReadOnlyCopy:
    """A scratch copy of a hot tier, with the original's LOCK held."""

    def __init__(self, path: str) -> None:
        self.lock_fd = _locked(path)
        root = _scratch_root()
        _remove_stale_copies(root)
        self.folder = tempfile.mkdtemp(prefix=f"eventstore-readonly-{os.getpid()}-", dir=root)
        try:
            for name in os.listdir(path):
                source = os.path.join(path, name)
                if name.endswith((".ldb", ".sst")):
                    os.symlink(source, os.path.join(self.folder, name))
                elif name != "LOCK" and not name.startswith("LOG") and os.path.isfile(source):
                    shutil.copyfile(source, os.path.join(self.folder, name))
            self.db: Any = plyvel.DB(self.folder, create_if_missing=False, **LEVELDB_OPTIONS)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.db = CLOSED_DB  # as HotTier.close does, and for the same reason
        shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self.lock_fd)


def _locked(path: str) -> int:
    """The hot tier's LOCK file, locked as LevelDB locks it; StoreLocked if held."""
    fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreLocked(f"store {path!r} is already open in another process") from None
    return fd


def _relock(fd: int, path: str) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise StoreLocked(f"store {path!r} was opened by another process") from None


class RepairResult(NamedTuple):
    """What :func:`repair_hot_tier` did."""

    kept: int  # keys whose blocks passed their checksums, copied into the new hot tier
    dropped: int  # keys found in damaged blocks (or damaged log records: not counted)
    rebuilt_manifest: bool  # LevelDB's own repair was needed to find the tables at all
    lengths_fixed: int  # log records whose damaged length field was set right


def _fsync_tree(folder: str) -> None:
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_hot_tier(path: str, aside: str) -> RepairResult:
    """Copy the hot tier at ``path`` to the new folder ``aside`` (fsynced),
    then rebuild it from what passes LevelDB's checksums, holding its lock.

    LevelDB's own repair (``repair_db``) was not enough alone: it reads the
    logs and copies tables without checking checksums, so a flipped bit came
    back as data (seen in a test). Instead: an open without paranoid checks
    replays the logs, dropping records whose checksum fails; then every key
    is read back with its block's checksum verified, and only those that pass
    go into a new LevelDB, which replaces the old. ``repair_db`` runs first
    only if even that open fails (a damaged or missing MANIFEST)."""
    fd = _locked(path)
    try:  # a store open elsewhere is refused, and nobody opens it during the copy
        shutil.copytree(path, aside, ignore=shutil.ignore_patterns("LOCK"))
        _fsync_tree(aside)
    finally:
        os.close(fd)  # LevelDB takes the lock from here on
    # A length field damaged so that whole records look torn is set right
    # (their checksums prove the length); LevelDB would drop them.
    fixed = 0
    for name in sorted(n for n in os.listdir(path) if n.endswith(".log")):
        log = os.path.join(path, name)
        while (found := _damaged_log_tail(log)) is not None and fixed < 1000:
            with open(log, "r+b") as f:
                f.seek(found[1] + 4)
                f.write(found[2].to_bytes(2, "little"))
                f.flush()
                os.fsync(f.fileno())
            fixed += 1
    rebuilt = False
    options = {k: v for k, v in LEVELDB_OPTIONS.items() if k != "paranoid_checks"}
    try:
        old = plyvel.DB(path, paranoid_checks=False, **options)
    except plyvel.Error as exc:
        if "lock" in _message(exc):
            raise StoreLocked(f"store {path!r} is open in another process") from None
        plyvel.repair_db(path, bloom_filter_bits=options["bloom_filter_bits"])
        rebuilt = True
        old = plyvel.DB(path, paranoid_checks=False, **options)
    fresh = path.rstrip("/") + ".repairing"
    shutil.rmtree(fresh, ignore_errors=True)
    kept = dropped = 0
    try:
        new = plyvel.DB(fresh, create_if_missing=True, error_if_exists=True, **options)
        try:
            batch = new.write_batch()
            for key in _keys_as_far_as_they_go(old):
                try:
                    value = old.get(key, verify_checksums=True, fill_cache=False)
                except plyvel.Error:
                    value = None
                if value is None:  # in a damaged block, or a key made up by one
                    dropped += 1
                    continue
                batch.put(key, value)
                kept += 1
                if kept % 10_000 == 0:
                    batch.write()
                    batch = new.write_batch()
            batch.write()
            _reconcile(new)
        finally:
            new.close()
    finally:
        old.close()
    _fsync_tree(fresh)
    retired = path.rstrip("/") + ".damaged"
    os.rename(path, retired)
    os.rename(fresh, path)
    parent = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(parent)  # the swap is durable before the damaged copy goes
    finally:
        os.close(parent)
    shutil.rmtree(retired)
    return RepairResult(kept, dropped, rebuilt, fixed)


def _reconcile(db: Any) -> None:
    """Make a salvaged hot tier agree with itself: an event whose global
    entry was lost gets it back from its record (which holds seq and type);
    global and index entries whose record was lost go (the event is lost:
    the seq hole shows it)."""
    batch = db.write_batch(sync=True)
    for key, raw in db.iterator(prefix=keys.EVENT):
        sep = key.index(keys.SEP)
        if db.get(keys.GLOBAL + key[sep + 1 :]) is None:
            record = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
            entry = [key[1:sep].decode(), record[2], record[1]]
            batch.put(keys.GLOBAL + key[sep + 1 :], msgpack.packb(entry))
    for key, entry in db.iterator(prefix=keys.GLOBAL):
        stream = msgpack.unpackb(entry, raw=False)[0]
        if db.get(keys.event_key(stream.encode(), key[1:])) is None:
            batch.delete(key)
    for key in db.iterator(prefix=keys.INDEX, include_value=False):
        stream_b = key[1 : key.index(keys.SEP)]
        if db.get(keys.event_key(stream_b, key[-16:])) is None:
            batch.delete(key)
    for key, entry in db.iterator(prefix=keys.TAG):
        # A tag entry whose record was lost goes; one whose record holds
        # the tag but whose entry was lost comes back from the record.
        stream = msgpack.unpackb(entry, raw=False)[0]
        if db.get(keys.event_key(stream.encode(), key[-16:])) is None:
            batch.delete(key)
    for key, raw in db.iterator(prefix=keys.EVENT):
        record = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
        if len(record) > 6:
            sep = key.index(keys.SEP)
            entry = msgpack.packb([key[1:sep].decode(), record[2], record[1]])
            for tag in record[6]:
                batch.put(keys.tag_key(tag.encode(), key[sep + 1 :]), entry)
    batch.delete(keys.COUNTS)  # recounted at the next open, from what was salvaged
    batch.write()


def _keys_as_far_as_they_go(db: Any) -> Iterator[bytes]:
    """Every key LevelDB's iterator yields without checking checksums; past a
    block it cannot read, the scan restarts just above the last key seen."""
    last: bytes | None = None
    while True:
        start = last
        it = db.iterator(
            include_value=False, fill_cache=False, **({} if last is None else {"start": last})
        )
        try:
            for key in it:
                if key != last:
                    last = key
                    yield key
            return
        except plyvel.Error:
            if last is None or last == start:
                return  # no way past it: the keys beyond are lost
        finally:
            it.close()


class Gate:
    """Lets reads into LevelDB while the store is open, and lets ``close()`` wait
    until none is inside: plyvel frees the database under a running call
    otherwise, which crashes the process.

    ``active`` holds the thread id of each read inside. ``list.append`` and
    ``list.remove`` are atomic under the GIL, so passing the gate takes no
    lock: a read registers, then checks ``closed``; ``close()`` sets
    ``closed``, then waits for the list to empty. Whichever comes second sees
    the other: the GIL orders them (a free-threaded Python would need a lock
    here).

    A KeyboardInterrupt can land between a C call and the Python around it,
    leaving its thread's entry behind (seen: Ctrl-C in a read loop, then
    ``close()`` in a ``finally``, waited forever). The thread that closes is
    not inside a read, so ``close()`` waits only for other threads' entries.
    (Unless a finaliser run inside a read of that thread closes the store:
    nothing of eventstore's does, and none should.)

    ``pause()`` closes it for a while (the database is reopened meanwhile,
    :meth:`HotTier.reopen`): reads arriving wait for ``resume()`` instead of
    failing.
    """

    __slots__ = ("active", "closed", "resumed")

    def __init__(self) -> None:
        self.active: list[int] = []
        self.closed = False
        self.resumed: threading.Event | None = None  # set while paused

    def __enter__(self) -> None:
        me = get_ident()
        while True:
            self.active.append(me)
            if not self.closed:
                return
            self.active.remove(me)
            self.wait_open()

    def wait_open(self) -> None:
        """Outside the gate, having found it closed: wait if it is paused,
        else raise StoreClosed."""
        resumed = self.resumed
        if resumed is not None:
            resumed.wait()
        elif self.closed:  # resume() clears ``closed`` before ``resumed``
            raise StoreClosed("the store is closed")

    def pause(self) -> None:
        self.resumed = threading.Event()
        self._shut()

    def resume(self) -> None:
        resumed = self.resumed
        self.closed = False
        self.resumed = None
        if resumed is not None:
            resumed.set()

    def __exit__(
        self, kind: object = None, exc: BaseException | None = None, tb: object = None
    ) -> None:
        self.active.remove(get_ident())
        # The one boundary of hot-tier reads: a damaged block or value, or a
        # failing disk, leaves as an EventStoreError.
        if exc is not None and not isinstance(exc, EventStoreError):
            mapped = storage_error(exc, "reading the hot tier")
            if mapped is not None:
                raise mapped from exc

    def close(self) -> None:
        self._shut()

    def _shut(self) -> None:
        self.closed = True
        me = get_ident()
        # Reads inside hold the gate for one chunk (microseconds): poll them out.
        while any(thread != me for thread in self.active):
            time.sleep(0.0005)


class Resources:
    """The plyvel snapshots and iterators of open views, released explicitly.

    Freeing a plyvel iterator or snapshot after (or while) its database
    closes crashes the process, and a view dropped in another thread is
    freed whenever its last reference goes. So the objects are held here,
    released by their view's finaliser while the store is open, and all at
    once by ``close()`` before the database goes.
    """

    __slots__ = ("_born", "_closed", "_entries", "_lock", "generation")

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a finaliser may run inside a locked block
        self._entries: dict[int, list[Any]] = {}
        # The generation each owner (a view's snapshot) was made in: see older().
        self._born: dict[int, int] = {}
        self.generation = 0
        self._closed = False

    def track(self, owner: int, obj: Any) -> None:
        with self._lock:
            if self._closed:
                obj.close()
                raise StoreClosed("the store is closed")
            objs = self._entries.get(owner)
            if objs is None:
                objs = self._entries[owner] = []
                self._born[owner] = self.generation
            objs.append(obj)

    def next_generation(self) -> int:
        """Start a new generation: snapshots taken from here on are of it."""
        with self._lock:
            self.generation += 1
            return self.generation

    def older(self, generation: int) -> bool:
        """A snapshot taken before ``generation`` is still held."""
        with self._lock:
            return any(born < generation for born in self._born.values())

    def busy(self) -> bool:
        """Any view's snapshot or iterator is held, or being released."""
        with self._lock:  # release() pops first, then closes: under the lock
            return bool(self._entries)

    def release(self, owner: int) -> None:
        with self._lock:
            self._born.pop(owner, None)
            for obj in reversed(self._entries.pop(owner, ())):  # iterators, then the snapshot
                obj.close()

    def forget(self) -> list[Any]:
        """Every tracked object, no longer tracked and not released (after fork()).
        No lock: only the forking thread exists, and it may have held it."""
        self._lock = threading.RLock()  # a parent thread may have held the old one
        self._closed = True
        objs = [obj for objs in self._entries.values() for obj in objs]
        self._entries.clear()
        self._born.clear()
        return objs

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for objs in self._entries.values():
                for obj in reversed(objs):
                    obj.close()
            self._entries.clear()
            self._born.clear()


class Snapshot:
    """A LevelDB snapshot whose iterators and self are released through :class:`Resources`."""

    __slots__ = ("__weakref__", "_resources", "_snap")

    def __init__(self, db: Any, resources: Resources) -> None:
        self._resources = resources
        self._snap = db.snapshot()
        resources.track(id(self), self._snap)

    def get(self, key: bytes) -> bytes | None:
        # A method, not a functools.partial: that cost 280 ns more per call.
        value: bytes | None = self._snap.get(key, verify_checksums=VERIFY_CHECKSUMS)
        return value

    def iterator(self, **options: Any) -> Any:
        options.setdefault("verify_checksums", VERIFY_CHECKSUMS)
        it = self._snap.iterator(**options)
        self._resources.track(id(self), it)
        return it

    def __del__(self) -> None:
        resources = getattr(self, "_resources", None)  # unset: __init__ was cut short
        if resources is not None:
            resources.release(id(self))


def _of_types(
    entries: Iterator[tuple[int, bytes, str, str]], types: frozenset[str]
) -> Iterator[tuple[int, bytes, str, str]]:
    return (e for e in entries if e[3] in types)


def _global_seq(entry: bytes) -> int:
    return int(msgpack.unpackb(entry, raw=False)[2])


class HotView:
    """Reads of the hot tier against one LevelDB snapshot.

    ``floor`` is the watermark: keys of events with smaller ids are ignored.
    """

    __slots__ = ("_floor", "_gate", "_lost", "_snap", "strict")

    def __init__(
        self,
        snapshot: Any,
        floor: bytes,
        gate: Gate,
        strict: bool = True,
        lost: dict[int, int] | None = None,
    ) -> None:
        self._snap = snapshot
        self._floor = floor
        self._gate = gate
        # Seqs and versions are dense, so a jump is damage: unless a repair
        # recorded events as lost (REPAIRED), when reads take a stream's
        # versions as they are. A seq jump must still be a recorded hole
        # (``lost``: first seq -> last), or new damage would pass unseen.
        self.strict = strict
        self._lost = lost or {}

    def _chunks(self, step: Callable[[int], tuple[Iterator[Event], bool]]) -> Iterator[Event]:
        """Events from ``step(n)`` (up to n events and whether more may follow),
        each call inside the gate; pages grow so short reads stay cheap. The
        pages are flattened by a C iterator, and each event is decoded only
        when the reader asks for it."""
        return chain.from_iterable(self._pages(step))

    def _pages(
        self, step: Callable[[int], tuple[Iterator[Event], bool]]
    ) -> Iterator[Iterator[Event]]:
        n = 16
        while True:
            with self._gate:
                events, more = step(n)
            yield events
            if not more:
                return
            if n < 512:
                n *= 2

    # -- single keys ---------------------------------------------------------

    def get_raw(self, key: bytes) -> bytes | None:
        with self._gate:
            value: bytes | None = self._snap.get(key)
        return value

    def stream_version(self, stream_b: bytes) -> int:
        with self._gate:
            raw = self._snap.get(keys.meta_key(stream_b))
            return -1 if raw is None else int(msgpack.unpackb(raw)[0])

    def get(self, id16: bytes) -> Event | None:
        if id16 < self._floor:
            return None
        with self._gate:
            entry = self._snap.get(keys.GLOBAL + id16)
            if entry is None:
                return None
            stream, _type, _seq = msgpack.unpackb(entry, raw=False)
            raw = self._snap.get(keys.event_key(stream.encode(), id16))
        if raw is None:
            raise CorruptFile("hot tier", 0, f"global entry {id16.hex()} has no event record")
        return make_event(id16, stream, raw)

    def first_version(self, stream_b: bytes) -> int | None:
        """Version of the stream's first hot event (at or above the floor), or None."""
        prefix = keys.stream_prefix(stream_b)
        with self._gate:
            it = self._snap.iterator(start=prefix + self._floor, stop=keys.prefix_end(prefix))
            try:
                _key, raw = next(it)
            except StopIteration:
                return None
            finally:
                it.close()
            return record_version(raw)

    def last_global(self) -> tuple[bytes, int] | None:
        """Id and seq of the newest event in the global log, or None."""
        with self._gate:
            it = self._snap.iterator(prefix=keys.GLOBAL, reverse=True)
            try:
                key, value = next(it)
            except StopIteration:
                return None
            finally:
                it.close()
            return key[1:], int(msgpack.unpackb(value, raw=False)[2])

    # -- streams -------------------------------------------------------------

    def read_stream(
        self, stream: str, stream_b: bytes, from_version: int | None, backwards: bool
    ) -> Iterator[Event]:
        """A stream's hot events from ``from_version`` (None: from the start or end)."""
        prefix = keys.stream_prefix(stream_b)
        start = prefix + self._floor
        stop = keys.prefix_end(prefix)
        if from_version is not None:
            with self._gate:
                key = self._seek(start, stop, from_version, backwards, record_version)
            if key is None:
                return iter(())
            if backwards:
                stop = key
            else:
                start = key
        cut = len(prefix)
        with self._gate:
            it = self._range(start, stop, backwards, from_version is not None and backwards)
        way = -1 if backwards else 1
        follows: list[int] = []  # the version the next page starts at

        def step(n: int) -> tuple[Iterator[Event], bool]:
            ids, raws = [], []
            for k, v in islice(it, n):
                ids.append(k[cut:])
                raws.append(v)
            if raws and self.strict:
                # Versions are dense: a page whose ends do not match its length,
                # or that does not follow the last, lost keys to a damaged block
                # that LevelDB skipped without a word.
                first, last = record_version(raws[0]), record_version(raws[-1])
                if last - first != way * (len(raws) - 1) or (follows and follows[0] != first):
                    raise CorruptFile(
                        "hot tier",
                        0,
                        f"stream {stream!r}: versions jump near {first}-{last}: "
                        "LevelDB skipped damaged data",
                    )
                follows[:] = [last + way]
            return lazy_events(ids, stream, raws), len(ids) == n

        return self._chunks(step)

    def _range(
        self,
        start: bytes,
        stop: bytes,
        backwards: bool,
        include_stop: bool = False,
        include_value: bool = True,
    ) -> Iterator[Any]:
        """Keys (and values) in [start, stop) (or [start, stop]), either way.

        plyvel 1.5 ends a reverse iteration early when the first key it would
        yield equals ``start`` (and ``prev()`` after ``seek_to_stop()`` does the
        same), so backwards the start bound is applied here instead.
        """
        if not backwards:
            it: Iterator[Any] = self._snap.iterator(
                start=start, stop=stop, include_stop=include_stop, include_value=include_value
            )
            return it
        it = self._snap.iterator(
            stop=stop, include_stop=include_stop, include_value=include_value, reverse=True
        )
        if include_value:
            return takewhile(lambda item: item[0] >= start, it)
        return takewhile(lambda key: key >= start, it)

    def _seek(
        self,
        start: bytes,
        stop: bytes,
        version: int,
        backwards: bool,
        number_of: Callable[[bytes], int],
    ) -> bytes | None:
        """Key of the entry numbered ``version`` in [start, stop), or the nearest in
        the reading direction; None if the direction runs out of entries.

        Keys end in ids, and the number read from each value (a stream version,
        or a global seq) grows with the id and has no holes. So an
        interpolation search over the id space, alternating with plain bisection
        to bound the worst case, finds the key in a few seeks however many
        entries the range holds.
        """
        it = self._snap.iterator(start=start, stop=stop)
        try:
            try:
                lo_key, lo_raw = next(it)
            except StopIteration:
                return None
            lo_v = number_of(lo_raw)
            if version <= lo_v:
                return None if backwards and version < lo_v else lo_key
            hi_key, hi_raw = next(self._range(start, stop, backwards=True))
            hi_v = number_of(hi_raw)
            if version >= hi_v:
                return None if not backwards and version > hi_v else hi_key
            cut = len(start) - 16
            lo_id = int.from_bytes(lo_key[cut:], "big")
            hi_id = int.from_bytes(hi_key[cut:], "big")
            cap = hi_id - 1  # no id above cap can hold `version`
            bisect = False
            # Invariant: lo_v < version < hi_v, the target id lies in (lo_id, cap].
            while hi_v - lo_v > 1 and lo_id < cap:
                if bisect:
                    probe = (lo_id + 1 + cap) // 2
                else:
                    probe = lo_id + (hi_id - lo_id) * (version - lo_v) // (hi_v - lo_v)
                    probe = min(max(probe, lo_id + 1), cap)
                bisect = not bisect
                it.seek(start[:cut] + probe.to_bytes(16, "big"))
                key, raw = next(it)
                v = number_of(raw)
                if v == version:
                    return bytes(key)
                if v < version:
                    lo_id, lo_v, lo_key = int.from_bytes(key[cut:], "big"), v, key
                else:
                    # `key` is the first at or above probe, so the target is below probe.
                    hi_id, hi_v, hi_key = int.from_bytes(key[cut:], "big"), v, key
                    cap = probe - 1
            # Only reachable if versions have a hole: give the nearest neighbour.
            return bytes(lo_key if backwards else hi_key)
        finally:
            it.close()

    # -- secondary indexes ---------------------------------------------------

    def read_index(
        self, stream: str, stream_b: bytes, name_b: bytes, value_b: bytes, backwards: bool
    ) -> Iterator[Event]:
        prefix = keys.index_prefix(stream_b, name_b, value_b)
        event_prefix = keys.stream_prefix(stream_b)
        cut = len(prefix)
        snap_get = self._snap.get
        with self._gate:
            it = self._range(
                prefix + self._floor, keys.prefix_end(prefix), backwards, include_value=False
            )

        def step(n: int) -> tuple[Iterator[Event], bool]:
            ids, raws = [], []
            for key in islice(it, n):
                id16 = key[cut:]
                raw = snap_get(event_prefix + id16)
                if raw is None:
                    raise CorruptFile("hot tier", 0, f"index entry {key!r} has no event record")
                ids.append(id16)
                raws.append(raw)
            return lazy_events(ids, stream, raws), len(ids) == n

        return self._chunks(step)

    # -- the global log ------------------------------------------------------

    def read_all(
        self,
        after: bytes | None,
        backwards: bool,
        types: frozenset[str] | None,
        stream_prefix: str | None,
    ) -> Iterator[Event]:
        """The global log from ``after`` (exclusive), filtering on the global
        entry alone so rejected events' records are never fetched."""
        start = keys.GLOBAL + self._floor
        stop = keys.prefix_end(keys.GLOBAL)
        if after is not None:
            if backwards:
                stop = keys.GLOBAL + after
            else:
                start = keys.GLOBAL + max(after, self._floor)
        with self._gate:
            it = self._range(start, stop, backwards)
        snap_get = self._snap.get
        unpackb = msgpack.unpackb
        way = -1 if backwards else 1
        follows = [-1]  # the seq the next entry has, -1 before the first

        def step(n: int) -> tuple[Iterator[Event], bool]:
            ids: list[bytes] = []
            streams: list[str] = []
            raws: list[bytes] = []
            scanned = 0
            for key, entry in islice(it, n):
                scanned += 1
                id16 = key[1:]
                if id16 == after and not backwards:
                    continue
                stream, type_, seq = unpackb(entry, raw=False)
                # seq is gap-free: a jump is keys lost to a damaged block
                # that LevelDB skipped without a word.
                if seq != follows[0] and follows[0] != -1 and not self._recorded(follows[0], seq):
                    raise CorruptFile(
                        "hot tier",
                        0,
                        f"seq {seq} where {follows[0]} belongs: LevelDB skipped damaged data",
                    )
                follows[0] = seq + way
                if types is not None and type_ not in types:
                    continue
                if stream_prefix is not None and not stream.startswith(stream_prefix):
                    continue
                raw = snap_get(keys.EVENT + stream.encode() + keys.SEP + id16)
                if raw is None:
                    raise CorruptFile(
                        "hot tier", 0, f"global entry {id16.hex()} has no event record"
                    )
                ids.append(id16)
                streams.append(stream)
                raws.append(raw)
            return lazy_events(ids, streams, raws), scanned == n

        return self._chunks(step)

    # -- the tag index (DCB) ----------------------------------------------------

    def query(self, plan: Plan, after: int | None, backwards: bool) -> Iterator[Event]:
        """The hot events matching ``plan`` with seq above ``after``, in seq
        order (descending backwards), before any retention filter.

        When every item names a tag, each item reads the ``t`` keys of its
        tag (several: a leapfrog join of theirs), whose values say type and
        seq, so other events' records are never read, and the items'
        entries are merged by seq;
        otherwise the global log is scanned, filtered by type when every
        item names types. Either way each event is checked against the
        whole query once its record is read (its other tags)."""
        start_id: bytes | None = None
        if after is not None:
            found = self.seek_seq(after + 1, False)
            if found is None:
                return iter(())
            start_id = found
        if not plan.tagged:
            after16 = None
            if start_id is not None and not backwards:
                after16 = (int.from_bytes(start_id, "big") - 1).to_bytes(16, "big")
            events = self.read_all(after16, backwards, plan.scan_types, None)
            if backwards and start_id is not None:
                events = takewhile(lambda e: e.id.bytes >= start_id, events)
            if plan.everything:
                return events
            return filter(plan.matches_event, events)
        runs: list[Iterator[tuple[int, bytes, str, str]]] = []
        for item in plan.items:
            if len(item.tags_b) == 1:
                entries = self._tag_entries(item.tags_b[0], start_id, backwards)
            else:
                entries = self._tag_join(item.tags_b, start_id, backwards)
            if item.types is not None:
                entries = _of_types(entries, item.types)
            runs.append(entries)
        merged = runs[0] if len(runs) == 1 else heapq.merge(*runs, reverse=backwards)
        return filter(plan.matches_event, self._tagged_events(merged, after))

    def _tag_entries(
        self, tag_b: bytes, start_id: bytes | None, backwards: bool
    ) -> Iterator[tuple[int, bytes, str, str]]:
        """(seq, id16, stream, type) of a tag's ``t`` keys from ``start_id``
        (inclusive; None: the floor), read in pages inside the gate."""
        prefix = keys.tag_prefix(tag_b)
        floor = self._floor if start_id is None else max(start_id, self._floor)
        with self._gate:
            it = self._range(prefix + floor, keys.prefix_end(prefix), backwards)
        cut = len(prefix)
        unpackb = msgpack.unpackb
        n = 16
        while True:
            with self._gate:
                page = list(islice(it, n))
            for key, entry in page:
                stream, type_, seq = unpackb(entry, raw=False)
                yield seq, key[cut:], stream, type_
            if len(page) < n:
                return
            if n < 512:
                n *= 2

    def _tag_join(
        self, tags_b: tuple[bytes, ...], start_id: bytes | None, backwards: bool
    ) -> Iterator[tuple[int, bytes, str, str]]:
        """(seq, id16, stream, type) of the events carrying every tag of
        ``tags_b``, from ``start_id`` (inclusive; None: the floor): a
        leapfrog join of the tags' ``t`` keys, each seek landing on the next
        id some tag has, so the keys read grow with the rarest tag's
        entries, not the commonest's."""
        floor = self._floor if start_id is None else max(start_id, self._floor)
        prefixes = [keys.tag_prefix(t) for t in tags_b]
        n = len(prefixes)
        with self._gate:
            its = [self._snap.iterator() for _ in prefixes]
        unpackb = msgpack.unpackb
        top = (1 << 128) - 1

        def step(i: int, id16: bytes) -> tuple[bytes, bytes] | None:
            # Forwards: tag i's first entry with id >= id16; backwards: its
            # last with id <= id16. None when the tag has no more.
            prefix, it = prefixes[i], its[i]
            with self._gate:
                try:
                    if not backwards:
                        it.seek(prefix + id16)
                        key, value = next(it)
                    else:
                        above = int.from_bytes(id16, "big") + 1
                        it.seek(
                            prefix + above.to_bytes(16, "big")
                            if above <= top
                            else keys.prefix_end(prefix)
                        )
                        key, value = it.prev()
                except StopIteration:
                    return None
            if len(key) != len(prefix) + 16 or not key.startswith(prefix):
                return None
            got = key[len(prefix) :]
            if got < floor:
                return None
            return got, value

        cand = floor if not backwards else top.to_bytes(16, "big")
        while True:
            agree, i = 0, 0
            while agree < n:
                found = step(i, cand)
                if found is None:
                    return
                if found[0] == cand:
                    agree += 1
                else:
                    cand, agree = found[0], 1
                value = found[1]  # the same [stream, type, seq] under every tag
                i = (i + 1) % n
            stream, type_, seq = unpackb(value, raw=False)
            yield seq, cand, stream, type_
            c = int.from_bytes(cand, "big")
            if backwards:
                if c == 0:
                    return
                cand = (c - 1).to_bytes(16, "big")
            else:
                if c == top:
                    return
                cand = (c + 1).to_bytes(16, "big")

    def _tagged_events(
        self, entries: Iterator[tuple[int, bytes, str, str]], after: int | None
    ) -> Iterator[Event]:
        """The events of tag entries (in seq order, an event possibly more
        than once in a row), each record read once."""
        snap_get = self._snap.get
        last = -1
        low = -1 if after is None else after
        while True:
            page = list(islice(entries, 64))
            ids: list[bytes] = []
            streams: list[str] = []
            raws: list[bytes] = []
            with self._gate:
                for seq, id16, stream, _type in page:
                    if seq == last or seq <= low:
                        continue
                    last = seq
                    raw = snap_get(keys.EVENT + stream.encode() + keys.SEP + id16)
                    if raw is None:
                        raise CorruptFile(
                            "hot tier", 0, f"tag entry of event {id16.hex()} has no event record"
                        )
                    ids.append(id16)
                    streams.append(stream)
                    raws.append(raw)
            yield from lazy_events(ids, streams, raws)
            if len(page) < 64:
                return

    def _recorded(self, expected: int, seq: int) -> bool:
        """Whether the jump from ``expected`` to ``seq`` (either way) skips
        exactly a hole that a repair recorded."""
        if seq > expected:
            return self._lost.get(expected) == seq - 1
        return self._lost.get(seq + 1) == expected

    def seek_seq(self, seq: int, backwards: bool) -> bytes | None:
        """Id of the hot event with ``seq``, or the nearest in the reading
        direction; None if there is none that way."""
        start = keys.GLOBAL + self._floor
        with self._gate:
            key = self._seek(start, keys.prefix_end(keys.GLOBAL), seq, backwards, _global_seq)
        return None if key is None else key[1:]

    def check_blocks(self) -> int:
        """Read every key and value with block checksums verified, past the
        block cache's contents where it can (fill_cache=False); returns the
        number of keys. A damaged block raises (as CorruptFile, at the gate)."""
        n = 0
        key = b""
        while True:
            with self._gate:
                it = self._snap.iterator(start=key, fill_cache=False, verify_checksums=True)
                try:
                    page = list(islice(it, 4096))
                finally:
                    it.close()
            if key and page and page[0][0] == key:
                page = page[1:]
            if not page:
                return n
            n += len(page)
            key = page[-1][0]

    def events_written(self) -> int:
        """How many events the streams' versions say were ever written (each
        stream's version + 1, summed): seqs are dense, so this is the last
        seq handed out, even when the newest records were lost."""
        total = 0
        with self._gate:
            it = self._snap.iterator(prefix=keys.META, include_key=False)
            try:
                for raw in it:
                    total += int(msgpack.unpackb(raw)[0]) + 1
            finally:
                it.close()
        return total

    def global_seqs(self) -> Iterator[int]:
        """The seq of every hot global entry at or above the floor, in id
        order, unchecked (for counting what a damaged log still holds)."""
        key = keys.GLOBAL + self._floor
        stop = keys.prefix_end(keys.GLOBAL)
        resumed = False  # later pages start at the last key already given
        while True:
            with self._gate:
                it = self._snap.iterator(start=key, stop=stop)
                try:
                    page = list(islice(it, 4096))
                finally:
                    it.close()
                if resumed and page and page[0][0] == key:
                    page = page[1:]
                resumed = True
                if not page:
                    return
                seqs = [_global_seq(value) for _, value in page]
            yield from seqs
            key = page[-1][0]

    def page(self, start: bytes, stop: bytes, n: int) -> list[tuple[bytes, bytes]]:
        """Up to ``n`` (key, value) pairs in [start, stop) (-- h17 hook: scavenge.py)."""
        with self._gate:
            it = self._snap.iterator(start=start, stop=stop, fill_cache=False)
            try:
                return list(islice(it, n))
            finally:
                it.close()

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(key, value) of every key starting with ``prefix``, in key order."""
        with self._gate:
            return list(self._snap.iterator(prefix=prefix))


def _wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done`` until it holds (True) or ``deadline`` passes (False)."""
    collected = False
    while not done():
        if time.monotonic() > deadline:
            return False
        if not collected:
            gc.collect()  # a view dropped in a reference cycle waits for the collector
            collected = True
        time.sleep(0.001)
    return True


class _ClosedDB:
    """Stands in for a closed store's LevelDB database: closed, and unusable."""

    closed = True

    def __getattr__(self, name: str) -> Any:
        raise StoreClosed("the store is closed")


CLOSED_DB = _ClosedDB()


class HotTier:
    """The LevelDB database of one store."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        # Why writes are refused (the disk was full at open), or None.
        self.read_only: str | None = None
        self._copy: _ReadOnlyCopy | None = None
        # LOCK held by this process between a reopen's close and open (see reopen).
        self._lock_fd: int | None = None
        try:
            self.db: Any = open_leveldb(path, create)
        except DiskFull as full:
            if not os.path.isfile(os.path.join(path, "CURRENT")):
                raise  # nothing to read: a new store cannot be made on a full disk
            self._copy = _ReadOnlyCopy(path)
            self.db = self._copy.db
            self.read_only = (
                f"the disk was full when the store opened ({full.strerror}), so LevelDB could "
                "not write its log and manifest; it was opened read-only from a scratch copy "
                f"({self._copy.folder}): free space and reopen it to write"
            )
        self.gate = Gate()
        self.resources = Resources()
        # While reopen() waits for open views to go, new ones wait for it.
        self._draining = False
        self._drained = threading.Condition()
        # A scrub of LevelDB's MANIFEST and LOG that reopen() could not do
        # (views stayed open): close() does it.
        self.scrub_pending = False
        # Key ranges a scavenge compacted while views older than its
        # rewrites were open (so their old versions stayed): close()
        # compacts them again.
        self.compact_pending: set[tuple[bytes, bytes]] = set()
        # What `eventstore repair` recorded as lost: {"lost": [[first, last] seq...]}.
        try:
            self.repaired: dict[str, Any] | None = self.get_system(REPAIRED)
        except BaseException:
            self.close()
            raise

    @property
    def lost(self) -> list[tuple[int, int]]:
        """The seq ranges ``eventstore repair`` recorded as lost (first, last)."""
        return [(int(a), int(b)) for a, b in (self.repaired or {}).get("lost", [])]

    def view(self, floor: bytes = _NO_ID) -> HotView:
        if self._draining:
            self.wait_drained()
        with self.gate:
            repaired = self.repaired
            lost = dict(self.lost) if repaired else None
            return HotView(Snapshot(self.db, self.resources), floor, self.gate, not repaired, lost)

    def get_event(self, id16: bytes) -> Event | bool | None:
        """The hot event with this id, None if there is none, or False if its
        global entry and its record disagree (a compaction deleted one between
        the two reads: the caller retries on a consistent view)."""
        active = self.gate.active
        me = get_ident()
        active.append(me)  # the gate, inline: this is the hottest read
        if self.gate.closed:
            active.remove(me)
            self.gate.wait_open()  # paused by reopen(), or StoreClosed
            return self.get_event(id16)
        db = self.db  # inside the gate: reopen() swaps it outside
        try:
            entry = db.get(keys.GLOBAL + id16, verify_checksums=VERIFY_CHECKSUMS)
            if entry is None:
                return None
            # The entry is [stream, type, seq]; a stream name under 32 bytes
            # is a fixstr right after the array header: slice it out.
            tag = entry[1]
            if 0xA0 <= tag <= 0xBF:
                stream_b = entry[2 : 2 + (tag & 0x1F)]
            else:
                stream_b = _unpackb(entry, raw=False)[0].encode()
            raw = db.get(keys.EVENT + stream_b + keys.SEP + id16, verify_checksums=VERIFY_CHECKSUMS)
        except Exception as exc:
            mapped = storage_error(exc, "reading the hot tier")
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
        finally:
            active.remove(me)
        if raw is None:
            return False
        return decode_event(id16, stream_b.decode(), raw)

    def get_system(self, name: bytes) -> Any:
        try:
            raw = self.db.get(keys.system_key(name), verify_checksums=True)
        except LevelDBCorruption as exc:
            raise _damaged_store(self.path, exc) from None
        return (
            None
            if raw is None
            else msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
        )

    def wait_drained(self) -> None:
        with self._drained:
            while self._draining:
                self._drained.wait()

    def wait_for_older_views(self, generation: int, wait: float) -> bool:
        """Wait up to ``wait`` seconds until no view made before ``generation``
        is open; whether none is. A LevelDB snapshot keeps every version it
        sees through any compaction."""
        return _wait_until(lambda: not self.resources.older(generation), time.monotonic() + wait)

    def reopen(self, wait: float = 3.0) -> bool:
        """Close the database, scrub LevelDB's MANIFEST and LOG of every
        removed key (eventstore/manifest.py), and open it again: LevelDB
        writes those files only while open, and never rewrites them.

        The caller holds the maintenance lock and keeps appends from being
        written (Writer.paused). New views and reads wait meanwhile; views
        already open are waited for up to ``wait`` seconds. If they outlive
        it, nothing is done and ``scrub_pending`` is set: close() scrubs.
        Returns whether it reopened."""
        if self._copy is not None:
            return False  # read-only from a scratch copy: nothing of the store's to scrub
        with self._drained:
            self._draining = True
        try:
            deadline = time.monotonic() + wait
            while True:
                if not _wait_until(lambda: not self.resources.busy(), deadline):
                    self.scrub_pending = True
                    return False
                self.gate.pause()
                if not self.resources.busy():
                    break  # none can open now: views are made inside the gate
                self.gate.resume()
            try:
                self.db.close()
                self.db = CLOSED_DB
                # Closing dropped LevelDB's lock: take it again at once, so
                # no other process opens the store meanwhile. (POSIX locks
                # are the process's: the fd stays open until close(), or
                # closing it would drop the lock LevelDB takes next.)
                if self._lock_fd is None:
                    self._lock_fd = _locked(self.path)
                else:
                    _relock(self._lock_fd, self.path)
                failed: Exception | None = None
                try:
                    _scrub_manifest(self.path)
                    self.scrub_pending = False
                except Exception as exc:
                    # Damage LevelDB did not mind, or a failing disk: the
                    # database opens again, and then the error is told.
                    failed = exc
                    self.scrub_pending = True
                self.db = open_leveldb(self.path, create=False)
                if failed is not None:
                    doing = f"scrubbing LevelDB's MANIFEST in {self.path!r}"
                    raise (storage_error(failed, doing, decoding=False) or failed) from failed
            finally:
                self.gate.resume()
        finally:
            with self._drained:
                self._draining = False
                self._drained.notify_all()
        return True

    def close(self) -> None:
        self.gate.close()
        self.resources.close()
        if not self.db.closed:
            if self.compact_pending and self._copy is None:
                with contextlib.suppress(plyvel.Error):  # the database closes all the same
                    for start, stop in sorted(self.compact_pending):  # no view is open now
                        self.db.compact_range(start=start, stop=stop)
                self.compact_pending.clear()
                self.scrub_pending = True  # the compactions logged their bounds
            self.db.close()
            if self.scrub_pending and self._copy is None:
                self.scrub_pending = False
                # Under the LOCK again (closing dropped it); LevelDB reads
                # what it wrote at the next open whatever this parser makes
                # of it: a close does not fail on it.
                with contextlib.suppress(CorruptFile, OSError):
                    if self._lock_fd is None:
                        self._lock_fd = _locked(self.path)
                    else:
                        _relock(self._lock_fd, self.path)
                    _scrub_manifest(self.path)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        # Let go of the plyvel object now: freed later by the garbage collector
        # (a store is full of cycles), its __dealloc__ runs on an object the
        # collector has already cleared, and prints "Error in sys.excepthook".
        self.db = CLOSED_DB
        if self._copy is not None:
            self._copy.close()

    def disown(self) -> list[Any]:
        """In a child after fork(): hand over the database and every plyvel
        object of open views without releasing any (they are the parent's),
        and stop reads under way at their next page."""
        self.gate.closed = True
        return [self.db, *self.resources.forget()]
