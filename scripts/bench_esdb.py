"""ESDB cold-tier benchmark: write, replay, get, $all, and bytes on disk.

Importable (``bench_esdb(...)`` returns a dict of figures, for scripts/bench.py
to put side by side with the hot tier) and runnable on its own:

    python scripts/bench_esdb.py --events 200000 --streams 100

Records are encoded before the clock starts: compaction hands the writer the
hot tier's record bytes unchanged, so encoding is not the writer's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from typing import Any

from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.ids import MonotonicULIDs
from eventstore.records import encode_record


def make_events(n_events: int, n_streams: int, seed: int = 42) -> list[tuple[str, bytes, bytes]]:
    """(stream, id16, record) in writer order: streams sorted, ids increasing.

    Ids are assigned in global order and streams interleave at random, as in a
    real store; data looks like a small business event.
    """
    rnd = random.Random(seed)
    ids = MonotonicULIDs().next_ints(n_events)
    streams = [f"order-{i:06d}" for i in range(n_streams)]
    per: dict[str, list[tuple[int, int]]] = {s: [] for s in streams}
    for seq, id_int in enumerate(ids, 1):
        per[streams[rnd.randrange(n_streams)]].append((id_int, seq))
    types = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderPaid", "OrderShipped"]
    out: list[tuple[str, bytes, bytes]] = []
    for stream in sorted(per):
        for version, (id_int, seq) in enumerate(per[stream]):
            type_ = types[rnd.randrange(len(types))]
            data = {
                "sku": f"SKU-{rnd.randrange(10_000):05d}",
                "qty": rnd.randrange(1, 10),
                "price": round(rnd.uniform(1, 500), 2),
                "note": "gift wrap" if rnd.random() < 0.1 else "",
            }
            meta = {"user": f"u{rnd.randrange(1000)}", "ip": "10.0.0.1"}
            idx = {"customer": f"c{rnd.randrange(50)}"}
            rec = encode_record(version, seq, type_, data, meta, idx)
            out.append((stream, id_int.to_bytes(16, "big"), rec))
    return out


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_esdb(
    n_events: int = 100_000,
    n_streams: int = 100,
    n_gets: int = 20_000,
    codec: str = "zstd",
    block_size: int | None = None,
    workdir: str | None = None,
    events: list[tuple[str, bytes, bytes]] | None = None,
) -> dict[str, Any]:
    """Run the ESDB workload; events/s figures and sizes in a dict.

    ``events`` lets a caller pass the exact (stream, id16, record) list the
    hot tier was fed, so both tiers are measured on the same bytes.
    """
    if events is None:
        events = make_events(n_events, n_streams)
    n_events = len(events)
    own = workdir is None
    folder = tempfile.mkdtemp(prefix="bench-esdb-") if own else str(workdir)
    path = os.path.join(folder, f"bench-{os.getpid()}-{time.time_ns()}.esdb")
    try:
        kwargs: dict[str, Any] = {"codec": codec}
        if block_size is not None:
            kwargs["block_size"] = block_size
        t0 = time.perf_counter()
        w = ESDBWriter(path, **kwargs)
        for stream, id16, rec in events:
            w.add(stream, id16, rec)
        meta = w.finish()
        t_write = time.perf_counter() - t0

        with ESDBReader(path) as r:
            counts: dict[str, int] = {}
            for stream, _, _ in events:
                counts[stream] = counts.get(stream, 0) + 1
            big = max(counts, key=lambda s: counts[s])
            # Replay every stream once (cold decode of every block), then the
            # biggest stream a few times: what an aggregate load costs.
            t0 = time.perf_counter()
            n = 0
            for stream in counts:
                for _ in r.read_stream(stream):
                    n += 1
            t_replay_all = time.perf_counter() - t0
            reps = max(1, 200_000 // counts[big])
            t0 = time.perf_counter()
            m = 0
            for _ in range(reps):
                for _ in r.read_stream(big):
                    m += 1
            t_replay = time.perf_counter() - t0

            rnd = random.Random(7)
            sample = [events[rnd.randrange(n_events)][1] for _ in range(n_gets)]
            t0 = time.perf_counter()
            for id16 in sample:
                if r.get(id16) is None:
                    raise AssertionError("get missed an event the file holds")
            t_get = time.perf_counter() - t0

            t0 = time.perf_counter()
            k = sum(1 for _ in r.read_all())
            t_all = time.perf_counter() - t0

            t0 = time.perf_counter()
            r.verify()
            t_verify = time.perf_counter() - t0
        size = os.path.getsize(path)
        payload = sum(len(rec) for _, _, rec in events)
        assert n == n_events and k == n_events
        return {
            "events": n_events,
            "streams": len(counts),
            "codec": codec,
            "block_size": block_size,
            "write_events_per_s": _rate(n_events, t_write),
            "replay_all_streams_events_per_s": _rate(n, t_replay_all),
            "replay_stream_events_per_s": _rate(m, t_replay),
            "replay_stream": big,
            "replay_stream_events": counts[big],
            "get_per_s": _rate(n_gets, t_get),
            "read_all_events_per_s": _rate(k, t_all),
            "verify_events_per_s": _rate(n_events, t_verify),
            "file_bytes": size,
            "file_bytes_per_event": size / n_events,
            "record_bytes_per_event": payload / n_events,
            "compression_ratio": payload / size,
            "blocks": meta.block_count,
        }
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
        elif os.path.exists(path):
            os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--gets", type=int, default=20_000)
    ap.add_argument("--codec", default="zstd", choices=["zstd", "zlib", "none"])
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    res = bench_esdb(args.events, args.streams, args.gets, args.codec, args.block_size)
    if args.json:
        print(json.dumps(res))
        return
    for key, value in res.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        print(f"{key:34} {shown:>16}")


if __name__ == "__main__":
    main()
