"""scavenge(): what deletion, retention and redaction hide leaves every file.

The proof is on disk: a unique marker written into each erased event's data
and metadata appears in no byte of any file under the store folder after a
scavenge (zstd frames of the archive files decompressed and searched too),
while the markers of kept events are still there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import zstandard

from eventstore import EventStore, NewEvent, scavenge
from eventstore.events import Event
from eventstore.ids import ulid_from_int

from .leveldb_bytes import table_blocks

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _file_bytes(path: str) -> list[bytes]:
    """The file's bytes, the decompressed blocks of a LevelDB table, and the
    decompressed content of every zstd frame in it."""
    with open(path, "rb") as f:
        data = f.read()
    out = [data]
    if path.endswith((".ldb", ".sst")):
        out += table_blocks(data)
    at = data.find(ZSTD_MAGIC)
    while at != -1:
        with contextlib.suppress(zstandard.ZstdError):
            out.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[at:]))
        at = data.find(ZSTD_MAGIC, at + 1)
    return out


def store_bytes(folder: str) -> list[bytes]:
    """Every byte under ``folder``: LevelDB's tables, logs, MANIFEST and LOG
    files and the archive files alike."""
    blobs: list[bytes] = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            blobs.extend(_file_bytes(os.path.join(root, name)))
    return blobs


def found(markers: list[bytes], blobs: list[bytes]) -> set[bytes]:
    return {m for m in markers if any(m in b for b in blobs)}


class Marked:
    """Appends events whose data and metadata carry unique random markers."""

    def __init__(self) -> None:
        self.by_event: dict[str, list[bytes]] = {}

    def event(self, key: str) -> NewEvent:
        data, meta = os.urandom(24), os.urandom(24)
        # An index value is as personal as the data: it must go too.
        index = "I" + os.urandom(12).hex()
        self.by_event[key] = [data, meta, index.encode()]
        return NewEvent("T", {"secret": b"D" + data}, {"who": b"M" + meta}, {"k": index})

    def markers(self, keys: list[str]) -> list[bytes]:
        """Data, metadata and index value markers of the events ``keys``."""
        return [m for k in keys for m in self.by_event[k]]

    def contents(self, keys: list[str]) -> list[bytes]:
        """Their data and metadata markers only."""
        return [m for k in keys for m in self.by_event[k][:2]]


def _visible(store: EventStore) -> list[Event]:
    return list(store.read_all())


def _compact_all(store: EventStore) -> None:
    last = next(store.read_all(backwards=True, limit=1))
    store.compact(before=ulid_from_int(int(last.id) + 1))


@pytest.mark.parametrize("where", ["hot", "cold", "both"])
def test_erased_bytes_leave_every_file(tmp_path: Path, where: str) -> None:
    path = str(tmp_path / "s")
    m = Marked()
    erased: list[str] = []
    kept: list[str] = []
    with EventStore.open(path) as store:

        def add(stream: str, n: int, tag: str) -> list[str]:
            names = [f"{tag}{stream}{i}" for i in range(n)]
            store.append(stream, [m.event(k) for k in names])
            return names

        keep1 = add("keep", 3, "a")
        del1 = add("del", 3, "a")
        tomb1 = add("tomb", 2, "a")
        trunc1 = add("trunc", 4, "a")
        red1 = add("red", 2, "a")
        if where in ("cold", "both"):
            _compact_all(store)
        keep2 = add("keep", 2, "b") if where == "both" else []
        trunc2 = add("trunc", 2, "b") if where == "both" else []
        red_id = next(store.read_stream("red")).id
        store.delete_stream("del")
        store.tombstone_stream("tomb")
        store.set_retention("trunc", max_count=3)
        store.redact(red_id)
        trunc_all = trunc1 + trunc2
        erased = del1 + tomb1 + trunc_all[: len(trunc_all) - 3] + red1[:1]
        kept = keep1 + keep2 + trunc_all[len(trunc_all) - 3 :] + red1[1:]
        store.save_snapshot("del", 2, {"state": b"S" + os.urandom(24)})
        before = _visible(store)
        assert store.scavenge(dry_run=True).scrubbed == len(erased)
        if where == "hot":  # the check can see markers at all
            assert found(m.markers(erased), store_bytes(path))
        result = store.scavenge()
        assert result.removed == len(erased) - 1  # the redacted event stays, scrubbed
        assert result.scrubbed == len(erased)
        assert _visible(store) == before
        again = store.scavenge(dry_run=True)
        assert (again.removed, again.scrubbed, again.files) == (0, 0, 0)
        store.verify()
        blobs = store_bytes(path)
        assert found(m.markers(erased), blobs) == set()
        assert found(m.markers(kept), blobs) == set(m.markers(kept))
    blobs = store_bytes(path)  # and after close
    assert found(m.markers(erased), blobs) == set()
    with EventStore.open(path) as store:
        assert _visible(store) == before
        assert [e.version for e in store.read_stream("trunc")] == list(
            range(len(trunc_all) - 3, len(trunc_all))
        )
        store.set_retention("trunc")  # loosened: what was scavenged stays gone
        assert [e.version for e in store.read_stream("trunc")] == list(
            range(len(trunc_all) - 3, len(trunc_all))
        )
        assert store.load_snapshot("del") is None
        red = store.get(red_id)
        assert red is not None and red.redacted
        store.append("del", [NewEvent("Again")])
        assert [e.version for e in store.read_stream("del")] == [3]
        store.verify()
        # a compaction and merge after a scavenge carry the husks and gaps along
        _compact_all(store)
        store.merge_archives()
        store.verify()
        assert [e.type for e in store.read_stream("del")] == ["Again"]


def test_subscriber_resumes_across_a_scavenged_range(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("a", [NewEvent("T", {"n": i}) for i in range(3)])
        store.append("gone", [NewEvent("T", {"n": i}) for i in range(3)])
        store.append("a", [NewEvent("T", {"n": i}) for i in range(3, 6)])
        position = next(store.read_stream("a")).id
        store.delete_stream("gone")
        store.scavenge()
        sub = store.subscribe(after=position)
        got = []
        while (event := sub.get(timeout=0.5)) is not None:
            got.append((event.stream, event.version))
        sub.close()
        assert got == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("$$gone", 0)]
        from_seq = [e.seq for e in store.read_all(from_seq=4)]
        assert from_seq == [7, 8, 9, 10]  # seqs 4-6 were removed
        assert store.removed_seqs == [(4, 6)]


def test_scavenge_while_appends_and_reads_go_on(tmp_path: Path) -> None:
    import threading

    with EventStore.open(str(tmp_path / "s")) as store:
        for n in range(6):
            store.append(f"s-{n}", [NewEvent("T", {"s": n, "v": v}) for v in range(50)])
        for n in (1, 3):
            store.delete_stream(f"s-{n}")
        store.set_retention("s-5", max_count=10)
        stop = threading.Event()
        problems: list[str] = []

        def append() -> None:
            v = 0
            while not stop.is_set():
                store.append("live", [NewEvent("T", {"s": "live", "v": v})])
                v += 1

        def read() -> None:
            while not stop.is_set():
                for e in store.read_all():
                    if e.stream in ("s-1", "s-3") or (e.stream == "s-5" and e.version < 40):
                        problems.append(f"hidden event read: {e}")
                    elif not e.stream.startswith("$$") and e.data != {
                        "s": int(e.stream[2:]) if e.stream != "live" else "live",
                        "v": e.version,
                    }:
                        problems.append(f"kept event changed: {e}")

        kept = list(store.read_stream("s-0"))

        def get() -> None:  # the one read that takes no view: it waits out each reopen
            while not stop.is_set():
                for e in kept:
                    if store.get(e.id) != e:
                        problems.append(f"get({e.id}) changed")

        threads = [threading.Thread(target=f) for f in (append, read, get)]
        for t in threads:
            t.start()
        try:
            for round_ in range(3):
                store.scavenge()
                assert not store._hot.scrub_pending  # the reads let it reopen
                last = next(store.read_all(backwards=True, limit=1))
                store.compact(before=ulid_from_int(int(last.id) + 1))
                if round_ == 1:
                    store.append("s-5", [NewEvent("T", {"s": 5, "v": 50})])
                    store.set_retention("s-5", max_count=11)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert problems == []
        store.scavenge()
        store.verify()
        assert store.scavenge(dry_run=True).scrubbed == 0
        assert [e.version for e in store.read_stream("s-5")] == list(range(40, 51))
        assert [e.data["v"] for e in store.read_stream("live")] == list(
            range(store.stream_version("live") + 1)
        )


def test_projection_resumes_across_a_scavenge(tmp_path: Path) -> None:
    from eventstore.subscriptions import Projection

    def count(state: dict[str, int], event: Event) -> dict[str, int]:
        state[event.stream] = state.get(event.stream, 0) + 1
        return state

    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("a", [NewEvent("T")] * 2)
        store.append("b", [NewEvent("T")] * 2)
        first = Projection(store, "counts", count, dict, types=["T"])
        assert first.catch_up() == 4
        first.close()
        store.append("b", [NewEvent("T")] * 3)
        store.append("a", [NewEvent("T")])
        store.delete_stream("b")
        store.scavenge()
        store.append("c", [NewEvent("T")])
        resumed = Projection(store, "counts", count, dict, types=["T"])
        assert resumed.catch_up() == 2  # a's new event and c's: none of b's removed ones
        assert resumed.state == {"a": 3, "b": 2, "c": 1}
        resumed.close()
        fresh = Projection(store, "fresh", count, dict, types=["T"])
        fresh.catch_up()
        assert fresh.state == {"a": 3, "c": 1}
        fresh.close()


def test_bench_scavenge_small_run() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "scripts" / "bench_scavenge.py"),
            "--events",
            "3000",
            "--runs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deleted 100 streams (300 events)" in proc.stdout
    assert "read speed, deletions pending / scavenged" in proc.stdout


@pytest.mark.parametrize("where", ["hot", "cold", "both"])
def test_stats_count_readable_events_not_husks(tmp_path: Path, where: str) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("gone", [NewEvent("T", n) for n in range(6)])
        store.append("kept", [NewEvent("T", n) for n in range(4)])
        if where in ("cold", "both"):
            _compact_all(store)
        if where == "both":
            store.append("gone", [NewEvent("T", n) for n in range(3)])
        store.set_retention("gone", max_count=2)
        store.scavenge()

        def check() -> None:
            s = store.stats()
            cold = [e for e in _visible(store) if e.id.bytes < store._archive.tiers.watermark]
            assert s.events == len(_visible(store))
            assert (s.cold_events, s.hot_events) == (len(cold), s.events - len(cold))

        check()
        _compact_all(store)  # the husks go cold
        check()
        store.merge_archives()
        check()


def test_no_removed_key_is_left_in_leveldb_manifests(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    m = Marked()
    with EventStore.open(path) as store:
        names = [f"t{i}" for i in range(4)]
        store.append("keep", [m.event("k0")])
        store.append("trunc", [m.event(k) for k in names])
        store.set_retention("trunc", max_count=3)
        store.scavenge()
        # The index key of t0 was a level's compaction pointer and a table
        # bound in the MANIFEST, and a manual compaction's bound in the LOG.
        assert found(m.markers(names[:1]), store_bytes(path)) == set()
        assert found(m.markers(["k0", *names[1:]]), store_bytes(path)) == set(
            m.markers(["k0", *names[1:]])
        )
        assert len(list(store.read_stream("trunc"))) == 3
    assert found(m.markers(names[:1]), store_bytes(path)) == set()
    with EventStore.open(path) as store:
        assert [e.version for e in store.read_stream("trunc")] == [1, 2, 3]
        store.verify()
    assert found(m.markers(names[:1]), store_bytes(path)) == set()


def test_a_view_open_through_a_scavenge_defers_the_scrub_to_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scavenge, "_OLDER_VIEWS_WAIT", 0.3)
    monkeypatch.setattr(scavenge, "_REOPEN_WAIT", 0.3)
    path = str(tmp_path / "s")
    m = Marked()
    with EventStore.open(path) as store:
        names = [f"t{i}" for i in range(4)]
        store.append("trunc", [m.event(k) for k in names])
        store.set_retention("trunc", max_count=3)
        reading = store.read_all()
        first = next(reading)  # holds a view (a LevelDB snapshot) open
        # It waits for the view a while, then leaves a compaction and the
        # scrub to close(): the snapshot keeps t0's record in LevelDB's tables.
        store.scavenge()
        assert store._hot.scrub_pending and store._hot.compact_pending
        # The read begun before goes on, on its snapshot (t0 hidden by the rule).
        assert [e.version for e in [first, *reading] if e.stream == "trunc"] == [1, 2, 3]
        assert [e.version for e in store.read_stream("trunc")] == [1, 2, 3]
    assert found(m.markers(names[:1]), store_bytes(path)) == set()
    with EventStore.open(path) as store:
        assert [e.version for e in store.read_stream("trunc")] == [1, 2, 3]


def test_a_failed_scrub_leaves_the_store_open_and_retries_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from eventstore import hot
    from eventstore.errors import StorageError
    from eventstore.manifest import scrub

    path = str(tmp_path / "s")
    m = Marked()

    def failing(folder: str) -> None:
        raise OSError(errno.EIO, "Input/output error", folder)

    with EventStore.open(path) as store:
        names = [f"t{i}" for i in range(4)]
        store.append("trunc", [m.event(k) for k in names])
        store.set_retention("trunc", max_count=3)
        monkeypatch.setattr(hot, "_scrub_manifest", failing)
        with pytest.raises(StorageError):
            store.scavenge()
        assert store._hot.scrub_pending
        # Reopened all the same: reads and appends go on.
        assert [e.version for e in store.read_stream("trunc")] == [1, 2, 3]
        store.append("other", [NewEvent("T")])
        assert store.scavenge(dry_run=True).scrubbed == 0
        monkeypatch.setattr(hot, "_scrub_manifest", scrub)
    assert found(m.markers(names[:1]), store_bytes(path)) == set()
    with EventStore.open(path) as store:
        assert [e.version for e in store.read_stream("trunc")] == [1, 2, 3]
        assert [e.type for e in store.read_stream("other")] == ["T"]
        store.verify()


def test_no_other_process_can_open_the_store_during_the_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from eventstore import hot
    from eventstore.manifest import scrub

    path = str(tmp_path / "s")
    tried: list[str] = []

    def scrub_while_another_tries(folder: str) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, eventstore; eventstore.EventStore.open(sys.argv[1])",
                path,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        tried.append(proc.stderr)
        scrub(folder)

    with EventStore.open(path) as store:
        store.append("a", [NewEvent("T")])
        monkeypatch.setattr(hot, "_scrub_manifest", scrub_while_another_tries)
        store.scavenge()
        store.scavenge()  # the second reopen takes the lock again the same way
        assert len(tried) == 2 and all("StoreLocked" in err for err in tried), tried
        monkeypatch.setattr(hot, "_scrub_manifest", scrub)
        store.append("a", [NewEvent("T")])
    with EventStore.open(path) as store:  # released at close
        assert store.stream_version("a") == 1
