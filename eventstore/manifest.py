"""LevelDB's MANIFEST and info LOG, rewritten so that no removed key is left in them.

LevelDB appends a version edit to its MANIFEST at every flush and compaction,
naming each new table with its smallest and largest key, and it keeps per
level a *compaction pointer*: the largest key of the last compaction there,
carried into every new MANIFEST forever. Its info LOG names the bounds of
every manual compaction. A key holds a stream name and index values, so a
removed event's key outlives its record in these files (seen: the index key
of a scavenged event as a level's compaction pointer, through any number of
reopens).

So, with the database closed, :func:`scrub` replaces the MANIFEST by one
edit describing the live tables alone and no compaction pointer (they only
say where the next size-triggered compaction at a level starts: without
them it starts at the level's first key), and deletes ``LOG`` and
``LOG.old``. The steps are LevelDB's own for a new MANIFEST: the file written
and fsynced under a number nothing uses, ``CURRENT`` replaced through a
temporary file renamed over it, the folder fsynced, the old MANIFEST deleted
after. A crash anywhere leaves ``CURRENT`` naming a whole MANIFEST. Formats:
LevelDB's doc/log_format.md and db/version_edit.cc.
"""

from __future__ import annotations

import contextlib
import os
import re

from .errors import CorruptFile

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4

# Version edit tags (db/version_edit.cc).
_COMPARATOR = 1
_LOG_NUMBER = 2
_NEXT_FILE = 3
_LAST_SEQUENCE = 4
_COMPACT_POINTER = 5
_DELETED_FILE = 6
_NEW_FILE = 7
_PREV_LOG_NUMBER = 9


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C = _crc32c_table()


def mask(crc: int) -> int:
    """LevelDB's masked form of a finished CRC32C state (``crc`` not yet inverted)."""
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _checksum(kind: int, payload: bytes) -> int:
    table = CRC32C
    crc = 0xFFFFFFFF
    for byte in bytes((kind,)) + payload:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return mask(crc)


