"""The profiles behind issue 19's fixes, on a store that scripts/bench_scale.py
filled (``--dir``), or on a fresh one for cleanup.

    python scripts/profile_scale.py get /tmp/scale       # 2,000 random gets of cold ids
    python scripts/profile_scale.py replay /tmp/scale    # 20 random wholly cold streams
    python scripts/profile_scale.py cleanup 300000       # fill, compact a third, clean up
    python scripts/profile_scale.py stats /tmp/scale     # `eventstore stats`' work
    python scripts/profile_scale.py cycles 50000         # 8 compactions + cleanups on a schedule

Each prints its rate (or latencies) on a freshly opened store, again on the
warm one, and the top of a cProfile of a third pass (``--no-profile`` to
skip it). The store at ``DIR/eventstore`` must not be open elsewhere.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ulid import ULID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # the events of scripts/bench.py
import bench_scale

from eventstore import EventStore


def _profile(fn: Callable[[], Any], rows: int = 14) -> None:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(rows)


def _open(d: str) -> EventStore:
    return EventStore.open(os.path.join(d, "eventstore"))


def get(d: str, profile: bool) -> None:
    with open(os.path.join(d, "samples.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    store = _open(d)
    cold_n = sum(f.events for f in store.archive_files())
    cold = [ULID.from_str(x[1]) for x in lines if x[0] < cold_n]
    pick = random.Random(1).sample(cold, min(2000, len(cold)))

    def run() -> tuple[float, float]:
        lat = []
        for i in pick:
            t = time.perf_counter_ns()
            store.get(i)
            lat.append(time.perf_counter_ns() - t)
        lat.sort()
        return lat[len(lat) // 2] / 1000, lat[int(len(lat) * 0.99)] / 1000

    print(f"{len(store.archive_files())} files, {cold_n:,} cold events")
    for label in ("fresh store:", "again:      "):
        p50, p99 = run()
        print(f"{label} get p50 / p99 us {p50:.1f} / {p99:.1f}")
    store.close()
    if profile:
        store = _open(d)
        _profile(run)
        store.close()


def replay(d: str, profile: bool) -> None:
    with open(os.path.join(d, "state.json")) as f:
        config = json.load(f)["config"]
    shape = bench_scale.Shape(config["per_append"], config["new_stream_every"])
    model = bench_scale.Model(shape)
    store = _open(d)
    model.advance_to(store.last_seq // config["per_append"])
    cold_n = sum(f.events for f in store.archive_files())
    cold = [s for s in range(len(model.version)) if model.last[s] < cold_n]
    names = [shape.name(s) for s in random.Random(2).sample(cold, min(20, len(cold)))]

    def run() -> float:
        t = time.perf_counter()
        n = sum(1 for name in names for _ in store.read_stream(name))
        return n / (time.perf_counter() - t)

    print(f"{len(store.archive_files())} files, {len(cold):,} wholly cold streams")
    print(f"fresh store: replay {run():,.0f} e/s")
    print(f"again:       replay {run():,.0f} e/s")
    store.close()
    if profile:
        store = _open(d)
        _profile(run)
        store.close()


def cleanup(n: int, profile: bool) -> None:
    chunk = bench.make_events(10_000)
    d = tempfile.mkdtemp(prefix="es-cleanup-")
    store = EventStore.open(os.path.join(d, "s"))
    store._tiering._start_cleanup = lambda: None  # type: ignore[method-assign]  # timed apart here
    ids = []
    for a in range(n // 20):
        off = (a * 20) % 9980
        r = store.append(f"c{(a * 7919) % max(1, n // 200)}", chunk[off : off + 20])
        if a % 1000 == 0:
            ids.append(r.ids[0])
    t0 = time.perf_counter()
    moved = store.compact(before=ids[len(ids) // 3]).events
    t1 = time.perf_counter()
    deleted = 0

    def delete() -> None:
        nonlocal deleted
        with store._maintenance:
            while k := store._tiering._delete_garbage():
                deleted += k

    if profile:
        _profile(delete, 8)
    else:
        delete()
    t2 = time.perf_counter()
    store._tiering._compact_tombstones()
    t3 = time.perf_counter()
    print(
        f"{n:,} events, {moved:,} moved in {t1 - t0:.2f} s; hot copies deleted in "
        f"{t2 - t1:.2f} s ({deleted / (t2 - t1):,.0f} e/s); compact_range {t3 - t2:.2f} s"
    )
    store.close()


def cycles(every: int, profile: bool) -> None:
    """Compaction on a schedule without the rest of bench_scale: appends of
    20 events to 2,500 streams; after each ``every`` events, everything but
    the newest 2 x ``every`` is compacted and cleaned up, 8 times. Cleanup's
    rate counts its compact_range calls too (issue 19: they come only once
    the tombstones are as many as the live hot events)."""
    from eventstore import tiering

    tiering.Tiering._start_cleanup = lambda self: None  # type: ignore[method-assign]
    chunk = bench.make_events(10_000)
    d = tempfile.mkdtemp(prefix="es-cycles-")
    store = EventStore.open(os.path.join(d, "s"))
    a, moved, move_s, clean_s = 0, 0, 0.0, 0.0
    for c in range(10):
        for _ in range(every // 20):
            off = (a * 20) % 9980
            store.append(f"c{(a * 7919) % 2500}", chunk[off : off + 20])
            a += 1
        if c < 2:
            continue
        kept = list(store.read_all(backwards=True, limit=2 * every))[-1]
        t0 = time.perf_counter()
        moved += store.compact(before=kept.id).events
        t1 = time.perf_counter()
        if profile and c == 9:
            _profile(store.cleanup, 10)
        else:
            store.cleanup()
        move_s, clean_s = move_s + t1 - t0, clean_s + time.perf_counter() - t1
    print(
        f"{moved:,} moved in 8 compactions: move {moved / move_s:,.0f} e/s, "
        f"cleanup {moved / clean_s:,.0f} e/s "
        f"({store._tiering.tombstone_compactions} compact_range calls)"
    )
    store.close()


def stats(d: str) -> None:
    from eventstore.cli.maintenance import store_stats

    store = _open(d)
    t = time.perf_counter()
    s = store_stats(store)
    cli = time.perf_counter() - t
    t = time.perf_counter()
    store.stats()
    api = time.perf_counter() - t
    print(
        f"{s.events:,} events, {s.streams:,} streams: stats {cli * 1e3:.1f} ms, "
        f"store.stats() {api * 1e6:.0f} us"
    )
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["get", "replay", "cleanup", "stats", "cycles"])
    p.add_argument("where", help="a bench_scale.py --dir, or (cleanup) a number of events")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    if args.what == "cleanup":
        cleanup(int(float(args.where)), not args.no_profile)
    elif args.what == "cycles":
        cycles(int(float(args.where)), not args.no_profile)
    elif args.what == "stats":
        stats(args.where)
    else:
        {"get": get, "replay": replay}[args.what](args.where, not args.no_profile)


if __name__ == "__main__":
    main()
