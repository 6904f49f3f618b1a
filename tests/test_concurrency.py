"""Many threads at once: optimistic concurrency, commit order, group commit."""

from __future__ import annotations

import linecache
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import StorageError, StoreClosed, WritesRefused, WrongExpectedVersion


@pytest.mark.parametrize("sync", [False, True])
def test_threads_racing_on_one_stream_lose_and_duplicate_nothing(
    tmp_path: Path, sync: bool
) -> None:
    per_thread, threads = 60, 8
    conflicts = [0]
    start = threading.Barrier(threads)
    with EventStore.open(tmp_path / "s", sync=sync) as store:

        def work(name: int) -> None:
            done = 0
            first = True
            while done < per_thread:
                version = store.stream_version("counter")
                if first:  # all threads expect the same version once: one wins
                    start.wait()
                    first = False
                try:
                    store.append(
                        "counter", [NewEvent("Inc", [name, done])], expected_version=version
                    )
                except WrongExpectedVersion:
                    conflicts[0] += 1
                    continue
                done += 1

        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        events = list(store.read_stream("counter"))
        assert [e.version for e in events] == list(range(per_thread * threads))
        assert sorted(tuple(e.data) for e in events) == sorted(
            (n, d) for n in range(threads) for d in range(per_thread)
        )
        # Each thread's own events keep their order.
        for n in range(threads):
            assert [e.data[1] for e in events if e.data[0] == n] == list(range(per_thread))
    assert conflicts[0] >= threads - 1  # the race was real


@pytest.mark.parametrize("sync", [False, True])
def test_ids_seq_and_commit_order_agree_under_many_writers(tmp_path: Path, sync: bool) -> None:
    with EventStore.open(tmp_path / "s", sync=sync) as store:
        returned: list[list[object]] = [[] for _ in range(16)]

        def work(n: int) -> None:
            for i in range(40):
                if i % 3 == 0:
                    results = store.append_many(
                        [(f"a-{n}", [NewEvent("T", i)], ANY), ("shared", [NewEvent("T", n)], ANY)]
                    )
                    for r in results:
                        returned[n].extend(r.ids)
                else:
                    returned[n].extend(store.append(f"a-{n}", [NewEvent("T", i)] * 2).ids)

        pool = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        log = list(store.read_all())
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert [e.id for e in log] == sorted(e.id for e in log)
        assert sorted(e.id for e in log) == sorted(i for ids in returned for i in ids)
        # Each thread saw its own appends commit in increasing id order.
        for ids in returned:
            assert ids == sorted(ids)
        shared = list(store.read_stream("shared"))
        assert [e.version for e in shared] == list(range(len(shared)))


CLOSE_WHILE_READING = """
import sys, threading
from eventstore import EventStore, NewEvent
from eventstore.errors import StoreClosed
store = EventStore.open(sys.argv[1])
for n in range(20):
    store.append(f"s-{n % 4}", [NewEvent("T", i) for i in range(100)])
stop = threading.Event()
errors = []
def reader(k):
    while not stop.is_set():
        try:
            for kind in range(4):
                if kind == 0: sum(1 for _ in store.read_all())
                elif kind == 1: sum(1 for _ in store.read_stream(f"s-{k % 4}", backwards=True))
                elif kind == 2: sum(1 for _ in store.read_index(f"s-{k % 4}", "type", "T"))
                else: store.get(next(store.read_all()).id)
        except StoreClosed:
            return
        except Exception as exc:
            errors.append(repr(exc)); return
threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
for t in threads: t.start()
import time; time.sleep(0.2)
store.close()
stop.set()
for t in threads: t.join()
print("errors", errors)
sys.exit(1 if errors else 0)
"""


def test_closing_while_other_threads_read_never_crashes(tmp_path: Path) -> None:
    # plyvel frees the database under a running call; the store must make
    # close() wait for reads inside LevelDB and turn later ones into StoreClosed.
    import subprocess
    import sys

    for n in range(8):
        proc = subprocess.run(
            [sys.executable, "-c", CLOSE_WHILE_READING, str(tmp_path / f"s{n}")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])


# -- group commit: white-box tests of the writer queue -------------------------------


