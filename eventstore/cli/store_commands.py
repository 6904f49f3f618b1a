"""``eventstore append|read|get|all|tail|stats|compact|merge|export|import|backup|verify|repair``.

Every command opens the store for as long as it runs and closes it: a store
is held by one process at a time (LevelDB's lock), so these commands are for
a store no application holds open, or for moments between its runs. Opening
retries for ``--lock-timeout`` seconds, which covers ``tail``'s short reads.
docs/cli.md says more.

Expected failures print one ``error:`` line on stderr and exit 1; usage
errors exit 2; an interrupted ``tail`` exits 130.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from types import FrameType
from typing import IO, Any

import click
from ulid import ULID

from ..archive import ARCHIVE_DIR
from ..errors import CorruptFile, EventStoreError, InvalidArgument, StoreLocked, StoreNotFound
from ..esdb import ESDBReader
from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, Expected, NewEvent
from ..ids import check_importable, to_ulid_bytes
from ..store import DEFAULT_IMPORT_CLOCK_TOLERANCE, EventStore, locate_store
from .output import (
    BadJSON,
    Table,
    compact_json,
    echo_json,
    event_json,
    fail,
    from_json,
    guard,
    human_bytes,
    human_time,
    parse_json,
    print_fields,
    progress_bar,
)

EXPORT_KIND = "eventstore-export"
EXPORT_FORMAT = 1

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


# Stores that `eventstore serve` holds, by real path: the commands it runs for
# other processes (eventstore/server/admin.py) use these instead of opening.
SERVED: dict[str, EventStore] = {}


def _forward_to_server(path: str) -> None:
    """If a server holds the store, run this command there and exit with its status."""
    try:
        from ..server.admin import forward
    except ImportError:  # the server extra is not installed
        return
    code = forward(path)
    if code is not None:
        sys.exit(code)


@contextmanager
def opened(path: str, *, create: bool = False, sync: bool = False) -> Iterator[EventStore]:
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
            store = EventStore.open(path, sync=sync, create=create)
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
        raise InvalidArgument(f"{what}: {exc}") from None


def parse_expected(text: str) -> Expected:
    symbols = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}
    if text.lower() in symbols:
        return symbols[text.lower()]
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < -1:
        raise InvalidArgument(
            f"--expected-version wants a version (-1 or more), any, no_stream or "
            f"stream_exists; got {text!r}"
        )
    return value


def parse_index(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise InvalidArgument(f"--index wants NAME=VALUE, got {text!r}")
    return name, value


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``500ms``, ``2w``, or sums like ``1d12h``."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise InvalidArgument(
            f"--older-than wants a duration like 30d, 12h, 90m, 45s or 1d12h; got {text!r}"
        )
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in parts))


def parse_cutoff(text: str) -> ULID:
    """``--before``: a ULID (events with smaller ids move) or an ISO 8601 time
    (UTC when it names no zone)."""
    if len(text) == 26:
        with suppress(EventStoreError):
            return parse_ulid(text, "--before")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"--before wants an ISO 8601 time (2024-05-01, 2024-05-01T12:00:00+02:00) "
            f"or a ULID; got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise InvalidArgument(f"--before {text} is before 1970")
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


def print_events(events: Iterator[Event], as_json: bool, one_stream: bool = False) -> int:
    n = 0
    if as_json:
        for ev in events:
            echo_json(event_json(ev))
            n += 1
        return n
    table = Table(_STREAM_HEADS, _STREAM_NUMERIC) if one_stream else Table(_LOG_HEADS, _LOG_NUMERIC)
    for ev in events:
        table.row(stream_row(ev) if one_stream else log_row(ev))
        n += 1
    table.flush()
    return n


# -- append, read, get, all ---------------------------------------------------------


@click.command()
@path_argument
@click.argument("stream")
@click.argument("type_", metavar="TYPE")
@click.option(
    "--data",
    default="null",
    show_default=True,
    metavar="JSON",
    help='Event data as JSON; bytes as {"$bytes": "<base64>"}; "-" reads stdin.',
)
@click.option("--metadata", default=None, metavar="JSON", help="Event metadata as JSON.")
@click.option(
    "--expected-version",
    "-e",
    default="any",
    show_default=True,
    metavar="N|any|no_stream|stream_exists",
    help="Append only if the stream is at this version.",
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    metavar="NAME=VALUE",
    help="File the event under this secondary index of its stream (repeatable).",
)
@click.option(
    "--no-sync",
    is_flag=True,
    help="Skip the fsync: survives a crash of this process, not a power loss.",
)
@json_option
@guard
def append(
    path: str,
    stream: str,
    type_: str,
    data: str,
    metadata: str | None,
    expected_version: str,
    indexes: tuple[str, ...],
    no_sync: bool,
    as_json: bool,
) -> None:
    """Append one event to STREAM (creating the store if PATH does not exist)."""
    if data == "-":
        data = sys.stdin.read()
    event = NewEvent(
        type_,
        parse_json(data, "--data"),
        None if metadata is None else parse_json(metadata, "--metadata"),
        dict(parse_index(i) for i in indexes) or None,
    )
    expected = parse_expected(expected_version)
    with opened(path, create=True, sync=not no_sync) as store:
        result = store.append(stream, [event], expected_version=expected)
    if as_json:
        echo_json(
            {
                "stream": stream,
                "type": type_,
                "id": str(result.ids[0]),
                "version": result.first_version,
                "seq": result.first_seq,
            }
        )
    else:
        click.echo(
            f"appended {type_} to {stream} at version {result.first_version} "
            f"(seq {result.first_seq}, id {result.ids[0]})"
        )


@click.command()
@path_argument
@click.argument("stream")
@click.option(
    "--from",
    "from_version",
    type=click.IntRange(min=0),
    metavar="N",
    help="Start at this version (going down from it with --backwards).",
)
@click.option("--backwards", is_flag=True, help="Newest first.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N events.")
@click.option("--index", metavar="NAME=VALUE", help="Only the events under this index.")
@json_option
@guard
def read(
    path: str,
    stream: str,
    from_version: int | None,
    backwards: bool,
    limit: int | None,
    index: str | None,
    as_json: bool,
) -> None:
    """Print one stream's events in order."""
    pair = None if index is None else parse_index(index)
    with opened(path) as store:
        if store.stream_version(stream) < 0:
            fail(f"stream {stream!r} does not exist in {path}")
        if pair is None:
            events = store.read_stream(stream, from_version, backwards, limit)
        else:
            events = store.read_index(stream, pair[0], pair[1], backwards)
            if from_version is not None:
                start = from_version
                events = (
                    e for e in events if (e.version <= start if backwards else e.version >= start)
                )
            events = _take(events, limit)
        print_events(events, as_json, one_stream=True)


