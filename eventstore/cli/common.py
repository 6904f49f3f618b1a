"""What the store commands share: opening a store (or reaching the server that
holds it), parsing options, and printing events as tables or JSON."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta

import click
from ulid import ULID

from ..errors import EventStoreError, StoreLocked, StoreNotFound
from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, Expected
from ..ids import to_ulid_bytes
from ..store import EventStore, locate_store
from .output import (
    Table,
    compact_json,
    echo_json,
    event_json,
    fail,
    human_time,
    usage,
)
from .served import SERVED

EXPORT_KIND = "eventstore-export"
# 2: removed events' places as lines of their own ({"removed": true, ...}) and
# redacted events marked ("redacted": true). Format-1 files are read as well.
EXPORT_FORMAT = 2
EXPORT_FORMATS_READ = (1, 2)

path_argument = click.argument("path", type=click.Path(file_okay=False))
json_option = click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line, for scripts."
)


# -- opening stores -----------------------------------------------------------


def looks_like_store(path: str) -> bool:
    """A folder holding a store: what ``EventStore.open(path, create=False)``
    looks for, checked without opening it (so without taking its lock)."""
    try:
        return not locate_store(path, create=False)
    except EventStoreError:
        return False


def _lock_timeout() -> float:
    ctx = click.get_current_context(silent=True)
    obj = None if ctx is None else ctx.find_root().obj
    return float(obj["lock_timeout"]) if isinstance(obj, dict) else 2.0


def check_store_path(path: str, create: bool) -> None:
    """Fail with one line, before anything is opened or made, unless ``path``
    holds a store (or, with ``create``, is missing or an empty folder): the
    store's own check (StoreNotFound, NotAStore, StoreDamaged)."""
    try:
        locate_store(path, create)
    except StoreNotFound:
        fail(f"no store at {path} (check the path; `append` and `import` make new stores)")
    except EventStoreError as exc:
        fail(str(exc))


def _forward_to_server(path: str) -> None:
    """If a server holds the store, run this command there and exit with its status."""
    try:
        from .remote import forward
    except ImportError:  # the server extra is not installed
        return
    code = forward(path)
    if code is not None:
        sys.exit(code)


@contextmanager
def opened(
    path: str, *, create: bool = False, sync: bool = False, shredding: bool = False
) -> Iterator[EventStore]:
    """The store at ``path``, open for the block; fails with one line if it is
    missing (unless ``create``), not a store, or held by another process for
    longer than ``--lock-timeout``. A store that `eventstore serve` holds is
    worked on through the server."""
    served = SERVED.get(os.path.realpath(path))
    if served is not None:
        yield served
        return
    check_store_path(path, create)
    made = not os.path.exists(path)
    deadline = time.monotonic() + _lock_timeout()
    while True:
        try:
            store = EventStore.open(path, sync=sync, create=create, shredding=shredding)
            break
        except StoreLocked:
            _forward_to_server(path)
            if time.monotonic() >= deadline:
                fail(
                    f"store {path} is open in another process (its lock is held); "
                    "stop that process, or wait longer with --lock-timeout"
                )
            time.sleep(0.02)
    try:
        yield store
    except BaseException:
        store.close()
        if made:  # a failed first write leaves no empty store behind
            shutil.rmtree(path, ignore_errors=True)
        raise
    store.close()


# -- argument parsing ------------------------------------------------------------


def parse_ulid(text: str, what: str) -> ULID:
    try:
        return ULID.from_bytes(to_ulid_bytes(text))
    except EventStoreError as exc:
        usage(f"{what}: {exc}")


def parse_expected(text: str) -> Expected:
    symbols = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}
    if text.lower() in symbols:
        return symbols[text.lower()]
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < -1:
        usage(
            f"--expected-version wants a version (-1 or more), any, no_stream or "
            f"stream_exists; got {text!r}"
        )
    return value


def parse_index(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        usage(f"--index wants NAME=VALUE, got {text!r}")
    return name, value


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str, option: str = "--older-than") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``500ms``, ``2w``, or sums like
    ``1d12h``, given to ``option`` (named in the usage error)."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        usage(f"{option} wants a duration like 30d, 12h, 90m, 45s or 1d12h; got {text!r}")
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in parts))


def parse_cutoff(text: str) -> ULID:
    """``--before``: a ULID (events with smaller ids move) or an ISO 8601 time
    (UTC when it names no zone)."""
    if len(text) == 26:
        with suppress(EventStoreError):
            return ULID.from_bytes(to_ulid_bytes(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        usage(
            f"--before wants an ISO 8601 time (2024-05-01, 2024-05-01T12:00:00+02:00) "
            f"or a ULID; got {text!r}"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        usage(f"--before {text} is before 1970")
    return ULID.from_bytes((ms << 80).to_bytes(16, "big"))


def newest(store: EventStore) -> Event | None:
    return next(store.read_all(backwards=True, limit=1), None)


# -- events out ------------------------------------------------------------------

_LOG_HEADS = ["seq", "id", "time (UTC)", "stream", "version", "type", "data"]
_LOG_NUMERIC = {0, 4}
_STREAM_HEADS = ["version", "seq", "id", "time (UTC)", "type", "data"]
_STREAM_NUMERIC = {0, 1}


def _data_cell(ev: Event) -> str:
    text = compact_json(ev.data)
    if ev.metadata is not None:
        text += f"  meta={compact_json(ev.metadata)}"
    return text


def log_row(ev: Event) -> list[str]:
    return [
        str(ev.seq),
        str(ev.id),
        human_time(ev),
        ev.stream,
        str(ev.version),
        ev.type,
        _data_cell(ev),
    ]


def stream_row(ev: Event) -> list[str]:
    return [str(ev.version), str(ev.seq), str(ev.id), human_time(ev), ev.type, _data_cell(ev)]


def print_events(
    events: Iterator[Event], as_json: bool, one_stream: bool = False, last_seq: int = 0
) -> int:
    """Events as JSON lines or a table; ``last_seq`` (the store's) sizes the
    seq and version columns, so they hold past the rows that size the rest."""
    n = 0
    if as_json:
        for ev in events:
            echo_json(event_json(ev))
            n += 1
        return n
    digits = len(str(last_seq))  # a version is below the last seq too
    if one_stream:
        table = Table(_STREAM_HEADS, _STREAM_NUMERIC, min_widths=[digits, digits])
    else:
        table = Table(_LOG_HEADS, _LOG_NUMERIC, min_widths=[digits, 0, 0, 0, digits])
    for ev in events:
        table.row(stream_row(ev) if one_stream else log_row(ev))
        n += 1
    table.flush()
    return n


type_option = click.option(
    "--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable)."
)
prefix_option = click.option(
    "--prefix", metavar="P", help="Only events of streams whose name starts with P."
)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
