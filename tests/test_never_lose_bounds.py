"""Bounds on what one call may write (issue 13, items 8 and 12).

An append, an ``append_many`` and an import batch are bounded in events and
in bytes (configurable at open), refused with AppendTooLarge before anything
is packed or queued. Imports refuse ids timed beyond the clock by more than a
tolerance and ids in the ULID space's last millisecond; the id generator
raises IdsExhausted, not a raw OverflowError, at the end of the space.
Every refusal leaves the store as it was, and later appends still work.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

import eventstore.prepare as prepare_module
from eventstore import ANY, NO_STREAM, EventStore, NewEvent
from eventstore.cli import main as cli
from eventstore.errors import (
    AppendTooLarge,
    EventStoreError,
    IdOutOfRange,
    IdsExhausted,
    InvalidArgument,
)
from eventstore.events import Event
from eventstore.ids import MAX_TIMESTAMP_MS, MAX_ULID, ulid_from_int
from eventstore.store import (
    DEFAULT_IMPORT_CLOCK_TOLERANCE,
    DEFAULT_MAX_APPEND_BYTES,
    DEFAULT_MAX_APPEND_EVENTS,
)

State = tuple[list[Event], dict[str, int], Any, int]


def state(store: EventStore, streams: tuple[str, ...] = ("a", "b", "c")) -> State:
    """Everything a refused call could have changed."""
    return (
        list(store.read_all()),
        {s: store.stream_version(s) for s in streams},
        store.get_checkpoint("cp"),
        store.last_seq,
    )


class Packed(dict):  # type: ignore[type-arg]
    """Data whose packing is seen: msgpack converts a dict subclass, and its
    items are read then."""

    packed = 0

    def items(self):  # type: ignore[no-untyped-def]
        Packed.packed += 1
        return dict.items(self)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(
        tmp_path / "s", sync=True, max_append_events=10, max_append_bytes=2000
    ) as store:
        store.append("a", [NewEvent("T", {"n": 0})])
        store.set_checkpoint("cp", "before")
        yield store


# -- item 12: one append is bounded --------------------------------------------------


def test_the_defaults_are_documented_and_generous(tmp_path: Path) -> None:
    assert DEFAULT_MAX_APPEND_EVENTS == 100_000
    assert DEFAULT_MAX_APPEND_BYTES == 64 << 20
    with EventStore.open(tmp_path / "s") as store:
        assert store.max_append_events == DEFAULT_MAX_APPEND_EVENTS
        assert store.max_append_bytes == DEFAULT_MAX_APPEND_BYTES
        # Real applications' appends, at the edge of the default: accepted.
        r = store.append("big", [NewEvent("T", None)] * DEFAULT_MAX_APPEND_EVENTS)
        assert r.last_seq == DEFAULT_MAX_APPEND_EVENTS


def test_an_append_over_the_default_event_bound_is_refused_before_packing(
    tmp_path: Path,
) -> None:
    """The issue's million-event append: refused at once, nothing packed."""
    with EventStore.open(tmp_path / "s") as store:
        store.append("a", [NewEvent("T", 0)])
        before = state(store)
        Packed.packed = 0
        events = [NewEvent("T", Packed(n=1))] * 1_000_000
        started = time.perf_counter()
        with pytest.raises(AppendTooLarge, match=r"1000000 events.*at most 100000"):
            store.append("a", events)
        with pytest.raises(AppendTooLarge):
            store.append_many([("b", events[:60_000], ANY), ("c", events[:40_001], ANY)])
        took = time.perf_counter() - started
        assert Packed.packed == 0, "events were packed before the refusal"
        assert took < 5, f"refusing took {took:.1f} s"
        assert state(store) == before
        assert store.append("a", [NewEvent("T", 1)]).first_seq == 2