def _take(events: Iterator[Event], limit: int | None) -> Iterator[Event]:
    for n, ev in enumerate(events):
        if limit is not None and n >= limit:
            return
        yield ev


@click.command()
@path_argument
@click.argument("event_id", metavar="ULID")
@json_option
@guard
def get(path: str, event_id: str, as_json: bool) -> None:
    """Print the event with this id."""
    ulid = parse_ulid(event_id, "ULID")
    with opened(path) as store:
        ev = store.get(ulid)
    if ev is None:
        fail(f"no event with id {ulid} in {path}")
    if as_json:
        echo_json(event_json(ev))
        return
    print_fields(
        [
            ("id", ev.id),
            ("stream", ev.stream),
            ("version", ev.version),
            ("seq", ev.seq),
            ("type", ev.type),
            ("time", ev.timestamp.isoformat()),
            ("data", compact_json(ev.data)),
            ("metadata", compact_json(ev.metadata)),
            ("indexes", compact_json(ev.indexes)),
        ]
    )


type_option = click.option(
    "--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable)."
)
prefix_option = click.option(
    "--prefix", metavar="P", help="Only events of streams whose name starts with P."
)


@click.command("all")
@path_argument
@click.option("--after", metavar="ULID", help="Start after this position (an event id).")
@click.option(
    "--from-seq",
    type=click.IntRange(min=1),
    metavar="N",
    help="Start at this global sequence number.",
)
@type_option
@prefix_option
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N events.")
@click.option("--backwards", is_flag=True, help="Newest first (before --after, if given).")
@json_option
@guard
def all_events(
    path: str,
    after: str | None,
    from_seq: int | None,
    types: tuple[str, ...],
    prefix: str | None,
    limit: int | None,
    backwards: bool,
    as_json: bool,
) -> None:
    """Print the global log in commit order."""
    position = None if after is None else parse_ulid(after, "--after")
    with opened(path) as store:
        events = store.read_all(
            position, backwards, limit, types or None, prefix, from_seq=from_seq
        )
        print_events(events, as_json)


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
    after they change. See docs/cli.md (in the source distribution).
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


