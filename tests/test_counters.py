"""stats() from counters kept with the commit (issue 19): whatever happens to
the store (appends, append_many, imports, compactions, merges, a crash, a
store written without the counter, a repaired hot tier), its counts agree
with a recount that reads every event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import ANY, EventStore, NewEvent, counters, keys
from eventstore._leveldb import plyvel

ROOT = Path(__file__).resolve().parent.parent


def recount(store: EventStore) -> dict[str, Any]:
    """The counts the slow way: every event read, in both tiers."""
    events = list(store.read_all())
    watermark = store.watermark
    hot = [e for e in events if watermark is None or e.id >= watermark]
    cold = sum(f.events for f in store.archive_files())
    return {
        "events": len(events),
        "hot_events": len(hot),
        "cold_events": cold,
        "streams": len({e.stream for e in events}),
        "last_seq": store.last_seq,
    }


def counted(store: EventStore) -> dict[str, Any]:
    s = store.stats()
    assert s.archive_files == len(store.archive_files())
    assert s.watermark == store.watermark
    return {
        "events": s.events,
        "hot_events": s.hot_events,
        "cold_events": s.cold_events,
        "streams": s.streams,
        "last_seq": s.last_seq,
    }


def agree(store: EventStore) -> None:
    assert counted(store) == recount(store)
    # Current on disk, not only in memory: written with the last commit (or at
    # open; an empty store has nothing to count).
    assert store.last_seq == 0 or counters.read_counts(store._hot.db.get(keys.COUNTS)) == (
        store.stats().streams,
        store.last_seq,
    )
    assert counters.recount_streams(store._hot.db) == store.stats().streams


def ev(i: int) -> NewEvent:
    return NewEvent("T", {"i": i}, indexes={"k": str(i % 3)})


steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 12), st.integers(1, 4)),
        st.tuples(st.just("many"), st.lists(st.integers(0, 12), min_size=1, max_size=4)),
        st.tuples(st.just("compact"), st.integers(0, 100)),
        st.tuples(st.just("merge"), st.integers(2, 3)),
        st.tuples(st.just("reopen")),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_counts_agree_with_a_recount_after_any_history(tmp_path: Path, history: list[Any]) -> None:
    path = str(tmp_path / f"s{time.monotonic_ns()}")
    store = EventStore.open(path)
    try:
        agree(store)
        i = 0
        for step in history:
            if step[0] == "append":
                store.append(f"s{step[1]}", [ev(i + k) for k in range(step[2])])
                i += step[2]
            elif step[0] == "many":
                store.append_many([(f"s{n}", [ev(i)], ANY) for n in step[1]])
                i += 1
            elif step[0] == "compact":
                events = list(store.read_all())
                if events:
                    cut = events[min(len(events) - 1, len(events) * step[1] // 100)]
                    store.compact(before=cut.id)
                    if step[1] % 2:
                        store.cleanup()
            elif step[0] == "merge":
                store.merge_archives(min_files=step[1])
            else:
                store.close()
                store = EventStore.open(path)
            agree(store)
    finally:
        store.close()


def test_imports_count_their_new_streams(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "a")) as a:
        for n in range(30):
            a.append(f"s{n % 7}", [ev(n), ev(n + 1)])
        a.compact(before=list(a.read_all())[20].id)
        exported = list(a.read_all())
    with EventStore.open(str(tmp_path / "b")) as b:
        assert b.import_events(exported[:25], batch_size=10) == 25
        agree(b)
        assert b.import_events(exported[25:]) == len(exported) - 25
        agree(b)
        assert b.stats().streams == 7
        b.append("new", [ev(0)])
        b.append("s1", [ev(0)])
        assert b.stats().streams == 8
        agree(b)


def test_counter_rides_in_the_commit_batch(tmp_path: Path) -> None:
    """The key is written with each commit, current to its last seq."""
    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("a", [ev(0), ev(1)])
        store.append_many([("b", [ev(2)], ANY), ("a", [ev(3)], ANY), ("c", [ev(4)], ANY)])
        assert counters.read_counts(store._hot.db.get(keys.COUNTS)) == (3, 5)


def test_a_store_without_the_counter_is_recounted_at_open(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        for n in range(12):
            store.append(f"s{n % 5}", [ev(n)])
        store.compact(before=list(store.read_all())[6].id)
        # As an older eventstore left it: no key, or a key behind the log.
        store._hot.db.delete(keys.COUNTS, sync=True)
    with EventStore.open(path) as store:
        agree(store)
        assert counters.read_counts(store._hot.db.get(keys.COUNTS)) == (5, 12)
        store._hot.db.put(keys.COUNTS, counters.pack_counts(99, 3), sync=True)
    with EventStore.open(path) as store:
        assert store.stats().streams == 5
        agree(store)
        store._hot.db.put(keys.COUNTS, b"\xc1 not msgpack", sync=True)
    with EventStore.open(path) as store:
        agree(store)


_WRITER = """
import sys, itertools
from eventstore import EventStore, NewEvent, ANY
store = EventStore.open(sys.argv[1], sync=False)
print("ready", flush=True)
for n in itertools.count():
    if n % 3:
        store.append(f"s{n % 500}", [NewEvent("T", {"n": n})] * (1 + n % 4))
    else:
        store.append_many(
            [(f"t{n}", [NewEvent("T", {})], ANY), (f"s{n % 7}", [NewEvent("U", {})], ANY)]
        )
    if n == 400:
        store.compact(before=next(store.read_all(backwards=True, limit=1)).id)
"""


def test_counts_agree_after_a_kill(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, path],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.4 + 0.3 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with EventStore.open(path) as store:
            agree(store)
            assert store.stats().events > 0


def test_a_repaired_hot_tier_is_recounted(tmp_path: Path) -> None:
    from eventstore.hot import repair_hot_tier
    from eventstore.transfer import HOT_DIR

    path = tmp_path / "s"
    with EventStore.open(str(path)) as store:
        for n in range(9):
            store.append(f"s{n % 4}", [ev(n)])
    repair_hot_tier(str(path / HOT_DIR), str(tmp_path / "aside"))
    # What it salvaged may have lost streams: the key goes, and open recounts.
    db = plyvel.DB(str(path / HOT_DIR))
    try:
        assert db.get(keys.COUNTS) is None
    finally:
        db.close()
    with EventStore.open(str(path)) as store:
        agree(store)
        assert store.stats().streams == 4
