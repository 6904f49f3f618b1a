"""Handles that belong to the process that opened them.

An open store registers here; in the child of every ``os.fork()`` each one's
``_disown()`` runs, so that the child never uses the parent's LevelDB handle
or locks (see ``EventStore._disown``). A module of its own: the interpreter
keeps its fork hooks, and with them their module's globals, until its very
end, so the hook's module holds nothing else.
"""

import os
import weakref
from typing import Any

_OWNED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def own(obj: Any) -> None:
    """Call ``obj._disown()`` in the child of every later fork (while it lives)."""
    _OWNED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_OWNED):
        obj._disown()


os.register_at_fork(after_in_child=_after_fork_in_child)
