"""Hot tier against cold tier, through one EventStore, side by side in one run.

Appends N events (100 per append, 100 streams), then measures, all hot:
replay of every stream and random ``get``; compacts half the range and
measures the mixed replay; compacts the rest and measures the same reads all
cold. Also the compaction rate against the hot tier's batched append rate,
and bytes per event on disk (hot LevelDB, ESDB files, raw records).

    python scripts/bench_tiers.py [--events 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

from eventstore import EventStore
from eventstore.records import encode_record

STREAMS = 100


def _folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _timed(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_tiers(
    ws: Any, quick: bool = False, runs: int = 3, events: int | None = None
) -> dict[str, Any]:
    import bench  # the shared event generator of scripts/bench.py

    n = events or (20_000 if quick else 200_000)
    path = ws.fresh("tiers")
    new_events = bench.make_events(n)
    raw_bytes = sum(
        len(encode_record(0, 0, e.type, e.data, e.metadata, dict(e.indexes or {})))
        for e in new_events
    )
    streams = [f"order-{s:03d}" for s in range(STREAMS)]
    out: dict[str, Any] = {"events": n}
    with EventStore.open(path) as store:
        t = time.perf_counter()
        # Ids of one append in ten, spread over the whole range, for lookups:
        # keeping all of them would tax every figure through the collector.
        kept = []
        middle = last = None
        for start in range(0, n, 100):
            ids = store.append(
                streams[(start // 100) % STREAMS], new_events[start : start + 100]
            ).ids
            if start % 1000 == 0:
                kept.extend(ids)
            if middle is None and start >= n // 2:
                middle = ids[0]
            last = ids[-1]
        out["append_batched"] = n / (time.perf_counter() - t)
        assert middle is not None and last is not None
        sample = random.Random(5).sample(kept, min(20_000, len(kept)))

        def replay() -> None:
            for s in streams:
                for _ in store.read_stream(s):
                    pass

        def gets() -> None:
            for i in sample:
                store.get(i)

        out["replay_hot"] = n / _timed(replay, runs)
        out["get_hot"] = len(sample) / _timed(gets, runs)
        store._hot.db.compact_range()  # settle LevelDB before measuring its size
        out["hot_bytes_per_event"] = _folder_bytes(os.path.join(path, "hot")) / n

        # The move (files written, fsynced, committed: compact() returning) is
        # timed alone, then with the deletion of the hot copies (normally a
        # background thread's job), so reads are measured in the steady state.
        t = time.perf_counter()
        half = store.compact(before=middle)
        moved = time.perf_counter() - t
        store.cleanup()
        cold_half = time.perf_counter() - t
        out["replay_mixed"] = n / _timed(replay, runs)
        t = time.perf_counter()
        rest = store.compact(before=last.from_int(int(last) + 1))
        moved += time.perf_counter() - t
        store.cleanup()
        out["compaction"] = (half.events + rest.events) / (cold_half + time.perf_counter() - t)
        out["compaction_move"] = (half.events + rest.events) / moved
        out["replay_cold"] = n / _timed(replay, runs)
        out["get_cold"] = len(sample) / _timed(gets, runs)
        out["cold_bytes_per_event"] = _folder_bytes(os.path.join(path, "archive")) / n
        out["raw_bytes_per_event"] = raw_bytes / n
    # Mixed replay against the sum of its parts: half the events at the hot
    # rate plus half at the cold rate.
    parts = 0.5 / out["replay_hot"] + 0.5 / out["replay_cold"]
    out["mixed_vs_parts"] = parts / (1 / out["replay_mixed"])
    return out


def report(out: dict[str, Any]) -> None:
    print(f"\ntiers ({out['events']:,} events, 100 streams, one store):")
    print(
        f"  replay      hot {out['replay_hot']:>12,.0f} e/s   cold {out['replay_cold']:>12,.0f} e/s"
        f"   cold/hot {out['replay_cold'] / out['replay_hot']:.2f}"
    )
    print(
        f"  replay      half cold, half hot {out['replay_mixed']:>12,.0f} e/s"
        f"   (sum of parts / mixed time = {out['mixed_vs_parts']:.2f}; >= 1 is no dearer)"
    )
    print(
        f"  get         hot {out['get_hot']:>12,.0f} /s    cold {out['get_cold']:>12,.0f} /s"
        f"    cold/hot {out['get_cold'] / out['get_hot']:.2f}"
    )
    print(
        f"  compaction  move {out['compaction_move']:>12,.0f} e/s   "
        f"vs batched appends {out['append_batched']:>10,.0f} e/s"
        f"   ratio {out['compaction_move'] / out['append_batched']:.2f}"
    )
    print(
        f"  compaction  with cleanup {out['compaction']:>9,.0f} e/s   "
        f"ratio {out['compaction'] / out['append_batched']:.2f}"
    )
    print(
        f"  bytes/event raw records {out['raw_bytes_per_event']:.1f}   hot LevelDB "
        f"{out['hot_bytes_per_event']:.1f}   ESDB {out['cold_bytes_per_event']:.1f}"
    )


def main() -> None:
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    import bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ws = bench.Workspace()
    try:
        report(bench_tiers(ws, runs=args.runs, events=args.events))
    finally:
        ws.close()


if __name__ == "__main__":
    main()
