"""Damaged and hostile ESDB files: CorruptFile, never another exception.

Three kinds of damage: truncation and random byte flips (which the crc32s
must catch), and hostile files whose checksums were recomputed after the
change (which only the structural checks can catch).
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.errors import CorruptFile
from eventstore.esdb import ESDBReader
from eventstore.esdb import writer as writer_mod
from eventstore.esdb.format import CHUNK, FOOTER_SIZE, MAX_RAW, decompress

from .test_esdb_roundtrip import Ev, m_all, m_index, m_stream, sample_events, write_file

EVENTS = sample_events(120, 4)
STREAMS = sorted({e.stream for e in EVENTS})


@functools.cache
def _files() -> dict[str, bytes]:
    """Small files with several blocks, space chunks and ULID chunks (the chunk
    sizes are the writer's choice, read back from the directories)."""
    out = {}
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as folder:
        mp.setattr(writer_mod, "_ULID_CHUNK_ENTRIES", 25)
        mp.setattr(writer_mod, "INDEX_CHUNK_SIZE", 200)
        mp.setattr(writer_mod, "RUN_ENTRIES", 40)
        for codec in ("zstd", "none"):
            path = os.path.join(folder, f"{codec}.esdb")
            write_file(path, EVENTS, block_size=300, codec=codec)
            with open(path, "rb") as f:
                out[codec] = f.read()
    return out


@pytest.fixture
def files() -> dict[str, bytes]:
    return _files()


def exercise(path: str, events: list[Ev] | None) -> None:
    """Open, verify and read everything; with ``events`` given, whatever
    succeeds must be correct. Only CorruptFile may escape."""
    with ESDBReader(path) as r:
        steps: list[tuple[Callable[[], Any], Callable[[], Any] | None]] = [
            (lambda: list(r.spaces()), None),
            (
                lambda: list(r.iter_all_raw()),
                lambda: [
                    (e.stream, e.id16, e.record())
                    for e in sorted(events or [], key=lambda e: (e.stream.encode(), e.id16))
                ],
            ),
            (
                lambda: list(r.read_all()),
                lambda: [e.event() for e in m_all(events or [], None, False, None, None)],
            ),
            (
                lambda: list(r.read_all(backwards=True, types=["Paid"], stream_prefix="a")),
                lambda: [e.event() for e in m_all(events or [], None, True, {"Paid"}, "a")],
            ),
        ]
        for s in [*STREAMS, "zz"]:
            steps += [
                (
                    lambda s=s: list(r.read_stream(s)),
                    lambda s=s: [e.event() for e in m_stream(events or [], s, None, False)],
                ),
                (
                    lambda s=s: list(r.read_stream(s, 3, True)),
                    lambda s=s: [e.event() for e in m_stream(events or [], s, 3, True)],
                ),
                (
                    lambda s=s: list(r.read_index(s, "customer", "c1")),
                    lambda s=s: [
                        e.event() for e in m_index(events or [], s, "customer", "c1", False, True)
                    ],
                ),
                (
                    lambda s=s: list(r.read_index(s, "type", "Paid", backwards=True)),
                    lambda s=s: [
                        e.event() for e in m_index(events or [], s, "type", "Paid", True, True)
                    ],
                ),
                (lambda s=s: list(r.iter_raw(s)), None),
            ]
        for e in EVENTS[::7]:
            steps.append((lambda e=e: r.get(e.id16), lambda e=e: e.event()))
        for run, want in steps:
            try:
                got = run()
            except CorruptFile:
                continue
            if events is not None and want is not None:
                assert got == want()
        with contextlib.suppress(CorruptFile):
            r.verify()


def write(tmp_path: Any, data: bytes, name: str = "x.esdb") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def chunk_offsets(data: bytes) -> list[int]:
    """Offsets of every chunk: they tile the file from the header to the footer."""
    out, off, end = [], 16, len(data) - FOOTER_SIZE
    while off < end:
        out.append(off)
        off += 16 + CHUNK.unpack_from(data, off)[3]
    assert off == end
    return out


def fix_crcs(data: bytearray, offsets: list[int]) -> None:
    """Recompute every chunk crc and the footer crc: the file is 'valid' again."""
    for off in offsets:
        stored_len = CHUNK.unpack_from(data, off)[3]
        stored = bytes(data[off + 16 : off + 16 + stored_len])
        crc = zlib.crc32(stored, zlib.crc32(data[off : off + 12]))
        struct.pack_into("<I", data, off + 12, crc)
    fix_footer(data)


def fix_footer(data: bytearray) -> None:
    fstart = len(data) - FOOTER_SIZE
    struct.pack_into("<I", data, len(data) - 12, zlib.crc32(data[fstart : len(data) - 12]))


# -- random damage ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0, 1, exclude_max=True), codec=st.sampled_from(["zstd", "none"]))
def test_truncation(tmp_path_factory: pytest.TempPathFactory, cut: float, codec: str) -> None:
    data = _files()[codec]
    path = write(tmp_path_factory.mktemp("t"), data[: int(len(data) * cut)])
    with pytest.raises(CorruptFile):
        ESDBReader(path)


@settings(max_examples=60, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
        min_size=1,
        max_size=3,
        unique_by=lambda f: f[0],
    ),
    codec=st.sampled_from(["zstd", "none"]),
)
def test_byte_flips_are_detected(
    tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[float, int]], codec: str
) -> None:
    data = bytearray(_files()[codec])
    spots = {int(len(data) * where): mask for where, mask in flips}
    for spot, mask in spots.items():
        data[spot] ^= mask
    path = write(tmp_path_factory.mktemp("f"), bytes(data))
    try:
        r = ESDBReader(path)
    except CorruptFile:
        return
    with r, pytest.raises(CorruptFile):
        r.verify()  # every byte is under some crc32
    exercise(path, EVENTS)


