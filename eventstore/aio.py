"""An asyncio face of :class:`~eventstore.EventStore` that never blocks the event loop.

::

    from eventstore.aio import AsyncEventStore

    async with await AsyncEventStore.open("data/shop", sync=True) as store:
        await store.append("order-42", [NewEvent("OrderPlaced", {"total": 42})])
        async for event in store.read_stream("order-42"):
            ...
        async with store.subscribe() as sub:
            async for event in sub:      # catch-up, then live
                ...

Every call runs the blocking store in worker threads (a pool of its own, 32
threads by default), so the loop goes on while LevelDB reads, fsyncs or a
subscription waits for the next commit. Concurrent awaits of durable appends
run in different threads and share fsyncs exactly as threads do (group
commit). Reads come in pages from a thread, so an ``async for`` costs one
thread hop per page, not per event.

Cancelling an ``await store.append(...)`` stops the wait, not the append:
it may still land (check with ``stream_version``, or make appends
idempotent with an expected version). Cancelling a wait on a subscription
loses nothing: the next ``__anext__`` gets the event that wait was for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, ParamSpec, TypeVar

from ulid import ULID

from .errors import InvalidArgument, StoreClosed
from .events import (
    ANY,
    AppendCondition,
    AppendResult,
    Event,
    Expected,
    NewEvent,
    Query,
    QueryItem,
    Snapshot,
)
from .store import EventStore
from .subscriptions import Subscription
from .tiering import DEFAULT_FILE_EVENTS, CompactResult

__all__ = ["AsyncEventStore", "AsyncSubscription"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_WORKERS = 32  # concurrent blocking calls; durable appends group up to this many
DEFAULT_PAGE = 512  # events a read fetches per trip to a worker thread


def _page(it: Iterator[Event], n: int) -> list[Event]:
    return list(islice(it, n))


def _materialised(types: Iterable[str] | None) -> Iterable[str] | None:
    """A generator of types read here, not later in a thread (a str as it is:
    the store says what it makes of one)."""
    return types if types is None or isinstance(types, (str, list, tuple)) else list(types)


class AsyncEventStore:
    """Wraps an :class:`EventStore` (which it closes in :meth:`close`)."""

    def __init__(
        self,
        store: EventStore,
        *,
        max_workers: int = DEFAULT_WORKERS,
        page_size: int = DEFAULT_PAGE,
    ) -> None:
        if not isinstance(store, EventStore):
            raise InvalidArgument(f"AsyncEventStore wraps an EventStore, got {store!r}")
        for name, value in (("max_workers", max_workers), ("page_size", page_size)):
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
        self.store = store
        self.page_size = page_size
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="eventstore-aio")
        self._pool_closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_workers: int = DEFAULT_WORKERS,
        page_size: int = DEFAULT_PAGE,
        **options: Any,
    ) -> AsyncEventStore:
        """:meth:`EventStore.open` in a worker thread (``options`` are its own)."""
        store = await asyncio.to_thread(EventStore.open, path, **options)
        astore = cls(store, max_workers=max_workers, page_size=page_size)
        await asyncio.to_thread(astore._start_workers)
        return astore

    def _start_workers(self) -> None:
        """Start every worker thread now, from a thread that is not the loop's
        (the pool starts them one per call otherwise, and starting a thread
        waits for it: a stall of the loop when a burst of calls comes in)."""
        n = self._pool._max_workers
        ready = threading.Barrier(n + 1)
        for _ in range(n):  # each blocks its thread, so the next submit starts another
            self._pool.submit(ready.wait, 10.0)
        ready.wait(10.0)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(fn, *args, **kwargs)
            )
        except RuntimeError:  # the pool was shut down
            raise StoreClosed(f"store {self.store.path!r} is closed") from None
        return await future

    # -- lifecycle ------------------------------------------------------------------

    async def close(self) -> None:
        """Close the store (waiting, in a thread, for queued appends), then the
        pool. Closing twice is fine."""
        if self._pool_closed:
            return
        await self._run(self.store.close)
        self._pool_closed = True
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self.store.closed

    # -- writes -----------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: Expected = ANY,
        *,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """:meth:`EventStore.append`, awaited."""
        return await self._run(
            self.store.append, stream, events, expected_version, condition=condition
        )

    async def append_many(
        self,
        appends: Iterable[tuple[str, Sequence[NewEvent], Expected]],
        *,
        checkpoint: tuple[str, Any] | None = None,
        condition: AppendCondition | None = None,
    ) -> list[AppendResult]:
        """:meth:`EventStore.append_many`, awaited."""
        appends = list(appends)  # iterated here, not in a thread, if it is a generator
        return await self._run(
            self.store.append_many, appends, checkpoint=checkpoint, condition=condition
        )

    async def save_snapshot(self, stream: str, version: int, state: Any) -> None:
        await self._run(self.store.save_snapshot, stream, version, state)

    async def set_checkpoint(self, name: str, value: Any) -> None:
        await self._run(self.store.set_checkpoint, name, value)

    async def compact(
        self,
        before: datetime | ULID | str | None = None,
        *,
        older_than: timedelta | None = None,
        max_file_events: int = DEFAULT_FILE_EVENTS,
    ) -> CompactResult:
        """:meth:`EventStore.compact`, awaited (reads and appends go on meanwhile)."""
        return await self._run(
            self.store.compact, before, older_than=older_than, max_file_events=max_file_events
        )

    # -- reads --------------------------------------------------------------------------

    async def get(self, event_id: ULID | str | bytes) -> Event | None:
        return await self._run(self.store.get, event_id)

    async def stream_version(self, stream: str) -> int:
        return await self._run(self.store.stream_version, stream)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        return await self._run(self.store.load_snapshot, stream)

    async def get_checkpoint(self, name: str) -> Any:
        return await self._run(self.store.get_checkpoint, name)

    async def _pages(self, make: Callable[[], Iterator[Event]]) -> AsyncIterator[Event]:
        # The iterator is made in a thread too: its arguments are checked
        # (and a view taken) there, at the first step of the ``async for``.
        it = await self._run(make)
        size = self.page_size
        while True:
            page = await self._run(_page, it, size)
            for event in page:
                yield event
            if len(page) < size:
                return

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Event]:
        """:meth:`EventStore.read_stream` as an async iterator (one consistent
        view, read a page at a time in a worker thread)."""
        return self._pages(
            functools.partial(self.store.read_stream, stream, from_version, backwards, limit)
        )

    def read_index(
        self,
        stream: str,
        name: str,
        value: str,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Event]:
        """:meth:`EventStore.read_index` as an async iterator."""
        return self._pages(
            functools.partial(self.store.read_index, stream, name, value, backwards, limit)
        )

    def read_all(
        self,
        after: ULID | str | bytes | None = None,
        backwards: bool = False,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        from_seq: int | None = None,
    ) -> AsyncIterator[Event]:
        """:meth:`EventStore.read_all` as an async iterator."""
        types = _materialised(types)
        return self._pages(
            functools.partial(
                self.store.read_all,
                after,
                backwards,
                limit,
                types,
                stream_prefix,
                from_seq=from_seq,
            )
        )

    def query(
        self,
        query: Query | Sequence[QueryItem],
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[Event]:
        """:meth:`EventStore.query` as an async iterator."""
        if not isinstance(query, Query):  # iterated here, not in a thread
            query = list(query)
        return self._pages(functools.partial(self.store.query, query, after, limit, backwards))

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(
        self,
        after: ULID | str | bytes | None = None,
        types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        *,
        name: str | None = None,
        query: Query | Sequence[QueryItem] | None = None,
    ) -> AsyncSubscription:
        """:meth:`EventStore.subscribe` as an async iterator: catch up, then
        wait for new commits without blocking the loop."""
        types = _materialised(types)
        if query is not None and not isinstance(query, Query):
            query = list(query)
        return AsyncSubscription(
            self,
            functools.partial(
                self.store.subscribe, after, types, stream_prefix, name=name, query=query
            ),
        )


class AsyncSubscription:
    """A :class:`~eventstore.subscriptions.Subscription` read with ``async for``
    (or :meth:`get`). Iteration ends when it or the store is closed.

    Its waits run in a thread of its own, so any number of subscriptions can
    wait without taking the store's worker threads. One consumer at a time.
    """

    def __init__(self, astore: AsyncEventStore, make: Callable[[], Subscription]) -> None:
        self._astore = astore
        self._make = make
        self._sub: Subscription | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="eventstore-aio-sub")
        self._buffer: deque[Event] = deque()
        # The wait in progress: kept when the awaiting task is cancelled, so
        # that the events it fetches are delivered to the next __anext__.
        self._waiting: asyncio.Future[list[Event]] | None = None
        self._closed = False
        self._last: Event | None = None  # the last event delivered
        self._lock = threading.Lock()  # the subscription is made, or closed
        self._started = False

    def _start_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._thread.submit(int).result()

    def _subscription(self) -> Subscription:
        with self._lock:
            if self._sub is None:
                self._sub = self._make()
                if self._closed:  # closed while it was being made
                    self._sub.close()
            return self._sub

    def _fetch(self, timeout: float | None) -> list[Event]:
        """Up to a page of events, waiting up to ``timeout`` for the first (in
        this subscription's thread)."""
        sub = self._subscription()
        first = sub.get(timeout)
        if first is None:
            return []
        events = [first]
        for _ in range(self._astore.page_size - 1):
            event = sub.get(0)  # what is there already, without waiting
            if event is None:
                break
            events.append(event)
        return events

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None when closed, or after ``timeout`` seconds with
        nothing new (``timeout=0``: only what is stored already)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
        while True:
            if self._buffer:
                return self._deliver()
            if self._closed:
                return None
            fresh = self._waiting is None
            if fresh:
                if not self._started:
                    # Its thread is started from a worker: starting a thread
                    # waits for it to run, which the loop should not.
                    await self._astore._run(self._start_thread)
                    self._started = True
                left = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    self._waiting = loop.run_in_executor(self._thread, self._fetch, left)
                except RuntimeError:  # the thread was shut down: closed meanwhile
                    return None
            waiting = self._waiting
            assert waiting is not None
            try:
                # Shielded: a consumer cancelled (or out of time) leaves the
                # wait running, and its events are kept for the next call.
                if fresh or deadline is None:
                    events = await asyncio.shield(waiting)
                else:  # a wait an earlier call left, bounded by this call's timeout
                    left = max(deadline - loop.time(), 0.0)
                    events = await asyncio.wait_for(asyncio.shield(waiting), left)
            except TimeoutError:
                return None
            if self._waiting is waiting:
                self._waiting = None
            self._buffer.extend(events)
            if self._buffer:
                continue
            if self._sub is not None and self._sub.closed:  # the store closed: free the thread
                self.close()
                return None
            if deadline is not None and loop.time() >= deadline:
                return None
            # else: a wait an earlier call left timed out on its own; wait again

    def _deliver(self) -> Event:
        self._last = event = self._buffer.popleft()
        return event

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get(None)
        if event is None:
            raise StopAsyncIteration
        return event

    @property
    def position(self) -> ULID | None:
        """Id of the last event delivered (or None before the first)."""
        return None if self._last is None else self._last.id

    async def checkpoint(self, event: Event | None = None, *, state: Any = ...) -> None:
        """:meth:`Subscription.checkpoint` at ``event`` (default: the last one
        delivered, not the page read ahead of it)."""
        sub = await self._astore._run(self._subscription)
        event = self._last if event is None else event
        if event is None and (self._buffer or self._waiting is not None):
            # The subscription's own position may be ahead of what was delivered.
            raise InvalidArgument("checkpoint() before the first event was delivered")
        await self._astore._run(sub.checkpoint, event, state=state)

    def close(self) -> None:
        """End the subscription; a pending wait returns at once. Safe to call twice."""
        with self._lock:
            self._closed = True
            sub = self._sub
        if sub is not None:
            sub.close()
        self._thread.shutdown(wait=False)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
