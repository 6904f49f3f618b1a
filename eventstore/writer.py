"""The writer: one lock, a queue of appends in id order, group commit.

Appends are checked and keyed under the writer lock (``_assign``), queued
(``_enqueue``), and written by whichever appender heads the queue
(``_lead``): every queued append in one LevelDB write, so with ``sync=True``
many appends share one fsync. A KeyboardInterrupt may cut any step short;
``_Pending`` says how the next appender on that thread, or the next head,
finishes the work (interrupt recovery). The store holds one Writer and
calls it; the writer knows the hot tier, never the archive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from threading import get_ident
from typing import Any

import msgpack

from . import counters, keys
from .dcb import Plan
from .errors import (
    ConditionFailed,
    InvalidArgument,
    StoreClosed,
    WritesRefused,
    WrongExpectedVersion,
)
from .events import ANY, AppendResult, Event, RemovedEvent
from .hot import HotTier, storage_error
from .ids import MonotonicULIDs, UlidRange, ulid_from_int
from .prepare import (
    _BULK,
    Imported,
    _columns,
    _Prepared,
    _rows,
    _version_matches,
    _Writes,
    import_rows,
)
from .retention import Forgetting


class _Pending:
    """An append in the writer queue, in id order.

    Its ``writes`` are made under the writer lock but put into a LevelDB batch
    by the leader that writes it: plyvel releases the GIL on every put, and
    under contention each release hands the GIL to another thread, so puts
    are best made by one thread while the others wait. ``wake`` is held from
    birth and released exactly once, by a leader: when this append has been
    written, or when it is this append's turn to lead. So each appender
    wakes once (but after a leader that was cut short). An append that
    leads from birth (the queue was empty) waits for nobody and has no
    ``wake``.

    ``owner`` is the appending thread. An append whose thread is found
    outside it was abandoned (a KeyboardInterrupt cut it short before it was
    written): that thread waits for it when it next appends, and leads it
    when it heads the queue, as nobody else will; so do close() and
    compact() on that thread.
    """

    __slots__ = (
        "counts",
        "done",
        "error",
        "events",
        "first_seq",
        "last_seq",
        "leads",
        "owner",
        "streams",
        "versions",
        "wake",
        "writes",
    )

    def __init__(
        self,
        writes: _Writes,
        versions: list[tuple[bytes, int]],
        last_seq: int,
        leads: bool,
        streams: int,
    ) -> None:
        self.writes = writes
        self.versions = versions
        self.last_seq = last_seq
        self.first_seq = last_seq + 1  # set by _enqueue: its events' seqs start here
        # What its events are, for conditional appends queued behind it: the
        # prepared parts of an append, the events of an import, or None.
        self.events: Sequence[_Prepared | Event | RemovedEvent] | None = None
        self.streams = streams  # the store's stream count once this is written
        # The value of ``x counts`` once this is written, packed by _enqueue
        # under the writer lock with its reused Packer (packb costs ~1 us).
        self.counts = b""
        self.done = False
        self.leads = leads
        self.owner = get_ident()
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None
        if not leads:
            self.wake = threading.Lock()
            self.wake.acquire()


def _first_queued_match(plan: Plan, pending: _Pending, low: int) -> int | None:
    """The seq of the first event of a queued append matching ``plan`` above ``low``."""
    events = pending.events
    if events is None:  # no events (a checkpoint, a husk's rules): nothing to match
        return None
    seq = pending.first_seq
    for item in events:
        if isinstance(item, _Prepared):
            first = seq
            seq += item.n
            if seq - 1 <= low or (plan.tagged and item.tag_lists is None):
                continue
            tag_lists = item.tag_lists
            for n, g_head in enumerate(item.g_heads):
                if first + n <= low:
                    continue
                type_ = msgpack.unpackb(g_head + b"\x00", raw=False)[1]
                if plan.matches(type_, tag_lists[n] if tag_lists is not None else ()):
                    return first + n
        else:
            seq = item.seq + 1
            if (
                item.seq > low
                and not isinstance(item, RemovedEvent)
                and plan.matches(item.type, item.tags)
            ):
                return item.seq
    return None


def _release(wake: threading.Lock | None) -> None:
    """Make sure ``wake`` is released. None: it leads, and waits for nobody;
    already released: by a leader cut short, before this one."""
    if wake is not None:
        with contextlib.suppress(RuntimeError):
            wake.release()


_STALLED = 0.5  # seconds an appender waits before it checks for lost wake-ups
_VERSION_CACHE = 1 << 16  # streams whose committed version is kept in memory


class Writer:
    """The writer lock and what it guards: versions, ids, seq, the queue,
    and the committed seq that wakes subscribers. ``closed`` is set by the
    store's close(), under the lock."""

    def __init__(
        self, hot: HotTier, path: str, sync: bool, ids: MonotonicULIDs, seq: int, streams: int
    ) -> None:
        self._hot = hot
        self.path = path  # for messages
        self.sync = sync
        self._ids = ids
        self._seq = seq
        self._streams = streams  # streams with events, once the queue is written
        # The deletion rules, set by the store once it has read them.
        self.forget: Forgetting | None = None
        self.closed = False
        self._lock = threading.Lock()  # versions, ids, seq and queue order
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)  # under _lock only
        self._written = threading.Condition(self._lock)  # a queued group was written
        self._drain_waiters = 0  # threads waiting on _written, under _lock
        self._leading = False  # a thread is inside _lead, under _lock
        self._in_flight: dict[int, _Pending] = {}  # thread -> its append being written
        self._queue: list[_Pending] = []
        self._reserved: dict[bytes, int] = {}  # stream -> version of queued, unwritten appends
        # stream -> committed version, for expected-version checks without a
        # LevelDB read under the writer lock; bounded, oldest entries dropped.
        self._versions: dict[bytes, int] = {}
        self._failed: BaseException | None = None
        # Woken after every commit: live subscribers wait here, not on a timer.
        self._committed = threading.Condition(threading.Lock())
        # Its lock, taken directly by _lead: Condition.__enter__ and __exit__
        # are two Python calls per append.
        self._committed_lock = self._committed._lock  # type: ignore[attr-defined]
        self._committed_seq = seq
        # Threads in wait_for_commit, under _committed's lock: a commit
        # notifies only when there are some (notify_all costs ~1 us even then).
        self._commit_waiters = 0

    def disown(self, refuse: Any) -> None:
        """In a child after fork(): every lock and the hot tier become ``refuse``."""
        self._hot = refuse
        self._lock = self._written = self._committed = refuse

    def check_writable(self) -> None:
        """Open, and no write has failed. (The store checks the pid first.)"""
        if self.closed:
            raise StoreClosed(f"store {self.path!r} is closed")
        if self._failed is not None:
            raise WritesRefused(
                f"store {self.path!r} failed to write ({self._failed!r}) and refuses writes; "
                "reads go on. Fix the cause (free space), then close and reopen it"
            )
        if self._hot.read_only is not None:
            raise WritesRefused(f"store {self.path!r} refuses writes: {self._hot.read_only}")

    def _assign(
        self, parts: list[_Prepared]
    ) -> tuple[_Writes, list[AppendResult], list[tuple[bytes, int]], int]:
        """Check versions, assign ids and seqs, make the writes (and count the
        streams they start, the last item). Under the writer
        lock, so nothing here should release the GIL: no LevelDB calls, but for
        the version of a stream the version cache does not hold. It changes
        nothing but the id generator (ids may be skipped): the seqs and
        versions it hands out are taken by _enqueue."""
        current: dict[bytes, int] = {}
        starts = []
        started: list[bytes] = []  # streams at -1 before this append
        total = 0
        # Tombstoned and soft-deleted streams have their own rules (retention.py);
        # with none (the common case) the plain check, without a call per part.
        forget = self.forget
        if forget is not None and not forget.rules:
            forget = None
        for part in parts:
            version = current.get(part.stream_b)
            if version is None:
                version = self._current_version(part.stream_b)
                if version < 0:
                    started.append(part.stream_b)
            expected = part.expected
            if forget is not None:
                ok = forget.admit(part.stream, expected, version)
                if not (_version_matches(expected, version) if ok is None else ok):
                    raise WrongExpectedVersion(part.stream, expected, version)
            elif expected is not ANY and not _version_matches(expected, version):
                raise WrongExpectedVersion(part.stream, expected, version)
            starts.append(version)
            current[part.stream_b] = version + part.n
            total += part.n
        ids = self._ids.next_ints(total)
        seq = self._seq
        writes = _Writes()
        pack = self._packer.pack
        results = []
        start = 0
        for part, version in zip(parts, starts, strict=True):
            n = part.n
            part_ids = ids[start : start + n]
            start += n
            if n < _BULK:
                _rows(writes, part, part_ids, version, seq, pack)
            else:
                _columns(writes, part, part_ids, version, seq, pack)
            results.append(
                AppendResult(
                    part.stream, UlidRange(part_ids), version + 1, version + n, seq + 1, seq + n
                )
            )
            seq += n
        versions = list(current.items())
        for stream_b, version in versions:
            writes.add(keys.meta_key(stream_b), pack([version]))
        fresh = counters.fresh_streams(started, current) if started else 0
        return writes, results, versions, fresh

    def _assign_import(
        self,
        chunk: Sequence[Event | RemovedEvent],
        prepared: list[Imported],
        watermark: bytes,
        index_types: bool,
    ) -> tuple[_Writes, list[tuple[bytes, int]], int, int]:
        """The writes of an import batch, each event checked to extend the log
        (id above the newest, seq next, version next in its stream); the
        versions it leaves, its last seq and the streams it starts. Under the
        writer lock; like _assign it changes nothing but the id floor, and
        that only once every event passed (an import writes what it checked)."""
        writes = _Writes()
        last_id, seq = self._ids.last, self._seq
        versions: dict[bytes, int] = {}
        started: list[bytes] = []  # streams at -1 before this batch
        pack = self._packer.pack
        for event, imported in zip(chunk, prepared, strict=True):
            id16, stream_b = imported[0], imported[1]
            id_int = int.from_bytes(id16, "big")
            if id_int <= last_id or id16 < watermark:
                raise InvalidArgument(
                    f"event {event.id} is not above the store's newest id "
                    f"{ulid_from_int(last_id)}: imports only extend a store"
                )
            if event.seq != seq + 1:
                raise InvalidArgument(f"event {event.id} has seq {event.seq}, expected {seq + 1}")
            current = versions.get(stream_b)
            if current is None:
                current = self._current_version(stream_b)
                if current < 0:
                    started.append(stream_b)
            if event.version != current + 1:
                raise InvalidArgument(
                    f"event {event.id} of stream {event.stream!r} has version "
                    f"{event.version}, expected {current + 1}"
                )
            import_rows(writes, imported, event.seq, index_types, pack)
            versions[stream_b] = event.version
            last_id, seq = id_int, event.seq
        for stream_b, version in versions.items():
            writes.add(keys.meta_key(stream_b), pack([version]))
        self._ids.raise_floor(last_id)
        return writes, list(versions.items()), seq, counters.fresh_streams(started, versions)

    def check_condition(
        self, plan: Plan, after: int | None, written_first: Callable[[int | None], int | None]
    ) -> None:
        """Under the writer lock (after _ready_to_queue): raise ConditionFailed
        if an event matching ``plan`` has a seq above ``after``, written or
        queued. ``written_first(after)`` answers for the written log (the
        store's query, which reads LevelDB and the archive): it is called only
        when some written event lies above ``after``, so a decision made at
        the log's head costs no read."""
        low = -1 if after is None else after
        if low >= self._seq:  # nothing was handed out above it
            return
        queue = self._queue
        # Appends leave the queue only once written: below its head all is in
        # LevelDB (_committed_seq may lag behind that).
        on_disk = queue[0].first_seq - 1 if queue else self._seq
        if low < on_disk:
            seq = written_first(after)
            if seq is not None:
                raise ConditionFailed(after, seq)
        for pending in queue:
            if pending.last_seq <= low:
                continue
            seq = _first_queued_match(plan, pending, low)
            if seq is not None:
                raise ConditionFailed(after, seq)

    def _current_version(self, stream_b: bytes) -> int:
        version = self._reserved.get(stream_b)
        if version is None:
            version = self._versions.get(stream_b)
        if version is not None:
            return version
        try:
            raw = self._hot.db.get(keys.meta_key(stream_b), verify_checksums=True)
            return -1 if raw is None else int(msgpack.unpackb(raw)[0])
        except Exception as exc:
            mapped = storage_error(exc, f"reading the version of stream {stream_b!r}")
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    def _enqueue(
        self,
        writes: _Writes,
        versions: list[tuple[bytes, int]],
        last_seq: int,
        fresh: int,
        events: Sequence[_Prepared | Event | RemovedEvent] | None = None,
    ) -> _Pending:
        """Queue writes whose seqs end at ``last_seq``, which leave streams
        at ``versions`` and start ``fresh`` new ones. Under the writer lock."""
        # Whenever the queue is not empty its head leads; an appender that
        # finds it empty is the head, and nobody else will wake it. One that
        # finds its own thread's append at the head finds it abandoned, and
        # leads it (and whatever queued behind it) with its own.
        queue = self._queue
        me = get_ident()
        # (Its own head that is done is not abandoned: a leader cut short in
        # _written_group woke one appender of that group to lead it again.)
        leads = not queue or (queue[0].owner == me and not queue[0].done)
        pending = _Pending(writes, versions, last_seq, leads, self._streams + fresh)
        pending.counts = self._packer.pack([pending.streams, last_seq])
        pending.first_seq = self._seq + 1
        pending.events = events
        self._in_flight[me] = pending
        # The append takes its place here, and the seq and versions follow.
        # A KeyboardInterrupt lands only after a call: before the queue's
        # append nothing has changed, and after it _settle_queue finishes.
        queue.append(pending)
        self._seq = last_seq
        self._streams = pending.streams
        self._reserved.update(versions)
        return pending

    def _ready_to_queue(self) -> None:
        """Under the writer lock, before an append reads seqs and versions: the
        store is open, an append this thread abandoned (see _Pending) is
        written first (led by this thread when it heads the queue), and a
        cut-short _enqueue is settled. (The callers checked the pid before
        the lock: the syscall once per append.)"""
        if self.closed or self._failed is not None:
            self.check_writable()
        left = self._in_flight.get(get_ident())
        if left is not None and not left.done:
            self._wait_for_queue(lambda: left.done)
            self.check_writable()
        queue = self._queue
        if queue and queue[-1].last_seq > self._seq:  # _settle_queue's test, inlined
            self._settle_queue()

    def _settle_queue(self) -> None:
        """Under the writer lock, before seqs and versions are read: take those
        of a queued append whose _enqueue a KeyboardInterrupt cut short."""
        queue = self._queue
        if queue and queue[-1].last_seq > self._seq:
            self._seq = queue[-1].last_seq
            self._streams = queue[-1].streams
            self._reserved.update(queue[-1].versions)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the writer lock with no group being written: nothing reaches
        LevelDB meanwhile (appends queue up, and are written after)."""
        with self._lock:
            self._drain_waiters += 1
            try:
                while self._leading:
                    self._written.wait()
            finally:
                self._drain_waiters -= 1
            yield

    def _wait_for_queue(self, written: Callable[[], bool]) -> None:
        """Under the writer lock: wait until ``written()``, leading any append
        this thread abandoned at the head of the queue (see _Pending)."""
        me = get_ident()
        self._drain_waiters += 1
        try:
            while not written():
                head = self._queue[0]
                if head.owner == me and not head.done:
                    self._lock.release()
                    try:
                        self._lead()
                    finally:
                        self._lock.acquire()
                else:
                    self._written.wait()
        finally:
            self._drain_waiters -= 1

    def _commit(self, pending: _Pending) -> None:
        """Wait until ``pending`` is written.

        The head of the queue leads: it writes every queued append in one
        LevelDB write (one fsync with ``sync=True``) while later appenders
        queue up behind it; then it wakes each of them, and the new head to
        lead the next group.
        """
        if not pending.leads:
            self._await_turn(pending)
        if not pending.done:
            self._lead()
        self._in_flight.pop(pending.owner, None)
        if pending.error is not None:
            # DiskFull, StorageError or damage, as the failure was; an
            # interrupt of the leader stops the store as a StoreClosed.
            doing = f"append to {self.path!r} failed to write"
            mapped = storage_error(pending.error, doing)
            if mapped is None or mapped is pending.error:
                mapped = StoreClosed(f"{doing}: {pending.error!r}")
            raise mapped from pending.error

    def _await_turn(self, pending: _Pending) -> None:
        """Wait until ``pending`` is written, or it is its turn to lead.

        A leader wakes it for either. If a KeyboardInterrupt cut that leader's
        wake-ups short, the wait times out, and the appender finds its append
        written, or itself at the head with nobody leading: then it leads.
        """
        wake = pending.wake
        assert wake is not None, "only an append queued behind another waits"
        while not wake.acquire(timeout=_STALLED):
            with self._lock:
                if pending.done or (self._queue[0] is pending and not self._leading):
                    return

    def _lead(self) -> None:
        """Write the queue (its head is the caller's) as one LevelDB batch."""
        with self._lock:
            queue = self._queue
            if queue and queue[-1].last_seq > self._seq:  # _settle_queue's test, inlined
                self._settle_queue()  # this group may hold a cut-short _enqueue's append
            group = list(queue)
            self._leading = True
        failed = self._failed
        if failed is None:
            try:
                batch = self._hot.db.write_batch(sync=self.sync)
                put = batch.put
                for item in group:
                    item.writes.put_into(put)
                # The counts with the events they count (eventstore/counters.py).
                put(keys.COUNTS, group[-1].counts)
                batch.write()
            except BaseException as exc:
                # Ids, seqs and versions of the whole group were handed out;
                # continuing would leave gaps, so the store stops here.
                self._failed = failed = exc
        self._written_group(group, failed)
        if failed is None:
            with self._committed_lock:  # _committed's own lock
                # max: the next leader, woken above, may have published first.
                if group[-1].last_seq > self._committed_seq:
                    self._committed_seq = group[-1].last_seq
                if self._commit_waiters:
                    self._committed.notify_all()

    def _written_group(self, group: list[_Pending], failed: BaseException | None) -> None:
        """Mark a group written (or failed), take it off the queue, and wake its
        appenders and the next head to lead.

        A KeyboardInterrupt can cut this short anywhere, so the ``finally``
        wakes whoever must go on: all the group if it left the queue, or else
        one appender of it still not done, which leads the queue again (the
        group with it: rewriting the same keys changes nothing), never two.
        """
        n = len(group)
        with self._lock:
            left = False
            try:
                for item in group:
                    item.error = failed
                    item.done = True
                del self._queue[:n]
                left = True  # no call between these two: no interrupt either
                # Versions before reservations: cut short, a stream is still
                # found in one of them.
                versions = self._versions
                for item in group:
                    for stream_b, version in item.versions:
                        versions.pop(stream_b, None)  # re-inserted as the newest
                        versions[stream_b] = version
                        if self._reserved.get(stream_b) == version:
                            del self._reserved[stream_b]
                if len(versions) > _VERSION_CACHE:
                    for stream_b in list(islice(versions, len(versions) - _VERSION_CACHE // 2)):
                        del versions[stream_b]
            finally:
                self._leading = False  # first, and no call before it: never left stale
                if not left and all(item.done for item in group):
                    del self._queue[:n]
                    left = True
                if left:
                    if self._queue:
                        _release(self._queue[0].wake)
                    for item in group[1:]:
                        _release(item.wake)
                else:
                    for item in group[1:]:
                        if not item.done:
                            _release(item.wake)
                            break
                if self._drain_waiters:  # close() and compact() wait for the queue
                    self._written.notify_all()
