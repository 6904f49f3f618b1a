"""eventstore benchmarks, side by side with the baselines a user would pick.

Every workload runs through eventstore and, in the same process and run,
through two raw plyvel floors and the ``eventsourcing`` library's SQLite
recorder:

- ``same-keys``: raw plyvel writing exactly the keys and values eventstore
  writes for the same events (captured from a scratch store beforehand, so
  each append's puts are ready-made bytes: the timed part is a WriteBatch,
  its puts and its write). What is left between it and eventstore is the
  store's own Python; its reads use the same layout (a stream's ``e`` keys,
  and ``get`` as two lookups: global entry, then record);
- ``plyvel``: the same events as one key each, msgpack-packed (what the
  engine costs with the cheapest layout a user could pick).

Contenders interleave round by round (the order rotates each round), so all
see the same machine load; each figure is the median of ``--runs`` rounds,
and each ratio the median of the per-round ratios, with their spread. Only
ratios taken side by side are stable on a shared machine.

    python scripts/bench.py                 # the full set, 5 rounds each
    python scripts/bench.py --quick         # small sizes, 1 round (a smoke test)
    python scripts/bench.py --only append_batched,replay --runs 7
    python scripts/bench.py --hot --busy 1  # the hot path, a busy loop beside it
    python scripts/bench.py --integrity --runs 7   # checksums on reads, paranoid open
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from eventstore import EventStore, NewEvent
from eventstore._leveldb import plyvel
from eventstore.hot import LEVELDB_OPTIONS
from eventstore.ids import MonotonicULIDs

try:  # the eventsourcing baseline is optional: pip install 'tiered-eventstore[bench]'
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
except ImportError:  # pragma: no cover
    SQLiteDatastore = None

TYPES = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderPaid", "OrderShipped"]


def make_events(n: int, seed: int = 7) -> list[NewEvent]:
    rnd = random.Random(seed)
    return [
        NewEvent(
            TYPES[i % len(TYPES)],
            {
                "sku": f"SKU-{rnd.randrange(10_000):05d}",
                "qty": rnd.randrange(1, 10),
                "price": round(rnd.uniform(1, 500), 2),
                "note": "gift wrap" if rnd.random() < 0.1 else "",
            },
            metadata={"user": f"u{rnd.randrange(1000)}", "ip": "10.0.0.1"},
            indexes={"customer": f"c{rnd.randrange(50)}"},
        )
        for i in range(n)
    ]


class Workspace:
    """A temporary folder per measurement, removed afterwards."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="es-bench-")

    def fresh(self, name: str) -> str:
        path = os.path.join(self.root, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- the three contenders ------------------------------------------------------


class Contender:
    name = ""

    def open(self, path: str, sync: bool = False) -> None: ...
    def append(self, stream: str, events: list[NewEvent]) -> Any: ...
    def replay(self, stream: str) -> int: ...
    def get(self, key: Any) -> Any: ...
    def close(self) -> None: ...

    def settle(self) -> None:
        """Finish background work left by the writes before reads are timed."""

    def prepare(self, ws: Workspace, events: list[NewEvent], streams: int, per_append: int) -> None:
        """Untimed work before a fill (the same-keys floor captures its writes)."""


class Store(Contender):
    name = "eventstore"

    def open(self, path: str, sync: bool = False) -> None:
        self.store = EventStore.open(path, sync=sync)
        self.streams: dict[str, list[Any]] = {}

    def append(self, stream: str, events: list[NewEvent]) -> Any:
        return self.store.append(stream, events).ids

    def replay(self, stream: str) -> int:
        n = 0
        for _ in self.store.read_stream(stream):
            n += 1
        return n

    def get(self, key: Any) -> Any:
        return self.store.get(key)

    def settle(self) -> None:
        self.store._hot.db.compact_range()

    def close(self) -> None:
        self.store.close()


class RawPlyvel(Contender):
    """One key per event (stream, NUL, 16-byte id) holding the msgpack record."""

    name = "plyvel"

    def open(self, path: str, sync: bool = False) -> None:
        # The store's own LevelDB options, so the floor is the same engine.
        self.db = plyvel.DB(path, create_if_missing=True, **LEVELDB_OPTIONS)
        self.sync = sync
        self.ids = MonotonicULIDs()
        self.versions: dict[str, int] = {}
        self.seq = 0
        self.lock = threading.Lock()

    def append(self, stream: str, events: list[NewEvent]) -> Any:
        packb = msgpack.packb
        prefix = stream.encode() + b"\x00"
        with self.lock:
            version = self.versions.get(stream, -1)
            keys = []
            batch = self.db.write_batch(sync=self.sync)
            for event in events:
                version += 1
                self.seq += 1
                key = prefix + self.ids.next_int().to_bytes(16, "big")
                batch.put(
                    key,
                    packb(
                        [version, self.seq, event.type, event.data, event.metadata, event.indexes],
                        use_bin_type=True,
                    ),
                )
                keys.append(key)
            self.versions[stream] = version
            batch.write()
        return keys

    def replay(self, stream: str) -> int:
        unpackb = msgpack.unpackb
        n = 0
        prefix = stream.encode() + b"\x00"
        for _key, value in self.db.iterator(prefix=prefix):
            unpackb(value, raw=False)
            n += 1
        return n

    def get(self, key: Any) -> Any:
        return msgpack.unpackb(self.db.get(key), raw=False)

    def settle(self) -> None:
        self.db.compact_range()

    def close(self) -> None:
        self.db.close()


class _RecordingBatch:
    """A WriteBatch that also keeps its puts, for :class:`SameKeys`."""

    def __init__(self, batch: Any, into: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]]):
        self.batch = batch
        self.into = into
        self.keys: list[bytes] = []
        self.values: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self.values.append(value)
        self.batch.put(key, value)

    def write(self) -> None:
        self.batch.write()
        # Tuples of bytes only: the garbage collector stops tracking them.
        self.into.append((tuple(self.keys), tuple(self.values)))


