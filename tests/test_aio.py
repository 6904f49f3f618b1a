"""eventstore.aio: the same answers as the blocking store, group commit kept, and
an event loop that never stalls while a subscription waits or an append syncs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eventstore import NO_STREAM, EventStore, NewEvent, WrongExpectedVersion
from eventstore.aio import AsyncEventStore
from eventstore.errors import InvalidArgument, StoreClosed

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def count_group_writes(store: EventStore) -> list[int]:
    """Counts the store's group writes (each one LevelDB write: one fsync when
    durable), by wrapping the leader's write."""
    calls = [0]
    lead: Callable[[], None] = store._writer._lead

    def counted() -> None:
        calls[0] += 1
        lead()

    store._writer._lead = counted  # type: ignore[method-assign]
    return calls


class Ticker:
    """A task that wakes every millisecond and records the longest time the loop
    went without waking it, beyond the millisecond asked for: how long the
    loop stalled (counted to the end too, should it never wake again)."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - self._last - 0.001)
            self._last = now
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._last = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.max_gap = max(self.max_gap, time.perf_counter() - self._last - 0.001)


def test_reads_and_writes_answer_as_the_blocking_store(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEventStore.open(tmp_path / "s", page_size=7) as astore:
            store = astore.store
            r = await astore.append(
                "order-1",
                [NewEvent("Placed", {"n": i}, indexes={"k": str(i % 2)}) for i in range(20)],
                expected_version=NO_STREAM,
            )
            assert r.first_version == 0 and r.last_version == 19
            with pytest.raises(WrongExpectedVersion):
                await astore.append("order-1", [NewEvent("X")], expected_version=NO_STREAM)
            results = await astore.append_many(
                [
                    ("order-2", [NewEvent("Paid")] * 3, NO_STREAM),
                    ("order-1", [NewEvent("Paid")], 19),
                ]
            )
            assert [x.stream for x in results] == ["order-2", "order-1"]
            assert await astore.stream_version("order-1") == 20

            async def same(make: Callable[[Any], Any]) -> None:
                got = [e async for e in make(astore)]
                assert got == list(make(store)) and got

            await same(lambda s: s.read_stream("order-1"))
            await same(lambda s: s.read_stream("order-1", 5, True, 4))
            await same(lambda s: s.read_index("order-1", "k", "1"))
            await same(lambda s: s.read_index("order-1", "type", "Paid", True))
            await same(lambda s: s.read_all())
            await same(lambda s: s.read_all(backwards=True, limit=9, types=["Paid"]))
            await same(lambda s: s.read_all(stream_prefix="order-2", from_seq=2))
            assert await astore.get(r.ids[3]) == store.get(r.ids[3])
            await astore.compact(before=r.ids[10])
            await same(lambda s: s.read_stream("order-1"))
            await same(lambda s: s.read_all(after=r.ids[2]))
            await astore.save_snapshot("order-1", 3, {"s": 1})
            snap = await astore.load_snapshot("order-1")
            assert snap is not None and snap.state == {"s": 1}
            await astore.set_checkpoint("c", 5)
            assert await astore.get_checkpoint("c") == 5
            with pytest.raises(InvalidArgument):  # bad arguments surface at the first step
                [e async for e in astore.read_stream("order-1", limit=-1)]
        assert astore.closed and store.closed
        await astore.close()  # twice is fine
        with pytest.raises(StoreClosed):
            await astore.append("order-1", [NewEvent("Late")])

    run(main())


def test_a_subscription_catches_up_then_follows_live_appends(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEventStore.open(tmp_path / "s", page_size=4) as astore:
            await astore.append("a", [NewEvent("Old", i) for i in range(10)])
            got: list[int] = []
            async with astore.subscribe(types=["Old", "New"]) as sub:

                def writer() -> None:  # another thread appends while the loop waits
                    for i in range(10, 30):
                        astore.store.append("b" if i % 2 else "a", [NewEvent("New", i)])
                        astore.store.append("c", [NewEvent("Skipped", i)])
                        time.sleep(0.002)

                thread = threading.Thread(target=writer)
                thread.start()
                async for event in sub:
                    got.append(event.data)
                    if len(got) == 30:
                        break
                thread.join()
                assert got == list(range(30))  # every event once, in order
                assert sub.position == list(astore.store.read_all(types=["New"]))[-1].id
            assert await sub.get() is None  # closed: iteration ends
            live = astore.subscribe(after=astore.store.read_all(backwards=True).__next__().id)
            assert await live.get(timeout=0.01) is None
        assert await asyncio.wait_for(live.get(), 5) is None  # the store closed under it
        assert live._closed

    run(main())


def test_cancelling_a_wait_on_a_subscription_loses_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEventStore.open(tmp_path / "s") as astore:
            sub = astore.subscribe()
            waiter = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await astore.append("a", [NewEvent("First")])  # fetched by the cancelled wait
            await astore.append("a", [NewEvent("Second")])
            first = await asyncio.wait_for(sub.get(), 5)
            second = await asyncio.wait_for(sub.get(), 5)
            assert first is not None and second is not None
            assert (first.type, second.type) == ("First", "Second")
            assert await sub.get(timeout=0.05) is None  # nothing more, after a timeout
            # A wait cut short by a timeout is bounded by the next call's
            # timeout, and what it fetches goes to the next call.
            bounded = asyncio.ensure_future(sub.get(timeout=10))
            await asyncio.sleep(0.05)
            bounded.cancel()
            assert await sub.get(timeout=0.05) is None
            await astore.append("a", [NewEvent("Third")])
            third = await asyncio.wait_for(sub.get(), 5)
            assert third is not None and third.type == "Third"
            # close() from the loop ends a pending wait at once
            waiting = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0.05)
            sub.close()
            assert await asyncio.wait_for(waiting, 5) is None

    run(main())


def test_persistent_subscription_checkpoints_what_was_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEventStore.open(tmp_path / "s", page_size=100) as astore:
            ids = (await astore.append("a", [NewEvent("E", i) for i in range(10)])).ids
            async with astore.subscribe(name="proj") as sub:
                for _ in range(3):
                    await sub.get()
                await sub.checkpoint()  # the page read ahead is not checkpointed
            async with astore.subscribe(name="proj") as again:
                event = await again.get()
                assert event is not None and event.id == ids[3]

    run(main())


def test_the_loop_never_stalls_while_a_subscription_waits_or_appends_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 0.050  # a few ms when idle; generous for a loaded 2-core machine

    async def main() -> tuple[float, float, int]:
        async with await AsyncEventStore.open(tmp_path / "s", sync=True) as astore:
            sub = astore.subscribe()
            with Ticker() as waiting:
                pending = asyncio.ensure_future(sub.get())
                await asyncio.sleep(0.3)  # the subscription waits for a commit
                assert not pending.done()
                wake = asyncio.ensure_future(astore.append("a", [NewEvent("Wake")]))
                event = await asyncio.wait_for(pending, 5)
                await wake
                assert event is not None and event.type == "Wake"
            assert waiting.ticks > 50
            with Ticker() as syncing:  # durable appends, some at once and one by one
                for round_ in range(10):
                    await asyncio.gather(
                        *(astore.append(f"s-{i}", [NewEvent("D", round_)]) for i in range(20))
                    )
                for _ in range(50):
                    await astore.append("one", [NewEvent("D")])
                for _ in range(5):  # a few ms of work each: the loop goes on meanwhile
                    events = [NewEvent("Big", {"i": i, "pad": "x" * 40}) for i in range(1000)]
                    await astore.append("big", events)
            sub.close()
            return waiting.max_gap, syncing.max_gap, syncing.ticks

    wait_gap, sync_gap, ticks = run(main())
    with capsys.disabled():
        print(
            f"\n  longest loop stall: {wait_gap * 1000:.2f} ms while a subscription waited, "
            f"{sync_gap * 1000:.2f} ms during durable appends ({ticks} ticks)"
        )
    assert wait_gap < limit and sync_gap < limit


def test_concurrent_durable_appends_from_the_loop_share_fsyncs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 64

    async def from_the_loop() -> tuple[int, float]:
        async with await AsyncEventStore.open(tmp_path / "aio", sync=True) as astore:
            # A first round starts the worker threads, as in a running service.
            await asyncio.gather(*(astore.append(f"s-{i}", [NewEvent("D")]) for i in range(n)))
            writes = count_group_writes(astore.store)
            start = time.perf_counter()
            await asyncio.gather(*(astore.append(f"s-{i}", [NewEvent("D")]) for i in range(n)))
            seconds = time.perf_counter() - start
            assert astore.store.last_seq == 2 * n
            return writes[0], seconds

    def from_threads() -> tuple[int, float]:
        with EventStore.open(tmp_path / "threads", sync=True) as store:
            writes = count_group_writes(store)
            barrier = threading.Barrier(n + 1)

            def one(i: int) -> None:
                barrier.wait()
                store.append(f"s-{i}", [NewEvent("D")])

            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            barrier.wait()
            start = time.perf_counter()
            for t in threads:
                t.join()
            return writes[0], time.perf_counter() - start

    (aio_writes, aio_s), (thread_writes, thread_s) = run(from_the_loop()), from_threads()
    with capsys.disabled():
        print(
            f"\n  {n} concurrent durable appends: {aio_writes} group writes (fsyncs) from the "
            f"loop in {aio_s * 1000:.1f} ms, {thread_writes} from {n} threads in "
            f"{thread_s * 1000:.1f} ms"
        )
    assert thread_writes < n // 3  # the machine groups at all
    assert aio_writes < n // 3  # and so do awaits: several appends per fsync
