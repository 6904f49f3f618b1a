"""Cost against history: fill one store to 1e5, 1e6, 1e7 (1e8) events, compacting
on a schedule as an operator would, and measure at each size side by side
with raw plyvel holding the same events.

The shape: appends of ``--per-append`` events (default 20); a new stream every
``--new-stream-every`` appends (so the number of streams grows with the store,
as customers do); each append goes, half the time, to one of the 1,000
newest streams, else to any stream with a cubic skew towards the oldest (a
few streams grow very long, most stay short). Every event carries its
``type`` index and a ``customer`` index (scripts/bench.py's events).
Everything is a pure function of the append number, so a fill is resumable:
rerun the same command and it goes on where it stopped (the store's
``last_seq`` and a counter kept in the plyvel baseline's own write batches
say where).

Compaction follows the operator's "older than a window" schedule: every
``--compact-every`` events, everything but the newest ``--window`` events is
moved (the window is counted in events, not hours, because the fill runs
faster than any clock), so the hot tier never holds more than window +
compact-every events. Files are merged in size tiers, as an operator's job
would (and an LSM does): after each compaction, ``merge_archives(fanout=
--merge-at, max_events=--merge-events)`` folds every run of ``--merge-at``
adjacent files of one size tier into one, so each event is rewritten at most
once per tier; the events rewritten per event added (the merge's write
amplification) are reported with the rates.

At each size (after its compaction and cleanup) it measures, for both
contenders: the append rate over the last ``--rate-window`` events of the
fill, `get` p50/p99 of hot and of cold ids (raw plyvel: the same events'
keys), replay of random streams wholly hot, wholly cold and spanning both,
``read_all`` of 10,000 events from a random position (raw plyvel: a scan of
as many keys from the same event's key, the nearest thing it has), open time
and RSS (in a fresh child process that opens and reads), disk bytes per
event, and, for eventstore, the compaction (move), cleanup and merge rates
and `stats` time since the previous size.

    python scripts/bench_scale.py --sizes 1e5,1e6 --dir /tmp/scale --json /tmp/scale.json
    python scripts/bench_scale.py --sizes 1e5,1e6,1e7 --dir /tmp/scale   # resumes
    python scripts/plots.py --only scale --scale-json /tmp/scale.json    # docs/img/scale.png
    python scripts/bench_scale.py --many-files 1000 --dir /tmp/files     # open/RSS vs 1 file

How long: on the project's 2-core machine the fill runs at ~20-30k events/s
for both contenders together, compactions included (docs/benchmarks.md has
the measured figures), so 1e6 takes ~1 minute, 1e7 ~10 minutes and 1e8
between 1.5 and 2 hours, plus ~100 bytes per event of disk for the two
stores (~10 GB at 1e8).
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
import time
from array import array
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgpack
from ulid import ULID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # scripts/bench.py: the events and LevelDB options of its baseline

from eventstore import EventStore, NewEvent
from eventstore._leveldb import plyvel
from eventstore.hot import LEVELDB_OPTIONS
from eventstore.ids import MonotonicULIDs

CHUNK = 10_000  # events made once and reused (their ids differ)
RECENT = 1_000  # "newest streams" that half the appends go to
MASK = (1 << 64) - 1
COUNT_KEY = b"\xffcount"  # the baseline's event count, kept in its own batches
SAMPLE_EVERY = 16  # one append in 16 gives its first event to the lookup sample


def _mix(a: int) -> int:
    """splitmix64: a well-spread 64-bit hash of the append number."""
    z = (a * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5F5) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Shape:
    """Which stream each append goes to: a pure function of its number."""

    def __init__(self, per_append: int, new_stream_every: int) -> None:
        self.per_append = per_append
        self.new_stream_every = new_stream_every

    def stream_of(self, a: int) -> int:
        existing = 1 + a // self.new_stream_every
        if a % self.new_stream_every == 0:
            return existing - 1  # the new stream's first append
        h = _mix(a)
        u = (h >> 11) / float(1 << 53)
        if h & 1:
            return existing - 1 - int(u * min(RECENT, existing))
        return int(existing * u * u * u)

    def name(self, s: int) -> str:
        return f"customer-{s:08d}"


class Model:
    """Per stream: its version and the event counts where it began and last
    grew. Rebuilt from the shape on resume (arithmetic only)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.appends = 0
        self.version = array("q")
        self.first = array("q")
        self.last = array("q")

    def step(self) -> tuple[int, int]:
        """Take the next append: (stream number, version before it)."""
        a = self.appends
        s = self.shape.stream_of(a)
        n = self.shape.per_append
        at = a * n
        while len(self.version) <= s:
            self.version.append(-1)
            self.first.append(-1)
            self.last.append(-1)
        v = self.version[s]
        if v < 0:
            self.first[s] = at
        self.version[s] = v + n
        self.last[s] = at + n - 1
        self.appends = a + 1
        return s, v

    def advance_to(self, appends: int) -> None:
        while self.appends < appends:
            self.step()


