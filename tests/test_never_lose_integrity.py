"""Never lose what was written, never serve what was damaged (issue 13, items
3, 5, 6, 13, 14 and `eventstore repair`).

Damage is done to real files: bits flipped in a LevelDB log written by a
process that was SIGKILLed after its sync appends, in a table file, and in
the segment keys. Full disks are real: a small tmpfs mounted by the test
(root only; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore, NewEvent
from eventstore._leveldb import plyvel
from eventstore.errors import (
    CorruptFile,
    DiskFull,
    EventStoreError,
    StoreDamaged,
    WritesRefused,
)
from eventstore.ids import ulid_from_int
from eventstore.keys import SEGMENT

# -- helpers --------------------------------------------------------------------------


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def snapshot_of(store: EventStore) -> list[tuple[Any, ...]]:
    return [tuple(e) for e in store.read_all()]


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from eventstore import EventStore, NewEvent
    store = EventStore.open(sys.argv[1], sync=True)
    for n in range(int(sys.argv[2])):
        r = store.append(f"s{n % 5}", [NewEvent("T", {"n": n, "pad": "p" * 40})])
        print(r.ids[0], flush=True)  # acknowledged: the append returned
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def killed_writer_store(path: Path, events: int) -> list[str]:
    """A store whose process appended ``events`` with sync=True and was then
    SIGKILLed: its log holds them all. Returns the acknowledged ids."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(events)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acked = proc.stdout.split()
    assert len(acked) == events
    return acked


# -- item 3: a damaged log refuses to open, it never drops acknowledged events ----------


