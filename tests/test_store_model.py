"""The backbone: the store held against a plain in-memory model.

Random appends (single and multi-stream, right and wrong expected versions,
bad input), reads of every kind in both directions, and reopens. After every
step the store and the model must agree; ids, seqs and versions must never
change once returned.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from ulid import ULID

import eventstore.writer
from eventstore import ANY, NO_STREAM, STREAM_EXISTS, Event, EventStore, NewEvent, keys, segments
from eventstore.errors import ConditionFailed, EventStoreError, WrongExpectedVersion
from eventstore.events import AppendCondition, Query, QueryItem

from .model import Model, stored_tags
from .strategies import TAGS, event_types, new_events, query_items

STREAMS = ["order-1", "order-10", "cart-1", "ç/x"]


def expected_versions(model: Model) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]),
        st.integers(min_value=-1, max_value=12),
    )


# (stream, events, the built-in the error must also be)
bad_appends = st.sampled_from(
    [
        ("", [NewEvent("T")], ValueError),
        ("a\x00b", [NewEvent("T")], ValueError),
        (7, [NewEvent("T")], TypeError),
        ("s", [NewEvent("T", {1, 2})], TypeError),
        ("s", [NewEvent("T", metadata=object())], TypeError),
        ("s", [NewEvent("T", 2**70)], TypeError),
        ("s", [NewEvent("T"), NewEvent("T", {(1, 2): 3})], TypeError),  # would not read back
        ("s", [NewEvent("")], ValueError),
        ("s", [NewEvent("T", indexes={"k": ""})], ValueError),
        ("s", [NewEvent("T", indexes={"k\x00": "v"})], ValueError),
        ("s", [NewEvent("T", indexes={"type": "v"})], ValueError),
        ("s", [], ValueError),
        ("s", [("T", 1)], TypeError),
        ("s", NewEvent("T"), TypeError),
    ]
)


class StoreMachine(RuleBasedStateMachine):
    """Subclasses add rules (compaction, merges) that must not change any answer."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        # A tiny cache of stream versions, so that expected-version checks
        # also run on versions evicted from it and read back from LevelDB.
        self._cache_size = eventstore.writer._VERSION_CACHE
        eventstore.writer._VERSION_CACHE = 2
        self.dir = tempfile.mkdtemp(prefix="es-model-")
        self.path = f"{self.dir}/store"
        self.store = EventStore.open(self.path)
        self.model = Model()
        self.file_events = 1000  # compaction splits files above this many events

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        eventstore.writer._VERSION_CACHE = self._cache_size

    def _expect(self, stream: str, events: list[NewEvent], result: Any) -> list[Event]:
        first = self.model.version(stream) + 1
        base_seq = len(self.model.log)
        return [
            Event(
                result.ids[n],
                stream,
                first + n,
                base_seq + n + 1,
                e.type,
                e.data,
                e.metadata,
                dict(e.indexes or {}),
                stored_tags(e.tags),
            )
            for n, e in enumerate(events)
        ]

    @rule(target=ids, stream=st.sampled_from(STREAMS), events=new_events(tags=True), data=st.data())
    def append(self, stream: str, events: list[NewEvent], data: st.DataObject) -> Any:
        expected = data.draw(expected_versions(self.model))
        if self.model.accepts(stream, expected):
            result = self.store.append(stream, events, expected_version=expected)
            assert result.first_version == self.model.version(stream) + 1
            assert result.last_version == result.first_version + len(events) - 1
            assert result.first_seq == len(self.model.log) + 1
            self.model.record(self._expect(stream, events, result))
            return result.ids[0]
        try:
            self.store.append(stream, events, expected_version=expected)
        except WrongExpectedVersion as exc:
            assert exc.actual == self.model.version(stream)
        else:
            raise AssertionError(f"append with expected {expected} should have failed")
        return ULID.from_int(0)

    @rule(
        stream=st.sampled_from(STREAMS),
        count=st.integers(min_value=10, max_value=150),
        types=st.lists(event_types, min_size=1, max_size=3),
    )
    def append_bulk(self, stream: str, count: int, types: list[str]) -> None:
        # Long streams, so reads from a version must really search.
        events = [NewEvent(types[n % len(types)], n) for n in range(count)]
        result = self.store.append(stream, events)
        self.model.record(self._expect(stream, events, result))

    @rule(
        parts=st.lists(
            st.tuples(st.sampled_from(STREAMS), new_events(max_size=3, tags=True), st.booleans()),
            min_size=1,
            max_size=3,
        ),
        spoil=st.booleans(),
    )
    def append_many(self, parts: list[tuple[str, list[NewEvent], bool]], spoil: bool) -> None:
        # Expected versions right for each part as earlier parts leave the stream;
        # `spoil` makes the last part's wrong, and then nothing at all may land.
        versions = {s: self.model.version(s) for s, _, _ in parts}
        requests = []
        for n, (stream, events, exact) in enumerate(parts):
            expected: Any = versions[stream] if exact else ANY
            if spoil and n == len(parts) - 1:
                expected = versions[stream] + 5
            requests.append((stream, events, expected))
            versions[stream] += len(events)
        if spoil:
            try:
                self.store.append_many(requests)
            except WrongExpectedVersion:
                return
            raise AssertionError("a spoiled append_many landed")
        results = self.store.append_many(requests)
        for (stream, events, _), result in zip(requests, results, strict=True):
            self.model.record(self._expect(stream, events, result))

    @rule(bad=bad_appends, via_many=st.booleans())
    def bad_append(self, bad: tuple[Any, Any, type], via_many: bool) -> None:
        # Bad input fails with a specific error, and nothing is written (the
        # invariant compares the whole log with the model after this step).
        stream, events, builtin = bad
        try:
            if via_many:
                self.store.append_many(
                    [("order-1", [NewEvent("Fine")], ANY), (stream, events, ANY)]
                )
            else:
                self.store.append(stream, events)
        except EventStoreError as exc:
            assert isinstance(exc, builtin), repr(exc)
        else:
            raise AssertionError(f"bad append {bad!r} was accepted")

    @rule(
        stream=st.sampled_from(STREAMS),
        from_version=st.one_of(
            st.none(),
            st.integers(min_value=0, max_value=14),
            st.integers(min_value=0, max_value=400),
        ),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
    )
    def read_stream(
        self, stream: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> None:
        got = list(self.store.read_stream(stream, from_version, backwards, limit))
        assert got == self.model.read_stream(stream, from_version, backwards, limit)

    @rule(
        stream=st.sampled_from(STREAMS),
        index=st.one_of(
            st.tuples(st.just("type"), event_types),
            st.tuples(st.sampled_from(["customer", "region"]), st.sampled_from(["c1", "c2", "eu"])),
        ),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
    )
    def read_index(
        self, stream: str, index: tuple[str, str], backwards: bool, limit: int | None
    ) -> None:
        name, value = index
        got = list(self.store.read_index(stream, name, value, backwards, limit))
        assert got == self.model.read_index(stream, name, value, backwards, limit)

    @rule(event_id=ids)
    def get_known(self, event_id: ULID) -> None:
        assert self.store.get(event_id) == self.model.get(event_id)
        assert self.store.get(str(event_id)) == self.model.get(event_id)

    @rule(raw=st.binary(min_size=16, max_size=16))
    def get_unknown(self, raw: bytes) -> None:
        assert self.store.get(ULID(raw)) == self.model.get(ULID(raw))

    @rule(
        after=st.one_of(st.none(), ids),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
        types=st.one_of(st.none(), st.lists(event_types, max_size=2)),
        prefix=st.one_of(st.none(), st.sampled_from(["order-", "order-1", "c", "zzz"])),
    )
    def read_all(
        self,
        after: ULID | None,
        backwards: bool,
        limit: int | None,
        types: list[str] | None,
        prefix: str | None,
    ) -> None:
        got = list(self.store.read_all(after, backwards, limit, types, prefix))
        assert got == self.model.read_all(after, backwards, limit, types, prefix)

    @rule(
        from_seq=st.integers(min_value=0, max_value=600),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
        types=st.one_of(st.none(), st.lists(event_types, max_size=2)),
    )
    def read_all_from_seq(
        self, from_seq: int, backwards: bool, limit: int | None, types: list[str] | None
    ) -> None:
        got = list(self.store.read_all(None, backwards, limit, types, from_seq=from_seq))
        log = self.model.log
        if backwards:
            want = [e for e in reversed(log) if e.seq <= from_seq]
        else:
            want = [e for e in log if e.seq >= from_seq]
        if types is not None:
            want = [e for e in want if e.type in types]
        assert got == (want if limit is None else want[:limit])

    @rule(
        items=query_items,
        after=st.none() | st.integers(min_value=0, max_value=600),
        backwards=st.booleans(),
        limit=st.none() | st.integers(min_value=0, max_value=8),
    )
    def query(
        self, items: list[QueryItem], after: int | None, backwards: bool, limit: int | None
    ) -> None:
        got = list(self.store.query(items, after, limit, backwards))
        assert got == self.model.query(items, after, backwards, limit)

    @rule(
        stream=st.sampled_from(STREAMS),
        events=new_events(max_size=3, tags=True),
        items=query_items,
        back=st.integers(min_value=0, max_value=30),
        exact=st.booleans(),
        many=st.booleans(),
    )
    def conditional_append(
        self,
        stream: str,
        events: list[NewEvent],
        items: list[QueryItem],
        back: int,
        exact: bool,
        many: bool,
    ) -> None:
        # A decision made ``back`` events ago: it lands exactly when no event
        # matching its query came after that position.
        after = max(len(self.model.log) - back, 0)
        condition = AppendCondition(Query(items), after)
        later = self.model.query(items, after, False, None)  # what the store's query sees
        expected: Any = self.model.version(stream) if exact else ANY
        try:
            if many:
                result = self.store.append_many([(stream, events, expected)], condition=condition)[
                    0
                ]
            else:
                result = self.store.append(stream, events, expected, condition=condition)
        except ConditionFailed as exc:
            assert later and exc.seq == later[0].seq and exc.after == after
            return
        assert not later
        self.model.record(self._expect(stream, events, result))

    @rule(stream=st.sampled_from(STREAMS))
    def stream_version(self, stream: str) -> None:
        assert self.store.stream_version(stream) == self.model.version(stream)

    @rule(cutoff=ids)
    def compact_before(self, cutoff: ULID) -> None:
        # Events with ids below the cutoff move to a new ESDB file; no answer changes.
        self.store.compact(before=cutoff, max_file_events=self.file_events)

    @precondition(lambda self: bool(self.model.log))
    @rule()
    def compact_everything(self) -> None:
        last = self.model.log[-1].id
        result = self.store.compact(
            before=ULID.from_int(int(last) + 1), max_file_events=self.file_events
        )
        assert self.store.get(last) == self.model.log[-1]
        assert all(path.endswith(".esdb") for path in result.files)

    @rule(
        max_events=st.integers(min_value=1, max_value=400),
        fanout=st.none() | st.integers(min_value=2, max_value=4),
    )
    def merge(self, max_events: int, fanout: int | None) -> None:
        self.store.merge_archives(max_events=max_events, fanout=fanout)

    @rule(cutoff=ids, merge=st.booleans(), at_commit=st.booleans())
    def failed_maintenance(self, cutoff: ULID, merge: bool, at_commit: bool) -> None:
        # A compaction or merge fails after writing its files and their
        # segment keys, just before its commit point (undone at once: neither
        # file nor key stays behind) or in the commit write itself (which may
        # be on disk all the same: everything stays for the next open, which
        # sweeps it). No answer changes; readers ignore the keys of files
        # their manifest does not name (the invariant below checks the keys).
        def reads_then_fail(*args: object, **kwargs: object) -> None:
            for stream in STREAMS:
                assert list(self.store.read_stream(stream)) == self.model.streams.get(stream, [])
            raise OSError("injected failure")

        if at_commit:
            self.store._tiering._commit_files = reads_then_fail  # type: ignore[method-assign]
        elif merge:
            real_write = segments.write

            def write_then_fail(db: Any, f: Any) -> int:
                real_write(db, f)
                reads_then_fail()
                return 0

            segments.write = write_then_fail  # type: ignore[assignment]
        else:
            self.store._tiering._check_seqs = reads_then_fail  # type: ignore[method-assign]
        try:
            if merge:
                self.store.merge_archives(max_events=400)
            else:
                self.store.compact(before=cutoff, max_file_events=self.file_events)
        except OSError as exc:
            assert "injected" in str(exc)
        finally:
            self.store._tiering.__dict__.pop("_commit_files", None)
            self.store._tiering.__dict__.pop("_check_seqs", None)
            if merge and not at_commit:
                segments.write = real_write
        if at_commit:
            self.reopen()
        named = {Path(f.path).name for f in self.store.archive_files()}
        assert {p.name for p in Path(self.path, "archive").iterdir()} == named

    @invariant()
    def segment_keys_name_exactly_the_files_that_hold_each_stream(self) -> None:
        files = {f.number: f for f in self.store._archive.tiers.files}
        want = {
            (sp.stream, n, sp.first_version, sp.last_version)
            for n, f in files.items()
            for sp in f.reader.spaces()
        }
        got = set()
        for key, value in self.store._hot.db.iterator(prefix=keys.SEGMENT):
            stream = key[len(keys.SEGMENT) : key.index(keys.SEP, len(keys.SEGMENT))].decode()
            number, first, last = msgpack.unpackb(value)
            assert key == segments.segment_key(stream.encode(), files[number].first_id, number)
            got.add((stream, number, first, last))
        assert got == want

    @rule(file_events=st.integers(min_value=1, max_value=300))
    def set_file_size(self, file_events: int) -> None:
        self.file_events = file_events

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = EventStore.open(self.path)

    @invariant()
    def log_is_ordered_and_gap_free(self) -> None:
        log = list(self.store.read_all())
        assert log == self.model.log
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert all(a.id < b.id for a, b in itertools.pairwise(log))

    @invariant()
    def every_read_agrees_at_sample_points(self) -> None:
        # The rules draw reads at random; this checks, after every step, a fixed
        # spread of reads that crosses the tier boundary wherever it now is.
        log = self.model.log
        points = sorted({0, len(log) // 3, len(log) // 2, len(log) - 1}) if log else []
        for n in points:
            event = log[n]
            assert self.store.get(event.id) == event
            for backwards in (False, True):
                got = list(self.store.read_all(event.id, backwards, 5))
                assert got == self.model.read_all(event.id, backwards, 5, None, None)
                got = list(self.store.read_all(None, backwards, 3, None, None, from_seq=event.seq))
                want = [
                    e
                    for e in (reversed(log) if backwards else log)
                    if (e.seq <= event.seq if backwards else e.seq >= event.seq)
                ][:3]
                assert got == want
        for tag in TAGS:
            want = self.model.query([QueryItem(tags=[tag])], None, False, None)
            assert list(self.store.query([QueryItem(tags=[tag])])) == want
        for stream in STREAMS:
            events = self.model.streams.get(stream, [])
            assert self.store.stream_version(stream) == len(events) - 1
            assert list(self.store.read_stream(stream)) == events
            assert list(self.store.read_stream(stream, backwards=True)) == events[::-1]
            middle = len(events) // 2
            assert list(self.store.read_stream(stream, middle, limit=3)) == events[middle:][:3]
            assert (
                list(self.store.read_stream(stream, middle, backwards=True, limit=3))
                == (events[: middle + 1][::-1][:3])
            )
            if events:
                assert list(self.store.read_index(stream, "type", events[0].type)) == (
                    self.model.read_index(stream, "type", events[0].type, False, None)
                )


StoreMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
TestStoreMachine = StoreMachine.TestCase