# -- stats -------------------------------------------------------------------------------


@dataclass
class ArchiveInfo:
    name: str
    events: int
    first_id: str
    last_id: str
    first_seq: int
    last_seq: int
    bytes: int


@dataclass
class StoreStats:
    path: str
    events: int
    hot_events: int
    cold_events: int
    streams: int
    first_id: str | None
    last_id: str | None
    last_cold_id: str | None
    watermark: str | None
    hot_bytes: int
    archive_bytes: int
    files: list[ArchiveInfo] = field(default_factory=list)
    # Files in archive/ the store does not name, left alone at open: "name (why)".
    unexpected_files: list[str] = field(default_factory=list)


def folder_bytes(path: str) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def archive_paths(store: EventStore) -> list[str]:
    """The store's archive files: those its manifest names (checked at open).
    Other files in the folder are left alone (``store.unexpected_files``)."""
    return [info.path for info in store.archive_files()]


def unexpected_lines(store: EventStore) -> list[str]:
    """One line per file in archive/ that the store does not name and left alone."""
    return [
        f"left alone: {os.path.join(store.path, ARCHIVE_DIR, u.name)} ({u.reason})"
        for u in store.unexpected_files
    ]


def archive_infos(store: EventStore, streams: set[str] | None = None) -> list[ArchiveInfo]:
    """The store's archive files in id order; adds the streams they hold to ``streams``."""
    files = []
    for file in archive_paths(store):
        with ESDBReader(file) as r:
            m = r.meta
            if m.first_ulid is None or m.last_ulid is None:
                continue
            files.append(
                ArchiveInfo(
                    os.path.basename(file),
                    m.event_count,
                    str(m.first_ulid),
                    str(m.last_ulid),
                    m.first_seq,
                    m.last_seq,
                    m.file_size,
                )
            )
            if streams is not None:
                streams.update(sp.stream for sp in r.spaces())
    files.sort(key=lambda f: f.first_id)
    return files


def store_stats(store: EventStore) -> StoreStats:
    """What ``stats`` shows: ``store.stats()`` (counters kept with every
    commit) and the manifest, so its cost does not grow with the events;
    the sizes on disk walk the store's folders."""
    counts = store.stats()
    files = [
        ArchiveInfo(
            os.path.basename(f.path),
            f.events,
            str(f.first_id),
            str(f.last_id),
            f.first_seq,
            f.last_seq,
            f.bytes,
        )
        for f in store.archive_files()
    ]
    last_cold = files[-1].last_id if files else None
    first = next(store.read_all(limit=1), None)
    last = newest(store)
    archive_bytes = folder_bytes(os.path.join(store.path, ARCHIVE_DIR))
    return StoreStats(
        path=store.path,
        events=counts.last_seq,
        hot_events=counts.hot_events,
        cold_events=counts.cold_events,
        streams=counts.streams,
        first_id=None if first is None else str(first.id),
        last_id=None if last is None else str(last.id),
        last_cold_id=last_cold,
        watermark=None if counts.watermark is None else str(counts.watermark),
        hot_bytes=folder_bytes(store.path) - archive_bytes,
        archive_bytes=archive_bytes,
        files=files,
        unexpected_files=[f"{u.name} ({u.reason})" for u in store.unexpected_files],
    )


@click.command()
@path_argument
@json_option
@guard
def stats(path: str, as_json: bool) -> None:
    """Event counts per tier, sizes on disk, archive files, streams."""
    with opened(path) as store:
        s = store_stats(store)
        left_alone = unexpected_lines(store)
    if as_json:
        head = asdict(s)
        del head["files"]
        echo_json({"kind": "store", **head})
        for f in s.files:
            echo_json({"kind": "file", **asdict(f)})
        return
    print_fields(
        [
            ("store", s.path),
            ("events", f"{s.events:,} (hot {s.hot_events:,}, cold {s.cold_events:,})"),
            ("streams", f"{s.streams:,}"),
            ("ids", f"{s.first_id or '-'} .. {s.last_id or '-'}"),
            ("cold up to", s.last_cold_id or "- (nothing compacted)"),
            ("hot on disk", human_bytes(s.hot_bytes)),
            (
                "archive on disk",
                f"{human_bytes(s.archive_bytes)} in {_plural(len(s.files), 'file')}",
            ),
        ]
    )
    if s.files:
        click.echo("")
        table = Table(["file", "events", "seq", "first id", "last id", "size"], {1, 5})
        for f in s.files:
            table.row(
                [
                    f.name,
                    f"{f.events:,}",
                    f"{f.first_seq}..{f.last_seq}",
                    f.first_id,
                    f.last_id,
                    human_bytes(f.bytes),
                ]
            )
        table.flush()
    for line in left_alone:
        click.echo(line)


