"""The CLI prints one line and exits non-zero for every failure of a damaged
store, a full disk, an OS error and input nested too deeply: never a
traceback. Every case runs the real command in a subprocess."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent
from eventstore.ids import ulid_from_int

from .test_never_lose_integrity import flip, killed_writer_store, tmpfs


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstore.cli", "--lock-timeout", "0", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode not in (0, None), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _commands(store: Path, tmp_path: Path) -> list[list[str]]:
    return [
        ["read", str(store), "s0"],
        ["all", str(store)],
        ["stats", str(store)],
        ["export", str(store), str(tmp_path / "out.jsonl")],
        ["verify", str(store)],
        ["backup", str(store), str(tmp_path / "backup")],
        ["append", str(store), "s0", "T", "--data", "1"],
    ]


def test_every_command_on_a_store_whose_log_is_damaged_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s"
    killed_writer_store(store, 200)
    (log,) = (store / "hot").glob("*.log")
    flip(log, log.stat().st_size // 2)
    for args in _commands(store, tmp_path):
        assert_one_line_failure(cli(*args), "damaged", "eventstore repair")


def test_every_reading_command_on_a_store_with_bit_rot_fails_in_one_line(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with EventStore.open(store) as s:
        for n in range(60):
            s.append(f"s{n % 3}", [NewEvent("T", os.urandom(700))])
        s._hot.db.compact_range()
    (table,) = (store / "hot").glob("*.ldb")
    flip(table, table.stat().st_size // 4, 0x01)  # an event block
    for args in _commands(store, tmp_path)[:5]:
        proc = cli(*args)
        if args[0] == "read" and proc.returncode == 0:
            continue  # s0's events may all lie outside the damaged block
        assert_one_line_failure(proc, "damaged")


def test_damaged_segment_keys_fail_read_and_verify_in_one_line(tmp_path: Path) -> None:
    from eventstore._leveldb import plyvel
    from eventstore.keys import SEGMENT

    store = tmp_path / "s"
    with EventStore.open(store) as s:
        r = s.append("a", [NewEvent("T", n) for n in range(10)])
        s.compact(before=ulid_from_int(int(r.ids[-1]) + 1))
        s.append("a", [NewEvent("T", 10)])
    db = plyvel.DB(str(store / "hot"))
    ((key, value),) = db.iterator(prefix=SEGMENT)
    db.put(key, value[:-1] + bytes([value[-1] ^ 0x01]))  # the last version: 9 -> 8
    db.close()
    assert_one_line_failure(cli("read", str(store), "a"), "segment keys")
    assert_one_line_failure(cli("verify", str(store)), "segment keys")


def test_deeply_nested_json_to_append_and_import_is_one_line(tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    proc = cli("append", str(tmp_path / "s"), "s", "T", "--data", "-", stdin=deep)
    assert_one_line_failure(proc, "nested too deeply")
    assert not (tmp_path / "s").exists()  # nothing created
    export = tmp_path / "in.jsonl"
    line = '{"id":"01HZY0000000000000000000AA","stream":"s","version":0,"seq":1,"type":"T","data":'
    export.write_text(line + deep + "}\n")
    assert_one_line_failure(cli("import", str(tmp_path / "t"), str(export)), "nested too deeply")


def test_os_errors_are_one_line(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with EventStore.open(store) as s:
        s.append("a", [NewEvent("T", 1)])
    assert_one_line_failure(
        cli("export", str(store), str(tmp_path / "no" / "such" / "dir.jsonl")), "No such file"
    )
    (store / "archive").rmdir()
    (store / "archive").write_text("not a folder")
    proc = cli("read", str(store), "a")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_a_full_disk_is_one_line_and_reads_still_work(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        store = disk / "s"
        failed = None
        for _ in range(100):
            big = '"' + base64.b64encode(os.urandom(45_000)).decode() + '"'  # incompressible
            proc = cli("append", str(store), "s", "T", "--data", big)
            if proc.returncode != 0:
                failed = proc
                break
        assert failed is not None
        assert_one_line_failure(failed, "disk is full")
        # A full disk still opens to read.
        proc = cli("read", str(store), "s", "--json")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stdout.splitlines()) > 10
        assert cli("verify", str(store)).returncode == 0


@pytest.mark.parametrize("what", ["a file", "a folder of other things"])
def test_repair_of_something_that_is_not_a_store_is_one_line(tmp_path: Path, what: str) -> None:
    target = tmp_path / "x"
    if what == "a file":
        target.write_text("hello")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    assert_one_line_failure(cli("repair", str(target)))
    assert not list(tmp_path.glob("x.before-repair-*"))
