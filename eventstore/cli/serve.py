"""``eventstore serve PATH``: own a store and serve it over KurrentDB's gRPC protocol."""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import timedelta
from types import FrameType

import click

from ..errors import EventStoreError
from ..store import EventStore
from .common import opened

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    unit = text[-1:].lower()
    number = text[:-1]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 12h or 30d")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


@click.command("serve")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--listen", default="127.0.0.1:2113", show_default=True, metavar="HOST:PORT")
@click.option("--insecure", is_flag=True, help="Serve without TLS and without authentication.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key.")
@click.option(
    "--users",
    "users_file",
    type=click.Path(dir_okay=False),
    help="name:password lines; without it a TLS server accepts only admin:changeit.",
)
@click.option("--sync/--no-sync", default=True, show_default=True, help="fsync every append.")
@click.option(
    "--compact-older-than",
    metavar="DURATION",
    help="Compact events older than this (e.g. 30d) on a schedule, then merge archive files.",
)
@click.option(
    "--compact-every",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="How often the scheduled compaction runs.",
)
@click.option(
    "--scavenge-every",
    metavar="DURATION",
    help="Scavenge on a schedule (e.g. 1d): remove the bytes of deleted, expired and "
    "redacted events.",
)
@click.option(
    "--shredding",
    is_flag=True,
    help="Open the store's subject keys (the crypto extra): clients read sealed events "
    "decrypted, and those of a forgotten subject shredded.",
)
def serve_command(
    path: str,
    listen: str,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    users_file: str | None,
    sync: bool,
    compact_older_than: str | None,
    compact_every: str,
    scavenge_every: str | None,
    shredding: bool,
) -> None:
    """Open the store at PATH (creating it) and serve it until SIGTERM or SIGINT.

    Speaks KurrentDB's gRPC protocol, so kurrentdbclient and the other
    KurrentDB clients work against it (see docs/server.md). On a signal it
    stops accepting calls, finishes those in flight and closes the store.
    """
    try:
        from ..server import serve
        from ..server.transport import load_users
        from .remote import AdminServer
    except ImportError as exc:  # the server extra is not installed
        raise click.ClickException(
            f"serving needs the server extra: pip install 'tiered-eventstore[server]' ({exc})"
        ) from None
    if insecure and (tls_cert or tls_key or users_file):
        raise click.UsageError("--insecure contradicts --tls-cert/--tls-key/--users")
    if not insecure and not (tls_cert and tls_key):
        raise click.UsageError("give --tls-cert and --tls-key, or --insecure")
    older = None
    if compact_older_than:
        older = parse_duration(compact_older_than)
    every = parse_duration(compact_every).total_seconds()
    scavenge_s = None
    if scavenge_every:
        scavenge_s = parse_duration(scavenge_every).total_seconds()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        users = load_users(users_file) if users_file else None
        with opened(path, create=True, sync=sync, shredding=shredding) as store:
            server = serve(store, listen, tls_cert=tls_cert, tls_key=tls_key, users=users)
            root = click.get_current_context().find_root().command
            assert isinstance(root, click.Group), "serve runs under the eventstore group"
            admin = AdminServer(store, root)
            if not admin.start():
                click.echo(
                    f"eventstore serve: {path} is too long a path for the operator socket; "
                    "stop the server to run other eventstore commands on it",
                    err=True,
                )
            mode = "TLS" if tls_cert else "insecure"
            click.echo(f"eventstore serve: {path} on {server.address} ({mode}), ready", err=False)
            sys.stdout.flush()
            next_compaction = time.monotonic() + every
            next_scavenge = time.monotonic() + (scavenge_s or 0)
            while not stop.wait(0.2 if older is None else min(0.2, every)):
                if older is not None and time.monotonic() >= next_compaction:
                    next_compaction = time.monotonic() + every
                    _scheduled_compaction(store, older)
                if scavenge_s is not None and time.monotonic() >= next_scavenge:
                    next_scavenge = time.monotonic() + scavenge_s
                    _scheduled_scavenge(store)
            server.stop()
            admin.stop()
    except EventStoreError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from None
    click.echo("eventstore serve: stopped, store closed", err=True)


def _scheduled_scavenge(store: EventStore) -> None:
    try:
        store.scavenge()
    except EventStoreError as exc:  # report and keep serving
        click.echo(f"eventstore serve: scheduled scavenge failed: {exc}", err=True)


def _scheduled_compaction(store: EventStore, older: timedelta) -> None:
    try:
        store.compact(older_than=older)
        # Size-tiered: a schedule that merged every run each time would
        # rewrite the large files again with every new small one (issue 19).
        store.merge_archives(fanout=8)
    except EventStoreError as exc:  # report and keep serving
        click.echo(f"eventstore serve: scheduled compaction failed: {exc}", err=True)