@settings(max_examples=60, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
    ),
    codec=st.sampled_from(["zstd", "none"]),
)
def test_hostile_bytes_with_valid_checksums(
    tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[float, int]], codec: str
) -> None:
    """Bytes changed and every checksum recomputed: only structure checks remain.
    Reads may return nonsense, but must raise nothing other than CorruptFile."""
    data = bytearray(_files()[codec])
    offsets = chunk_offsets(_files()[codec])
    for where, mask in flips:
        data[16 + int((len(data) - 16 - FOOTER_SIZE) * where)] ^= mask
    try:
        fix_crcs(data, offsets)
    except struct.error:
        return  # a flipped length walked the tiling off the file: plain damage
    path = write(tmp_path_factory.mktemp("h"), bytes(data))
    with contextlib.suppress(CorruptFile):
        exercise(path, None)


@settings(max_examples=60, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, FOOTER_SIZE - 17), st.integers(0, 255)), min_size=1, max_size=3
    ),
    codec=st.sampled_from(["zstd", "none"]),
)
def test_hostile_footer_with_valid_checksum(
    tmp_path_factory: pytest.TempPathFactory, changes: list[tuple[int, int]], codec: str
) -> None:
    data = bytearray(_files()[codec])
    fstart = len(data) - FOOTER_SIZE
    for at, value in changes:
        data[fstart + at] = value
    fix_footer(data)
    path = write(tmp_path_factory.mktemp("ft"), bytes(data))
    with contextlib.suppress(CorruptFile):
        exercise(path, None)


# -- hand-made hostile files -------------------------------------------------


def footer_field(data: bytearray, offset: int, fmt: str, value: Any) -> None:
    struct.pack_into(fmt, data, len(data) - FOOTER_SIZE + offset, value)
    fix_footer(data)


def open_fails(tmp_path: Any, data: bytes | bytearray, match: str) -> None:
    path = write(tmp_path, bytes(data))
    with pytest.raises(CorruptFile, match=match) as info:
        r = ESDBReader(path)
        try:
            exercise(path, None)
            r.verify()
        finally:
            r.close()
    assert info.value.path == path


def test_newer_format_version_is_refused_clearly(tmp_path: Any, files: dict[str, bytes]) -> None:
    data = bytearray(files["zstd"])
    struct.pack_into("<H", data, len(data) - 16, 3)
    open_fails(tmp_path, data, "format version 3 is newer")


@pytest.mark.parametrize(
    "offset, fmt, value, match",
    [
        (0, "<Q", 10**12, "block index offset"),
        (8, "<Q", 3, "space directory offset"),
        (16, "<Q", 2**64 - 1, "ULID directory offset"),
        (32, "<Q", 2**40, "impossible counts"),
        (40, "<Q", 2**33, "impossible counts"),
        (48, "<Q", 0, "empty"),
        (120, "<Q", 2**63, "index region"),
        (104, "<Q", 2**63, "creation time"),
        (128, "<B", 9, "codec"),
        (129, "<B", 0x80, "flags"),
        (138, "<H", 99, "bad footer"),
        (32, "<Q", 121, "ULID index|space|block"),
        (40, "<Q", 3, "space"),
    ],
)
def test_lying_footer(
    tmp_path: Any, files: dict[str, bytes], offset: int, fmt: str, value: int, match: str
) -> None:
    data = bytearray(files["zstd"])
    footer_field(data, offset, fmt, value)
    open_fails(tmp_path, data, match)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "too short"),
        (b"\x89ESDB\r\n\x1a" + bytes(200), "footer magic"),
        (bytes(500), "footer magic"),
    ],
)
def test_not_esdb(tmp_path: Any, data: bytes, match: str) -> None:
    open_fails(tmp_path, data, match)


def test_bad_header(tmp_path: Any, files: dict[str, bytes]) -> None:
    data = bytearray(files["zstd"])
    data[0] = ord("X")
    open_fails(tmp_path, data, "header magic")


