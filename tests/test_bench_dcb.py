"""scripts/bench_dcb.py at a tiny size: its parts run and agree, and its
record counter sees every record any read path reads (so the rows-touched
figures it prints are counts, not estimates)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore import EventStore, QueryItem

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    path = ROOT / "scripts" / "bench_dcb.py"
    spec = importlib.util.spec_from_file_location("bench_dcb", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_dcb"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _all_counted(store: EventStore, n: int) -> None:
    """Each read path a query or scan takes, over the whole log, counts each record once."""
    count = bench.count_records
    _, touched = count(lambda: list(store.read_all()))
    assert touched == n
    _, touched = count(lambda: list(store.read_all(backwards=True)))
    assert touched == n
    streams = sorted({e.stream for e in store.read_all()})
    _, touched = count(lambda: [list(store.read_stream(s)) for s in streams])
    assert touched == n
    _, touched = count(lambda: [list(store.read_stream(s, backwards=True)) for s in streams])
    assert touched == n
    _, touched = count(lambda: list(store.query([QueryItem(tags=["all"])])))
    assert touched == n


def test_the_record_counter_sees_every_read_in_every_tier(tmp_path: Path) -> None:
    store, _ = bench.build(tmp_path / "s", 600, matches=6, batch=50)
    try:
        _all_counted(store, 600)
        bench.compact_to(store, 0.5)
        assert store.archive_files()
        _all_counted(store, 600)
        bench.compact_to(store, 1.0)
        _all_counted(store, 600)
        # And it counts nothing once it is no longer active.
        counter = bench.RecordCounter()
        with counter.active():
            list(store.read_all(limit=10))
        list(store.read_all())
        assert counter.records == 10
    finally:
        store.close()


def test_build_spreads_one_tag_over_the_log(tmp_path: Path) -> None:
    store, tag = bench.build(tmp_path / "s", 1000, matches=10, batch=64)
    try:
        got = list(store.query([QueryItem(tags=[tag])]))
        assert len(got) == 10
        assert got[-1].seq - got[0].seq == 900  # evenly, every 100th event
        assert store.last_seq == 1000
    finally:
        store.close()


def test_the_script_at_a_tiny_size(tmp_path: Path) -> None:
    out: dict[str, Any] = bench.main(
        [
            "--events", "3000", "--matches", "30", "--reps", "1", "--scan-reps", "1",
            "--appends", "50", "--rounds", "3", "--decisions", "40", "--no-postgres",
            "--json", str(tmp_path / "out.json"),
        ]
    )  # fmt: skip
    query = out["query"]
    for phase in ("hot", "mixed", "cold"):
        r = query[phase]
        assert r["returned"] == 30
        assert r["scan_touched"] == 3000  # the scan reads the whole log
        assert r["returned"] <= r["query_touched"] <= r["scan_touched"]
    # The hot tier's tag index reads the matching records only.
    assert query["hot"]["query_touched"] == 30
    appends = out["appends"]
    assert appends["plain_s"] > 0 and appends["conditional_s"] > 0
    for mode in ("no_fsync", "durable"):
        decisions = out["decisions"][f"eventstore_{mode}"]
        assert decisions["made"] + decisions["refused"] == 40 and decisions["made"] > 0
    assert not any(k.startswith("postgres") for k in out["decisions"])
    assert (tmp_path / "out.json").read_text().startswith("{")


def test_a_failed_condition_in_the_decision_workload_is_an_error(tmp_path: Path) -> None:
    """The workload decides serially, so no condition may fail: one that did
    would mean a read missed an event of its own boundary."""
    from eventsourcing.dcb.api import DCBEvent
    from eventsourcing.persistence import IntegrityError

    class Interloper:
        """A recorder that lands a conflicting event between each read and append."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def read(self, query: Any = None, **kw: Any) -> Any:
            response = self.inner.read(query, **kw)
            if query is not None and "StudentSubscribed" in query.items[0].types:
                tags = query.items[0].tags
                self.inner.append([DCBEvent("StudentSubscribed", b"", [*tags, "student:x"])])
            return response

        def append(self, events: Any, condition: Any = None) -> int:
            return int(self.inner.append(events, condition))

    from eventstore.contrib.eventsourcing import EventStoreDCBRecorder

    with EventStore.open(tmp_path / "s") as store, pytest.raises(IntegrityError):
        bench.decisions(Interloper(EventStoreDCBRecorder(store)), 5, 2, 10)


@pytest.mark.skipif(bench.Postgres.find() is None, reason="no Debian PostgreSQL server")
def test_the_postgres_part_when_postgres_is_installed() -> None:
    pytest.importorskip("psycopg")
    out = bench.main(["--only", "decisions", "--decisions", "20"])
    d = out["decisions"]
    # The same decisions on the same seed: the same outcomes on every
    # recorder, durable or not.
    outcomes = {
        (d[f"{who}_{mode}"]["made"], d[f"{who}_{mode}"]["refused"])
        for who in ("eventstore", "postgres")
        for mode in ("no_fsync", "durable")
    }
    assert len(outcomes) == 1
    assert d["ratio_no_fsync"] > 0 and d["ratio_durable"] > 0
