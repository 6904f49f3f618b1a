"""``eventstore esdb ...``: inspect, dump and verify one ESDB file.

Expected failures (a missing, damaged or hostile file, a bad argument) print
one line on stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click

from ..errors import EventStoreError
from ..esdb import ESDBReader
from .output import event_json as _event_json
from .output import fail as _fail
from .output import guard as _guard
from .output import to_json as _jsonable
from .output import usage


def _open(path: str) -> ESDBReader:
    try:
        return ESDBReader(path)
    except EventStoreError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
    raise AssertionError("unreachable")


@click.group()
def esdb() -> None:
    """Work with one ESDB file."""


@esdb.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_guard
def inspect(file: str, as_json: bool) -> None:
    """Show a file's metadata, its spaces and their sizes."""
    with _open(file) as r:
        m = r.meta
        ratio = m.record_bytes / m.file_size if m.file_size else 0.0
        summary: dict[str, Any] = {
            "kind": "file",
            "path": m.path,
            "format_version": m.format_version,
            "codec": m.codec,
            "created": m.created.isoformat(),
            "events": m.event_count,
            "spaces": m.space_count,
            "blocks": m.block_count,
            "first_id": None if m.first_ulid is None else str(m.first_ulid),
            "last_id": None if m.last_ulid is None else str(m.last_ulid),
            "first_seq": m.first_seq,
            "last_seq": m.last_seq,
            "index_types": m.index_types,
            "file_bytes": m.file_size,
            "data_bytes": m.data_bytes,
            "index_bytes": m.index_bytes,
            "record_bytes": m.record_bytes,
            "compression_ratio": round(ratio, 3),
        }
        spaces = list(_space_rows(r))
        if as_json:
            click.echo(json.dumps(summary))
            for row in spaces:
                click.echo(json.dumps(row))
            return
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if key != "kind":
                click.echo(f"{key:<{width}}  {value}")
        if not spaces:
            return
        click.echo("")
        heads = [
            "stream",
            "events",
            "versions",
            "first_id",
            "last_id",
            "record_bytes",
            "index_bytes",
        ]
        rows = [
            [
                s["stream"],
                str(s["events"]),
                f"{s['first_version']}..{s['last_version']}",
                s["first_id"],
                s["last_id"],
                str(s["record_bytes"]),
                str(s["index_bytes"]),
            ]
            for s in spaces
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
        numeric = {1, 5, 6}

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        click.echo(line(heads))
        for cells in rows:
            click.echo(line(cells))


def _space_rows(r: ESDBReader) -> Iterator[dict[str, Any]]:
    for s in r.spaces(cache=False):
        yield {
            "kind": "space",
            "stream": s.stream,
            "events": s.count,
            "first_version": s.first_version,
            "last_version": s.last_version,
            "first_id": str(s.first_ulid),
            "last_id": str(s.last_ulid),
            "record_bytes": s.record_bytes,
            "index_bytes": s.index_bytes,
        }


@esdb.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--stream", "-s", help="Only this stream.")
@click.option("--index", "index", metavar="NAME=VALUE", help="Only events under this index.")
@click.option("--reverse", is_flag=True, help="Newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_guard
def dump(file: str, stream: str | None, index: str | None, reverse: bool, as_json: bool) -> None:
    """Print events: the whole file in ULID order, one stream, or one index."""
    if index is not None:
        if stream is None:
            usage("--index needs --stream (indexes are per stream)")
        name, sep, value = index.partition("=")
        if not sep or not name or not value:
            usage(f"--index wants NAME=VALUE, got {index!r}")
    with _open(file) as r:
        if stream is not None and r.space(stream) is None:
            _fail(f"stream {stream!r} is not in {file}")
        if stream is None:
            events = r.read_all(backwards=reverse)
        elif index is not None:
            events = r.read_index(stream, name, value, backwards=reverse)
        else:
            events = r.read_stream(stream, backwards=reverse)
        for ev in events:
            if as_json:
                click.echo(json.dumps(_event_json(ev), ensure_ascii=False))
            else:
                data = json.dumps(_jsonable(ev.data), ensure_ascii=False)  # keys as stored
                click.echo(f"{ev.id}  {ev.stream}@{ev.version}  #{ev.seq}  {ev.type}  {data}")


@esdb.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_guard
def verify(file: str) -> None:
    """Check every checksum and structural invariant of a file."""
    with _open(file) as r:
        r.verify()
        m = r.meta
        click.echo(
            f"OK {file}: {m.event_count} events in {m.space_count} streams, "
            f"{m.block_count} blocks, format {m.format_version}"
        )
