"""`eventstore repair` rebuilds a lost or unreadable archive manifest from the
ESDB files (issue 13): the store opens again with every event, the inputs a
cut-short merge left behind are not named twice, and files that cannot both
be the store's are refused rather than guessed between."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventstore import ANY, EventStore, NewEvent, keys
from eventstore._leveldb import plyvel
from eventstore.errors import StoreDamaged


def _fill(path: Path, rounds: int = 3, per_round: int = 20) -> list[Any]:
    """A store with one archive file per round and a few hot events."""
    with EventStore.open(path) as s:
        for r in range(rounds):
            for i in range(per_round):
                s.append(f"s{i % 4}", [NewEvent("T", {"r": r, "i": i})])
            s.compact(before=s.append("cut", [NewEvent("Cut")]).ids[0])
        s.append("tail", [NewEvent("T", {"hot": True})])
        return _events(s)


def _events(s: EventStore) -> list[Any]:
    return [(e.id, e.stream, e.version, e.seq, e.data) for e in s.read_all()]


def _hot_put(path: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(path / "hot"))
    try:
        if value is None:
            db.delete(key, sync=True)
        else:
            db.put(key, value, sync=True)
    finally:
        db.close()


def _repair(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(path)],
        capture_output=True, text=True, timeout=120,
    )


def _archive(path: Path) -> list[str]:
    return sorted(os.listdir(path / "archive"))


@pytest.mark.parametrize("damage", ["deleted", "garbage", "wrong shape", "both lost"])
def test_a_lost_manifest_is_rebuilt_and_nothing_is_lost(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    before = _fill(path)
    files = _archive(path)
    assert len(files) == 3
    if damage == "deleted":
        _hot_put(path, keys.MANIFEST, None)
    elif damage == "garbage":
        _hot_put(path, keys.MANIFEST, b"\xc1\xc1 not msgpack")
    elif damage == "wrong shape":
        _hot_put(path, keys.MANIFEST, b"\x81\xa4next\xa1x")  # {"next": "x"}
    else:
        _hot_put(path, keys.MANIFEST, None)
        _hot_put(path, keys.WATERMARK, None)
    with pytest.raises(StoreDamaged, match="eventstore repair"):
        EventStore.open(path)
    done = _repair(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt the archive manifest from the files: it names 3 files" in done.stdout
    assert "verify: OK" in done.stdout
    with EventStore.open(path) as s:
        assert _events(s) == before
        s.verify()
        # New files are numbered above every file there is.
        s.append("more", [NewEvent("T")])
        s.compact(before=s.append("cut", [NewEvent("Cut")]).ids[0])
        assert len(_archive(path)) == 4 and _archive(path)[:3] == files
        assert _events(s)[: len(before)] == before


def test_a_sound_manifest_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _fill(path)
    done = _repair(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "archive manifest" not in done.stdout


def test_the_inputs_of_a_cut_short_merge_are_not_named_beside_its_output(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    before = _fill(path)
    inputs = _archive(path)
    kept = tmp_path / "inputs"
    kept.mkdir()
    for name in inputs:
        os.link(path / "archive" / name, kept / name)
    with EventStore.open(path) as s:
        s.merge_archives()
    (merged,) = _archive(path)
    # As if the merge was cut short after its commit, before it removed its inputs.
    for name in inputs:
        shutil.copy(kept / name, path / "archive" / name)
    _hot_put(path, keys.MANIFEST, None)
    done = _repair(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "it names 1 file" in done.stdout
    for name in inputs:
        assert f"left alone: {name} (its seqs are all in {merged} too)" in done.stdout
    with EventStore.open(path) as s:
        assert _events(s) == before
        s.verify()


def test_files_that_cannot_both_be_the_stores_are_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    _fill(path, rounds=2)
    # A second store's file whose seqs straddle the first two files' boundary.
    other = tmp_path / "other"
    with EventStore.open(other) as o:
        for i in range(30):
            o.append("x", [NewEvent("T", {"i": i})])
        o.compact(before=o.append("cut", [NewEvent("Cut")]).ids[0])
        (theirs,) = _archive(other)
    shutil.copy(other / "archive" / theirs, path / "archive" / "00000009.esdb")
    _hot_put(path, keys.MANIFEST, None)
    done = _repair(path)
    assert done.returncode == 1
    assert "overlap and neither holds the other" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    db = plyvel.DB(str(path / "hot"))
    try:
        assert db.get(keys.MANIFEST) is None
    finally:
        db.close()


@pytest.mark.parametrize("hot_events", [1, 4097, 9000])
def test_log_gaps_counts_the_hot_event_at_the_watermark_and_across_pages(
    tmp_path: Path, hot_events: int
) -> None:
    # The compaction cutoff is exclusive: the event whose id it is stays hot,
    # exactly at the hot tier's floor. Counting once dropped it, and repair
    # then recorded a sound store as having lost that event.
    with EventStore.open(tmp_path / "s") as s:
        s.append_many([(f"a{i}", [NewEvent("T")], ANY) for i in range(10)])
        cut = s.append_many([(f"b{i}", [NewEvent("T")], ANY) for i in range(hot_events)])
        s.compact(before=cut[0].ids[0])
        assert s.log_gaps() == (10 + hot_events, 10 + hot_events, [])
