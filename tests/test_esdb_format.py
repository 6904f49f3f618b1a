"""docs/FORMAT.md is the truth: its worked example is what the writer writes,
and a reader written from the page alone (below, sharing no code with
eventstore.esdb) reads what ESDBReader reads."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import zstandard

from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.records import encode_record

from .test_esdb_roundtrip import sample_events, write_file

DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def test_worked_example_is_what_the_writer_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "tiny.esdb")
    ids = [bytes.fromhex("0190a0b0c0d0" + "00" * 9 + f"0{i}") for i in (1, 2)]
    with (
        mock.patch("time.time_ns", return_value=1_720_000_000_000_000_000),
        ESDBWriter(path, codec="none") as w,
    ):
        w.add("c1", ids[0], encode_record(0, 1, "page", {"url": "/"}, None, {}))
        w.add("c1", ids[1], encode_record(1, 2, "buy", {"total": "9.99"}, None, {"sku": "x1"}))
    data = Path(path).read_bytes()
    text = DOC.read_text()
    dump = text[text.index("```\n0000  89 45") + 4 :]
    dump = dump[: dump.index("```")]
    doc_bytes = bytearray()
    for line in dump.splitlines():
        m = re.match(r"([0-9a-f]{4})  ((?:[0-9a-f]{2} ?)+)", line)
        assert m is not None, line
        assert int(m.group(1), 16) == len(doc_bytes)
        doc_bytes += bytes.fromhex(m.group(2))
    assert bytes(doc_bytes) == data
    assert f"The file is {len(data)} bytes" in text


# -- an independent reader, from docs/FORMAT.md only -------------------------


class SpecReader:
    def __init__(self, data: bytes) -> None:
        self.d = data
        assert data[:8] == b"\x89ESDB\r\n\x1a" and data[-8:] == b"\x1a\n\rBDSE\x89"
        f = len(data) - 152
        assert struct.unpack_from("<HH", data, f + 136) == (1, 152)
        assert zlib.crc32(data[f : f + 140]) == struct.unpack_from("<I", data, f + 140)[0]
        (self.k, self.dd, self.u, self.t, self.events, self.spaces, self.blocks) = (
            struct.unpack_from("<7Q", data, f)
        )
        self.index_types = bool(data[f + 129] & 1)

    def chunk(self, off: int, kind: str) -> bytes:
        k, codec, _, s, r, crc = struct.unpack_from("<BBHIII", self.d, off)
        assert chr(k) == kind
        stored = self.d[off + 16 : off + 16 + s]
        assert zlib.crc32(stored, zlib.crc32(self.d[off : off + 12])) == crc
        raw = {
            0: lambda b: b,
            1: zlib.decompress,
            2: lambda b: zstandard.ZstdDecompressor().decompress(b),
        }[codec](stored)
        assert len(raw) == r
        return bytes(raw)

    @staticmethod
    def name(b: bytes, p: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from("<H", b, p)
        return b[p + 2 : p + 2 + n], p + 2 + n

    def space_list(self) -> list[dict[str, Any]]:
        d = self.chunk(self.dd, "D")
        (c,) = struct.unpack_from("<I", d, 0)
        out: list[dict[str, Any]] = []
        p = 4
        for _ in range(c):
            off, _first = struct.unpack_from("<QQ", d, p)
            _, p = self.name(d, p + 16)
            s = self.chunk(off, "S")
            (m,) = struct.unpack_from("<I", s, 0)
            offs = struct.unpack_from(f"<{m + 1}I", s, 4)
            for i in range(m):
                stream, q = self.name(s, 8 + 4 * m + offs[i])
                fp, cnt, fv, _fid, _lid, x, _rb, _ib = struct.unpack_from("<QQQ16s16sQQQ", s, q)
                out.append(
                    dict(stream=stream.decode(), first_pos=fp, count=cnt, first_version=fv, x=x)
                )
        return out

    def record_at(self, pos: int) -> tuple[bytes, bytes]:
        k = self.chunk(self.k, "K")
        entries = list(struct.iter_unpack("<QQ", k))
        bi = max(i for i, (_, first) in enumerate(entries) if first <= pos)
        b = self.chunk(entries[bi][0], "B")
        (n,) = struct.unpack_from("<I", b, 0)
        i = pos - entries[bi][1]
        o = struct.unpack_from(f"<{n + 1}I", b, 4 + 16 * n)
        base = 8 + 20 * n
        return b[4 + 16 * i : 20 + 16 * i], b[base + o[i] : base + o[i + 1]]

    def index(self, sp: dict[str, Any], name: bytes, value: bytes) -> list[int]:
        if not sp["x"]:
            return []
        x = self.chunk(sp["x"], "X")
        k, q, t = struct.unpack_from("<IIQ", x, 0)
        pch = struct.unpack_from(f"<{q}Q", x, 16)
        koffs = struct.unpack_from(f"<{k + 1}I", x, 16 + 8 * q)
        base = 16 + 8 * q + 4 * (k + 1)
        if q == 0:
            postings = list(struct.unpack_from(f"<{t}I", x, base + koffs[k]))
        else:
            postings = [
                p
                for off in pch
                for p in struct.unpack(f"<{len(self.chunk(off, 'P')) // 4}I", self.chunk(off, "P"))
            ]
        for i in range(k):
            kn, p = self.name(x, base + koffs[i])
            kv, p = self.name(x, p)
            start, count = struct.unpack_from("<QQ", x, p)
            if (kn, kv) == (name, value):
                return postings[start : start + count]
        return []

    def all_ids(self) -> list[bytes]:
        u = self.chunk(self.u, "U")
        (c,) = struct.unpack_from("<I", u, 0)
        out = []
        for i in range(c):
            _first, off, n = struct.unpack_from("<16sQI", u, 4 + 28 * i)
            ichunk = self.chunk(off, "I")
            out += [ichunk[4 + 16 * j : 20 + 16 * j] for j in range(n)]
        return out


def test_independent_reader_agrees(tmp_path: Path) -> None:
    events = sample_events(300, 5)
    for codec in ("zstd", "zlib", "none"):
        path = str(tmp_path / f"{codec}.esdb")
        write_file(path, events, block_size=500, codec=codec)
        spec = SpecReader(Path(path).read_bytes())
        with ESDBReader(path) as r:
            assert spec.events == r.meta.event_count and spec.blocks == r.meta.block_count
            spaces = spec.space_list()
            assert [s["stream"] for s in spaces] == [s.stream for s in r.spaces()]
            for sp in spaces:
                mine = [spec.record_at(sp["first_pos"] + i) for i in range(sp["count"])]
                assert mine == list(r.iter_raw(sp["stream"]))
                for ev in r.read_stream(sp["stream"]):
                    id16, raw = mine[ev.version - sp["first_version"]]
                    assert id16 == ev.id.bytes
                    assert msgpack.unpackb(raw)[2] == ev.type
                for name, value in ((b"type", b"Paid"), (b"customer", b"c2")):
                    rels = spec.index(sp, name, value)
                    got = r.read_index(sp["stream"], name.decode(), value.decode())
                    assert [sp["first_version"] + x for x in rels] == [e.version for e in got]
            assert spec.all_ids() == [e.id.bytes for e in r.read_all()]