class _RecordingDB:
    """A store's plyvel DB whose write batches record what they write."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.batches: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = []

    def write_batch(self, **options: Any) -> _RecordingBatch:
        return _RecordingBatch(self.db.write_batch(**options), self.batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def capture_batches(
    path: str, events: list[NewEvent], streams: int, per_append: int
) -> tuple[list[tuple[tuple[bytes, ...], tuple[bytes, ...]]], list[list[bytes]]]:
    """Every LevelDB write (keys, values) an eventstore makes for this fill,
    one per append, and each append's event ids (16 bytes each)."""
    store = EventStore.open(path)
    recording = _RecordingDB(store._hot.db)
    store._hot.db = recording
    ids: list[list[bytes]] = []
    try:
        for start in range(0, len(events), per_append):
            stream = f"order-{(start // per_append) % streams:05d}"
            got = store.append(stream, events[start : start + per_append])
            ids.append([u.bytes for u in got.ids])
    finally:
        store._hot.db = recording.db
        store.close()
    if len(recording.batches) != len(ids):  # one write per append, or the floor is wrong
        raise AssertionError(f"{len(recording.batches)} writes for {len(ids)} appends")
    return recording.batches, ids


class SameKeys(Contender):
    """Raw plyvel writing exactly what eventstore writes, ready-made."""

    name = "same-keys"

    def prepare(self, ws: Workspace, events: list[NewEvent], streams: int, per_append: int) -> None:
        self.batches, self.ids = capture_batches(
            ws.fresh("same-keys-capture"), events, streams, per_append
        )
        shutil.rmtree(ws.fresh("same-keys-capture"), ignore_errors=True)
        self.next = 0

    def open(self, path: str, sync: bool = False) -> None:
        self.db = plyvel.DB(path, create_if_missing=True, **LEVELDB_OPTIONS)
        self.sync = sync

    def append(self, stream: str, events: list[NewEvent]) -> Any:
        keys, values = self.batches[self.next]
        batch = self.db.write_batch(sync=self.sync)
        deque(map(batch.put, keys, values), maxlen=0)  # the puts in C, as the store makes them
        batch.write()
        self.next += 1
        return self.ids[self.next - 1]

    def replay(self, stream: str) -> int:
        unpackb = msgpack.unpackb
        n = 0
        for _key, value in self.db.iterator(prefix=b"e" + stream.encode() + b"\x00"):
            unpackb(value, raw=False, strict_map_key=False)
            n += 1
        return n

    def get(self, key: Any) -> Any:
        get = self.db.get
        entry = get(b"g" + key)
        # [stream, type, seq]: the stream name is a fixstr after the header.
        stream_b = entry[2 : 2 + (entry[1] & 0x1F)]
        return msgpack.unpackb(get(b"e" + stream_b + b"\x00" + key), raw=False)

    def settle(self) -> None:
        self.db.compact_range()

    def close(self) -> None:
        self.db.close()


