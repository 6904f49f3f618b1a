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
    open_files,
    open_reader,
    parse_name,
    rebuild_entries,
)
from .errors import CorruptFile, StoreDamaged, UnsafePath
from .hot import open_leveldb
from .records import record_version, unpack
from .segments import Strays

CONFIG = keys.system_key(b"config")


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
    log). The store must be closed; one synced batch writes both.

    Then the other system keys open needs: a record of files being made
    that does not decode is dropped, and every stream's recorded version is
    raised to its newest event (a damaged block may have taken them)."""
    folder = os.path.join(store_path, ARCHIVE_DIR)
    db = open_leveldb(os.path.join(store_path, "hot"), create=False)
    try:
        rebuilt = _restore_manifest(db, store_path, folder)
        _restore_config(db, folder)
        _restore_strays(db)
        _restore_versions(db, folder)
        return rebuilt
    finally:
        db.close()


def _restore_manifest(db: Any, store_path: str, folder: str) -> RebuiltManifest | None:
    raw = db.get(keys.MANIFEST)
    watermark = db.get(keys.WATERMARK)
    has_files = any(p is not None and not p[1] for p in map(parse_name, listing(folder)))
    lost_watermark = watermark is None or len(watermark) != 16
    if _manifest_is_sound(raw, store_path):
        assert raw is not None
        manifest = unpack(raw)
        entries = manifest["files"]
        # Open refuses a manifest naming a file that is missing, does not
        # open, or is not the one recorded, and points here: such a file's
        # events are lost (the log's gap shows them, and repair records
        # them); the file itself, if any, is left alone.
        whole = [e for e in entries if _opens(folder, e)]
        if entries and (lost_watermark or len(whole) != len(entries)):
            # Open also refuses a manifest naming files without a
            # watermark: set it as below, or repair loops.
            with db.write_batch(sync=True) as batch:
                if len(whole) != len(entries):
                    batch.put(
                        keys.MANIFEST, msgpack.packb({"next": manifest["next"], "files": whole})
                    )
                if lost_watermark:
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


def _restore_config(db: Any, folder: str) -> None:
    """Write the configuration again if it is lost or does not decode while
    the store holds data (open refuses that, pointing here). ``index_types``
    is read from the flags of a file the manifest names, else from whether
    the oldest hot event is filed under ``type=`` its type."""
    raw = db.get(CONFIG)
    if raw is not None:
        try:
            config = unpack(raw)
            if isinstance(config, dict) and isinstance(config.get("layout"), int):
                return  # sound (or a newer layout's: not for a repair to change)
        except Exception:  # msgpack raises several unrelated types
            pass
    index_types: bool | None = None
    manifest = db.get(keys.MANIFEST)  # sound by now: only the store's own files
    for entry in [] if manifest is None else unpack(manifest)["files"]:
        name = entry[1]
        try:
            reader, _crc = open_reader(os.path.join(folder, name))
        except (CorruptFile, UnsafePath, OSError):
            continue
        with reader:
            if reader.meta.event_count:
                index_types = reader.meta.index_types
                break
    if index_types is None:
        it = db.iterator(prefix=keys.EVENT)
        try:
            first = next(it, None)
        finally:
            it.close()
        if first is None:
            index_types = True  # the default: no event was filed either way
        else:
            key, value = first
            stream_b, id16 = key[1 : key.index(keys.SEP)], key[-16:]
            type_b = str(unpack(value)[2]).encode()
            index_types = db.get(keys.index_key(stream_b, b"type", type_b, id16)) is not None
    db.put(
        CONFIG,
        msgpack.packb({"layout": keys.LAYOUT_VERSION, "index_types": index_types}),
        sync=True,
    )


def _restore_strays(db: Any) -> None:
    """Drop a record of files being made that does not decode (open refuses
    it, pointing here). Safe: without it, leftover files are left alone and
    reported, never deleted, and repair then rewrites every segment key."""
    try:
        strays = Strays.load(db)
        if all(type(n) is int for n in strays.making | strays.retired):
            return
    except Exception:  # msgpack raises several unrelated types
        pass
    db.delete(keys.STRAY, sync=True)


def _restore_versions(db: Any, folder: str) -> None:
    """Raise each stream's recorded version (its ``m`` key) to its newest
    event, hot or archived. A damaged block that took ``m`` keys leaves the
    stream looking new: an append expecting no stream would then write its
    versions a second time. A version above the events (theirs were lost)
    stays: versions are never handed out twice."""
    newest: dict[bytes, int] = {}
    raw = db.get(keys.MANIFEST)
    entries = [] if raw is None else unpack(raw)["files"]
    for entry in entries:
        try:
            reader, _crc = open_reader(os.path.join(folder, entry[1]))
        except (CorruptFile, UnsafePath, OSError):
            continue  # its events are lost; the log's gap tells
        with reader:
            for sp in reader.spaces(cache=False):
                stream_b = sp.stream.encode()
                newest[stream_b] = max(newest.get(stream_b, -1), sp.last_version)
    for key, value in db.iterator(prefix=keys.EVENT):
        stream_b = key[1 : key.index(keys.SEP)]
        version = record_version(value)
        if version > newest.get(stream_b, -1):
            newest[stream_b] = version
    with db.write_batch(sync=True) as batch:
        for stream_b, version in newest.items():
            recorded = db.get(keys.meta_key(stream_b))
            try:
                known = -1 if recorded is None else int(msgpack.unpackb(recorded)[0])
            except Exception:  # a value that does not decode
                known = -1
            if known < version:
                batch.put(keys.meta_key(stream_b), msgpack.packb([version]))


def _opens(folder: str, entry: list[Any]) -> bool:
    """Whether the file of a manifest entry opens and is the one recorded."""
    try:
        (f,) = open_files(folder, [entry])
    except (StoreDamaged, CorruptFile, UnsafePath, OSError):
        return False
    f.reader.close()
    return True


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
