"""The cold tier: ESDB files in the store's ``archive`` folder.

The manifest (a system key in LevelDB) names the files. Files are never
rewritten: compaction adds files, merging replaces adjacent files by one, both
by swapping the manifest in one synced LevelDB batch.

Nothing here trusts a name or a file on sight. A manifest entry must name a
file by the store's own pattern (``00000042.esdb``: no ``/``, no ``..``), the
file must be a regular file (never followed through a symlink, never a FIFO
that would block ``open``), and its footer must agree with what the entry
recorded at commit. A file the manifest does not name is removed only when
the store proves it is its own interrupted work and holds nothing the store
lacks (:func:`classify_unnamed`); anything else is left alone and reported.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import ArchiveMismatch, CorruptFile, StoreDamaged, UnsafePath
from .esdb import ESDBReader, FileMeta
from .esdb.format import HEADER_MAGIC

ARCHIVE_DIR = "archive"
SUFFIX = ".esdb"
TMP_SUFFIX = SUFFIX + ".tmp"  # what ESDBWriter writes before its rename

# The names this store gives its files, and nothing else: file_name() of a number.
_NAME = re.compile(r"([0-9]{8,20})\.esdb(\.tmp)?\Z")

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS |= getattr(os, "O_CLOEXEC", 0)

FIX = (
    "run `eventstore repair {path}` (it rebuilds what it can from the files), "
    "or restore the store from a backup"
)


def advice(store_path: str) -> str:
    """What a damaged-store error tells the operator to do."""
    return FIX.format(path=store_path)


@dataclass(frozen=True)
class ArchiveFile:
    """One ESDB file named by the manifest."""

    number: int
    name: str
    first_id: bytes
    last_id: bytes
    first_seq: int
    last_seq: int
    events: int
    size: int
    reader: ESDBReader = field(compare=False, repr=False)
    # crc32 of the file's footer (FORMAT.md), recorded at commit: with the
    # footer's creation time in it, it tells this file from a copy of another
    # store's file with the same ranges. None in entries from before it was kept.
    footer_crc: int | None = None

    def entry(self) -> list[Any]:
        """The file's manifest entry."""
        entry: list[Any] = [
            self.number,
            self.name,
            self.first_id,
            self.last_id,
            self.first_seq,
            self.last_seq,
            self.events,
            self.size,
        ]
        if self.footer_crc is not None:
            entry.append(self.footer_crc)
        return entry


class UnexpectedFile(NamedTuple):
    """A file in ``archive/`` that the manifest does not name and the store left alone."""

    name: str
    reason: str


def file_name(number: int) -> str:
    """Files are numbered in the order they are made; the manifest keeps their id ranges."""
    return f"{number:08d}{SUFFIX}"


def parse_name(name: str) -> tuple[int, bool] | None:
    """``(number, is_temporary)`` if ``name`` is exactly a name this store
    gives its files (``file_name`` of a number, or that plus ``.tmp``), else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    number = int(m.group(1))
    if file_name(number) != name.removesuffix(".tmp"):
        return None  # "000000042.esdb": not how the store spells 42
    return number, m.group(2) is not None


def check_folder(folder: str) -> bool:
    """True if ``archive/`` exists as a real folder, False if it does not
    exist; :class:`UnsafePath` for a symlink (its files would be another
    folder's, and merging deletes files) or anything but a folder."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(
            f"{folder} is a symlink; the archive must be a real folder inside the store "
            "(move the files into it and remove the link)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{folder} is not a folder")
    return True


