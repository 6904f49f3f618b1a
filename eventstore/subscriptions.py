"""Subscriptions to the global log: catch up, then follow it live.

A :class:`Subscription` reads the global log (``$all``) in commit order from a
position, through both tiers, a bounded page at a time, and then waits for
new commits. It pulls from the store and holds at most one page, so a slow
subscriber never blocks appends and never holds unbounded memory.

No gaps, no duplicates (docs/guarantees.md, guarantee 8): commit order = id order =
seq order, and a commit is readable before ``wait_for_commit`` reports it.
So a reader that notes the committed seq, then reads everything after its
position, has seen every event up to that seq; waiting for a later seq and
reading again after the last event it saw can neither skip nor repeat one.

Waking: the store's ``wait_for_commit`` cannot be interrupted by anything but
a commit or the store closing, yet :meth:`Subscription.close` must wake a
consumer blocked in :meth:`Subscription.get` at once, from any thread. So one
thread per store (started on demand, gone once the store closes or no
subscription is left) waits on ``wait_for_commit`` and passes each commit on
to a condition that subscribers wait on and that ``close`` can also notify.
Nothing polls on a timer.

Persistent subscriptions store their position under a checkpoint name, as
``{"position": "<ULID>"}``; :class:`Projection` stores its state in the same
value, ``{"position": ..., "state": ...}``, one atomic write, so after a crash
the read model and its position always agree: no event is applied twice.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ulid import ULID

from .errors import InvalidArgument, StoreClosed
from .events import Event, Query, QueryItem
from .ids import to_ulid_bytes, ulid_from_bytes


class EventSource(Protocol):
    """What a subscription uses of a store: the surface :class:`EventStore`
    offers. A Protocol, so this module does not import the store (which
    imports it to offer ``subscribe``)."""

    @property
    def closed(self) -> bool: ...

    @property
    def last_seq(self) -> int: ...

    def read_all(
        self,
        after: ULID | str | bytes | None = None,
        backwards: bool = False,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        from_seq: int | None = None,
    ) -> Iterator[Event]: ...

    def query(
        self,
        query: Query | Sequence[QueryItem],
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> Iterator[Event]: ...

    def get(self, event_id: ULID | str | bytes) -> Event | None: ...

    def wait_for_commit(
        self,
        after_seq: int,
        timeout: float | None = None,
        *,
        until: Callable[[], bool] | None = None,
    ) -> int: ...

    def get_checkpoint(self, name: str) -> Any: ...

    def set_checkpoint(self, name: str, value: Any) -> None: ...


__all__ = ["DEFAULT_PAGE_SIZE", "Projection", "Subscription"]

DEFAULT_PAGE_SIZE = 256  # events read from one view of the store
MAX_PAGE_SECONDS = 1.0  # a slow consumer does not keep a view open longer

S = TypeVar("S")


class _CommitHub:
    """Passes the store's commits on to this module's waiters (one per store).

    Its thread blocks in ``store.wait_for_commit`` (woken by every commit and
    by the store closing) and notifies ``cond``; a subscriber waits on
    ``cond``, which its own ``close()`` can notify too.
    """

    def __init__(self, store: EventSource) -> None:
        self._store = weakref.ref(store)
        self.cond = threading.Condition(threading.Lock())
        self.seq = 0  # the newest commit the thread has passed on
        self.running = False
        self.subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    def wait(
        self,
        store: EventSource,
        after_seq: int,
        stop: Callable[[], bool],
        timeout: float | None,
    ) -> None:
        """Block until a commit past ``after_seq``, ``stop()``, the store closing,
        or ``timeout``. The caller re-reads the log whatever woke it."""
        with self.cond:
            if not self.running:
                if store.closed:
                    return
                self.seq = store.last_seq
                self.running = True
                threading.Thread(
                    target=self._run, args=(store, self.seq), name="eventstore-commits", daemon=True
                ).start()
            self.cond.wait_for(lambda: self.seq > after_seq or stop() or store.closed, timeout)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _run(self, store: EventSource, seq: int) -> None:
        while True:
            seq = store.wait_for_commit(seq)
            closed = store.closed
            with self.cond:
                self.seq = seq
                self.cond.notify_all()
                if closed or not self.subscriptions:
                    self.running = False
                    return


_hubs: weakref.WeakKeyDictionary[EventSource, _CommitHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _hub(store: EventSource) -> _CommitHub:
    with _hubs_lock:
        hub = _hubs.get(store)
        if hub is None:
            hub = _hubs[store] = _CommitHub(store)
        return hub


def _parse_checkpoint(name: str, value: Any) -> tuple[ULID | None, Any, bool]:
    """(position, state, has_state) from a stored checkpoint value."""
    state: Any = None
    has_state = False
    position = value
    if isinstance(value, dict) and "position" in value:
        position = value["position"]
        has_state = "state" in value
        state = value.get("state")
    if position is None:
        return None, state, has_state
    if isinstance(position, (str, bytes, ULID)):
        return ulid_from_bytes(to_ulid_bytes(position)), state, has_state
    raise InvalidArgument(f"checkpoint {name!r} holds {value!r:.80}, which is not a position")


def _seq_of_position(store: EventSource, position: ULID) -> int:
    """The seq a subscription's exclusive start position stands for: its
    event's, or else one below the first event after it, or else the last
    seq (events with ids at or below it that commit later are skipped by id)."""
    event = store.get(position)
    if event is not None:
        return event.seq
    following = next(store.read_all(after=position, limit=1), None)
    if following is not None:
        return following.seq - 1
    return store.last_seq


class Subscription:
    """The global log from a position on: first what is stored, then live.

    Iterate over it (iteration ends when it is closed), or call
    :meth:`get`. ``after`` is an exclusive position (an event id; None for
    the beginning of the log). ``types`` and ``stream_prefix`` filter as in
    :meth:`EventStore.read_all`. With ``name``, the subscription is
    persistent: it starts after the position stored under that checkpoint
    name (``after`` must then be None), and :meth:`checkpoint` stores
    progress there. ``query`` (a :class:`Query` or a list of
    :class:`QueryItem`, not with ``types`` or ``stream_prefix``) delivers
    only the events matching it, read as :meth:`EventStore.query` reads them.

    One consumer at a time reads a subscription; :meth:`close` may be called
    from any thread and wakes the consumer at once. Closing the store closes
    its subscriptions. Every event is delivered exactly once, in commit
    order, with no gaps, whatever other threads append meanwhile and
    whatever compaction runs.

    Raises:
        InvalidULID: ``after`` is not a ULID.
        InvalidName: ``name``, a type or ``stream_prefix`` is not a valid name.
        InvalidArgument: ``page_size`` below 1, both ``after`` and ``name``, or a checkpoint that
            holds no position; ``query`` with ``types`` or ``stream_prefix``.
        InvalidType: ``query`` is not a query (as :meth:`EventStore.query`).
        StoreClosed: the store is closed.
    """

    def __init__(
        self,
        store: EventSource,
        after: ULID | str | bytes | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        name: str | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        query: Query | Sequence[QueryItem] | None = None,
    ) -> None:
        if type(page_size) is not int or page_size < 1:
            raise InvalidArgument(f"page_size must be a positive int, got {page_size!r}")
        if query is not None and (types is not None or stream_prefix is not None):
            raise InvalidArgument("give a subscription a query, or types and stream_prefix")
        self._query = query
        self._store = store
        self._types = None if types is None else [types] if isinstance(types, str) else list(types)
        self._stream_prefix = stream_prefix
        self._page_size = page_size
        self.name = name
        self.resumed_state: Any = None
        self.resumed_with_state = False
        if name is not None:
            if after is not None:
                raise InvalidArgument(
                    f"subscription {name!r} resumes from its checkpoint: "
                    "give name or after, not both"
                )
            after, self.resumed_state, self.resumed_with_state = _parse_checkpoint(
                name, store.get_checkpoint(name)
            )
        # Validates after, types and stream_prefix now, not at the first read.
        store.read_all(after=after, limit=0, types=self._types, stream_prefix=stream_prefix)
        self._start: ULID | None = None if after is None else ulid_from_bytes(to_ulid_bytes(after))
        # With a query, pages are read by seq: the seq the start position stands for.
        self._query_floor: int | None = None
        if query is not None:
            store.query(query, limit=0)
            if self._start is not None:
                self._query_floor = _seq_of_position(store, self._start)
        self._next_seq: int | None = None  # read from this seq, not after the position
        self._scanned = 0  # every event up to this seq has been read
        # The page being read: an iterator over a view (lazily, so the events a
        # consumer has had can be freed at once), the events it may still
        # give, when it was opened, and the committed seq before it was.
        self._page: Iterator[Event] | None = None
        self._left = 0
        self._opened = 0.0
        self._seen = 0
        self._last: Event | None = None  # the last event read
        self._closed = False
        self._consumer = threading.Lock()
        self._hub = _hub(store)
        with self._hub.cond:
            self._hub.subscriptions.add(self)

    # -- reading ---------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None once the subscription is closed, or when
        ``timeout`` seconds pass with nothing new (``timeout=0``: never block).

        Raises:
            StoreClosed: the store failed under the subscription (closing the store just ends it).
        """
        with self._consumer:
            return self._next(timeout)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        with self._consumer:
            event = self._next(None)
        if event is None:
            raise StopIteration
        return event

    def _next(self, timeout: float | None) -> Event | None:
        deadline: float | None = None
        while not self._closed:
            if self._store.closed:  # reads run ahead in chunks: stop delivering at once
                self._close()
                break
            page = self._page
            if page is None:
                self._open_page()
                continue
            try:
                event = next(page, None)
            except Exception:
                if not self._store.closed:
                    raise
                self._close()  # the store closed under the read
                break
            if event is not None:
                start = self._start
                if self._last is None and start is not None and event.id <= start:
                    # Read by seq after a page found nothing past a position
                    # above every event then stored: later events may have
                    # ids at or below it, and they are not after it.
                    continue
                left = self._left = self._left - 1
                self._last = event
                if not left or (
                    not left & 15 and time.monotonic() - self._opened > MAX_PAGE_SECONDS
                ):
                    self._end_page(False)
                return event
            self._end_page(True)
            # The page's view may be older than the latest commits: read again
            # before waiting, if any came in since it was opened.
            if self._committed() > self._scanned:
                continue
            if deadline is None and timeout is not None:
                deadline = time.monotonic() + max(timeout, 0.0)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._hub.wait(self._store, self._scanned, self._is_closed, remaining)
        return None

    def _is_closed(self) -> bool:
        return self._closed

    def _committed(self) -> int:
        try:
            return self._store.last_seq
        except StoreClosed:
            if not self._store.closed:
                raise  # the store failed: say so
            self._close()
            return -1

    def _open_page(self) -> None:
        store = self._store
        try:
            self._seen = store.last_seq  # before the view: it holds all up to here
            if self._query is not None:
                if self._next_seq is not None:
                    floor: int | None = self._next_seq - 1
                else:
                    floor = self._query_floor if self._last is None else self._last.seq
                events = store.query(self._query, after=floor)
            elif self._next_seq is not None:
                events = store.read_all(
                    from_seq=self._next_seq, types=self._types, stream_prefix=self._stream_prefix
                )
            else:
                after = None if self._last is None else self._last.id
                if after is None:
                    after = self._start
                events = store.read_all(
                    after=after, types=self._types, stream_prefix=self._stream_prefix
                )
        except StoreClosed:
            if not store.closed:
                raise  # the store failed: say so
            self._close()
            return
        self._page = events
        self._left = self._page_size
        self._opened = time.monotonic()

    def _end_page(self, exhausted: bool) -> None:
        """Drop the page's view: it ran out (``exhausted``), or was cut short by
        the page size or its age, and the next page starts where it stopped."""
        self._page = None
        read = self._page_size - self._left
        if read:
            assert self._last is not None
            self._next_seq = None
            self._scanned = max(self._scanned, self._last.seq)
        if exhausted and self._seen > self._scanned:
            # Every event committed before the page was opened has been read,
            # the rest filtered out: they need not be read again.
            self._scanned = self._seen
            self._next_seq = self._seen + 1

    # -- progress ----------------------------------------------------------------

    @property
    def position(self) -> ULID | None:
        """Id of the last event delivered (or the starting position)."""
        return self._start if self._last is None else self._last.id

    def checkpoint(self, event: Event | None = None, *, state: Any = ...) -> None:
        """Store the position of ``event`` (default: the last delivered) under
        this subscription's name, with ``state`` beside it if given, in one
        atomic write. A later ``Subscription(store, name=...)`` starts after it.

        Raises:
            InvalidArgument: the subscription has no ``name``.
            UnserialisableData: ``state`` holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        if self.name is None:
            raise InvalidArgument("checkpoint() needs a subscription opened with name=...")
        position = self.position if event is None else event.id
        value: dict[str, Any] = {"position": None if position is None else str(position)}
        if state is not ...:
            value["state"] = state
        self._store.set_checkpoint(self.name, value)

    # -- ending --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self._store.closed

    def close(self) -> None:
        """End the subscription; a consumer waiting in :meth:`get` or a ``for``
        loop returns at once. Safe from any thread, and more than once."""
        self._close()
        self._hub.wake()

    def _close(self) -> None:
        self._closed = True
        with self._hub.cond:
            self._hub.subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "closed" if self.closed else f"after {self.position}"
        label = f" {self.name!r}" if self.name is not None else ""
        return f"<Subscription{label} {where}>"


class Projection(Generic[S]):
    """A read model folded from the global log, kept by a persistent subscription.

    ``apply(state, event)`` returns the new state (it may change ``state`` in
    place and return it). ``initial()`` makes the state of an empty log. The
    state and the position of the last event applied to it are saved
    together, in one atomic write under checkpoint ``name``, every
    ``save_every`` events and whenever the projection catches up; on restart
    both are loaded together, so however the process dies, no event is ever
    applied twice and none is missed. The state must be msgpack-serialisable
    (dicts, lists, str, int, float, bytes, bool, None: tuples come back as lists).

    If ``apply`` raises, the projection closes without saving that event;
    a new ``Projection`` with the same name resumes from the last save.

    Raises:
        InvalidName: ``name``, a type or ``stream_prefix`` is not a valid name.
        InvalidArgument: ``save_every`` or ``page_size`` below 1, or a checkpoint ``name`` that
            holds no position.
        StoreClosed: the store is closed.
    """

    def __init__(
        self,
        store: EventSource,
        name: str,
        apply: Callable[[S, Event], S],
        initial: Callable[[], S],
        *,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        save_every: int = 100,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if type(save_every) is not int or save_every < 1:
            raise InvalidArgument(f"save_every must be a positive int, got {save_every!r}")
        self._sub = Subscription(
            store, types=types, stream_prefix=stream_prefix, name=name, page_size=page_size
        )
        self._store = store
        self.name = name
        self._apply = apply
        self._save_every = save_every
        self.state: S = self._sub.resumed_state if self._sub.resumed_with_state else initial()
        self._unsaved = 0
        self._last: Event | None = None

    @property
    def position(self) -> ULID | None:
        """Id of the last event applied to :attr:`state`."""
        return self._sub.position

    def _handle(self, event: Event) -> None:
        try:
            self.state = self._apply(self.state, event)
        except BaseException:
            self._unsaved = 0  # the state may be half changed: never save it
            self._sub.close()
            raise
        self._last = event
        self._unsaved += 1
        if self._unsaved >= self._save_every:
            self.save()

    def save(self) -> None:
        """Write the state and its position now (a no-op when nothing is new).

        Raises:
            UnserialisableData: the state holds a value msgpack cannot carry.
            StoreClosed: the store is closed.
        """
        if self._unsaved and self._last is not None:
            self._sub.checkpoint(self._last, state=self.state)
            self._unsaved = 0

    def catch_up(self) -> int:
        """Apply every event committed so far, save, and return how many were applied.

        Raises:
            UnserialisableData: the state holds a value msgpack cannot carry.
            StoreClosed: the store is closed, or failed.
        """
        n = 0
        while (event := self._sub.get(timeout=0)) is not None:
            self._handle(event)
            n += 1
        self.save()
        return n

    def run(self) -> None:
        """Apply events as they come, saving whenever it catches up, until
        :meth:`close` (from another thread) or the store closes.

        Raises:
            UnserialisableData: the state holds a value msgpack cannot carry.
            StoreClosed: the store failed (closing it just ends the run).
        """
        while True:
            event = self._sub.get(timeout=0)
            if event is None:
                if not self._sub.closed:
                    self.save()
                event = self._sub.get()
                if event is None:  # closed
                    if not self._store.closed:
                        self.save()
                    return
            self._handle(event)

    @property
    def closed(self) -> bool:
        return self._sub.closed

    def close(self) -> None:
        """Stop :meth:`run` (from any thread). Saving is up to the caller of
        :meth:`run`, which saves before it returns."""
        self._sub.close()

    def __enter__(self) -> Projection[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
