"""Every value byte of a LevelDB table file, decompressed (for the on-disk erasure proof).

LevelDB compresses table blocks with snappy, which may encode a repeated run
of bytes as a back-reference: a marker could hide from a plain grep. This
reads the table format (LevelDB's doc/table_format.md) and returns each
block's decompressed contents, so that a search sees every byte stored.
"""

from __future__ import annotations

TABLE_MAGIC = 0xDB4775248B80FB57


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def snappy_decompress(data: bytes) -> bytes:
    length, at = _varint(data, 0)
    out = bytearray()
    while at < len(data):
        tag = data[at]
        at += 1
        kind = tag & 3
        if kind == 0:  # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[at : at + extra], "little")
                at += extra
            n += 1
            out += data[at : at + n]
            at += n
            continue
        if kind == 1:
            n = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[at]
            at += 1
        elif kind == 2:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[at : at + 2], "little")
            at += 2
        else:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[at : at + 4], "little")
            at += 4
        for _ in range(n):  # byte by byte: a copy may overlap what it writes
            out.append(out[-offset])
    assert len(out) == length, (len(out), length)
    return bytes(out)


def _block(data: bytes, offset: int, size: int) -> bytes:
    raw = data[offset : offset + size]
    kind = data[offset + size]
    return snappy_decompress(raw) if kind == 1 else raw


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    at = 0
    key = b""
    out = []
    while at < end:
        shared, at = _varint(block, at)
        unshared, at = _varint(block, at)
        vlen, at = _varint(block, at)
        key = key[:shared] + block[at : at + unshared]
        at += unshared
        out.append((key, block[at : at + vlen]))
        at += vlen
    return out


def table_blocks(data: bytes) -> list[bytes]:
    """The decompressed data blocks of a table file (its index block included)."""
    footer = data[-48:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        return []
    _meta_off, at = _varint(footer, 0)
    _meta_size, at = _varint(footer, at)
    index_off, at = _varint(footer, at)
    index_size, at = _varint(footer, at)
    index = _block(data, index_off, index_size)
    blocks = [index]
    for _key, handle in _entries(index):
        off, at = _varint(handle, 0)
        size, _ = _varint(handle, at)
        blocks.append(_block(data, off, size))
    return blocks
