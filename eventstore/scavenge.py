"""Scavenging: removing the bytes of what deletion, retention and redaction hide.

A collaborator the store holds (``EventStore._scavenging``), beside
compaction (eventstore/tiering.py), whose file protocol it uses; given the
hot tier, the archive set, the tiering, the rules and the maintenance lock.

A removed event leaves a *husk*: its record keeps id, stream, version, seq
and type, and loses data, metadata and index entries (``[version, seq,
type, nil, nil, {}]``); its seq is recorded as removed (system keys ``x
removed NUL first8`` -> last8), and every read skips it from then on. A
redacted event's record becomes the same (its index values can be personal
data too), and reads return it as redacted. So
the log keeps its shape (seqs and versions stay dense, files keep their seq
ranges, every structural check of the store holds), while no byte of a
removed event's data or metadata is left: the seq record is how verify()
and subscribers tell a removed event (recorded) from a lost one (absent).

The steps, each safe to stop at (a crash, a kill): the rules decide which
events go, and their seqs are recorded first (one synced batch per chunk),
so they stay hidden whatever happens next; then hot records are rewritten in
synced batches; then each archive file holding one is rewritten whole through
the protocol of a merge (a new number reserved, the file written to a
temporary name, fsynced, renamed, its segment keys, one synced batch naming
it in the manifest in place of the old, the old keys and file removed
after); then LevelDB compacts the key ranges that held the old records, so
their bytes leave its tables; last, the database is closed, its MANIFEST and
LOG rewritten without any key (eventstore/manifest.py), and opened again
(reads wait; if views stay open, close() does it). A scavenge after a crash
finds the recorded seqs whose records still hold data and finishes them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import msgpack

from . import keys, segments
from .archive import ArchiveFile
from .compaction import write_file
from .hot import HotTier
from .records import unpack
from .retention import (
    MAX_VERSION,
    Forgetting,
    SeqRanges,
    removed_item,
    to_ranges,
)
from .tiering import Tiering
from .view import ArchiveSet, View, take_view

_packb = msgpack.packb
_CHUNK = 1024  # events per synced hot batch
# How long a scavenge waits for reads begun before its rewrites to end before
# it compacts (subscriptions hold a view up to a second); past it, close()
# compacts instead.
_OLDER_VIEWS_WAIT = 10.0
# How long the reopen waits for every view to go (past it: at close).
_REOPEN_WAIT = 3.0


class ScavengeResult(NamedTuple):
    """What a scavenge did (or, with ``dry_run``, would do)."""

    examined: int  # events read to decide or to rewrite
    removed: int  # events newly recorded as removed
    scrubbed: int  # records rewritten without their data (hot and cold)
    files: int  # archive files rewritten
    seconds: float


def _husk(raw: bytes) -> bytes:
    version, seq, type_ = unpack(raw)[:3]  # tags go with the data (six fields)
    return bytes(_packb([version, seq, type_, None, None, {}]))


def _clean(raw: bytes) -> bool:
    """The record holds nothing to remove already."""
    rec = unpack(raw)
    return rec[3] is None and rec[4] is None and rec[5] == {} and len(rec) == 6


class Scavenging:
    """scavenge(), for the store."""

    def __init__(
        self,
        hot: HotTier,
        archive: ArchiveSet,
        tiering: Tiering,
        forget: Forgetting,
        maintenance: threading.Lock,
        index_types: bool,
        check_open: Callable[[], None],
        check_readable: Callable[[], None],
        pause_writes: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._hot = hot
        self._archive = archive
        self._tiering = tiering
        self._forget = forget
        self._maintenance = maintenance
        self._index_types = index_types
        self._check_open = check_open
        self._check_readable = check_readable
        self._pause_writes = pause_writes

    def _view(self) -> View:
        return take_view(self._hot, self._archive)

    def scavenge(
        self, *, dry_run: bool = False, progress: Callable[[str, int], None] | None = None
    ) -> ScavengeResult:
        """See :meth:`eventstore.EventStore.scavenge`."""
        started = time.perf_counter()
        tell = progress or (lambda step, n: None)
        check = self._check_readable if dry_run else self._check_open
        check()
        if not dry_run:
            self._tiering.cleanup()  # hot copies of archived events hold data too
        with self._maintenance:
            check()
            view = self._view()
            examined, new, streams = self._decide(view)
            tell("decided", len(new))
            if not dry_run and new:
                self._record_removed(new)
            tell("recorded", len(new))
            removed = SeqRanges(self._forget.removed.pairs())
            removed.add(to_ranges(new))
            touched: set[str] = set(streams)
            if not dry_run:
                _flush_memtable(self._hot.db)
            n_hot, seen, spans = self._scrub_hot(view, removed, dry_run, touched)
            examined += seen
            tell("hot", n_hot)
            n_cold, n_files, seen = self._scrub_cold(removed, dry_run, spans, touched)
            examined += seen
            tell("cold", n_cold)
            if not dry_run:
                self._drop_snapshots(view, touched, spans)
                # A LevelDB snapshot keeps the versions it sees through any
                # compaction: this view's must go first, and those of reads
                # begun before the rewrites (later ones see only husks).
                # Compacted with one open, old and new versions would end up
                # in one table, which LevelDB may never compact again: if
                # such reads outlast the wait, close() compacts instead.
                del view
                generation = self._hot.resources.next_generation()
                settled = self._hot.wait_for_older_views(generation, _OLDER_VIEWS_WAIT)
                self._compact(spans, settled)
            tell("compacted", 0)
            if not dry_run:
                # LevelDB's MANIFEST and LOG still name removed keys (as table
                # bounds, compaction pointers and compaction ranges): they
                # are rewritten with the database closed, so it is reopened.
                with self._pause_writes():
                    self._hot.reopen(_REOPEN_WAIT)
                tell("reopened", 0)
        return ScavengeResult(
            examined, len(new), n_hot + n_cold, n_files, time.perf_counter() - started
        )

    # -- deciding --------------------------------------------------------------

    def _decide(self, view: View) -> tuple[int, list[int], set[str]]:
        """Seqs the rules hide that are not recorded as removed yet. The
        events a rule removes are a prefix of their stream (versions and ids
        rise together), so each stream is read only up to its first kept event."""
        forget = self._forget
        removed = forget.removed
        now_ms = forget.now_ms()
        examined = 0
        new: list[int] = []
        streams: set[str] = set()
        for stream, rules in list(forget.rules.items()):
            if rules.empty:
                continue
            stream_b = stream.encode()
            last = view.hot.stream_version(stream_b)
            low, age_ms = rules.floor(last, now_ms)
            low = min(low, MAX_VERSION)
            for event in view.read_stream(stream, stream_b, None, False):
                examined += 1
                if event.version >= low and int.from_bytes(event.id.bytes[:6], "big") >= age_ms:
                    break
                if event.seq not in removed:
                    new.append(event.seq)
                    streams.add(stream)
        return examined, new, streams

    def _record_removed(self, seqs: list[int]) -> None:
        ranges = to_ranges(seqs)
        db = self._hot.db
        for at in range(0, len(ranges), 4096):
            part = ranges[at : at + 4096]
            batch = db.write_batch(sync=True)
            for first, last in part:
                batch.put(*removed_item(first, last))
            batch.write()
            self._forget.removed.add(part)

    # -- the hot tier ----------------------------------------------------------

    def _scrub_hot(
        self, view: View, removed: SeqRanges, dry_run: bool, touched: set[str]
    ) -> tuple[int, int, dict[str, tuple[bytes, bytes]]]:
        """Rewrite the hot records of removed and redacted events still
        holding data; returns (records rewritten, entries examined, spans):
        ``spans`` maps a namespace to the lowest and highest key touched."""
        db = self._hot.db
        redacted = self._forget.redacted
        spans: dict[str, tuple[bytes, bytes]] = {}
        n = examined = 0
        batch = db.write_batch(sync=True)
        pending = 0
        for key, entry in _global_entries(view):
            examined += 1
            id16 = key[1:]
            stream, _type, seq = unpack(entry)
            husk = seq in removed
            if not husk and id16 not in redacted:
                continue
            stream_b = stream.encode()
            ekey = keys.event_key(stream_b, id16)
            _touch(spans, "e", ekey)
            raw = view.hot.get_raw(ekey)
            if raw is None or _clean(raw):
                continue
            n += 1
            touched.add(stream)
            if dry_run:
                continue
            # A removed and a redacted event lose the same: data, metadata,
            # index values and tags (the type= entry stays with the type).
            record = unpack(raw)
            for name, value in record[5].items():
                ikey = keys.index_key(stream_b, name.encode(), value.encode(), id16)
                _touch(spans, "i", ikey)
                batch.delete(ikey)
            for tag in record[6] if len(record) > 6 else ():
                tkey = keys.tag_key(tag.encode(), id16)
                _touch(spans, "t", tkey)
                batch.delete(tkey)
            batch.put(ekey, _husk(raw))
            pending += 1
            if pending == _CHUNK:
                batch.write()
                batch = db.write_batch(sync=True)
                pending = 0
        if pending:
            batch.write()
        return n, examined, spans

    def _drop_snapshots(
        self, view: View, streams: set[str], spans: dict[str, tuple[bytes, bytes]]
    ) -> None:
        """An aggregate snapshot is derived from its stream's events, removed
        and redacted ones included: it goes with their data."""
        batch = self._hot.db.write_batch(sync=True)
        for stream in streams:
            skey = keys.snapshot_key(stream.encode())
            if view.hot.get_raw(skey) is not None:
                batch.delete(skey)
                _touch(spans, "s", skey)
        batch.write()

    def _compact(self, spans: dict[str, tuple[bytes, bytes]], now: bool) -> None:
        """LevelDB keeps overwritten values in its older tables until they are
        compacted: compact the namespaces that held the old records (and
        those an earlier scavenge left to close), ``now`` or at close.
        Whole namespaces, not the spans' own keys: LevelDB writes the bounds
        of a manual compaction into its LOG file, and a removed event's keys
        hold its stream name and index values."""
        hot = self._hot
        ranges = {(space.encode(), keys.prefix_end(space.encode())) for space in spans}
        ranges |= hot.compact_pending
        if not now:
            hot.compact_pending = ranges
            return
        for start, stop in sorted(ranges):
            hot.db.compact_range(start=start, stop=stop)
        hot.compact_pending = set()

    # -- the cold tier ---------------------------------------------------------

    def _scrub_cold(
        self,
        removed: SeqRanges,
        dry_run: bool,
        spans: dict[str, tuple[bytes, bytes]],
        touched: set[str],
    ) -> tuple[int, int, int]:
        """Rewrite every archive file holding a removed or redacted event
        whose record still holds data. Returns (records, files, examined)."""
        redacted = self._forget.redacted
        n = files = examined = 0
        for f in list(self._archive.tiers.files):
            targets: dict[bytes, bool] = {}  # id16 -> husk (else: redacted)
            for seq in removed.within(f.first_seq, f.last_seq):
                targets[f.reader.id_at(seq - f.first_seq)] = True
            for id16 in redacted:
                if f.first_id <= id16 <= f.last_id and id16 not in targets:
                    targets[id16] = False
            dirty = 0
            for id16 in targets:
                examined += 1
                event = f.reader.get(id16)
                if event is None:
                    continue
                # The hot copies a cleanup deleted left their bytes in LevelDB's tables.
                _touch(spans, "e", keys.event_key(event.stream.encode(), id16))
                clean = event.data is None and event.metadata is None and not event.tags
                for tag in event.tags:
                    _touch(spans, "t", keys.tag_key(tag.encode(), id16))
                if event.indexes:
                    clean = False
                    for name, value in event.indexes.items():
                        _touch(
                            spans,
                            "i",
                            keys.index_key(
                                event.stream.encode(), name.encode(), value.encode(), id16
                            ),
                        )
                if not clean:
                    dirty += 1
                    touched.add(event.stream)
            if not dirty:
                continue
            n += dirty
            files += 1
            if not dry_run:
                self._rewrite_file(f, targets)
        return n, files, examined

    def _rewrite_file(self, old: ArchiveFile, targets: dict[bytes, bool]) -> None:
        """Replace ``old`` by a copy with ``targets`` scrubbed, through the
        protocol of a merge (eventstore/tiering.py, merge_archives)."""
        number = self._tiering._take_file_number()

        def events() -> Iterator[tuple[bytes, bytes, bytes]]:
            for stream, id16, raw in old.reader.iter_all_raw():
                if id16 in targets:
                    raw = _husk(raw)
                yield stream.encode(), id16, raw

        made = write_file(self._archive.dir, number, events(), self._index_types)
        assert made is not None, "a rewritten file keeps every event (husks included)"
        committing = False
        try:
            segments.write(self._hot.db, made)
            committing = True
            self._tiering._commit_files(
                added=[made], removed=[old], watermark=self._archive.tiers.watermark
            )
        except BaseException:
            self._tiering._abandon([made], committing)
            raise
        # Past the commit point, as a merge: the old keys go, durably, then
        # the file, then its number.
        segments.delete(self._hot.db, old.number, old.first_id, old.reader)
        self._hot.db.put(keys.STRAY, self._archive.strays.value(), sync=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self._archive.dir, old.name))
        strays = segments.Strays(
            set(self._archive.strays.making),
            self._archive.strays.retired - {old.number},
        )
        self._hot.db.put(keys.STRAY, strays.value(), sync=True)
        self._archive.strays = strays


# LevelDB's CompactRange writes the memtable out whatever the range: one on a
# range that holds no key flushes it and compacts nothing.
_NOWHERE = b"\xfe\xfe"


def _flush_memtable(db: Any) -> None:
    """Put every record to be scrubbed in a table before it is rewritten.
    A memtable written out keeps every version of a key, and a table that
    holds both the old and the new version at the deepest level would never
    be compacted by compact_range again; in separate tables, the compaction
    merges them and drops the old."""
    db.compact_range(start=_NOWHERE, stop=_NOWHERE + b"\x00")


def _touch(spans: dict[str, tuple[bytes, bytes]], space: str, key: bytes) -> None:
    low, high = spans.get(space, (key, key))
    spans[space] = (min(low, key), max(high, key))


def _global_entries(view: View) -> Iterator[tuple[bytes, bytes]]:
    """(key, entry) of every hot global entry at or above the watermark, in pages."""
    hot = view.hot
    start = keys.GLOBAL + view.watermark
    stop = keys.prefix_end(keys.GLOBAL)
    while True:
        page = hot.page(start, stop, 4096)
        if not page:
            return
        yield from page
        start = page[-1][0] + b"\x00"


__all__ = ["ScavengeResult", "Scavenging"]
