"""`eventstore export|import|backup|verify` as real subprocesses: a lossless
round trip, the refusals, progress bars only on a terminal, damaged files."""

from __future__ import annotations

import json
import math
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from eventstore import Event, EventStore, NewEvent

from .test_cli import ROOT, as_json, fails, fill, json_lines, ok

needs_import = pytest.mark.skipif(
    not hasattr(EventStore, "import_events"), reason="EventStore.import_events() is not there yet"
)
needs_backup = pytest.mark.skipif(
    not hasattr(EventStore, "backup"), reason="EventStore.backup() is not there yet"
)

ODD_VALUES: list[Any] = [
    {"raw": b"\x00\xff", "empty": b""},
    {"$bytes": "not bytes, a key"},  # a map a naive encoding would take for bytes
    {1: "int key", "s": 2, None: [True, False]},
    [math.inf, -math.inf, 1e308, -0.0, 2**63 - 1, -(2**63)],
    "ünïcødé ✓",
    None,
    msgpack.ExtType(5, b"xy"),
    {"deep": [{"a": [b"\x01", {"$map": 1}]}]},
]


def odd_store(path: Path) -> list[Event]:
    """Every kind of value msgpack carries, half of it compacted into an archive file."""
    with EventStore.open(path) as store:
        for i, value in enumerate(ODD_VALUES * 3):
            store.append(
                f"s-{i % 4}",
                [
                    NewEvent(
                        "T" if i % 2 else "Ü",
                        value,
                        metadata=ODD_VALUES[(i + 3) % len(ODD_VALUES)],
                        indexes={"k": str(i % 3)} if i % 2 else {"$k": "v"},
                    )
                ],
            )
        events = list(store.read_all())
        store.compact(before=events[len(events) // 2].id)
        return events


def same_events(a: list[Event], b: list[Event]) -> None:
    """Equal field by field, data and metadata compared as msgpack bytes (NaN-safe)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.id, x.stream, x.version, x.seq, x.type, x.indexes) == (
            y.id,
            y.stream,
            y.version,
            y.seq,
            y.type,
            y.indexes,
        )
        assert msgpack.packb([x.data, x.metadata]) == msgpack.packb([y.data, y.metadata])


def read_all(path: Path) -> list[Event]:
    with EventStore.open(path) as store:
        return list(store.read_all())


# -- export ------------------------------------------------------------------------


def test_export_writes_a_header_then_one_event_per_line(tmp_path: Path) -> None:
    path, out = tmp_path / "s", tmp_path / "e.jsonl"
    events = fill(path, 20)
    assert ok("export", str(path), str(out)).strip() == f"exported 20 events to {out}"
    header, *rows = json_lines(out.read_text())
    assert header["kind"] == "eventstore-export" and header["format"] == 2
    assert (header["events"], header["first_seq"], header["last_seq"]) == (20, 1, 20)
    assert rows == as_json(events)
    fails("export", str(path), str(out), message="exists; pass --force")
    ok("export", str(path), str(out), "--force", "--after", str(events[14].id))
    header, *rows = json_lines(out.read_text())
    assert (header["events"], header["after"], header["first_seq"]) == (5, str(events[14].id), 16)
    assert rows == as_json(events[15:])
    # to stdout, and an empty range
    lines = json_lines(ok("export", str(path), "-", "--after", str(events[-1].id)))
    assert len(lines) == 1 and lines[0]["events"] == 0
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


# -- import --------------------------------------------------------------------------


@needs_import
def test_export_import_round_trip_is_lossless(tmp_path: Path) -> None:
    a, b, file = tmp_path / "a", tmp_path / "b", tmp_path / "a.jsonl"
    events = odd_store(a)
    ok("export", str(a), str(file))
    out = ok("import", str(b), str(file))
    assert out.strip() == f"imported {len(events)} events from {file}; seq now {len(events)}"
    same_events(read_all(b), events)
    again = tmp_path / "b.jsonl"
    ok("export", str(b), str(again))
    assert file.read_text().splitlines()[1:] == again.read_text().splitlines()[1:]
    # and the imported store takes appends after the imported ids
    ok("append", str(b), "s-0", "After")
    after = read_all(b)[-1]
    assert after.seq == len(events) + 1 and after.id > events[-1].id


@needs_import
def test_incremental_import_continues_a_copy(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    events = fill(a, 12)
    ok("export", str(a), str(tmp_path / "1.jsonl"), "--after", str(events[0].id))
    fails(
        "import", str(b), str(tmp_path / "1.jsonl"), message="starts at seq 2, but the next seq of"
    )
    ok("export", str(a), str(tmp_path / "1.jsonl"), "--force")
    ok("import", str(b), str(tmp_path / "1.jsonl"))
    ok("append", str(a), "order-1", "Late", "--data", '{"b": {"$bytes": "AA=="}}')
    ok("export", str(a), str(tmp_path / "2.jsonl"), "--after", str(events[-1].id))
    ok("import", str(b), str(tmp_path / "2.jsonl"))
    same_events(read_all(b), read_all(a))
    # A rerun resumes after the events already in (issue 13, item 14): here, all of them.
    assert "is in the store already" in ok("import", str(b), str(tmp_path / "2.jsonl"))
    same_events(read_all(b), read_all(a))


def test_import_checks_the_whole_file_before_writing(tmp_path: Path) -> None:
    a, file = tmp_path / "a", tmp_path / "e.jsonl"
    fill(a, 8)
    ok("export", str(a), str(file))
    good = file.read_text().splitlines()

    def edit(old: str, new: str) -> list[str]:  # the third line (second event) changed
        return [*good[:2], good[2].replace(old, new, 1), *good[3:]]

    cases = {
        "line 6: not valid JSON": [*good[:5], "{nope", *good[5:]],
        "line 4: seq 4 after seq 2": [*good[:3], *good[4:]],
        "line 3: field 'version' should be a int": edit('"version":0', '"version":"0"'),
        "line 3: 'x01": edit('"id":"', '"id":"x'),
        "line 1: export format 9": [good[0].replace('"format":2', '"format":9'), *good[1:]],
        "line 4: id": [*good[:3], good[2]],  # ... is not above the previous line's
        "object key '$set' starts with '$'": edit('"data":{', '"data":{"$set":1,'),
        "unknown tag '$set'": edit('"metadata":null', '"metadata":{"$set":1}'),
        "version 2, expected 0": edit('"version":0', '"version":2'),
    }
    for n, (message, lines) in enumerate(cases.items()):
        bad = tmp_path / f"bad{n}.jsonl"
        bad.write_text("\n".join(lines) + "\n")
        fails("import", str(tmp_path / f"new{n}"), str(bad), message=message)
        assert not (tmp_path / f"new{n}").exists()  # no empty store left behind
    # Its own export is in the store already: a rerun of a finished import.
    assert "is in the store already" in ok("import", str(a), str(file))
    other = tmp_path / "other"
    fill(other, 8)
    ok("export", str(other), str(tmp_path / "other.jsonl"))
    fails("import", str(a), str(tmp_path / "other.jsonl"), message="starts at seq 1, but the next")
    assert len(read_all(a)) == 8
    fails("import", str(a), str(tmp_path / "missing.jsonl"), code=2, message="does not exist")


# -- backup, verify ----------------------------------------------------------------------


@needs_backup
def test_backup_is_a_verified_copy(tmp_path: Path) -> None:
    a, dest = tmp_path / "a", tmp_path / "backup"
    events = odd_store(a)
    out = ok("backup", str(a), str(dest))
    assert out.startswith(f"backed up {len(events)} events to {dest}")
    assert ok("verify", str(dest)).startswith(f"OK {dest}: {len(events)} events")
    same_events(read_all(dest), events)
    fails("backup", str(a), str(dest), message="is not an empty folder")


def test_verify_passes_a_sound_store_and_names_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    events = fill(path, 30)
    with EventStore.open(path) as store:
        store.compact(before=events[20].id)
    out = ok("verify", str(path))
    assert out.strip() == (
        f"OK {path}: 30 events in 5 streams (hot 10, cold 20 in 1 file); "
        "seq gap-free, ids increasing, versions dense, checksums good"
    )
    assert json_lines(ok("verify", str(path), "--json"))[0]["cold_events"] == 20
    (file,) = (path / "archive").glob("*.esdb")
    data = bytearray(file.read_bytes())
    data[60] ^= 0x55  # inside the first chunk (a stream's secondary index)
    file.write_bytes(bytes(data))
    line = fails("verify", str(path), message="checksum mismatch")
    assert str(file) in line and "offset 16" in line
    for i in range(16, len(data) - 400):  # the chunks up to the index region
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))
    line = fails("all", str(path), message="corrupt at offset")
    assert str(file) in line


# -- progress bars --------------------------------------------------------------------------


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return its code and what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstore.cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return proc.wait(timeout=30), drawn.decode(errors="replace")


def test_progress_bars_on_a_terminal_and_none_when_piped(tmp_path: Path) -> None:
    path = tmp_path / "s"
    fill(path, 50)
    code, drawn = on_a_terminal("export", str(path), str(tmp_path / "e.jsonl"))
    assert code == 0 and "exporting" in drawn and "100%" in drawn and "50/50" in drawn
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventstore.cli",
            "export",
            str(path),
            str(tmp_path / "e.jsonl"),
            "--force",
        ],
        capture_output=True,
        cwd=ROOT,
    )
    assert res.returncode == 0 and res.stderr == b""
    code, drawn = on_a_terminal("compact", str(path), "--older-than", "0s")
    assert code == 0 and "compacting" in drawn and "100%" in drawn
    assert json.loads(ok("stats", str(path), "--json").splitlines()[0])["cold_events"] == 50
