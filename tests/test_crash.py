"""Crash safety, tested by killing a real writer process with SIGKILL.

With sync=True or False an acknowledged append survives the process dying;
no append is ever half there. (Power loss needs sync=True and cannot be
simulated here; sync=True writes go through LevelDB's fsync'd log.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventstore import EventStore

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(path: Path, sync: bool, seconds: float) -> dict[int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_writer", str(path), "1" if sync else "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGKILL)
    acked: dict[int, list[str]] = {}
    for line in proc.stdout:
        if line.endswith("\n"):  # a torn last line was never acknowledged
            batch, *ids = line.split()
            acked[int(batch)] = ids
    proc.wait()
    return acked


@pytest.mark.parametrize("sync", [True, False])
def test_acknowledged_appends_survive_sigkill_and_none_is_half_there(
    tmp_path: Path, sync: bool
) -> None:
    rng = random.Random(42)
    path = tmp_path / "store"
    acked: dict[int, list[str]] = {}
    for _ in range(4):
        acked.update(run_and_kill(path, sync, rng.uniform(0.2, 0.6)))
        with EventStore.open(path) as store:
            log = list(store.read_all())
            ids = {str(e.id) for e in log}
            for batch, batch_ids in acked.items():
                assert set(batch_ids) <= ids, f"acknowledged batch {batch} lost"
            assert [e.seq for e in log] == list(range(1, len(log) + 1))
            assert [e.id for e in log] == sorted(e.id for e in log)
            per_batch: dict[int, int] = {}
            for e in log:
                per_batch[e.data[0]] = per_batch.get(e.data[0], 0) + 1
            assert all(n == 6 for n in per_batch.values()), "a half-written append"
            # The checkpoint went in the same write as its batch's events.
            assert store.get_checkpoint("writer") == (
                {"batch": max(per_batch)} if per_batch else None
            ), "the checkpoint and the events disagree"
            for n in range(5):
                events = list(store.read_stream(f"s-{n}"))
                assert [e.version for e in events] == list(range(len(events)))
    assert len(acked) > 10
