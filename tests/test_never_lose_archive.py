"""Issue 13, items 2, 4, 7, 10 and 15: the archive is never deleted on a
guess, nothing reaches outside the store's folder, every archive file is the
one its manifest names, a FIFO never hangs open(), and open() never makes a
store where there was none to make.

Every case damages real files of a real store (delete, flip, swap, copy,
plant a symlink or a FIFO) and checks that the store refuses with a specific
error and that no file was deleted or written outside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import ANY, Event, EventStore, NewEvent, keys
from eventstore._leveldb import plyvel
from eventstore.errors import (
    ArchiveMismatch,
    InvalidArgument,
    NotAStore,
    StoreDamaged,
    StoreNotFound,
    UnsafePath,
)
from eventstore.esdb import ESDBWriter
from eventstore.ids import ulid_from_int
from eventstore.store import IncompatibleStore

ROOT = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------


def fill(store: EventStore, n: int, stream: str = "s") -> None:
    store.append_many([(f"{stream}{k % 3}", [NewEvent("T", {"k": k})], ANY) for k in range(n)])


def compact_all(store: EventStore) -> None:
    (last,) = store.read_all(backwards=True, limit=1)
    store.compact(before=ulid_from_int(int(last.id) + 1))


def make_store(path: Path, files: int = 1, hot: int = 5) -> list[tuple[str, int]]:
    """A store with ``files`` archive files (10 events each) and ``hot``
    events still hot; returns its log as (id, seq) pairs."""
    with EventStore.open(path) as store:
        for _ in range(files):
            fill(store, 10)
            compact_all(store)
        fill(store, hot)
        store.cleanup()  # no background deletion left running at close
        return [(str(e.id), e.seq) for e in store.read_all()]


def archive(path: Path) -> dict[str, bytes]:
    """Every file in the store's archive folder, with its bytes."""
    folder = path / "archive"
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def log_of(path: Path) -> list[tuple[str, int]]:
    with EventStore.open(path, create=False) as store:
        return [(str(e.id), e.seq) for e in store.read_all()]


def put_system(path: Path, key: bytes, value: bytes | None) -> None:
    """Write (or delete) one system key of a closed store, behind its back."""
    db = plyvel.DB(str(path / "hot"))
    try:
        if value is None:
            db.delete(key, sync=True)
        else:
            db.put(key, value, sync=True)
    finally:
        db.close()


def get_system(path: Path, key: bytes) -> bytes | None:
    db = plyvel.DB(str(path / "hot"))
    try:
        value: bytes | None = db.get(key)
        return value
    finally:
        db.close()


def segment_numbers(store: EventStore) -> set[int]:
    """The file numbers the store's segment keys point at."""
    return {
        msgpack.unpackb(value)[0] for _key, value in store._hot.db.iterator(prefix=keys.SEGMENT)
    }


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


# -- item 2: an unreadable archive list never deletes the archive -------------


def test_a_deleted_hot_current_refuses_and_keeps_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=2)
    files = archive(path)
    hot_before = sorted(os.listdir(path / "hot"))
    os.remove(path / "hot" / "CURRENT")
    with pytest.raises(StoreDamaged, match=r"CURRENT.*eventstore repair"):
        EventStore.open(path)
    assert archive(path) == files
    # No new, empty LevelDB was made beside the archive.
    assert sorted(os.listdir(path / "hot")) == [n for n in hot_before if n != "CURRENT"]
    with pytest.raises(StoreDamaged):
        EventStore.open(path, create=False)
    assert archive(path) == files


def test_a_missing_hot_folder_refuses_and_keeps_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    files = archive(path)
    shutil.rmtree(path / "hot")
    with pytest.raises(StoreDamaged, match=r"hot tier .* missing.*restore"):
        EventStore.open(path)
    assert archive(path) == files
    assert sorted(os.listdir(path)) == ["archive"]  # no hot/ made


def test_a_lost_manifest_key_refuses_and_keeps_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=2)
    files = archive(path)
    put_system(path, keys.MANIFEST, None)
    with pytest.raises(StoreDamaged, match=r"manifest"):
        EventStore.open(path)
    put_system(path, keys.WATERMARK, None)  # both lost: the files still say there is an archive
    with pytest.raises(StoreDamaged, match=r"no archive manifest naming them"):
        EventStore.open(path)
    assert archive(path) == files