# -- compact, merge ------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _stay(hot: int) -> str:
    return f"{_plural(hot, 'event')} {'stays' if hot == 1 else 'stay'} hot"


@click.command()
@path_argument
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Move events older than this: 30d, 12h, 90m, 45s, 1d12h.",
)
@click.option(
    "--before",
    metavar="TIME|ULID",
    help="Move events before this ISO 8601 time (UTC if no zone) or ULID.",
)
@click.option(
    "--max-file-events",
    type=click.IntRange(min=1),
    metavar="N",
    help="Split into files of at most N events.",
)
@json_option
@guard
def compact(
    path: str,
    older_than: str | None,
    before: str | None,
    max_file_events: int | None,
    as_json: bool,
) -> None:
    """Move cold events from LevelDB into immutable ESDB files."""
    if (older_than is None) == (before is None):
        raise InvalidArgument("give exactly one of --older-than or --before")
    if older_than is not None:
        age_ms = int(parse_duration(older_than) / timedelta(milliseconds=1))
        ms = time.time_ns() // 1_000_000 - age_ms
        cutoff = ULID.from_bytes((max(ms, 0) << 80).to_bytes(16, "big"))
    else:
        cutoff = parse_cutoff(before or "")
    options: dict[str, Any] = {}
    if max_file_events is not None:
        options["max_file_events"] = max_file_events
    with opened(path) as store:
        cold_seq = max((f.last_seq for f in archive_infos(store)), default=0)
        below = next(store.read_all(after=cutoff, backwards=True, limit=1), None)
        todo = max(0, (0 if below is None else below.seq) - cold_seq)
        with progress_bar(todo, "compacting") as advance:
            result = store.compact(before=cutoff, progress=advance, **options)
        hot_left = store.last_seq - cold_seq - result.events
    first_seq = cold_seq + 1
    last_seq = cold_seq + result.events
    if as_json:
        echo_json(
            {
                "events": result.events,
                "files": result.files,
                "bytes": result.bytes,
                "seconds": round(result.seconds, 3),
                "cutoff": str(cutoff),
                "first_seq": first_seq if result.events else None,
                "last_seq": last_seq if result.events else None,
                "hot_events": hot_left,
            }
        )
    elif result.events == 0:
        click.echo(f"nothing to compact before {cutoff.datetime.isoformat()}; {_stay(hot_left)}")
    else:
        click.echo(
            f"compacted {_plural(result.events, 'event')} (seq {first_seq}..{last_seq}) "
            f"into {_plural(len(result.files), 'file')}, {human_bytes(result.bytes)}, "
            f"in {result.seconds:.2f} s; {_stay(hot_left)}"
        )


@click.command()
@path_argument
@click.option(
    "--max-events",
    type=click.IntRange(min=1),
    metavar="N",
    help="Merged files hold at most N events.",
)
@json_option
@guard
def merge(path: str, max_events: int | None, as_json: bool) -> None:
    """Fold adjacent archive files into fewer, larger ones."""
    options: dict[str, Any] = {} if max_events is None else {"max_events": max_events}
    with opened(path) as store:
        before = len(archive_paths(store))
        result = store.merge_archives(**options)
        after = len(archive_paths(store))
    if as_json:
        echo_json(
            {
                "files_before": before,
                "files_after": after,
                "events": result.events,
                "files": result.files,
                "bytes": result.bytes,
                "seconds": round(result.seconds, 3),
            }
        )
    elif not result.files:
        click.echo(f"nothing to merge; {_plural(after, 'archive file')}")
    else:
        click.echo(
            f"merged {before - after + len(result.files)} files into "
            f"{len(result.files)} ({_plural(result.events, 'event')}, "
            f"{human_bytes(result.bytes)}) in {result.seconds:.2f} s; "
            f"{_plural(after, 'archive file')} now"
        )


