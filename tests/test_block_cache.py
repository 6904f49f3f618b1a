"""One budget for the decoded chunks of every archive file of a store (issue
19): however many files, the store keeps at most ``archive_cache_bytes`` of
them, and reads answer the same whatever the budget."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from eventstore import Event, EventStore, NewEvent
from eventstore.errors import InvalidArgument
from eventstore.esdb import BlockCache, ESDBReader

FILES = 12
PER_FILE = 600


def _fill(path: str, budget: int) -> EventStore:
    store = EventStore.open(path, archive_cache_bytes=budget)
    rnd = random.Random(1)  # incompressible data: blocks of some size
    n = 0
    for _ in range(FILES):
        for _ in range(PER_FILE // 10):
            store.append(
                f"s{n % 17}",
                [NewEvent("T", {"n": n + k, "pad": rnd.randbytes(200)}) for k in range(10)],
            )
            n += 10
        store.compact(before=next(store.read_all(backwards=True, limit=1)).id)
        store.append("tail", [NewEvent("T", {})])  # the next cutoff lies above it
    store.cleanup()
    return store


def _read_everything(store: EventStore, budget: int) -> list[object]:
    seen: list[Event | None] = []
    rnd = random.Random(5)
    events = list(store.read_all())
    assert store._archive.cache.size <= budget
    for stream in [f"s{i}" for i in range(17)] + ["tail"]:
        seen.extend(store.read_stream(stream))
        assert store._archive.cache.size <= budget
        seen.extend(store.read_stream(stream, backwards=True, limit=30))
        seen.extend(store.read_index(stream, "type", "T", limit=5))
    for e in rnd.sample(events, 300):
        seen.append(store.get(e.id))
        assert store._archive.cache.size <= budget
    # Each store has its own ids: compare what they hold.
    return [None if e is None else (e.stream, e.version, e.seq, e.data) for e in [*events, *seen]]


def test_the_budget_holds_across_all_files(tmp_path: Path) -> None:
    budget = 64 << 10
    with _fill(str(tmp_path / "small"), budget) as small:
        assert len(small.archive_files()) == FILES
        got = _read_everything(small, budget)
        cache = small._archive.cache
        assert 0 < cache.size <= budget and len(cache) > 0
    assert cache.size == 0 and len(cache) == 0  # closed readers leave nothing behind
    with _fill(str(tmp_path / "big"), 64 << 20) as big:
        assert _read_everything(big, 64 << 20) == got
        # The same reads decode far more than the small budget: it was enforced.
        assert big._archive.cache.size > 4 * budget
    with _fill(str(tmp_path / "none"), 0) as none:
        assert _read_everything(none, 0) == got
        assert none._archive.cache.size == 0


def test_merged_files_keep_to_the_budget(tmp_path: Path) -> None:
    budget = 48 << 10
    with _fill(str(tmp_path / "s"), budget) as store:
        _read_everything(store, budget)
        store.merge_archives(max_events=3 * PER_FILE)
        assert len(store.archive_files()) < FILES
        _read_everything(store, budget)
        readers = {f.reader._cache.shared for f in store._archive.tiers.files}
        assert readers == {store._archive.cache}  # the merged files share it too


def test_a_bad_budget_is_refused(tmp_path: Path) -> None:
    for bad in (-1, 1.5, "64M"):
        with pytest.raises(InvalidArgument, match="archive_cache_bytes"):
            EventStore.open(str(tmp_path / "s"), archive_cache_bytes=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


def test_readers_sharing_a_cache_keep_apart(tmp_path: Path) -> None:
    with _fill(str(tmp_path / "s"), 1 << 20) as store:
        paths = [f.path for f in store.archive_files()[:2]]
        expected = [list(ESDBReader(p).read_all()) for p in paths]
    shared = BlockCache(1 << 20)
    readers = [ESDBReader(p, cache=shared) for p in paths]
    try:
        for _ in range(2):  # the second pass reads from the cache
            assert [list(r.read_all()) for r in readers] == expected
            assert [
                [r.get(e.id) for e in evs] for r, evs in zip(readers, expected, strict=True)
            ] == expected
        held = shared.size
        readers[0].close()
        assert 0 < shared.size < held  # its entries went with it, not the other's
    finally:
        for r in readers:
            r.close()
    assert shared.size == 0
