"""eventstore: an embedded event-sourcing store (LevelDB hot tier, ESDB cold tier).

Installed as the distribution ``tiered-eventstore``. What it promises is in
docs/guarantees.md; the reference is the docs site (mkdocs.yml).
"""

# The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

from .aggregates import (
    Aggregate,
    AggregateNotFound,
    Repository,
    UnknownEventType,
    applies,
    retry_on_conflict,
    with_retries,
)
from .errors import (
    ConditionFailed,
    CorruptFile,
    EventStoreError,
    StoreLocked,
    WrongExpectedVersion,
)
from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendCondition,
    AppendResult,
    Event,
    Expected,
    ExpectedVersion,
    NewEvent,
    Query,
    QueryItem,
    Snapshot,
)
from .store import EventStore
from .subscriptions import Projection, Subscription
from .tiering import CompactResult

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateNotFound",
    "AppendCondition",
    "AppendResult",
    "CompactResult",
    "ConditionFailed",
    "CorruptFile",
    "Event",
    "EventStore",
    "EventStoreError",
    "Expected",
    "ExpectedVersion",
    "NewEvent",
    "Projection",
    "Query",
    "QueryItem",
    "Repository",
    "Snapshot",
    "StoreLocked",
    "Subscription",
    "UnknownEventType",
    "WrongExpectedVersion",
    "applies",
    "retry_on_conflict",
    "with_retries",
]