def _open_regular(path: str) -> tuple[os.stat_result, bytes]:
    """Stat a regular file without following a symlink or blocking on a FIFO,
    and read its last 16 bytes (the footer's tail: version, size, crc, magic)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symlink; archive files must be regular files") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file")
        tail = os.pread(fd, 16, st.st_size - 16) if st.st_size >= 16 else b""
    finally:
        os.close(fd)
    return st, tail


def open_reader(path: str) -> tuple[ESDBReader, int]:
    """An :class:`ESDBReader` on the regular file ``path`` and its footer crc."""
    st, tail = _open_regular(path)
    reader = ESDBReader(path)
    try:
        again = os.lstat(path)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafePath(f"{path} was replaced while it was being opened")
    except BaseException:
        reader.close()
        raise
    # The reader checked the footer, crc included: the crc is the u32 12 bytes from the end.
    (crc,) = struct.unpack("<I", tail[4:8])
    return reader, crc


def from_meta(folder: str, number: int, meta: FileMeta) -> ArchiveFile:
    assert meta.first_id is not None and meta.last_id is not None
    name = os.path.basename(meta.path)
    reader, crc = open_reader(os.path.join(folder, name))
    return ArchiveFile(
        number,
        name,
        meta.first_id,
        meta.last_id,
        meta.first_seq,
        meta.last_seq,
        meta.event_count,
        meta.file_size,
        reader,
        crc,
    )


def _id16(value: Any) -> bool:
    return type(value) is bytes and len(value) == 16


def check_entries(entries: Any, where: str) -> list[list[Any]]:
    """The manifest's entries, each of the right shape and naming a file of
    this store's pattern; :class:`StoreDamaged` otherwise (``where`` is the store)."""

    def bad(problem: str) -> StoreDamaged:
        return StoreDamaged(f"store {where}: the archive manifest {problem}; {advice(where)}")

    if type(entries) is not list:
        raise bad("is not a list of files")
    seen: set[str] = set()
    for entry in entries:
        if type(entry) is not list or len(entry) not in (8, 9):
            raise bad(f"holds an entry of the wrong shape: {entry!r:.200}")
        number, name = entry[0], entry[1]
        if type(number) is not int or type(name) is not str:
            raise bad(f"holds an entry of the wrong shape: {entry!r:.200}")
        if parse_name(name) != (number, False):
            raise bad(f"names {name!r}, which is not the name of archive file {number}")
        if name in seen:
            raise bad(f"names {name!r} twice")
        seen.add(name)
        if not (_id16(entry[2]) and _id16(entry[3])) or not all(
            type(v) is int and v >= 0 for v in entry[4:]
        ):
            raise bad(f"holds an entry of the wrong shape: {entry!r:.200}")
    return entries


def open_files(folder: str, entries: list[list[Any]]) -> list[ArchiveFile]:
    """Open the files a manifest names, in id order, each checked against its
    entry: :class:`ArchiveMismatch` for a file that is not the one the
    manifest recorded (another store's, or two files swapped), StoreDamaged
    for one that is missing. Entries must have passed :func:`check_entries`."""
    files: list[ArchiveFile] = []
    try:
        for entry in entries:
            files.append(_open_entry(folder, entry))
    except BaseException:
        for f in files:
            f.reader.close()
        raise
    return files


def _open_entry(folder: str, entry: list[Any]) -> ArchiveFile:
    number, name, first_id, last_id, first_seq, last_seq, events, size = entry[:8]
    recorded_crc = entry[8] if len(entry) == 9 else None
    path = os.path.join(folder, name)
    try:
        reader, crc = open_reader(path)
    except FileNotFoundError:
        raise StoreDamaged(
            f"{path}: named by the archive manifest but missing; {advice(os.path.dirname(folder))}"
        ) from None
    meta = reader.meta
    found = (meta.first_id, meta.last_id, meta.first_seq, meta.last_seq, meta.event_count)
    problems = []
    if found != (first_id, last_id, first_seq, last_seq, events):
        problems.append(
            f"it holds seqs {meta.first_seq}-{meta.last_seq} ({meta.event_count} events), "
            f"the manifest recorded {first_seq}-{last_seq} ({events} events)"
        )
    if meta.file_size != size:
        problems.append(f"it is {meta.file_size} bytes, the manifest recorded {size}")
    if recorded_crc is not None and crc != recorded_crc:
        problems.append(f"its footer crc is {crc:#010x}, the manifest has {recorded_crc:#010x}")
    if problems:
        reader.close()
        raise ArchiveMismatch(
            f"{path} is not the archive file the manifest names ({'; '.join(problems)}): "
            "a file copied from another store, or files swapped or replaced. Put the "
            f"store's own file back, or {advice(os.path.dirname(folder))}"
        )
    return ArchiveFile(
        number, name, first_id, last_id, first_seq, last_seq, events, size, reader, crc
    )


