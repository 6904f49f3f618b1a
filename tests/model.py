"""A plain in-memory model of an event store: what every read must return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventstore import ANY, NO_STREAM, STREAM_EXISTS, Event
from eventstore.events import QueryItem


def matches(event: Event, items: list[QueryItem]) -> bool:
    """The DCB rule, spelled out: any item whose types (if any) hold the
    event's type and whose tags the event all carries; no items: every event."""
    if not items:
        return True
    return any(
        (not item.types or event.type in item.types) and set(item.tags) <= set(event.tags)
        for item in items
    )


def stored_tags(tags: Any) -> tuple[str, ...]:
    """Tags as the store keeps them: distinct, sorted by UTF-8 bytes."""
    return tuple(sorted(set(tags or ()), key=str.encode))


@dataclass
class Model:
    streams: dict[str, list[Event]] = field(default_factory=dict)
    log: list[Event] = field(default_factory=list)

    def version(self, stream: str) -> int:
        return len(self.streams.get(stream, ())) - 1

    def accepts(self, stream: str, expected: Any) -> bool:
        current = self.version(stream)
        if expected is ANY:
            return True
        if expected is NO_STREAM:
            return current == -1
        if expected is STREAM_EXISTS:
            return current >= 0
        return bool(expected == current)

    def record(self, events: list[Event]) -> None:
        for event in events:
            self.streams.setdefault(event.stream, []).append(event)
            self.log.append(event)

    def read_stream(
        self, stream: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Event]:
        events = self.streams.get(stream, [])
        if backwards:
            start = len(events) - 1 if from_version is None else min(from_version, len(events) - 1)
            out = [events[v] for v in range(start, -1, -1)]
        else:
            out = events[from_version or 0 :]
        return out if limit is None else out[:limit]

    def read_index(
        self, stream: str, name: str, value: str, backwards: bool, limit: int | None
    ) -> list[Event]:
        out = [
            e
            for e in self.streams.get(stream, [])
            if (e.type == value if name == "type" else e.indexes.get(name) == value)
        ]
        if backwards:
            out.reverse()
        return out if limit is None else out[:limit]

    def read_all(
        self,
        after: Any,
        backwards: bool,
        limit: int | None,
        types: list[str] | None,
        prefix: str | None,
    ) -> list[Event]:
        out = list(self.log)
        if after is not None:
            out = [e for e in out if (e.id < after if backwards else e.id > after)]
        if backwards:
            out.reverse()
        if types is not None:
            out = [e for e in out if e.type in types]
        if prefix is not None:
            out = [e for e in out if e.stream.startswith(prefix)]
        return out if limit is None else out[:limit]

    def query(
        self, items: list[QueryItem], after: int | None, backwards: bool, limit: int | None
    ) -> list[Event]:
        out = [e for e in self.log if (after is None or e.seq > after) and matches(e, items)]
        if backwards:
            out.reverse()
        return out if limit is None else out[:limit]

    def get(self, event_id: Any) -> Event | None:
        for event in self.log:
            if event.id == event_id:
                return event
        return None
