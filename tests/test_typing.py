"""The public API's annotations catch mistakes under ``mypy --strict``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
from eventstore import ANY, NO_STREAM, STREAM_EXISTS, EventStore, Expected, NewEvent

def run(store: EventStore, version: int) -> None:
    store.append("s", [NewEvent("T")], expected_version=NO_STREAM)
    store.append("s", [NewEvent("T")], expected_version=version)
    store.append("s", [NewEvent("T")], ANY)
    choice: Expected = STREAM_EXISTS
    store.append_many([("a", [NewEvent("T")], choice), ("b", [NewEvent("T")], 3)])
"""

BAD = """
from eventstore import EventStore, NewEvent

def run(store: EventStore) -> None:
    store.append("s", [NewEvent("T")], expected_version="any")
    store.append_many([("a", [NewEvent("T")], "no_stream")])
"""


def test_expected_version_is_typed_so_strings_are_mypy_errors(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    good, bad = tmp_path / "good_snippet.py", tmp_path / "bad_snippet.py"
    good.write_text(textwrap.dedent(GOOD))
    bad.write_text(textwrap.dedent(BAD))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(good),
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        timeout=300,
    )
    out = run.stdout + run.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if "good_snippet" in e], out
    bad_errors = [e for e in errors if "bad_snippet" in e]
    assert len(bad_errors) == 2, out
    assert 'bad_snippet.py:5: error: Argument "expected_version"' in bad_errors[0], out
    assert '"str"' in bad_errors[0] and "ExpectedVersion | int" in bad_errors[0], out
    assert "bad_snippet.py:6: error:" in bad_errors[1] and 'str]"' in bad_errors[1], out
