"""Hypothesis strategies shared by the tests: names, payloads, new events."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from eventstore import NewEvent
from eventstore.events import QueryItem

# Names: valid text without NUL, including non-ASCII and separator-like bytes.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)

# Anything msgpack carries and gives back equal (no tuples: they come back as lists).
payloads: st.SearchStrategy[Any] = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=5,
)

event_types = st.sampled_from(["Created", "Renamed", "Paid", "Shipped", "Ünïcode"])
TAGS = ["course:7", "student:42", "ç:1", "z"]

# A query: items of types and tags (DCB, eventstore/dcb.py).
query_items = st.lists(
    st.builds(
        QueryItem,
        st.lists(event_types, max_size=2),
        st.lists(st.sampled_from(TAGS), max_size=2),
    ),
    max_size=3,
)


@st.composite
def new_events(draw: st.DrawFn, max_size: int = 4, tags: bool = False) -> list[NewEvent]:
    """Up to ``max_size`` events; with ``tags``, some carry tags of TAGS."""
    count = draw(st.integers(min_value=1, max_value=max_size))
    return [
        NewEvent(
            draw(event_types),
            draw(payloads),
            metadata=draw(st.one_of(st.none(), payloads)),
            indexes=draw(
                st.one_of(
                    st.none(),
                    st.dictionaries(
                        st.sampled_from(["customer", "region"]),
                        st.sampled_from(["c1", "c2", "eu"]),
                        max_size=2,
                    ),
                )
            ),
            tags=draw(st.none() | st.lists(st.sampled_from(TAGS), max_size=3)) if tags else None,
        )
        for _ in range(count)
    ]