class _HeldDB:
    """Wraps the store's LevelDB handle: each batch write first calls ``hook``."""

    def __init__(self, db: Any, hook: Callable[[], None]) -> None:
        self._db, self._hook = db, hook
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def write_batch(self, **options: Any) -> Any:
        outer, batch = self, self._db.write_batch(**options)

        class Batch:
            def __getattr__(self, name: str) -> Any:
                return getattr(batch, name)

            def write(self) -> None:
                outer.writes += 1
                outer._hook()
                batch.write()

        return Batch()


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_durable_appends_queued_behind_a_write_share_the_next_one(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s", sync=True) as store:
        first = threading.Event()

        def hold_first_write() -> None:
            if not first.is_set():
                first.set()  # hold it until 15 more appends queue behind it
                _wait_for(lambda: len(store._writer._queue) == 16)

        db = _HeldDB(store._hot.db, hold_first_write)
        store._hot.db = db
        pool = [
            threading.Thread(target=store.append, args=(f"s-{n}", [NewEvent("T", n)]))
            for n in range(16)
        ]
        pool[0].start()
        assert first.wait(10)
        for t in pool[1:]:
            t.start()
        for t in pool:
            t.join(10)
        store._hot.db = db._db
        assert db.writes == 2  # the held one, then all fifteen queued behind it at once
        log = list(store.read_all())
        assert [e.seq for e in log] == list(range(1, 17))
        assert sorted(e.data for e in log) == list(range(16))


def test_a_failed_write_stops_the_store_and_nothing_queued_behind_it_lands(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    with EventStore.open(path, sync=True) as store:
        store.append("a", [NewEvent("T", "kept")])
        armed = threading.Event()

        def fail_once_others_queue() -> None:
            if armed.is_set():
                armed.clear()
                _wait_for(lambda: len(store._writer._queue) == 3)
                raise OSError("disk full")

        store._hot.db = _HeldDB(store._hot.db, fail_once_others_queue)
        armed.set()
        errors: list[BaseException] = []

        def append(n: int) -> None:
            try:
                store.append("a", [NewEvent("T", n)])
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=append, args=(n,)) for n in range(3)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(10)
        # The failure as it was (an OSError: StorageError); later writes are refused.
        assert len(errors) == 3 and all(isinstance(e, StorageError) for e in errors)
        with pytest.raises(WritesRefused, match="failed to write"):
            store.append("a", [NewEvent("T", "later")])
        store._hot.db = store._hot.db._db
    with EventStore.open(path) as store:
        # The two appends queued behind the failed one were not written:
        # their seqs would follow a hole.
        assert [(e.seq, e.data) for e in store.read_all()] == [(1, "kept")]
        assert store.append("a", [NewEvent("T", "next")]).first_seq == 2


class _DelayedPublish(threading.Condition):
    """The store's commit condition, made to hold one named thread back just
    before it publishes its group's seq (standing in for preemption)."""

    def __init__(self, thread_name: str) -> None:
        super().__init__(threading.Lock())
        self.thread_name: str | None = thread_name

    def __enter__(self) -> bool:
        if threading.current_thread().name == self.thread_name:
            self.thread_name = None
            time.sleep(0.2)
        return super().__enter__()


def test_the_committed_seq_never_steps_back_when_leaders_publish_out_of_order(
    tmp_path: Path,
) -> None:
    # Leader L1 wakes the next leader L2 before it publishes its own seq; if L2
    # publishes first, L1 must not overwrite the higher seq with its lower one.
    with EventStore.open(tmp_path / "s") as store:
        store._writer._committed = _DelayedPublish("L1")
        first = threading.Event()

        def hold_first_write() -> None:
            if not first.is_set():
                first.set()
                _wait_for(lambda: len(store._writer._queue) == 2)

        db = _HeldDB(store._hot.db, hold_first_write)
        store._hot.db = db
        l1 = threading.Thread(target=store.append, args=("a", [NewEvent("T")]), name="L1")
        l2 = threading.Thread(target=store.append, args=("b", [NewEvent("T")]), name="L2")
        l1.start()
        assert first.wait(10)
        l2.start()
        l1.join(10)
        l2.join(10)
        store._hot.db = db._db
        assert store.last_seq == 2
        assert store.wait_for_commit(1, timeout=5) == 2


def test_close_returns_while_threads_keep_appending_durably(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s", sync=True)
    acked = [0] * 4

    def append_until_closed(n: int) -> None:
        try:
            while True:
                store.append(f"s-{n}", [NewEvent("T")])
                acked[n] += 1
        except StoreClosed:
            pass

    pool = [threading.Thread(target=append_until_closed, args=(n,), daemon=True) for n in range(4)]
    for t in pool:
        t.start()
    time.sleep(0.1)
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() waited for a queue that kept refilling"
    for t in pool:
        t.join(10)
    with EventStore.open(tmp_path / "s") as reopened:
        assert reopened.last_seq == sum(acked)  # every acknowledged append, nothing else


def test_close_does_not_wait_for_a_read_its_own_thread_abandoned(tmp_path: Path) -> None:
    # A KeyboardInterrupt between the gate's C-level register and the Python
    # around it leaves the interrupted thread's entry behind; the usual next
    # step is close() in a finally, on that same thread, which waited forever.
    store = EventStore.open(tmp_path / "s")
    store.append("s", [NewEvent("T")])
    gate = store._hot.gate
    gate.__enter__()  # a read of this thread that never left
    # From another thread, the entry is a read still inside: close() waits.
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()
    gate.__exit__()
    closer.join(10)
    assert not closer.is_alive()

    def abandon_then_close() -> None:
        again = EventStore.open(tmp_path / "s")
        again._hot.gate.__enter__()
        again.close()

    # The thread's own abandoned entry does not hold up its own close().
    worker = threading.Thread(target=abandon_then_close, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "close() waited for its own thread's abandoned read"


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_close_returns_after_reads_interrupted_by_signals(tmp_path: Path) -> None:
    # Real KeyboardInterrupts, raised by a timer in a child process (one at a
    # time, at most every 2 ms), land anywhere in its reads; close()
    # afterwards must return.
    child = subprocess.run(
        [sys.executable, "-m", "tests.interrupted_reader", str(tmp_path / "s"), "1.0"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = child.stdout.split()
    assert child.returncode == 0, child.stderr[-2000:]
    assert out[0] == "interrupted" and int(out[1]) > 100 and out[2] == "closed"


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_appends_interrupted_by_signals_leave_a_whole_store_that_closes(tmp_path: Path) -> None:
    # Real KeyboardInterrupts (one at a time, at most every 2 ms) land
    # anywhere in a child's appends.
    # An append cut short before its write must still be written by its
    # thread's next append or close() (nobody else leads it: close() used to
    # wait for it forever); one cut short inside the write stops the store.
    path = tmp_path / "s"
    child = subprocess.run(
        [sys.executable, "-m", "tests.interrupted_writer", str(path), "1.0"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines[-1] == "closed"
    acked = {int(line.split()[1]) for line in lines if line.startswith("acked")}
    with EventStore.open(path) as store:
        events = list(store.read_all())
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        per_batch: dict[int, int] = {}
        for e in events:
            per_batch[e.data["batch"]] = per_batch.get(e.data["batch"], 0) + 1
        assert set(per_batch.values()) <= {10}  # every append whole, or absent
        assert acked <= set(per_batch)
        for stream in ("s-0", "s-1", "s-2"):
            assert list(store.read_index(stream, "b", "x")) == list(store.read_stream(stream))
        store.verify()


def _hung(signum: int, frame: object) -> None:
    raise AssertionError("the append hung")


class _SlowFirstWrite:
    """The store's LevelDB, whose first batch takes a second to write."""

    def __init__(self, db: Any) -> None:
        self.db, self.first = db, True

    def write_batch(self, **options: Any) -> Any:
        batch = self.db.write_batch(**options)
        if self.first:
            self.first = False
            write = batch.write

            class Slow:
                put = batch.put

                def write(self) -> None:
                    time.sleep(1.0)
                    write()

            return Slow()
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_an_append_interrupted_while_it_waits_is_written_by_its_thread_next(
    tmp_path: Path,
) -> None:
    # Ctrl-C while the main thread's append waits behind another thread's
    # slow group commit, then the main thread appends again: the abandoned
    # append becomes the head with nobody in it, and the second append
    # waited behind it forever. Its thread now waits for it, leads it, and
    # goes on.
    store = EventStore.open(tmp_path / "s")
    store._hot.db = _SlowFirstWrite(store._hot.db)
    other = threading.Thread(target=lambda: store.append("x", [NewEvent("T")]))
    other.start()
    time.sleep(0.2)  # x is being written, slowly
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        store.append("m", [NewEvent("A")])  # queued behind x's write
    done: list[int] = []
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(20)  # a hang fails the test, where it hangs
    try:
        done.append(store.append("m", [NewEvent("B")]).last_seq)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    other.join(5)
    assert done == [3]
    assert [(e.stream, e.type, e.seq) for e in store.read_all()] == [
        ("x", "T", 1),
        ("m", "A", 2),
        ("m", "B", 3),
    ]
    store.close()


class _SlowOtherWrites:
    """The store's LevelDB, whose batches written by threads other than the
    main one take half a second; it counts the most written at once."""

    def __init__(self, db: Any) -> None:
        self.db, self.writing, self.most = db, 0, 0

    def write_batch(self, **options: Any) -> Any:
        batch, outer = self.db.write_batch(**options), self

        class Batch:
            put = batch.put

            def write(self) -> None:
                outer.writing += 1
                outer.most = max(outer.most, outer.writing)
                if threading.current_thread() is not threading.main_thread():
                    time.sleep(0.5)
                batch.write()
                outer.writing -= 1

        return Batch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _interrupt_in(function: str, when: Callable[[Any, str], bool]) -> Callable[..., Any]:
    """A tracer (sys.settrace) raising one KeyboardInterrupt in ``function``
    of eventstore's writer at the first event ``when(frame, event)`` accepts:
    a Ctrl-C landing exactly there, in this thread."""
    armed = [True]

    def local(frame: Any, event: str, arg: Any) -> Any:
        if armed[0] and when(frame, event):
            armed[0] = False
            raise KeyboardInterrupt
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if armed[0] and frame.f_code.co_name == function:
            return local(frame, event, arg)
        return None

    return tracer


def _queued(store: EventStore, n: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with store._writer._lock:
            if len(store._writer._queue) >= n:
                return
        time.sleep(0.005)
    raise AssertionError(f"fewer than {n} appends queued")


def _appender(store: EventStore, stream: str, results: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        results[stream] = store.append(stream, [NewEvent("T")]).last_seq

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("where", ["marking the group done", "waking the next head"])
def test_a_leader_interrupted_in_its_bookkeeping_leaves_one_leader_and_no_one_waiting(
    tmp_path: Path, where: str
) -> None:
    # The main thread leads a group with another thread's append behind it
    # and is interrupted in the bookkeeping after the write: between marking
    # two appends done (the group is still queued: exactly one appender of it
    # must lead it again, not also the main thread's next append), or in the
    # wake-ups (nobody leads: the next head must notice, after a while).
    store = EventStore.open(tmp_path / "s")
    db = _SlowOtherWrites(store._hot.db)
    store._hot.db = db
    results: dict[str, Any] = {}
    first = _appender(store, "w0", results)  # leads, writing slowly
    _queued(store, 1)
    if where == "marking the group done":
        lines = [0]

        def when(frame: Any, event: str) -> bool:
            if event == "line" and "item.done = True" in linecache.getline(
                frame.f_code.co_filename, frame.f_lineno
            ):
                lines[0] += 1
            return lines[0] == 2  # the main thread's append is done, the next one not

        tracer = _interrupt_in("_written_group", when)
    else:
        tracer = _interrupt_in("_release", lambda frame, event: event == "call")
    behind: list[threading.Thread] = []
    threading.Timer(
        0.3, lambda: (_queued(store, 2), behind.append(_appender(store, "w1", results)))
    ).start()
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(20)
    try:
        sys.settrace(tracer)
        try:
            store.append("m", [NewEvent("T")])  # queued behind w0, then leads with w1
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        store.append("m", [NewEvent("T")])  # while w1 leads its group again, slowly
        behind.append(_appender(store, "w2", results))
        first.join(10)
        for thread in behind:
            thread.join(10)
        assert not first.is_alive() and not any(t.is_alive() for t in behind)
        assert db.most == 1, "two threads wrote at once: two leaders"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    log = list(store.read_all())
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert sorted(e.stream for e in log) == ["m", "m", "w0", "w1", "w2"]
    assert store._writer._queue == []
    store.verify()
    store.close()
