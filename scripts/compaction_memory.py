"""Peak memory of one compaction of a large range (issue 4: bounded by the
largest stream, not by the range).

    python scripts/compaction_memory.py --events 2000000 --streams 20000 --path /tmp/cm

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


def fill(path: str, events: int, streams: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import bench

    from eventstore import EventStore

    batch = bench.make_events(10_000)
    with EventStore.open(path) as store:
        for start in range(0, events, 100):
            store.append(f"s-{(start // 100) % streams:06d}", batch[start % 10_000 :][:100])


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


def compact(path: str) -> None:
    from ulid import ULID

    from eventstore import EventStore

    with EventStore.open(path) as store:
        before = rss_kib()
        anon_before = rss_kib("RssAnon")
        last = next(store.read_all(backwards=True)).id
        sampler = AnonPeak()
        t = time.perf_counter()
        result = store.compact(before=ULID.from_int(int(last) + 1))
        moved = time.perf_counter() - t
        peak_move = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        store.cleanup()
        total = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        anon_peak = sampler.stop()
        print(
            f"compacted {result.events:,} events into {len(result.files)} file(s), "
            f"{result.bytes / 1e6:.1f} MB: move {result.events / moved:,.0f} ev/s, "
            f"with cleanup {result.events / total:,.0f} ev/s; "
            f"RSS after open {before / 1024:.1f} MiB, peak while moving "
            f"{peak_move / 1024:.1f} MiB, peak with cleanup {peak / 1024:.1f} MiB; "
            f"anonymous (heap) memory {anon_before / 1024:.1f} MiB before, "
            f"peak {anon_peak / 1024:.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--path", default="/tmp/eventstore-compaction-memory")
    parser.add_argument("--step", choices=["fill", "compact"])
    args = parser.parse_args()
    if args.step == "fill":
        fill(args.path, args.events, args.streams)
    elif args.step == "compact":
        compact(args.path)
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
                ],
                check=True,
            )
        shutil.rmtree(args.path, ignore_errors=True)


if __name__ == "__main__":
    main()
