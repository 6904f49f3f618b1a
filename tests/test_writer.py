"""The writer alone (eventstore/writer.py), over a bare hot tier: no store.

Versions, ids and seqs are assigned under its lock; appends queued behind a
leader are written by it in one LevelDB write; a failed write stops it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from eventstore import ANY, NO_STREAM, NewEvent, keys
from eventstore.errors import StorageError, StoreClosed, WritesRefused, WrongExpectedVersion
from eventstore.events import AppendResult, Expected
from eventstore.hot import HotTier
from eventstore.ids import MonotonicULIDs
from eventstore.prepare import _Prepared
from eventstore.writer import Writer


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[HotTier]:
    tier = HotTier(str(tmp_path / "hot"), create=True)
    yield tier
    tier.close()


def _writer(hot: HotTier) -> Writer:
    return Writer(hot, "test", False, MonotonicULIDs(0), 0, 0)


def _append(w: Writer, stream: str, n: int, expected: Expected = ANY) -> AppendResult:
    """What EventStore.append_many does with one part, through the writer."""
    part = _Prepared(stream, [NewEvent("T", {"i": i}) for i in range(n)], expected, True)
    with w._lock:
        w._ready_to_queue()
        writes, results, versions, fresh = w._assign([part])
        pending = w._enqueue(writes, versions, results[-1].last_seq, fresh)
    w._commit(pending)
    return results[0]


def _version_on_disk(hot: HotTier, stream: str) -> int | None:
    raw = hot.db.get(keys.meta_key(stream.encode()))
    return None if raw is None else int(msgpack.unpackb(raw)[0])


def test_versions_and_seqs_follow_on_and_land_in_the_hot_tier(hot: HotTier) -> None:
    w = _writer(hot)
    a = _append(w, "a", 3, NO_STREAM)
    b = _append(w, "b", 2)
    a2 = _append(w, "a", 1, 2)
    assert (a.first_version, a.last_version, a.first_seq, a.last_seq) == (0, 2, 1, 3)
    assert (b.first_seq, b.last_seq) == (4, 5)
    assert (a2.first_version, a2.first_seq) == (3, 6)
    assert w._committed_seq == 6 and w._queue == [] and w._reserved == {}
    assert _version_on_disk(hot, "a") == 3 and _version_on_disk(hot, "b") == 1
    assert [seq for _, seq in [hot.view().last_global() or (b"", 0)]] == [6]


def test_a_wrong_expected_version_changes_nothing(hot: HotTier) -> None:
    w = _writer(hot)
    _append(w, "a", 1)
    with pytest.raises(WrongExpectedVersion):
        _append(w, "a", 1, NO_STREAM)
    assert (w._seq, w._committed_seq, w._queue, w._reserved) == (1, 1, [], {})
    assert _append(w, "a", 1, 0).last_seq == 2  # the failed one took no seq


def test_appends_queued_behind_a_leader_are_written_in_one_write(hot: HotTier) -> None:
    w = _writer(hot)
    real = hot.db
    writes: list[int] = []
    first = threading.Event()

    class Held:
        """The hot tier's database, its first batch write held until 8 more
        appends queue behind it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def write_batch(self, **options: Any) -> Any:
            batch = real.write_batch(**options)
            outer_first = not first.is_set()
            first.set()

            class Batch:
                def __getattr__(self, name: str) -> Any:
                    return getattr(batch, name)

                def write(self) -> None:
                    if outer_first:
                        deadline = time.monotonic() + 10
                        while len(w._queue) < 9 and time.monotonic() < deadline:
                            time.sleep(0.001)
                    writes.append(len(w._queue))
                    batch.write()

            return Batch()

    hot.db = Held()
    leader = threading.Thread(target=_append, args=(w, "lead", 1))
    leader.start()
    assert first.wait(10)
    behind = [threading.Thread(target=_append, args=(w, f"s{i}", 1)) for i in range(8)]
    for t in behind:
        t.start()
    for t in [leader, *behind]:
        t.join(10)
    hot.db = real
    assert writes == [9, 8], "the 8 queued behind the leader share the second write"
    assert w._committed_seq == 9 and w._queue == []


def test_a_failed_write_refuses_every_later_write(hot: HotTier) -> None:
    w = _writer(hot)
    real = hot.db

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def write_batch(self, **options: Any) -> Any:
            raise OSError("disk on fire")

    hot.db = Failing()
    with pytest.raises(StorageError, match="disk on fire"):
        _append(w, "a", 1)
    hot.db = real
    with pytest.raises(WritesRefused, match="refuses writes"):
        _append(w, "a", 1)
    assert _version_on_disk(hot, "a") is None and w._committed_seq == 0


def test_a_closed_writer_refuses(hot: HotTier) -> None:
    w = _writer(hot)
    w.closed = True
    with pytest.raises(StoreClosed):
        _append(w, "a", 1)
    assert w._seq == 0 and w._queue == []
