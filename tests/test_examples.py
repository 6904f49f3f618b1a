"""The examples run as real programs and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the Go program in ESDB's README prints.
ESDB_README_OUTPUT = """\
activity for 1:
{"url":"http://mysite.com/"}
{"button_text":"Checkout"}
{"url":"http://mysite.com/checkout"}
{"total":"42.99"}
{"url":"http://mysite.com/thankyou"}

activity for 2:
{"url":"http://mysite.com/"}
{"button_text":"About"}
{"url":"http://mysite.com/about"}

purchases for 1:
{"total":"42.99"}

clicks for 3:
{"button_text":"Checkout"}
{"button_text":"About"}
"""


def run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_activity_example_prints_what_the_esdb_readme_prints(tmp_path: Path) -> None:
    assert run("examples/activity.py", str(tmp_path / "a")) == ESDB_README_OUTPUT


def test_quickstart_demo(tmp_path: Path) -> None:
    out = run("examples/quickstart.py", str(tmp_path / "q"))
    assert "appended versions 0..2 to order-42" in out
    assert "refused a stale write: stream 'order-42': expected version 0, actual version 2" in out
    assert "  v0 seq=1 OrderPlaced {'total': 42.99}" in out
    assert "lookup by ULID" in out and ": ItemAdded in order-42 at " in out
    assert "  OrderPaid {'amount': 55.49}" in out
    assert out.index("  v2 OrderPaid") < out.index("  v0 OrderPlaced", out.index("newest first"))
    assert "  seq=4 order-43 {'total': 7.0}" in out
