"""The README stays true: its quickstart runs, CI runs its test command, its
install lines name the distribution, and the contract it points at ships."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
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


def _tracked_text_files() -> dict[str, str]:
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    texts = {}
    for name in filter(None, names):
        path = ROOT / name
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".yml", ".txt", ".in", ""}:
            try:
                texts[name] = path.read_text()
            except UnicodeDecodeError:
                continue
    return texts


def test_nothing_points_outside_the_repository_for_the_contract() -> None:
    # The contract lives in docs/guarantees.md; no user has the planning
    # folder that the design document came from.
    outside = ["shared/" + "DESIGN", "DESIGN" + ".md", "../" + "shared"]
    found = [
        f"{name}: {needle}"
        for name, text in _tracked_text_files().items()
        for needle in outside
        if needle in text
    ]
    assert not found, found
    assert "[docs/guarantees.md](docs/guarantees.md)" in README


def test_every_install_line_names_the_distribution_and_a_real_extra() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ])
    lines = [
        (name, line)
        for name, text in _tracked_text_files().items()
        for line in text.splitlines()
        if "pip install" in line and name != "tests/test_readme.py"
    ]
    assert len(lines) > 5
    for name, line in lines:
        for command in re.findall(r"pip install ([^`&;)]*)", line):
            for token in command.split():
                spec = token.strip("'\"")
                if spec.startswith("-") or not spec:
                    continue
                project, _, extra = spec.partition("[")
                # "eventstore" on PyPI is somebody else's package.
                assert project != "eventstore", (name, line)
                if extra:
                    assert set(extra.rstrip("]").split(",")) <= extras, (name, line, extras)
    for name, text in _tracked_text_files().items():
        for extra in re.findall(r"tiered-eventstore\[([\w,-]+)\]", text):
            assert set(extra.split(",")) <= extras, (name, extra, extras)


def test_readme_says_what_it_is_not_near_the_top() -> None:
    top = "\n".join(README.splitlines()[:12])
    assert "tiered-eventstore" in top and "import" in top
    for name in ("EventStoreDB", "KurrentDB", "Customer.io"):
        assert name in top, name


def test_guarantees_page_gives_every_guarantee_a_status() -> None:
    page = (ROOT / "docs" / "guarantees.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| [^|]+ \| ([^|]+) \|", page, re.M))
    assert sorted(map(int, rows)) == list(range(1, 13)), rows
    for number, status in rows.items():
        assert status.strip().startswith(("implemented", "being built")), (number, status)
        assert re.search(rf"^{number}\. \*\*", page, re.M), f"guarantee {number} is not spelled out"
    cited = set(re.findall(r"tests/test_\w+\.py", page))
    assert len(cited) > 10
    assert not [c for c in cited if not (ROOT / c).is_file()], "cites tests that do not exist"


def test_ci_tests_exactly_the_versions_the_package_declares() -> None:
    from packaging.specifiers import SpecifierSet

    ci = (ROOT / ".ci" / "run").read_text()
    (versions,) = re.findall(r'^VERSIONS="([\d. ]+)"$', ci, re.M)
    tested = versions.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = SpecifierSet(project["requires-python"])
    candidates = [f"3.{minor}" for minor in range(8, 20)]
    assert [v for v in candidates if f"{v}.0" in allowed] == tested
    classified = re.findall(r"Python :: (3\.\d+)$", "\n".join(project["classifiers"]), re.M)
    assert classified == tested
    assert "mkdocs build --strict" in ci and "mypy --strict eventstore" in ci
