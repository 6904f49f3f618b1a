"""Many processes, one store: real client processes append through `eventstore
serve` with racing expected versions; the server is SIGKILLed mid-load and
restarted. Every acknowledged append is there, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eventstore import EventStore
from eventstore.server import POSITION_STEP

from .server_fixtures import ROOT, free_port, serve_process

WORKERS = 4


def _workers(port: int, folder: Path, appends: int, round_: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.server_worker",
                str(port),
                str(folder / f"acks-{i}.jsonl"),
                str(appends),
                str(round_ * 100 + i),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for i in range(WORKERS)
    ]


def _acked(folder: Path) -> list[dict[str, object]]:
    lines = []
    for i in range(WORKERS):
        path = folder / f"acks-{i}.jsonl"
        if path.exists():
            lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def _check(store_path: Path, acked: list[dict[str, object]]) -> int:
    with EventStore.open(str(store_path)) as store:
        store.verify()  # seq gap-free from 1, versions dense per stream
        events = list(store.read_all())
        uuids = [e.indexes["$uuid"] for e in events]
        assert len(uuids) == len(set(uuids)), "an event was stored twice"
        stored = {e.indexes["$uuid"]: e for e in events}
        for ack in acked:
            ids = ack["ids"]
            assert isinstance(ids, list)
            for uuid_text in ids:
                assert uuid_text in stored, f"acknowledged event {uuid_text} is missing"
                assert stored[uuid_text].stream == ack["stream"]
            assert stored[ids[-1]].seq * POSITION_STEP == ack["position"]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        return len(events)


def test_four_processes_race_then_server_killed_and_restarted(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}", "--insecure"]  # --sync is the default
    with serve_process(store_path, *listen) as server:
        workers = _workers(port, tmp_path, 40, 1)
        assert [w.wait(timeout=240) for w in workers] == [0] * WORKERS
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0  # graceful: finishes, closes the store
    first = _acked(tmp_path)
    assert len(first) == WORKERS * 40
    assert _check(store_path, first) == sum(len(a["ids"]) for a in first)  # type: ignore[arg-type]

    with serve_process(store_path, *listen) as server:
        workers = _workers(port, tmp_path, 100_000, 2)  # until the server dies
        deadline = time.monotonic() + 60
        while len(_acked(tmp_path)) < len(first) + 100:
            assert time.monotonic() < deadline, "no progress through the server"
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        codes = [w.wait(timeout=240) for w in workers]
    assert set(codes) <= {3, 4}  # each saw the server go (4: a client call hung, watchdog)
    acked = _acked(tmp_path)
    assert len(acked) >= len(first) + 100
    with serve_process(store_path, *listen):  # restarts on the killed store
        pass
    _check(store_path, acked)
