"""The cold tier: ESDB files in the store's ``archive`` folder.

The manifest (a system key in LevelDB) names the files; a file the manifest
does not name is the orphan of an interrupted compaction or merge, and is
removed when the store opens. Files are never rewritten: compaction adds
files, merging replaces adjacent files by one, both by swapping the manifest
in one synced LevelDB batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .esdb import ESDBReader, FileMeta

ARCHIVE_DIR = "archive"
SUFFIX = ".esdb"


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

    def entry(self) -> list[Any]:
        """The file's manifest entry."""
        return [
            self.number,
            self.name,
            self.first_id,
            self.last_id,
            self.first_seq,
            self.last_seq,
            self.events,
            self.size,
        ]


def file_name(number: int) -> str:
    """Files are numbered in the order they are made; the manifest keeps their id ranges."""
    return f"{number:08d}{SUFFIX}"


def from_meta(folder: str, number: int, meta: FileMeta) -> ArchiveFile:
    assert meta.first_id is not None and meta.last_id is not None
    name = os.path.basename(meta.path)
    return ArchiveFile(
        number,
        name,
        meta.first_id,
        meta.last_id,
        meta.first_seq,
        meta.last_seq,
        meta.event_count,
        meta.file_size,
        ESDBReader(os.path.join(folder, name)),
    )


def open_files(folder: str, entries: list[list[Any]]) -> list[ArchiveFile]:
    """Open the files a manifest names, in id order."""
    files = []
    for number, name, first_id, last_id, first_seq, last_seq, events, size in entries:
        reader = ESDBReader(os.path.join(folder, name))
        files.append(
            ArchiveFile(number, name, first_id, last_id, first_seq, last_seq, events, size, reader)
        )
    return files


def remove_orphans(folder: str, named: set[str]) -> list[str]:
    """Delete files in ``folder`` that the manifest does not name; return their names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        if name in named:
            continue
        if name.endswith(SUFFIX) or name.endswith(SUFFIX + ".tmp"):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed
