"""A persistence module for the ``eventsourcing`` library.

Set ``PERSISTENCE_MODULE=eventstore.contrib.eventsourcing`` and
``EVENTSTORE_PATH=<folder>`` and any ``eventsourcing`` application stores its
events in an :class:`~eventstore.EventStore` (LevelDB hot tier, ESDB cold
tier), with no change to the application's code.

How ``eventsourcing``'s model maps onto the store:

- An aggregate sequence is a stream. ``originator_id`` names it (``str(uuid)``
  for a UUID), ``topic`` is the event type, the serialised ``state`` is the
  event data (bytes), and the ``originator_version`` is kept in the event's
  metadata, since ``eventsourcing`` versions usually start at 1 while stream
  versions start at 0. Within a stream, originator versions must increase in
  append order: the recorder checks the new versions against the stream's last
  event and appends with that stream version as the expected version, so a
  version that is already recorded (or lower than the last one) raises
  :class:`~eventsourcing.persistence.IntegrityError` and a concurrent writer
  loses the store's optimistic-concurrency race. One ``insert_events`` call is
  one atomic ``append_many``.
- The application sequence is the global log: a notification id is the
  event's gap-free global ``seq``, a topic filter is ``read_all(types=...)``.
- A tracking position is a store checkpoint (``eventsourcing:tracking:<app>``)
  written in the same atomic batch as the events it produced.
- Snapshots (and any other aggregate recorder ``purpose`` than ``"events"``)
  go to a second store in ``<EVENTSTORE_PATH>/eventsourcing-<purpose>``, so
  they never take a place in the application sequence.
- DCB (``eventsourcing.dcb``, the factory's ``dcb_recorder()``): events go to
  one stream, :data:`DCB_STREAM`, with their type, data (bytes) and tags; a
  position is the event's global ``seq``; a read is :meth:`EventStore.query`
  and a conditional append the store's :class:`~eventstore.AppendCondition`,
  checked under the writer lock. The DCB log is the store's whole log: give
  a DCB application a store of its own.

Only one :class:`~eventstore.EventStore` may be open per folder in a process,
so the factories and recorders of one process share one open store per folder;
it closes when the last factory using it is closed (``Application.close()``)
or garbage collected.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any, Final, TypeVar
from uuid import UUID

from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
    DCBSubscription,
)
from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    InterfaceError,
    Notification,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from eventstore import AppendCondition, Event, EventStore, NewEvent, Query, QueryItem
from eventstore.errors import (
    ConditionFailed,
    EventStoreError,
    StoreClosed,
    WrongExpectedVersion,
)
from eventstore.records import check_tags

__all__ = [
    "DCB_STREAM",
    "EventStoreAggregateRecorder",
    "EventStoreApplicationRecorder",
    "EventStoreDCBReadResponse",
    "EventStoreDCBRecorder",
    "EventStoreDCBSubscription",
    "EventStoreFactory",
    "EventStoreProcessRecorder",
    "EventStoreSubscription",
    "EventStoreTrackingRecorder",
    "Factory",
]

#: Metadata key holding an event's ``originator_version``.
VERSION_KEY: Final = "originator_version"
#: Metadata key present (value ``"str"``) when the ``originator_id`` was a str, not a UUID.
ID_TYPE_KEY: Final = "originator_id_type"
#: Prefix of the store checkpoints that hold tracking positions.
TRACKING_PREFIX: Final = "eventsourcing:tracking:"
#: The stream DCB events are appended to (DCB reads go by tags and types, not streams).
DCB_STREAM: Final = "eventsourcing-dcb"
#: Metadata key holding a DCB event's tags as given, when the store's form
#: (sorted, without duplicates) differs from them.
DCB_TAGS_KEY: Final = "dcb_tags"

_PURPOSE = re.compile(r"[A-Za-z0-9_.-]+\Z")


# Each conflict means another writer appended between our read and our
# append; this many in a row means something is wrong, not busy.
_MAX_CONFLICTS = 1000


def _translate(exc: EventStoreError) -> PersistenceError:
    """The ``eventsourcing`` exception matching one raised by the store."""
    if isinstance(exc, StoreClosed):
        return InterfaceError(str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        return DataError(str(exc))
    return DatabaseError(str(exc))


# -- sharing one open store per folder ---------------------------------------


class _Handle:
    """A store opened once for the whole process, with what its users share."""

    def __init__(self, key: str, path: str, sync: bool) -> None:
        self.key = key
        self.store = EventStore.open(path, sync=sync)
        self.sync = sync
        self.leases = 0
        # Names of the applications writing events here: two different
        # applications in one store would mix their notification logs.
        self.writers: set[str] = set()
        # Recorder calls in progress. Closing waits for them: the store does
        # not guard its readers against close(), and a LevelDB iterator used
        # after close crashes the process.
        self._calls = 0
        self._closing = False
        self._idle = threading.Condition(threading.Lock())

    def __enter__(self) -> None:
        with self._idle:
            if self._closing:
                raise InterfaceError(f"store {self.store.path!r} is closed")
            self._calls += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._calls -= 1
            if not self._calls:
                self._idle.notify_all()

    def close(self) -> None:
        with self._idle:
            self._closing = True
            self._idle.wait_for(lambda: not self._calls)
        self.store.close()


_handles: dict[str, _Handle] = {}
_handles_lock = threading.Lock()


def _release(handle: _Handle) -> None:
    with _handles_lock:
        handle.leases -= 1
        if handle.leases == 0:
            if _handles.get(handle.key) is handle:
                del _handles[handle.key]
            handle.close()


class _Lease:
    """Keeps a shared store open while a factory or one of its recorders lives.

    Released explicitly by :meth:`EventStoreFactory.close` or, failing that,
    when nothing refers to it any more.
    """

    def __init__(self, path: str, sync: bool) -> None:
        key = os.path.realpath(path)
        with _handles_lock:
            handle = _handles.get(key)
            if handle is None:
                handle = _Handle(key, path, sync)
                _handles[key] = handle
            elif handle.sync != sync:
                raise InfrastructureFactoryError(
                    f"store {path!r} is already open in this process with "
                    f"sync={handle.sync}; it cannot also be used with sync={sync}"
                )
            handle.leases += 1
        self.handle = handle
        self._finalizer = weakref.finalize(self, _release, handle)

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def release(self) -> None:
        self._finalizer()  # runs at most once

    def register_writer(self, name: str) -> None:
        if not name:
            return
        with _handles_lock:
            others = self.handle.writers - {name}
            if others:
                raise InfrastructureFactoryError(
                    f"application {name!r} would share the event store at "
                    f"{self.handle.store.path!r} with application {sorted(others)[0]!r}, "
                    "mixing their notification logs; give each application its "
                    f"own folder (say, {name.upper()}_EVENTSTORE_PATH)"
                )
            self.handle.writers.add(name)


# One lock per store serialises tracking checks with tracking writes.
_tracking_locks: weakref.WeakKeyDictionary[EventStore, threading.Lock] = weakref.WeakKeyDictionary()


def _tracking_lock(store: EventStore) -> threading.Lock:
    with _handles_lock:
        lock = _tracking_locks.get(store)
        if lock is None:
            lock = _tracking_locks[store] = threading.Lock()
        return lock


# -- conversions --------------------------------------------------------------


def _stream_name(originator_id: UUID | str) -> str:
    if isinstance(originator_id, UUID):
        return str(originator_id)
    if isinstance(originator_id, str):
        return originator_id
    raise DataError(f"originator_id must be a UUID or a str, got {type(originator_id).__name__}")


def _metadata(stored: StoredEvent) -> dict[str, Any]:
    version = stored.originator_version
    if type(version) is not int:
        raise DataError(f"originator_version must be an int, got {version!r}")
    if isinstance(stored.originator_id, str):
        return {VERSION_KEY: version, ID_TYPE_KEY: "str"}
    return {VERSION_KEY: version}


def _originator_version(event: Event) -> int:
    meta = event.metadata
    if isinstance(meta, dict):
        version = meta.get(VERSION_KEY)
        if type(version) is int:
            return version
    return event.version  # an event not written through this module


@lru_cache(maxsize=16384)
def _uuid_or_str(stream: str) -> UUID | str:
    """The UUID a stream is named after (parsing one costs more than the lookup)."""
    try:
        return UUID(stream)
    except ValueError:
        return stream


def _originator_id(event: Event) -> UUID | str:
    meta = event.metadata
    if isinstance(meta, dict) and meta.get(ID_TYPE_KEY) == "str":
        return event.stream
    return _uuid_or_str(event.stream)


def _state(event: Event) -> bytes:
    data = event.data
    if isinstance(data, bytes):
        return data
    raise DataError(
        f"event {event.id} in stream {event.stream!r} holds {type(data).__name__} data, "
        "not the bytes an eventsourcing recorder writes"
    )


def _stored_event(event: Event) -> StoredEvent:
    return StoredEvent(
        originator_id=_originator_id(event),
        originator_version=_originator_version(event),
        topic=event.type,
        state=_state(event),
    )


def _notification(event: Event) -> Notification:
    return Notification(
        id=event.seq,
        originator_id=_originator_id(event),
        originator_version=_originator_version(event),
        topic=event.type,
        state=_state(event),
    )


# -- recorders ----------------------------------------------------------------


class EventStoreRecorder:
    """Base of the recorders: holds the store (and the lease keeping it open)."""

    def __init__(self, store: EventStore, *, lease: _Lease | None = None) -> None:
        if not isinstance(store, EventStore):
            raise TypeError(f"store must be an EventStore, got {type(store).__name__}")
        self.store = store
        self._lease = lease
        # ``with self._guard:`` around every use of the store keeps a shared
        # store from being closed under it.
        self._guard: AbstractContextManager[None] = nullcontext() if lease is None else lease.handle


class EventStoreAggregateRecorder(EventStoreRecorder, AggregateRecorder):
    """Aggregate sequences as streams; see the module docstring for the mapping."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            with self._guard:
                self._append(stored_events)
        return None

    def _append(
        self, stored_events: Sequence[StoredEvent], checkpoint: tuple[str, int] | None = None
    ) -> list[int]:
        """Append the events atomically (and the checkpoint with them); their seqs.

        Retries while another writer moves one of the streams between the
        check and the append: each retry checks the versions again, so a
        duplicate version ends in IntegrityError, never in a second copy.
        """
        for _ in range(_MAX_CONFLICTS):
            appends = self._plan(stored_events)
            try:
                results = self.store.append_many(appends, checkpoint=checkpoint)
            except WrongExpectedVersion:
                continue
            except EventStoreError as exc:
                raise _translate(exc) from exc
            return [seq for r in results for seq in range(r.first_seq, r.last_seq + 1)]
        raise DatabaseError(
            f"gave up inserting after {_MAX_CONFLICTS} conflicts with other writers in a row"
        )

    def _plan(self, stored_events: Sequence[StoredEvent]) -> list[tuple[str, list[NewEvent], int]]:
        """The append_many parts: runs of consecutive events of one stream, in
        the given order (so notification ids follow it), each expecting the
        stream's version as the store and the earlier parts leave it."""
        # stream -> [store version, last originator version]
        streams: dict[str, list[Any]] = {}
        parts: list[tuple[str, list[NewEvent], int]] = []
        for stored in stored_events:
            stream = _stream_name(stored.originator_id)
            state = streams.get(stream)
            if state is None:
                last = self._last_event(stream)
                state = [-1, None] if last is None else [last.version, _originator_version(last)]
                streams[stream] = state
            metadata = _metadata(stored)
            version = stored.originator_version
            if state[1] is not None and version <= state[1]:
                how = "already recorded" if version == state[1] else "older than the last one"
                raise IntegrityError(
                    f"originator {stored.originator_id!s}: version {version} is {how} "
                    f"(last recorded or inserted version is {state[1]})"
                )
            state[1] = version
            new = NewEvent(stored.topic, stored.state, metadata)
            if parts and parts[-1][0] == stream:
                parts[-1][1].append(new)
            else:
                parts.append((stream, [new], state[0]))
            state[0] += 1
        return parts

    def _last_event(self, stream: str) -> Event | None:
        try:
            return next(self.store.read_stream(stream, backwards=True, limit=1), None)
        except EventStoreError as exc:
            raise _translate(exc) from exc

    def _event_at(self, stream: str, version: int) -> Event:
        event = next(self.store.read_stream(stream, from_version=version, limit=1), None)
        if event is None or event.version != version:  # streams only grow
            raise DatabaseError(f"stream {stream!r} has no version {version}")
        return event

    def _lower_bound(self, stream: str, target: int, last: Event) -> int:
        """The first stream version whose originator version is >= ``target``
        (last.version + 1 if none). Originator versions increase along the
        stream; the first probe assumes they are dense, which finds it at once
        when they are, and a binary search takes over when they are not."""
        last_ov = _originator_version(last)
        if target > last_ov:
            return last.version + 1
        lo, hi = 0, last.version  # the answer is in [lo, hi]
        probe = min(max(last.version - (last_ov - target), lo), hi)
        while lo < hi:
            ov = _originator_version(self._event_at(stream, probe))
            if ov == target:
                return probe
            if ov < target:
                lo = probe + 1
            else:
                hi = probe
            probe = (lo + hi) // 2
        return lo

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        stream = _stream_name(originator_id)
        if limit is not None and limit <= 0:
            return []
        with self._guard:
            return self._select_events(stream, gt, lte, desc, limit)

    def _select_events(
        self, stream: str, gt: int | None, lte: int | None, desc: bool, limit: int | None
    ) -> list[StoredEvent]:
        try:
            if gt is None and lte is None:
                events = self.store.read_stream(stream, backwards=desc, limit=limit)
                return [_stored_event(e) for e in events]
            last = self._last_event(stream)
            if last is None:
                return []
            first = 0 if gt is None else self._lower_bound(stream, gt + 1, last)
            end = last.version if lte is None else self._lower_bound(stream, lte + 1, last) - 1
            if first > end:
                return []
            count = end - first + 1
            if limit is not None:
                count = min(count, limit)
            events = self.store.read_stream(
                stream, from_version=end if desc else first, backwards=desc, limit=count
            )
            return [_stored_event(e) for e in events]
        except EventStoreError as exc:
            raise _translate(exc) from exc


