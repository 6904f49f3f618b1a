"""Repairs that need both tiers: the archive manifest rebuilt from the files.

``eventstore repair`` first lets LevelDB repair the hot tier
(:func:`eventstore.hot.repair_hot_tier`); if the archive manifest (a system
key) did not survive, or never decodes, it is made anew here from the ESDB
files, which describe themselves (first and last id and seq, count, crc).
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from . import keys
from .archive import (
    ARCHIVE_DIR,
    RebuiltManifest,
    UnexpectedFile,
    check_entries,
    listing,
    parse_name,
    rebuild_entries,
)
from .errors import StoreDamaged
from .hot import open_leveldb
from .records import unpack


def _manifest_is_sound(raw: bytes | None, store_path: str) -> bool:
    """Whether ``raw`` is a manifest this store writes (the checks of open)."""
    if raw is None:
        return False
    try:
        manifest: Any = unpack(raw)
    except Exception:  # msgpack raises several unrelated types
        return False
    if not isinstance(manifest, dict) or type(manifest.get("next")) is not int:
        return False
    try:
        check_entries(manifest.get("files"), store_path)
    except StoreDamaged:
        return False
    return bool(manifest["next"] >= 1)


def restore_manifest(store_path: str) -> RebuiltManifest | None:
    """Rebuild the archive manifest from ``archive/`` if it is missing (while
    the store has archive files or a watermark) or unreadable; None if it is
    sound, or if the store never archived anything. The watermark, if lost
    too (or alone, beside a sound manifest that names files), is set just
    above the last id the files hold (compaction archives a prefix of the
    log). The store must be closed; one synced batch writes both."""
    folder = os.path.join(store_path, ARCHIVE_DIR)
    db = open_leveldb(os.path.join(store_path, "hot"), create=False)
    try:
        raw = db.get(keys.MANIFEST)
        watermark = db.get(keys.WATERMARK)
        has_files = any(
            p is not None and not p[1] for p in map(parse_name, listing(folder))
        )
        lost_watermark = watermark is None or len(watermark) != 16
        if _manifest_is_sound(raw, store_path):
            assert raw is not None
            entries = unpack(raw)["files"]
            if entries and lost_watermark:
                # Open refuses a manifest naming files without a watermark,
                # and points here: set it as below, or repair loops.
                with db.write_batch(sync=True) as batch:
                    batch.put(keys.WATERMARK, _above(entries))
            return None
        if raw is None and watermark is None and not has_files:
            return None  # never compacted: no manifest is right
        rebuilt = rebuild_entries(folder)
        if watermark is not None and len(watermark) == 16:
            rebuilt = _committed_only(rebuilt, watermark, folder)
        with db.write_batch(sync=True) as batch:
            batch.put(
                keys.MANIFEST,
                msgpack.packb({"next": rebuilt.next_file, "files": rebuilt.entries}),
            )
            if rebuilt.entries and lost_watermark:
                batch.put(keys.WATERMARK, _above(rebuilt.entries))
        return rebuilt
    finally:
        db.close()


def _above(entries: list[list[Any]]) -> bytes:
    """The floor of the hot tier for a lost watermark: just above the last
    archived id (compaction's cutoff is exclusive and no id lies between)."""
    last = int.from_bytes(max(e[3] for e in entries), "big")
    return (last + 1).to_bytes(16, "big")


def _committed_only(rebuilt: RebuiltManifest, watermark: bytes, folder: str) -> RebuiltManifest:
    """Leave out the files a surviving watermark shows were never committed.

    A compaction's commit batch writes the manifest and the watermark
    together, and every file it names ends below the watermark. A file
    holding ids at or above it was written by a compaction cut short before
    its commit: its events are still hot, above the floor, so naming it
    would serve them twice. One that starts below the watermark and ends at
    or above it is no file this store commits.
    """
    kept: list[list[Any]] = []
    left = list(rebuilt.left)
    for entry in rebuilt.entries:
        first_id, last_id = entry[2], entry[3]
        if last_id < watermark:
            kept.append(entry)
        elif first_id >= watermark:
            left.append(
                UnexpectedFile(
                    entry[1],
                    "never committed: its events are at or above the watermark, in the hot tier",
                )
            )
        else:
            raise StoreDamaged(
                f"{folder}: {entry[1]} holds ids on both sides of the watermark, which "
                "no file this store commits does, so the manifest cannot be rebuilt; "
                "restore a backup"
            )
    return RebuiltManifest(kept, rebuilt.next_file, sorted(left))