def test_append_many_is_bounded_as_a_whole(small: EventStore) -> None:
    before = state(small)
    parts = [("b", [NewEvent("T", 1)] * 4, ANY), ("c", [NewEvent("T", 2)] * 4, ANY)]
    parts.append(("a", [NewEvent("T", 9)] * 3, 0))  # 11 events in all, each part <= 10
    Packed.packed = 0
    parts.append(("c", [NewEvent("T", Packed(x=1))], ANY))
    with pytest.raises(AppendTooLarge, match="at most 2 more"):
        small.append_many(parts, checkpoint=("cp", "after"))
    assert Packed.packed == 0  # the part past the bound was never packed
    assert state(small) == before
    # Exactly at the bound: accepted, whole.
    results = small.append_many([*parts[:2], ("a", [NewEvent("T", 9)] * 2, 0)])
    assert [r.last_seq for r in results] == [5, 9, 11]


def test_an_append_over_the_byte_bound_is_refused(small: EventStore) -> None:
    before = state(small)
    with pytest.raises(AppendTooLarge, match=r"bytes.*at most 2000"):
        small.append("a", [NewEvent("T", b"x" * 2100)])
    # Several parts, each under the bound, together over it.
    with pytest.raises(AppendTooLarge, match="up to stream 'c'"):
        small.append_many(
            [("b", [NewEvent("T", b"x" * 900)], ANY), ("c", [NewEvent("T", b"x" * 900)] * 2, ANY)],
            checkpoint=("cp", "after"),
        )
    assert state(small) == before
    r = small.append_many(
        [("b", [NewEvent("T", b"x" * 900)], NO_STREAM), ("c", [NewEvent("T", b"x" * 900)], ANY)]
    )
    assert r[-1].last_seq == 3
    assert small.read_stream("c").__next__().data == b"x" * 900


def test_append_too_large_is_a_value_error_and_an_eventstore_error(small: EventStore) -> None:
    with pytest.raises(AppendTooLarge) as info:
        small.append("a", [NewEvent("T", 0)] * 11)
    assert isinstance(info.value, InvalidArgument)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, EventStoreError)


@pytest.mark.parametrize("bad", [0, -1, "10", 1.5, True, None])
@pytest.mark.parametrize("name", ["max_append_events", "max_append_bytes"])
def test_bounds_at_open_must_be_positive_ints(tmp_path: Path, name: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match=name):
        EventStore.open(tmp_path / "s", **{name: bad})
    assert not (tmp_path / "s").exists()  # refused before anything was made


def test_bounds_are_set_at_each_open(tmp_path: Path) -> None:
    with (
        EventStore.open(tmp_path / "s", max_append_events=3) as store,
        pytest.raises(AppendTooLarge),
    ):
        store.append("a", [NewEvent("T", 0)] * 4)
    with EventStore.open(tmp_path / "s") as store:  # not a stored setting: defaults again
        assert store.append("a", [NewEvent("T", 0)] * 4).last_seq == 4


# -- item 12: one import batch is bounded ------------------------------------------------


def exported(
    tmp_path: Path, n: int, data: Callable[[int], Any] = lambda k: {"k": k}
) -> list[Event]:
    with EventStore.open(tmp_path / "source") as source:
        for k in range(n):
            source.append(f"s-{k % 3}", [NewEvent("T", data(k))])
        return list(source.read_all())


def test_an_import_batch_is_bounded_in_events(tmp_path: Path) -> None:
    events = exported(tmp_path, 25)
    with EventStore.open(tmp_path / "s", max_append_events=10) as store:
        with pytest.raises(AppendTooLarge, match="batch_size 4096"):
            store.import_events(events)  # the default batch is above this store's bound
        with pytest.raises(InvalidArgument, match="batch_size"):
            store.import_events(events, batch_size=0)
        assert store.last_seq == 0
        batches: list[int] = []
        assert store.import_events(events, batch_size=10, progress=batches.append) == 25
        assert batches == [10, 10, 5]
        assert list(store.read_all()) == events


def test_an_import_batch_is_cut_at_the_byte_bound(tmp_path: Path) -> None:
    events = exported(tmp_path, 12, lambda k: b"x" * 300)
    with EventStore.open(tmp_path / "s", max_append_bytes=1000) as store:
        batches: list[int] = []
        assert store.import_events(events, progress=batches.append) == 12
        assert batches == [3, 3, 3, 3]  # ~320 bytes a record: three fit in 1000
        assert list(store.read_all()) == events
        store.verify()


