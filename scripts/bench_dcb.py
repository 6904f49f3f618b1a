"""DCB benchmark: tag queries, conditional appends, and DCB decisions beside PostgreSQL.

Three parts, each printing its figures and ratios:

(a) ``query``: a query for one tag among N events (``--events``, default
    1,000,000; ``--matches`` events carry the tag), in a hot store, a mixed
    one (the older half compacted into ESDB files) and a cold one (all
    compacted), against a scan of the same log filtered in Python
    (``read_all`` + ``tag in e.tags``). Rows touched are the event records
    the store read from LevelDB or from archive blocks, counted by
    :class:`RecordCounter` (below); the goal is touched/returned near 1.
(b) ``appends``: conditional appends/s beside plain appends/s, one event per
    call, in the same run (interleaved rounds, medians).
(c) ``decisions``: one course-subscription decision per call (read the
    boundary, fold, append on the condition), through ``eventsourcing``'s DCB
    recorder interface, on eventsourcing's PostgreSQL DCB recorder (a
    throwaway cluster from Debian's PostgreSQL under
    ``/usr/lib/postgresql/*/bin``, on a loopback port, stopped after; skipped
    with a message when absent) and on the eventstore DCB recorder.

    python scripts/bench_dcb.py                      # 1M events
    python scripts/bench_dcb.py --events 100000 --no-postgres
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventstore import AppendCondition, EventStore, NewEvent, Query, QueryItem
from eventstore.ids import ulid_from_int

# -- counting the records a read touches ---------------------------------------------


class RecordCounter:
    """Counts event records read from storage while it is active: in the hot
    tier, the records :func:`eventstore.hot.lazy_events` is handed (scans,
    stream reads and queries read records into it; ``get`` does not); in archive files, the records
    ``ESDBReader._event`` decodes one by one and ``ESDBReader._decode_range``
    decodes a block range at a time. It wraps those functions for the
    duration (no change to the store), and tests/test_bench_dcb.py checks
    that a full scan of a hot, a mixed and a cold store counts every event
    once, so no read path escapes it."""

    def __init__(self) -> None:
        self.records = 0

    @contextmanager
    def active(self) -> Iterator[RecordCounter]:
        from eventstore import hot
        from eventstore.esdb import reader

        lazy = hot.lazy_events
        event = reader.ESDBReader._event
        decode_range = reader.ESDBReader._decode_range

        def counted_lazy(ids: list[bytes], streams: Any, raws: list[bytes]) -> Any:
            self.records += len(raws)
            return lazy(ids, streams, raws)

        def counted_event(r: Any, *args: Any) -> Any:
            self.records += 1
            return event(r, *args)

        def counted_range(r: Any, blk: Any, a: int, b: int, bi: int) -> Any:
            self.records += b - a
            return decode_range(r, blk, a, b, bi)

        setattr(hot, "lazy_events", counted_lazy)  # noqa: B010 (the names are looked up per call)
        setattr(reader.ESDBReader, "_event", counted_event)  # noqa: B010
        setattr(reader.ESDBReader, "_decode_range", counted_range)  # noqa: B010
        try:
            yield self
        finally:
            setattr(hot, "lazy_events", lazy)  # noqa: B010
            setattr(reader.ESDBReader, "_event", event)  # noqa: B010
            setattr(reader.ESDBReader, "_decode_range", decode_range)  # noqa: B010


def count_records(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the number of event records it read."""
    counter = RecordCounter()
    with counter.active():
        result = fn()
    return result, counter.records


# -- (a) one tag among N events -------------------------------------------------------


