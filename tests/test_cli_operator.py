"""The CLI as a new operator meets it: help without arguments, exit 2 for
every usage mistake, messages that name options, a `streams` listing, tables
that stay aligned, `esdb dump` as stored, and progress bars that count events."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ulid import ULID

from eventstore import ANY, EventStore, NewEvent
from eventstore.cli import main, maintenance, transfer

from .test_cli import cli, fails, ok


def test_plain_eventstore_prints_help_and_exits_0() -> None:
    res = cli()
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: ") and "Commands:" in res.stdout
    assert "streams" in res.stdout and res.stderr == ""


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("op") / "s"
    with EventStore.open(path) as store:
        store.append("order-1", [NewEvent("Placed", {"b": 1, "a": 2})])
        store.append("order-2", [NewEvent("Placed"), NewEvent("Paid")])
        store.append("cust-1", [NewEvent("Joined")])
    return str(path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["append", "{path}", "a", "T", "-e", "banana"], "--expected-version wants"),
        (["append", "{path}", "a", "T", "--data", "{oops"], "--data is not valid JSON"),
        (["append", "{path}", "a", "T", "--index", "novalue"], "--index wants NAME=VALUE"),
        (["compact", "{path}"], "give exactly one of --older-than or --before"),
        (["compact", "{path}", "--older-than", "soon"], "--older-than wants a duration"),
        (["compact", "{path}", "--before", "1969-01-01"], "--before 1969-01-01 is before 1970"),
        (["get", "{path}", "nope"], "is not a ULID"),
        (["all", "{path}", "--after", "0" * 26, "--from-seq", "1"], "--after or --from-seq"),
        (["read", "{path}", "order-1", "--index", "x"], "--index wants NAME=VALUE"),
        (["esdb", "dump", "{file}", "--index", "customer=c1"], "--index needs --stream"),
        (["esdb", "dump", "{file}", "--stream", "s", "--index", "x"], "--index wants NAME=VALUE"),
    ],
)
def test_usage_mistakes_exit_2_with_one_line(
    store_path: str, tmp_path: Path, args: list[str], message: str
) -> None:
    before = ok("all", store_path, "--json")
    file = tmp_path / "f.esdb"
    file.write_bytes(b"not read: the arguments are checked first")
    line = fails(
        *[a.replace("{path}", store_path).replace("{file}", str(file)) for a in args],
        message=message,
        code=2,
    )
    assert "--help" in line  # points at the command's own help
    assert ok("all", store_path, "--json") == before  # nothing written


def test_messages_name_options_not_parameters(store_path: str) -> None:
    line = fails("all", store_path, "--after", "0" * 26, "--from-seq", "1", message="", code=2)
    assert "from_seq" not in line and "read_all" not in line


def test_streams_lists_every_stream_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("order-1", [NewEvent("T")] * 3)
        store.append("cust-1", [NewEvent("T")])
        store.compact(before=store.append("order-2", [NewEvent("T")]).ids[0])  # two go cold
        store.append("order-1", [NewEvent("T")])  # a stream both cold and hot
    rows = [json.loads(line) for line in ok("streams", str(path), "--json").splitlines()]
    assert rows == [
        {"stream": "cust-1", "version": 0},
        {"stream": "order-1", "version": 3},
        {"stream": "order-2", "version": 0},
    ]
    lines = ok("streams", str(path), "--prefix", "order-").splitlines()
    assert [line.split() for line in lines] == [
        ["version", "stream"],
        ["3", "order-1"],
        ["0", "order-2"],
    ]
    assert ok("streams", str(tmp_path / "s"), "--prefix", "none").splitlines() == [
        "version  stream"
    ]


def test_streams_on_a_damaged_hot_tier_is_one_line_naming_repair(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("a", [NewEvent("T")])
    (path / "hot" / "CURRENT").write_bytes(b"garbage")
    fails("streams", str(path), message="eventstore repair")


def _aligned(lines: list[str], heads: list[str]) -> list[int]:
    """The rows (1-based) where a left-aligned column does not start under its
    head (a numeric column that widened would push the ones after it)."""
    cols = [lines[0].index(h) for h in heads]
    return [
        n
        for n, line in enumerate(lines[1:], 1)
        if any(line[c - 1] != " " or line[c] == " " for c in cols)
    ]


def test_columns_stay_aligned_past_the_rows_that_size_them(tmp_path: Path) -> None:
    # 1,050 events: seqs and versions pass 999 long after the first 200 rows.
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("s", [NewEvent("T", i) for i in range(1050)])
        store.append("a-much-longer-stream-name", [NewEvent("T")])
    lines = ok("read", str(path), "s").splitlines()
    assert len(lines) == 1051
    assert _aligned(lines, ["id", "type", "data"]) == []
    lines = ok("all", str(path)).splitlines()
    # Only the row with the wider stream name is pushed right, past its own
    # stream cell; every other row stays under the heads.
    assert _aligned(lines, ["id", "stream", "type", "data"]) == [1051]
    assert _aligned(lines[:1051], ["id", "stream", "type", "data"]) == []


def _archive_file(path: Path) -> str:
    (name,) = [n for n in os.listdir(path / "archive") if n.endswith(".esdb")]
    return str(path / "archive" / name)


def test_esdb_dump_keeps_key_order_and_says_when_a_stream_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        store.append("s", [NewEvent("T", {"zebra": 1, "apple": 2, "mango": {"b": 0, "a": 1}})])
        store.compact(before=store.append("t", [NewEvent("T")]).ids[0])
    file = _archive_file(path)
    (line,) = ok("esdb", "dump", file).splitlines()
    assert line.endswith('{"zebra": 1, "apple": 2, "mango": {"b": 0, "a": 1}}')
    fails("esdb", "dump", file, "--stream", "absent", message="stream 'absent' is not in")
    fails("esdb", "dump", file, "--stream", "absent", "--index", "a=b", message="is not in")
    assert ok("esdb", "dump", file, "--stream", "s").count("\n") == 1


@contextmanager
def _recorded(
    bars: list[dict[str, Any]], length: int, label: str
) -> Iterator[Callable[[int], None]]:
    bar = {"label": label.strip(), "length": length, "advanced": 0}
    bars.append(bar)

    def advance(n: int) -> None:
        bar["advanced"] += n

    yield advance


def test_verify_and_import_bars_count_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[dict[str, Any]] = []
    for module in (maintenance, transfer):
        monkeypatch.setattr(
            module, "progress_bar", lambda length, label: _recorded(bars, length, label)
        )
    n = 5000
    source = tmp_path / "source"
    with EventStore.open(source) as store:
        store.append_many([(f"s{i % 7}", [NewEvent("T", i)], ANY) for i in range(n)])
    runner = CliRunner()
    res = runner.invoke(main, ["verify", str(source)])
    assert res.exit_code == 0, res.output
    (verify_bar,) = bars
    # Two passes over the log: the public reads, then the store's own check
    # (which reports every 4,096 events).
    assert verify_bar["length"] == 2 * n
    assert n + 4096 <= verify_bar["advanced"] <= 2 * n
    bars.clear()
    export = tmp_path / "x.jsonl"
    assert runner.invoke(main, ["export", str(source), str(export)]).exit_code == 0
    bars.clear()
    res = runner.invoke(main, ["import", str(tmp_path / "copy"), str(export)])
    assert res.exit_code == 0, res.output
    assert [(b["label"], b["length"], b["advanced"]) for b in bars] == [
        ("checking", n, n),
        ("importing", n, n),
    ]


def test_import_names_the_clock_tolerance_option(tmp_path: Path) -> None:
    # An event timed two days ahead of this clock: the import refuses it,
    # and says which option lets it in.
    ahead = int((time.time() + 2 * 86400) * 1000)
    event_id = ULID.from_bytes((ahead << 80 | 1).to_bytes(16, "big"))
    line = {"id": str(event_id), "stream": "s", "version": 0, "seq": 1, "type": "T"}
    file = tmp_path / "x.jsonl"
    file.write_text(json.dumps(line) + "\n")
    message = fails("import", str(tmp_path / "s"), str(file), message="--clock-tolerance SECONDS")
    assert "clock_tolerance" not in message and "import_events" not in message
    assert not (tmp_path / "s").exists()  # checked before anything was made
