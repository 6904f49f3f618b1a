"""Benchmarks of the event-sourcing layer: subscriptions and aggregates.

``bench_subscriptions`` measures catch-up throughput side by side with a plain
``read_all`` over the same store in the same run (the ratio is the figure
that matters on a noisy machine), and live delivery latency from the start
of an append to each subscriber receiving the event, with 1 and 8
subscribers. ``bench_aggregates`` loads an aggregate of 10,000 events with a
snapshot near its end and without one, next to replaying only the events
after the snapshot. Both return dicts of figures; ``scripts/bench.py`` calls
them, and this module runs alone too:

    python scripts/bench_es.py            # full sizes
    python scripts/bench_es.py --quick    # small sizes (a smoke test)
    python scripts/bench_es.py --json     # the dicts as JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from eventstore import EventStore, NewEvent
from eventstore.aggregates import Aggregate, Repository
from eventstore.subscriptions import DEFAULT_PAGE_SIZE, Subscription

TYPES = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderPaid", "OrderShipped"]


def _events(n: int, start: int = 0) -> list[NewEvent]:
    return [
        NewEvent(
            TYPES[i % len(TYPES)],
            {"sku": f"SKU-{i % 9973:05d}", "qty": i % 7 + 1, "price": (i * 37) % 50_000 / 100},
            metadata={"user": f"u{i % 1000}"},
        )
        for i in range(start, start + n)
    ]


def _median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def bench_subscriptions(
    n_events: int = 200_000,
    latency_events: int = 1000,
    runs: int = 5,
    page_size: int = DEFAULT_PAGE_SIZE,
    subscriber_counts: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """Catch-up throughput vs ``read_all`` and live latency (microseconds)."""
    folder = tempfile.mkdtemp(prefix="bench-es-")
    out: dict[str, Any] = {"events": n_events, "page_size": page_size}
    try:
        with EventStore.open(folder) as store:
            batch = 100
            for k in range(0, n_events, batch):
                store.append(f"order-{k // batch % 1000}", _events(min(batch, n_events - k), k))

            def read_all() -> None:
                n = 0
                for _ in store.read_all():
                    n += 1
                assert n == n_events

            def catch_up() -> None:
                n = 0
                with Subscription(store, page_size=page_size) as sub:
                    while sub.get(timeout=0) is not None:
                        n += 1
                assert n == n_events

            # Alternate the two so that both see the same machine, and take
            # the best of each: on a shared machine, noise only ever slows.
            t_read, t_sub = [], []
            for _ in range(runs):
                t_read.append(_median_time(read_all, 1))
                t_sub.append(_median_time(catch_up, 1))
            read_eps = n_events / min(t_read)
            sub_eps = n_events / min(t_sub)
            out["read_all_eps"] = round(read_eps)
            out["catch_up_eps"] = round(sub_eps)
            out["catch_up_vs_read_all"] = round(sub_eps / read_eps, 3)

            for count in subscriber_counts:
                out[f"live_{count}"] = _live_latency(store, count, latency_events)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _live_latency(store: EventStore, subscribers: int, events: int) -> dict[str, float]:
    """Append one event at a time; each subscriber notes when it gets it.
    The next append waits until every subscriber has had the last one."""
    start = list(store.read_all(backwards=True, limit=1))
    after = start[0].id if start else None
    subs = [Subscription(store, after=after) for _ in range(subscribers)]
    received: list[list[int]] = [[] for _ in subs]
    barrier = threading.Barrier(subscribers + 1)

    def consume(k: int) -> None:
        sub, mine = subs[k], received[k]
        for _ in range(events):
            event = sub.get()
            mine.append(time.perf_counter_ns())
            assert event is not None
            barrier.wait()

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(subscribers)]
    for t in threads:
        t.start()
    sent: list[int] = []
    appended: list[int] = []
    for n in range(events):
        sent.append(time.perf_counter_ns())
        store.append("latency", [NewEvent("Ping", n)])
        appended.append(time.perf_counter_ns())
        barrier.wait()
    for t in threads:
        t.join()
    for sub in subs:
        sub.close()
    lat = [(got[n] - sent[n]) / 1000 for got in received for n in range(events)]
    after_return = [max(0, got[n] - appended[n]) / 1000 for got in received for n in range(events)]
    append_us = [(appended[n] - sent[n]) / 1000 for n in range(events)]
    return {
        "p50_us": round(_percentile(lat, 50), 1),
        "p99_us": round(_percentile(lat, 99), 1),
        "append_p50_us": round(_percentile(append_us, 50), 1),
        "after_append_p50_us": round(_percentile(after_return, 50), 1),
    }


class _Cart(Aggregate):
    stream_prefix = "cart-"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.lines: dict[str, int] = {}
        self.total = 0.0
        self.events = 0

    def add(self, sku: str, qty: int, price: float) -> None:
        self.record("ItemAdded", {"sku": sku, "qty": qty, "price": price})

    def apply_ItemAdded(self, data: Any) -> None:
        self.lines[data["sku"]] = self.lines.get(data["sku"], 0) + data["qty"]
        self.total += data["qty"] * data["price"]
        self.events += 1


def bench_aggregates(n_events: int = 10_000, tail: int = 100, runs: int = 7) -> dict[str, Any]:
    """Load an aggregate of ``n_events`` events with a snapshot ``tail`` events
    before its end, without one, and replay just the tail (milliseconds)."""
    folder = tempfile.mkdtemp(prefix="bench-agg-")
    try:
        with EventStore.open(folder) as store:
            snap_at = n_events - tail  # the snapshot holds this many events
            writer = Repository(store, _Cart, snapshot_every=snap_at)
            cart = _Cart("c1")
            for i in range(n_events):
                cart.add(f"SKU-{i % 97}", i % 5 + 1, (i % 400) / 4)
                if len(cart.pending_events) == 100 or i == n_events - 1:
                    writer.save(cart)
            snap = store.load_snapshot(cart.stream)
            assert snap is not None and snap.version == snap_at - 1, snap

            with_snap = Repository(store, _Cart, snapshot_every=snap_at)
            without = Repository(store, _Cart)
            full = without.get("c1")
            quick = with_snap.get("c1")
            assert (quick.lines, quick.events, quick.version) == (
                full.lines,
                full.events,
                full.version,
            )

            def tail_only() -> None:
                agg = _Cart("c1")
                for event in store.read_stream(cart.stream, from_version=snap_at):
                    agg.apply(event.type, event.data)

            t_without = _median_time(lambda: without.get("c1"), runs)
            t_with = _median_time(lambda: with_snap.get("c1"), runs)
            t_tail = _median_time(tail_only, runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "events": n_events,
        "after_snapshot": tail,
        "load_without_snapshot_ms": round(t_without * 1000, 3),
        "load_with_snapshot_ms": round(t_with * 1000, 3),
        "replay_tail_only_ms": round(t_tail * 1000, 3),
        "with_snapshot_vs_tail_only": round(t_with / t_tail, 2),
        "speedup_from_snapshot": round(t_without / t_with, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        subs = bench_subscriptions(n_events=20_000, latency_events=200, runs=1)
        aggs = bench_aggregates(n_events=2_000, tail=100, runs=3)
    else:
        subs = bench_subscriptions()
        aggs = bench_aggregates()
    if args.json:
        print(json.dumps({"subscriptions": subs, "aggregates": aggs}, indent=2))
        return
    print(
        f"catch-up over {subs['events']:,} events: {subs['catch_up_eps']:,} ev/s, "
        f"read_all {subs['read_all_eps']:,} ev/s: {subs['catch_up_vs_read_all']:.0%} of read_all"
    )
    for key in sorted(k for k in subs if k.startswith("live_")):
        live = subs[key]
        print(
            f"live delivery, {key[5:]} subscriber(s): p50 {live['p50_us']} us, "
            f"p99 {live['p99_us']} us from the start of the append "
            f"(append itself p50 {live['append_p50_us']} us)"
        )
    print(
        f"aggregate of {aggs['events']:,} events: {aggs['load_without_snapshot_ms']} ms "
        f"without a snapshot, {aggs['load_with_snapshot_ms']} ms with one "
        f"{aggs['after_snapshot']} events from the end "
        f"(replaying just those: {aggs['replay_tail_only_ms']} ms; "
        f"x{aggs['with_snapshot_vs_tail_only']}); snapshot speedup "
        f"x{aggs['speedup_from_snapshot']}"
    )


if __name__ == "__main__":
    main()
