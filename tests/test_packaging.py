"""The package as a user gets it: a wheel built from a copy of the checkout,
installed into a fresh venv outside it, runs the quickstart, carries the
metadata PyPI shows and type-checks a user's code under mypy --strict; and
the README's demo command and typed editable install work as written, in a
fresh copy of the checkout. Each venv reuses pip's cache, so no test here
needs more than the registry's usual packages."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from packaging.specifiers import SpecifierSet

import eventstore
from eventstore._leveldb import BINDING

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
QUICKSTART_SAYS = "order-42's payments, through the type index:"

# A user's own module: correct uses of the API, and one mistake mypy must
# report (stream_version's int returned as a str). Exactly that one error
# proves the package's types were read, not taken as Any.
USER_CODE = '''\
from eventstore import EventStore, NewEvent, NO_STREAM

def last(path: str) -> int:
    with EventStore.open(path) as store:
        store.append("s", [NewEvent("T", {"n": 1})], expected_version=NO_STREAM)
        return store.stream_version("s")

def wrong(path: str) -> str:
    with EventStore.open(path) as store:
        return store.stream_version("s")
'''


def _run(
    args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})},
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _copy_checkout(dest: Path) -> Path:
    """The project's files (tracked, or new and not ignored), without venvs or builds."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin" / "python"


def _mypy_on_user_code(python: Path, workdir: Path) -> str:
    """mypy --strict on USER_CODE against the package installed for ``python``."""
    (workdir / "user_app.py").write_text(USER_CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--python-executable", str(python), "user_app.py"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    return proc.stdout + proc.stderr


def _assert_types_were_read(report: str) -> None:
    assert "import-not-found" not in report and "import-untyped" not in report, report
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert len(errors) == 1, report
    assert re.search(r"user_app\.py:10: error: Incompatible return value type "
                     r'\(got "int", expected "str"\)', errors[0]), report


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_checkout(tmp_path_factory.mktemp("checkout"))


def test_wheel_in_a_fresh_venv_runs_the_quickstart_and_type_checks(
    checkout: Path, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), "."],
         cwd=checkout)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"tiered_eventstore-{eventstore.__version__}-py3-none-any")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(
            zf.read(f"tiered_eventstore-{eventstore.__version__}.dist-info/METADATA")
        )
    assert "eventstore/py.typed" in names and "eventstore/_leveldb.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "examples/"))]
    assert meta["Name"] == "tiered-eventstore"
    assert meta["Version"] == eventstore.__version__
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert SpecifierSet(meta["Requires-Python"]) == SpecifierSet(PROJECT["requires-python"])
    assert "Programming Language :: Python :: 3.13" in meta.get_all("Classifier", [])
    requires = meta.get_all("Requires-Dist", [])
    assert any(r.startswith("plyvel-next") and "python_version" in r for r in requires)

    python = _venv(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.py", user / "quickstart.py")
    proc = _run([str(python), "quickstart.py"], cwd=user, timeout=120)
    assert QUICKSTART_SAYS in proc.stdout and "refused a stale write" in proc.stdout
    where = _run(
        [str(python), "-c",
         "import eventstore, eventstore._leveldb as l; print(eventstore.__file__); "
         "print(eventstore.__version__, l.BINDING)"],
        cwd=user,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(tmp_path / "venv"), where  # not the checkout
    assert where[1] == eventstore.__version__
    assert where[2] == BINDING  # the markers pick for the wheel as for this venv
    cli = str(tmp_path / "venv" / "bin" / "eventstore")
    assert "Usage: eventstore" in _run([cli, "--help"], cwd=user).stdout
    assert _run([cli, "--version"], cwd=user).stdout.split() == [
        "eventstore,", "version", eventstore.__version__,
    ]

    _assert_types_were_read(_mypy_on_user_code(python, user))


def test_readme_demo_command_and_typed_editable_install(checkout: Path, tmp_path: Path) -> None:
    command = README.split("<!-- main-command -->", 1)[1].split("```")[1].strip()
    assert command.startswith("python3 -m venv .venv") and "quickstart.py" in command
    # The README's python3 is whichever this suite runs on (CI runs three).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (bindir / "python3").symlink_to(base)
    proc = _run(["bash", "-c", command], cwd=checkout,
                env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    assert QUICKSTART_SAYS in proc.stdout

    typed = README.split("<!-- typed-install -->", 1)[1].split("```")[1].strip()
    assert typed.startswith("pip install -e . ")
    venv_pip = checkout / ".venv" / "bin" / "pip"
    _run(["bash", "-c", f"{venv_pip} {typed.removeprefix('pip ')} -q"], cwd=checkout)
    user = tmp_path / "user"
    user.mkdir()
    _assert_types_were_read(_mypy_on_user_code(checkout / ".venv" / "bin" / "python", user))


def _doc_mentions(text: str) -> set[str]:
    return set(re.findall(r"\bdocs/[\w./-]*\w\.md\b", text))


def _help_texts(command: click.Command, ctx: click.Context) -> Iterator[str]:
    yield command.get_help(ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _help_texts(sub, click.Context(sub, info_name=name, parent=ctx))


def test_the_sdist_ships_every_doc_that_help_texts_and_docstrings_point_at(
    checkout: Path, tmp_path: Path
) -> None:
    _run([sys.executable, "-m", "build", "--sdist", "-o", str(tmp_path)], cwd=checkout)
    (sdist,) = tmp_path.glob("tiered_eventstore-*.tar.gz")
    with tarfile.open(sdist) as tf:
        shipped = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "docs/guarantees.md", "examples/quickstart.py",
            "conformance/README.md", "tests/test_conformance.py"} <= shipped

    from eventstore.cli import main

    helps = list(_help_texts(main, click.Context(main, info_name="eventstore")))
    assert len(helps) > 10  # every command, the esdb group's too
    pointed = set().union(*map(_doc_mentions, helps))
    assert "docs/cli.md" in pointed
    for module in (ROOT / "eventstore").rglob("*.py"):
        pointed |= _doc_mentions(module.read_text())
    missing = sorted(p for p in pointed if p not in shipped or not (ROOT / p).is_file())
    assert not missing, f"help texts or docstrings point at docs that do not ship: {missing}"
