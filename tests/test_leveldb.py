"""The LevelDB binding behind eventstore/_leveldb.py (plyvel, or its fork
plyvel-next) does what the store relies on: the right one is installed for
this interpreter, iterators (reverse ones too), snapshots, write batches,
its error classes, and repair_db. CI runs this on 3.11/3.12 (plyvel) and
3.13 (plyvel-next)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from eventstore import EventStore, NewEvent
from eventstore._leveldb import BINDING, plyvel
from eventstore.errors import StoreLocked
from eventstore.hot import LEVELDB_OPTIONS, open_leveldb

ROOT = Path(__file__).resolve().parent.parent
KEYS = [b"a", b"a\x00", b"a\x00\x01", b"b", b"b\x00", b"c"]


@pytest.fixture
def db(tmp_path: Path) -> Any:
    handle = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, **LEVELDB_OPTIONS)
    for n, key in enumerate(KEYS):
        handle.put(key, b"%d" % n)
    yield handle
    handle.close()


def test_the_binding_the_markers_pick_is_the_one_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    picked = [
        req.name
        for req in map(Requirement, project["dependencies"])
        if req.name in ("plyvel", "plyvel-next") and (req.marker is None or req.marker.evaluate())
    ]
    assert picked == [BINDING], f"markers pick {picked}, the seam imported {BINDING}"
    assert importlib.metadata.version(BINDING)  # installed as a distribution
    if sys.version_info >= (3, 13):
        assert BINDING == "plyvel-next"  # plyvel has no wheels here


def test_the_markers_give_every_platform_exactly_one_binding() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [r for r in map(Requirement, project["dependencies"]) if "plyvel" in r.name]
    wheels = {  # where each ships wheels (checked against PyPI for this release)
        "plyvel": {("3.11", "linux", "x86_64"), ("3.12", "linux", "x86_64")},
        "plyvel-next": {
            (v, p, m)
            for v in ("3.12", "3.13")
            for p, m in [("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"),
                         ("darwin", "x86_64"), ("win32", "AMD64")]
        },
    }
    for version in ("3.11", "3.12", "3.13"):
        for platform, machine in [("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"),
                                  ("darwin", "x86_64"), ("win32", "AMD64")]:
            env = {"python_version": version, "sys_platform": platform,
                   "platform_machine": machine}
            chosen = [r.name for r in reqs if r.marker is not None and r.marker.evaluate(env)]
            assert len(chosen) == 1, (env, chosen)
            if version != "3.11":  # 3.11 off Linux x86_64 has no wheel of either
                assert (version, platform, machine) in wheels[chosen[0]], (env, chosen)


def test_iterators_forwards_and_backwards(db: Any) -> None:
    assert [k for k, _ in db.iterator(start=b"a\x00", stop=b"b\x00")] == KEYS[1:4]
    assert list(db.iterator(start=b"a\x00", stop=b"b\x00", include_stop=True,
                            include_value=False)) == KEYS[1:5]
    assert list(db.iterator(prefix=b"a", include_value=False)) == KEYS[:3]
    # Backwards, the store bounds only the stop and applies the start itself
    # (hot.py's _range): reverse iterators must give every key below stop.
    rev = db.iterator(stop=b"b\x00", reverse=True, include_value=False)
    assert list(takewhile(lambda k: k >= b"a\x00", rev)) == KEYS[1:4][::-1]
    rev = db.iterator(stop=b"b\x00", include_stop=True, reverse=True)
    assert [k for k, _ in rev] == KEYS[:5][::-1]
    assert [k for k, _ in db.iterator(prefix=b"b", reverse=True)] == [b"b\x00", b"b"]
    it = db.iterator(start=b"a", stop=b"c")
    it.seek(b"a\x00\x00")  # the interpolation search in hot.py seeks in a bounded iterator
    assert next(it) == (b"a\x00\x01", b"2")
    it.close()


def test_snapshots_do_not_see_later_writes(db: Any) -> None:
    snap = db.snapshot()
    db.put(b"a\x00\x00", b"new")
    db.delete(b"c")
    assert snap.get(b"a\x00\x00") is None
    assert snap.get(b"c") == b"5"
    assert list(snap.iterator(include_value=False)) == KEYS
    assert [k for k, _ in snap.iterator(reverse=True)] == KEYS[::-1]
    snap.close()
    assert db.get(b"a\x00\x00") == b"new" and db.get(b"c") is None


def test_a_write_batch_lands_whole_on_write(db: Any) -> None:
    batch = db.write_batch(sync=True)
    batch.put(b"z", b"1")
    batch.delete(b"a")
    assert db.get(b"z") is None and db.get(b"a") == b"0"  # nothing before write()
    batch.write()
    assert db.get(b"z") == b"1" and db.get(b"a") is None


def test_a_second_open_raises_the_io_error_the_store_maps(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    first = plyvel.DB(path, create_if_missing=True)
    try:
        with pytest.raises(plyvel.IOError, match="lock"):
            plyvel.DB(path)
    finally:
        first.close()
    assert issubclass(plyvel.IOError, plyvel.Error)
    assert issubclass(plyvel.CorruptionError, plyvel.Error)


def _a_table_file(path: Path) -> Path:
    db = plyvel.DB(str(path), create_if_missing=True)
    for n in range(2000):
        db.put(b"k%06d" % n, b"v" * 100)
    db.compact_range()  # into a table file on disk
    db.close()
    (table,) = [p for p in path.iterdir() if p.suffix in (".ldb", ".sst")]
    return table


def test_a_damaged_block_raises_corruption_error_when_checked(tmp_path: Path) -> None:
    table = _a_table_file(tmp_path / "db")
    raw = bytearray(table.read_bytes())
    raw[100:140] = bytes(40)  # inside the first data block
    table.write_bytes(raw)
    db = plyvel.DB(str(tmp_path / "db"))
    try:
        with pytest.raises(plyvel.CorruptionError):
            list(db.iterator(verify_checksums=True, fill_cache=False))
    finally:
        db.close()


def test_repair_db_recovers_a_store_that_lost_its_manifest(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _a_table_file(path)
    (path / "CURRENT").unlink()
    with pytest.raises(plyvel.Error):
        plyvel.DB(str(path))
    plyvel.repair_db(str(path))
    db = plyvel.DB(str(path))
    try:
        assert sum(1 for _ in db.iterator()) == 2000
    finally:
        db.close()


def test_the_store_runs_on_the_binding(tmp_path: Path) -> None:
    # open_leveldb maps the binding's lock error; the store's reverse reads
    # and compaction go through iterators, snapshots and batches above.
    with EventStore.open(tmp_path / "s") as store:
        r = store.append("s", [NewEvent("T", {"n": n}) for n in range(5)])
        store.compact(before=r.ids[3])
        assert [e.version for e in store.read_stream("s", backwards=True)] == [4, 3, 2, 1, 0]
        assert [e.version for e in store.read_stream("s", from_version=3, backwards=True)] == [
            3, 2, 1, 0,
        ]
        with pytest.raises(StoreLocked):
            open_leveldb(str(tmp_path / "s" / "hot"))


def test_a_log_the_owner_folds_away_during_open_is_store_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log tails are read before LevelDB takes the LOCK: the process that
    # holds the store may flush a log away meanwhile (seen: a CLI append
    # beside `eventstore tail`). That is StoreLocked, not FileNotFoundError.
    from eventstore import hot

    def vanished(log: str) -> None:
        raise FileNotFoundError(log)

    with EventStore.open(tmp_path / "s") as store:
        store.append("s", [NewEvent("T")])
        monkeypatch.setattr(hot, "_damaged_log_tail", vanished)
        with pytest.raises(StoreLocked):
            open_leveldb(str(tmp_path / "s" / "hot"))


def test_nothing_imports_a_leveldb_binding_but_the_seam() -> None:
    # plyvel is not installed where plyvel-next is (CPython 3.13): a direct
    # import anywhere else fails there, in CI only.
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for folder in ("eventstore", "tests", "scripts", "examples"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "_leveldb.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                )
                if any(n.split(".")[0] in ("plyvel", "plyvel_next") for n in names):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found


# Run by pytest in a child: an application left open in a module until exit
# (its factory's finaliser closes the store at exit).
LEFT_IN_A_MODULE = """
import sys, types