# -- the contenders ------------------------------------------------------------------


class Raw:
    """Raw plyvel: one key per event (stream, NUL, 16-byte id), the msgpack
    record as value, the store's LevelDB options; its count in each batch."""

    def __init__(self, path: str) -> None:
        self.db = plyvel.DB(path, create_if_missing=True, **LEVELDB_OPTIONS)
        raw = self.db.get(COUNT_KEY)
        self.count = 0 if raw is None else int(raw)
        self.ids = MonotonicULIDs()

    def append(self, stream: str, version: int, events: list[NewEvent]) -> bytes:
        packb = msgpack.packb
        prefix = stream.encode() + b"\x00"
        batch = self.db.write_batch()
        first = b""
        seq = self.count
        for event in events:
            version += 1
            seq += 1
            key = prefix + self.ids.next_int().to_bytes(16, "big")
            if not first:
                first = key
            record = [version, seq, event.type, event.data, event.metadata, event.indexes]
            batch.put(key, packb(record, use_bin_type=True))
        batch.put(COUNT_KEY, str(seq).encode())
        batch.write()
        self.count = seq
        return first

    def close(self) -> None:
        self.db.close()


def _folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def _latencies_us(fn: Callable[[Any], Any], keys: list[Any]) -> dict[str, float]:
    lat = []
    for key in keys:
        t = time.perf_counter_ns()
        fn(key)
        lat.append((time.perf_counter_ns() - t) / 1000)
    if not lat:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    return {"p50": statistics.median(lat), "p99": _pct(lat, 0.99), "n": len(lat)}


