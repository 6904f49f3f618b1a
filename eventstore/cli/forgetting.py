"""``eventstore delete``, ``retention``, ``redact``, ``scavenge`` and ``keys`` (issue 17)."""

from __future__ import annotations

import click

from ..retention import StreamRules
from .common import (
    json_option,
    opened,
    parse_duration,
    parse_expected,
    parse_ulid,
    path_argument,
)
from .output import echo_json, guard, usage


def _rules_json(stream: str, rules: StreamRules) -> dict[str, object]:
    return {
        "stream": stream,
        "tombstoned": rules.tombstoned,
        "truncate_before": rules.truncate_before,
        "max_count": rules.max_count,
        "max_age": rules.max_age,
    }


@click.command()
@path_argument
@click.argument("stream")
@click.option(
    "--expected-version",
    default="any",
    show_default=True,
    metavar="V",
    help="The version the stream must be at: a number, any, no_stream or stream_exists.",
)
@click.option(
    "--tombstone", is_flag=True, help="Delete for ever: the name can never be used again."
)
@json_option
@guard
def delete(path: str, stream: str, expected_version: str, tombstone: bool, as_json: bool) -> None:
    """Delete STREAM: it reads as empty (appends go on from its next version),
    or with --tombstone never reads or takes appends again. `eventstore
    scavenge` removes the bytes."""
    expected = parse_expected(expected_version)
    with opened(path) as store:
        how = store.tombstone_stream if tombstone else store.delete_stream
        result = how(stream, expected)
    if as_json:
        echo_json({"stream": stream, "tombstoned": tombstone, "seq": result.last_seq})
    else:
        click.echo(f"{'tombstoned' if tombstone else 'deleted'} stream {stream!r}")


@click.command()
@path_argument
@click.argument("stream")
@click.option("--max-age", metavar="DURATION", help="Keep events younger than this: 90d, 12h.")
@click.option("--max-count", type=int, metavar="N", help="Keep only the newest N events.")
@click.option("--truncate-before", type=int, metavar="V", help="Remove versions below V.")
@click.option("--clear", is_flag=True, help="Remove every retention rule of the stream.")
@json_option
@guard
def retention(
    path: str,
    stream: str,
    max_age: str | None,
    max_count: int | None,
    truncate_before: int | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Show, or set, the retention rules of STREAM (its $$STREAM metadata).
    Setting replaces all three rules; reads honour them at once."""
    changing = clear or any(v is not None for v in (max_age, max_count, truncate_before))
    if clear and any(v is not None for v in (max_age, max_count, truncate_before)):
        usage("--clear takes no other rule")
    age = None if max_age is None else parse_duration(max_age, "--max-age")
    with opened(path) as store:
        if changing:
            store.set_retention(
                stream, max_age=age, max_count=max_count, truncate_before=truncate_before
            )
        rules = store.stream_rules(stream)
    if as_json:
        echo_json(_rules_json(stream, rules))
        return
    if rules.tombstoned:
        click.echo(f"stream {stream!r} is tombstoned")
        return
    parts = []
    if rules.truncate_before:
        parts.append(f"versions below {rules.truncate_before} removed")
    if rules.max_count is not None:
        parts.append(f"newest {rules.max_count} kept")
    if rules.max_age is not None:
        parts.append(f"events younger than {rules.max_age} s kept")
    click.echo(f"stream {stream!r}: {'; '.join(parts) if parts else 'no retention rules'}")


@click.command()
@path_argument
@click.argument("event_id")
@json_option
@guard
def redact(path: str, event_id: str, as_json: bool) -> None:
    """Remove the data and metadata of the event EVENT_ID (its id, stream,
    version, seq and type stay). `eventstore scavenge` removes the bytes."""
    ulid = parse_ulid(event_id, "EVENT_ID")
    with opened(path) as store:
        changed = store.redact(ulid)
    if as_json:
        echo_json({"id": str(ulid), "redacted": True, "changed": changed})
    else:
        click.echo(f"redacted {ulid}" if changed else f"{ulid} was redacted already")


@click.command()
@path_argument
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@json_option
@guard
def scavenge(path: str, dry_run: bool, as_json: bool) -> None:
    """Remove from every file of the store the bytes of what deletions,
    retention rules and redactions hide. Backups taken before keep them."""
    with opened(path) as store:
        result = store.scavenge(dry_run=dry_run)
    if as_json:
        echo_json({**result._asdict(), "seconds": round(result.seconds, 3), "dry_run": dry_run})
        return
    if dry_run:
        click.echo(
            f"would remove {result.removed} events and scrub {result.scrubbed} records "
            f"in {result.files} archive files and the hot tier (examined {result.examined})"
        )
    else:
        click.echo(
            f"removed {result.removed} events, scrubbed {result.scrubbed} records, "
            f"rewrote {result.files} archive files (examined {result.examined}) "
            f"in {result.seconds:.2f} s"
        )


@click.group()
def keys() -> None:
    """Crypto-shredding's subject keys (the crypto extra)."""


@keys.command("export")
@path_argument
@click.argument("file", type=click.Path(dir_okay=False))
@guard
def keys_export(path: str, file: str) -> None:
    """Copy the subject keys to FILE (new, mode 0600), to keep apart from
    backups, which never hold them. Export again after forgetting a subject:
    the old copy still holds its key."""
    with opened(path, shredding=True) as store:
        n = store.export_keys(file)
    click.echo(f"exported {n} subject keys to {file}")


@keys.command("forget")
@path_argument
@click.argument("subject")
@guard
def keys_forget(path: str, subject: str) -> None:
    """Delete SUBJECT's key: its sealed events read as shredded everywhere."""
    with opened(path, shredding=True) as store:
        changed = store.forget_subject(subject)
    click.echo(f"forgot subject {subject!r}" if changed else f"subject {subject!r} has no key")


COMMANDS = [delete, retention, redact, scavenge, keys]
