"""Queries over types and tags (DCB: docs/dcb.md): validation and matching.

A :class:`~eventstore.events.Query` is checked once into a :class:`Plan`:
plain text and frozensets, so matching an event is a few set operations,
and both tiers and the writer (conditional appends) match the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .errors import InvalidArgument, InvalidType
from .events import Event, Query, QueryItem
from .records import check_tags, name_bytes, plain_name


class Item(NamedTuple):
    """One checked :class:`QueryItem`: ``types`` None for any type; ``tags``
    sorted (by UTF-8 bytes) and distinct; ``tags_b`` their bytes."""

    types: frozenset[str] | None
    tags: tuple[str, ...]
    tags_b: tuple[bytes, ...]
    tag_set: frozenset[str]

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        if self.types is not None and type_ not in self.types:
            return False
        return not self.tag_set or self.tag_set.issubset(tags)


class Plan:
    """A checked query. ``items`` empty means every event matches (so does
    an item with neither types nor tags: ``everything``). ``tagged`` says
    whether every item names a tag: then the tag index answers it, otherwise
    the global log is scanned (filtered by ``scan_types`` when every item
    names types)."""

    __slots__ = ("everything", "items", "query", "scan_types", "tagged")

    def __init__(self, items: tuple[Item, ...]) -> None:
        self.items = items
        # The checked query as archive files take it: plain QueryItems.
        self.query = Query(tuple(QueryItem(tuple(i.types or ()), i.tags) for i in items))
        self.everything = not items or any(i.types is None and not i.tags for i in items)
        self.tagged = not self.everything and all(i.tags for i in items)
        scan: frozenset[str] | None = None
        if not self.everything and all(i.types is not None for i in items):
            scan = frozenset().union(*(i.types for i in items if i.types is not None))
        self.scan_types = scan

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        if self.everything:
            return True
        if not isinstance(tags, (tuple, frozenset, set)):
            tags = tuple(tags)
        return any(item.matches(type_, tags) for item in self.items)

    def matches_event(self, event: Event) -> bool:
        return self.matches(event.type, event.tags)


def check_item(item: object, n: int) -> Item:
    if not isinstance(item, QueryItem):
        raise InvalidType(f"query item {n} must be a QueryItem, got {type(item).__name__}")
    types_, tags = tuple.__getitem__(item, 0), tuple.__getitem__(item, 1)
    if isinstance(types_, (str, bytes)) or not isinstance(types_, (Sequence, set, frozenset)):
        raise InvalidType(
            f"types of query item {n} must be a sequence of str, got {type(types_).__name__}"
        )
    plain_types = []
    for type_ in types_:
        type_ = plain_name(type_, "event type")
        name_bytes(type_, "event type")
        plain_types.append(type_)
    checked_tags = check_tags(tags)
    return Item(
        frozenset(plain_types) if plain_types else None,
        checked_tags,
        tuple(t.encode() for t in checked_tags),
        frozenset(checked_tags),
    )


# Plans of queries made of plain lists/tuples of exact strs, by value: a
# decision loop asks the same query again and again, and checking it anew
# cost a fifth of a conditional append. Keys hold only exact strs, so no
# caller's __hash__ or __eq__ runs; a Plan is never changed once made.
_PLANS: dict[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...], Plan] = {}
_MAX_PLANS = 512
_SEQ = (list, tuple)


def _plain_key(items: object) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] | None:
    if type(items) not in _SEQ:
        return None
    key = []
    for item in items:  # type: ignore[attr-defined]
        if type(item) is not QueryItem:
            return None
        types_, tags = tuple.__getitem__(item, 0), tuple.__getitem__(item, 1)
        if type(types_) not in _SEQ or type(tags) not in _SEQ:
            return None
        for name in (*types_, *tags):
            if type(name) is not str:
                return None
        key.append((tuple(types_), tuple(tags)))
    return tuple(key)


def plan(query: object) -> Plan:
    """``query`` (a :class:`Query` or a sequence of :class:`QueryItem`) checked.

    Raises InvalidType (not a query, an item not a QueryItem, types or tags
    not sequences), InvalidName (a type or tag empty, holding NUL, too long),
    InvalidArgument (too many tags in an item)."""
    items: object
    if isinstance(query, Query):
        items = tuple.__getitem__(query, 0)
    elif isinstance(query, QueryItem):
        raise InvalidType("a query is a Query or a list of QueryItem, not one QueryItem")
    else:
        items = query
    key = _plain_key(items)
    if key is not None:
        known = _PLANS.get(key)
        if known is not None:
            return known
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidType(
            f"a query is a Query or a sequence of QueryItem, got {type(query).__name__}"
        )
    made = Plan(tuple(check_item(item, n) for n, item in enumerate(items)))
    if key is not None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = made
    return made


def check_after(after: object, what: str = "after") -> int | None:
    """A query position: None or a seq (an int >= 0)."""
    if after is None:
        return None
    if type(after) is not int:
        raise InvalidType(f"{what} must be an int seq or None, got {type(after).__name__}")
    if after < 0:
        raise InvalidArgument(f"{what} must be a seq >= 0, got {after}")
    return after