# -- the run ----------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = args.dir
        os.makedirs(self.dir, exist_ok=True)
        self.state_path = os.path.join(self.dir, "state.json")
        config = {
            "per_append": args.per_append,
            "new_stream_every": args.new_stream_every,
            "window": args.window,
            "compact_every": args.compact_every,
            "merge_at": args.merge_at,
            "merge_events": args.merge_events,
        }
        self.state: dict[str, Any] = {"config": config, "results": [], "timings": []}
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                saved = json.load(f)
            if saved["config"] != config:
                sys.exit(
                    f"{self.dir} was filled with {saved['config']}, not {config}: "
                    "use another --dir or the same options"
                )
            self.state = saved
        self.shape = Shape(args.per_append, args.new_stream_every)
        self.model = Model(self.shape)
        self.chunk = bench.make_events(CHUNK)
        self.es_path = os.path.join(self.dir, "eventstore")
        self.raw_path = os.path.join(self.dir, "plyvel")
        self.samples_path = os.path.join(self.dir, "samples.jsonl")

    def save(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.state_path)

    # -- filling --

    def _resume(self, store: EventStore, raw: Raw) -> None:
        """Bring both contenders to the same whole number of appends."""
        n = self.shape.per_append
        es_appends = store.last_seq // n
        raw_appends = raw.count // n
        if store.last_seq % n or raw.count % n:
            sys.exit("a contender holds a part of an append: start afresh (remove --dir)")
        lagging = min(es_appends, raw_appends)
        self.model.advance_to(lagging)
        while self.model.appends < max(es_appends, raw_appends):
            a = self.model.appends
            s, v = self.model.step()
            events = self._events(a)
            if a >= es_appends:
                store.append(self.shape.name(s), events, expected_version=v)
            if a >= raw_appends:
                raw.append(self.shape.name(s), v, events)
        # Samples are written after their append; drop any beyond the fill.
        if os.path.exists(self.samples_path):
            kept = [line for line in self._sample_lines() if json.loads(line)[0] < lagging * n]
            with open(self.samples_path, "w") as f:
                f.writelines(kept)

    def _sample_lines(self) -> list[str]:
        with open(self.samples_path) as f:
            return [line for line in f if line.endswith("\n")]

    def _events(self, a: int) -> list[NewEvent]:
        n = self.shape.per_append
        off = (a * n) % (CHUNK - n)
        return self.chunk[off : off + n]

    def fill(self, store: EventStore, raw: Raw, target: int, progress: bool) -> None:
        n = self.shape.per_append
        args = self.args
        samples = open(self.samples_path, "a")  # noqa: SIM115 - closed below
        es_time = raw_time = 0.0
        since = 0
        t_start = time.perf_counter()
        start_count = self.model.appends * n
        try:
            while self.model.appends * n < target:
                a = self.model.appends
                s, v = self.model.step()
                name = self.shape.name(s)
                events = self._events(a)
                t0 = time.perf_counter()
                ids = store.append(name, events, expected_version=v).ids
                t1 = time.perf_counter()
                key = raw.append(name, v, events)
                t2 = time.perf_counter()
                es_time += t1 - t0
                raw_time += t2 - t1
                since += n
                if a % SAMPLE_EVERY == 0:
                    samples.write(json.dumps([a * n, str(ids[0]), key.hex(), s]) + "\n")
                count = (a + 1) * n
                if count % args.compact_every == 0 or count >= target:
                    self.state["timings"].append([count, since, es_time, raw_time])
                    es_time = raw_time = 0.0
                    since = 0
                    samples.flush()
                    if count % args.compact_every == 0:
                        self.compact(store, count)
                    self.save()
                if progress and a % 500 == 0:
                    self._bar(count, target, start_count, t_start)
        finally:
            samples.close()
        if progress:
            self._bar(self.model.appends * n, target, start_count, t_start)
            sys.stderr.write("\n")

    def _bar(self, count: int, target: int, start: int, t_start: float) -> None:
        done = count / target
        elapsed = time.perf_counter() - t_start
        rate = (count - start) / elapsed if elapsed > 0 else 0.0
        eta = (target - count) / rate if rate > 0 else 0.0
        bar = "#" * int(done * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {count:>12,}/{target:,} events  {rate:>8,.0f} e/s (both)  "
            f"eta {timedelta(seconds=int(eta))}   "
        )
        sys.stderr.flush()

    def compact(self, store: EventStore, count: int) -> None:
        """Move all but the newest ``window`` events, clean up, merge if due."""
        args = self.args
        keep = args.window
        cold = sum(f.events for f in store.archive_files())
        move = count - cold - keep
        if move <= 0:
            return
        watermark = store.watermark
        after = None if watermark is None else _before(watermark)
        first_kept = deque(store.read_all(after=after, limit=move + 1), maxlen=1)[0]
        t0 = time.perf_counter()
        result = store.compact(before=first_kept.id)
        t1 = time.perf_counter()
        store.cleanup()
        t2 = time.perf_counter()
        row: dict[str, Any] = {
            "count": count,
            "moved": result.events,
            "move_s": t1 - t0,
            "cleanup_s": t2 - t1,
        }
        # Size-tiered merging, as an LSM does it: runs of merge-at files of
        # one size tier fold into one, so each event is rewritten once per
        # tier, not again with every new small file (issue 19).
        t3 = time.perf_counter()
        merged_events = store.merge_archives(
            max_events=args.merge_events, fanout=args.merge_at
        ).events
        merge_s = time.perf_counter() - t3
        if merged_events:
            row["merged"] = merged_events
            row["merge_s"] = merge_s
        self.state.setdefault("compactions", []).append(row)

    # -- measuring --

    def measure(self, store: EventStore, raw: Raw, size: int) -> dict[str, Any]:
        rnd = random.Random(size)
        args = self.args
        cold_count = sum(f.events for f in store.archive_files())
        out: dict[str, Any] = {"size": size, "cold_events": cold_count}
        out["hot_events"] = size - cold_count
        out["streams"] = len(self.model.version)
        out["archive_files"] = len(store.archive_files())

        # Append rate over the last rate-window events of the fill.
        events = es_s = raw_s = 0.0
        for count, since, es_t, raw_t in reversed(self.state["timings"]):
            if count > size:
                continue
            events += since
            es_s += es_t
            raw_s += raw_t
            if events >= args.rate_window:
                break
        es: dict[str, Any] = {"append": events / es_s if es_s else 0.0}
        rw: dict[str, Any] = {"append": events / raw_s if raw_s else 0.0}

        # The reads, in --repeat rounds of fresh random picks; the contenders
        # take turns going first; each figure is the median of the rounds.
        lines = [json.loads(line) for line in self._sample_lines()]
        m = self.model
        classes: dict[str, list[int]] = {"hot": [], "cold": [], "mixed": []}
        for s in range(len(m.version)):
            if m.first[s] >= cold_count:
                classes["hot"].append(s)
            elif m.last[s] < cold_count:
                classes["cold"].append(s)
            else:
                classes["mixed"].append(s)
        rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for r in range(args.repeat):
            rounds.append(self._reads(store, raw, lines, classes, cold_count, rnd, r % 2 == 1))
        for mine, theirs in ((es, [a for a, _ in rounds]), (rw, [b for _, b in rounds])):
            for key in theirs[0]:
                values = [x[key] for x in theirs]
                if isinstance(values[0], dict):
                    mine[key] = {k: statistics.median(v[k] for v in values) for k in values[0]}
                else:
                    mine[key] = statistics.median(values)

        t = time.perf_counter()
        stats = store.stats() if hasattr(store, "stats") else None
        es["stats_s"] = time.perf_counter() - t
        if stats is not None:
            out["stats"] = {"events": stats.events, "streams": stats.streams}

        # compaction, cleanup and merge rates since the previous size.
        prev = self.state["results"][-1]["size"] if self.state["results"] else 0
        rows = [r for r in self.state.get("compactions", []) if prev < r["count"] <= size]
        moved = sum(r["moved"] for r in rows)
        if moved:
            es["compact_move"] = moved / sum(r["move_s"] for r in rows)
            es["compact_cleanup"] = moved / sum(r["cleanup_s"] for r in rows)
        merges = [r for r in rows if "merged" in r]
        if merges:
            es["merge"] = sum(r["merged"] for r in merges) / sum(r["merge_s"] for r in merges)
        # Write amplification of the merges: events rewritten per event
        # added, since the previous size and over the whole fill.
        every = self.state.get("compactions", [])
        es["merge_rewritten"] = sum(r.get("merged", 0) for r in rows)
        es["merge_amplification"] = es["merge_rewritten"] / (size - prev)
        es["merge_amplification_total"] = (
            sum(r.get("merged", 0) for r in every if r["count"] <= size) / size
        )
        es["disk_bytes_per_event"] = _folder_bytes(self.es_path) / size
        es["hot_bytes_per_event"] = (
            _folder_bytes(self.es_path) - _folder_bytes(os.path.join(self.es_path, "archive"))
        ) / size
        rw["disk_bytes_per_event"] = _folder_bytes(self.raw_path) / size
        out["eventstore"] = es
        out["plyvel"] = rw
        return out

    def _reads(
        self,
        store: EventStore,
        raw: Raw,
        lines: list[Any],
        classes: dict[str, list[int]],
        cold_count: int,
        rnd: random.Random,
        raw_first: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One round of every read, for both contenders; missing kinds (no
        cold ids yet, say) are left out."""
        args = self.args
        es: dict[str, Any] = {}
        rw: dict[str, Any] = {}
        # get: hot and cold ids (the same events' keys for plyvel).
        hot = [x for x in lines if x[0] >= cold_count]
        cold = [x for x in lines if x[0] < cold_count]
        for label, group in (("hot", hot), ("cold", cold)):
            if not group:
                continue
            pick = rnd.sample(group, min(args.lookups, len(group)))
            ids = [ULID.from_str(x[1]) for x in pick]  # parsed before the clock runs
            keys = [bytes.fromhex(x[2]) for x in pick]
            if raw_first:
                rw[f"get_{label}"] = _latencies_us(raw.db.get, keys)
            es[f"get_{label}"] = _latencies_us(store.get, ids)
            if not raw_first:
                rw[f"get_{label}"] = _latencies_us(raw.db.get, keys)
        # replay of random streams: wholly hot, wholly cold, spanning both.
        for label, group in classes.items():
            if group:
                pick = rnd.sample(group, min(args.replays, len(group)))
                es[f"replay_{label}"], rw[f"replay_{label}"] = self._replay(
                    store, raw, pick, raw_first
                )
        # read_all of 10,000 events from a random position in the older half.
        if lines:
            x = rnd.choice(lines[: max(1, len(lines) // 2)])
            for which in ("raw", "es") if raw_first else ("es", "raw"):
                t = time.perf_counter()
                if which == "es":
                    got = sum(1 for _ in store.read_all(after=x[1], limit=10_000))
                    es["read_all"] = got / (time.perf_counter() - t)
                    continue
                unpackb = msgpack.unpackb
                got = 0
                for _k, v in raw.db.iterator(start=bytes.fromhex(x[2]), stop=COUNT_KEY):
                    unpackb(v, raw=False)
                    got += 1
                    if got == 10_000:
                        break
                rw["read_all"] = got / (time.perf_counter() - t)
        return es, rw

    def _replay(
        self, store: EventStore, raw: Raw, streams: list[int], raw_first: bool = False
    ) -> tuple[float, float]:
        if not streams:
            return 0.0, 0.0
        names = [self.shape.name(s) for s in streams]
        unpackb = msgpack.unpackb
        es_rate = raw_rate = 0.0
        es_n = raw_n = 0
        for which in ("raw", "es") if raw_first else ("es", "raw"):
            t = time.perf_counter()
            if which == "es":
                es_n = sum(1 for name in names for _ in store.read_stream(name))
                es_rate = es_n / (time.perf_counter() - t)
                continue
            for name in names:
                for _k, v in raw.db.iterator(prefix=name.encode() + b"\x00"):
                    unpackb(v, raw=False)
                    raw_n += 1
            raw_rate = raw_n / (time.perf_counter() - t)
        expected = sum(self.model.version[s] + 1 for s in streams)
        assert es_n == raw_n == expected, (es_n, raw_n, expected)
        return es_rate, raw_rate

    def open_in_child(self, which: str) -> dict[str, float]:
        """Open time and RSS of a fresh process that opens and reads a little."""
        return _child(self.es_path if which == "eventstore" else self.raw_path, which)

    def run(self, sizes: list[int], progress: bool) -> dict[str, Any]:
        done = {r["size"] for r in self.state["results"]}
        store = EventStore.open(self.es_path)
        raw = Raw(self.raw_path)
        try:
            self._resume(store, raw)
            if self.args.remeasure:
                # Measure the store again at the size it holds (one filled
                # and measured before): the reads again, fill figures kept.
                size = self.model.appends * self.shape.per_append
                old = [r for r in self.state["results"] if r["size"] == size]
                if not old:
                    sys.exit(f"{self.dir} holds {size:,} events, a size never measured")
                prev = [r for r in self.state["results"] if r["size"] < size]
                self.state["results"] = prev  # measure() reads the previous size's
                result = self.measure(store, raw, size)
                store.close()
                raw.close()
                for which in ("eventstore", "plyvel"):
                    result[which].update(self.open_in_child(which))
                store = EventStore.open(self.es_path)
                raw = Raw(self.raw_path)
                self.state["results"] = [*prev, result]  # nothing larger: the store holds `size`
                self.save()
                if progress:
                    _print_result(result)
                return self.report()
            for size in sizes:
                if size in done:
                    continue
                if size % self.shape.per_append or size % self.args.compact_every:
                    sys.exit(f"size {size:,} is not a multiple of --compact-every and --per-append")
                if self.model.appends * self.shape.per_append > size:
                    sys.exit(f"{self.dir} already holds more than {size:,} events")
                self.fill(store, raw, size, progress)
                result = self.measure(store, raw, size)
                store.close()
                raw.close()
                for which in ("eventstore", "plyvel"):
                    result[which].update(self.open_in_child(which))
                store = EventStore.open(self.es_path)
                raw = Raw(self.raw_path)
                self.state["results"].append(result)
                self.save()
                if progress:
                    _print_result(result)
        finally:
            store.close()
            raw.close()
        return self.report()

    def report(self) -> dict[str, Any]:
        results = sorted(self.state["results"], key=lambda r: r["size"])
        return {"config": self.state["config"], "results": results}


def _before(ulid: Any) -> str:
    return str(ULID.from_int(int(ulid) - 1))


_CHILD = """
import json, sys, time
which = sys.argv[1]
t = time.perf_counter()
if which == "eventstore":
    from eventstore import EventStore
    t = time.perf_counter()
    s = EventStore.open({path!r})
    opened = time.perf_counter() - t
    n = sum(1 for _ in s.read_all(limit=20000))
    n += sum(1 for _ in s.read_all(backwards=True, limit=20000))
else:
    from eventstore._leveldb import plyvel
    from eventstore.hot import LEVELDB_OPTIONS
    t = time.perf_counter()
    s = plyvel.DB({path!r}, **LEVELDB_OPTIONS)
    opened = time.perf_counter() - t
    it = s.iterator()
    n = sum(1 for _, _ in zip(range(20000), it))
    it.close()
    it = s.iterator(reverse=True)
    n += sum(1 for _, _ in zip(range(20000), it))
    it.close()
rss = hwm = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
s.close()
print(json.dumps({{"open_s": opened, "rss_bytes": rss, "rss_peak_bytes": hwm}}))
"""


def _print_result(r: dict[str, Any]) -> None:
    es, rw = r["eventstore"], r["plyvel"]

    def ratio(key: str, sub: str | None = None) -> str:
        a = es.get(key)
        b = rw.get(key)
        if sub is not None and a is not None and b is not None:
            a, b = a[sub], b[sub]
        if not a or not b:
            return "-"
        return f"{a:,.1f} vs {b:,.1f} ({a / b:.2f}x)"

    print(
        f"{r['size']:>12,} events ({r['hot_events']:,} hot, {r['archive_files']} files, "
        f"{r['streams']:,} streams)"
    )
    print(f"  append e/s        {ratio('append')}")
    for label in ("hot", "cold"):
        print(f"  get {label:<4} p50 us   {ratio('get_' + label, 'p50')}")
        print(f"  get {label:<4} p99 us   {ratio('get_' + label, 'p99')}")
    for label in ("hot", "cold", "mixed"):
        print(f"  replay {label:<5} e/s  {ratio('replay_' + label)}")
    print(f"  read_all e/s      {ratio('read_all')}")
    print(f"  open s            {ratio('open_s')}")
    print(f"  RSS bytes         {ratio('rss_bytes')}")
    print(f"  disk bytes/event  {ratio('disk_bytes_per_event')}")
    for key in (
        "compact_move",
        "compact_cleanup",
        "merge",
        "merge_rewritten",
        "merge_amplification",
        "merge_amplification_total",
        "stats_s",
    ):
        if key in es:
            print(f"  {key:<17} {es[key]:,.3f}")


def many_files(root: str, files: int, per_file: int) -> dict[str, Any]:
    """Open time and RSS of a store whose history lies in ``files`` archive
    files, against the same events in one file (both measured in fresh
    processes, alternately, medians of 3)."""
    chunk = bench.make_events(CHUNK)
    paths = {"many": os.path.join(root, "many"), "one": os.path.join(root, "one")}
    for label, path in paths.items():
        shutil.rmtree(path, ignore_errors=True)
        with EventStore.open(path) as store:
            for f in range(files):
                for a in range(0, per_file, 50):
                    off = (f * per_file + a) % (CHUNK - 50)
                    store.append(f"stream-{(f * 7 + a) % 997}", chunk[off : off + 50])
                if label == "many":
                    store.compact(before=_newest_id(store))
                    store.append("marker", [chunk[0]])  # the next cutoff is above it
            if label == "one":
                store.compact(before=_newest_id(store))
            store.cleanup()
            assert len(store.archive_files()) == (files if label == "many" else 1)
    samples: dict[str, list[dict[str, float]]] = {"many": [], "one": []}
    for _ in range(3):
        for label, path in paths.items():
            samples[label].append(_child(path, "eventstore"))
    out: dict[str, Any] = {"files": files, "events_per_file": per_file}
    for label, runs in samples.items():
        out[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return out


def _newest_id(store: EventStore) -> ULID:
    return deque(store.read_all(backwards=True, limit=1), maxlen=1)[0].id


def _child(path: str, which: str) -> dict[str, float]:
    code = _CHILD.format(path=path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", code, which], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _sizes(text: str) -> list[int]:
    sizes = sorted(int(float(part)) for part in text.split(",") if part.strip())
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=[100_000, 1_000_000])
    p.add_argument("--dir", default="/tmp/eventstore-scale", help="where the stores live")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--fresh", action="store_true", help="remove --dir first")
    p.add_argument("--per-append", type=int, default=20)
    p.add_argument("--new-stream-every", type=int, default=10, help="appends per new stream")
    p.add_argument("--window", type=int, default=200_000, help="events kept hot")
    p.add_argument("--compact-every", type=int, default=100_000)
    p.add_argument(
        "--merge-at", type=int, default=8, help="size-tier fanout: merge runs of this many files"
    )
    p.add_argument("--merge-events", type=int, default=16_000_000)
    p.add_argument("--rate-window", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=2_000)
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="rounds of reads (medians)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--remeasure", action="store_true", help="measure the reads again at the size held"
    )
    p.add_argument(
        "--many-files",
        type=int,
        metavar="N",
        help="instead: open time and RSS with N archive files against one (in --dir)",
    )
    p.add_argument("--events-per-file", type=int, default=1_000)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.fresh:
        shutil.rmtree(args.dir, ignore_errors=True)
    if args.many_files:
        os.makedirs(args.dir, exist_ok=True)
        result = many_files(args.dir, args.many_files, args.events_per_file)
        if not args.quiet:
            print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return result
    report = Run(args).run(args.sizes, progress=not args.quiet)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