def test_a_lost_config_refuses_when_the_store_holds_data(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    files = archive(path)
    put_system(path, keys.system_key(b"config"), None)
    with pytest.raises(StoreDamaged, match=r"no configuration"):
        EventStore.open(path)
    assert get_system(path, keys.system_key(b"config")) is None  # not rewritten
    assert archive(path) == files


def _table_with_system_keys(path: Path) -> Path:
    """The LevelDB table file holding the store's system keys, after
    compacting the whole hot tier into tables."""
    # Rewritten into a fresh LevelDB in one batch and compacted: one table,
    # the same on every run (LevelDB's own background work varies the split).
    db = plyvel.DB(str(path / "hot"))
    try:
        items = list(db.iterator())
    finally:
        db.close()
    shutil.rmtree(path / "hot")
    for n in range(2):  # the second open deletes the files the compaction replaced
        db = plyvel.DB(str(path / "hot"), create_if_missing=True)
        try:
            if n == 0:
                with db.write_batch(sync=True) as batch:
                    for key, value in items:
                        batch.put(key, value)
            db.compact_range()
        finally:
            db.close()
    tables = [p for p in (path / "hot").iterdir() if p.suffix in (".ldb", ".sst")]
    holding = [p for p in tables if b"watermark" in p.read_bytes()]
    assert len(holding) == 1, tables
    return holding[0]


def _fixed_store(path: Path) -> None:
    """Two archive files and three hot events, with fixed ids and data, so
    that the tables (and so the offsets tried) are the same on every run."""
    base = 1_700_000_000_000 << 80  # November 2023, in the past on any clock
    versions: dict[str, int] = {}
    events = []
    for seq in range(1, 24):
        stream = f"s{seq % 3}"
        versions[stream] = versions.get(stream, -1) + 1
        ulid = ulid_from_int(base + (seq << 70))
        events.append(Event(ulid, stream, versions[stream], seq, "T", {"k": seq}, None, {}))
    with EventStore.open(path) as store:
        store.import_events(events[:10])
        store.compact(before=ulid_from_int(int(events[9].id) + 1))
        store.import_events(events[10:20])
        store.compact(before=ulid_from_int(int(events[19].id) + 1))
        store.import_events(events[20:])
        store.cleanup()


def test_bit_flips_in_the_system_key_table_never_delete_the_archive(tmp_path: Path) -> None:
    # The issue flipped one bit at each of 1,454 offsets of this table; 25
    # led open() to delete every archive file. Here: a small store of fixed
    # ids whose hot tier is one table of ~600 bytes; every offset of its
    # last 700 bytes (here: all of it) and every 97th before, one fresh copy
    # of the store each.
    original = tmp_path / "original"
    _fixed_store(original)
    table = _table_with_system_keys(original)
    size = table.stat().st_size
    files = archive(original)
    offsets = sorted(set(range(max(0, size - 700), size)) | set(range(0, size, 97)))
    outcomes: dict[str, int] = {}
    changed: list[tuple[int, str]] = []
    raw: list[tuple[int, str]] = []
    # On tmpfs where there is one: each open fsyncs, and 600 opens on a
    # shared disk take far longer than the reads.
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    try:
        _flip_each(original, table, offsets, files, scratch / "copy", outcomes, changed, raw)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert changed == []  # main: 50 of its table's 597 offsets deleted archive files
    assert raw == []  # and 256 raised raw plyvel or msgpack errors
    assert sum(outcomes.values()) == len(offsets) > 500, outcomes


def _flip_each(
    original: Path,
    table: Path,
    offsets: list[int],
    files: dict[str, bytes],
    copy: Path,
    outcomes: dict[str, int],
    changed: list[tuple[int, str]],
    raw: list[tuple[int, str]],
) -> None:
    for offset in offsets:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(original, copy)
        target = copy / "hot" / table.name
        data = bytearray(target.read_bytes())
        data[offset] ^= 0x10
        target.write_bytes(bytes(data))
        error: Exception | None = None
        try:
            with EventStore.open(copy) as store:
                store.archive_files()
        except Exception as exc:
            error = exc
        outcome = "opened" if error is None else type(error).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if archive(copy) != files:
            changed.append((offset, outcome))
        # Damage is damage: not a raw plyvel or msgpack error, nor one that
        # blames the caller (an InvalidULID once came out of a damaged key).
        if error is not None and not isinstance(error, (StoreDamaged, IncompatibleStore)):
            raw.append((offset, repr(error)))


# -- item 4: nothing outside the store's folder ---------------------------------


def test_a_manifest_entry_leading_outside_the_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a" / "s"
    make_store(path, files=1)
    files = archive(path)
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copy(path / "archive" / "00000001.esdb", victim / "x.esdb")
    manifest = msgpack.unpackb(get_system(path, keys.MANIFEST))
    manifest["files"][0][1] = "../../victim/x.esdb"
    put_system(path, keys.MANIFEST, msgpack.packb(manifest))
    with pytest.raises(StoreDamaged, match=r"victim/x.esdb"):
        EventStore.open(path)
    assert archive(path) == files
    assert os.listdir(victim) == ["x.esdb"]


@pytest.mark.parametrize("name", ["00000001.esdb/../00000001.esdb", "/etc/passwd", "1.esdb", ""])
def test_manifest_names_must_be_the_stores_own_pattern(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    manifest = msgpack.unpackb(get_system(path, keys.MANIFEST))
    manifest["files"][0][1] = name
    put_system(path, keys.MANIFEST, msgpack.packb(manifest))
    with pytest.raises(StoreDamaged, match=r"not the name of archive file 1"):
        EventStore.open(path)


def test_a_symlinked_archive_folder_is_refused(tmp_path: Path) -> None:
    # B's archive/ points at A's: B's open used to delete A's files, which
    # B's manifest does not name.
    a, b = tmp_path / "a", tmp_path / "b"
    make_store(a, files=2)
    make_store(b, files=0)
    a_files = archive(a)
    shutil.rmtree(b / "archive")
    os.symlink(a / "archive", b / "archive")
    with pytest.raises(UnsafePath, match=r"symlink"):
        EventStore.open(b)
    assert archive(a) == a_files
    assert len(log_of(a)) == 25


def test_an_archive_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    elsewhere = tmp_path / "elsewhere.esdb"
    os.rename(path / "archive" / "00000001.esdb", elsewhere)
    os.symlink(elsewhere, path / "archive" / "00000001.esdb")
    with pytest.raises(UnsafePath, match=r"symlink"):
        EventStore.open(path)
    assert elsewhere.exists()


def test_a_users_notes_esdb_is_left_alone_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "s"
    log = make_store(path, files=1)
    notes = path / "archive" / "notes.esdb"
    shutil.copy(path / "archive" / "00000001.esdb", notes)  # even a valid ESDB file
    (path / "archive" / "README").write_text("my notes")
    files = archive(path)
    with EventStore.open(path) as store:
        assert archive(path) == files
        assert [u.name for u in store.unexpected_files] == ["README", "notes.esdb"]
        assert store.orphans_removed == []
        assert [(str(e.id), e.seq) for e in store.read_all()] == log  # nothing mixed in
        compact_all(store)
        assert [os.path.basename(f.path) for f in store.archive_files()] == [
            "00000001.esdb",
            "00000002.esdb",
        ]
    assert {n: b for n, b in archive(path).items() if n != "00000002.esdb"} == files
    for command in ("stats", "verify"):
        out = subprocess.run(
            [sys.executable, "-m", "eventstore.cli", command, str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert f"left alone: {notes} (not a name this store gives its files)" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "verify", "--json", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert [u["name"] for u in json.loads(out.stdout)["unexpected_files"]] == [
        "README",
        "notes.esdb",
    ]


def test_a_new_file_never_takes_the_name_of_a_file_left_alone(tmp_path: Path) -> None:
    # An unreserved 00000005.esdb sits in the folder, and a symlink at the
    # name the writer would use next: compaction numbers above both and
    # neither is written through.
    path = tmp_path / "s"
    make_store(path, files=1)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    stray = path / "archive" / "00000005.esdb"
    shutil.copy(path / "archive" / "00000001.esdb", stray)
    os.symlink(victim, path / "archive" / "00000002.esdb.tmp")
    with EventStore.open(path) as store:
        assert stray.exists() and (path / "archive" / "00000002.esdb.tmp").is_symlink()
        assert sorted(u.name for u in store.unexpected_files) == [
            "00000002.esdb.tmp",
            "00000005.esdb",
        ]
        fill(store, 3)
        compact_all(store)
        assert [f.path.rsplit("/", 1)[1] for f in store.archive_files()][-1] == "00000006.esdb"
    assert victim.read_bytes() == b"precious"
    assert stray.read_bytes() == (path / "archive" / "00000001.esdb").read_bytes()


def test_a_reserved_number_holding_a_foreign_file_is_left_alone(tmp_path: Path) -> None:
    # A compaction dies before its commit point: its number (1) is reserved.
    # Someone then puts another store's file at that name. The store cannot
    # prove that file its own leftover (its events are not the store's), so
    # it stays; the store's own leftover of the same crash would have gone
    # (tests/test_segments.py).
    path, other = tmp_path / "s", tmp_path / "other"
    make_store(other, files=1)
    proc = run_python(
        """
        import os, signal, sys
        from eventstore import EventStore
        from tests.test_never_lose_archive import compact_all, fill

        store = EventStore.open(sys.argv[1])
        fill(store, 20)
        store._tiering._commit_files = lambda **kw: os.kill(os.getpid(), signal.SIGKILL)
        compact_all(store)
        """,
        str(path),
    )
    assert proc.returncode == -9, proc.stderr
    assert (path / "archive" / "00000001.esdb").exists()
    shutil.copy(other / "archive" / "00000001.esdb", path / "archive" / "00000001.esdb")
    foreign = (path / "archive" / "00000001.esdb").read_bytes()
    with EventStore.open(path) as store:
        assert store.orphans_removed == []
        assert [(u.name, u.reason) for u in store.unexpected_files] == [
            ("00000001.esdb", "holds events the store has nowhere else")
        ]
        assert len(list(store.read_all())) == 20
        # The crashed compaction's segment keys went too: found by a scan,
        # not from the space index of the file now under its number.
        assert segment_numbers(store) == set()
        compact_all(store)
        assert [os.path.basename(f.path) for f in store.archive_files()] == ["00000002.esdb"]
        assert len(list(store.read_all())) == 20
        assert segment_numbers(store) == {2}
    assert (path / "archive" / "00000001.esdb").read_bytes() == foreign


def test_the_esdb_writer_never_writes_through_a_symlink_at_its_temp_name(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / "f.esdb.tmp")
    with pytest.raises(FileExistsError):
        ESDBWriter(tmp_path / "f.esdb")
    assert victim.read_bytes() == b"precious"


def test_export_does_not_follow_a_symlink_at_its_temp_name(tmp_path: Path) -> None:
    # export wrote to FILE.tmp-<pid>, a name anyone could predict and plant.
    path = tmp_path / "s"
    make_store(path, files=1)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out.jsonl"
    proc = run_python(
        """
        import os, sys
        out, victim, store = sys.argv[1:4]
        os.symlink(victim, f"{out}.tmp-{os.getpid()}")  # the name it would have used
        from eventstore.cli import main
        main(["export", store, out])
        """,
        str(out),
        str(victim),
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    assert len(out.read_text().splitlines()) == 1 + 15
    assert not out.is_symlink()


def test_a_backup_partial_symlink_is_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    dest = tmp_path / "bk"
    os.symlink(victim, tmp_path / "bk.partial")
    with EventStore.open(path) as store, pytest.raises(UnsafePath, match=r"symlink"):
        store.backup(dest)
    assert os.listdir(victim) == ["keep"] and (victim / "keep").read_text() == "precious"
    assert not dest.exists() and (tmp_path / "bk.partial").is_symlink()


def test_a_foreign_backup_partial_folder_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    partial = tmp_path / "bk.partial"
    partial.mkdir()
    (partial / "thesis.tex").write_text("three years of work")
    with EventStore.open(path) as store, pytest.raises(InvalidArgument, match=r"not a backup"):
        store.backup(tmp_path / "bk")
    assert (partial / "thesis.tex").read_text() == "three years of work"


def test_a_killed_backups_own_partial_is_cleared_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "s"
    log = make_store(path, files=2)
    dest = tmp_path / "bk"
    proc = run_python(
        """
        import os, signal, sys
        from eventstore import EventStore

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        store = EventStore.open(sys.argv[1])
        os.link = die  # mid-copy of the archive files
        store.backup(sys.argv[2])
        """,
        str(path),
        str(dest),
    )
    assert proc.returncode == -9, proc.stderr
    assert (tmp_path / "bk.partial").is_dir() and not dest.exists()
    with EventStore.open(path) as store:
        store.backup(dest)
    assert not (tmp_path / "bk.partial").exists()
    assert sorted(os.listdir(dest)) == ["archive", "hot"]
    assert log_of(dest) == log


# -- item 7: each archive file is the one its manifest names --------------------


def test_a_foreign_esdb_copied_over_a_named_file_raises_archive_mismatch(tmp_path: Path) -> None:
    path, other = tmp_path / "s", tmp_path / "other"
    make_store(path, files=1)
    make_store(other, files=1)
    shutil.copy(other / "archive" / "00000001.esdb", path / "archive" / "00000001.esdb")
    with pytest.raises(ArchiveMismatch, match=r"00000001.esdb is not the archive file"):
        EventStore.open(path)


def test_a_copy_with_the_same_events_but_from_another_store_is_caught_by_its_footer_crc(
    tmp_path: Path,
) -> None:
    # Same ids, seqs, count and size (an import of the same events, compacted
    # at the same cutoff): only the footer (its creation time) tells them apart.
    path, twin = tmp_path / "s", tmp_path / "twin"
    with EventStore.open(path) as store:
        fill(store, 10)
        events = list(store.read_all())
        compact_all(store)
    with EventStore.open(twin) as store:
        store.import_events(events)
        compact_all(store)
    ours, theirs = path / "archive" / "00000001.esdb", twin / "archive" / "00000001.esdb"
    assert ours.stat().st_size == theirs.stat().st_size and ours.read_bytes() != theirs.read_bytes()
    shutil.copy(theirs, ours)
    with pytest.raises(ArchiveMismatch, match=r"footer crc"):
        EventStore.open(path)


def test_two_swapped_files_raise_archive_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=2)
    folder = path / "archive"
    os.rename(folder / "00000001.esdb", folder / "tmp")
    os.rename(folder / "00000002.esdb", folder / "00000001.esdb")
    os.rename(folder / "tmp", folder / "00000002.esdb")
    with pytest.raises(ArchiveMismatch, match=r"00000001.esdb"):
        EventStore.open(path)
    assert sorted(os.listdir(folder)) == ["00000001.esdb", "00000002.esdb"]


def test_old_manifest_entries_without_a_crc_are_checked_on_what_they_have(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    log = make_store(path, files=2)
    manifest = msgpack.unpackb(get_system(path, keys.MANIFEST))
    assert all(len(entry) == 9 for entry in manifest["files"])  # the crc is recorded
    manifest["files"] = [entry[:8] for entry in manifest["files"]]
    put_system(path, keys.MANIFEST, msgpack.packb(manifest))
    assert log_of(path) == log
    folder = path / "archive"
    os.rename(folder / "00000001.esdb", folder / "tmp")
    os.rename(folder / "00000002.esdb", folder / "00000001.esdb")
    os.rename(folder / "tmp", folder / "00000002.esdb")
    with pytest.raises(ArchiveMismatch):
        EventStore.open(path)


def test_a_named_file_gone_missing_is_store_damaged(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=2)
    os.remove(path / "archive" / "00000002.esdb")
    with pytest.raises(StoreDamaged, match=r"00000002.esdb: named by the archive manifest"):
        EventStore.open(path)
    assert os.listdir(path / "archive") == ["00000001.esdb"]


# -- item 10: a FIFO never hangs open() -----------------------------------------

OPEN_IN_A_CHILD = """
import sys
from eventstore import EventStore
from eventstore.errors import EventStoreError
try:
    with EventStore.open(sys.argv[1]) as store:
        print("opened", [u.name for u in store.unexpected_files], len(list(store.read_all())))
except EventStoreError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_fifo_in_place_of_a_named_file_does_not_hang_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make_store(path, files=1)
    os.rename(path / "archive" / "00000001.esdb", tmp_path / "kept.esdb")
    os.mkfifo(path / "archive" / "00000001.esdb")
    proc = run_python(OPEN_IN_A_CHILD, str(path), timeout=30)  # it hung for ever
    assert proc.stdout.startswith("UnsafePath"), proc.stdout + proc.stderr
    assert "not a regular file" in proc.stdout


def test_fifos_the_manifest_does_not_name_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        fill(store, 10)
        compact_all(store)
        store._tiering._take_file_number()  # 2: reserved, as a crash mid-compaction leaves it
    os.mkfifo(path / "archive" / "00000002.esdb")
    os.mkfifo(path / "archive" / "pipe.esdb")
    proc = run_python(OPEN_IN_A_CHILD, str(path), timeout=30)
    assert proc.stdout.split("\n")[0] == "opened ['00000002.esdb', 'pipe.esdb'] 10", (
        proc.stdout + proc.stderr
    )
    assert sorted(os.listdir(path / "archive")) == ["00000001.esdb", "00000002.esdb", "pipe.esdb"]


# -- item 15: open() never makes a store where there is none to make -------------


def test_open_without_create_on_a_typo_path_raises_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match=r"no store at"):
        EventStore.open(tmp_path / "sotre", create=False)
    assert not (tmp_path / "sotre").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFound, match=r"empty"):
        EventStore.open(tmp_path / "empty", create=False)
    assert os.listdir(tmp_path / "empty") == []
    assert isinstance(StoreNotFound("x"), FileNotFoundError)


def test_open_on_a_folder_holding_other_things_raises_not_a_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "photo.jpg").write_bytes(b"\xff\xd8")
    (home / "src").mkdir()
    for create in (True, False):
        with pytest.raises(NotAStore, match=r"not an eventstore store: it holds other things"):
            EventStore.open(home, create=create)
    assert sorted(os.listdir(home)) == ["photo.jpg", "src"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotAStore, match=r"not a folder"):
        EventStore.open(a_file)


def test_create_still_makes_new_stores_and_reopens_existing_ones(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "volume" / "lost+found").mkdir(parents=True)  # a new volume's root
    for path in (tmp_path / "new", tmp_path / "empty", tmp_path / "volume"):
        with EventStore.open(path) as store:
            fill(store, 2)
        assert len(log_of(path)) == 2
        with EventStore.open(path, create=False) as store:
            assert store.last_seq == 2


def test_backup_into_its_own_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    log = make_store(path, files=1)
    before = sorted(os.listdir(path))
    with EventStore.open(path) as store:
        for dest in (path / "bk", path / "archive" / "bk", path, path / "hot" / ".." / "x"):
            with pytest.raises(UnsafePath, match=r"inside the store"):
                store.backup(dest)
        os.symlink(path / "archive", tmp_path / "link")
        with pytest.raises(UnsafePath, match=r"inside the store"):
            store.backup(tmp_path / "link" / "bk")  # inside it, through a symlink
    assert sorted(os.listdir(path)) == before
    assert log_of(path) == log


def test_cli_commands_that_read_never_create(tmp_path: Path) -> None:
    typo = str(tmp_path / "typo")
    for command in (
        ["stats", typo],
        ["verify", typo],
        ["export", typo, typo + ".jsonl"],
        ["merge", typo],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "eventstore.cli", *command],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 1 and proc.stderr.startswith("error: no store at"), proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == []


# -- leftovers stay provable until they are gone ------------------------------

KILLED_REMOVING_A_LEFTOVER = {
    "merge": """
        two = 2
        for _ in range(two):
            fill(store, 10)
            compact_all(store)
        tiering._remove_quietly = die  # the replaced files' keys are gone, the files not yet
        store.merge_archives()
        """,
    "undo": """
        fill(store, 20)
        def fail(*args):
            raise RuntimeError("before the commit point")
        store._tiering._check_seqs = fail
        tiering._remove_quietly = die  # the undone file's keys are gone, the file not yet
        compact_all(store)
        """,
}


@pytest.mark.parametrize("case", sorted(KILLED_REMOVING_A_LEFTOVER))
def test_a_process_killed_removing_its_leftovers_leaves_them_provable(
    tmp_path: Path, case: str
) -> None:
    # The numbers used to be forgotten before the files went: killed in
    # between, the files were no longer the store's to remove, for ever.
    path = tmp_path / "s"
    head = """
        import os, signal, sys
        from eventstore import EventStore, tiering
        from tests.test_never_lose_archive import compact_all, fill

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        store = EventStore.open(sys.argv[1])
        """
    proc = run_python(
        textwrap.dedent(head) + textwrap.dedent(KILLED_REMOVING_A_LEFTOVER[case]), str(path)
    )
    assert proc.returncode == -9, proc.stderr
    leftovers = ["00000001.esdb", "00000002.esdb"] if case == "merge" else ["00000001.esdb"]
    assert set(leftovers) <= set(os.listdir(path / "archive"))
    with EventStore.open(path) as store:
        assert store.unexpected_files == []
        assert store.orphans_removed == leftovers
        assert len(list(store.read_all())) == 20
    assert os.listdir(path / "archive") == (["00000003.esdb"] if case == "merge" else [])


# -- whatever is planted in archive/, open deletes none of it ------------------

_PLANTS = st.lists(
    st.tuples(
        st.one_of(
            st.integers(0, 40).map(lambda n: f"{n:08d}.esdb"),
            st.integers(0, 40).map(lambda n: f"{n:08d}.esdb.tmp"),
            st.integers(0, 40).map(lambda n: f"{n:09d}.esdb"),
            st.sampled_from(["notes.esdb", ".hidden.esdb", "x.esdb.tmp", "README", "a.b"]),
        ),
        st.sampled_from(["own copy", "foreign", "bytes", "empty", "fifo", "symlink", "folder"]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda plant: plant[0],
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plants=_PLANTS)
def test_open_removes_nothing_it_cannot_prove_its_own(
    tmp_path_factory: pytest.TempPathFactory, plants: list[tuple[str, str]]
) -> None:
    base = tmp_path_factory.mktemp("planted")
    store, other = base / "s", base / "other"
    log = make_store(store, files=2)
    make_store(other, files=1)
    folder = store / "archive"
    named = set(os.listdir(folder))
    planted: dict[str, str] = {}
    for name, kind in plants:
        if name in named:
            continue  # replacing a named file is ArchiveMismatch's business, tested above
        target = folder / name
        if kind == "own copy":
            shutil.copy(folder / "00000001.esdb", target)
        elif kind == "foreign":
            shutil.copy(other / "archive" / "00000001.esdb", target)
        elif kind == "bytes":
            target.write_bytes(b"\x89ESDB\r\n\x1a" + os.urandom(64))
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "fifo":
            os.mkfifo(target)
        elif kind == "symlink":
            os.symlink(other / "archive" / "00000001.esdb", target)
        else:
            target.mkdir()
        planted[name] = kind
    before = {n: os.lstat(folder / n).st_ino for n in os.listdir(folder)}
    with EventStore.open(store) as s:
        assert {n: os.lstat(folder / n).st_ino for n in os.listdir(folder)} == before
        assert sorted(u.name for u in s.unexpected_files) == sorted(planted)
        assert s.orphans_removed == []
        assert [(str(e.id), e.seq) for e in s.read_all()] == log
        fill(s, 2)
        compact_all(s)  # a new number: above every planted name
    after = {n: os.lstat(folder / n).st_ino for n in os.listdir(folder)}
    assert {n: i for n, i in after.items() if n in before} == before
    assert len(log_of(other)) == 15  # and the other store is whole


def test_a_creation_cut_short_is_finished_only_with_create(tmp_path: Path) -> None:
    # LevelDB made (CURRENT written), the configuration not yet: nothing in
    # it to lose, so create=True finishes the store; create=False makes nothing.
    path = tmp_path / "s"
    path.mkdir()
    plyvel.DB(str(path / "hot"), create_if_missing=True).close()
    with pytest.raises(StoreNotFound, match="cut short"):
        EventStore.open(path, create=False)
    assert get_system(path, keys.system_key(b"config")) is None
    with EventStore.open(path) as store:
        fill(store, 1)
    assert len(log_of(path)) == 1
    # Cut shorter: LevelDB had written its lock and log, not yet CURRENT.
    (tmp_path / "t" / "hot").mkdir(parents=True)
    (tmp_path / "t" / "hot" / "LOCK").write_bytes(b"")
    (tmp_path / "t" / "hot" / "LOG").write_text("creating\n")
    with pytest.raises(StoreNotFound, match="cut short"):
        EventStore.open(tmp_path / "t", create=False)
    with EventStore.open(tmp_path / "t") as store:
        fill(store, 1)
    assert len(log_of(tmp_path / "t")) == 1
