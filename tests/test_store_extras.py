"""Snapshots, checkpoints, reading the log by seq, and waiting for commits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import InvalidArgument, UnserialisableData


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore.open(tmp_path / "store")
    yield s
    s.close()


def test_snapshots_round_trip_and_replace(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s") as store:
        assert store.load_snapshot("a") is None
        store.append("a", [NewEvent("T")] * 5)
        store.save_snapshot("a", 2, {"total": 3, "raw": b"\x00"})
        store.save_snapshot("a", 4, {"total": 5})
        with pytest.raises(InvalidArgument):
            store.save_snapshot("a", 9, {})  # beyond the stream
        with pytest.raises(UnserialisableData):
            store.save_snapshot("a", 1, {1, 2})
    with EventStore.open(tmp_path / "s") as store:
        snap = store.load_snapshot("a")
        assert snap is not None
        assert (snap.stream, snap.version, snap.state) == ("a", 4, {"total": 5})
        assert store.load_snapshot("b") is None


def test_checkpoints_alone_and_with_events(store: EventStore) -> None:
    assert store.get_checkpoint("proj") is None
    store.set_checkpoint("proj", {"position": "x", "state": [1, 2]})
    assert store.get_checkpoint("proj") == {"position": "x", "state": [1, 2]}
    store.append_many([("out", [NewEvent("Done")], ANY)], checkpoint=("proj", 7))
    assert store.get_checkpoint("proj") == 7
    assert store.stream_version("out") == 0
    # A failed append writes neither its events nor its checkpoint.
    with pytest.raises(InvalidArgument):
        store.append_many([("out", [], ANY)], checkpoint=("proj", 8))
    assert store.get_checkpoint("proj") == 7


def test_read_all_from_seq(store: EventStore) -> None:
    for n in range(300):
        store.append(f"s-{n % 7}", [NewEvent("A" if n % 2 else "B", n)])
    assert [e.seq for e in store.read_all(from_seq=1)] == list(range(1, 301))
    assert [e.seq for e in store.read_all(from_seq=0, limit=3)] == [1, 2, 3]
    for s in [2, 150, 299, 300]:
        assert [e.seq for e in store.read_all(from_seq=s, limit=2)] == list(
            range(s, min(s + 2, 301))
        )
        assert [e.seq for e in store.read_all(from_seq=s, backwards=True, limit=2)] == [s, s - 1]
    assert list(store.read_all(from_seq=301)) == []
    assert [e.seq for e in store.read_all(from_seq=999, backwards=True, limit=1)] == [300]
    assert all(e.type == "A" for e in store.read_all(from_seq=10, types=["A"]))
    with pytest.raises(InvalidArgument):
        list(store.read_all(after="01ARZ3NDEKTSV4RRFFQ69G5FAV", from_seq=3))


def test_wait_for_commit_wakes_on_append(store: EventStore) -> None:
    assert store.wait_for_commit(0, timeout=0.01) == 0
    woke: list[float] = []

    def waiter() -> None:
        seq = store.wait_for_commit(0, timeout=10)
        woke.append(time.perf_counter())
        assert seq >= 1

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    assert not woke
    appended = time.perf_counter()
    store.append("s", [NewEvent("T")])
    t.join(5)
    assert woke and woke[0] - appended < 1.0
    assert store.last_seq == 1


def test_wait_for_commit_returns_when_the_store_closes(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s")
    done = threading.Event()

    def waiter() -> None:
        store.wait_for_commit(0, timeout=30)
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    store.close()
    assert done.wait(5)
