"""Bugs found by an independent correctness review (h22), one test each.

Each test reproduces a confirmed bug on a real store in tmp_path. Those whose
fix lies in a module being restructured elsewhere are marked
``xfail(strict=True)`` with the fix named in the reason, so that the test
starts failing loudly (XPASS) the moment the fix lands and the mark can go.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import ANY, NO_STREAM, EventStore, NewEvent, keys
from eventstore._leveldb import plyvel
from eventstore.cli import main
from eventstore.errors import CorruptFile, WrongExpectedVersion
from eventstore.ids import ulid_from_int
from eventstore.tiering import ArchiveInfo


def _repair(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["repair", str(path)])
    return result.exit_code, result.output


def _after(ulid: object) -> object:
    return ulid_from_int(int(ulid) + 1)  # type: ignore[call-overload]


# -- repair and the manifest -----------------------------------------------------


def test_a_rebuilt_manifest_leaves_out_a_file_the_surviving_watermark_never_committed(
    tmp_path: Path,
) -> None:
    # A compaction writes and renames its file, then dies before the commit
    # batch: the file's events are still hot, at or above the watermark. If
    # the manifest key is then lost, repair rebuilt it from every file in
    # archive/, kept the surviving (older) watermark, and so named the
    # uncommitted file too: read_all served its five events twice.
    path, twin = tmp_path / "s", tmp_path / "twin"
    with EventStore.open(path) as s:
        first = s.append("a", [NewEvent("T", n) for n in range(5)])
        s.compact(before=_after(first.ids[-1]))
        second = s.append("a", [NewEvent("T", n) for n in range(5, 10)])
        want = [(e.id, e.seq, e.data) for e in s.read_all()]
    # The second compaction's file, as it stood before its commit: made by
    # the same compaction run on a copy of the store.
    shutil.copytree(path, twin)
    with EventStore.open(twin) as s:
        s.compact(before=_after(second.ids[-1]))
    (made,) = {p.name for p in (twin / "archive").iterdir()} - {
        p.name for p in (path / "archive").iterdir()
    }
    shutil.copy(twin / "archive" / made, path / "archive" / made)
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.MANIFEST)
    db.close()

    code, output = _repair(path)
    assert code == 0, output
    with EventStore.open(path) as s:
        assert [(e.id, e.seq, e.data) for e in s.read_all()] == want
        assert [e.version for e in s.read_stream("a")] == list(range(10))
        s.verify()
        assert s.log_gaps() == (10, 10, [])


@pytest.mark.parametrize("merged", [False, True])
def test_repair_restores_a_lost_watermark_beside_a_sound_manifest(
    tmp_path: Path, merged: bool
) -> None:
    # Open refuses a manifest that names files without a watermark and says
    # to run repair; repair found the manifest sound, changed nothing, and
    # failed with the same message: no way out but a backup.
    path = tmp_path / "s"
    with EventStore.open(path) as s:
        r = s.append("a", [NewEvent("T", n) for n in range(10)])
        s.compact(before=r.ids[3], max_file_events=2)
        s.compact(before=r.ids[6])
        if merged:
            s.merge_archives()
        s.cleanup()
        want = [(e.id, e.seq, e.version) for e in s.read_all()]
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.WATERMARK)
    db.close()
    code, output = _repair(path)
    assert code == 0, output
    with EventStore.open(path) as s:
        assert [(e.id, e.seq, e.version) for e in s.read_all()] == want
        assert s.watermark is not None and r.ids[5] < s.watermark <= r.ids[6]
        s.verify()


def _compacted_store(
    path: Path, index_types: bool = True, compact: bool = True
) -> list[tuple[object, ...]]:
    with EventStore.open(path, index_types=index_types) as s:
        r = s.append("a", [NewEvent("T", n, indexes={"k": "v"}) for n in range(10)])
        s.append("b", [NewEvent("U", n) for n in range(3)])
        if compact:
            s.compact(before=r.ids[5])
        return [(e.id, e.seq, e.stream, e.version) for e in s.read_all()]


def _sound_after_repair(path: Path, want: list[tuple[object, ...]]) -> None:
    code, output = _repair(path)
    assert code == 0, output
    with EventStore.open(path) as s:
        assert [(e.id, e.seq, e.stream, e.version) for e in s.read_all()] == want
        s.verify()


@pytest.mark.parametrize("index_types", [True, False])
@pytest.mark.parametrize("compact", [True, False])  # read from a file's flags, or the hot tier
def test_repair_restores_a_lost_configuration(
    tmp_path: Path, index_types: bool, compact: bool
) -> None:
    # Open refuses "no configuration but holds data" and says to run
    # repair, which changed nothing and failed the same way.
    path = tmp_path / "s"
    want = _compacted_store(path, index_types, compact)
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.system_key(b"config"))
    db.close()
    _sound_after_repair(path, want)
    with EventStore.open(path) as s:
        assert s._index_types is index_types  # as created: reads of type= depend on it
        assert len(list(s.read_index("a", "type", "T"))) == (10 if index_types else 0)


def test_repair_drops_a_record_of_files_being_made_that_does_not_decode(tmp_path: Path) -> None:
    path = tmp_path / "s"
    want = _compacted_store(path)
    db = plyvel.DB(str(path / "hot"))
    db.put(keys.STRAY, b"\xc1")  # never valid msgpack
    db.close()
    _sound_after_repair(path, want)


@pytest.mark.parametrize("stream", ["a", "b"])  # partly archived; all hot
def test_repair_restores_lost_stream_versions_so_no_version_is_written_twice(
    tmp_path: Path, stream: str
) -> None:
    # A damaged block that held `m` keys, dropped by repair: the stream
    # looked new, verify failed after every repair, and an append expecting
    # no stream wrote version 0 a second time.
    path = tmp_path / "s"
    want = _compacted_store(path)
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.meta_key(stream.encode()))
    db.close()
    _sound_after_repair(path, want)
    with EventStore.open(path) as s:
        last = [e.version for e in s.read_stream(stream)][-1]
        assert s.stream_version(stream) == last
        with pytest.raises(WrongExpectedVersion):
            s.append(stream, [NewEvent("T")], expected_version=NO_STREAM)


# -- repair that loses events -------------------------------------------------------


def test_a_store_whose_repair_recorded_a_lost_event_still_compacts(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as s:
        r = s.append("a", [NewEvent("T", n) for n in range(40)])
    # One record lost to a damaged block, as repair leaves it: its global
    # and index entries go with it (repair's reconcile step).
    gone = r.ids[20].bytes
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.event_key(b"a", gone))
    db.close()
    code, output = _repair(path)
    assert code == 1 and "1 events were lost" in output, output
    with EventStore.open(path) as s:
        assert s.lost_seqs == [(21, 21)]
        s.verify()
        s.compact(before=_after(r.ids[-1]))
        assert [e.seq for e in s.read_all()] == [*range(1, 21), *range(22, 41)]
        assert [e.seq for e in s.read_all(from_seq=25, limit=3)] == [25, 26, 27]
        assert [e.seq for e in s.read_all(from_seq=21, limit=1)] == [22]
        s.verify()
        # The hole falls between two files; a merge keeps it there, and
        # merges on each side of it.
        assert [(f.first_seq, f.last_seq) for f in s._archive.tiers.files] == [(1, 20), (22, 40)]
        more = s.append("a", [NewEvent("T", n) for n in range(5)])
        s.compact(before=_after(more.ids[-1]))
        s.merge_archives()
        assert [(f.first_seq, f.last_seq) for f in s._archive.tiers.files] == [(1, 20), (22, 45)]
        assert [e.version for e in s.read_stream("a")] == [*range(20), *range(21, 45)]
        s.verify()
    with EventStore.open(path) as s:
        assert [e.seq for e in s.read_all()] == [*range(1, 21), *range(22, 46)]
        s.verify()


def test_repair_that_loses_the_newest_event_records_it_and_never_reuses_its_seq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as s:
        s.append("b", [NewEvent("T", n) for n in range(5)])
        r = s.append("a", [NewEvent("T", n) for n in range(5)])
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.event_key(b"a", r.ids[-1].bytes))  # the newest record's block is lost
    db.close()
    code, output = _repair(path)
    assert code == 1 and "1 events were lost" in output, output
    with EventStore.open(path) as s:
        assert s.lost_seqs == [(10, 10)]
        s.verify()
        # Seq 10 (position 10 * 256 on the server) named the lost event: a
        # client that saw it resumes after it, and must not skip this one.
        s.append("c", [NewEvent("T")], expected_version=ANY)
        assert [e.seq for e in s.read_all()][-2:] == [9, 11]


# -- subscriptions ----------------------------------------------------------------


@pytest.mark.parametrize("types", [None, ["T"]])
def test_a_subscription_after_a_position_above_every_event_delivers_only_later_ones(
    tmp_path: Path, types: list[str] | None
) -> None:
    # A position above every stored id (a checkpoint from a restored backup's
    # future, say): the first page finds nothing after it, and reading went
    # on by seq, which then also delivered events with ids below the position.
    with EventStore.open(tmp_path / "s") as s:
        r = s.append("a", [NewEvent("T", n) for n in range(3)])
        ahead = ulid_from_int(int(r.ids[-1]) + (50 << 80))  # 50 ms of id space later
        sub = s.subscribe(after=ahead, types=types, page_size=2)
        assert sub.get(timeout=0) is None
        below = s.append("a", [NewEvent("T", n) for n in range(3, 6)])
        assert all(i < ahead for i in below.ids)
        assert list(s.read_all(after=ahead)) == []
        assert sub.get(timeout=0) is None
        while True:  # ids at or above the position: time must pass it
            later = s.append("a", [NewEvent("T", "later")])
            if later.ids[0] > ahead:
                break
        got = [e.id for e in iter(lambda: sub.get(timeout=0), None)]
        assert got == [e.id for e in s.read_all(after=ahead)] == [later.ids[0]]


def test_after_a_repair_reads_still_refuse_a_seq_hole_it_did_not_record(tmp_path: Path) -> None:
    # A recorded loss turned every check of the hot tier's seqs off, for
    # good: keys lost later to a block LevelDB skips were served as a
    # shorter log without a word (only verify() still saw it).
    path = tmp_path / "s"
    with EventStore.open(path) as s:
        r = s.append("a", [NewEvent("T", n) for n in range(40)])
    db = plyvel.DB(str(path / "hot"))
    db.delete(keys.event_key(b"a", r.ids[20].bytes))
    db.close()
    code, output = _repair(path)
    assert code == 1 and "1 events were lost" in output, output
    kept = [*range(1, 21), *range(22, 41)]
    with EventStore.open(path) as s:
        assert s.lost_seqs == [(21, 21)]
        assert [e.seq for e in s.read_all()] == kept
        assert [e.seq for e in s.read_all(backwards=True)] == kept[::-1]
    db = plyvel.DB(str(path / "hot"))  # later damage: seq 31's keys go
    db.delete(b"g" + r.ids[30].bytes)
    db.delete(keys.event_key(b"a", r.ids[30].bytes))
    db.close()
    with EventStore.open(path) as s:
        with pytest.raises(CorruptFile, match="seq 32 where 31 belongs"):
            list(s.read_all())
        with pytest.raises(CorruptFile, match="seq 30 where 31 belongs"):
            list(s.read_all(backwards=True))
        with pytest.raises(CorruptFile):
            s.verify()


def _three_files(path: Path) -> list[ArchiveInfo]:
    with EventStore.open(path) as s:
        for k in range(3):
            r = s.append("s", [NewEvent("T", 5 * k + n) for n in range(5)])
            s.append("t", [NewEvent("T", k)])
            s.compact(before=_after(r.ids[-1]))
        s.append("s", [NewEvent("T", n) for n in range(15, 17)])
        return s.archive_files()


@pytest.mark.parametrize("damage", ["missing", "foreign"])
def test_repair_of_a_missing_or_foreign_archive_file_records_its_events_lost(
    tmp_path: Path, damage: str
) -> None:
    # Open refuses a sound manifest naming a file that is missing or not
    # the one recorded, and points at repair: repair changed nothing and
    # failed the same way. Now the entry goes and its events are recorded
    # lost; the stream reads on across the hole.
    path = tmp_path / "s"
    files = _three_files(path)
    middle = Path(files[1].path)
    if damage == "missing":
        middle.unlink()
    else:  # the same number's file from another store
        other = _three_files(tmp_path / "other")
        shutil.copy(other[1].path, middle)
    code, output = _repair(path)
    assert code == 1 and "6 events were lost" in output, output
    with EventStore.open(path) as s:
        assert s.lost_seqs == [(6, 11)]  # t's first event, then s 5-9
        assert [e.data for e in s.read_stream("s")] == [*range(5), *range(10, 17)]
        assert [e.data for e in s.read_stream("s", backwards=True)] == [
            *range(16, 9, -1),
            *range(4, -1, -1),
        ]
        assert [e.data for e in s.read_stream("t")] == [1, 2]
        s.verify()
    assert middle.exists() == (damage == "foreign")  # never deleted: not provably ours


def test_in_a_repaired_store_a_lost_segment_key_still_refuses_not_hides(tmp_path: Path) -> None:
    # A repaired store reads across version holes; that turned off the check
    # that a stream's archive keys run on into the hot tier, so a key lost
    # later hid its file's events from read_stream without a word.
    path = tmp_path / "s"
    _three_files(path)
    with EventStore.open(path) as s:
        s.record_repair([(100, 100)])  # an earlier repair's loss, elsewhere
        want = [e.data for e in s.read_stream("s")]
    db = plyvel.DB(str(path / "hot"))
    for stream in (b"s", b"t"):
        *_, last = db.iterator(prefix=keys.segment_prefix(stream), include_value=False)
        db.delete(last)  # the key of the newest file holding the stream
    db.close()
    with EventStore.open(path) as s:
        for stream in ("s", "t"):
            for backwards in (False, True):
                with pytest.raises(CorruptFile, match="archive keys"):
                    list(s.read_stream(stream, backwards=backwards))
        with pytest.raises(CorruptFile):
            s.verify()
    _code, output = _repair(path)  # the keys are rebuilt from the files
    assert "rebuilt" in output and "segment keys" in output, output
    with EventStore.open(path) as s:
        assert [e.data for e in s.read_stream("s")] == want


# -- export and import --------------------------------------------------------------


def test_import_refuses_an_export_cut_short_at_a_line_boundary(tmp_path: Path) -> None:
    source, target, dump = tmp_path / "s", tmp_path / "t", tmp_path / "dump.jsonl"
    with EventStore.open(source) as s:
        s.append("a", [NewEvent("T", n) for n in range(10)])
    runner = CliRunner()
    done = runner.invoke(main, ["export", str(source), str(dump)])
    assert done.exit_code == 0, done.output
    lines = dump.read_bytes().splitlines(keepends=True)
    assert len(lines) == 11  # the header, then one line an event
    dump.write_bytes(b"".join(lines[:6]))  # the header and five of the ten events
    done = runner.invoke(main, ["import", str(target), str(dump)])
    assert done.exit_code != 0, done.output
    assert "cut short" in done.output
    with EventStore.open(target) as t:
        assert t.last_seq == 0
    # The whole file imports.
    dump.write_bytes(b"".join(lines))
    done = runner.invoke(main, ["import", str(target), str(dump)])
    assert done.exit_code == 0, done.output


# -- the served store ---------------------------------------------------------------


class _Context:
    """The part of a grpc.ServicerContext that the admin Follow uses."""

    def __init__(self, seconds: float) -> None:
        self.active = True
        self.until = time.monotonic() + seconds  # the client goes then at the latest

    def is_active(self) -> bool:
        return self.active and time.monotonic() < self.until

    def abort(self, code: object, details: str) -> None:
        raise AssertionError(f"aborted: {details}")


@pytest.mark.parametrize("types", [None, ["T"]])
def test_served_tail_does_not_skip_an_event_committed_while_it_starts(
    tmp_path: Path, types: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Follow read the last `lines` events in one view and the newest event
    # (where the subscription starts) in a later one: an event committed
    # between the two was in neither, and never shown.
    from eventstore.cli import main as cli_main
    from eventstore.cli.remote import AdminServer

    with EventStore.open(tmp_path / "s") as s:
        s.append("a", [NewEvent("T", n) for n in range(5)])
        reads = 0
        real = s.read_all

        def read_all(*args: object, **kwargs: object) -> object:
            nonlocal reads
            reads += 1
            got = list(real(*args, **kwargs))  # type: ignore[arg-type]
            if reads == 1:  # another client's append lands between the reads
                s.append("a", [NewEvent("T", "between")])
            return iter(got)

        monkeypatch.setattr(s, "read_all", read_all)
        context = _Context(5.0)
        follow = AdminServer(s, cli_main)._serve_follow(
            {"after": None, "lines": 3, "types": types, "prefix": None}, context
        )
        shown = []
        for message in follow:
            if "live" in message:
                monkeypatch.setattr(s, "read_all", real)
            if "ev" in message:
                shown.append(message["ev"]["data"])
                if message["ev"]["data"] == "between":
                    context.active = False
        assert shown == [2, 3, 4, "between"]


def test_a_retried_append_to_a_stream_deleted_and_made_again_is_idempotent(
    tmp_path: Path,
) -> None:
    # The retry (its reply was lost) looked for its event ids from version 0,
    # among the deleted events, instead of where the stream starts again.
    import uuid

    from eventstore.deletion import delete_stream
    from eventstore.server.codec import UUID_INDEX
    from eventstore.server.operations import Operations

    def event() -> NewEvent:
        return NewEvent("T", b"x", indexes={UUID_INDEX: str(uuid.uuid4())})

    with EventStore.open(tmp_path / "s") as s:
        ops = Operations(s)
        ops.append("a", [event(), event()], NO_STREAM)
        delete_stream(s, "a")
        again = [event(), event()]
        first = ops.append("a", again, NO_STREAM)
        assert (first.last_version, first.last_seq) == (3, 5)
        assert ops.append("a", again, NO_STREAM) == first
        assert s.last_seq == 5
        with pytest.raises(WrongExpectedVersion):
            ops.append("a", [event()], NO_STREAM)  # other ids: a real conflict
