"""ESDBWriter refuses bad input without changing state, writes atomically,
and keeps its memory bounded (sort runs and space index spilled to disk)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from eventstore.errors import InvalidArgument, InvalidName
from eventstore.esdb import ESDBReader, ESDBWriter
from eventstore.esdb import writer as writer_mod
from eventstore.records import encode_record

from .test_esdb_roundtrip import check_everything, make_events, sample_events, write_file


def rec(version: int, seq: int = 1, type_: str = "T", indexes: Any = None) -> bytes:
    return encode_record(version, seq, type_, {"v": version}, None, indexes or {})


def uid(n: int) -> bytes:
    return n.to_bytes(16, "big")


@pytest.fixture
def w(tmp_path: Any) -> Any:
    writer = ESDBWriter(str(tmp_path / "f.esdb"))
    yield writer
    writer.abort()


def test_refuses_streams_out_of_order(w: ESDBWriter) -> None:
    w.add("b", uid(1), rec(0))
    with pytest.raises(InvalidArgument, match="UTF-8 byte order"):
        w.add("a", uid(2), rec(0))


def test_refuses_a_stream_that_comes_back(w: ESDBWriter) -> None:
    w.add("a", uid(1), rec(0))
    w.add("b", uid(2), rec(0))
    with pytest.raises(InvalidArgument, match="together"):
        w.add("a", uid(3), rec(1))


def test_orders_streams_by_utf8_bytes(w: ESDBWriter) -> None:
    # "Z" < "z" < "\u00e9" < "\U0001f600" in UTF-8 bytes (5a, 7a, c3 a9, f0 9f ...).
    for n, stream in enumerate(["Z", "z", "\u00e9", "\U0001f600"]):
        w.add(stream, uid(n + 1), rec(0))
    with pytest.raises(InvalidArgument):
        w.add("\u00e9t\u00e9", uid(9), rec(0))


@pytest.mark.parametrize("second", [1, 0])
def test_refuses_ulids_not_increasing(w: ESDBWriter, second: int) -> None:
    w.add("a", uid(1), rec(0))
    with pytest.raises(InvalidArgument, match="strictly increase"):
        w.add("a", uid(second), rec(1))


@pytest.mark.parametrize("version", [0, 2, 7])
def test_refuses_version_gaps(w: ESDBWriter, version: int) -> None:
    w.add("a", uid(1), rec(0))
    with pytest.raises(InvalidArgument, match="contiguous"):
        w.add("a", uid(2), rec(version))


@pytest.mark.parametrize(
    "stream, id16, record, error",
    [
        ("", uid(1), rec(0), InvalidName),
        ("a\x00b", uid(1), rec(0), InvalidName),
        (5, uid(1), rec(0), InvalidName),
        ("a", b"short", rec(0), InvalidArgument),
        ("a", uid(1), "not bytes", InvalidArgument),
        ("a", uid(1), b"\xc1garbage", InvalidArgument),
        ("a", uid(1), encode_record(0, 1, "T", 1, 2, {}) + b"x", InvalidArgument),
        ("a", uid(1), b"\x93\x01\x02\x03", InvalidArgument),
        ("a", uid(1), encode_record(-1, 1, "T", None, None, {}), InvalidArgument),
        ("a", uid(1), encode_record(0, -5, "T", None, None, {}), InvalidArgument),
        ("a", uid(1), encode_record(0, 1, "T", None, None, {"k": 1}), InvalidArgument),  # type: ignore[dict-item]
        # data no reader can decode: invalid UTF-8, an array as a map key, a
        # timestamp ext of the wrong length (must not reach an immutable file)
        ("a", uid(1), b"\x96\x00\x01\xa1T\xa2\xff\xfe\xc0\x80", InvalidArgument),
        ("a", uid(1), b"\x96\x00\x01\xa1T\x81\x91\x01\x02\xc0\x80", InvalidArgument),
        ("a", uid(1), b"\x96\x00\x01\xa1T\xd4\xff\x00\xc0\x80", InvalidArgument),
    ],
)
def test_refuses_malformed_input(
    w: ESDBWriter, stream: Any, id16: Any, record: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        w.add(stream, id16, record)


def test_refusal_leaves_the_writer_usable(tmp_path: Any) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path)
    w.add("a", uid(1), rec(0))
    for bad in (
        ("a", uid(1), rec(1)),
        ("a", uid(2), rec(5)),
        ("0", uid(3), rec(0)),
        ("b", uid(4), b"junk"),
        ("b", uid(4), rec(0)[:-3]),  # truncated: must not leave half a record behind
        ("b", uid(4), rec(0) + b"\x01"),  # trailing bytes
    ):
        with pytest.raises(InvalidArgument):
            w.add(*bad)
    w.add("a", uid(2), rec(1, 2))
    w.add("b", uid(3), rec(0, 3))
    meta = w.finish()
    assert (meta.event_count, meta.space_count) == (3, 2)
    with ESDBReader(path) as r:
        r.verify()
        assert [e.version for e in r.read_stream("a")] == [0, 1]


def test_refuses_a_ulid_twice_across_streams(tmp_path: Any) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path)
    w.add("a", uid(5), rec(0))
    w.add("b", uid(5), rec(0))
    with pytest.raises(InvalidArgument, match="twice"):
        w.finish()
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")


def test_file_appears_only_at_finish(tmp_path: Any) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path)
    w.add("a", uid(1), rec(0))
    assert not os.path.exists(path) and os.path.exists(path + ".tmp")
    w.finish()
    assert os.path.exists(path) and not os.path.exists(path + ".tmp")
    with pytest.raises(InvalidArgument):
        w.add("b", uid(2), rec(0))
    with pytest.raises(InvalidArgument):
        w.finish()


def test_context_manager_aborts_on_exception(tmp_path: Any) -> None:
    path = str(tmp_path / "f.esdb")
    with pytest.raises(RuntimeError), ESDBWriter(path) as w:
        w.add("a", uid(1), rec(0))
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_abort_removes_the_temporary_file(tmp_path: Any) -> None:
    w = ESDBWriter(str(tmp_path / "f.esdb"))
    w.add("a", uid(1), rec(0))
    w.abort()
    w.abort()
    assert os.listdir(tmp_path) == []


def test_never_overwrites_an_existing_file(tmp_path: Any) -> None:
    path = tmp_path / "f.esdb"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        ESDBWriter(str(path))
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize("kwargs", [{"codec": "lz4"}, {"block_size": 0}, {"block_size": "big"}])
def test_refuses_bad_options(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        ESDBWriter(str(tmp_path / "f.esdb"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_user_type_index_with_types_off(tmp_path: Any) -> None:
    path = str(tmp_path / "f.esdb")
    with ESDBWriter(path, index_types=False) as w:
        w.add("a", uid(1), rec(0, type_="X", indexes={"type": "custom"}))
    with ESDBReader(path) as r:
        r.verify()
        assert [e.version for e in r.read_index("a", "type", "custom")] == [0]
        assert list(r.read_index("a", "type", "X")) == []


def test_memory_stays_bounded(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sort runs spill at RUN_ENTRIES, the space index at its chunk size,
    blocks at block_size: nothing in memory grows with the file."""
    monkeypatch.setattr(writer_mod, "RUN_ENTRIES", 100)
    monkeypatch.setattr(writer_mod, "INDEX_CHUNK_SIZE", 500)
    streams = [f"s{i:04d}" for i in range(300)]
    events = make_events(streams, [i * 37 % 300 for i in range(3000)], ["T"], {}, [1], [{}])
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path, block_size=1000)
    high_run = high_spaces = high_block = 0
    for e in sorted(events, key=lambda e: (e.stream, e.id16)):
        w.add(e.stream, e.id16, e.record())
        high_run = max(high_run, len(w._run))
        high_spaces = max(high_spaces, len(w._sp_entries))
        high_block = max(high_block, len(w._blk_ids))
    assert len(w._run_bounds) >= 29  # the ULID index went to disk in sorted runs
    assert len(w._space_dir) > 10  # the space index went to the spool in chunks
    assert high_run < 100 and high_spaces < 20 and high_block < 100
    w.finish()
    with ESDBReader(path) as r:
        r.verify()
        assert [e.id.bytes for e in r.read_all()] == sorted(e.id16 for e in events)
        assert [s.stream for s in r.spaces()] == streams
        for e in events[::97]:
            assert r.get(e.id16) == e.event()