class EventStoreApplicationRecorder(EventStoreAggregateRecorder, ApplicationRecorder):
    """Adds the application sequence: the store's global log, numbered by ``seq``."""

    #: Notifications fetched per read by a subscription.
    subscription_batch = 500

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        with self._guard:
            return self._append(stored_events)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        if start is None:
            start, inclusive_of_start = 1, True
        if not inclusive_of_start:
            start += 1
        start = max(start, 1)
        if limit <= 0 or (stop is not None and stop < start):
            return []
        with self._guard:
            return self._select_notifications(start, limit, stop, topics)

    def _select_notifications(
        self, start: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[Notification]:
        try:
            events = self.store.read_all(
                from_seq=start,
                types=list(topics) if topics else None,
                limit=limit if stop is None else None,
            )
            notifications = []
            for event in events:
                if stop is not None and event.seq > stop:
                    break
                notifications.append(_notification(event))
                if len(notifications) == limit:
                    break
            return notifications
        except EventStoreError as exc:
            raise _translate(exc) from exc

    def max_notification_id(self) -> int | None:
        try:
            return self.store.last_seq or None
        except EventStoreError as exc:
            raise _translate(exc) from exc

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return EventStoreSubscription(self, gt=gt, topics=topics)


class EventStoreSubscription(Subscription[EventStoreApplicationRecorder]):
    """Notifications after ``gt``: the recorded ones, then new ones as they commit.

    It reads in batches with ``select_notifications`` and, when it has seen
    every committed event, blocks in :meth:`EventStore.wait_for_commit`, which
    every commit wakes. That wait is cut into slices of ``wait_slice``
    seconds only so that a :meth:`stop` from another thread is noticed: the
    store has no way to wake a waiter except by a commit or by closing.
    """

    wait_slice = 0.1

    def __init__(
        self,
        recorder: EventStoreApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._buffer: deque[Notification] = deque()
        self._scanned = gt or 0  # every notification up to here is buffered or yielded

    def __next__(self) -> Notification:
        recorder = self._recorder
        store = recorder.store
        while True:
            if self._has_been_stopped:
                raise StopIteration
            if self._buffer:
                notification = self._buffer.popleft()
                self._last_notification_id = notification.id
                return notification
            try:
                committed = store.last_seq
                if committed <= self._scanned:
                    store.wait_for_commit(self._scanned, timeout=self.wait_slice)
                    continue
            except EventStoreError as exc:
                if self._has_been_stopped:
                    raise StopIteration from None
                raise _translate(exc) from exc
            batch = recorder.select_notifications(
                self._scanned,
                recorder.subscription_batch,
                stop=committed,
                topics=self._topics,
                inclusive_of_start=False,
            )
            full = len(batch) == recorder.subscription_batch
            self._scanned = batch[-1].id if full else committed
            self._buffer.extend(batch)


class EventStoreTrackingRecorder(EventStoreRecorder, TrackingRecorder):
    """Tracking positions as store checkpoints, one per upstream application.

    A position only moves forward: recording one at or below the current
    position raises IntegrityError (the check and the write hold a lock
    shared by every recorder of the store).
    """

    def __init__(self, store: EventStore, *, lease: _Lease | None = None) -> None:
        super().__init__(store, lease=lease)
        self._tracking_lock = _tracking_lock(store)

    @staticmethod
    def _checkpoint_name(application_name: str) -> str:
        if not isinstance(application_name, str) or not application_name:
            raise DataError(f"application name must be a non-empty str, got {application_name!r}")
        return TRACKING_PREFIX + application_name

    def _check_tracking(self, tracking: Tracking) -> str:
        """Checkpoint name for the tracking object; IntegrityError if it is not new.
        Call holding the tracking lock."""
        name = self._checkpoint_name(tracking.application_name)
        if type(tracking.notification_id) is not int:
            raise DataError(f"notification_id must be an int, got {tracking.notification_id!r}")
        current = self.max_tracking_id(tracking.application_name)
        if current is not None and tracking.notification_id <= current:
            raise IntegrityError(
                f"tracking {tracking.application_name!r} {tracking.notification_id}: "
                f"already at notification {current}"
            )
        return name

    def insert_tracking(self, tracking: Tracking) -> None:
        with self._guard, self._tracking_lock:
            name = self._check_tracking(tracking)
            try:
                self.store.set_checkpoint(name, tracking.notification_id)
            except EventStoreError as exc:
                raise _translate(exc) from exc

    def max_tracking_id(self, application_name: str) -> int | None:
        name = self._checkpoint_name(application_name)
        try:
            with self._guard:
                value = self.store.get_checkpoint(name)
        except EventStoreError as exc:
            raise _translate(exc) from exc
        return value if type(value) is int else None


class EventStoreProcessRecorder(
    EventStoreTrackingRecorder, EventStoreApplicationRecorder, ProcessRecorder
):
    """Events and the tracking position they were produced from, in one atomic write."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return super().insert_events(stored_events, **kwargs)
        with self._guard, self._tracking_lock:
            name = self._check_tracking(tracking)
            if not stored_events:
                try:
                    self.store.set_checkpoint(name, tracking.notification_id)
                except EventStoreError as exc:
                    raise _translate(exc) from exc
                return []
            return self._append(stored_events, checkpoint=(name, tracking.notification_id))


# -- DCB ------------------------------------------------------------------------


def _dcb_query(query: DCBQuery | None) -> Query:
    if query is None:
        return Query()
    if not isinstance(query, DCBQuery):
        raise DataError(f"query must be a DCBQuery, got {type(query).__name__}")
    return Query(tuple(QueryItem(tuple(i.types), tuple(i.tags)) for i in query.items))


def _dcb_new_event(event: DCBEvent) -> NewEvent:
    if not isinstance(event, DCBEvent):
        raise DataError(f"events must be DCBEvents, got {type(event).__name__}")
    if not isinstance(event.data, bytes):
        raise DataError(f"DCB event data must be bytes, got {type(event.data).__name__}")
    tags = list(event.tags)
    try:
        stored = check_tags(tags)
    except EventStoreError as exc:
        raise _translate(exc) from exc
    # The store keeps tags sorted and distinct; the order given is kept
    # beside them only when it differs, so that a read gives back the list.
    metadata = None if list(stored) == tags else {DCB_TAGS_KEY: tags}
    return NewEvent(event.type, event.data, metadata, tags=stored)


def _dcb_sequenced(event: Event) -> DCBSequencedEvent:
    meta = event.metadata
    tags = meta.get(DCB_TAGS_KEY) if isinstance(meta, dict) else None
    return DCBSequencedEvent(
        event=DCBEvent(
            type=event.type,
            data=_state(event),
            tags=list(tags) if isinstance(tags, list) else list(event.tags),
        ),
        position=event.seq,
    )


class EventStoreDCBReadResponse(DCBReadResponse):
    """The events a read found, and ``head``: the position a decision made on
    them appends after (the store's last seq for an unlimited read, else the
    last event returned)."""

    def __init__(self, events: list[DCBSequencedEvent], head: int | None) -> None:
        self._events = iter(events)
        self._head = head

    @property
    def head(self) -> int | None:
        return self._head

    def __next__(self) -> DCBSequencedEvent:
        return next(self._events)


class EventStoreDCBRecorder(EventStoreRecorder, DCBRecorder):
    """Dynamic consistency boundaries on the store: DCB events in
    :data:`DCB_STREAM`, positions are global seqs, reads are tag and type
    queries over the whole log (the hot tier's tag index and the archive
    files' tag chunks), and a conditional append is checked by the store under
    its writer lock, so two decisions on overlapping boundaries never both
    land."""

    #: Events fetched per read by a subscription.
    subscription_batch = 500

    def read(
        self,
        query: DCBQuery | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
    ) -> DCBReadResponse:
        if limit is not None and limit <= 0:
            return EventStoreDCBReadResponse([], None)
        q = _dcb_query(query)
        with self._guard:
            try:
                # Taken before the query: every event at or below it is in
                # the query's view, so a decision may append after it.
                last = None if limit is not None else self.store.last_seq
                events = [_dcb_sequenced(e) for e in self.store.query(q, after=after, limit=limit)]
            except EventStoreError as exc:
                raise _translate(exc) from exc
        if limit is not None:
            head = events[-1].position if events else None
        else:
            head = max(last or 0, events[-1].position if events else 0) or None
        return EventStoreDCBReadResponse(events, head)

    def append(
        self, events: Sequence[DCBEvent], condition: DCBAppendCondition | None = None
    ) -> int:
        if not events:
            raise ProgrammingError("a DCB append needs at least one event")
        new = [_dcb_new_event(e) for e in events]
        cond = None
        if condition is not None:
            if not isinstance(condition, DCBAppendCondition):
                raise DataError(
                    f"condition must be a DCBAppendCondition, got {type(condition).__name__}"
                )
            cond = AppendCondition(_dcb_query(condition.fail_if_events_match), condition.after)
        with self._guard:
            try:
                result = self.store.append(DCB_STREAM, new, condition=cond)
            except ConditionFailed as exc:
                raise IntegrityError(str(exc)) from exc
            except EventStoreError as exc:
                raise _translate(exc) from exc
        return result.last_seq

    def subscribe(
        self, query: DCBQuery | None = None, *, after: int | None = None
    ) -> EventStoreDCBSubscription:
        return EventStoreDCBSubscription(self, query=query, after=after)


class EventStoreDCBSubscription(DCBSubscription[EventStoreDCBRecorder]):
    """The events matching a query after a position: the recorded ones, then
    new ones as they commit (a batch read, then :meth:`EventStore.wait_for_commit`,
    in slices of ``wait_slice`` seconds so that :meth:`stop` is noticed)."""

    wait_slice = 0.1

    def __init__(
        self,
        recorder: EventStoreDCBRecorder,
        query: DCBQuery | None = None,
        after: int | None = None,
    ) -> None:
        super().__init__(recorder=recorder, query=query, after=after)
        _dcb_query(query)  # a bad query fails here, not in the first next()
        self._buffer: deque[DCBSequencedEvent] = deque()
        self._scanned = after or 0  # every matching event up to here is buffered or yielded

    def __next__(self) -> DCBSequencedEvent:
        recorder = self._recorder
        store = recorder.store
        while True:
            if self._has_been_stopped:
                raise StopIteration
            if self._buffer:
                event = self._buffer.popleft()
                self._last_position = event.position
                return event
            try:
                committed = store.last_seq
                if committed <= self._scanned:
                    store.wait_for_commit(self._scanned, timeout=self.wait_slice)
                    continue
            except EventStoreError as exc:
                if self._has_been_stopped:
                    raise StopIteration from None
                raise _translate(exc) from exc
            batch = list(
                recorder.read(self._query, after=self._scanned, limit=recorder.subscription_batch)
            )
            full = len(batch) == recorder.subscription_batch
            # A short batch saw everything committed before the read began.
            last = batch[-1].position if batch else 0
            self._scanned = last if full else max(committed, last)
            self._buffer.extend(batch)


# -- the factory ----------------------------------------------------------------

_R = TypeVar("_R", bound=EventStoreRecorder)


class EventStoreFactory(
    InfrastructureFactory[EventStoreTrackingRecorder],
    DCBInfrastructureFactory[EventStoreTrackingRecorder],
):
    """Infrastructure factory for ``PERSISTENCE_MODULE=eventstore.contrib.eventsourcing``.

    Environment (each may be prefixed with the application's name, like
    ``BANKACCOUNTS_EVENTSTORE_PATH``, as ``eventsourcing`` does for its own keys):

    - ``EVENTSTORE_PATH`` (required): the store's folder, created if missing.
    - ``EVENTSTORE_SYNC`` (default ``n``): ``y`` makes every commit durable
      before it returns (``EventStore.open(path, sync=True)``).
    """

    EVENTSTORE_PATH = "EVENTSTORE_PATH"
    EVENTSTORE_SYNC = "EVENTSTORE_SYNC"

    aggregate_recorder_class: type[EventStoreAggregateRecorder] = EventStoreAggregateRecorder
    application_recorder_class: type[EventStoreApplicationRecorder] = EventStoreApplicationRecorder
    tracking_recorder_class: type[EventStoreTrackingRecorder] = EventStoreTrackingRecorder
    process_recorder_class: type[EventStoreProcessRecorder] = EventStoreProcessRecorder
    dcb_recorder_class: type[EventStoreDCBRecorder] = EventStoreDCBRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        path = self.env.get(self.EVENTSTORE_PATH)
        if not path:
            keys = ", ".join(self.env.create_keys(self.EVENTSTORE_PATH))
            raise OSError(f"event store folder not found in environment with keys: {keys}")
        self.path = path
        self.sync = bool(strtobool(self.env.get(self.EVENTSTORE_SYNC, "n") or "n"))
        self._lease = _Lease(path, self.sync)
        self._purpose_leases: dict[str, _Lease] = {}

    @property
    def store(self) -> EventStore:
        """The application's store (its events; not its snapshots)."""
        return self._lease.handle.store

    def _lease_for(self, purpose: str) -> _Lease:
        if self._lease.released:
            raise InterfaceError(f"factory for {self.path!r} is closed")
        if purpose == "events":
            return self._lease
        lease = self._purpose_leases.get(purpose)
        if lease is None:
            if not _PURPOSE.match(purpose):
                raise ValueError(f"recorder purpose must match {_PURPOSE.pattern}, got {purpose!r}")
            lease = _Lease(os.path.join(self.path, f"eventsourcing-{purpose}"), self.sync)
            self._purpose_leases[purpose] = lease
        return lease

    def _construct(self, cls: type[_R], purpose: str = "events", *, writes: bool) -> _R:
        lease = self._lease_for(purpose)
        if writes and purpose == "events":
            lease.register_writer(self.env.name)
        return cls(lease.handle.store, lease=lease)

    def _resolve(self, key: str, default: type[_R]) -> type[_R]:
        topic = self.env.get(key)
        if not topic:
            return default
        cls = resolve_topic(topic)
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise InfrastructureFactoryError(f"{key}={topic!r} is not a subclass of {default}")
        return cls

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self._construct(self.aggregate_recorder_class, purpose, writes=True)

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._resolve(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        return self._construct(cls, writes=True)

    def tracking_recorder(
        self, tracking_recorder_class: type[EventStoreTrackingRecorder] | None = None
    ) -> EventStoreTrackingRecorder:
        cls = tracking_recorder_class or self._resolve(
            self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class
        )
        if not issubclass(cls, EventStoreTrackingRecorder):
            raise InfrastructureFactoryError(f"{cls} is not an EventStoreTrackingRecorder")
        return self._construct(cls, writes=False)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._resolve(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        return self._construct(cls, writes=True)

    def dcb_recorder(self) -> EventStoreDCBRecorder:
        """The DCB recorder, on the application's store (see :class:`EventStoreDCBRecorder`)."""
        return self._construct(self.dcb_recorder_class, writes=True)

    def close(self) -> None:
        """Let go of the stores: each closes once no factory or recorder uses it."""
        for lease in self._purpose_leases.values():
            lease.release()
        self._lease.release()


Factory = EventStoreFactory
