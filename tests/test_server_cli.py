"""`eventstore serve` from the command line: usage, a graceful stop, scheduled
compaction, and the other commands working on the store while it is served."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

from eventstore import EventStore

from .server_fixtures import ROOT, free_port, serve_process


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "--lock-timeout", "0", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_usage_errors(tmp_path: Path) -> None:
    neither = cli("serve", str(tmp_path / "s"))
    assert neither.returncode == 2
    assert "--tls-cert and --tls-key, or --insecure" in neither.stderr
    both = cli("serve", str(tmp_path / "s"), "--insecure", "--tls-cert", "c", "--tls-key", "k")
    assert both.returncode == 2 and "contradicts" in both.stderr
    bad = cli("serve", str(tmp_path / "s"), "--insecure", "--listen", "nowhere")
    assert bad.returncode == 1 and "HOST:PORT" in bad.stderr
    assert not (tmp_path / "s" / "hot").exists() or bad.returncode == 1


def test_commands_work_on_a_served_store(tmp_path: Path) -> None:
    store = tmp_path / "live"
    port = free_port()
    with serve_process(store, "--listen", f"127.0.0.1:{port}", "--insecure") as server:
        client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
        client.append_to_stream(
            "order-1",
            events=[NewEvent(type="Placed", data=b'{"n":1}')],
            current_version=StreamState.NO_STREAM,
        )
        stop = threading.Event()

        def keep_appending() -> None:  # the application goes on meanwhile
            while not stop.is_set():
                client.append_to_stream(
                    "busy",
                    events=NewEvent(type="Tick", data=b"{}"),
                    current_version=StreamState.ANY,
                )

        writer = threading.Thread(target=keep_appending)
        writer.start()
        try:
            appended = cli("append", str(store), "order-1", "Paid", "--data", "{}", "-e", "0")
            assert appended.returncode == 0, appended.stderr
            read = cli("read", str(store), "order-1", "--json")
            assert read.returncode == 0, read.stderr
            assert [json.loads(line)["type"] for line in read.stdout.splitlines()] == [
                "Placed",
                "Paid",
            ]
            ulid = json.loads(read.stdout.splitlines()[0])["id"]
            got = cli("get", str(store), ulid, "--json")
            assert got.returncode == 0 and json.loads(got.stdout)["stream"] == "order-1"
            assert cli("all", str(store), "--limit", "3").returncode == 0
            compact = cli("compact", str(store), "--older-than", "1s")
            assert compact.returncode == 0, compact.stderr
            assert cli("merge", str(store)).returncode == 0
            stats = cli("stats", str(store), "--json")
            assert stats.returncode == 0 and json.loads(stats.stdout.splitlines()[0])["events"] >= 2
            verify = cli("verify", str(store))
            assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            backup = cli("backup", "live", str(tmp_path / "bak"), cwd=elsewhere)
            assert backup.returncode != 0  # "live" is relative to the caller: no store there
            backup = cli("backup", "../live", "bak-rel", cwd=elsewhere)
            assert backup.returncode == 0, backup.stderr
            assert (elsewhere / "bak-rel" / "hot").is_dir()  # relative paths are the caller's
            exported = cli("export", str(store), "-")
            assert exported.returncode == 0 and '"order-1"' in exported.stdout
            missing = cli("get", str(store), "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert missing.returncode == 1 and missing.stderr.startswith("error: no event")
        finally:
            stop.set()
            writer.join()
            client.close()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    assert not (store / "serve.sock").exists()
    with EventStore.open(str(store)) as reopened:
        reopened.verify()
        assert reopened.stream_version("order-1") == 1
    assert not (tmp_path / "bak").exists()  # the refused backup made nothing


def test_scheduled_compaction(tmp_path: Path) -> None:
    store = tmp_path / "sched"
    port = free_port()
    with serve_process(
        store,
        "--listen",
        f"127.0.0.1:{port}",
        "--insecure",
        "--compact-older-than",
        "1s",
        "--compact-every",
        "1s",
    ):
        client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
        client.append_to_stream(
            "s",
            events=[NewEvent(type="T", data=b"{}") for _ in range(5)],
            current_version=StreamState.NO_STREAM,
        )
        deadline = time.monotonic() + 30
        while True:
            stats = cli("stats", str(store), "--json")
            assert stats.returncode == 0, stats.stderr
            if json.loads(stats.stdout.splitlines()[0])["cold_events"] >= 5:
                break
            assert time.monotonic() < deadline, stats.stdout
            time.sleep(0.5)
        assert len(client.get_stream("s")) == 5  # reads the same, now from the archive
        client.close()


def test_verify_while_appends_go_on(tmp_path: Path) -> None:
    """verify on a served store races appends: what lies past the log's end is
    newer than the view, not damage."""
    from eventstore import NewEvent as StoreEvent
    from eventstore.cli.maintenance import verify_public

    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("a", [StoreEvent("A")])
        stop = threading.Event()

        def append() -> None:
            # Paced and capped: unpaced, the log grows while each verify reads
            # it (and verify reads it whole, twice), so 40 verifies took minutes.
            while not stop.is_set() and store.last_seq < 30_000:
                store.append("a", [StoreEvent("A")])
                store.append(f"b{store.last_seq % 7}", [StoreEvent("B")])
                time.sleep(0.0005)

        writer = threading.Thread(target=append)
        writer.start()
        try:
            for _ in range(40):
                verify_public(store, lambda n: None)
        finally:
            stop.set()
            writer.join()


def test_tail_follows_a_served_store_live_and_goes_on_after_the_server_stops(
    tmp_path: Path,
) -> None:
    from .test_cli_tail import Tail, append_here

    store = tmp_path / "live"
    port = free_port()
    with serve_process(store, "--listen", f"127.0.0.1:{port}", "--insecure") as server:
        client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
        try:
            for i in range(5):
                client.append_to_stream(
                    f"order-{i}",
                    events=[NewEvent(type="Placed" if i % 2 else "Paid", data=b"{}")],
                    current_version=StreamState.ANY,
                )
            every = Tail(str(store), "--json", "-n", "3")
            placed = Tail(str(store), "--json", "--type", "Placed", "-n", "10")
            try:
                backlog = [json.loads(line) for line in every.take(3)]
                assert [e["stream"] for e in backlog] == ["order-2", "order-3", "order-4"]
                assert [json.loads(line)["stream"] for line in placed.take(2)] == [
                    "order-1",
                    "order-3",
                ]
                # Live: appended while both follow, through gRPC and through
                # the CLI (which the server runs too).
                client.append_to_stream(
                    "order-9", events=[NewEvent(type="Placed", data=b"{}")],
                    current_version=StreamState.NO_STREAM,
                )
                assert cli("append", str(store), "order-10", "Paid", "--data", "{}").returncode == 0
                live = [json.loads(line) for line in every.take(2)]
                assert [(e["stream"], e["seq"]) for e in live] == [("order-9", 6), ("order-10", 7)]
                assert json.loads(placed.take(1)[0])["stream"] == "order-9"
                # A tail does not hold up the operator's other commands.
                assert cli("stats", str(store)).returncode == 0
                assert placed.stop(signal.SIGINT)[0] == 130
            finally:
                if placed.proc.poll() is None:
                    placed.proc.kill()
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
            # The server is gone: tail follows the store itself, from where it was.
            append_here(store, "after-server", "T")
            (after,) = [json.loads(line) for line in every.take(1)]
            assert (after["stream"], after["seq"]) == ("after-server", 8)
            code, err = every.stop(signal.SIGINT)
            assert code == 130, err
            assert every.lines.empty()  # nothing twice
        finally:
            client.close()
