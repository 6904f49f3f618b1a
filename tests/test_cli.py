"""`eventstore append|read|get|all|stats|compact|merge`, each run as a real
subprocess: output, options, and every expected failure as one stderr line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventstore import Event, EventStore, NewEvent
from eventstore.cli.output import event_json

ROOT = Path(__file__).resolve().parent.parent


# -- helpers (the other test_cli_* files import these) ---------------------------


def cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        input=input,
        env=None if env is None else {**os.environ, **env},
    )


def ok(*args: str, **kw: Any) -> str:
    res = cli(*args, **kw)
    assert res.returncode == 0, f"{args}: {res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout


def fails(*args: str, message: str, code: int = 1, **kw: Any) -> str:
    """The command exits ``code`` with one ``error:`` line on stderr holding ``message``."""
    res = cli(*args, **kw)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    return lines[0]


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def as_json(events: list[Event]) -> list[dict[str, Any]]:
    """What ``--json`` prints for these events (a JSON round trip of event_json)."""
    return [json.loads(json.dumps(event_json(e))) for e in events]


def fill(path: Path, n: int = 60) -> list[Event]:
    """A store with ``n`` events over five streams, some indexed, some with metadata."""
    streams = ["order-1", "order-2", "cust-1", "cust-2", "Ωmega"]
    with EventStore.open(path) as store:
        for i in range(n):
            store.append(
                streams[i % 5],
                [
                    NewEvent(
                        ["Placed", "Paid", "Shipped"][i % 3],
                        {"i": i, "raw": b"\x00\xff", "text": "é"},
                        metadata={"user": f"u{i % 2}"} if i % 4 == 0 else None,
                        indexes={"region": "eu" if i % 2 else "us"},
                    )
                ],
            )
        return list(store.read_all())


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Event]]:
    path = tmp_path_factory.mktemp("cli") / "shop"
    return str(path), fill(path)


# -- append ------------------------------------------------------------------------


def test_append_creates_the_store_and_keeps_every_value(tmp_path: Path) -> None:
    path = str(tmp_path / "new")
    out = ok(
        "append",
        path,
        "order-9",
        "Placed",
        "--data",
        '{"total": 42.5, "blob": {"$bytes": "AP8="}, "n": null}',
        "--metadata",
        '{"user": "u1"}',
        "-e",
        "no_stream",
        "--index",
        "customer=c7",
        "--index",
        "region=eu",
    )
    assert out.startswith("appended Placed to order-9 at version 0 (seq 1, id ")
    row = json_lines(ok("append", path, "order-9", "Paid", "--json", "-e", "0"))[0]
    assert (row["stream"], row["version"], row["seq"]) == ("order-9", 1, 2)
    ok("append", path, "order-9", "Noted", "--data", "-", "--no-sync", input='["from", "stdin"]')
    with EventStore.open(path) as store:
        events = list(store.read_stream("order-9"))
    assert events[0].data == {"total": 42.5, "blob": b"\x00\xff", "n": None}
    assert events[0].metadata == {"user": "u1"}
    assert events[0].indexes == {"customer": "c7", "region": "eu"}
    assert str(events[1].id) == row["id"] and events[1].data is None
    assert events[2].data == ["from", "stdin"]


def test_append_failures_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    ok("append", path, "a", "T")
    fails("append", path, "a", "T", "-e", "5", message="expected version 5, actual version 0")
    fails("append", path, "a", "T", "-e", "no_stream", message="actual version 0")
    fails("append", path, "b", "T", "-e", "stream_exists", message="actual version -1")
    fails("append", path, "a", "T", "--data", "{oops", message="--data is not valid JSON", code=2)
    fails(
        "append",
        path,
        "a",
        "T",
        "--metadata",
        "[1,",
        message="--metadata is not valid JSON",
        code=2,
    )
    fails("append", path, "a", "T", "--data", '{"$bytes": "!!"}', message="invalid base64", code=2)
    fails("append", path, "a", "T", "-e", "sometimes", message="--expected-version wants", code=2)
    fails("append", path, "a", "T", "--index", "novalue", message="NAME=VALUE", code=2)
    fails("append", path, "", "T", message="stream name must not be empty")
    fails("append", path, "a", "T", "--index", "type=x", message="reserved")
    with EventStore.open(path) as store:
        assert store.last_seq == 1
    # a failed first append leaves no empty store behind
    fails("append", str(tmp_path / "never"), "a", "T", "-e", "3", message="expected version 3")
    assert not (tmp_path / "never").exists()


def test_missing_store_and_folders_that_are_not_stores(tmp_path: Path) -> None:
    for command in (
        ["read", "x"],
        ["get", "0" * 26],
        ["compact", "--older-than", "1d"],
        ["tail"],
    ):  # the check every command shares
        fails(command[0], str(tmp_path / "nope"), *command[1:], message="no store at")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hi")
    fails("all", str(tmp_path / "docs"), message="is not an eventstore store")
    fails("append", str(tmp_path / "docs"), "a", "T", message="is not an eventstore store")
    assert os.listdir(tmp_path / "docs") == ["notes.txt"]


def test_a_store_open_elsewhere_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "held"
    with EventStore.open(path):  # this process holds the LevelDB lock
        fails(
            "--lock-timeout",
            "0.1",
            "append",
            str(path),
            "a",
            "T",
            message="is open in another process",
        )
        fails(
            "all",
            str(path),
            env={"EVENTSTORE_LOCK_TIMEOUT": "0"},
            message="is open in another process",
        )


def test_usage_errors_are_one_line_too(shop: tuple[str, list[Event]]) -> None:
    path, _ = shop
    fails("all", path, "--limit", "-1", code=2, message="--limit")
    fails("read", path, code=2, message="Missing argument 'STREAM'")
    fails("frobnicate", code=2, message="No such command")
    assert "append" in ok("--help") and "Usage:" in ok("read", "--help")


# -- read, get, all ------------------------------------------------------------------


def test_read_a_stream_with_options(shop: tuple[str, list[Event]]) -> None:
    path, events = shop
    mine = [e for e in events if e.stream == "order-2"]
    assert json_lines(ok("read", path, "order-2", "--json")) == as_json(mine)
    got = json_lines(ok("read", path, "order-2", "--from", "3", "--limit", "4", "--json"))
    assert got == as_json(mine[3:7])
    got = json_lines(ok("read", path, "order-2", "--backwards", "--from", "5", "--json"))
    assert got == as_json(mine[5::-1])
    eu = [e for e in mine if e.indexes["region"] == "eu"]
    got = json_lines(ok("read", path, "order-2", "--index", "region=eu", "--json"))
    assert got == as_json(eu)
    got = json_lines(
        ok(
            "read",
            path,
            "order-2",
            "--index",
            "region=eu",
            "--backwards",
            "--from",
            "6",
            "--limit",
            "2",
            "--json",
        )
    )
    assert got == as_json([e for e in eu if e.version <= 6][::-1][:2])
    got = json_lines(ok("read", path, "order-2", "--index", "type=Paid", "--json"))
    assert got == as_json([e for e in mine if e.type == "Paid"])
    fails("read", path, "order-404", message="stream 'order-404' does not exist")


def test_human_tables_are_aligned(shop: tuple[str, list[Event]]) -> None:
    path, events = shop
    lines = ok("read", path, "Ωmega").splitlines()
    assert lines[0].split()[:3] == ["version", "seq", "id"]
    assert len(lines) == 1 + len([e for e in events if e.stream == "Ωmega"])
    for name in ("id", "type", "data"):  # every row starts each column where its head does
        col = lines[0].index(name)
        assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:]), name
    lines = ok("all", path, "--limit", "12").splitlines()
    assert lines[0].split()[:4] == ["seq", "id", "time", "(UTC)"]
    for name in ("stream", "type", "data"):
        col = lines[0].index(name)
        assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:]), name
    assert '"raw": {"$bytes": "AP8="}' in lines[1] and 'meta={"user": "u0"}' in lines[1]


def test_get(shop: tuple[str, list[Event]]) -> None:
    path, events = shop
    ev = events[17]
    assert json_lines(ok("get", path, str(ev.id), "--json")) == as_json([ev])
    fields = dict(line.split(None, 1) for line in ok("get", path, str(ev.id)).splitlines())
    assert fields["stream"] == ev.stream and fields["seq"] == str(ev.seq)
    fails("get", path, "not-a-ulid", message="is not a ULID", code=2)
    fails("get", path, "0" * 26, message="no event with id 00000000000000000000000000")


def test_all_with_filters(shop: tuple[str, list[Event]]) -> None:
    path, events = shop
    assert json_lines(ok("all", path, "--json")) == as_json(events)
    got = json_lines(
        ok("all", path, "--type", "Paid", "--type", "Shipped", "--prefix", "order-", "--json")
    )
    assert got == as_json(
        [e for e in events if e.type != "Placed" and e.stream.startswith("order-")]
    )
    got = json_lines(ok("all", path, "--after", str(events[9].id), "--limit", "5", "--json"))
    assert got == as_json(events[10:15])
    got = json_lines(ok("all", path, "--after", str(events[9].id), "--backwards", "--json"))
    assert got == as_json(events[8::-1])
    got = json_lines(ok("all", path, "--from-seq", "58", "--json"))
    assert got == as_json(events[57:])
    fails("all", path, "--after", "01HZZZ", message="--after: '01HZZZ' is not a ULID", code=2)
    fails(
        "all",
        path,
        "--after",
        str(events[0].id),
        "--from-seq",
        "3",
        message="give --after or --from-seq, not both",
        code=2,
    )


# -- stats, compact, merge --------------------------------------------------------------


def test_stats_compact_merge(tmp_path: Path) -> None:
    path = tmp_path / "s"
    events = fill(path, 40)
    head = json_lines(ok("stats", str(path), "--json"))[0]
    assert head["kind"] == "store"
    assert (head["events"], head["hot_events"], head["cold_events"], head["streams"]) == (
        40,
        40,
        0,
        5,
    )
    assert head["hot_bytes"] > 0 and head["archive_bytes"] == 0

    out = ok("compact", str(path), "--before", str(events[10].id))
    assert out.startswith("compacted 10 events (seq 1..10) into 1 file,")
    assert out.rstrip().endswith("30 events stay hot")
    row = json_lines(
        ok(
            "compact",
            str(path),
            "--before",
            str(events[25].id),
            "--json",
            "--max-file-events",
            "10",
        )
    )[0]
    assert (row["events"], row["first_seq"], row["last_seq"], row["hot_events"]) == (15, 11, 25, 15)
    assert len(row["files"]) == 2 and all(f.endswith(".esdb") for f in row["files"])
    assert ok("compact", str(path), "--before", "2001-01-01").startswith("nothing to compact")

    rows = json_lines(ok("stats", str(path), "--json"))
    head, files = rows[0], rows[1:]
    assert (head["hot_events"], head["cold_events"], head["streams"]) == (15, 25, 5)
    assert [(f["first_seq"], f["last_seq"]) for f in files] == [(1, 10), (11, 20), (21, 25)]
    assert files[0]["first_id"] == str(events[0].id)
    human = ok("stats", str(path)).splitlines()
    assert human[1].split() == ["events", "40", "(hot", "15,", "cold", "25)"]
    assert human[human.index("") + 1].split()[:3] == ["file", "events", "seq"]

    out = ok("merge", str(path), "--max-events", "20")
    assert out.startswith("merged 2 files into 1 (20 events") and "2 archive files now" in out
    row = json_lines(ok("merge", str(path), "--json"))[0]
    assert (row["files_before"], row["files_after"], row["events"]) == (2, 1, 25)
    assert ok("merge", str(path)).startswith("nothing to merge; 1 archive file")

    out = ok("compact", str(path), "--older-than", "0s")
    assert out.startswith("compacted 15 events (seq 26..40)") and "0 events stay hot" in out
    assert json_lines(ok("all", str(path), "--json")) == as_json(events)  # nothing changed


def test_compact_arguments(shop: tuple[str, list[Event]]) -> None:
    path, _ = shop
    fails("compact", path, message="exactly one of --older-than or --before", code=2)
    fails(
        "compact",
        path,
        "--older-than",
        "1d",
        "--before",
        "2020-01-01",
        message="exactly one",
        code=2,
    )
    fails(
        "compact", path, "--older-than", "30 days", message="--older-than wants a duration", code=2
    )
    fails("compact", path, "--before", "last tuesday", message="--before wants an ISO 8601", code=2)
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    fails("compact", path, "--before", future, message="in the future")
    assert ok("compact", path, "--older-than", "1d12h").startswith("nothing to compact")
