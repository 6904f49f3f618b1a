"""Backups, verification and imports at the API level (the CLI tests cover the commands)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from ulid import ULID

from eventstore import EventStore, NewEvent
from eventstore.errors import CorruptFile, InvalidArgument, UnserialisableData


def fill(store: EventStore, n: int) -> None:
    for i in range(n):
        store.append(f"s-{i % 3}", [NewEvent("T", i, indexes={"k": str(i % 2)})])


def test_backup_while_appending_is_a_consistent_store(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "src") as store:
        fill(store, 300)
        store.compact(before=list(store.read_all())[150].id)
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                store.append("live", [NewEvent("L")])

        t = threading.Thread(target=writer)
        t.start()
        result = store.backup(tmp_path / "dst")
        stop.set()
        t.join()
        assert result.files == 1 and result.events >= 300
        source_log = list(store.read_all())
    with EventStore.open(tmp_path / "dst") as copy:
        copy.verify()
        log = list(copy.read_all())
        assert log == source_log[: len(log)]  # a prefix: the moment of the snapshot
        assert len(log) == result.events
        assert copy.watermark is not None and len(copy.archive_files()) == 1
    with pytest.raises(InvalidArgument), EventStore.open(tmp_path / "src") as store:
        store.backup(tmp_path / "dst")  # not empty


def test_verify_finds_a_damaged_archive_file(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s") as store:
        fill(store, 200)
        last = list(store.read_all())[-1].id
        store.compact(before=ULID.from_int(int(last) + 1))
        store.verify()
        (info,) = store.archive_files()
    size = os.path.getsize(info.path)
    with open(info.path, "r+b") as f:
        f.seek(size // 3)
        byte = f.read(1)
        f.seek(size // 3)
        f.write(bytes([byte[0] ^ 0x40]))
    with EventStore.open(tmp_path / "s") as store, pytest.raises(CorruptFile) as info_:
        store.verify()
    assert info.path in str(info_.value)


def test_import_keeps_ids_and_refuses_to_go_backwards(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "a") as source:
        fill(source, 50)
        events = list(source.read_all())
    with EventStore.open(tmp_path / "b") as target:
        assert target.import_events(events, batch_size=7) == 50
        assert list(target.read_all()) == events
        assert list(target.read_index("s-1", "k", "1")) == list(source_events_index(events))
        with pytest.raises(InvalidArgument):
            target.import_events(events[:1])  # ids not above the store's
        r = target.append("s-0", [NewEvent("After")])
        assert r.ids[0] > events[-1].id and r.first_seq == 51
    with EventStore.open(tmp_path / "c") as target:
        with pytest.raises(InvalidArgument):
            target.import_events(events[1:])  # seq would not start at 1
        assert list(target.read_all()) == []


def source_events_index(events: list) -> list:  # type: ignore[type-arg]
    return [e for e in events if e.stream == "s-1" and e.indexes.get("k") == "1"]


def test_import_refuses_data_that_would_not_read_back(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "a") as source:
        fill(source, 3)
        events = list(source.read_all())
    spoiled = events[1]._replace(data={("tuple", "key"): 1})
    with EventStore.open(tmp_path / "b") as target:
        with pytest.raises(UnserialisableData) as info:
            target.import_events([events[0], spoiled, events[2]], batch_size=10)
        assert "data" in str(info.value) and "read back" in str(info.value)
        assert list(target.read_all()) == []


@pytest.mark.parametrize("field", ["version", "seq"])
@pytest.mark.parametrize("bad", [0.0, True, 1.0])
def test_import_refuses_versions_and_seqs_that_are_not_ints(
    tmp_path: Path, field: str, bad: object
) -> None:
    with EventStore.open(tmp_path / "a") as source:
        fill(source, 2)
        events = list(source.read_all())
    spoiled = events[0]._replace(**{field: bad})
    with EventStore.open(tmp_path / "b") as target:
        with pytest.raises(InvalidArgument, match="ints"):
            target.import_events([spoiled, events[1]])
        assert list(target.read_all()) == [] and target.last_seq == 0


def test_an_import_packing_user_code_that_appends_does_not_deadlock(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "a") as source:
        fill(source, 1)
        (event,) = source.read_all()
    with EventStore.open(tmp_path / "b") as target:

        class Appends(dict):  # type: ignore[type-arg]
            # A dict subclass that overrides __iter__ is read through
            # __getitem__ while it is packed: user code, mid-pack.
            def __iter__(self):  # type: ignore[no-untyped-def]
                return iter(list(dict.keys(self)))

            def __getitem__(self, key: object) -> object:
                target.append("nested", [NewEvent("N")])
                return dict.__getitem__(self, key)

        done = threading.Event()

        def run() -> None:
            with pytest.raises(InvalidArgument):  # the nested append took seq 1
                target.import_events([event._replace(data=Appends(at=1))])
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(10)
        assert done.is_set(), "import_events deadlocked on a nested append"
        assert [e.stream for e in target.read_all()] == ["nested"]
