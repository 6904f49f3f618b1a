"""The hot tier: events in LevelDB (plyvel) under the key layout of keys.py.

:class:`HotTier` owns the database handle and applies write batches;
:class:`HotView` answers reads against one LevelDB snapshot, so a read that
touches several keys (an index entry and its record, a global entry and its
record) sees one consistent moment. Keys below the watermark belong to the
cold tier (they are garbage awaiting deletion) and every read here skips them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain, islice, repeat, takewhile
from threading import get_ident
from typing import Any

import msgpack
import plyvel
from ulid import ULID

from . import keys
from .errors import CorruptFile, StoreClosed, StoreLocked
from .events import Event
from .ids import ulid_from_bytes
from .records import inert_ext, record_version

_NO_ID = bytes(16)
_TUPLE_NEW = tuple.__new__
_new_ulid = ULID.__new__
_unpackb = msgpack.unpackb


def make_event(id16: bytes, stream: str, raw: bytes, where: str = "hot tier") -> Event:
    """An :class:`Event` from its id, stream and record bytes."""
    try:
        version, seq, type_, data, metadata, indexes = msgpack.unpackb(
            raw, raw=False, strict_map_key=False, ext_hook=inert_ext
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptFile(where, 0, f"undecodable record of event {id16.hex()}: {exc}") from None
    event: Event = _TUPLE_NEW(
        Event, (ulid_from_bytes(id16), stream, version, seq, type_, data, metadata, indexes)
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
                Event, (u, stream, rec[0], rec[1], rec[2], rec[3], rec[4], rec[5])
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


# What plyvel raises when LevelDB finds a block whose checksum is wrong (on
# reads that ask it to verify, as compaction's scans do).
LevelDBCorruption = plyvel.CorruptionError


def damaged(exc: Exception) -> CorruptFile:
    """The error for a LevelDB block that failed its checksum."""
    return CorruptFile("hot tier", 0, f"LevelDB refused a damaged block: {exc}")


# Bloom filters spare point lookups (get, expected-version checks) a block
# read per table that cannot hold the key; the larger cache and write buffer
# suit a store that appends in batches and replays recent streams.
LEVELDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 16 << 20,
    "lru_cache_size": 64 << 20,
    "bloom_filter_bits": 10,
}


def open_leveldb(path: str, create: bool = True) -> Any:
    # create=False for a store that exists: a LevelDB without its CURRENT
    # file must fail, not come back new and empty beside the archive.
    try:
        return plyvel.DB(path, create_if_missing=create, **LEVELDB_OPTIONS)
    except plyvel.IOError as exc:
        if b"lock" in str(exc).encode() or "lock" in str(exc):
            raise StoreLocked(
                f"store {path!r} is already open in another process or handle ({exc})"
            ) from None
        raise


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
    """

    __slots__ = ("active", "closed")

    def __init__(self) -> None:
        self.active: list[int] = []
        self.closed = False

    def __enter__(self) -> None:
        self.active.append(get_ident())
        if self.closed:
            self.active.remove(get_ident())
            raise StoreClosed("the store is closed")

    def __exit__(self, *exc: object) -> None:
        self.active.remove(get_ident())

    def close(self) -> None:
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

    __slots__ = ("_closed", "_entries", "_lock")

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a finaliser may run inside a locked block
        self._entries: dict[int, list[Any]] = {}
        self._closed = False

    def track(self, owner: int, obj: Any) -> None:
        with self._lock:
            if self._closed:
                obj.close()
                raise StoreClosed("the store is closed")
            self._entries.setdefault(owner, []).append(obj)

    def release(self, owner: int) -> None:
        with self._lock:
            for obj in reversed(self._entries.pop(owner, ())):  # iterators, then the snapshot
                obj.close()

    def forget(self) -> list[Any]:
        """Every tracked object, no longer tracked and not released (after fork()).
        No lock: only the forking thread exists, and it may have held it."""
        self._lock = threading.RLock()  # a parent thread may have held the old one
        self._closed = True
        objs = [obj for objs in self._entries.values() for obj in objs]
        self._entries.clear()
        return objs

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for objs in self._entries.values():
                for obj in reversed(objs):
                    obj.close()
            self._entries.clear()


