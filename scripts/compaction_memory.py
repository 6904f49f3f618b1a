"""Peak memory of one compaction of a large range (issue 4: bounded by the
largest stream, not by the range).

    python scripts/compaction_memory.py --events 2000000 --streams 20000 --path /tmp/cm
    python scripts/compaction_memory.py --events 1000000 --streams 1000000  # short streams

Fills a store in a first process, then compacts everything in a second one
and reports that process's resident memory before and at its peak.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc


def fill(path: str, events: int, streams: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import bench

    from eventstore import ANY, EventStore

    batch = bench.make_events(10_000)
    per = max(1, min(100, events // streams))  # events per stream in one append
    with EventStore.open(path) as store:
        for start in range(0, events, 100):
            store.append_many(
                [
                    (
                        f"s-{((start + k) // per) % streams:07d}",
                        batch[(start + k) % 10_000 :][:per],
                        ANY,
                    )
                    for k in range(0, 100, per)
                ]
            )


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """Samples anonymous resident memory (the heap: what a compaction holds)
    apart from file-backed pages (LevelDB maps its tables; the kernel can
    drop those pages at will), every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def compact(path: str, python_heap: bool) -> None:
    from ulid import ULID

    from eventstore import EventStore

    tables = len([n for n in os.listdir(os.path.join(path, "hot")) if n.endswith(".ldb")])
    with EventStore.open(path) as store:
        before = rss_kib()
        anon_before = rss_kib("RssAnon")
        last = next(store.read_all(backwards=True)).id
        if python_heap:  # slows the move down several times: figures apart
            tracemalloc.start()
        sampler = AnonPeak()
        t = time.perf_counter()
        result = store.compact(before=ULID.from_int(int(last) + 1))
        moved = time.perf_counter() - t
        peak_move = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        anon_move = sampler.stop()
        heap = ""
        if python_heap:
            heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
            heap = f"; Python heap (tracemalloc) peak {heap_peak:.1f} MiB"
            tracemalloc.stop()
        sampler = AnonPeak()
        store.cleanup()
        total = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        anon_cleanup = sampler.stop()
        print(
            f"compacted {result.events:,} events ({tables} LevelDB tables) into "
            f"{len(result.files)} file(s), {result.bytes / 1e6:.1f} MB: "
            f"move {result.events / moved:,.0f} ev/s, with cleanup {result.events / total:,.0f} "
            f"ev/s; RSS after open {before / 1024:.1f} MiB, peak while moving "
            f"{peak_move / 1024:.1f} MiB, with cleanup {peak / 1024:.1f} MiB; anonymous "
            f"memory {anon_before / 1024:.1f} MiB before, peak {anon_move / 1024:.1f} MiB "
            f"while moving, {anon_cleanup / 1024:.1f} MiB while cleaning up{heap}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--path", default="/tmp/eventstore-compaction-memory")
    parser.add_argument("--step", choices=["fill", "compact"])
    parser.add_argument(
        "--python-heap", action="store_true", help="also trace the Python heap (slower move)"
    )
    args = parser.parse_args()
    if args.step == "fill":
        fill(args.path, args.events, args.streams)
    elif args.step == "compact":
        compact(args.path, args.python_heap)
    else:
        shutil.rmtree(args.path, ignore_errors=True)
        for step in ("fill", "compact"):
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--step",
                    step,
                    "--path",
                    args.path,
                    "--events",
                    str(args.events),
                    "--streams",
                    str(args.streams),
                    *(["--python-heap"] if args.python_heap else []),
                ],
                check=True,
            )
        shutil.rmtree(args.path, ignore_errors=True)


if __name__ == "__main__":
    main()
