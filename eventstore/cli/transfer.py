"""Moving events in and out: ``eventstore export|import|backup``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from typing import IO, Any

import click
from ulid import ULID

from ..errors import EventStoreError, IdOutOfRange
from ..events import Event, RedactedEvent, RemovedEvent
from ..ids import check_importable, to_ulid_bytes
from ..store import DEFAULT_IMPORT_CLOCK_TOLERANCE, EventStore
from .common import (
    EXPORT_FORMAT,
    EXPORT_FORMATS_READ,
    EXPORT_KIND,
    _plural,
    json_option,
    newest,
    opened,
    parse_ulid,
    path_argument,
)
from .output import (
    BadJSON,
    echo_json,
    event_json,
    fail,
    from_json,
    guard,
    human_bytes,
    on_terminal,
    progress_bar,
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
        first = next(store.export_events(position), None)
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
            n = _write_export(sys.stdout, header, store.export_events(position), total)
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
                n = _write_export(out, header, store.export_events(position), total)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, file)
        finally:
            with suppress(FileNotFoundError):
                os.remove(tmp)
    click.echo(f"exported {_plural(n, 'event')} to {file}")


def removed_json(ev: RemovedEvent) -> dict[str, Any]:
    """The line of an event removed or hidden: its place in the log only."""
    return {
        "removed": True,
        "id": str(ev.id),
        "stream": ev.stream,
        "version": ev.version,
        "seq": ev.seq,
        "type": ev.type,
    }


def _write_export(
    out: IO[str], header: dict[str, Any], events: Iterator[Event | RemovedEvent], total: int
) -> int:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out.write(dumps(header) + "\n")
    n = 0
    with progress_bar(total, "exporting") as advance:
        for ev in events:
            if isinstance(ev, RemovedEvent):
                line = removed_json(ev)
            else:
                line = event_json(ev)
                if ev.redacted:
                    line["redacted"] = True
            out.write(dumps(line) + "\n")
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


def parse_event_line(line: str, where: str) -> Event | RemovedEvent | None:
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
        if obj.get("format") not in EXPORT_FORMATS_READ:
            raise ImportFileError(
                f"{where}: export format {obj.get('format')!r}; this "
                f"eventstore reads format {EXPORT_FORMAT}"
            )
        return None
    try:
        event_id = ULID.from_bytes(to_ulid_bytes(_field(obj, "id", str, where)))
        if obj.get("removed") is True:
            return RemovedEvent(
                event_id,
                _field(obj, "stream", str, where),
                _field(obj, "version", int, where),
                _field(obj, "seq", int, where),
                _field(obj, "type", str, where),
            )
        indexes = from_json(obj.get("indexes", {}))
        if not isinstance(indexes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in indexes.items()
        ):
            raise ImportFileError(f"{where}: indexes should map names to str values")
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImportFileError(f"{where}: tags should be a list of str")
        fields = (
            event_id,
            _field(obj, "stream", str, where),
            _field(obj, "version", int, where),
            _field(obj, "seq", int, where),
            _field(obj, "type", str, where),
            from_json(obj.get("data")),
            from_json(obj.get("metadata")),
            indexes,
            tuple(tags),
        )
        if obj.get("redacted") is True:
            if fields[5] is not None or fields[6] is not None or tags:
                raise ImportFileError(f"{where}: a redacted event with data or metadata")
            red: Event = tuple.__new__(RedactedEvent, fields)
            return red
        return Event(*fields)
    except (BadJSON, EventStoreError) as exc:
        if isinstance(exc, ImportFileError):
            raise
        raise ImportFileError(f"{where}: {exc}") from None


def read_export(file: str) -> Iterator[tuple[str, Event | RemovedEvent]]:
    """The events of an export file, one line at a time, each with where it is."""
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
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


def _header(file: str) -> dict[str, Any] | None:
    """The export header on the file's first line, or None if it has none."""
    with open(file, "rb") as f:
        first = f.readline()
    with suppress(ValueError, UnicodeDecodeError):
        header = json.loads(first)
        if isinstance(header, dict) and header.get("kind") == EXPORT_KIND:
            return header
    return None


def events_in(file: str) -> int:
    """How many events an export file holds, for a progress bar: its header's
    count, or else its lines (counted only when a bar is drawn)."""
    with open(file, "rb") as f:
        first = f.readline()
        with suppress(ValueError, UnicodeDecodeError):
            header = json.loads(first)
            if isinstance(header, dict) and header.get("kind") == EXPORT_KIND:
                events = header.get("events")
                if type(events) is int and events >= 0:
                    return events
        if not on_terminal():
            return 0
        return sum(1 for line in chain([first], f) if line.strip())


def _same(store: EventStore, ev: Event | RemovedEvent) -> bool:
    """The store holds the file's event (compared as JSON: NaN payloads too),
    or, for a removed one, a husk at its seq (no read returns it)."""
    stored = store.get(ev.id)
    if isinstance(ev, RemovedEvent):
        return stored is None and any(a <= ev.seq <= b for a, b in store.removed_seqs)
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
    with progress_bar(events_in(file), "checking ") as advance:
        for where, ev in read_export(file):
            advance(1)
            if n == done and ev.seq <= store.last_seq and _same(store, ev):
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
    header = _header(file)
    if header is not None:
        # An export cut short at a line boundary (a broken pipe, a partial
        # copy) parses line by line: only its header tells it is short. (More
        # events than the header counts is fine: appends went on meanwhile.)
        expected, last_seq = header.get("events"), header.get("last_seq")
        if (type(expected) is int and n < expected) or (type(last_seq) is int and seq < last_seq):
            raise ImportFileError(
                f"{file} holds {_plural(n, 'event')} up to seq {seq}, but its header says "
                f"{expected} up to seq {last_seq}: the export was cut short (export it again)"
            )
    if prev is not None and n:  # ids increase: the last is the one that could pin the clock
        now_ms = time.time_ns() // 1_000_000
        try:
            check_importable(
                int.from_bytes(prev, "big"), now_ms, tolerance // timedelta(milliseconds=1)
            )
        except IdOutOfRange as exc:  # it names the API's parameter: name the option
            raise IdOutOfRange(
                str(exc).replace("import_events(clock_tolerance=...)", "--clock-tolerance SECONDS")
            ) from None
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
        with progress_bar(n - done, "importing") as advance:  # events, as written
            store.import_events(
                islice((ev for _, ev in read_export(file)), done, None),
                clock_tolerance=tolerance,
                progress=advance,
            )
        last = store.last_seq
    resumed = f" (resumed: the first {done:,} were in the store already)" if done else ""
    click.echo(f"imported {_plural(n - done, 'event')} from {file}{resumed}; seq now {last}")


# -- backup ----------------------------------------------------------------------------


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


COMMANDS = [export, import_, backup]
