"""`eventstore tail` in a real subprocess, following appends made by other
processes (the CLI's `append`, and a store opened by this test process)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from eventstore import EventStore, NewEvent
from eventstore.errors import StoreLocked

from .test_cli import ROOT, fill, ok


class Tail:
    """A running `eventstore tail`, its stdout lines gathered by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventstore.cli", "tail", *args, "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def pump() -> None:
            for line in out:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def take(self, n: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < n:
            try:
                got.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"tail printed {got}, wanted {n} lines") from None
        return got

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, err


def append_here(path: Path, stream: str, type_: str) -> None:
    """Append as an application process would: open, append, close (retrying
    while tail holds the store for one of its short reads)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with EventStore.open(path) as store:
                store.append(stream, [NewEvent(type_, {"from": "test"})])
            return
        except StoreLocked:
            assert time.monotonic() < deadline, "tail kept the store locked"
            time.sleep(0.01)


def test_tail_prints_the_last_events_then_follows_until_sigint(tmp_path: Path) -> None:
    path = tmp_path / "s"
    events = fill(path, 6)
    tail = Tail(str(path), "-n", "2", "--json")
    first = [json.loads(x) for x in tail.take(2)]
    assert [e["id"] for e in first] == [str(e.id) for e in events[-2:]]
    ok("append", str(path), "live-1", "Hello", "--data", '{"n": 1}')
    ok("append", str(path), "live-2", "Hello")
    append_here(path, "live-3", "FromAnApp")
    live = [json.loads(x) for x in tail.take(3)]
    assert [(e["stream"], e["seq"]) for e in live] == [("live-1", 7), ("live-2", 8), ("live-3", 9)]
    assert live[0]["data"] == {"n": 1}
    code, err = tail.stop(signal.SIGINT)
    assert code == 130 and "Traceback" not in err
    assert tail.lines.empty()


def test_tail_filters_human_rows_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "s"
    fill(path, 3)
    tail = Tail(str(path), "-n", "0", "--type", "Paid", "--prefix", "order-")
    (header,) = tail.take(1)
    assert header.split()[:3] == ["seq", "id", "time"]
    append_here(path, "order-7", "Placed")  # filtered out: type
    append_here(path, "cust-7", "Paid")  # filtered out: stream
    append_here(path, "order-7", "Paid")
    (row,) = tail.take(1)
    assert row.split()[0] == "6" and row.split()[4:7] == ["order-7", "1", "Paid"]
    assert row.index("order-7") == header.index("stream")
    code, err = tail.stop(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "Traceback" not in err
    assert tail.lines.empty()