def test_a_damaged_log_of_acknowledged_sync_appends_refuses_to_open_or_keeps_them_all(
    tmp_path: Path,
) -> None:
    original = tmp_path / "original"
    acked = killed_writer_store(original, 400)
    (log,) = (original / "hot").glob("*.log")
    size = log.stat().st_size
    assert size > 20_000 and not list((original / "hot").glob("*.ldb"))  # all in the log
    refused = 0
    rnd = random.Random(13)
    chosen = [7, 100, 1_000, size // 3, size // 2, (2 * size) // 3, size - 40, size - 5]
    offsets = [(at, 0x10) for at in chosen]
    offsets += [(rnd.randrange(size), 1 << rnd.randrange(8)) for _ in range(12)]
    for offset, bit in offsets:
        case = tmp_path / f"at{offset}-{bit}"
        shutil.copytree(original, case)
        flip(case / "hot" / log.name, offset, bit)
        try:
            store = EventStore.open(case)
        except StoreDamaged as exc:
            refused += 1
            assert "eventstore repair" in str(exc) and "copy" in str(exc)
            # Refused without changing anything: the damaged log is still there.
            assert (case / "hot" / log.name).read_bytes() != log.read_bytes()
            assert (case / "hot" / log.name).stat().st_size == size
            continue
        with store:  # opened: then every acknowledged event is there, unchanged
            found = [store.get(i) for i in acked]
            assert all(e is not None for e in found), f"offset {offset}: events lost"
            assert [e.data["n"] for e in found if e] == list(range(400))
    # A flipped bit in a log record fails its checksum: LevelDB without
    # paranoid checks skipped those records and deleted the log.
    assert refused == len(offsets)


def test_repair_copies_the_hot_tier_aside_and_reports_what_it_salvaged(tmp_path: Path) -> None:
    store_path = tmp_path / "s"
    killed_writer_store(store_path, 300)
    (log,) = (store_path / "hot").glob("*.log")
    flip(log, log.stat().st_size // 2)
    damaged = {p.name: p.read_bytes() for p in (store_path / "hot").glob("[0-9M]*")}
    with pytest.raises(StoreDamaged):
        EventStore.open(store_path)
    proc = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr
    out = proc.stdout + proc.stderr
    assert "before: unknown: the store did not open" in out
    (aside,) = tmp_path.glob("s.before-repair-*")
    assert f"copied the hot tier to {aside / 'hot'}" in out
    # The copy is the damaged hot tier as it was, byte for byte.
    copied = {p.name: p.read_bytes() for p in (aside / "hot").glob("[0-9M]*")}
    assert copied == damaged and damaged
    # The damaged record is dropped, not served: the log has a hole, which
    # the report names and records, so that reads and verify take it as
    # known; it exits 1 all the same (events were lost).
    assert "after: " in out and "missing below it" in out
    assert "verify: OK (but for the events recorded lost)" in out
    assert proc.returncode == 1 and "events were lost" in proc.stderr
    with EventStore.open(store_path) as store:
        events = list(store.read_all())
        store.verify()
    assert 250 < len(events) < 300 and [e.seq for e in events] == sorted(e.seq for e in events)
    original = {e.data["n"]: e.data for e in events}
    assert all(d["pad"] == "p" * 40 for d in original.values())  # no damaged byte served
    check = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "verify", str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert f"OK {store_path}: {len(events)} events" in check.stdout
    assert f"but for {300 - len(events)} events a repair recorded lost" in check.stdout


def test_repair_of_a_whole_store_reports_before_and_after_and_verifies(tmp_path: Path) -> None:
    store_path = tmp_path / "s"
    killed_writer_store(store_path, 50)
    proc = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "before: 50 events, last seq 50" in proc.stdout
    assert "after: 50 events, last seq 50; no seq missing" in proc.stdout
    assert "verify: OK" in proc.stdout


# -- item 6: bit rot in a hot table is caught on read and by verify() ----------------------


def _tabled_store(path: Path) -> list[tuple[Any, ...]]:
    """A store whose events are in one LevelDB table, stored raw (incompressible)."""
    with EventStore.open(path) as store:
        for n in range(60):
            store.append(f"s{n % 3}", [NewEvent("T", os.urandom(700), {"n": n})])
        store._hot.db.compact_range()
        return snapshot_of(store)


def test_bit_rot_in_a_hot_table_is_caught_by_reads_and_by_verify(tmp_path: Path) -> None:
    original = tmp_path / "original"
    before = _tabled_store(original)
    (table,) = (original / "hot").glob("*.ldb")
    size = table.stat().st_size
    caught_by_reads = 0
    for k in range(1, 9):
        offset = size * k // 12  # inside the event blocks, before the index
        case = tmp_path / f"at{offset}"
        shutil.copytree(original, case)
        flip(case / "hot" / table.name, offset, 0x01)
        try:
            store = EventStore.open(case)
        except StoreDamaged:
            continue  # the block held the system keys: refused at open
        with store:
            # Reads give the events as they were, or an error: never other bytes.
            for read in ("all", "streams", "get"):
                try:
                    got = _read(store, read, before)
                except EventStoreError as exc:
                    assert isinstance(exc, (CorruptFile, StoreDamaged)), exc
                    caught_by_reads += 1
                    continue
                assert sorted(got) == sorted(before), f"offset {offset}: damaged data served"
            with pytest.raises(CorruptFile, match="damaged block"):
                store.verify()
    assert caught_by_reads > 0


def _read(store: EventStore, how: str, before: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    if how == "all":
        return snapshot_of(store)
    if how == "streams":
        return [tuple(e) for s in ("s0", "s1", "s2") for e in store.read_stream(s)]
    found = [store.get(e[0]) for e in before]
    return [tuple(e) for e in found if e is not None]


# -- item 5: damaged segment keys fail verify() and never hide events ----------------------


def _archived_store(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Three archive files and a hot tail, over five streams."""
    with EventStore.open(path) as store:
        for round_ in range(4):
            for n in range(5):
                store.append(
                    f"stream-{n}", [NewEvent("T", {"r": round_, "k": k}) for k in range(3)]
                )
            if round_ < 3:
                (last,) = store.read_all(backwards=True, limit=1)
                store.compact(before=ulid_from_int(int(last.id) + 1))
        store.cleanup()
        assert len(store.archive_files()) == 3
        store.verify()
        return {
            s: [tuple(e) for e in store.read_stream(s)] for s in map("stream-{}".format, range(5))
        }


def _segment_items(hot: Path) -> list[tuple[bytes, bytes]]:
    db = plyvel.DB(str(hot))
    try:
        return list(db.iterator(prefix=SEGMENT))
    finally:
        db.close()


def _rewrite(hot: Path, old: tuple[bytes, bytes], new: tuple[bytes, bytes]) -> None:
    db = plyvel.DB(str(hot))
    try:
        db.delete(old[0])
        db.put(*new)
    finally:
        db.close()


def test_flipped_bits_in_segment_keys_fail_verify_and_reads_are_right_or_refuse(
    tmp_path: Path,
) -> None:
    original = tmp_path / "original"
    streams = _archived_store(original)
    items = _segment_items(original / "hot")
    assert len(items) == 15  # five streams in each of three files
    cases: list[tuple[int, str, int, int]] = []  # item, key or value, byte, bit
    for n in (0, 7, 14):
        key, value = items[n]
        cases += [(n, "key", b, 1 << (b % 8)) for b in range(len(SEGMENT), len(key), 3)]
        cases += [(n, "value", b, 1 << (b % 8)) for b in range(len(value))]
    hidden = 0
    for i, (n, part, at, bit) in enumerate(cases):
        case = tmp_path / f"case{i}"
        shutil.copytree(original, case)
        key, value = items[n]
        if part == "key":
            key = key[:at] + bytes([key[at] ^ bit]) + key[at + 1 :]
        else:
            value = value[:at] + bytes([value[at] ^ bit]) + value[at + 1 :]
        _rewrite(case / "hot", items[n], (key, value))
        with EventStore.open(case) as store:
            with pytest.raises(CorruptFile, match="segment keys"):
                store.verify()
            for stream, events in streams.items():
                for backwards in (False, True):
                    try:
                        got = [tuple(e) for e in store.read_stream(stream, backwards=backwards)]
                    except CorruptFile as exc:
                        assert "segment keys" in str(exc)
                        hidden += 1
                        continue
                    assert got == (events[::-1] if backwards else events), (part, at, bit)
                for e in events:
                    found = store.get(e[0])
                    assert found is not None and tuple(found) == e
    assert hidden > 0  # some flips would have hidden events: they were refused instead


# -- item 13: raw errors of damaged values leave as EventStoreErrors ------------------------


def test_a_damaged_stored_value_is_an_eventstore_error_not_a_raw_decoding_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("a", [NewEvent("T", 1)])
        store.set_checkpoint("c", 5)
    db = plyvel.DB(str(path / "hot"))
    db.put(b"ma\x00", b"\xc1")  # the stream's version: a byte msgpack never uses
    db.put(b"cc\x00", b"\x92\x01")  # a checkpoint: a truncated array
    db.close()
    with EventStore.open(path) as store:
        with pytest.raises(StoreDamaged):
            store.stream_version("a")
        with pytest.raises(EventStoreError):
            store.get_checkpoint("c")
        with pytest.raises(EventStoreError):
            store.append("a", [NewEvent("T", 2)])


def test_a_damaged_archive_file_read_is_an_eventstore_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        r = store.append("a", [NewEvent("T", n) for n in range(50)])
        store.compact(before=ulid_from_int(int(r.ids[-1]) + 1))
    (f,) = (path / "archive").glob("*.esdb")
    flip(f, 200, 0xFF)
    try:
        store = EventStore.open(path)
    except EventStoreError:
        return  # refused at open: fine
    with store:
        with pytest.raises(EventStoreError):
            list(store.read_stream("a"))
        with pytest.raises(EventStoreError):
            store.verify()


# -- item 14: a full disk --------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Fill the disk of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError):  # full indeed
        (folder / "probe").write_bytes(b"x")
    return filler


def test_after_a_disk_full_write_reads_go_on_and_a_full_disk_still_opens_to_read(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        path = disk / "s"
        acked = []
        store = EventStore.open(path, sync=True)
        with pytest.raises(DiskFull):
            for n in range(100_000):
                acked.append(store.append("s", [NewEvent("T", os.urandom(2000), {"n": n})]))
        assert len(acked) > 100
        # Reads go on; writes are refused with a clear error.
        assert [e.metadata["n"] for e in store.read_stream("s")] == list(range(len(acked)))
        assert store.get(acked[0].ids[0]) is not None and store.last_seq == len(acked)
        with pytest.raises(WritesRefused, match="reads go on"):
            store.append("s", [NewEvent("T", 1)])
        with pytest.raises(WritesRefused):
            store.set_checkpoint("c", 1)
        # A backup (to another disk) reads only: it goes on too.
        assert store.backup(tmp_path / "backup").events == len(acked)
        store.close()
        with EventStore.open(tmp_path / "backup") as copy:
            assert len(list(copy.read_all())) == len(acked)
        filler = fill(disk)  # not a byte left
        hot_files = {p.name: p.read_bytes() for p in (path / "hot").glob("[0-9M]*")}
        # A full disk still opens (read-only), to read, verify and export.
        with EventStore.open(path) as store:
            assert len(list(store.read_all())) == len(acked)
            store.verify()
            with pytest.raises(WritesRefused, match="disk was full"):
                store.append("s", [NewEvent("T", 1)])
            assert store._hot._copy is not None
            scratch = store._hot._copy.folder
            assert os.path.isdir(scratch)
        # What LevelDB holds on the full disk was not changed (a failed open
        # may leave an empty file behind, which the next open removes).
        after = {p.name: p.read_bytes() for p in (path / "hot").glob("[0-9M]*")}
        assert {k: v for k, v in after.items() if v} == hot_files
        assert not os.path.exists(scratch)  # the scratch copy is gone
        out = tmp_path / "export.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "eventstore.cli", "export", str(path), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert len(out.read_text().splitlines()) == len(acked) + 1
        # Space again (LevelDB needs room for a table as large as its log):
        # the store opens for writing and keeps everything.
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        with EventStore.open(path) as store:
            store.append("s", [NewEvent("T", 1)])
            assert store.last_seq == len(acked) + 1
            store.verify()


def test_a_failed_import_resumes_exactly_when_rerun(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with EventStore.open(source) as store:
        for n in range(100):  # 10,000 events: three batches of the import (4096 each)
            store.append_many(
                [(f"s{k}", [NewEvent("T", os.urandom(300), {"n": n})], n - 1) for k in range(100)]
            )
        expected = snapshot_of(store)
    export = tmp_path / "export.jsonl"
    run = [sys.executable, "-m", "eventstore.cli"]
    subprocess.run([*run, "export", str(source), str(export)], check=True, capture_output=True)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        target = disk / "t"
        EventStore.open(target).close()  # an existing store: a failure leaves what it wrote
        first = subprocess.run(
            [*run, "import", str(target), str(export)], capture_output=True, text=True, timeout=300
        )
        assert first.returncode != 0 and "Traceback" not in first.stderr
        assert "disk is full" in first.stderr
        with EventStore.open(target) as store:
            partial = snapshot_of(store)
        assert 0 < len(partial) < len(expected) and partial == expected[: len(partial)]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = subprocess.run(
            [*run, "import", str(target), str(export)], capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        assert f"resumed: the first {len(partial):,} were in the store already" in again.stdout
        with EventStore.open(target) as store:
            assert snapshot_of(store) == expected
            store.verify()
        # A third run has nothing left to do.
        third = subprocess.run(
            [*run, "import", str(target), str(export)], capture_output=True, text=True
        )
        assert third.returncode == 0 and "nothing to import" in third.stdout


def test_a_damaged_record_of_a_resumed_import_is_not_taken_as_imported(tmp_path: Path) -> None:
    # The rerun skips only events equal to the file's; one that differs stops it.
    source = tmp_path / "source"
    with EventStore.open(source) as store:
        store.append("a", [NewEvent("T", n) for n in range(5)])
    export = tmp_path / "export.jsonl"
    run = [sys.executable, "-m", "eventstore.cli"]
    subprocess.run([*run, "export", str(source), str(export)], check=True, capture_output=True)
    target = tmp_path / "t"
    subprocess.run([*run, "import", str(target), str(export)], check=True, capture_output=True)
    lines = export.read_text().splitlines()
    lines[2] = lines[2].replace('"data":1', '"data":111')
    export.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [*run, "import", str(target), str(export)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    with EventStore.open(target) as store:
        assert [e.data for e in store.read_all()] == list(range(5))


def test_keys_missing_from_the_hot_tier_make_reads_refuse_not_skip(tmp_path: Path) -> None:
    # LevelDB ends or skips a scan quietly at some damaged blocks (the last
    # of a table): seen from the reads, keys are just not there. Seqs and
    # versions are dense, so the jump shows it.
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        r = store.append("a", [NewEvent("T", n) for n in range(40)])
    db = plyvel.DB(str(path / "hot"))
    gone = r.ids[20].bytes
    db.delete(b"g" + gone)
    db.delete(b"ea\x00" + gone)
    db.close()
    with EventStore.open(path) as store:
        with pytest.raises(CorruptFile, match="seq 22 where 21 belongs"):
            list(store.read_all())
        with pytest.raises(CorruptFile, match="versions jump"):
            list(store.read_stream("a"))
        with pytest.raises(CorruptFile, match="versions jump"):
            list(store.read_stream("a", backwards=True))
        with pytest.raises(CorruptFile):
            store.verify()
        # Once a repair records the hole as lost, reads take the log as it is.
        store.record_repair([(21, 21)])
        assert [e.seq for e in store.read_all()] == [*range(1, 21), *range(22, 41)]
        assert len(list(store.read_stream("a"))) == 39
        store.verify()


def test_a_compaction_on_a_full_disk_is_disk_full_and_changes_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        path = disk / "s"
        with EventStore.open(path) as store:
            r = store.append("a", [NewEvent("T", os.urandom(1000)) for _ in range(1000)])
            before = snapshot_of(store)
            fill(disk)
            with pytest.raises(DiskFull) as caught:
                store.compact(before=ulid_from_int(int(r.ids[-1]) + 1))
            assert isinstance(caught.value, OSError)
            assert store.archive_files() == [] and store.watermark is None
            assert snapshot_of(store) == before
        assert list((path / "archive").iterdir()) == []


def test_repair_of_bit_rot_in_a_table_drops_the_damaged_block_and_serves_no_damage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    before = _tabled_store(path)
    (table,) = (path / "hot").glob("*.ldb")
    flip(table, table.stat().st_size // 4, 0x01)  # an event block
    with EventStore.open(path) as store, pytest.raises(CorruptFile):
        store.verify()
    proc = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr
    dropped = int(proc.stdout.split("dropped ")[1].split()[0].replace(",", ""))
    assert dropped > 0
    with EventStore.open(path) as store:
        store.verify()  # the holes are recorded; everything else is whole
        after = snapshot_of(store)
    assert 0 < len(after) < len(before)
    assert all(e in before for e in after)  # what is left is exactly as written


def test_repair_of_a_store_open_elsewhere_refuses_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("a", [NewEvent("T", 1)])
        files = {p.name: p.read_bytes() for p in (path / "hot").glob("[0-9M]*")}
        proc = subprocess.run(
            [sys.executable, "-m", "eventstore.cli", "repair", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "already open in another process" in proc.stderr
        assert not list(tmp_path.glob("s.before-repair-*"))
        assert {p.name: p.read_bytes() for p in (path / "hot").glob("[0-9M]*")} == files
        assert [e.data for e in store.read_all()] == [1]


def test_a_scratch_copy_left_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    from eventstore.hot import _remove_stale_copies

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"eventstore-readonly-{dead.stdout.strip()}-abc"
    alive = tmp_path / f"eventstore-readonly-{os.getpid()}-def"
    mine = tmp_path / "eventstore-readonly-notes"
    for folder in (stale, alive, mine):
        folder.mkdir()
    _remove_stale_copies(str(tmp_path))
    assert not stale.exists() and alive.exists() and mine.exists()


def test_repair_rebuilds_lost_segment_keys_from_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "s"
    streams = _archived_store(path)
    items = _segment_items(path / "hot")
    db = plyvel.DB(str(path / "hot"))
    for key, _ in items[::2]:  # as if a damaged block took them
        db.delete(key)
    db.close()
    with EventStore.open(path) as store, pytest.raises(CorruptFile, match="segment keys"):
        store.verify()
    proc = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rebuilt 15 segment keys from the archive files" in proc.stdout
    assert "no seq missing" in proc.stdout and "verify: OK" in proc.stdout
    assert _segment_items(path / "hot") == items
    with EventStore.open(path) as store:
        for stream, events in streams.items():
            assert [tuple(e) for e in store.read_stream(stream)] == events


def _log_headers(log: Path) -> list[int]:
    """Offsets of the record headers of a LevelDB log (doc/log_format.md)."""
    data = log.read_bytes()
    pos, headers = 0, []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        headers.append(pos)
        pos += 7 + int.from_bytes(data[pos + 4 : pos + 6], "little")
    return headers


def test_a_damaged_length_that_makes_records_look_torn_refuses_to_open(tmp_path: Path) -> None:
    # LevelDB takes a record running past the end of the log for a write a
    # crash cut short, and drops it and all after it, paranoid or not.
    original = tmp_path / "original"
    acked = killed_writer_store(original, 100)
    (log,) = (original / "hot").glob("*.log")
    headers = _log_headers(log)
    assert len(headers) == 101  # the config, then one record per append
    # A flip that makes the length larger (one that shrinks it fails the
    # checksum instead): the lowest clear bit of its low byte.
    low = log.read_bytes()[headers[-1] + 4]
    grow = next(1 << b for b in range(8) if not low >> b & 1)
    cases = [(headers[-1] + 4, grow), (headers[-1] + 5, 0x01), (headers[-1] + 5, 0x80)]
    cases += [(headers[-n] + 5, 0x80) for n in (2, 5)]  # earlier records of the last block
    for offset, bit in cases:
        case = tmp_path / f"at{offset}-{bit}"
        shutil.copytree(original, case)
        flip(case / "hot" / log.name, offset, bit)
        with pytest.raises(StoreDamaged, match="is whole"):
            EventStore.open(case)
    # Repair sets the length right, from the checksum: nothing is lost.
    proc = subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "repair", str(case)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "set right the damaged length of 1 log record" in proc.stdout
    with EventStore.open(case) as store:
        assert all(store.get(i) is not None for i in acked)
        store.verify()
    # A real torn write (the last append cut short) still opens, without it.
    case = tmp_path / "torn"
    shutil.copytree(original, case)
    torn = case / "hot" / log.name
    torn.write_bytes(torn.read_bytes()[:-30])
    with EventStore.open(case) as store:
        assert [store.get(i) is not None for i in acked] == [True] * 99 + [False]
