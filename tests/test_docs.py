"""Documentation that runs: every ```python block of these pages executes, in
order, in one namespace per page, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE_PAGES = ["docs/tutorial.md", "docs/operations.md"]


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_python_block_runs(page: str) -> None:
    text = (ROOT / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"{page} has no python blocks"
    namespace: dict[str, object] = {"__name__": f"docs:{page}"}
    for n, block in enumerate(blocks, 1):
        code = compile(block, f"{page} block {n}", "exec")
        exec(code, namespace)  # our own documentation
