"""The plots of docs/benchmarks.md, drawn from measurements (PNGs in docs/img/).

- ``throughput.png``: events per second of eventstore, raw plyvel and the
  ``eventsourcing`` library's SQLite recorder for each workload of
  ``scripts/bench.py`` (read from its ``--json`` file, or run here).
- ``scale.png``: the figures of ``scripts/bench_scale.py --json`` (a store
  compacted on a schedule against raw plyvel, 1e5 to 1e7 events and more):
  ``python scripts/plots.py --only scale --scale-json /tmp/scale.json``.
- ``scaling.png``: cost against store size. For each size (default 1e4 to
  1e7 events), a fresh store is filled with that many events, in appends of
  100 across ``size / 1000`` streams (every stream ends with 1,000 events, so
  a replay reads as much at every size), and then measured: the append rate
  of the last 10% of the events (at least 10,000; the whole fill's rate is
  recorded too), the median latency of random ``get`` calls, and the replay
  rate of randomly chosen streams. Raw plyvel (one key per event, the store's
  LevelDB options) gets the same events, side by side.

    python scripts/bench.py --json /tmp/bench.json --runs 3 --no-esdb
    python scripts/plots.py --bench-json /tmp/bench.json     # both plots
    python scripts/plots.py                                  # runs bench.py's workloads too
    python scripts/plots.py --only scaling --sizes 1e4,1e5   # one plot, other sizes
    python scripts/plots.py --quick                          # small sizes, a smoke test

Filling 1e7 events takes minutes per contender (appends slow down as LevelDB
compacts more levels); memory stays bounded (events are generated once, in
one chunk, and reused; only the ids sampled for lookups are kept). Drawing
needs matplotlib (``pip install 'tiered-eventstore[plots]'``); measuring does not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # scripts/bench.py: events, contenders, workspace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
DEFAULT_SIZES = [10_000, 100_000, 1_000_000, 10_000_000]
QUICK_SIZES = [1_000, 10_000, 100_000]
PER_APPEND = 100  # events per append
STREAM_LENGTH = 1_000  # events per stream, whatever the store's size
CHUNK = 10_000  # events made once and appended over and over (the ids differ)
MEASURES = ("append", "get_us", "replay")
COLORS = {"eventstore": "#1f77b4", "plyvel": "#7f7f7f", "eventsourcing-sqlite": "#d62728"}
MARKERS = {"eventstore": "o", "plyvel": "s"}


# -- measuring (no matplotlib needed) -------------------------------------------


def _fill_and_measure(
    cls: type[bench.Contender],
    path: str,
    size: int,
    chunk: list[Any],
    *,
    window: int,
    lookups: int,
    replays: int,
    seed: int,
) -> dict[str, float]:
    """Fill a fresh ``cls`` store at ``path`` with ``size`` events and measure it."""
    rnd = random.Random(seed)
    streams = max(1, size // STREAM_LENGTH)
    names = [f"order-{s:07d}" for s in range(streams)]
    # The events to look up, chosen before the fill (uniformly, without
    # replacement), so only their ids are ever kept.
    wanted = sorted(rnd.sample(range(size), min(lookups, size)))
    sample: list[Any] = []
    timed_from = max(0, size - window) // PER_APPEND * PER_APPEND  # an append's start
    window = size - timed_from
    t_fill = time.perf_counter()
    c = cls()
    c.open(path)
    try:
        start = 0
        n_appends = 0
        t0 = 0.0
        w = 0  # next index into wanted
        while start < size:
            if start == timed_from:
                t0 = time.perf_counter()
            count = min(PER_APPEND, size - start)
            offset = start % len(chunk)
            events = chunk[offset : offset + count]
            keys = c.append(names[n_appends % streams], events)
            end = start + count
            while w < len(wanted) and wanted[w] < end:
                sample.append(keys[wanted[w] - start])
                w += 1
            start = end
            n_appends += 1
        t_end = time.perf_counter()
        append_rate = window / (t_end - t0)
        fill_rate = size / (t_end - t_fill)

        rnd.shuffle(sample)
        latencies = []
        for key in sample:
            t_ns = time.perf_counter_ns()
            c.get(key)
            latencies.append(time.perf_counter_ns() - t_ns)
        latencies.sort()

        chosen = rnd.sample(names, min(replays, streams))
        t1 = time.perf_counter()
        replayed = sum(c.replay(name) for name in chosen)
        replay_rate = replayed / (time.perf_counter() - t1)
        if size % STREAM_LENGTH == 0 or streams == 1:
            assert replayed == len(chosen) * min(size, STREAM_LENGTH), (cls.name, replayed)
    finally:
        c.close()
    return {
        "append": append_rate,
        "fill": fill_rate,
        "window": window,
        "get_us": statistics.median(latencies) / 1000,
        "get_p90_us": latencies[int(len(latencies) * 0.9)] / 1000,
        "replay": replay_rate,
        "replayed": replayed,
    }


def measure_scaling(
    sizes: list[int],
    *,
    window: int | None = None,
    lookups: int = 3_000,
    replays: int = 20,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fill eventstore and raw plyvel to each size in turn (a fresh store per
    size and contender, removed afterwards) and measure each. Returns
    ``{"sizes": [...], "eventstore": {measure: [value per size]}, "plyvel": ...}``
    with measures ``append`` (events/s over the last ``window`` events; by
    default the last 10%, at least 10,000), ``fill`` (events/s over the whole fill),
    ``get_us`` (median µs of ``lookups`` random gets), ``get_p90_us``, and
    ``replay`` (events/s replaying ``replays`` random streams)."""
    contenders: list[type[bench.Contender]] = [bench.Store, bench.RawPlyvel]
    chunk = bench.make_events(CHUNK)
    out: dict[str, Any] = {
        "sizes": list(sizes),
        "per_append": PER_APPEND,
        "stream_length": STREAM_LENGTH,
        "window": window,  # None: the last 10% of each fill, at least 10,000 events
        "lookups": lookups,
        "replays": replays,
    }
    for cls in contenders:
        out[cls.name] = {m: [] for m in (*MEASURES, "fill", "get_p90_us", "replayed", "window")}
    ws = bench.Workspace()
    try:
        for size in sizes:
            for cls in contenders:  # side by side: same size, back to back
                t = time.perf_counter()
                figures = _fill_and_measure(
                    cls,
                    ws.fresh(f"{cls.name}-{size}"),
                    size,
                    chunk,
                    window=window if window is not None else max(10_000, size // 10),
                    lookups=lookups,
                    replays=replays,
                    seed=size,
                )
                ws.fresh(f"{cls.name}-{size}")  # removes it
                for key, value in figures.items():
                    out[cls.name][key].append(value)
                if progress is not None:
                    progress(
                        f"{size:>12,} events  {cls.name:<11} "
                        f"append {figures['append']:>9,.0f} e/s "
                        f"(whole fill {figures['fill']:,.0f})  "
                        f"get {figures['get_us']:>6.1f} us (p90 {figures['get_p90_us']:.1f})  "
                        f"replay {figures['replay']:>9,.0f} e/s  "
                        f"[{time.perf_counter() - t:.0f} s]"
                    )
    finally:
        ws.close()
    return out


def run_bench(runs: int, quick: bool, progress: Callable[[str], None] | None = None) -> Any:
    """scripts/bench.py's workloads, as its ``--json`` file has them (medians
    of ``runs`` runs, contenders interleaved), without the ESDB section."""
    ws = bench.Workspace()
    results: dict[str, dict[str, float]] = {}
    try:
        for key, (label, fn) in bench.workloads(quick).items():
            # Not the same-keys floor: the plot shows what a user would pick.
            pool = [c for c in bench.contenders() if c is not bench.SameKeys]
            samples: dict[str, list[float]] = {cls.name: [] for cls in pool}
            for _ in range(runs):
                for cls in pool:
                    samples[cls.name].append(fn(cls, ws).wall)
            results[key] = {name: statistics.median(v) for name, v in samples.items()}
            if progress is not None:
                figures = "  ".join(f"{n} {v:,.0f}" for n, v in results[key].items())
                progress(f"{label:<34} {figures}")
    finally:
        ws.close()
    if "durable_1" in results and "durable_16" in results:
        gain = results["durable_16"]["eventstore"] / results["durable_1"]["eventstore"]
        results["group_commit_gain"] = {"eventstore": gain}
    return results


def workload_rates(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The per-workload rates of a bench.py JSON file: entries mapping every
    contender to a number (not ``group_commit_gain``, ``tiers`` and the like)."""
    return {
        key: value
        for key, value in results.items()
        if isinstance(value, dict)
        and "eventstore" in value
        and "plyvel" in value
        and all(isinstance(v, (int, float)) for v in value.values())
    }


# -- drawing ------------------------------------------------------------------------


def _short(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2g}M"
    if rate >= 1e4:
        return f"{rate / 1e3:.0f}k"
    if rate >= 1e3:
        return f"{rate / 1e3:.2g}k"
    return f"{rate:.0f}"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit("drawing needs matplotlib: pip install 'tiered-eventstore[plots]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(results: dict[str, Any], path: Path, note: str = "") -> None:
    plt = _pyplot()
    rates = workload_rates(results)
    if not rates:
        sys.exit("no workload figures in the bench results")
    labels = {key: label for key, (label, _) in bench.workloads(False).items()}
    contenders = [c for c in COLORS if any(c in figures for figures in rates.values())]
    width = 0.8 / len(contenders)
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, name in enumerate(contenders):
        xs = [k + (i - (len(contenders) - 1) / 2) * width for k in range(len(rates))]
        ys = [figures.get(name, 0.0) for figures in rates.values()]
        label = "raw plyvel" if name == "plyvel" else name
        bars = ax.bar(xs, ys, width, label=label, color=COLORS[name])
        for bar, y in zip(bars, ys, strict=True):
            if y > 0:
                ax.annotate(
                    _short(y),
                    (bar.get_x() + bar.get_width() / 2, y),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_yscale("log")
    ax.set_xticks(range(len(rates)))
    ax.set_xticklabels([labels.get(key, key).replace(", ", ",\n") for key in rates], fontsize=8)
    ax.set_ylabel("events per second (gets per second for get), log scale")
    title = "Throughput against baselines (scripts/bench.py, medians)"
    gain = results.get("group_commit_gain", {}).get("eventstore")
    if isinstance(gain, (int, float)):
        title += f"\ngroup commit: 16 threads / 1 thread = {gain:.1f}x"
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    if note:
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="#555555")
    ax.set_ylim(top=ax.get_ylim()[1] * 2)  # room for the labels
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_scaling(scaling: dict[str, Any], path: Path, note: str = "") -> None:
    plt = _pyplot()
    sizes = scaling["sizes"]
    panels = [
        ("append", _window_title(scaling.get("window")), "events per second"),
        ("get_us", "get by id, random (median)", "µs per get"),
        (
            "replay",
            f"replay of random {scaling['stream_length']:,}-event streams",
            "events per second",
        ),
    ]
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.2))
    for ax, (measure, title, unit) in zip(axes, panels, strict=True):
        for name in ("eventstore", "plyvel"):
            if name in scaling:
                ax.plot(
                    sizes,
                    scaling[name][measure],
                    marker=MARKERS[name],
                    color=COLORS[name],
                    label=name if name == "eventstore" else "raw plyvel",
                )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.1)
        if measure != "get_us":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: _short(y)))
        ax.set_xticks(sizes)
        ax.set_xticklabels(
            [f"1e{len(str(s)) - 1}" if _power_of_ten(s) else f"{s:,}" for s in sizes]
        )
        ax.minorticks_off()
        ax.set_xlabel("store size (events, log scale)")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Cost against store size (appends of {scaling['per_append']}, "
        f"{scaling['stream_length']:,} events per stream)",
        fontsize=11,
    )
    if note:
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="#555555")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


SCALE_PANELS = [
    ("append", None, "append rate", "events per second"),
    ("get_hot", "p50", "get, hot ids (p50)", "µs"),
    ("get_cold", "p50", "get, cold ids (p50)", "µs"),
    ("get_cold", "p99", "get, cold ids (p99)", "µs"),
    ("replay_hot", None, "replay, hot streams", "events per second"),
    ("replay_cold", None, "replay, cold streams", "events per second"),
    ("replay_mixed", None, "replay, mixed streams", "events per second"),
    ("read_all", None, "read_all, 10k from a random position", "events per second"),
    ("open_s", None, "open (fresh process)", "seconds"),
    ("rss_bytes", None, "RSS after open and reads", "MiB"),
    ("disk_bytes_per_event", None, "disk", "bytes per event"),
    ("stats_s", None, "stats()", "seconds"),
]


def plot_scale(report: dict[str, Any], path: Path, note: str = "") -> None:
    """The figures of ``scripts/bench_scale.py --json``: each measure against
    the store's size, eventstore (compacted on its schedule) and raw plyvel."""
    plt = _pyplot()
    results = sorted(report["results"], key=lambda r: r["size"])
    sizes = [r["size"] for r in results]
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(3, 4, figsize=(15, 10))
    for ax, (key, sub, title, unit) in zip(axes.flat, SCALE_PANELS, strict=True):
        for name in ("eventstore", "plyvel"):
            ys: list[float] = []
            for r in results:
                v = r[name].get(key)
                if isinstance(v, dict):
                    v = v.get(sub or "")
                # Nothing to measure at that size (no cold ids yet, say): no point.
                ys.append(float("nan") if not v else float(v))
            if key == "rss_bytes":
                ys = [y / (1 << 20) for y in ys]
            if all(y != y for y in ys):  # nothing measured (NaN)
                continue
            ax.plot(
                sizes,
                ys,
                marker=MARKERS[name],
                color=COLORS[name],
                label=name if name == "eventstore" else "raw plyvel",
            )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1] * 1.1, 1e-3))
        if unit == "events per second":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: _short(y)))
        ax.set_xticks(sizes)
        ax.set_xticklabels(
            [f"1e{len(str(s)) - 1}" if _power_of_ten(s) else f"{s:,}" for s in sizes]
        )
        ax.minorticks_off()
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    c = report["config"]
    fig.suptitle(
        f"Cost against history (scripts/bench_scale.py): appends of {c['per_append']}, "
        f"newest {c['window']:,} events kept hot, compacted every {c['compact_every']:,}",
        fontsize=11,
    )
    if note:
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="#555555")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _window_title(window: Any) -> str:
    if isinstance(window, int):
        return f"append rate, last {_short(window)} events"
    return "append rate, last 10% of the events (≥ 10k)"