@pytest.mark.parametrize(
    "field, value, match",
    [
        (8, MAX_RAW + 1, "limit"),  # raw length beyond the cap
        (8, 2**32 - 1, "limit"),
        (4, 2**32 - 1, "past the end"),  # stored length beyond the file
        (0, ord("Q"), "expected a"),  # wrong kind
        (1, 7, "unknown codec"),
        (8, 1, "declares|decompressed|differ|not smaller"),  # raw length lies (small)
        (8, MAX_RAW, "declares|decompressed|differ"),  # raw length lies (big, allowed)
    ],
)
@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_lying_chunk_headers(
    tmp_path: Any, files: dict[str, bytes], field: int, value: int, match: str, codec: str
) -> None:
    data = bytearray(files[codec])
    offsets = chunk_offsets(files[codec])
    for off in offsets:  # every chunk, one file each: blocks, indexes, directories
        bad = bytearray(data)
        fmt = "<B" if field < 2 else "<I"
        struct.pack_into(fmt, bad, off + field, value)
        fix_crcs(bad, [o for o in offsets if o != off] if field == 4 else offsets)
        path = write(tmp_path, bytes(bad), f"c{off}.esdb")
        with pytest.raises(CorruptFile), ESDBReader(path) as r:
            r.verify()
        exercise(path, None)
    if codec == "zstd":
        # and the message names the problem, for one chunk at least
        bad = bytearray(data)
        struct.pack_into("<B" if field < 2 else "<I", bad, offsets[0] + field, value)
        fix_crcs(bad, offsets if field != 4 else offsets[1:])
        path = write(tmp_path, bytes(bad), "first.esdb")
        with pytest.raises(CorruptFile, match=match), ESDBReader(path) as r:
            r.verify()


def test_zstd_bomb_is_not_inflated(tmp_path: Any, files: dict[str, bytes]) -> None:
    """The first block replaced by a zstd frame of 1 MiB behind a chunk header
    claiming a few bytes more than it stores: refused from the frame header,
    before inflating."""
    data = bytearray(files["zstd"])
    off = chunk_offsets(files["zstd"])[0]
    bomb = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    stored_len = CHUNK.unpack_from(data, off)[3]
    assert len(bomb) < stored_len  # padded to keep every other chunk in place
    head = CHUNK.pack(ord("B"), 2, 0, stored_len, stored_len + 1, 0)
    data[off : off + 16 + stored_len] = head + bomb + bytes(stored_len - len(bomb))
    fix_crcs(data, chunk_offsets(files["zstd"]))
    path = write(tmp_path, bytes(data))
    with ESDBReader(path) as r, pytest.raises(CorruptFile, match="declares 1048576 bytes"):
        list(r.read_stream(STREAMS[0]))


def test_decompression_is_bounded() -> None:
    raw = bytes(1 << 20)
    # zlib streams carry no size: inflation stops at the declared size
    with pytest.raises(CorruptFile, match="does not end"):
        decompress(1, zlib.compress(raw), 2000, "f", 0)
    assert decompress(1, zlib.compress(raw), len(raw), "f", 0) == raw
    # zstd frames must declare their size, and it must be the chunk's
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    for size in (len(no_size) + 1, len(raw)):
        with pytest.raises(CorruptFile, match="declares"):
            decompress(2, no_size, size, "f", 0)


def test_damage_messages_name_file_and_offset(tmp_path: Any, files: dict[str, bytes]) -> None:
    data = bytearray(files["zstd"])
    off = chunk_offsets(files["zstd"])[2]
    data[off + 20] ^= 0xFF
    path = write(tmp_path, bytes(data))
    with ESDBReader(path) as r, pytest.raises(CorruptFile) as info:
        r.verify()
    assert info.value.path == path and info.value.offset == off
    assert "checksum" in str(info.value) and path in str(info.value)


def test_a_space_chunk_out_of_order_is_refused_not_misread(tmp_path: Any) -> None:
    """Point lookups binary-search a space chunk's raw names (issue 19): a
    chunk whose names are out of order, checksums recomputed, must refuse,
    never answer that a stream it holds is absent."""
    data = bytearray(_files()["none"])
    offsets = chunk_offsets(_files()["none"])
    space_chunks = [o for o in offsets if CHUNK.unpack_from(data, o)[0] == ord("S")]
    first = space_chunks[0] + 16  # the payload: n, offsets, then entries
    (n,) = struct.unpack_from("<I", data, first)
    name_at = first + 8 + 4 * n + 2
    assert n >= 2 and data[name_at : name_at + 1] == b"a"
    data[name_at] = ord("b")  # "b" before "a/b": out of order, and not the directory's
    fix_crcs(data, offsets)
    path = write(tmp_path, bytes(data))
    with ESDBReader(path) as r:
        for stream in ("a", "a/b"):
            with pytest.raises(CorruptFile, match="space chunk"):
                r.space(stream)
            with pytest.raises(CorruptFile):
                list(r.read_stream(stream))
