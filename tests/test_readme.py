"""The README stays true: its quickstart runs, and CI runs its test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quickstart_block_runs(tmp_path: Path) -> None:
    (block,) = re.findall(r"## Quickstart\n\n```python\n(.*?)```", README, re.S)
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 OrderPlaced {'total': 42.99}" in proc.stdout
    assert "['OrderPaid']" in proc.stdout


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    block = README.split("<!-- test-command -->", 1)[1].split("```")[1].strip()
    assert block.startswith("python3 -m venv .venv") and "pytest" in block
