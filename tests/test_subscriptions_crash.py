"""A projection killed with SIGKILL mid-way never applies an event twice.

The child process (this module run as a program) appends events from a
writer thread while a :class:`Projection` folds them live, saving its state
and position together every few events. The test kills it at random moments,
restarts it, kills it again, and finally checks that the saved read model,
caught up, equals a fold over ``read_all()`` exactly. The fold itself refuses
any event whose seq is not the next one, so a replayed or skipped event
would fail the child or the final check.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from eventstore import EventStore, NewEvent
from eventstore.events import Event
from eventstore.subscriptions import Projection

ROOT = Path(__file__).resolve().parent.parent
NAME = "crashy"


def empty() -> dict[str, Any]:
    return {"last_seq": 0, "count": 0, "sum": 0}


def fold(state: dict[str, Any], event: Event) -> dict[str, Any]:
    if event.seq != state["last_seq"] + 1:
        raise AssertionError(f"event {event.seq} applied after {state['last_seq']}")
    state["last_seq"] = event.seq
    state["count"] += 1
    state["sum"] += event.data
    return state


def child(path: str, seed: int) -> None:
    store = EventStore.open(path)
    rnd = random.Random(seed)

    def write() -> None:
        n = 0
        while True:
            k = rnd.randint(1, 5)
            store.append(f"s-{rnd.randrange(10)}", [NewEvent("T", n + i) for i in range(k)])
            n += k

    threading.Thread(target=write, daemon=True).start()
    applied = 0

    def apply(state: dict[str, Any], event: Event) -> dict[str, Any]:
        nonlocal applied
        state = fold(state, event)
        applied += 1
        if applied % 200 == 0:
            print(f"applied {state['last_seq']}", flush=True)
        return state

    proj = Projection(store, NAME, apply, empty, save_every=7, page_size=50)
    print(f"resumed {proj.state['last_seq']}", flush=True)
    proj.run()


def test_projection_survives_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    rnd = random.Random()
    resumed = []
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_subscriptions_crash", path, str(round_)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("resumed "), first
        resumed.append(int(first.split()[1]))
        for _ in range(rnd.randint(1, 6)):
            line = proc.stdout.readline()
            assert line.startswith("applied "), line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL  # it was alive: no fold error
    # Every restart resumed from further on: progress was saved.
    assert resumed[0] == 0 and all(b > a for a, b in itertools.pairwise(resumed))
    with EventStore.open(path) as store:
        proj = Projection(store, NAME, fold, empty)
        proj.catch_up()
        expected = empty()
        for event in store.read_all():
            expected = fold(expected, event)
        assert proj.state == expected
        assert expected["count"] == store.last_seq > 0


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