# -- export, import --------------------------------------------------------------------------


@click.command()
@path_argument
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--after", metavar="ULID", help="Only events after this position.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@guard
def export(path: str, file: str, after: str | None, force: bool) -> None:
    """Write events to FILE as JSON lines ("-": stdout), losslessly."""
    position = None if after is None else parse_ulid(after, "--after")
    if file != "-" and os.path.exists(file) and not force:
        fail(f"{file} exists; pass --force to overwrite it")
    with opened(path) as store:
        first = next(store.read_all(position, limit=1), None)
        total = 0 if first is None else store.last_seq - first.seq + 1
        header = {
            "kind": EXPORT_KIND,
            "format": EXPORT_FORMAT,
            "events": total,
            "after": None if position is None else str(position),
            "first_seq": None if first is None else first.seq,
            "last_seq": None if first is None else store.last_seq,
            "exported": datetime.now(UTC).isoformat(),
        }
        if file == "-":
            n = _write_export(sys.stdout, header, store.read_all(position), total)
            return
        # A temporary name nobody can predict, created exclusively (mkstemp:
        # O_CREAT|O_EXCL, so never through a symlink planted beside FILE).
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(file) + ".", suffix=".tmp", dir=os.path.dirname(file) or "."
        )
        try:
            mask = os.umask(0)  # the mode open() would have given the file
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
            with open(fd, "w", encoding="utf-8") as out:
                n = _write_export(out, header, store.read_all(position), total)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, file)
        finally:
            with suppress(FileNotFoundError):
                os.remove(tmp)
    click.echo(f"exported {_plural(n, 'event')} to {file}")


def _write_export(out: IO[str], header: dict[str, Any], events: Iterator[Event], total: int) -> int:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out.write(dumps(header) + "\n")
    n = 0
    with progress_bar(total, "exporting") as advance:
        for ev in events:
            out.write(dumps(event_json(ev)) + "\n")
            n += 1
            advance(1)
    return n


class ImportFileError(EventStoreError, ValueError):
    """A line of an import file that is not an event, or not the next event."""


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if type(value) is not kind:
        shown = "missing" if name not in obj else f"a {type(value).__name__}"
        raise ImportFileError(f"{where}: field {name!r} should be a {kind.__name__}, is {shown}")
    return value


def parse_event_line(line: str, where: str) -> Event | None:
    """The event on one line of an export; None for the header line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ImportFileError(f"{where}: expected a JSON object")
    if "kind" in obj:
        if obj.get("kind") != EXPORT_KIND:
            raise ImportFileError(f"{where}: not an event or an {EXPORT_KIND} header")
        if obj.get("format") != EXPORT_FORMAT:
            raise ImportFileError(
                f"{where}: export format {obj.get('format')!r}; this "
                f"eventstore reads format {EXPORT_FORMAT}"
            )
        return None
    try:
        event_id = ULID.from_bytes(to_ulid_bytes(_field(obj, "id", str, where)))
        indexes = from_json(obj.get("indexes", {}))
        if not isinstance(indexes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in indexes.items()
        ):
            raise ImportFileError(f"{where}: indexes should map names to str values")
        return Event(
            event_id,
            _field(obj, "stream", str, where),
            _field(obj, "version", int, where),
            _field(obj, "seq", int, where),
            _field(obj, "type", str, where),
            from_json(obj.get("data")),
            from_json(obj.get("metadata")),
            indexes,
        )
    except (BadJSON, EventStoreError) as exc:
        if isinstance(exc, ImportFileError):
            raise
        raise ImportFileError(f"{where}: {exc}") from None


def read_export(file: str, advance: Callable[[int], None]) -> Iterator[tuple[str, Event]]:
    """The events of an export file, one line at a time, each with where it is."""
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            advance(len(raw))
            where = f"{file} line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportFileError(f"{where}: not UTF-8") from None
            if not line.strip():
                continue
            ev = parse_event_line(line, where)
            if ev is None:
                if n != 1:
                    raise ImportFileError(f"{where}: a header line after the first line")
                continue
            yield where, ev


def _same(stored: Event | None, ev: Event) -> bool:
    """The stored event is the file's (compared as JSON: NaN payloads too)."""
    return stored is not None and event_json(stored) == event_json(ev)


