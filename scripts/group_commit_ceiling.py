"""The most that group commit can gain on this machine, from Python threads.

eventstore's target for durable appends is 16 threads >= 5x one thread. The
gain is bounded by the machine: one thread waits for every fsync, so its rate
is 1 / (fsync + work); 16 threads share fsyncs, but every append still costs
its own CPU work plus a sleep and a wake-up of its thread, under one GIL, so
their rate is at most about 1 / (work + handoff). This script measures that
bound with the store taken out: N threads each spin for ``--work-us`` of CPU
(an append's Python), then queue a batch of ``--puts`` keys; the queue's head
writes every queued batch in one fsynced LevelDB write and wakes the others
one by one, as eventstore's writer queue does.

    python scripts/group_commit_ceiling.py                   # 20 us of work, 5 puts
    python scripts/group_commit_ceiling.py --work-us 5 --puts 0
    python scripts/group_commit_ceiling.py --committer       # a writer thread instead
    python scripts/group_commit_ceiling.py --no-sync         # no fsync: the handoffs alone

It also prints the CPU the process used, in cores: at ~1.0 the GIL-bound
Python (and the kernel's thread switching) is the limit, not the fsync.

Compare its gain with ``scripts/bench.py --only durable_1,durable_16``.
"""

from __future__ import annotations

import argparse
import queue as queues
import resource
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any

from eventstore._leveldb import plyvel
from eventstore.hot import LEVELDB_OPTIONS


class Queue:
    """A leader/follower writer queue: each waiter is woken exactly once."""

    def __init__(self, db: Any, sync: bool) -> None:
        self.db = db
        self.sync = sync
        self.lock = threading.Lock()
        self.queue: list[list[Any]] = []  # [wake lock, done, keys]

    def commit(self, keys: list[bytes]) -> None:
        wake = threading.Lock()
        wake.acquire()
        item: list[Any] = [wake, False, keys]
        with self.lock:
            self.queue.append(item)
            leads = len(self.queue) == 1
        if not leads:
            wake.acquire()
            if item[1]:
                return
        with self.lock:
            group = list(self.queue)
        batch = self.db.write_batch(sync=self.sync)
        for other in group:
            for key in other[2]:
                batch.put(key, b"v" * 60)
        batch.write()
        with self.lock:
            del self.queue[: len(group)]
            for other in group:
                other[1] = True
            if self.queue:
                self.queue[0][0].release()
        for other in group[1:]:
            other[0].release()

    def close(self) -> None:
        pass


class Committer:
    """The other common design: appenders hand their batch to one writer
    thread and sleep until it has written the group they joined."""

    def __init__(self, db: Any, sync: bool) -> None:
        self.db = db
        self.sync = sync
        self.inbox: queues.SimpleQueue[tuple[threading.Lock, list[bytes]] | None]
        self.inbox = queues.SimpleQueue()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def commit(self, keys: list[bytes]) -> None:
        wake = threading.Lock()
        wake.acquire()
        self.inbox.put((wake, keys))
        wake.acquire()

    def run(self) -> None:
        while True:
            group = [self.inbox.get()]
            while not self.inbox.empty():
                group.append(self.inbox.get())
            batch = self.db.write_batch(sync=self.sync)
            for item in group:
                if item is not None:
                    for key in item[1]:
                        batch.put(key, b"v" * 60)
            batch.write()
            for item in group:
                if item is not None:
                    item[0].release()
            if None in group:
                return

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join()


def rate(
    threads: int, appends: int, work_us: float, puts: int, protocol: Any, sync: bool
) -> tuple[float, float]:
    """Appends per second, and the CPU used meanwhile in cores."""
    folder = tempfile.mkdtemp(prefix="es-ceiling-")
    db = plyvel.DB(folder, create_if_missing=True, **LEVELDB_OPTIONS)
    queue = protocol(db, sync)
    counter = iter(range(1 << 62))
    work_s = work_us / 1e6

    def worker() -> None:
        for _ in range(appends):
            end = time.perf_counter() + work_s
            while time.perf_counter() < end:
                pass
            n = next(counter)
            queue.commit([b"k%d-%d" % (n, j) for j in range(puts)])

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    used = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    queue.close()
    db.close()
    shutil.rmtree(folder, ignore_errors=True)
    cpu = after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
    return threads * appends / elapsed, cpu / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-us", type=float, default=20.0, help="CPU per append")
    parser.add_argument("--puts", type=int, default=5, help="keys per append")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--committer", action="store_true", help="a writer thread commits")
    parser.add_argument("--no-sync", action="store_true", help="no fsync")
    args = parser.parse_args()
    protocol = Committer if args.committer else Queue
    sync = not args.no_sync
    one, many, cores = [], [], []
    for _ in range(args.runs):
        one.append(rate(1, 1000, args.work_us, args.puts, protocol, sync)[0])
        appends, cpu = rate(args.threads, 300, args.work_us, args.puts, protocol, sync)
        many.append(appends)
        cores.append(cpu)
    r1, rn = statistics.median(one), statistics.median(many)
    gains = statistics.median(b / a for a, b in zip(one, many, strict=True))
    print(
        f"{protocol.__name__}, sync={sync}, work {args.work_us:g} us, {args.puts} puts per "
        f"append: 1 thread {r1:,.0f}/s, {args.threads} threads {rn:,.0f}/s "
        f"(CPU {statistics.median(cores):.2f} cores), gain {gains:.1f}x "
        f"(median of {args.runs})"
    )


if __name__ == "__main__":
    main()
