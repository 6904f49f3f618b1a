"""Following a store live: ``eventstore tail``."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any

import click
from ulid import ULID

from ..errors import StoreLocked
from ..events import Event
from ..store import EventStore
from .common import (
    _LOG_HEADS,
    _LOG_NUMERIC,
    check_store_path,
    json_option,
    log_row,
    looks_like_store,
    newest,
    parse_ulid,
    path_argument,
    prefix_option,
    type_option,
)
from .output import (
    Table,
    echo_json,
    event_json,
    fail,
    from_json,
    guard,
)

# -- tail ----------------------------------------------------------------------------

_NOT_SIGNALS = {"LOCK", "LOG", "LOG.old"}


def store_signature(path: str) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every file of the store but LevelDB's lock and
    info log: it changes when any process writes to the store."""
    found = []
    for folder, _dirs, files in os.walk(path):
        for name in files:
            if name in _NOT_SIGNALS:
                continue
            full = os.path.join(folder, name)
            with suppress(FileNotFoundError):
                st = os.stat(full)
                found.append((full, st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))


class _Stop(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop(128 + signum)


@click.command()
@path_argument
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Print the last N matching events first.",
)
@click.option(
    "--after",
    metavar="ULID",
    help="Print every event after this position first, instead of --lines.",
)
@type_option
@prefix_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for changes.",
)
@json_option
@guard
def tail(
    path: str,
    lines: int,
    after: str | None,
    types: tuple[str, ...],
    prefix: str | None,
    interval: float,
    as_json: bool,
) -> None:
    """Follow the global log like tail -f, until interrupted (Ctrl-C exits 130).

    The store stays closed between reads, so other processes can open it and
    append: tail watches the store's files and opens it for a moment only
    after they change. A store that `eventstore serve` holds is followed
    through the server, live. See docs/cli.md (in the source distribution).
    """
    position = None if after is None else parse_ulid(after, "--after")
    filters: dict[str, Any] = {"types": types or None, "stream_prefix": prefix}
    check_store_path(path, create=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Live rows cannot be measured in advance: start columns at typical widths.
    table = None if as_json else Table(_LOG_HEADS, _LOG_NUMERIC, min_widths=[6, 26, 23, 16, 7, 16])

    def show(ev: Event) -> None:
        if table is None:
            echo_json(event_json(ev))
        else:
            table.row(log_row(ev))

    seen: tuple[tuple[str, int, int], ...] | None = None
    locked_since: float | None = None
    try:
        first = True
        while True:
            if not looks_like_store(path):
                fail(f"store {path} went away")
            if store_signature(path) != seen:
                try:
                    store = EventStore.open(path, create=False)
                except StoreLocked:
                    followed = _follow_served(
                        path, position, lines if first else 0, filters, show,
                        table.flush if table is not None else lambda: None,
                    )
                    if followed is not None:  # the server stopped: go on without it
                        (position,) = followed
                        first, seen = False, None
                        continue
                    now = time.monotonic()
                    if locked_since is None:
                        locked_since = now
                    elif now - locked_since > 3 and locked_since > 0:
                        click.echo("tail: waiting for another process to close the store", err=True)
                        locked_since = -1.0  # said once per wait
                    time.sleep(interval)
                    continue
                locked_since = None
                try:
                    if first and position is None:
                        for ev in reversed(
                            list(store.read_all(backwards=True, limit=lines, **filters))
                        ):
                            show(ev)
                    else:
                        for ev in store.read_all(position, **filters):
                            show(ev)
                    last = newest(store)
                    position = None if last is None else last.id
                    # Taken while we hold the lock: every later change is another process's.
                    seen = store_signature(path)
                finally:
                    store.close()
                if first and table is not None:
                    table.flush()
                first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.exit(130)
    except _Stop as stop:
        sys.exit(stop.code)


def _follow_served(
    path: str,
    position: ULID | None,
    lines: int,
    filters: dict[str, Any],
    show: Callable[[Event], None],
    flush: Callable[[], None],
) -> tuple[ULID | None] | None:
    """Follow a store that `eventstore serve` holds, through its admin socket,
    until the server stops: ``(last position,)``; None if no server answers."""
    try:
        from .remote import follow
    except ImportError:  # the server extra is not installed
        return None
    types = filters["types"]
    messages = follow(
        path,
        None if position is None else str(position),
        lines,
        None if types is None else list(types),
        filters["stream_prefix"],
    )
    if messages is None:
        return None
    for message in messages:
        if "ev" in message:
            j = message["ev"]
            ev = Event(
                ULID.from_str(j["id"]), j["stream"], j["version"], j["seq"], j["type"],
                from_json(j["data"]), from_json(j["metadata"]), from_json(j["indexes"]),
                tuple(j.get("tags", ())),
            )
            show(ev)
            position = ev.id
        elif "pos" in message:
            position = ULID.from_str(message["pos"])
        elif "live" in message:
            flush()
    return (position,)


COMMANDS = [tail]
