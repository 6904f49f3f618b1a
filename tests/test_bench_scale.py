"""scripts/bench_scale.py at a tiny size: it fills, compacts on its schedule,
merges, resumes where it stopped, and measures every figure for both
contenders (the figures themselves are not asserted: speed is never tested)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore import EventStore

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--window", "2000", "--compact-every", "2000", "--merge-at", "2",
    "--rate-window", "2000", "--lookups", "50", "--replays", "3",
    "--per-append", "10", "--quiet",
]  # fmt: skip


def _load(name: str) -> ModuleType:
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    return _load("bench_scale")


def test_fills_measures_and_resumes(scale: ModuleType, tmp_path: Path) -> None:
    d = str(tmp_path / "run")
    out = tmp_path / "scale.json"
    first: dict[str, Any] = scale.main(["--sizes", "6000", "--dir", d, *TINY])
    assert [r["size"] for r in first["results"]] == [6000]
    # A second run with a larger size goes on from 6,000 events.
    report: dict[str, Any] = scale.main(
        ["--sizes", "6000,12000", "--dir", d, "--json", str(out), *TINY]
    )
    assert json.loads(out.read_text()) == report
    results = report["results"]
    assert [r["size"] for r in results] == [6000, 12000]
    assert results[0] == first["results"][0]  # measured once, kept
    for r in results:
        # The hot tier is kept to the window (plus at most one interval).
        assert r["hot_events"] <= 2000 + 2000
        assert r["cold_events"] + r["hot_events"] == r["size"]
        assert r["stats"] == {"events": r["size"], "streams": r["streams"]}
        for name in ("eventstore", "plyvel"):
            figures = r[name]
            for key in ("append", "read_all", "open_s", "rss_bytes", "disk_bytes_per_event"):
                assert figures[key] > 0, (name, key)
            for key in ("get_hot", "get_cold"):
                assert figures[key]["n"] > 0 and figures[key]["p99"] >= figures[key]["p50"] > 0
            for key in ("replay_hot", "replay_cold", "replay_mixed"):
                assert figures[key] > 0, (name, key)
        assert r["eventstore"]["compact_move"] > 0 and r["eventstore"]["compact_cleanup"] > 0
    assert any("merge" in r["eventstore"] for r in results)
    # Size-tiered (fanout 2 here): each event rewritten at most once per
    # tier, files of 2,000 events up to the 12,000 (tiers 10 to 13).
    for r in results:
        assert 0 <= r["eventstore"]["merge_amplification_total"] <= 3
    assert results[1]["eventstore"]["merge_rewritten"] > 0
    # Measured again at the size it holds: the reads anew, the fill's figures kept.
    again: dict[str, Any] = scale.main(["--dir", d, "--remeasure", *TINY])
    assert [r["size"] for r in again["results"]] == [6000, 12000]
    assert again["results"][0] == results[0]
    assert again["results"][1]["eventstore"]["append"] == results[1]["eventstore"]["append"]
    with EventStore.open(str(Path(d) / "eventstore")) as store:
        assert store.last_seq == 12000
        assert store.archive_files()
    # scripts/plots.py draws the report.
    pytest.importorskip("matplotlib")
    plots = _load("plots")
    plots.plot_scale(report, tmp_path / "scale.png", "test")
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_refuses_other_options_on_the_same_folder(scale: ModuleType, tmp_path: Path) -> None:
    d = str(tmp_path / "run")
    scale.main(["--sizes", "2000", "--dir", d, *TINY])
    with pytest.raises(SystemExit, match="filled with"):
        scale.main(["--sizes", "4000", "--dir", d, *TINY, "--new-stream-every", "3"])


def test_the_shape_is_skewed_and_grows(scale: ModuleType) -> None:
    shape = scale.Shape(10, 10)
    model = scale.Model(shape)
    model.advance_to(20_000)
    sizes = sorted((v + 1 for v in model.version), reverse=True)
    assert len(sizes) == 2_000  # a new stream every 10 appends
    assert all(v >= 0 for v in model.version)  # each stream got its first append
    assert sizes[0] > 20 * statistics_median(sizes)  # a few long streams


def statistics_median(values: list[int]) -> float:
    import statistics

    return statistics.median(values)


def test_many_files_measures_open_and_rss_against_one(scale: ModuleType, tmp_path: Path) -> None:
    out: dict[str, Any] = scale.main(
        ["--many-files", "4", "--events-per-file", "100", "--dir", str(tmp_path), "--quiet"]
    )
    assert out["files"] == 4
    for label in ("many", "one"):
        assert out[label]["open_s"] > 0 and out[label]["rss_bytes"] > 0


def test_the_profiles_run_on_a_filled_store(tmp_path: Path) -> None:
    import subprocess

    d = str(tmp_path / "run")
    _load("bench_scale").main(["--sizes", "6000", "--dir", d, *TINY])
    script = str(ROOT / "scripts" / "profile_scale.py")
    for args in (["get", d], ["replay", d], ["stats", d], ["cleanup", "3000"], ["cycles", "400"]):
        out = subprocess.run(
            [sys.executable, script, *args, "--no-profile"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip(), args
