"""Export and import across removed events (issue 17): ``export_events`` puts
a ``RemovedEvent`` in place of every event deletion, retention or a scavenge
removed or hides, and ``import_events`` rebuilds the same log from it: the
same seqs and versions, the gaps recorded as removed, redactions recorded,
``verify()`` clean, in both tiers of source and target."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.errors import InvalidArgument
from eventstore.events import Event, RemovedEvent
from eventstore.ids import ulid_from_int

STREAMS = ["a", "b", "c"]

# One step of a source store's life: (kind, stream, n).
_step = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(STREAMS), st.integers(1, 4)),
    st.tuples(st.just("delete"), st.sampled_from(STREAMS), st.just(0)),
    st.tuples(st.just("max_count"), st.sampled_from(STREAMS), st.integers(0, 3)),
    st.tuples(st.just("truncate"), st.sampled_from(STREAMS), st.integers(0, 6)),
    st.tuples(st.just("redact"), st.sampled_from(STREAMS), st.integers(0, 5)),
    st.tuples(st.just("scavenge"), st.just(""), st.just(0)),
    st.tuples(st.just("compact"), st.just(""), st.just(0)),
)


def _compact_all(store: EventStore) -> None:
    last = next(store.read_all(backwards=True, limit=1), None)
    if last is not None:
        store.compact(before=ulid_from_int(int(last.id) + 1))


def _run(store: EventStore, steps: list[tuple[str, str, int]]) -> None:
    for kind, stream, n in steps:
        if kind == "append":
            new = [NewEvent("T", {"n": i}, {"m": i}, {"k": str(i)}) for i in range(n)]
            store.append(stream, new)
        elif kind == "delete":
            if list(store.read_stream(stream)):
                store.delete_stream(stream)
        elif kind == "max_count":
            store.set_retention(stream, max_count=n or None)
        elif kind == "truncate":
            store.set_retention(stream, truncate_before=n)
        elif kind == "redact":
            kept = list(store.read_stream(stream))
            if kept:
                store.redact(kept[n % len(kept)].id)
        elif kind == "scavenge":
            store.scavenge()
        else:
            _compact_all(store)


def _shape(events: list[Event | RemovedEvent]) -> list[tuple[object, ...]]:
    return [(*e, getattr(e, "redacted", False), isinstance(e, RemovedEvent)) for e in events]


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=14), cold_target=st.booleans())
def test_an_export_with_removed_events_imports_as_the_same_log(
    steps: list[tuple[str, str, int]], cold_target: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with EventStore.open(str(Path(tmp) / "src")) as src:
            _run(src, [("append", "a", 2), *steps])
            exported = list(src.export_events())
            seen = list(src.read_all())
            versions = {s: src.stream_version(s) for s in STREAMS}
            last_seq = src.last_seq
        # Every seq is there, once, in order: kept events as reads see them.
        assert [e.seq for e in exported] == list(range(1, last_seq + 1))
        assert [e for e in exported if not isinstance(e, RemovedEvent)] == seen
        with EventStore.open(str(Path(tmp) / "dst")) as dst:
            assert dst.import_events(exported) == len(exported)
            check(dst, exported, seen, versions, last_seq)
            if cold_target:
                _compact_all(dst)
                dst.merge_archives()
                check(dst, exported, seen, versions, last_seq)
            assert dst.scavenge().removed == 0  # nothing left to remove
        with EventStore.open(str(Path(tmp) / "dst")) as dst:  # and after a reopen
            check(dst, exported, seen, versions, last_seq)


def check(
    dst: EventStore,
    exported: list[Event | RemovedEvent],
    seen: list[Event],
    versions: dict[str, int],
    last_seq: int,
) -> None:
    dst.verify()
    assert _shape(list(dst.read_all())) == _shape(list(seen))
    assert _shape(list(dst.export_events())) == _shape(exported)
    assert dst.last_seq == last_seq
    assert {s: dst.stream_version(s) for s in STREAMS} == versions
    gone = [e.seq for e in exported if isinstance(e, RemovedEvent)]
    assert dst.removed_seqs == _ranges(gone)
    assert dst.stats().events == len(seen)
    for e in exported:
        got = dst.get(e.id)
        assert (got is None) == isinstance(e, RemovedEvent)


def test_an_old_export_without_removed_events_still_imports(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "src")) as src:
        src.append("a", [NewEvent("T", n) for n in range(3)])
        events = list(src.read_all())
    with EventStore.open(str(tmp_path / "dst")) as dst:
        assert dst.import_events(events) == 3
        assert list(dst.read_all()) == events and dst.removed_seqs == []
        dst.verify()


def test_an_import_that_skips_a_seq_is_still_refused(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "src")) as src:
        src.append("a", [NewEvent("T", n) for n in range(4)])
        src.set_retention("a", max_count=2)
        exported = list(src.export_events())
    assert [isinstance(e, RemovedEvent) for e in exported[:4]] == [True, True, False, False]
    with EventStore.open(str(tmp_path / "dst")) as dst:
        # Without the places of the removed events, the seqs have a gap.
        with pytest.raises(InvalidArgument, match="seq"):
            dst.import_events([e for e in exported if not isinstance(e, RemovedEvent)])
        assert dst.last_seq == 0 and dst.removed_seqs == []
