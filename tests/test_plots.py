"""A smoke test of scripts/plots.py: its measuring runs without matplotlib and
gives sane figures; with matplotlib installed, both plots are drawn."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plots() -> ModuleType:
    path = ROOT / "scripts" / "plots.py"
    spec = importlib.util.spec_from_file_location("plots", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # imports scripts/bench.py as "bench"
    finally:
        sys.path[:] = saved
    return module


@pytest.fixture(scope="module")
def scaling(plots: ModuleType) -> dict[str, Any]:
    lines: list[str] = []
    result: dict[str, Any] = plots.measure_scaling(
        [1_000, 3_000], window=1_000, lookups=200, replays=2, progress=lines.append
    )
    assert len(lines) == 4  # 2 sizes x 2 contenders
    return result


def test_measure_scaling_gives_every_measure_per_size(scaling: dict[str, Any]) -> None:
    assert scaling["sizes"] == [1_000, 3_000]
    for name in ("eventstore", "plyvel"):
        for measure in ("append", "get_us", "get_p90_us", "replay"):
            values = scaling[name][measure]
            assert len(values) == 2 and all(v > 0 for v in values), (name, measure, values)
        assert scaling[name]["get_us"][0] <= scaling[name]["get_p90_us"][0]
        # 1,000 events: one stream; 3,000: three 1,000-event streams, two replayed.
        assert scaling[name]["replayed"] == [1_000, 2_000]


def test_workload_rates_skip_the_summary_entries(plots: ModuleType) -> None:
    results = {
        "append_batched": {"eventstore": 2.0, "plyvel": 4.0, "eventsourcing-sqlite": 1.0},
        "group_commit_gain": {"eventstore": 2.5},
        "tiers": {"events": 10, "replay": {"hot": 1.0}},
    }
    assert plots.workload_rates(results) == {"append_batched": results["append_batched"]}


def test_both_plots_are_drawn(plots: ModuleType, scaling: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    bench = {
        "append_batched": {"eventstore": 166e3, "plyvel": 376e3, "eventsourcing-sqlite": 102e3},
        "durable_1": {"eventstore": 3.8e3, "plyvel": 4.7e3, "eventsourcing-sqlite": 2.9e3},
        "group_commit_gain": {"eventstore": 3.1},
    }
    plots.plot_throughput(bench, tmp_path / "throughput.png", "test")
    plots.plot_scaling(scaling, tmp_path / "scaling.png", "test")
    for name in ("throughput.png", "scaling.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