SOURCE = (
    "from uuid import UUID\\n"
    "from eventsourcing.application import Application\\n"
    "from eventsourcing.domain import Aggregate, event\\n"
    "class Dog(Aggregate):\\n"
    "    @event('Registered')\\n"
    "    def __init__(self, name: str) -> None:\\n"
    "        self.name = name\\n"
    "class School(Application[UUID]):\\n"
    "    pass\\n"
    "env = {'PERSISTENCE_MODULE': 'eventstore.contrib.eventsourcing',\\n"
    "       'EVENTSTORE_PATH': @FOLDER@}\\n"
    "school = School(env=env)\\n"
)

def test_it():
    module = types.ModuleType("left_in_a_module")
    sys.modules["left_in_a_module"] = module
    exec(compile(SOURCE, "b", "exec"), module.__dict__)
"""


def test_a_closed_store_lets_go_of_leveldb_so_exit_is_quiet(tmp_path: Path) -> None:
    # A store is full of reference cycles, so the garbage collector frees it,
    # clearing every unreachable object first; plyvel's DB.__dealloc__ then
    # calls close() on a cleared object, which raises, and at interpreter exit
    # that prints "Error in sys.excepthook" (docs/eventsourcing.md's page did,
    # under pytest). Closing must let go of the database object everywhere.
    source = LEFT_IN_A_MODULE.replace("@FOLDER@", repr(repr(str(tmp_path / "s")))[1:-1])
    source_file = tmp_path / "test_left_in_a_module.py"
    source_file.write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", source_file.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "excepthook" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
