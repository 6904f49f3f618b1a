"""A griffe extension for the docs site (mkdocs.yml loads it): the docstrings
use Sphinx roles (``:class:`StoreClosed```), which mkdocstrings would print
literally; this turns each into inline code (`StoreClosed`)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
