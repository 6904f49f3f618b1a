"""Writing to a store: ``eventstore append``."""

from __future__ import annotations

import sys

import click

from ..events import NewEvent
from .common import (
    json_option,
    opened,
    parse_expected,
    parse_index,
    path_argument,
)
from .output import (
    BadJSON,
    echo_json,
    guard,
    parse_json,
    usage,
)


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
    try:
        values = (
            parse_json(data, "--data"),
            (None if metadata is None else parse_json(metadata, "--metadata")),
        )
    except BadJSON as exc:  # a bad option value: a usage mistake
        usage(str(exc))
    event = NewEvent(type_, values[0], values[1], dict(parse_index(i) for i in indexes) or None)
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


COMMANDS = [append]
