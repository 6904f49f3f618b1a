"""Cleanup after compaction (issue 19): stream by stream, it deletes exactly
the hot keys of archived events (records, global entries, type and custom
index keys), in bounded chunks that resume where they stopped, also when a
compaction commits between two chunks, and sweeps global entries whose
record was lost."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent, keys
from eventstore.tiering import Tiering


def hot_keys(store: EventStore) -> dict[bytes, list[bytes]]:
    db = store._hot.db
    return {
        tag: list(db.iterator(prefix=tag, include_value=False))
        for tag in (keys.EVENT, keys.GLOBAL, keys.INDEX)
    }


def expected_keys(store: EventStore) -> dict[bytes, list[bytes]]:
    """The keys of every hot event (above the watermark), from the events."""
    w = store.watermark
    hot = [e for e in store.read_all() if w is None or e.id >= w]
    out: dict[bytes, list[bytes]] = {keys.EVENT: [], keys.GLOBAL: [], keys.INDEX: []}
    for e in hot:
        s, id16 = e.stream.encode(), e.id.bytes
        out[keys.EVENT].append(keys.event_key(s, id16))
        out[keys.GLOBAL].append(keys.global_key(id16))
        for name, value in {"type": e.type, **e.indexes}.items():
            out[keys.INDEX].append(keys.index_key(s, name.encode(), value.encode(), id16))
    return {tag: sorted(v) for tag, v in out.items()}


def fill(store: EventStore, rnd: random.Random, n: int) -> None:
    for i in range(n):
        stream = f"s{rnd.randrange(9)}" if rnd.random() < 0.8 else f"one-{i}-{rnd.random()}"
        extra = {"k": str(rnd.randrange(3))} if rnd.random() < 0.5 else {}
        store.append(stream, [NewEvent(f"T{rnd.randrange(3)}", {"i": i}, indexes=extra)])


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 2**32), st.integers(1, 7), st.integers(10, 90))
def test_cleanup_deletes_exactly_the_archived_keys(
    tmp_path: Path, seed: int, chunk: int, cut: int
) -> None:
    rnd = random.Random(seed)
    path = tmp_path / f"s{seed}-{chunk}-{cut}"
    with EventStore.open(str(path)) as store:
        store._tiering._start_cleanup = lambda: None  # type: ignore[method-assign]
        fill(store, rnd, 60)
        events = list(store.read_all())
        store.compact(before=events[len(events) * cut // 100].id)
        with store._maintenance:
            store._tiering._delete_garbage(chunk)  # one chunk, then a compaction commits
        fill(store, rnd, 30)
        events = list(store.read_all())
        store.compact(before=events[min(len(events) - 1, len(events) * cut // 100 + 20)].id)
        while True:
            with store._maintenance:
                if store._tiering._delete_garbage(chunk) == 0:
                    break
        assert hot_keys(store) == expected_keys(store)
        assert list(store.read_all()) == events  # nothing read differently


def test_a_global_entry_without_its_record_is_swept(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        store._tiering._start_cleanup = lambda: None  # type: ignore[method-assign]
        for i in range(10):
            store.append(f"s{i % 3}", [NewEvent("T", {"i": i})])
        events = list(store.read_all())
        store.compact(before=events[6].id)
        lost = events[2]  # archived; its hot record lost before cleanup
        store._hot.db.delete(keys.event_key(lost.stream.encode(), lost.id.bytes))
        assert store.cleanup() == 6  # five by their records, one from the global log
        assert hot_keys(store) == expected_keys(store)


def test_tombstones_are_compacted_once_as_many_as_the_live_hot_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact_range rewrites the whole hot tier: a cleanup after every
    compaction of a third of it must not call it every time (issue 19), but
    once the events deleted since the last call reach the live hot events."""
    calls: list[tuple[int, int]] = []
    real = Tiering._compact_tombstones

    def counted(self: Tiering) -> None:
        calls.append(
            (
                getattr(self, "tombstones", -1),
                self._hot_events() if hasattr(self, "_hot_events") else -1,
            )
        )
        real(self)

    monkeypatch.setattr(Tiering, "_compact_tombstones", counted)
    with EventStore.open(str(tmp_path / "s")) as store:
        store._tiering._start_cleanup = lambda: None  # type: ignore[method-assign]
        rnd = random.Random(5)
        cleanups = 0
        for _ in range(9):  # a window of 200 events, 100 moved each time
            fill(store, rnd, 100)
            events = list(store.read_all())
            if len(events) > 200:
                store.compact(before=events[-200].id)
                assert store.cleanup() == 100
                cleanups += 1
                assert hot_keys(store) == expected_keys(store)
        assert cleanups == 7
        # Deleted 100 a time against 200 live: every second cleanup.
        assert calls == [(200, 200)] * 3
        assert store._tiering.tombstones == 100
        assert list(store.read_all()) == events