class Snapshot:
    """A LevelDB snapshot whose iterators and self are released through :class:`Resources`."""

    __slots__ = ("__weakref__", "_resources", "_snap")

    def __init__(self, db: Any, resources: Resources) -> None:
        self._resources = resources
        self._snap = db.snapshot()
        resources.track(id(self), self._snap)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._snap.get(key)
        return value

    def iterator(self, **options: Any) -> Any:
        it = self._snap.iterator(**options)
        self._resources.track(id(self), it)
        return it

    def __del__(self) -> None:
        resources = getattr(self, "_resources", None)  # unset: __init__ was cut short
        if resources is not None:
            resources.release(id(self))


def _global_seq(entry: bytes) -> int:
    return int(msgpack.unpackb(entry, raw=False)[2])


class HotView:
    """Reads of the hot tier against one LevelDB snapshot.

    ``floor`` is the watermark: keys of events with smaller ids are ignored.
    """

    __slots__ = ("_floor", "_gate", "_snap")

    def __init__(self, snapshot: Any, floor: bytes, gate: Gate) -> None:
        self._snap = snapshot
        self._floor = floor
        self._gate = gate

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

        def step(n: int) -> tuple[Iterator[Event], bool]:
            ids, raws = [], []
            for k, v in islice(it, n):
                ids.append(k[cut:])
                raws.append(v)
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
                stream, type_, _seq = unpackb(entry, raw=False)
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

    def seek_seq(self, seq: int, backwards: bool) -> bytes | None:
        """Id of the hot event with ``seq``, or the nearest in the reading
        direction; None if there is none that way."""
        start = keys.GLOBAL + self._floor
        with self._gate:
            key = self._seek(start, keys.prefix_end(keys.GLOBAL), seq, backwards, _global_seq)
        return None if key is None else key[1:]

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(key, value) of every key starting with ``prefix``, in key order."""
        with self._gate:
            return list(self._snap.iterator(prefix=prefix))


class HotTier:
    """The LevelDB database of one store."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        self.db: Any = open_leveldb(path, create)
        self.gate = Gate()
        self.resources = Resources()

    def view(self, floor: bytes = _NO_ID) -> HotView:
        with self.gate:
            return HotView(Snapshot(self.db, self.resources), floor, self.gate)

    def get_event(self, id16: bytes) -> Event | bool | None:
        """The hot event with this id, None if there is none, or False if its
        global entry and its record disagree (a compaction deleted one between
        the two reads: the caller retries on a consistent view)."""
        db = self.db
        active = self.gate.active
        me = get_ident()
        active.append(me)  # the gate, inline: this is the hottest read
        try:
            if self.gate.closed:
                raise StoreClosed("the store is closed")
            entry = db.get(keys.GLOBAL + id16)
            if entry is None:
                return None
            # The entry is [stream, type, seq]; a stream name under 32 bytes
            # is a fixstr right after the array header: slice it out.
            tag = entry[1]
            if 0xA0 <= tag <= 0xBF:
                stream_b = entry[2 : 2 + (tag & 0x1F)]
            else:
                stream_b = _unpackb(entry, raw=False)[0].encode()
            raw = db.get(keys.EVENT + stream_b + keys.SEP + id16)
        finally:
            active.remove(me)
        if raw is None:
            return False
        return decode_event(id16, stream_b.decode(), raw)

    def get_system(self, name: bytes) -> Any:
        raw = self.db.get(keys.system_key(name))
        return (
            None
            if raw is None
            else msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=inert_ext)
        )

    def close(self) -> None:
        self.gate.close()
        self.resources.close()
        if not self.db.closed:
            self.db.close()

    def disown(self) -> list[Any]:
        """In a child after fork(): hand over the database and every plyvel
        object of open views without releasing any (they are the parent's),
        and stop reads under way at their next page."""
        self.gate.closed = True
        return [self.db, *self.resources.forget()]