def _power_of_ten(n: int) -> bool:
    s = str(n)
    return s[0] == "1" and set(s[1:]) <= {"0"} and len(s) > 1


# -- command line ---------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive numbers, got {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-json", help="bench.py --json output (default: run its workloads)")
    parser.add_argument("--runs", type=int, default=3, help="runs of bench.py's workloads")
    parser.add_argument(
        "--sizes", type=_sizes, help="store sizes for the scaling plot (default 1e4,1e5,1e6,1e7)"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1e3..1e5, quick bench, 1 run")
    parser.add_argument("--only", choices=["throughput", "scaling", "scale"], help="draw one plot")
    parser.add_argument("--scale-json", help="bench_scale.py --json output, for scale.png")
    parser.add_argument("--scaling-json", help="plot these scaling figures instead of measuring")
    parser.add_argument("--save-json", help="write the scaling figures to this file")
    parser.add_argument("--out", default=str(OUT), help="folder for the PNGs (default docs/img)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _pyplot()  # fail now, not after minutes of measuring
    note = time.strftime("%Y-%m-%d")

    if args.only in (None, "throughput"):
        if args.bench_json:
            with open(args.bench_json) as f:
                results = json.load(f)
        else:
            runs = 1 if args.quick else args.runs
            print(f"running scripts/bench.py's workloads ({runs} runs; or pass --bench-json)")
            results = run_bench(runs, args.quick, progress=print)
        plot_throughput(results, out / "throughput.png", note)
        print(f"wrote {out / 'throughput.png'}")

    if args.only == "scale" or (args.only is None and args.scale_json):
        if not args.scale_json:
            sys.exit("the scale plot needs --scale-json (run scripts/bench_scale.py --json)")
        with open(args.scale_json) as f:
            report = json.load(f)
        plot_scale(report, out / "scale.png", note)
        print(f"wrote {out / 'scale.png'}")
        if args.only == "scale":
            return

    if args.only in (None, "scaling"):
        if args.scaling_json:
            with open(args.scaling_json) as f:
                scaling = json.load(f)
        else:
            sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
            scaling = measure_scaling(sizes, progress=lambda line: print(line, flush=True))
        if args.save_json:
            with open(args.save_json, "w") as f:
                json.dump(scaling, f, indent=2)
        plot_scaling(scaling, out / "scaling.png", note)
        print(f"wrote {out / 'scaling.png'}")


if __name__ == "__main__":
    main()