def check_import(
    store: EventStore, file: str, tolerance: timedelta = DEFAULT_IMPORT_CLOCK_TOLERANCE
) -> tuple[int, int]:
    """Read the whole file once before writing anything: every line an event,
    ids strictly increasing and above the store's newest, seq continuing the
    store's gap-free, versions dense per stream. Returns the event count and
    how many of them lead the file and are in the store already, each equal
    (an import cut short, by a full disk say: the rerun resumes after them)."""
    top = newest(store)
    prev = None if top is None else top.id.bytes
    seq = store.last_seq
    versions: dict[str, int] = {}
    n = done = 0
    with progress_bar(os.path.getsize(file), "checking ") as advance:
        for where, ev in read_export(file, advance):
            if n == done and ev.seq <= store.last_seq and _same(store.get(ev.id), ev):
                # Imported before: its place in the log was checked then.
                done += 1
                n += 1
                continue
            if prev is not None and ev.id.bytes <= prev:
                if n == 0:
                    raise ImportFileError(
                        f"{file} starts at id {ev.id}, but {store.path} already holds events "
                        f"up to id {top.id if top else '?'} (seq {seq}); import only adds "
                        "events newer than the store's newest"
                    )
                raise ImportFileError(f"{where}: id {ev.id} is not above the previous line's")
            if ev.seq != seq + 1:
                if n == 0:
                    raise ImportFileError(
                        f"{file} starts at seq {ev.seq}, but the next seq of {store.path} is "
                        f"{seq + 1} (seq must continue without gaps)"
                    )
                raise ImportFileError(f"{where}: seq {ev.seq} after seq {seq}")
            version = versions.get(ev.stream)
            if version is None:
                version = store.stream_version(ev.stream)
            if ev.version != version + 1:
                raise ImportFileError(
                    f"{where}: stream {ev.stream!r} version {ev.version}, expected {version + 1}"
                )
            versions[ev.stream] = ev.version
            prev, seq = ev.id.bytes, ev.seq
            n += 1
    if prev is not None and n:  # ids increase: the last is the one that could pin the clock
        now_ms = time.time_ns() // 1_000_000
        check_importable(
            int.from_bytes(prev, "big"), now_ms, tolerance // timedelta(milliseconds=1)
        )
    return n, done


@click.command("import")
@path_argument
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--clock-tolerance",
    type=click.FloatRange(min=0),
    default=DEFAULT_IMPORT_CLOCK_TOLERANCE.total_seconds(),
    show_default=True,
    help="Seconds an event's id may be timed after this machine's clock.",
)
@guard
def import_(path: str, file: str, clock_tolerance: float) -> None:
    """Add the events of an export FILE to a store, with their ids and seqs.

    The file is checked whole before anything is written. The store may be
    new or hold only events older than the file's. Ids timed further ahead
    of the clock than --clock-tolerance are refused: every later id of the
    store would be made after them. An import cut short (a full disk) leaves
    whole batches; run it again and it resumes after the events already in
    the store, each compared with the file's.
    """
    tolerance = timedelta(seconds=clock_tolerance)
    with opened(path, create=True, sync=True) as store:
        n, done = check_import(store, file, tolerance)
        if n == 0:
            click.echo(f"nothing to import: {file} holds no events")
            return
        if done == n:
            click.echo(f"nothing to import: every event of {file} ({n:,}) is in the store already")
            return
        if not hasattr(store, "import_events"):
            fail(
                "import needs EventStore.import_events(), which this eventstore lacks "
                "(the file checked out: nothing was written)"
            )
        with progress_bar(os.path.getsize(file), "importing") as advance:
            store.import_events(
                islice((ev for _, ev in read_export(file, advance)), done, None),
                clock_tolerance=tolerance,
            )
        last = store.last_seq
    resumed = f" (resumed: the first {done:,} were in the store already)" if done else ""
    click.echo(f"imported {_plural(n - done, 'event')} from {file}{resumed}; seq now {last}")


# -- backup, verify ----------------------------------------------------------------------------