def build(path: Path, n: int, matches: int, batch: int = 1000) -> tuple[EventStore, str]:
    """A store of ``n`` events, each tagged ``group:<i % groups>`` and ``all``,
    so that each group tag is carried by ``matches`` events spread evenly
    through the log; returns it and the tag to query."""
    groups = max(1, n // max(1, matches))
    store = EventStore.open(path)
    data = {"amount": 1, "note": "x" * 40}
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        store.append(
            f"s-{start // batch % 100}",
            [
                NewEvent("Happened", data, tags=[f"group:{i % groups}", "all"])
                for i in range(start, stop)
            ],
        )
    return store, f"group:{groups // 2}"


def compact_to(store: EventStore, fraction: float) -> None:
    """Compact the oldest ``fraction`` of the log (1.0: all of it)."""
    last = store.last_seq
    if fraction >= 1.0:
        event = next(store.read_all(backwards=True, limit=1))
        store.compact(before=ulid_from_int(int(event.id) + 1))
        return
    cut = next(store.read_all(from_seq=max(1, int(last * fraction)), limit=1))
    store.compact(before=cut.id)


def _timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(reps):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def bench_query(store: EventStore, tag: str, reps: int, scan_reps: int) -> dict[str, float]:
    def query() -> list[Any]:
        return list(store.query([QueryItem(tags=[tag])]))

    def scan() -> list[Any]:
        return [e for e in store.read_all() if tag in e.tags]

    q_s, q_events = _timed(query, reps)
    s_s, s_events = _timed(scan, scan_reps)
    assert [e.seq for e in q_events] == [e.seq for e in s_events], "query and scan disagree"
    _, q_touched = count_records(query)
    _, s_touched = count_records(scan)
    returned = len(q_events)
    return {
        "returned": returned,
        "query_ms": q_s * 1000,
        "scan_ms": s_s * 1000,
        "query_events_s": returned / q_s if q_s else 0.0,
        "scan_events_s": returned / s_s if s_s else 0.0,
        "speedup": s_s / q_s if q_s else 0.0,
        "query_touched": q_touched,
        "scan_touched": s_touched,
        "query_touched_per_returned": q_touched / returned if returned else 0.0,
        "scan_touched_per_returned": s_touched / returned if returned else 0.0,
    }


def part_query(folder: Path, n: int, matches: int, reps: int, scan_reps: int) -> dict[str, Any]:
    t = time.perf_counter()
    store, tag = build(folder / "query", n, matches)
    built = time.perf_counter() - t
    out: dict[str, Any] = {"events": n, "build_s": built}
    try:
        print(f"(a) one tag ({tag}) among {n} events; built in {built:.1f} s", flush=True)
        print(
            f"    {'store':6} {'returned':>8} {'query ms':>9} {'scan ms':>9} {'speedup':>8}"
            f" {'touched/returned':>17} {'(scan)':>9}"
        )
        for phase, fraction in (("hot", 0.0), ("mixed", 0.5), ("cold", 1.0)):
            if fraction:
                t = time.perf_counter()
                compact_to(store, fraction)
                out[f"compact_{phase}_s"] = time.perf_counter() - t
            r = bench_query(store, tag, reps, scan_reps)
            out[phase] = r
            print(
                f"    {phase:6} {r['returned']:>8.0f} {r['query_ms']:>9.2f} {r['scan_ms']:>9.1f}"
                f" {r['speedup']:>7.0f}x {r['query_touched_per_returned']:>17.2f}"
                f" {r['scan_touched_per_returned']:>9.0f}",
                flush=True,
            )
    finally:
        store.close()
    return out


# -- (b) conditional appends beside plain appends -------------------------------------


def part_appends(folder: Path, per_round: int, rounds: int, keys: int = 1000) -> dict[str, float]:
    """Plain and conditional one-event appends, interleaved rounds of
    ``per_round`` each. A conditional append is what a decision sends: its
    boundary (one tag) and the position it read (the store's last seq), so
    it passes; the check is what it costs."""
    store = EventStore.open(folder / "appends")
    data = {"amount": 1}
    plain: list[float] = []
    conditional: list[float] = []
    try:
        # A log to check against, so a condition meets a populated tag index.
        for k in range(0, 10 * keys, 500):
            store.append(
                "seed", [NewEvent("Seed", data, tags=[f"key:{(k + i) % keys}"]) for i in range(500)]
            )
        i = 0
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(per_round):
                store.append("plain", [NewEvent("Happened", data, tags=[f"key:{i % keys}"])])
                i += 1
            plain.append(per_round / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(per_round):
                tag = f"key:{i % keys}"
                condition = AppendCondition(Query([QueryItem(tags=[tag])]), after=store.last_seq)
                store.append(
                    "decided", [NewEvent("Happened", data, tags=[tag])], condition=condition
                )
                i += 1
            conditional.append(per_round / (time.perf_counter() - t))
    finally:
        store.close()
    p, c = statistics.median(plain), statistics.median(conditional)
    print(f"(b) appends, one event per call, median of {rounds} interleaved rounds of {per_round}:")
    print(f"    plain       {p:>10.0f}/s")
    print(f"    conditional {c:>10.0f}/s   {c / p:.2f}x plain", flush=True)
    return {"plain_s": p, "conditional_s": c, "ratio": c / p}


# -- (c) DCB decisions: eventstore's and PostgreSQL's DCB recorders -------------------


def decisions(
    recorder: Any, students: int, courses: int, n: int, seed: int = 7
) -> dict[str, float]:
    """Register the students and courses, then ``n`` subscription decisions
    (random student and course) through the DCBRecorder interface: read the
    boundary, fold it, append on its condition. Returns decisions/s and the
    outcome counts (which match across recorders for the same seed)."""
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem

    for c in range(courses):
        recorder.append([DCBEvent("CourseDefined", b"%d" % 30, [f"course:{c}"])])
    for s in range(students):
        recorder.append([DCBEvent("StudentRegistered", b"%d" % 5, [f"student:{s}"])])
    rng = random.Random(seed)
    picks = [(rng.randrange(students), rng.randrange(courses)) for _ in range(n)]
    made = refused = 0
    t = time.perf_counter()
    for s, c in picks:
        st, co = f"student:{s}", f"course:{c}"
        boundary = DCBQuery(
            [
                DCBQueryItem(types=["CourseDefined", "StudentSubscribed"], tags=[co]),
                DCBQueryItem(types=["StudentRegistered", "StudentSubscribed"], tags=[st]),
            ]
        )
        read = recorder.read(boundary)
        capacity = limit = taken = mine = 0
        again = False
        for e in read:
            ev = e.event
            if ev.type == "CourseDefined":
                capacity = int(ev.data)
            elif ev.type == "StudentRegistered":
                limit = int(ev.data)
            elif co in ev.tags and st in ev.tags:
                again = True
            else:
                taken += co in ev.tags
                mine += st in ev.tags
        if again or taken >= capacity or mine >= limit:
            refused += 1
            continue
        recorder.append(
            [DCBEvent("StudentSubscribed", b"", [co, st])],
            DCBAppendCondition(boundary, after=read.head),
        )
        made += 1
    elapsed = time.perf_counter() - t
    return {"decisions_s": n / elapsed, "made": made, "refused": refused}


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary folder, on a loopback
    port (run as the postgres user when this runs as root)."""

    def __init__(self, bindir: str, durable: bool = True) -> None:
        self.bin = bindir
        # durable=False: synchronous_commit=off, PostgreSQL's counterpart of
        # eventstore's sync=False (a crash may lose the last commits, never
        # half of one).
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="bench-dcb-pg-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def find() -> str | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        return os.path.dirname(found[-1]) if found else None

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, os.path.join(self.bin, tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def __enter__(self) -> Postgres:
        data = str(self.folder / "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "bench")
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-l",
            str(self.folder / "log"),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            + ("" if self.durable else " -c synchronous_commit=off"),
            "-w",
            "start",
        )
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", "bench")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [
                *self.as_user,
                os.path.join(self.bin, "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "fast",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.dcb.postgres_tt",
            "POSTGRES_DBNAME": "bench",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": "bench",
            "POSTGRES_PASSWORD": "x",
        }


def part_decisions(folder: Path, n: int, postgres: bool) -> dict[str, Any]:
    """The decision workload on each recorder, like against like: eventstore
    with sync=False beside PostgreSQL with synchronous_commit=off (neither
    waits for the disk at a commit), and eventstore with sync=True beside
    PostgreSQL's defaults (both fsync every commit)."""
    from eventsourcing.dcb.persistence import DCBInfrastructureFactory

    students, courses = max(10, n // 4), max(5, n // 40)
    out: dict[str, Any] = {"decisions": n, "students": students, "courses": courses}
    print(f"(c) DCB decisions (course subscriptions, {students} students, {courses} courses):")

    def show(label: str, got: dict[str, float]) -> None:
        print(
            f"    {label:<34} {got['decisions_s']:>9.0f}/s"
            f"  ({got['made']:.0f} made, {got['refused']:.0f} refused)",
            flush=True,
        )

    for durable in (False, True):
        mode = "durable" if durable else "no_fsync"
        env = {
            "PERSISTENCE_MODULE": "eventstore.contrib.eventsourcing",
            "EVENTSTORE_PATH": str(folder / f"dcb-{mode}"),
            "EVENTSTORE_SYNC": "y" if durable else "n",
        }
        factory = DCBInfrastructureFactory.construct(env)
        try:
            out[f"eventstore_{mode}"] = decisions(factory.dcb_recorder(), students, courses, n)
        finally:
            factory.close()
        show(f"eventstore (sync={durable})", out[f"eventstore_{mode}"])
    bindir = Postgres.find() if postgres else None
    if not postgres:
        print("    PostgreSQL: skipped (--no-postgres)")
        return out
    if bindir is None:
        print("    PostgreSQL: skipped (no /usr/lib/postgresql/*/bin/initdb)")
        return out
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("    PostgreSQL: skipped (no psycopg: pip install 'tiered-eventstore[bench]')")
        return out
    for durable in (False, True):
        mode = "durable" if durable else "no_fsync"
        with Postgres(bindir, durable) as pg:
            pg_factory = DCBInfrastructureFactory.construct(pg.env())
            try:
                out[f"postgres_{mode}"] = decisions(pg_factory.dcb_recorder(), students, courses, n)
            finally:
                pg_factory.close()
        label = "synchronous_commit=" + ("on" if durable else "off")
        show(f"PostgreSQL ({label})", out[f"postgres_{mode}"])
        ratio = out[f"eventstore_{mode}"]["decisions_s"] / out[f"postgres_{mode}"]["decisions_s"]
        out[f"ratio_{mode}"] = ratio
        print(f"    eventstore / PostgreSQL, {mode:<15} {ratio:>9.2f}x", flush=True)
    return out


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the query store")
    parser.add_argument("--matches", type=int, default=100, help="events carrying the queried tag")
    parser.add_argument("--reps", type=int, default=5, help="timed query runs (median)")
    parser.add_argument("--scan-reps", type=int, default=3, help="timed scan runs (median)")
    parser.add_argument("--appends", type=int, default=2000, help="appends per round and kind")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved append rounds (>= 3)")
    parser.add_argument("--decisions", type=int, default=2000, help="DCB decisions per recorder")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL part")
    parser.add_argument("--only", choices=["query", "appends", "decisions"], action="append")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    parts = set(args.only or ["query", "appends", "decisions"])
    folder = Path(tempfile.mkdtemp(prefix="bench-dcb-"))
    results: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else argv}
    try:
        if "query" in parts:
            results["query"] = part_query(
                folder, args.events, args.matches, args.reps, args.scan_reps
            )
        if "appends" in parts:
            results["appends"] = part_appends(folder, args.appends, max(3, args.rounds))
        if "decisions" in parts:
            results["decisions"] = part_decisions(folder, args.decisions, not args.no_postgres)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