def _records(data: bytes, path: str) -> list[tuple[int, bytes]]:
    """The records of a LevelDB log file (offset, payload), every checksum checked."""
    out: list[tuple[int, bytes]] = []
    parts: list[bytes] | None = None
    start = pos = 0
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left  # the block's zero trailer
            continue
        crc = int.from_bytes(data[pos : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0:
            pos += left  # zeros to the end of the block
            continue
        payload = data[pos + _HEADER : pos + _HEADER + length]
        if len(payload) != length or _checksum(kind, payload) != crc:
            raise CorruptFile(path, pos, "a LevelDB log record's checksum or length is wrong")
        pos += _HEADER + length
        if kind == _FULL and parts is None:
            out.append((pos - _HEADER - length, payload))
        elif kind == _FIRST and parts is None:
            start = pos - _HEADER - length
            parts = [payload]
        elif kind == _MIDDLE and parts is not None:
            parts.append(payload)
        elif kind == _LAST and parts is not None:
            out.append((start, b"".join(parts) + payload))
            parts = None
        else:
            raise CorruptFile(path, pos - _HEADER - length, "a LevelDB log record is out of order")
    return out


def _log_file(records: list[bytes]) -> bytes:
    """``records`` in LevelDB's log format."""
    out = bytearray()
    for record in records:
        rest = record
        first = True
        while True:
            left = _BLOCK - len(out) % _BLOCK
            if left < _HEADER:
                out += bytes(left)
                left = _BLOCK
            piece, rest = rest[: left - _HEADER], rest[left - _HEADER :]
            last = not rest
            kind = _FULL if first and last else _FIRST if first else _LAST if last else _MIDDLE
            out += _checksum(kind, piece).to_bytes(4, "little")
            out += len(piece).to_bytes(2, "little") + bytes((kind,)) + piece
            first = False
            if last:
                break
    return bytes(out)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a varint runs past its record")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _slice(data: bytes, at: int) -> tuple[bytes, int]:
    n, at = _varint(data, at)
    if at + n > len(data):
        raise ValueError("a slice runs past its record")
    return data[at : at + n], at + n


def _put_slice(value: bytes) -> bytes:
    return _put_varint(len(value)) + value


class _Version:
    """What a MANIFEST's edits add up to."""

    def __init__(self) -> None:
        self.comparator: bytes | None = None
        self.numbers: dict[int, int] = {}  # tag -> value: log, prev log, next file, last seq
        self.files: dict[tuple[int, int], tuple[int, bytes, bytes]] = {}

    def apply(self, edit: bytes) -> None:
        at = 0
        while at < len(edit):
            tag, at = _varint(edit, at)
            if tag == _COMPARATOR:
                self.comparator, at = _slice(edit, at)
            elif tag in (_LOG_NUMBER, _PREV_LOG_NUMBER, _NEXT_FILE, _LAST_SEQUENCE):
                self.numbers[tag], at = _varint(edit, at)
            elif tag == _COMPACT_POINTER:
                _level, at = _varint(edit, at)
                _key, at = _slice(edit, at)  # dropped: see the module's docstring
            elif tag == _DELETED_FILE:
                level, at = _varint(edit, at)
                number, at = _varint(edit, at)
                self.files.pop((level, number), None)
            elif tag == _NEW_FILE:
                level, at = _varint(edit, at)
                number, at = _varint(edit, at)
                size, at = _varint(edit, at)
                smallest, at = _slice(edit, at)
                largest, at = _slice(edit, at)
                self.files[(level, number)] = (size, smallest, largest)
            else:
                raise ValueError(f"unknown version edit tag {tag}")

    def snapshot(self, next_file: int) -> bytes:
        """One edit describing this version, with ``next_file`` as the next file number."""
        out = bytearray()
        if self.comparator is not None:
            out += _put_varint(_COMPARATOR) + _put_slice(self.comparator)
        for tag in (_LOG_NUMBER, _PREV_LOG_NUMBER, _LAST_SEQUENCE):
            if tag in self.numbers:
                out += _put_varint(tag) + _put_varint(self.numbers[tag])
        out += _put_varint(_NEXT_FILE) + _put_varint(next_file)
        for (level, number), (size, smallest, largest) in sorted(self.files.items()):
            out += _put_varint(_NEW_FILE) + _put_varint(level) + _put_varint(number)
            out += _put_varint(size) + _put_slice(smallest) + _put_slice(largest)
        return bytes(out)


_NUMBERED = re.compile(r"(?:MANIFEST-)?(\d+)(?:\.\w+)?$")


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def scrub(folder: str) -> None:
    """Rewrite the MANIFEST of the closed LevelDB database in ``folder`` as
    its live tables alone, and delete its info logs (see the module's docstring).

    Raises:
        CorruptFile: ``CURRENT`` or the MANIFEST is damaged (nothing is changed).
        OSError: reading or writing failed.
    """
    current_path = os.path.join(folder, "CURRENT")
    with open(current_path, "rb") as f:
        current = f.read().decode("ascii", "replace")
    old = current.strip()
    if not current.endswith("\n") or not re.fullmatch(r"MANIFEST-\d+", old):
        raise CorruptFile(current_path, 0, f"names no MANIFEST: {current!r}")
    path = os.path.join(folder, old)
    with open(path, "rb") as f:
        data = f.read()
    version = _Version()
    for offset, edit in _records(data, path):
        try:
            version.apply(edit)
        except ValueError as exc:
            raise CorruptFile(path, offset, f"a version edit is damaged ({exc})") from None
    if _NEXT_FILE not in version.numbers or _LAST_SEQUENCE not in version.numbers:
        raise CorruptFile(path, len(data), "no next file number or last sequence")
    # A number above every file's in the folder and the MANIFEST's next:
    # nothing LevelDB made or may make under that number.
    used = [version.numbers[_NEXT_FILE]]
    for name in os.listdir(folder):
        found = _NUMBERED.match(name)
        if found:
            used.append(int(found.group(1)))
    number = max(used) + 1
    new = f"MANIFEST-{number:06d}"
    _write_synced(os.path.join(folder, new), _log_file([version.snapshot(number + 1)]))
    temp = os.path.join(folder, f"{number:06d}.dbtmp")  # LevelDB deletes one left behind
    _write_synced(temp, f"{new}\n".encode())
    os.replace(temp, os.path.join(folder, "CURRENT"))
    _fsync_dir(folder)
    # With the database closed LevelDB reads only the MANIFEST that CURRENT
    # names: others are left by a crash (its own, or one of this), and may
    # hold removed keys.
    stale = [n for n in os.listdir(folder) if n.startswith("MANIFEST-") and n != new]
    for name in (*stale, "LOG", "LOG.old"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    _fsync_dir(folder)


__all__ = ["CRC32C", "mask", "scrub"]
