"""Segment keys (eventstore/segments.py): written before the commit point,
ignored by readers until then, swept after a crash, migrated from layout 1.

The crashes are real: a child process SIGKILLs itself at the chosen moment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest

from eventstore import ANY, EventStore, NewEvent, keys, segments
from eventstore.ids import ulid_from_int

ROOT = Path(__file__).resolve().parent.parent


def segment_entries(store: EventStore) -> set[tuple[str, int, int, int]]:
    """(stream, file number, first version, last version) of every segment key."""
    out = set()
    for key, value in store._hot.db.iterator(prefix=keys.SEGMENT):
        stream = key[len(keys.SEGMENT) : key.index(keys.SEP, len(keys.SEGMENT))].decode()
        number, first, last = msgpack.unpackb(value)
        out.add((stream, number, first, last))
    return out


def expected_entries(store: EventStore) -> set[tuple[str, int, int, int]]:
    return {
        (sp.stream, f.number, sp.first_version, sp.last_version)
        for f in store._archive.tiers.files
        for sp in f.reader.spaces()
    }


def fill(store: EventStore, rounds: int) -> None:
    for n in range(rounds):
        store.append_many([(f"s{k}", [NewEvent("T", {"n": n, "k": k})], ANY) for k in range(5)])


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError("injected")


def fail_before_commit(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction that fails after filing its keys, before its commit point."""
    monkeypatch.setattr(store._tiering, "_check_seqs", _fail)
    with pytest.raises(OSError, match="injected"):
        compact_all(store)
    monkeypatch.undo()


def two_files(store: EventStore) -> None:
    fill(store, 10)
    compact_all(store)
    fill(store, 10)
    compact_all(store)


def compact_all(store: EventStore) -> None:
    (last,) = store.read_all(backwards=True, limit=1)
    store.compact(before=ulid_from_int(int(last.id) + 1))


def run_child(path: Path, body: str) -> None:
    """Run ``body`` with ``store`` open at ``path``; it must die by SIGKILL."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        from eventstore import EventStore, NewEvent, segments
        from eventstore.ids import ulid_from_int
        from tests.test_segments import compact_all, fill, two_files

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        store = EventStore.open(sys.argv[1])
        """
    ) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, timeout=60)
    assert proc.returncode == -9, f"the child did not die by SIGKILL: {proc.returncode}"


def test_a_compaction_killed_after_filing_its_keys_is_swept_at_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    run_child(
        path,
        """
        fill(store, 20)
        store._tiering._commit_files = die  # after the file and its segment keys, before the commit
        compact_all(store)
        """,
    )
    with EventStore.open(path) as store:
        assert store.strays_swept == [1]
        assert store.orphans_removed == ["00000001.esdb"]
        assert segment_entries(store) == set()
        log = list(store.read_all())
        assert len(log) == 100 and store.archive_files() == []
        compact_all(store)
        assert list(store.read_all()) == log
        assert segment_entries(store) == expected_entries(store) != set()
    with EventStore.open(path) as store:
        assert store.strays_swept == [] and list(store.read_all()) == log


# Two files merged; the child dies once the merge has committed, before the
# replaced files' segment keys are deleted.
MERGE_KILLED_AFTER_ITS_COMMIT_POINT = """
two_files(store)
segments.delete = die
store.merge_archives()
"""


def test_a_merge_killed_after_its_commit_point_is_swept_at_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    run_child(path, MERGE_KILLED_AFTER_ITS_COMMIT_POINT)
    with EventStore.open(path) as store:
        assert store.strays_swept == [1, 2]
        assert store.orphans_removed == ["00000001.esdb", "00000002.esdb"]
        (merged,) = store._archive.tiers.files
        assert merged.number == 3 and merged.events == 100
        assert segment_entries(store) == expected_entries(store)
        assert [e.data["n"] for e in store.read_stream("s3")] == list(range(10)) * 2


def test_a_retired_file_gone_missing_is_swept_by_scanning(tmp_path: Path) -> None:
    path = tmp_path / "s"
    run_child(path, MERGE_KILLED_AFTER_ITS_COMMIT_POINT)
    os.remove(path / "archive" / "00000001.esdb")
    with EventStore.open(path) as store:
        assert store.strays_swept == [1, 2]
        assert segment_entries(store) == expected_entries(store)


