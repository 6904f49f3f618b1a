"""Reading a store: ``eventstore read|get|all``."""

from __future__ import annotations

from collections.abc import Iterator

import click

from ..events import Event
from .common import (
    json_option,
    opened,
    parse_index,
    parse_ulid,
    path_argument,
    prefix_option,
    print_events,
    type_option,
)
from .maintenance import archive_infos
from .output import (
    Table,
    compact_json,
    echo_json,
    event_json,
    fail,
    guard,
    print_fields,
    usage,
)

# -- append, read, get, all ---------------------------------------------------------


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
        print_events(events, as_json, one_stream=True, last_seq=store.last_seq)


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
    if after is not None and from_seq is not None:
        usage("give --after or --from-seq, not both")
    position = None if after is None else parse_ulid(after, "--after")
    with opened(path) as store:
        events = store.read_all(
            position, backwards, limit, types or None, prefix, from_seq=from_seq
        )
        print_events(events, as_json, last_seq=store.last_seq)


@click.command()
@path_argument
@prefix_option
@json_option
@guard
def streams(path: str, prefix: str | None, as_json: bool) -> None:
    """List the streams, by name, with the version of each one's last event."""
    with opened(path) as store:
        names: set[str] = set()
        files = archive_infos(store, names)  # with the streams of the archive files
        last_cold = files[-1].last_id if files else None
        names.update(ev.stream for ev in store.read_all(after=last_cold))
        chosen = sorted(n for n in names if prefix is None or n.startswith(prefix))
        rows = [(name, store.stream_version(name)) for name in chosen]
    if as_json:
        for name, version in rows:
            echo_json({"stream": name, "version": version})
        return
    table = Table(["version", "stream"], {0})
    for name, version in rows:
        table.row([str(version), name])
    table.flush()


COMMANDS = [read, get, all_events, streams]