@click.command()
@path_argument
@click.argument("dest", type=click.Path(file_okay=False))
@json_option
@guard
def backup(path: str, dest: str, as_json: bool) -> None:
    """Copy the store to DEST (a new folder), consistently; verify it with `verify DEST`."""
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        fail(f"{dest} exists and is not an empty folder")
    with opened(path) as store:
        if not hasattr(store, "backup"):
            fail("backup needs EventStore.backup(), which this eventstore lacks")
        result = store.backup(dest)
    if as_json:
        echo_json(
            {
                "dest": dest,
                "events": result.events,
                "files": result.files,
                "linked": result.linked,
                "bytes": result.bytes,
                "seconds": round(result.seconds, 3),
            }
        )
    else:
        click.echo(
            f"backed up {_plural(result.events, 'event')} to {dest}: "
            f"{_plural(result.files, 'archive file')} ({result.linked} hard-linked), "
            f"{human_bytes(result.bytes)} in {result.seconds:.2f} s"
        )


class VerifyFailed(EventStoreError):
    """The store is not what its layout promises."""


def _appended_after(events: Iterator[Event], seq: int) -> bool:
    first = next(events, None)
    return first is not None and first.seq > seq


def verify_public(store: EventStore, advance: Callable[[int], None]) -> dict[str, Any]:
    """Check a store through public reads: every archive file's checksums and
    ranges, and the global log (seq gap-free from 1, ids strictly increasing,
    versions dense per stream, matching each stream's version).

    TODO(store API): ``store.verify()`` also checks the manifest against the
    files and the hot keys against the layout; used when it exists.
    """
    files = archive_infos(store)
    expect = 1
    for info in files:
        with ESDBReader(os.path.join(store.path, ARCHIVE_DIR, info.name)) as r:
            r.verify()
        if info.first_seq != expect or info.last_seq - info.first_seq + 1 != info.events:
            raise VerifyFailed(
                f"archive file {info.name} holds seq {info.first_seq}.."
                f"{info.last_seq} ({info.events} events), expected to start "
                f"at seq {expect}"
            )
        expect = info.last_seq + 1
    seq = 0
    prev = b""
    versions: dict[str, int] = {}
    known = dict(store.lost_seqs)  # holes a repair recorded: first seq -> last
    for ev in store.read_all():
        if ev.seq != seq + 1 and known.get(seq + 1) != ev.seq - 1:
            raise VerifyFailed(f"seq {ev.seq} (event {ev.id}) follows seq {seq}")
        if ev.id.bytes <= prev:
            raise VerifyFailed(f"event {ev.id} (seq {ev.seq}) is not above the previous id")
        version = versions.get(ev.stream, -1)
        if ev.version != version + 1 and not (known and ev.version > version):
            raise VerifyFailed(
                f"stream {ev.stream!r}: version {ev.version} (event {ev.id}) "
                f"follows version {version}"
            )
        versions[ev.stream] = ev.version
        seq, prev = ev.seq, ev.id.bytes
        advance(1)
    # A served store takes appends while this reads: what is past the log's end
    # must be events committed after the view was taken (seq above its end),
    # and a commit the view shows may not be reported yet (wait for it, briefly).
    if store.last_seq < seq:
        store.wait_for_commit(seq - 1, timeout=1.0)
    if seq != store.last_seq and not (
        store.last_seq > seq and _appended_after(store.read_all(from_seq=seq + 1), seq)
    ):
        raise VerifyFailed(
            f"the log ends at seq {seq}, but the store's last seq is {store.last_seq}"
        )
    for stream, version in versions.items():
        recorded = store.stream_version(stream)
        if (
            recorded != version
            and not (known and recorded > version)
            and not _appended_after(store.read_stream(stream, from_version=version + 1), seq)
        ):
            raise VerifyFailed(
                f"stream {stream!r}: version {store.stream_version(stream)}, "
                f"but its last event is version {version}"
            )
    for info in files:
        for id_ in (info.first_id, info.last_id):
            if store.get(id_) is None:
                raise VerifyFailed(f"get({id_}) finds nothing; archive file {info.name} holds it")
    cold = sum(f.events for f in files)
    lost = sum(b - a + 1 for a, b in known.items())
    found: dict[str, Any] = {"lost": lost, "lost_seqs": sorted(known.items())} if lost else {}
    return {
        **found,
        "events": seq - lost,
        "hot_events": seq - cold - lost,
        "cold_events": cold,
        "files": len(files),
        "streams": len(versions),
    }


