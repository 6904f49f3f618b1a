"""The one place that imports a LevelDB binding.

plyvel ships wheels only for CPython 3.11 and 3.12 on Linux x86_64; its fork
plyvel-next (import name ``plyvel_next``, same API) ships them for 3.12-3.14 on
Linux x86_64/aarch64, musl, macOS and Windows. pyproject.toml picks one by
environment markers; everything else imports ``plyvel`` from here, so the
rest of the code (and tests/test_leveldb.py, which checks the behaviour the
store relies on) sees one module whichever is installed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The binding's distribution names, in order of preference: the original
# where it is installed, else the fork.
_BINDINGS = (("plyvel", "plyvel"), ("plyvel_next", "plyvel-next"))


def _load() -> tuple[ModuleType, str]:
    for module_name, distribution in _BINDINGS:
        try:
            return importlib.import_module(module_name), distribution
        except ImportError:
            continue
    raise ImportError(
        "eventstore needs a LevelDB binding: pip install plyvel (CPython 3.11) "
        "or plyvel-next (CPython 3.12+); installing tiered-eventstore picks one"
    )


# The binding module, and its distribution name ("plyvel" or "plyvel-next").
plyvel, BINDING = _load()

__all__ = ["BINDING", "plyvel"]