def test_an_imported_event_larger_than_the_byte_bound_is_refused(tmp_path: Path) -> None:
    events = exported(tmp_path, 3, lambda k: b"x" * (50 if k < 2 else 5000))
    with EventStore.open(tmp_path / "s", max_append_bytes=1000) as store:
        with pytest.raises(AppendTooLarge, match="above the store's max_append_bytes"):
            store.import_events(events, batch_size=3)
        assert store.last_seq == 0  # the batch holding it was refused whole
        store.append("later", [NewEvent("T", 1)])
        assert store.last_seq == 1


# -- item 8: imported ids within the clock and the ULID space ------------------------------


def at_ms(ms: int, low: int = 0) -> ULID:
    return ulid_from_int((ms << 80) | low)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def one_event(id_: ULID, seq: int = 1, version: int = 0, stream: str = "a") -> Event:
    return Event(id_, stream, version, seq, "Imported", {"x": 1}, None, {})


def test_importing_the_largest_ulid_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s", sync=True) as store:
        store.append("b", [NewEvent("T", 0)])
        before = state(store)
        for tolerance in (DEFAULT_IMPORT_CLOCK_TOLERANCE, None):
            with pytest.raises(IdOutOfRange, match="last millisecond of the ULID space"):
                store.import_events(
                    [one_event(ulid_from_int(MAX_ULID), seq=2)], clock_tolerance=tolerance
                )
        # The first millisecond of the last is refused; the one before it is not.
        with pytest.raises(IdOutOfRange):
            store.import_events([one_event(at_ms(MAX_TIMESTAMP_MS), seq=2)], clock_tolerance=None)
        assert state(store) == before
        r = store.append("a", [NewEvent("T", 1)])
        assert r.first_seq == 2 and abs((int(r.ids[0]) >> 80) - now_ms()) < 60_000
    with EventStore.open(tmp_path / "s") as store:  # and after reopen
        assert state(store)[3] == 2
        store.append("a", [NewEvent("T", 2)])


