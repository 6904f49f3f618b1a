"""Scavenging survives SIGKILL at every step (issue 17).

A child process (tests/crash_scavenger.py) scavenges a store with hot and
cold events to erase, and kills itself at its K-th step, for K spread over
every step a scavenge takes (each before and after); one more round kills
it at a random moment. After each kill the store must open, read exactly as
before (nothing kept lost, nothing erased back), pass verify(), and a second
scavenge must finish the job: no byte of an erased event left on disk.
Set EVENTSTORE_CRASH_ALL=1 to try every K rather than a spread of them.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventstore import EventStore
from eventstore.ids import ulid_from_int

from .test_scavenge import Marked, found, store_bytes

ROOT = Path(__file__).resolve().parent.parent


def _compact_all(store: EventStore) -> None:
    last = next(store.read_all(backwards=True, limit=1))
    store.compact(before=ulid_from_int(int(last.id) + 1))


def _template(path: str) -> tuple[list[bytes], list[bytes]]:
    m = Marked()
    with EventStore.open(path) as store:

        def add(stream: str, n: int) -> list[str]:
            names = [f"{stream}-{len(m.by_event)}-{i}" for i in range(n)]
            store.append(stream, [m.event(k) for k in names])
            return names

        kept: list[str] = []
        erased: list[str] = []
        for round_ in range(3):  # two archive files and a hot tail
            kept += add("keep", 2)
            erased += add(f"del-{round_}", 2)
            trunc = add("trunc", 2)
            (erased if round_ < 2 else kept).extend(trunc)
            erased += add("tomb", 1)
            if round_ < 2:
                _compact_all(store)
        redacted = [e for e in store.read_stream("keep")][::3]
        for event in redacted:
            store.redact(event.id)
        for round_ in range(3):
            store.delete_stream(f"del-{round_}")
        store.tombstone_stream("tomb")
        store.set_retention("trunc", max_count=2)
        store.save_snapshot("del-0", 1, {"s": b"x" * 8})
    # The redacted events' markers are erased too: find them by data.
    with EventStore.open(path) as store:
        by_id = {
            e.id: e for e in store._view().read_all(None, False, None, None) if e.stream == "keep"
        }
        red_ids = set(store.redacted_ids)
    red_markers = (
        [by_id[i].data["secret"][1:] for i in red_ids]
        + [by_id[i].metadata["who"][1:] for i in red_ids]
        + [by_id[i].indexes["k"].encode() for i in red_ids]
    )
    erased_markers = m.markers(erased) + red_markers
    kept_markers = [x for x in m.markers(kept) if x not in red_markers]
    return erased_markers, kept_markers


def _visible(path: str) -> list[tuple[object, ...]]:
    with EventStore.open(path) as store:
        store.verify()
        return [(*tuple(e), e.redacted) for e in store.read_all()]


def _run(path: str, limit: int, kill_after: float | None = None) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_scavenger", path, str(limit)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if kill_after is not None:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
    out = proc.stdout.read()
    proc.wait()
    if limit == 0 and kill_after is None:
        assert proc.returncode == 0, out
    return out


def _check_after_kill(
    path: str, expected: list[tuple[object, ...]], erased: list[bytes], kept: list[bytes]
) -> None:
    assert _visible(path) == expected  # opens, verify() passes, reads as before
    with EventStore.open(path) as store:
        store.scavenge()
        again = store.scavenge(dry_run=True)
        assert (again.removed, again.scrubbed) == (0, 0)
        store.verify()
    assert _visible(path) == expected
    blobs = store_bytes(path)
    assert found(erased, blobs) == set()
    assert found(kept, blobs) == set(kept)


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, list[tuple[object, ...]], list[bytes], list[bytes], int]:
    base = str(tmp_path_factory.mktemp("crash") / "template")
    erased, kept = _template(base)
    expected = _visible(base)
    trial = base + "-trial"
    shutil.copytree(base, trial)
    out = _run(trial, 0)
    steps = int(out.split("done ")[1])
    _check_after_kill(trial, expected, erased, kept)
    return base, expected, erased, kept, steps


def test_kill_at_every_step(
    template: tuple[str, list[tuple[object, ...]], list[bytes], list[bytes], int], tmp_path: Path
) -> None:
    base, expected, erased, kept, steps = template
    assert steps > 20
    ks = list(range(1, steps + 1))
    if not os.environ.get("EVENTSTORE_CRASH_ALL"):
        rng = random.Random(17)
        ks = sorted(set(ks[:: max(1, steps // 12)] + rng.sample(ks, min(8, steps)) + [steps]))
    for k in ks:
        path = str(tmp_path / f"k{k}")
        shutil.copytree(base, path)
        out = _run(path, k)
        assert "done" not in out, f"step {k} of {steps} was not reached"
        _check_after_kill(path, expected, erased, kept)
        shutil.rmtree(path)


def test_kill_at_a_random_moment(
    template: tuple[str, list[tuple[object, ...]], list[bytes], list[bytes], int], tmp_path: Path
) -> None:
    base, expected, erased, kept, _steps = template
    rng = random.Random(4)
    for n in range(3):
        path = str(tmp_path / f"r{n}")
        shutil.copytree(base, path)
        _run(path, 0, kill_after=rng.uniform(0, 0.2))
        _check_after_kill(path, expected, erased, kept)
        shutil.rmtree(path)
