"""eventstore/manifest.py: LevelDB's MANIFEST rewritten as its live tables
alone, without compaction pointers, and its LOG files gone; LevelDB opens the
result with every key and value as before."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import manifest
from eventstore._leveldb import plyvel
from eventstore.errors import CorruptFile


def _edits(folder: str) -> list[bytes]:
    with open(os.path.join(folder, "CURRENT")) as f:
        name = f.read().strip()
    path = os.path.join(folder, name)
    with open(path, "rb") as f:
        return [edit for _at, edit in manifest._records(f.read(), path)]


def _tags(edit: bytes) -> list[int]:
    """The tags of one version edit, in order."""
    version = manifest._Version()
    version.apply(edit)  # checks it parses whole
    tags = []
    at = 0
    while at < len(edit):
        tag, at = manifest._varint(edit, at)
        tags.append(tag)
        if tag == manifest._COMPARATOR:
            _s, at = manifest._slice(edit, at)
        elif tag == manifest._COMPACT_POINTER:
            _n, at = manifest._varint(edit, at)
            _s, at = manifest._slice(edit, at)
        elif tag == manifest._DELETED_FILE:
            _n, at = manifest._varint(edit, at)
            _n, at = manifest._varint(edit, at)
        elif tag == manifest._NEW_FILE:
            for _ in range(3):
                _n, at = manifest._varint(edit, at)
            _s, at = manifest._slice(edit, at)
            _s, at = manifest._slice(edit, at)
        else:
            _n, at = manifest._varint(edit, at)
    return tags


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 70_000), max_size=6))
def test_log_records_round_trip_across_blocks(sizes: list[int]) -> None:
    records = [bytes((i * 7 + n) & 0xFF for i in range(n)) for n in sizes]
    data = manifest._log_file(records)
    assert [r for _at, r in manifest._records(data, "m")] == records


def _key(i: int) -> bytes:
    # Long and incompressible: tables of a megabyte hold few, and the
    # MANIFEST's record of their bounds runs over a 32 KiB block.
    return b"k%05d-" % i + random.Random(i).randbytes(4000)


def _filled(folder: str) -> dict[bytes, bytes]:
    """A database of many tables over several levels, with compaction
    pointers set; returns what it holds."""
    db = plyvel.DB(folder, create_if_missing=True, write_buffer_size=64 << 10)
    want: dict[bytes, bytes] = {}
    try:
        for round_ in range(4):
            batch = db.write_batch()
            for i in range(3000):
                key = _key(i)
                value = b"%d-%d" % (round_, i) * 10
                batch.put(key, value)
                want[key] = value
            batch.write()
            for i in range(round_, 3000, 7):
                key = _key(i)
                db.delete(key)
                want.pop(key)
            db.compact_range(start=b"k01", stop=b"k02")
    finally:
        db.close()
    return want


def test_scrubbed_manifest_opens_with_every_key_and_no_pointer(tmp_path: Path) -> None:
    folder = str(tmp_path / "db")
    want = _filled(folder)
    before = _edits(folder)
    assert any(manifest._COMPACT_POINTER in _tags(e) for e in before)
    manifest.scrub(folder)
    names = os.listdir(folder)
    assert "LOG" not in names and "LOG.old" not in names
    assert len([n for n in names if n.startswith("MANIFEST-")]) == 1
    (snapshot,) = _edits(folder)
    assert len(snapshot) > manifest._BLOCK  # written across blocks, and read back by LevelDB
    assert manifest._COMPACT_POINTER not in _tags(snapshot)
    for round_ in range(2):  # LevelDB writes its own MANIFEST from it, and reopens that
        db = plyvel.DB(folder)
        try:
            assert dict(db.iterator()) == want
            db.put(b"after%d" % round_, b"1")
            want[b"after%d" % round_] = b"1"
        finally:
            db.close()
        if round_ == 0:
            # The snapshot LevelDB wrote at the open holds none (a compaction
            # since may have set one, to a key of its own inputs).
            assert manifest._COMPACT_POINTER not in _tags(_edits(folder)[0])


def test_a_damaged_manifest_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    folder = str(tmp_path / "db")
    _filled(folder)
    with open(os.path.join(folder, "CURRENT")) as f:
        name = f.read().strip()
    path = os.path.join(folder, name)
    with open(path, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0x10]))
    files = {n: Path(folder, n).read_bytes() for n in os.listdir(folder)}
    with pytest.raises(CorruptFile) as caught:
        manifest.scrub(folder)
    assert caught.value.path == path
    assert {n: Path(folder, n).read_bytes() for n in os.listdir(folder)} == files


def test_a_current_naming_no_manifest_is_refused(tmp_path: Path) -> None:
    folder = str(tmp_path / "db")
    _filled(folder)
    Path(folder, "CURRENT").write_text("000001.log\n")
    with pytest.raises(CorruptFile):
        manifest.scrub(folder)


def test_a_stray_manifest_left_by_a_crash_is_removed(tmp_path: Path) -> None:
    folder = str(tmp_path / "db")
    want = _filled(folder)
    Path(folder, "MANIFEST-999999").write_bytes(b"a crash left this half written")
    manifest.scrub(folder)
    assert "MANIFEST-999999" not in os.listdir(folder)
    db = plyvel.DB(folder)
    try:
        assert dict(db.iterator()) == want
    finally:
        db.close()
