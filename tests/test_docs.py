"""Documentation that runs: every ```python block of these pages executes, in
order, in one module per page, so the docs cannot rot."""

from __future__ import annotations

import itertools
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE_PAGES = [
    "docs/tutorial.md",
    "docs/operations.md",
    "docs/subscriptions.md",
    "docs/eventsourcing.md",
]
_runs = itertools.count(1)


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_python_block_runs(page: str) -> None:
    text = (ROOT / page).read_text()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M)
    assert blocks, f"{page} has no python blocks"
    # A real module, importable while the page runs: eventsourcing imports the
    # module of every aggregate class it sees, and finds event classes by topic
    # (a new name on each run: it refuses a second class for a known topic).
    module = types.ModuleType(f"docs_page_{Path(page).stem}_{next(_runs)}")
    sys.modules[module.__name__] = module
    try:
        for n, (indent, block) in enumerate(blocks, 1):
            source = re.sub(rf"^{indent}", "", block, flags=re.M)  # a block in a list item
            code = compile(source, f"{page} block {n}", "exec")
            exec(code, module.__dict__)  # our own documentation
    finally:
        del sys.modules[module.__name__]