def test_importing_an_id_a_century_ahead_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    century = 100 * 365 * 86_400_000
    with EventStore.open(tmp_path / "s") as store:
        store.append("b", [NewEvent("T", 0)])
        before = state(store)
        ahead = one_event(at_ms(now_ms() + century), seq=2)
        with pytest.raises(IdOutOfRange, match=r"days after this machine's clock") as info:
            store.import_events([one_event(at_ms(now_ms() - 5), seq=2, stream="c"), ahead])
        assert isinstance(info.value, ValueError)
        assert state(store) == before  # its batch, the good event with it, was refused
        r = store.append("a", [NewEvent("T", 1)])
        assert r.first_seq == 2
        stamp = store.get(r.ids[0])
        assert stamp is not None
        assert abs(stamp.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
        # Age-based compaction still moves events (the watermark is not pinned).
        time.sleep(0.002)
        assert store.compact(before=datetime.now(UTC)).events == 2


def test_the_clock_tolerance_is_a_parameter(tmp_path: Path) -> None:
    hour = 3_600_000
    with EventStore.open(tmp_path / "s") as store:
        # An hour ahead (a skewed clock on the exporting machine): within the default day.
        assert store.import_events([one_event(at_ms(now_ms() + hour), seq=1)]) == 1
        two_days = one_event(at_ms(now_ms() + 48 * hour), seq=2, version=1)
        with pytest.raises(IdOutOfRange):
            store.import_events([two_days])
        with pytest.raises(IdOutOfRange):
            store.import_events([two_days], clock_tolerance=timedelta(hours=1))
        assert store.import_events([two_days], clock_tolerance=timedelta(days=3)) == 1
        # None turns the clock check off (the end of the space is still refused).
        far = one_event(at_ms(now_ms() + 400 * 24 * hour), seq=3, version=2)
        assert store.import_events([far], clock_tolerance=None) == 1
        for bad in (-timedelta(seconds=1), 86_400, "1d"):
            with pytest.raises(InvalidArgument, match="clock_tolerance"):
                store.import_events([], clock_tolerance=bad)
        assert store.last_seq == 3


def test_a_store_that_already_holds_the_largest_ulid_refuses_appends_with_ids_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written before imports were checked (the check skipped here):
    appends fail with the specific error, not a raw OverflowError, and
    leave the store as it was."""
    with EventStore.open(tmp_path / "s") as store:
        store.append("a", [NewEvent("T", 0)])
        with monkeypatch.context() as m:
            m.setattr(prepare_module, "check_importable", lambda *args: None)
            store.import_events([one_event(ulid_from_int(MAX_ULID), seq=2, version=1)])
    with EventStore.open(tmp_path / "s") as store:
        before = state(store)
        with pytest.raises(IdsExhausted, match="ULID space ends") as info:
            store.append("a", [NewEvent("T", 1)])
        assert isinstance(info.value, OverflowError)
        with pytest.raises(IdsExhausted):
            store.append_many([("b", [NewEvent("T", 1)], ANY), ("c", [NewEvent("T", 2)], ANY)])
        assert state(store) == before
        store.verify()  # reads still work


def test_the_cli_import_refuses_a_file_with_a_future_id_before_writing(tmp_path: Path) -> None:
    # More than one import batch: the first would land before the last line is read.
    events = exported(tmp_path, 4096 + 10)
    runner = CliRunner()
    export = tmp_path / "events.jsonl"
    result = runner.invoke(cli, ["export", str(tmp_path / "source"), str(export)])
    assert result.exit_code == 0, result.output
    lines = export.read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["id"] == str(events[-1].id)
    last["id"] = str(at_ms(now_ms() + 100 * 365 * 86_400_000))
    lines[-1] = json.dumps(last)
    export.write_text("\n".join(lines) + "\n")
    EventStore.open(tmp_path / "dest").close()  # an existing store: kept if the import fails
    result = runner.invoke(cli, ["import", str(tmp_path / "dest"), str(export)])
    assert result.exit_code != 0
    assert "days after this machine's clock" in result.output
    with EventStore.open(tmp_path / "dest") as dest:
        assert dest.last_seq == 0  # checked whole before anything was written
    # The operator who knows the exporting clock ran ahead says how far.
    century = str(101 * 365 * 86_400)
    result = runner.invoke(
        cli, ["import", str(tmp_path / "dest"), str(export), "--clock-tolerance", century]
    )
    assert result.exit_code == 0, result.output
    with EventStore.open(tmp_path / "dest") as dest:
        assert dest.last_seq == len(events)


# -- the bounds as a property --------------------------------------------------------------

_payloads = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=300),
    st.text(max_size=60),
)


@settings(max_examples=60)
@given(
    max_events=st.integers(1, 12),
    max_bytes=st.integers(1, 1500),
    parts=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(_payloads, min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    ),
)
def test_an_append_lands_exactly_when_it_is_within_both_bounds(
    max_events: int, max_bytes: int, parts: list[tuple[str, list[Any]]]
) -> None:
    """Within both bounds it lands whole; over either it is refused and the
    store is as it was. Bytes are the packed type, data, metadata and indexes."""
    events = sum(len(payloads) for _, payloads in parts)
    size = sum(
        len(msgpack.packb("T")) + len(msgpack.packb(p, use_bin_type=True)) + 2  # None, {}
        for _, payloads in parts
        for p in payloads
    )
    with tempfile.TemporaryDirectory() as tmp:
        with EventStore.open(tmp) as unbounded:
            unbounded.append("a", [NewEvent("T", 0)])
        store = EventStore.open(tmp, max_append_events=max_events, max_append_bytes=max_bytes)
        try:
            before = state(store)
            appends = [(s, [NewEvent("T", p) for p in payloads], ANY) for s, payloads in parts]
            if events <= max_events and size <= max_bytes:
                results = store.append_many(appends)
                assert results[-1].last_seq == 1 + events
                assert [e.data for e in store.read_all()][1:] == [
                    p for _, payloads in parts for p in payloads
                ]
            else:
                with pytest.raises(AppendTooLarge):
                    store.append_many(appends)
                assert state(store) == before
        finally:
            store.close()
