"""`eventstore esdb inspect|dump|verify` and the ported Go example, run as real
subprocesses."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventstore.esdb import ESDBWriter
from eventstore.ids import MonotonicULIDs
from eventstore.records import encode_record

from .test_esdb_roundtrip import m_all, m_index, m_stream, sample_events, write_file
from .test_examples import ESDB_README_OUTPUT

ROOT = Path(__file__).resolve().parent.parent
EVENTS = sample_events(60, 4)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "esdb", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def esdb_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "f.esdb")
    write_file(path, EVENTS, block_size=256)
    return path


def expect_json(ev: Any) -> dict[str, Any]:
    def enc(v: Any) -> Any:
        if isinstance(v, bytes):
            return {"$bytes": base64.b64encode(v).decode()}
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        return v

    e = ev.event()
    return {
        "id": str(e.id),
        "stream": e.stream,
        "version": e.version,
        "seq": e.seq,
        "type": e.type,
        "data": enc(e.data),
        "metadata": enc(e.metadata),
        "indexes": e.indexes,
        "timestamp": e.timestamp.isoformat(),
    }


def lines_json(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_inspect_json(esdb_file: str) -> None:
    res = cli("inspect", esdb_file, "--json")
    assert res.returncode == 0, res.stderr
    rows = lines_json(res.stdout)
    head, spaces = rows[0], rows[1:]
    assert head["kind"] == "file" and head["events"] == len(EVENTS)
    assert head["file_bytes"] == os.path.getsize(esdb_file)
    assert head["format_version"] == 1 and head["codec"] == "zstd"
    assert [s["stream"] for s in spaces] == sorted({e.stream for e in EVENTS}, key=str.encode)
    assert sum(s["events"] for s in spaces) == len(EVENTS)


def test_inspect_human(esdb_file: str) -> None:
    res = cli("inspect", esdb_file)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(line.split() == ["events", str(len(EVENTS))] for line in lines)
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:2] == ["stream", "events"]
    # columns are aligned: every row puts the versions column at the same place
    col = table[0].index("versions")
    assert all(row[col - 1] == " " for row in table[1:])
    assert len(table) == 1 + len({e.stream for e in EVENTS})


def test_dump_all_and_reverse(esdb_file: str) -> None:
    res = cli("dump", esdb_file, "--json")
    assert res.returncode == 0, res.stderr
    want = m_all(EVENTS, None, False, None, None)
    assert lines_json(res.stdout) == [expect_json(e) for e in want]
    res = cli("dump", esdb_file, "--json", "--reverse")
    assert lines_json(res.stdout) == [expect_json(e) for e in want[::-1]]


def test_dump_stream_and_index(esdb_file: str) -> None:
    res = cli("dump", esdb_file, "--stream", "a", "--json")
    assert lines_json(res.stdout) == [expect_json(e) for e in m_stream(EVENTS, "a", None, False)]
    some = next(e for e in EVENTS if e.indexes.get("customer") == "c2")
    res = cli(
        "dump", esdb_file, "--stream", some.stream, "--index", "customer=c2", "--reverse", "--json"
    )
    want = m_index(EVENTS, some.stream, "customer", "c2", True, True)
    assert want and lines_json(res.stdout) == [expect_json(e) for e in want]
    res = cli("dump", esdb_file, "--stream", "a")
    assert res.returncode == 0
    assert len(res.stdout.splitlines()) == len(m_stream(EVENTS, "a", None, False))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--index", "customer=c1"], "needs --stream"),
        (["--stream", "a", "--index", "nonsense"], "NAME=VALUE"),
        (["--stream", ""], "must not be empty"),
    ],
)
def test_dump_bad_arguments(esdb_file: str, args: list[str], message: str) -> None:
    res = cli("dump", esdb_file, *args)
    assert res.returncode != 0
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_verify_ok(esdb_file: str) -> None:
    res = cli("verify", esdb_file)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("OK ") and len(res.stdout.splitlines()) == 1


@pytest.mark.parametrize("command", ["verify", "inspect", "dump"])
def test_damaged_file_fails_cleanly(esdb_file: str, tmp_path: Path, command: str) -> None:
    data = bytearray(Path(esdb_file).read_bytes())
    data[40] ^= 0x55  # inside the first data block
    bad = tmp_path / "bad.esdb"
    bad.write_bytes(bytes(data))
    res = cli(command, str(bad))
    if command == "inspect":  # inspect reads no data blocks: it still works
        assert res.returncode == 0
        return
    assert res.returncode != 0
    assert "checksum mismatch" in res.stderr and str(bad) in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["verify", "inspect", "dump"])
def test_missing_and_non_esdb_files(tmp_path: Path, command: str) -> None:
    res = cli(command, str(tmp_path / "nope.esdb"))
    assert res.returncode != 0 and "No such file" in res.stderr
    junk = tmp_path / "junk.esdb"
    junk.write_bytes(b"hello, world\n" * 40)
    res = cli(command, str(junk))
    assert res.returncode != 0 and "magic" in res.stderr and "Traceback" not in res.stderr


def test_dump_bytes_as_base64(tmp_path: Path) -> None:
    path = str(tmp_path / "b.esdb")
    with ESDBWriter(path) as w:
        w.add(
            "s",
            MonotonicULIDs().next_int().to_bytes(16, "big"),
            encode_record(0, 1, "Blob", {"raw": b"\x00\xffhi"}, b"\x01", {}),
        )
    res = cli("dump", path, "--json")
    row = json.loads(res.stdout)
    assert row["data"] == {"raw": {"$bytes": base64.b64encode(b"\x00\xffhi").decode()}}
    assert row["metadata"] == {"$bytes": "AQ=="}


GO_OUTPUT = ESDB_README_OUTPUT  # what the Go program in ESDB's README prints


def test_go_example_prints_what_the_go_program_prints(tmp_path: Path) -> None:
    target = tmp_path / "activity.esdb"
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "esdb_file.py"), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == GO_OUTPUT
    res = cli("verify", str(target))  # and the file it left is a sound ESDB file
    assert res.returncode == 0 and "14 events in 3 streams" in res.stdout