@click.command()
@path_argument
@json_option
@guard
def verify(path: str, as_json: bool) -> None:
    """Check a store (or a backup) end to end; exit 1 at the first problem."""
    with opened(path) as store:
        left_alone = unexpected_lines(store)
        try:
            with progress_bar(store.last_seq, "verifying") as advance:
                found = verify_public(store, advance)
                if hasattr(store, "verify"):
                    store.verify()
        except CorruptFile as exc:
            raise VerifyFailed(f"{path}: {exc}") from None
        except VerifyFailed as exc:
            raise VerifyFailed(f"{path}: {exc}") from None
    if as_json:
        unexpected = [{"name": u.name, "reason": u.reason} for u in store.unexpected_files]
        echo_json({"ok": True, "path": path, **found, "unexpected_files": unexpected})
    else:
        click.echo(
            f"OK {path}: {_plural(found['events'], 'event')} in "
            f"{_plural(found['streams'], 'stream')} (hot {found['hot_events']:,}, cold "
            f"{found['cold_events']:,} in {_plural(found['files'], 'file')}); seq gap-free"
            + (
                f" but for {found['lost']:,} events a repair recorded lost (seq "
                + ", ".join(f"{a}-{b}" for a, b in found["lost_seqs"])
                + ")"
                if "lost" in found
                else ""
            )
            + ", ids increasing, versions dense, checksums good"
        )
        for line in left_alone:
            click.echo(line)


# -- repair ----------------------------------------------------------------------------------


@click.command()
@path_argument
@guard
def repair(path: str) -> None:
    """Rebuild a damaged hot tier with LevelDB's repair, then verify the store.

    The hot tier is copied aside first (PATH.before-repair-TIME/hot, printed).
    LevelDB's repair keeps what its logs and tables still hold and drops
    damaged records, so events can be lost: compare with a backup.
    """
    hot = os.path.join(path, "hot")
    if not os.path.isfile(os.path.join(hot, "CURRENT")) and not any(
        name.endswith((".log", ".ldb", ".sst")) for name in _listing(hot)
    ):
        fail(f"no hot tier (LevelDB) at {hot}")
    try:
        # A damaged hot tier refuses this open without changing anything.
        with EventStore.open(path) as store:
            n, last, missing = store.log_gaps()
        before = f"{_plural(n, 'event')}, last seq {last}"
    except EventStoreError as exc:
        before = f"unknown: the store did not open ({exc})"
    click.echo(f"before: {before}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{os.path.abspath(path).rstrip('/')}.before-repair-{stamp}"
    from ..hot import repair_hot_tier

    click.echo(f"copying the hot tier to {os.path.join(aside, 'hot')} (keep it until you are sure)")
    done = repair_hot_tier(hot, os.path.join(aside, "hot"))
    click.echo(f"copied the hot tier to {os.path.join(aside, 'hot')}")
    click.echo(
        f"repaired: kept {done.kept:,} keys whose blocks passed their checksums, dropped "
        f"{done.dropped:,} in damaged blocks, and the log records that failed theirs"
        + ("; LevelDB rebuilt its manifest first" if done.rebuilt_manifest else "")
        + (
            f"; set right the damaged length of {_plural(done.lengths_fixed, 'log record')}"
            if done.lengths_fixed
            else ""
        )
    )
    with opened(path) as store:
        rebuilt = store.rebuild_segment_keys()
        if rebuilt:
            click.echo(f"rebuilt {rebuilt:,} segment keys from the archive files")
        n, last, missing = store.log_gaps()
        lost = sum(b - a + 1 for a, b in missing)
        gaps = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in missing[:10])
        click.echo(
            f"after: {_plural(n, 'event')}, last seq {last}"
            + (f"; {lost:,} missing below it (seq {gaps})" if missing else "; no seq missing")
            + " (events lost after the last seq cannot be seen: compare with a backup)"
        )
        if missing:
            # Recorded, so that reads and verify take these holes as known
            # (they refuse unexplained ones as damage).
            store.record_repair(missing)
        try:
            store.verify()
        except EventStoreError as exc:
            fail(f"verify after repair: {exc}")
    click.echo("verify: OK" + (" (but for the events recorded lost)" if missing else ""))
    if missing:
        fail(
            f"{lost:,} events were lost (recorded in the store); restore them from a backup "
            "or an export if you have one"
        )


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


COMMANDS = [
    append,
    read,
    get,
    all_events,
    tail,
    stats,
    compact,
    merge,
    export,
    import_,
    backup,
    verify,
    repair,
]