def listing(folder: str) -> list[str]:
    """The names in ``archive/`` (none if it does not exist)."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def highest_number(names: list[str]) -> int:
    """The highest file number a name in the folder uses (0 if none): new
    files are numbered above it, so no file left alone is ever overwritten."""
    return max((p[0] for p in map(parse_name, names) if p is not None), default=0)


# held(id16, seq): whether the store holds the event with this id at this seq
# somewhere other than the file being judged (a named file or the hot tier).
Held = Callable[[bytes, int], bool]


def judge_unnamed(folder: str, name: str, reserved: set[int], held: Held) -> str | None:
    """None if the unnamed file ``name`` is provably the store's own
    interrupted work whose events the store holds elsewhere (so removing it
    loses nothing); else why it must be left alone."""
    path = os.path.join(folder, name)
    parsed = parse_name(name)
    if parsed is None:
        return "not a name this store gives its files"
    number, temporary = parsed
    if number not in reserved:
        return f"file number {number} is not one the store reserved for a compaction or merge"
    try:
        _open_regular(path)
    except UnsafePath as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot be read: {exc}"
    if temporary:
        # An unfinished file, never committed: its events are all in the hot
        # tier. It must at least start as the writer starts every file.
        fd = os.open(path, _OPEN_FLAGS)
        try:
            head = os.pread(fd, len(HEADER_MAGIC), 0)
        finally:
            os.close(fd)
        if head != HEADER_MAGIC[: len(head)]:
            return "does not start as an ESDB file"
        return None
    try:
        reader, _crc = open_reader(path)
    except (CorruptFile, UnsafePath, OSError) as exc:
        return f"cannot be read as an ESDB file: {exc}"
    with reader:
        meta = reader.meta
    if meta.first_id is None or meta.last_id is None:
        return None  # no events: nothing to lose
    # The log is gap-free in seq: if the store holds this file's first and
    # last events at the same seqs, it holds every one between them.
    if held(meta.first_id, meta.first_seq) and held(meta.last_id, meta.last_seq):
        return None
    return "holds events the store has nowhere else"


def classify_unnamed(
    folder: str, named: set[str], reserved: set[int], held: Held
) -> tuple[list[str], list[UnexpectedFile]]:
    """Split the files the manifest does not name into those
    :func:`judge_unnamed` proves are the store's own leftovers (safe to
    remove) and those to leave alone, with why. Changes nothing."""
    ours: list[str] = []
    left: list[UnexpectedFile] = []
    for name in listing(folder):
        if name in named:
            continue
        reason = judge_unnamed(folder, name, reserved, held)
        if reason is None:
            ours.append(name)
        else:
            left.append(UnexpectedFile(name, reason))
    return ours, left


class RebuiltManifest(NamedTuple):
    """What :func:`rebuild_entries` found in ``archive/``."""

    entries: list[list[Any]]  # the manifest's files, in seq order
    next_file: int  # the number the next file gets
    left: list[UnexpectedFile]  # files it did not name, with why


def rebuild_entries(folder: str) -> RebuiltManifest:
    """A manifest made anew from the files in ``archive/``, for a store whose
    manifest is lost or unreadable (``eventstore repair``). Each file this
    store could have made is opened and checked (footer, crc); files whose
    seqs lie inside another's (a merge's inputs, left behind when the merge
    was cut short after its commit) are not named, and neither are files that
    do not open. Two files that share some seqs but neither holds the other's
    cannot both be the store's: :class:`StoreDamaged`, since picking one
    could lose events. Changes nothing on disk."""
    names = listing(folder)
    found: list[ArchiveFile] = []
    left: list[UnexpectedFile] = []
    try:
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                left.append(UnexpectedFile(name, "not a name this store gives its files"))
                continue
            number, temporary = parsed
            if temporary:
                left.append(UnexpectedFile(name, "an unfinished file, never committed"))
                continue
            try:
                reader, _crc = open_reader(os.path.join(folder, name))
            except (CorruptFile, UnsafePath, OSError) as exc:
                left.append(UnexpectedFile(name, f"cannot be read as an ESDB file: {exc}"))
                continue
            meta = reader.meta
            reader.close()
            if meta.first_id is None:
                left.append(UnexpectedFile(name, "holds no events"))
                continue
            found.append(from_meta(folder, number, meta))
        found.sort(key=lambda f: (f.first_seq, -f.last_seq))
        kept: list[ArchiveFile] = []
        for f in found:
            if kept and f.first_seq <= kept[-1].last_seq:
                if f.last_seq <= kept[-1].last_seq:
                    left.append(
                        UnexpectedFile(f.name, f"its seqs are all in {kept[-1].name} too")
                    )
                    continue
                raise StoreDamaged(
                    f"{folder}: {kept[-1].name} (seqs {kept[-1].first_seq}-"
                    f"{kept[-1].last_seq}) and {f.name} (seqs {f.first_seq}-{f.last_seq}) "
                    "overlap and neither holds the other: they cannot both be this "
                    "store's, so the manifest cannot be rebuilt; restore a backup"
                )
            kept.append(f)
        return RebuiltManifest(
            [f.entry() for f in kept], highest_number(names) + 1, sorted(left)
        )
    finally:
        for f in found:
            f.reader.close()