def test_sample_with_spilled_runs(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "RUN_ENTRIES", 64)
    events = sample_events(700)
    path = str(tmp_path / "f.esdb")
    write_file(path, events)
    check_everything(path, events)


# Records refused on their own, as an event that continues a stream (version
# 2 after versions 0 and 1). Whether decoded in full or walked (as compaction does),
# the writer refuses them and stays usable.
CONTINUING_BAD = [
    b"\xc1garbage",
    encode_record(2, 1, "T", 1, 2, {}) + b"x",  # bytes after the record
    encode_record(2, 1, "T", {"a": [1, 2]}, 2, {})[:-4],  # truncated inside the data
    b"\x93\x02\x02\x03",  # three fields
    encode_record(2, -5, "T", None, None, {}),
    encode_record(2, 1, "T", None, None, {"k": 1}),  # type: ignore[dict-item]
    b"\x96\x02\x01\x05\xc0\xc0\x80",  # a type that is not a str
    encode_record(5, 1, "T", None, None, {}),  # a version gap
]


@pytest.mark.parametrize("walk", [False, True], ids=["decoded", "walked"])
@pytest.mark.parametrize("bad", CONTINUING_BAD)
def test_add_stream_refuses_what_add_refuses(tmp_path: Any, bad: bytes, walk: bool) -> None:
    path = str(tmp_path / "f.esdb")
    w = ESDBWriter(path, decoder=writer_mod.WalkData() if walk else None)
    w.add_stream("a", [(uid(1), rec(0, 1))])
    with pytest.raises(InvalidArgument):
        w.add_stream("a", [(uid(2), rec(1, 2)), (uid(3), bad)])
    with pytest.raises(InvalidArgument):
        w.add("a", uid(3), bad)
    assert w.events == 2
    w.add_stream("a", [(uid(3), rec(2, 3)), (uid(4), rec(3, 4))])
    w.add_stream("b", iter([(uid(5), rec(0, 5))]))
    w.add_stream("b", [])
    meta = w.finish()
    assert (meta.event_count, meta.space_count, meta.first_seq, meta.last_seq) == (5, 2, 1, 5)
    with ESDBReader(path) as r:
        r.verify()
        assert [(e.version, e.id.bytes) for e in r.read_stream("a")] == [
            (n, uid(n + 1)) for n in range(4)
        ]
        assert [e.data for e in r.read_stream("a")] == [{"v": n} for n in range(4)]
        assert r.get(uid(5)) is not None and r.meta.first_id == uid(1)


def test_only_a_full_decode_refuses_data_no_reader_can_decode(tmp_path: Any) -> None:
    # An array as a map key in the data: well-formed msgpack, undecodable.
    # The default decoder refuses it; WalkData is for records the store has
    # already proven decodable, so it is not asked to.
    bad = b"\x96\x01\x01\xa1T\x81\x91\x01\x02\xc0\x80"
    for decoder, refused in ((None, True), (writer_mod.WalkData(), False)):
        w = ESDBWriter(str(tmp_path / f"{refused}.esdb"), decoder=decoder)
        w.add_stream("a", [(uid(1), rec(0))])
        if refused:
            with pytest.raises(InvalidArgument):
                w.add_stream("a", [(uid(2), bad)])
        else:
            w.add_stream("a", [(uid(2), bad)])
        w.abort()


def test_add_stream_refuses_a_version_past_the_format_limit(tmp_path: Any) -> None:
    w = ESDBWriter(str(tmp_path / "f.esdb"))
    with pytest.raises(InvalidArgument, match="out of range"):
        w.add_stream("a", [(uid(1), rec((1 << 63) - 1)), (uid(2), rec(1 << 63))])
    assert w.events == 1
    w.abort()
