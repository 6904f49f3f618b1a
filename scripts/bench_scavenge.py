"""Scavenging speed, beside compaction of the same store, in one run (issue 17).

Appends N events to 1,000 streams (100 per append), soft-deletes 10% of the
streams, then measures:

- reads with the deletions pending (a full ``read_all`` scan and a replay of
  every kept stream) against the same reads once scavenged: the ratio says
  what hiding costs before a scavenge;
- a hot scavenge (everything in LevelDB): events examined and removed per second;
- on a copy compacted whole first (the compaction rate, its cleanup of the
  hot copies included, is printed beside it), a cold scavenge: the archive
  files holding deleted events rewritten.

Medians of ``--runs`` for the reads; one scavenge of each kind (a second
finds nothing to do). Quote the ratios, not the rates: the machine is shared.

    python scripts/bench_scavenge.py [--events 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import deque
from typing import Any

from eventstore import EventStore, NewEvent
from eventstore.ids import ulid_from_int

STREAMS = 1000


def _median(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _reads(store: EventStore, kept: list[str]) -> tuple[Any, Any]:
    def scan() -> None:
        deque(store.read_all(), maxlen=0)

    def replay() -> None:
        for stream in kept:
            deque(store.read_stream(stream), maxlen=0)

    return scan, replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-scavenge-")
    pending_path, done_path, cold_path = f"{folder}/pending", f"{folder}/done", f"{folder}/cold"
    n = args.events
    streams = [f"s-{i}" for i in range(STREAMS)]
    deleted = streams[::10]
    kept = [s for s in streams if s not in set(deleted)]
    try:
        with EventStore.open(pending_path) as store:
            batch = max(1, min(100, n // STREAMS))  # every stream gets events
            for at in range(0, n, batch):
                stream = streams[(at // batch) % STREAMS]
                store.append(
                    stream,
                    [NewEvent("T", {"n": at + k, "pad": "x" * 80}) for k in range(batch)],
                )
            for stream in deleted:
                store.delete_stream(stream)
            store.backup(done_path)
            store.backup(cold_path)
            # Both stores with their tables compacted, as a scavenge leaves them.
            store._hot.db.compact_range()
        with EventStore.open(done_path) as store:
            steps: dict[str, float] = {}

            def mark(step: str, _n: int) -> None:
                steps.setdefault(step, time.perf_counter())

            hot = store.scavenge(progress=mark)
            store._hot.db.compact_range()
        # The same reads on the two stores, interleaved run by run.
        with EventStore.open(pending_path) as pending, EventStore.open(done_path) as done:
            times: dict[str, list[float]] = {}
            for _ in range(args.runs):
                for name, store in (("pending", pending), ("done", done)):
                    for kind, fn in zip(("scan", "replay"), _reads(store, kept), strict=True):
                        t = time.perf_counter()
                        fn()
                        times.setdefault(f"{name} {kind}", []).append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
        with EventStore.open(cold_path) as store:
            last = next(store.read_all(backwards=True, limit=1))
            t = time.perf_counter()
            compacted = store.compact(before=ulid_from_int(int(last.id) + 1))
            store.cleanup()  # compaction's own work (deleting the hot copies), timed with it
            compact_s = time.perf_counter() - t
            cold = store.scavenge()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"events {n:,}, streams {STREAMS}, deleted {len(deleted)} streams ({hot.removed:,} events)"
    )
    print(
        f"hot scavenge : {hot.seconds:6.2f} s, {hot.examined / hot.seconds:10,.0f} examined/s, "
        f"{hot.removed / hot.seconds:10,.0f} removed/s"
    )
    reopen_ms = 1000 * (steps["reopened"] - steps["compacted"])
    print(f"  of which the hot tier's reopen (reads wait): {reopen_ms:.0f} ms")
    print(
        f"cold scavenge: {cold.seconds:6.2f} s, {cold.examined / cold.seconds:10,.0f} examined/s, "
        f"{cold.removed / cold.seconds:10,.0f} removed/s, {cold.files} files rewritten"
    )
    print(f"compaction   : {compact_s:6.2f} s, {compacted.events / compact_s:10,.0f} events/s")
    print(
        f"store events per second, scavenge / compaction: hot "
        f"{(n / hot.seconds) / (compacted.events / compact_s):.2f}x, cold "
        f"{(n / cold.seconds) / (compacted.events / compact_s):.2f}x"
    )
    print(
        "read speed, deletions pending / scavenged (>= 0.9 wanted): read_all "
        f"{med['done scan'] / med['pending scan']:.2f}x, replay of kept streams "
        f"{med['done replay'] / med['pending replay']:.2f}x"
    )


if __name__ == "__main__":
    main()
