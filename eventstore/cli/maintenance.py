"""Looking after a store: ``eventstore stats|compact|merge|verify|repair``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from ulid import ULID

from ..archive import ARCHIVE_DIR
from ..errors import CorruptFile, EventStoreError
from ..esdb import ESDBReader
from ..events import Event
from ..ids import to_ulid_bytes
from ..store import EventStore
from .common import (
    _plural,
    json_option,
    newest,
    opened,
    parse_cutoff,
    parse_duration,
    path_argument,
)
from .output import (
    Table,
    echo_json,
    fail,
    guard,
    human_bytes,
    print_fields,
    progress_bar,
    usage,
)

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
        usage("give exactly one of --older-than or --before")
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


# -- verify ----------------------------------------------------------------------------


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
    # -- h17 hook: the log as stored, husks of removed events and events a
    # rule hides included (public reads skip them, and their seqs with them).
    view = store._view()
    for ev in view.read_all(None, False, None, None):
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
            and not _appended_after(  # a fresh view: appends go on meanwhile
                store._view().read_stream(stream, stream.encode(), version + 1, False), seq
            )
        ):
            raise VerifyFailed(
                f"stream {stream!r}: version {store.stream_version(stream)}, "
                f"but its last event is version {version}"
            )
    for info in files:
        for id_ in (info.first_id, info.last_id):
            if view.get(to_ulid_bytes(id_)) is None:
                raise VerifyFailed(f"get({id_}) finds nothing; archive file {info.name} holds it")
    cold = sum(f.events for f in files)
    lost = sum(b - a + 1 for a, b in known.items())
    found: dict[str, Any] = {"lost": lost, "lost_seqs": sorted(known.items())} if lost else {}
    # -- h17 hook: does the store still hold bytes of erased events?
    pending = store.scavenge(dry_run=True)
    found["erasure_pending"] = pending.scrubbed
    found["removed"] = sum(b - a + 1 for a, b in store.removed_seqs)
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
            # Two passes over the log, each advancing the bar per event: the
            # public reads here, then the store's own check.
            with progress_bar(2 * store.last_seq, "verifying") as advance:
                found = verify_public(store, advance)
                if hasattr(store, "verify"):
                    store.verify(progress=advance)
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
            + (f"; {found['removed']:,} events removed by scavenge" if found["removed"] else "")
            + (
                f"; it still holds bytes of {found['erasure_pending']:,} erased "
                "events (run `eventstore scavenge`)"
                if found["erasure_pending"]
                else ""
            )
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
    damaged records, so events can be lost: compare with a backup. A lost or
    unreadable archive manifest is rebuilt from the archive files.
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
    from ..repair import restore_manifest

    restored = restore_manifest(path)
    if restored is not None:
        click.echo(
            f"rebuilt the archive manifest from the files: it names "
            f"{_plural(len(restored.entries), 'file')}"
            + "".join(f"\n  left alone: {u.name} ({u.reason})" for u in restored.left)
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


COMMANDS = [stats, compact, merge, verify, repair]
