"""Stores that `eventstore serve` holds in this process, by real path.

The commands it runs for other processes (eventstore/cli/remote.py) use
these instead of opening the store a second time.
"""

from __future__ import annotations

from ..store import EventStore

SERVED: dict[str, EventStore] = {}