def test_layout_1_segment_keys_are_migrated_at_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 10)
        compact_all(store)
        fill(store, 10)
        compact_all(store)
        log = list(store.read_all())
        want = segment_entries(store)
        # Rewrite the store as layout 1 left it: keys without the file number.
        db = store._hot.db
        for key, value in list(db.iterator(prefix=keys.SEGMENT)):
            db.delete(key)
            db.put(key[:-8], value)
        db.put(keys.system_key(b"config"), msgpack.packb({"layout": 1, "index_types": True}))
    with EventStore.open(path) as store:
        config = msgpack.unpackb(store._hot.db.get(keys.system_key(b"config")))
        assert config["layout"] == keys.LAYOUT_VERSION
        assert segment_entries(store) == want == expected_entries(store)
        assert all(
            len(key) == len(keys.segment_prefix(b"s0")) + 24
            for key, _ in store._hot.db.iterator(prefix=keys.segment_prefix(b"s0"))
        )
        assert list(store.read_all()) == log
        assert list(store.read_stream("s2")) == [e for e in log if e.stream == "s2"]
        store.merge_archives()
        assert segment_entries(store) == expected_entries(store)
        assert list(store.read_stream("s2")) == [e for e in log if e.stream == "s2"]


def _compaction_peak(path: Path, streams: int, events: int) -> int:
    """Peak Python heap of compacting ``events`` events spread over ``streams`` streams."""
    with EventStore.open(path) as store:
        for start in range(0, events, 5000):
            store.append_many(
                [
                    (f"stream-{k % streams:07d}", [NewEvent("T", k)], ANY)
                    for k in range(start, start + 5000)
                ]
            )
        store.cleanup()
        tracemalloc.start()
        try:
            compact_all(store)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(segment_entries(store)) == streams
    return peak


def test_compaction_memory_does_not_grow_with_the_number_of_streams(tmp_path: Path) -> None:
    # The same 40k events in 100 streams and in 40k streams. Segment keys used
    # to ride in the commit batch, with a Python list of them: ~250 bytes a
    # stream, 10 MB more here. Now they are filed in bounded batches.
    few = _compaction_peak(tmp_path / "few", 100, 40_000)
    many = _compaction_peak(tmp_path / "many", 40_000, 40_000)
    assert many < few + 2_000_000, (few, many)


def test_an_undo_that_fails_leaves_the_files_for_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compaction fails before its commit point, and so does its undo (the
    # disk is full, say). The files must stay: the sweep at the next open
    # reads them to find their segment keys. (Found in review: the files
    # went, the keys stayed, the number was reused, and a merge then listed
    # every event of a stream twice.)
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 20)
        log = list(store.read_all())

        monkeypatch.setattr(segments, "delete", _fail)  # the undo fails too
        fail_before_commit(store, monkeypatch)
        assert (path / "archive" / "00000001.esdb").exists()
        assert list(store.read_all()) == log
    with EventStore.open(path) as store:
        assert store.strays_swept == [1] and store.orphans_removed == ["00000001.esdb"]
        assert segment_entries(store) == set()
        compact_all(store)
        fill(store, 5)
        compact_all(store)
        store.merge_archives()
        assert list(store.read_all())[: len(log)] == log
        assert segment_entries(store) == expected_entries(store)
        assert [e.version for e in store.read_stream("s1")] == list(range(25))


class _LandsThenFails:
    """A plyvel DB whose synced batches are written, then reported failed."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def write_batch(self, **kwargs: Any) -> Any:
        batch = self._db.write_batch(**kwargs)
        if not kwargs.get("sync"):
            return batch

        class Batch:
            put, delete = batch.put, batch.delete

            def write(self) -> None:
                batch.write()
                raise OSError("the write was reported failed, but it is on disk")

        return Batch()


def test_a_commit_reported_failed_but_on_disk_is_kept_at_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 20)
        log = list(store.read_all())
        real = store._hot.db
        store._hot.db = _LandsThenFails(real)
        try:
            with pytest.raises(OSError, match="on disk"):
                compact_all(store)
        finally:
            store._hot.db = real
        assert list(store.read_all()) == log  # this process still reads it all hot
        # This process still counts file 1 as being made; the next compaction
        # records that on disk as it takes its number, and then it dies.
        assert store._tiering._take_file_number() == 2
    with EventStore.open(path) as store:
        assert store.strays_swept == [2] and store.orphans_removed == []
        assert len(store.archive_files()) == 1
        assert segment_entries(store) == expected_entries(store) != set()
        assert list(store.read_all()) == log
        assert [e.version for e in store.read_stream("s1")] == list(range(20))


def test_a_merge_reported_failed_but_on_disk_leaks_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The merge's commit landed, so files 1 and 2 are retired on disk; this
    # process did not hear of it, and a later failed compaction writes the
    # strays again: they must still name 1 and 2. (Found in review.)
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        two_files(store)
        real = store._hot.db
        store._hot.db = _LandsThenFails(real)
        try:
            with pytest.raises(OSError, match="on disk"):
                store.merge_archives()
        finally:
            store._hot.db = real
        fill(store, 5)
        fail_before_commit(store, monkeypatch)
        log = list(store.read_all())
    with EventStore.open(path) as store:
        assert [f.number for f in store._archive.tiers.files] == [3]
        assert store.strays_swept == [1, 2]
        assert segment_entries(store) == expected_entries(store)
        assert list(store.read_all()) == log
