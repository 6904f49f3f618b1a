"""eventstore: an embedded event-sourcing store (LevelDB hot tier, ESDB cold tier)."""

from .errors import (
    CorruptFile,
    EventStoreError,
    StoreLocked,
    WrongExpectedVersion,
)
from .events import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, Event, NewEvent
from .store import EventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "CorruptFile",
    "Event",
    "EventStore",
    "EventStoreError",
    "NewEvent",
    "StoreLocked",
    "WrongExpectedVersion",
]
