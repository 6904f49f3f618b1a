"""The tiering crash test (scripts/crash_test.py, issue 4), short version.

The script SIGKILLs a writer process that appends with sync=True and compacts
and merges on other threads, then checks every guarantee on reopen. Here it
runs a few rounds; the README gives the command for a long run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore import EventStore, NewEvent

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "crash_test.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_test"] = module
    spec.loader.exec_module(module)
    return module


def test_crash_test_script_short_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--rounds",
            "8",
            "--seed",
            "7",
            "--path",
            str(tmp_path),
            "--keep",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "PASS 8 rounds" in proc.stdout


def test_the_checks_catch_a_lost_acknowledged_append(tmp_path: Path) -> None:
    """The checker itself: an acknowledged batch the store does not hold fails."""
    ct = _load_script()
    path = str(tmp_path / "s")
    history = ct.History(3)
    with EventStore.open(path, sync=True) as store:
        ct.append_after_reopen(store, history, [])
    fake = {1: [ct.Ack("01ARZ3NDEKTSV4RRFFQ69G5FAV", "x", 0, 99, "0" * 16)]}
    with pytest.raises(ct.Violation, match="acknowledged batch 1 lost"):
        ct.verify(path, history, fake, ct.random.Random(1))


def test_the_checks_catch_a_partial_append(tmp_path: Path) -> None:
    """The checker itself: a batch with one of its events missing fails."""
    ct = _load_script()
    path = str(tmp_path / "s")
    history = ct.History(3)
    with EventStore.open(path, sync=True) as store:
        ct.append_after_reopen(store, history, [])  # batch 0: one event
        before = ct.History(3, rows=list(history.rows), next_batch=history.next_batch)
        events = list(store.read_all())
        ct.append_after_reopen(store, history, events)  # batch 1: two events
        last = list(store.read_all())[-1]
    db = ct.plyvel.DB(str(tmp_path / "s" / "hot"))
    db.delete(ct.K.GLOBAL + last.id.bytes)  # drop the batch's second event
    db.close()
    with pytest.raises(ct.Violation, match="partial append: batch 1 has 1 of its 2 events"):
        ct.verify(path, before, {}, ct.random.Random(1))


# -- reproducer --------------------------------------------------------------------
# BUG found by scripts/crash_test.py, kept as a regression test. In the store
# up to fb631c8, compact() took its LevelDB snapshot without waiting for an
# append whose batch _commit() had already taken off the queue and was writing
# (fsync in progress). That append's ids were below the cutoff, the snapshot
# missed it, the watermark moved past it and garbage collection deleted it: an
# acknowledged append vanished, leaving seq and version gaps. Fails on fb631c8,
# passes from ce3304d (batches leave the queue only once written).


class _SlowBatch:
    """A plyvel WriteBatch whose write() waits for the test, once armed."""

    def __init__(self, batch: Any, gate: _Gate) -> None:
        self._batch, self._gate = batch, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def append(self, other: Any) -> None:
        self._batch.append(other._batch if isinstance(other, _SlowBatch) else other)

    def write(self) -> None:
        if self._gate.armed:
            self._gate.armed = False
            self._gate.entered.set()
            self._gate.release.wait(10)
        self._batch.write()


class _Gate:
    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()


class _SlowDB:
    def __init__(self, db: Any, gate: _Gate) -> None:
        self._db, self._gate = db, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def write_batch(self, **options: Any) -> _SlowBatch:
        return _SlowBatch(self._db.write_batch(**options), self._gate)


def test_reproducer_compact_loses_an_append_being_written(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "s", sync=True)
    try:
        store.append("a", [NewEvent("T", 0)])
        gate = _Gate()
        store._hot.db = _SlowDB(store._hot.db, gate)  # widen the fsync window
        gate.armed = True
        result: list[Any] = []
        writer = threading.Thread(
            target=lambda: result.append(store.append("a", [NewEvent("T", 1)]))
        )
        writer.start()
        assert gate.entered.wait(10)  # the append is off the queue, inside batch.write()
        time.sleep(0.005)  # the cutoff's millisecond is after the append's id
        cutoff = datetime.now(UTC)
        compactor = threading.Thread(target=lambda: store.compact(before=cutoff))
        compactor.start()
        compactor.join(0.2)  # the buggy store has compacted by now; a fixed one waits
        gate.release.set()
        writer.join(10)
        compactor.join(10)
        (appended,) = result  # the append returned: acknowledged
        assert store.get(appended.ids[0]) is not None, "acknowledged event lost"
        assert [e.version for e in store.read_stream("a")] == [0, 1]
        assert [e.seq for e in store.read_all()] == [1, 2]
    finally:
        store.close()


# -- the checks of the phases added for issue 13: checkpoint, import, backup -------------


def _history_with_batches(ct: ModuleType, path: str, batches: int) -> tuple[Any, list[Any]]:
    history = ct.History(3)
    with EventStore.open(path, sync=True) as store:
        for _ in range(batches):
            ct.append_after_reopen(store, history, list(store.read_all()))
        events = list(store.read_all())
    return history, events


def test_the_checks_catch_a_checkpoint_that_disagrees_with_its_events(tmp_path: Path) -> None:
    ct = _load_script()
    path = str(tmp_path / "s")
    assert [b for b in range(9) if ct.checkpointed(3, b)] == [7]
    history, _ = _history_with_batches(ct, path, 9)  # batch 7 wrote the checkpoint
    before = ct.History(3, rows=list(history.rows), next_batch=history.next_batch)
    with EventStore.open(path) as store:
        value = store.get_checkpoint(ct.CHECKPOINT)
        assert value["batch"] == 7
        store.set_checkpoint(ct.CHECKPOINT, {**value, "batch": 6})  # as if batch 7 had lost it
    with pytest.raises(ct.Violation, match="the checkpoint and its events disagree"):
        ct.verify(path, before, {}, ct.random.Random(1))


def _run(ct: ModuleType, **fields: Any) -> Any:
    return ct.ChildRun({}, "timer", 0.0, 0, 0, 0, None, **fields)


def test_the_checks_catch_a_lost_import_and_a_half_import_batch(tmp_path: Path) -> None:
    ct = _load_script()
    path = str(tmp_path / "s")
    history, events = _history_with_batches(ct, path, 6)
    with EventStore.open(ct.mirror_path(path)) as mirror:
        mirror.import_events(events[:5])
    with pytest.raises(ct.Violation, match="the mirror holds 5 events"):
        ct.check_mirror(path, history, events, _run(ct, imported=len(events)))
    # An import of 4 events in batches of 2 under way from seq 4: 3 or 5, not 4.
    under_way = {"start": 4, "n": 4, "batch": 2}
    assert ct.check_mirror(path, history, events, _run(ct, imported=3, importing=under_way)) == 5
    history.mirrored = 3
    under_way = {"start": 4, "n": 4, "batch": 1}
    assert ct.check_mirror(path, history, events, _run(ct, importing=under_way)) == 5
    with pytest.raises(ct.Violation, match="may hold"):
        history.mirrored = 3
        under_way = {"start": 4, "n": 4, "batch": 4}
        ct.check_mirror(path, history, events, _run(ct, importing=under_way))


def test_the_checks_catch_a_missing_or_short_backup(tmp_path: Path) -> None:
    ct = _load_script()
    path = str(tmp_path / "s")
    _, events = _history_with_batches(ct, path, 4)
    dest = os.path.join(ct.backups_path(path), "b1")
    os.makedirs(ct.backups_path(path))
    with EventStore.open(path) as store:
        made = store.backup(dest)
    assert ct.check_backups(path, events, _run(ct, backups=[(dest, made.events)])) == 1
    assert not os.path.exists(dest)  # checked backups are removed
    with pytest.raises(ct.Violation, match="is missing"):
        ct.check_backups(path, events, _run(ct, backups=[(dest, 5)]))
    os.makedirs(ct.backups_path(path))
    with EventStore.open(path) as store:
        store.backup(dest)
    with pytest.raises(ct.Violation, match=r"holds .* events, said"):
        ct.check_backups(path, events, _run(ct, backups=[(dest, len(events) + 1)]))


def test_the_checks_catch_a_checkpoint_set_after_its_batch_running_ahead_or_lost(
    tmp_path: Path,
) -> None:
    ct = _load_script()
    path = str(tmp_path / "s")
    history, _ = _history_with_batches(ct, path, 9)
    assert history.after_floor == 7
    with EventStore.open(path) as store:
        store.set_checkpoint(ct.AFTER, {"batch": 9})  # a batch the store does not hold
    with EventStore.open(path) as store, pytest.raises(ct.Violation, match="not a checkpointed"):
        ct.check_after_checkpoint(store, history, None)
    with EventStore.open(path) as store:
        store.set_checkpoint(ct.AFTER, None)  # as if the acknowledged one were lost
    with EventStore.open(path) as store, pytest.raises(ct.Violation, match="lost"):
        ct.check_after_checkpoint(store, history, None)
    with EventStore.open(path) as store:
        store.set_checkpoint(ct.AFTER, {"batch": 7})
        ct.check_after_checkpoint(store, history, None)
