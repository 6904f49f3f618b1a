"""The ESDB conformance corpus (conformance/): the committed files are what
scripts/make_conformance.py makes, and this project's reader gives the
outcome written beside each one, within bounded time and memory."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import struct
import sys
import time
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore.errors import CorruptFile
from eventstore.esdb import ESDBReader
from eventstore.events import Query, QueryItem

from . import spec_decoder as sd

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "conformance"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_conformance", ROOT / "scripts" / "make_conformance.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_conformance"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cases() -> list[str]:
    return sorted(p.stem for p in CORPUS.glob("*.esdb"))


def _expected(name: str) -> dict[str, Any]:
    with open(CORPUS / f"{name}.json", encoding="utf-8") as f:
        out: dict[str, Any] = json.load(f)
    return out


def test_corpus_is_what_the_generator_makes(tmp_path: Path) -> None:
    made = _generator().generate(str(tmp_path))
    assert sorted(made) == _cases()
    readme = (tmp_path / "README.md").read_bytes()
    assert readme == (CORPUS / "README.md").read_bytes(), "conformance/README.md is generated"
    for name in made:
        for ext in (".esdb", ".json"):
            assert (tmp_path / (name + ext)).read_bytes() == (CORPUS / (name + ext)).read_bytes(), (
                f"{name}{ext} differs from what scripts/make_conformance.py makes"
            )


def test_corpus_covers_valid_and_invalid_files() -> None:
    names = _cases()
    valid = [n for n in names if _expected(n)["valid"]]
    invalid = [n for n in names if not _expected(n)["valid"]]
    assert len(valid) >= 10 and len(invalid) >= 40
    assert sum(_expected(n)["format_version"] == 2 for n in valid) >= 3
    assert all(n.startswith("valid-") for n in valid)
    assert all(n.startswith("invalid-") for n in invalid)
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    for n in names:  # every file is described in the README
        assert n in readme, n
    spec = (ROOT / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    for n in invalid:  # every broken rule exists in the spec
        assert f"**{_expected(n)['rule']}**" in spec, (n, _expected(n)["rule"])


def _digest_events(r: ESDBReader) -> str:
    h = hashlib.sha256()
    for stream, id16, rec in r.iter_all_raw():
        sb = stream.encode()
        h.update(id16 + struct.pack("<I", len(sb)) + sb + struct.pack("<I", len(rec)) + rec)
    return h.hexdigest()


def _digest_spaces(r: ESDBReader) -> str:
    h = hashlib.sha256()
    for sp in r.spaces():
        sb = sp.stream.encode()
        h.update(struct.pack("<I", len(sb)) + sb)
        h.update(struct.pack("<QQ", sp.first_version, sp.count) + sp.first_id + sp.last_id)
    return h.hexdigest()


@pytest.mark.parametrize("name", [n for n in _cases() if n.startswith("valid-")])
def test_valid_file_reads_as_expected(name: str) -> None:
    exp = _expected(name)
    with ESDBReader(CORPUS / f"{name}.esdb") as r:
        r.verify()
        m, f = r.meta, exp["footer"]
        assert (m.event_count, m.space_count, m.block_count) == (
            f["event_count"],
            f["space_count"],
            f["block_count"],
        )
        assert (m.first_seq, m.last_seq, m.record_bytes) == (
            f["first_seq"],
            f["last_seq"],
            f["record_bytes"],
        )
        assert (m.first_id or bytes(16)).hex() == f["first_id"]
        assert (m.last_id or bytes(16)).hex() == f["last_id"]
        assert int(m.created.timestamp() * 1_000_000) == f["created_us"]
        assert (m.codec, m.index_types) == (f["codec"], f["index_types"])
        assert r.types() == exp["types"]
        assert _digest_spaces(r) == exp["spaces_sha256"]
        spaces = list(r.spaces())
        for sp, e in zip(spaces, exp["spaces"], strict=False):
            assert (sp.stream, sp.first_version, sp.count) == (
                e["stream"],
                e["first_version"],
                e["count"],
            )
        assert _digest_events(r) == exp["events_sha256"]
        order = hashlib.sha256(b"".join(e.id.bytes for e in r.read_all())).hexdigest()
        assert order == exp["ulid_order_sha256"]
        for pos, (e, (stream, id16, rec)) in enumerate(
            zip(exp.get("events", []), r.iter_all_raw(), strict=False)
        ):
            assert (e["position"], e["id"], e["stream"], e["record"]) == (
                pos,
                id16.hex(),
                stream,
                rec.hex(),
            )
        for q in exp["index_queries"]:
            got = [e.version for e in r.read_index(q["stream"], q["name"], q["value"])]
            assert len(got) == q["count"] and got[: len(q["versions"])] == q["versions"]
        if exp["format_version"] == 2:
            tags = _tag_index(r)
            assert len(tags) == exp["tag_count"] and _digest_tags(tags) == exp["tags_sha256"]
            for t in exp["tags"]:
                assert (len(tags[t["tag"]]), tags[t["tag"]][:20]) == (t["count"], t["seqs"])
            for tag, seqs in tags.items():  # the tag index answers what the records imply
                assert [e.seq for e in r.query(Query([QueryItem(tags=[tag])]))] == seqs
        # Every event is found by its id and read back the same way by stream.
        for sp in spaces[:50]:
            for ev in r.read_stream(sp.stream):
                assert r.get(ev.id) == ev


def _tag_index(r: ESDBReader) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in r.read_all():
        for t in e.tags:
            out.setdefault(t, []).append(e.seq)
    return {t: sorted(out[t]) for t in sorted(out, key=str.encode)}


def _digest_tags(tags: dict[str, list[int]]) -> str:
    h = hashlib.sha256()
    for t, seqs in tags.items():
        tb = t.encode()
        h.update(struct.pack("<I", len(tb)) + tb + struct.pack("<I", len(seqs)))
        h.update(struct.pack(f"<{len(seqs)}Q", *seqs))
    return h.hexdigest()


@pytest.mark.parametrize("name", [n for n in _cases() if n.startswith("valid-")])
def test_spec_decoder_reads_valid_file_as_expected(name: str) -> None:
    """tests/spec_decoder.py, written from docs/FORMAT.md alone, passes its
    full check and reads what the corpus expects."""
    exp = _expected(name)
    dec = sd.decode((CORPUS / f"{name}.esdb").read_bytes())
    f = exp["footer"]
    assert dec.version == exp["format_version"]
    for key in ("event_count", "space_count", "block_count", "first_seq", "last_seq"):
        assert dec.footer[key] == f[key], key
    assert (dec.footer["record_bytes"], dec.footer["created_us"]) == (
        f["record_bytes"],
        f["created_us"],
    )
    assert (dec.footer["first_id"].hex(), dec.footer["last_id"].hex()) == (
        f["first_id"],
        f["last_id"],
    )
    assert dec.types == exp["types"]
    h = hashlib.sha256()
    for e in dec.events:
        sb = e.stream.encode()
        h.update(
            e.id + struct.pack("<I", len(sb)) + sb + struct.pack("<I", len(e.record)) + e.record
        )
    assert h.hexdigest() == exp["events_sha256"]
    h = hashlib.sha256()
    for s in dec.spaces:
        sb = s.stream.encode()
        h.update(struct.pack("<I", len(sb)) + sb)
        h.update(struct.pack("<QQ", s.first_version, s.count) + s.first_id + s.last_id)
    assert h.hexdigest() == exp["spaces_sha256"]
    order = hashlib.sha256(b"".join(dec.events[p].id for p in dec.ulid_order)).hexdigest()
    assert order == exp["ulid_order_sha256"]
    if dec.version == 2:
        assert len(dec.tags) == exp["tag_count"] and _digest_tags(dec.tags) == exp["tags_sha256"]
    else:
        assert dec.tags == {}


# The spec decoder's checks run in its own order; a file breaking more than
# its named rule is refused by the other rule first.
SPEC_DECODER_RULE = {
    # claims 600,001 events: the spaces' counts (F8) disagree before U is read
    "invalid-bound-ulid-directory": "F8",
}


@pytest.mark.parametrize("name", [n for n in _cases() if n.startswith("invalid-")])
def test_spec_decoder_refuses_invalid_file(name: str) -> None:
    exp = _expected(name)
    data = (CORPUS / f"{name}.esdb").read_bytes()
    if exp["stage"] == "open":
        with pytest.raises(sd.SpecError) as err:
            sd.open_check(data)
    else:
        sd.open_check(data)  # only a full check finds the damage
        with pytest.raises(sd.SpecError) as err:
            sd.decode(data)
    assert err.value.rule == SPEC_DECODER_RULE.get(name, exp["rule"]), err.value


@pytest.mark.parametrize("name", [n for n in _cases() if n.startswith("invalid-")])
def test_invalid_file_is_refused_fast(name: str) -> None:
    """Refused with CorruptFile at the stage the corpus says (open, or the full
    check), and never another exception; within 2 s and 50 MiB, however much
    the file's counts claim."""
    exp = _expected(name)
    path = CORPUS / f"{name}.esdb"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        if exp["stage"] == "open":
            with pytest.raises(CorruptFile):
                ESDBReader(path)
        else:
            with ESDBReader(path) as r, pytest.raises(CorruptFile):
                r.verify()
            _every_read_refuses_or_answers(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 50 << 20, f"{name}: {peak >> 20} MiB"


def _every_read_refuses_or_answers(path: Path) -> None:
    """Each read path of a damaged file either answers or raises CorruptFile."""
    with ESDBReader(path) as r:
        steps: list[Any] = [
            lambda: list(r.spaces()),
            r.types,
            lambda: list(r.read_all()),
            lambda: list(r.read_all(backwards=True, types=["buy"], stream_prefix="c")),
            lambda: [list(r.read_stream(sp.stream)) for sp in r.spaces()],
            lambda: [list(r.read_index(sp.stream, "type", "buy")) for sp in r.spaces()],
            lambda: list(r.iter_all_raw()),
            lambda: r.get(bytes.fromhex("0190a0b0c0d000000000000000000002")),
        ]
        for step in steps:
            with contextlib.suppress(CorruptFile):
                step()


def test_readme_names_the_generator_and_the_digests() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert "scripts/make_conformance.py" in readme
    assert "events_sha256" in readme and "spaces_sha256" in readme
    assert os.path.exists(ROOT / "scripts" / "make_conformance.py")