class SQLite(Contender):
    """The eventsourcing library's SQLite application recorder, default settings."""

    name = "eventsourcing-sqlite"

    def open(self, path: str, sync: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        self.datastore = SQLiteDatastore(os.path.join(path, "events.sqlite"))
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()
        self.versions: dict[str, int] = {}
        self.uuids: dict[str, uuid.UUID] = {}
        self.lock = threading.Lock()

    def append(self, stream: str, events: list[NewEvent]) -> Any:
        originator = self.uuids.setdefault(stream, uuid.uuid5(uuid.NAMESPACE_URL, stream))
        with self.lock:  # versions are the caller's job in eventsourcing
            version = self.versions.get(stream, -1)
            stored = []
            for event in events:
                version += 1
                state = msgpack.packb([event.data, event.metadata], use_bin_type=True)
                stored.append(StoredEvent(originator, version, event.type, state))
            self.versions[stream] = version
        return self.recorder.insert_events(stored)

    def replay(self, stream: str) -> int:
        n = 0
        for stored in self.recorder.select_events(self.uuids[stream]):
            msgpack.unpackb(stored.state, raw=False)
            n += 1
        return n

    def get(self, key: Any) -> Any:
        (notification,) = self.recorder.select_notifications(key, 1)
        return msgpack.unpackb(notification.state, raw=False)

    def close(self) -> None:
        self.datastore.close()


def contenders(sqlite: bool = True) -> list[type[Contender]]:
    out: list[type[Contender]] = [Store, SameKeys, RawPlyvel]
    if sqlite and SQLiteDatastore is not None:
        out.append(SQLite)
    return out


# -- workloads -------------------------------------------------------------------
# Each returns events per second for one contender. Read workloads settle the
# store first: LevelDB compacts freshly written data in background threads,
# which on a 2-core machine compete with the reads being timed and penalise
# whoever wrote more bytes; that cost belongs to the writes.


def fill(
    c: Contender, events: list[NewEvent], streams: int, per_append: int, keep: bool = False
) -> list[Any]:
    """Append ``events`` in appends of ``per_append`` across ``streams``; with
    ``keep``, return every event's key (for lookups). Only then are the keys
    kept: eventstore's become ULID objects (built when read), which the
    garbage collector walks, plyvel's are bytes, which it ignores, so keeping
    them taxes one side."""
    keys: list[Any] = []
    for start in range(0, len(events), per_append):
        stream = f"order-{(start // per_append) % streams:05d}"
        got = c.append(stream, events[start : start + per_append])
        if keep and got is not None:
            keys.extend(got)
    return keys


class Rate(NamedTuple):
    """Events per second of one measurement, by the wall clock and by the
    process's CPU time (every thread's, LevelDB's background work included).
    On a loaded machine the wall clock counts time spent waiting for a core;
    the CPU time does not, so its ratios hold when the wall clock's wander."""

    wall: float
    cpu: float


class Clock:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rate(self, n: int) -> Rate:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Rate(n / wall, n / max(cpu, 1e-9))


def w_append(per_append: int, n: int) -> Callable[[type[Contender], Workspace], Rate]:
    def run(cls: type[Contender], ws: Workspace) -> Rate:
        events = make_events(n)
        c = cls()
        c.prepare(ws, events, 100, per_append)
        c.open(ws.fresh(cls.name))
        clock = Clock()
        fill(c, events, streams=100, per_append=per_append)
        rate = clock.rate(n)
        c.close()
        return rate

    return run


def w_replay(n: int) -> Callable[[type[Contender], Workspace], Rate]:
    def run(cls: type[Contender], ws: Workspace) -> Rate:
        c = cls()
        events = make_events(n)
        c.prepare(ws, events, 50, 100)
        c.open(ws.fresh(cls.name))
        fill(c, events, streams=50, per_append=100)
        c.settle()
        clock = Clock()
        total = sum(c.replay(f"order-{s:05d}") for s in range(50))
        rate = clock.rate(n)
        c.close()
        assert total == n, (cls.name, total)
        return rate

    return run


def w_get(n: int, lookups: int) -> Callable[[type[Contender], Workspace], Rate]:
    def run(cls: type[Contender], ws: Workspace) -> Rate:
        c = cls()
        events = make_events(n)
        c.prepare(ws, events, 50, 100)
        c.open(ws.fresh(cls.name))
        keys = fill(c, events, streams=50, per_append=100, keep=True)
        c.settle()
        if cls is SQLite:
            keys = list(range(1, n + 1))
        rnd = random.Random(3)
        sample = [keys[rnd.randrange(len(keys))] for _ in range(lookups)]
        clock = Clock()
        for key in sample:
            c.get(key)
        rate = clock.rate(lookups)
        c.close()
        return rate

    return run


def w_durable(threads: int, per_thread: int) -> Callable[[type[Contender], Workspace], Rate]:
    def run(cls: type[Contender], ws: Workspace) -> Rate:
        c = cls()
        c.open(ws.fresh(cls.name), sync=True)
        events = make_events(per_thread * threads)

        def work(k: int) -> None:
            for i in range(per_thread):
                c.append(f"t-{k}", [events[k * per_thread + i]])

        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        clock = Clock()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        rate = clock.rate(threads * per_thread)
        c.close()
        return rate

    return run


# The workloads the same-keys floor runs (it replays captured writes of one
# thread; durable appends from many threads group differently every run).
SAME_KEYS_WORKLOADS = {"append_batched", "append_single", "replay", "get"}


def workloads(quick: bool) -> dict[str, tuple[str, Callable[[type[Contender], Workspace], Rate]]]:
    k = 10 if quick else 1
    return {
        "append_batched": ("appends of 100 events", w_append(100, 200_000 // k)),
        "append_single": ("appends of 1 event", w_append(1, 30_000 // k)),
        "replay": ("read_stream, 50 streams", w_replay(200_000 // k)),
        "get": ("get by id, random", w_get(100_000 // k, 30_000 // k)),
        "durable_1": ("sync=True appends, 1 thread", w_durable(1, 1000 // k)),
        "durable_16": ("sync=True appends, 16 threads", w_durable(16, 300 // k)),
    }


# -- what integrity costs: block checksums on reads, paranoid checks at open ----


def bench_integrity(ws: Workspace, quick: bool, runs: int) -> dict[str, dict[str, float]]:
    """read_stream and get with and without LevelDB's block checksums, and an
    open (which replays the log into a table) with and without paranoid
    checks. The two settings alternate run by run; each figure is a median."""
    import eventstore.hot as hot

    n = 200_000 // (10 if quick else 1)
    lookups = 30_000 // (10 if quick else 1)
    # A store in tables (reads), and one whose events are all in its log (opens).
    tabled = ws.fresh("integrity-tables")
    logged = ws.fresh("integrity-log")
    ids: list[Any] = []
    for path, settle in ((tabled, True), (logged, False)):
        with EventStore.open(path) as store:
            events = make_events(n)
            for start in range(0, n, 100):
                r = store.append(f"order-{(start // 100) % 50:05d}", events[start : start + 100])
                if settle:
                    ids.extend(r.ids)
            if settle:
                store._hot.db.compact_range()
    rnd = random.Random(3)
    sample = [ids[rnd.randrange(len(ids))] for _ in range(lookups)]
    samples: dict[str, dict[bool, list[float]]] = {
        "read_stream": {True: [], False: []},
        "read_stream_warm": {True: [], False: []},
        "get": {True: [], False: []},
        "open": {True: [], False: []},
    }
    saved = hot.VERIFY_CHECKSUMS, hot.LEVELDB_OPTIONS["paranoid_checks"]
    try:
        for run in range(runs):
            for on in (True, False) if run % 2 else (False, True):  # neither always first
                hot.VERIFY_CHECKSUMS = on
                with EventStore.open(tabled) as store:  # an empty block cache each run
                    t = time.perf_counter()
                    total = sum(
                        sum(1 for _ in store.read_stream(f"order-{s:05d}")) for s in range(50)
                    )
                    samples["read_stream"][on].append(total / (time.perf_counter() - t))
                    t = time.perf_counter()  # again: every block in LevelDB's cache now
                    for s in range(50):
                        for _ in store.read_stream(f"order-{s:05d}"):
                            pass
                    samples["read_stream_warm"][on].append(n / (time.perf_counter() - t))
                    t = time.perf_counter()
                    for id_ in sample:
                        store.get(id_)
                    samples["get"][on].append(lookups / (time.perf_counter() - t))
                assert total == n
                hot.LEVELDB_OPTIONS["paranoid_checks"] = on
                copy = ws.fresh("integrity-open")
                shutil.copytree(logged, copy)
                t = time.perf_counter()
                EventStore.open(copy).close()
                samples["open"][on].append(n / (time.perf_counter() - t))
            hot.VERIFY_CHECKSUMS, hot.LEVELDB_OPTIONS["paranoid_checks"] = saved
    finally:
        hot.VERIFY_CHECKSUMS, hot.LEVELDB_OPTIONS["paranoid_checks"] = saved
    out: dict[str, dict[str, float]] = {}
    print(f"\nintegrity checks, median of {runs} interleaved runs (ratio: with / without)")
    labels = {
        "read_stream": "read_stream, checksums (cold)",
        "read_stream_warm": "read_stream, checksums (cached)",
        "get": "get by id, checksums",
        "open": f"open, paranoid ({n:,} in log)",
    }
    for key, by in samples.items():
        with_, without = statistics.median(by[True]), statistics.median(by[False])
        out[key] = {"with": with_, "without": without, "ratio": with_ / without}
        print(f"{labels[key]:<34}{with_:>18,.0f} e/s{without:>18,.0f} e/s{with_ / without:>11.2f}")
    return out


def _ratio(samples: dict[str, list[float]], base: str) -> tuple[float, float, float] | None:
    """Median, min and max of eventstore / ``base`` taken round by round."""
    if not samples.get(base):
        return None
    ratios = [es / b for es, b in zip(samples["eventstore"], samples[base], strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _busy(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes spinning in a loop: the load of a busy shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (contenders interleaved)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument(
        "--hot",
        action="store_true",
        help="only the hot path (batched and single appends, replay, get), no SQLite or ESDB",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite baseline")
    parser.add_argument(
        "--busy", type=int, default=0, help="run this many busy-loop processes beside it"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--no-esdb", action="store_true", help="skip the ESDB file section")
    parser.add_argument(
        "--integrity",
        action="store_true",
        help="only the price of block checksums on reads and of paranoid checks at open",
    )
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    chosen = workloads(args.quick)
    if args.hot:
        chosen = {k: v for k, v in chosen.items() if k in SAME_KEYS_WORKLOADS}
        args.no_sqlite = args.no_esdb = True
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    ws = Workspace()
    busy = _busy(args.busy)
    try:
        if args.integrity:
            figures = bench_integrity(ws, args.quick, runs)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"integrity": figures}, f, indent=2)
            return
        results = run_workloads(ws, chosen, runs, not args.no_sqlite)
        if not args.no_esdb and not args.only:
            sys.path.insert(0, os.path.dirname(__file__))
            import bench_tiers

            tiers = bench_tiers.bench_tiers(ws, quick=args.quick, runs=runs)
            bench_tiers.report(tiers)
            results["tiers"] = tiers
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        ws.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def run_workloads(
    ws: Workspace,
    chosen: dict[str, tuple[str, Callable[[type[Contender], Workspace], Rate]]],
    runs: int,
    sqlite: bool,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    names = [cls.name for cls in contenders(sqlite)]
    bases = [n for n in names if n != "eventstore"]
    print(
        f"medians of {runs} interleaved rounds; ratios: eventstore / baseline, median "
        "[min-max] of the rounds' ratios, by the wall clock and (cpu) by process CPU time"
    )
    print(
        f"{'workload':<36}"
        + "".join(f"{n:>22}" for n in names)
        + "".join(f"{'vs ' + n:>26}" for n in bases)
    )
    for key, (label, fn) in chosen.items():
        pool = [c for c in contenders(sqlite) if c is not SameKeys or key in SAME_KEYS_WORKLOADS]
        walls: dict[str, list[float]] = {cls.name: [] for cls in pool}
        cpus: dict[str, list[float]] = {cls.name: [] for cls in pool}
        for round_ in range(runs):
            # Round by round, the order rotated, so that every contender sees
            # the same machine load and none is always first.
            k = round_ % len(pool)
            for cls in pool[k:] + pool[:k]:
                rate = fn(cls, ws)
                walls[cls.name].append(rate.wall)
                cpus[cls.name].append(rate.cpu)
        # Flat medians per workload, as scripts/plots.py reads them.
        results[key] = {name: statistics.median(v) for name, v in walls.items()}
        results.setdefault("rounds", {})[key] = walls
        results.setdefault("cpu_rounds", {})[key] = cpus
        for samples, what in ((walls, ""), (cpus, " (cpu)")):
            ratios = {base: _ratio(samples, base) for base in bases}
            results.setdefault("ratios" if not what else "cpu_ratios", {})[key] = {
                b: r for b, r in ratios.items() if r
            }
            medians = {name: statistics.median(v) for name, v in samples.items()}
            line = f"{label + what:<36}" + "".join(
                f"{medians[n]:>18,.0f} e/s" if n in medians else f"{'-':>22}" for n in names
            )
            for base in bases:
                r = ratios[base]
                cell = "-" if r is None else f"{r[0]:.2f} [{r[1]:.2f}-{r[2]:.2f}]"
                line += f"{cell:>26}"
            print(line, flush=True)
    if "durable_1" in results and "durable_16" in results:
        gain = results["durable_16"]["eventstore"] / results["durable_1"]["eventstore"]
        print(f"group commit: 16 threads / 1 thread = {gain:.1f}x")
        results["group_commit_gain"] = {"eventstore": gain}
    return results


if __name__ == "__main__":
    main()
