"""The model test, with forgetting: deletion, retention, redaction and scavenging
among the appends, reads, compactions, merges and reopens of StoreMachine.

The model keeps every event ever appended; what a read must return is what
the stream rules (truncate-before, max-count, tombstones), the redactions
and the scavenges so far leave visible. Every read agrees with it, in both
tiers, after every step.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from ulid import ULID

from eventstore import ANY, NO_STREAM, STREAM_EXISTS, Event, NewEvent
from eventstore.errors import (
    EventNotFound,
    InvalidArgument,
    StreamDeleted,
    WrongExpectedVersion,
)

from .model import Model, matches
from .strategies import new_events
from .test_store_model import STREAMS, StoreMachine, expected_versions

TOMB = "tomb-1"


class ForgetModel(Model):
    def __init__(self) -> None:
        super().__init__()
        self.tb: dict[str, int] = {}
        self.max_count: dict[str, int] = {}
        self.tombstoned: set[str] = set()
        self.redacted: set[ULID] = set()
        self.removed: set[ULID] = set()

    def hidden_by_rules(self, e: Event) -> bool:
        if e.stream.startswith("$$"):
            return False
        if e.stream in self.tombstoned:
            return True
        if e.version < self.tb.get(e.stream, 0):
            return True
        n = self.max_count.get(e.stream)
        return n is not None and e.version <= self.version(e.stream) - n

    def visible(self, e: Event) -> bool:
        return e.id not in self.removed and not self.hidden_by_rules(e)

    def shown(self, e: Event) -> Event:
        # Redaction takes the index values and tags too (the type stays).
        if e.id in self.redacted:
            return e._replace(data=None, metadata=None, indexes={}, tags=())
        return e

    def show(self, events: list[Event]) -> list[Event]:
        return [self.shown(e) for e in events if self.visible(e)]

    def soft_deleted(self, stream: str) -> bool:
        return 0 <= self.version(stream) < self.tb.get(stream, 0)

    def accepts(self, stream: str, expected: Any) -> bool:
        if self.soft_deleted(stream) and expected is NO_STREAM:
            return True
        if self.soft_deleted(stream) and expected is STREAM_EXISTS:
            return False
        return super().accepts(stream, expected)

    def read_stream(
        self, stream: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Event]:
        out = self.show(super().read_stream(stream, from_version, backwards, None))
        return out if limit is None else out[:limit]

    def read_index(
        self, stream: str, name: str, value: str, backwards: bool, limit: int | None
    ) -> list[Event]:
        out = self.show(super().read_index(stream, name, value, backwards, None))
        if name != "type":
            out = [e for e in out if e.id not in self.redacted]
        return out if limit is None else out[:limit]

    def read_all(
        self,
        after: Any,
        backwards: bool,
        limit: int | None,
        types: list[str] | None,
        prefix: str | None,
    ) -> list[Event]:
        out = self.show(super().read_all(after, backwards, None, types, prefix))
        return out if limit is None else out[:limit]

    def query(
        self, items: list[Any], after: int | None, backwards: bool, limit: int | None
    ) -> list[Event]:
        # What read_all shows, filtered: hidden events match nothing, and a
        # redacted event only by its type.
        out = [
            e for e in self.show(self.log) if (after is None or e.seq > after) and matches(e, items)
        ]
        if backwards:
            out.reverse()
        return out if limit is None else out[:limit]

    def get(self, event_id: Any) -> Event | None:
        found = super().get(event_id)
        return None if found is None or not self.visible(found) else self.shown(found)


class ForgetMachine(StoreMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: ForgetModel = ForgetModel()

    def _record_meta(self, stream: str) -> None:
        """The store appended to ``$$stream``: the model takes that event as it is."""
        last = next(self.store.read_all(backwards=True, limit=1))
        assert (last.stream, last.seq) == ("$$" + stream, len(self.model.log) + 1)
        self.model.record([last])

    @rule(
        target=StoreMachine.ids,
        stream=st.sampled_from(STREAMS),
        events=new_events(),
        data=st.data(),
    )
    def append(self, stream: str, events: list[NewEvent], data: st.DataObject) -> Any:
        expected = data.draw(expected_versions(self.model))
        if self.model.accepts(stream, expected):
            result = self.store.append(stream, events, expected_version=expected)
            self.model.record(self._expect(stream, events, result))
            return result.ids[0]
        try:
            self.store.append(stream, events, expected_version=expected)
        except WrongExpectedVersion as exc:
            soft = self.model.soft_deleted(stream) and expected is STREAM_EXISTS
            assert exc.actual == (-1 if soft else self.model.version(stream))
        else:
            raise AssertionError(f"append with expected {expected} should have failed")
        return ULID.from_int(0)

    def failed_maintenance(self) -> None:  # not a rule here: it reads streams unfiltered
        pass

    @precondition(lambda self: bool(self.model.log))
    @rule()
    def compact_everything(self) -> None:
        last = self.model.log[-1].id
        self.store.compact(before=ULID.from_int(int(last) + 1), max_file_events=self.file_events)
        assert self.store.get(last) == self.model.get(last)

    @rule(stream=st.sampled_from(STREAMS), exact=st.booleans())
    def delete(self, stream: str, exact: bool) -> None:
        version = self.model.version(stream)
        expected: Any = version if exact else ANY
        if version < 0 or self.model.soft_deleted(stream):
            try:
                self.store.delete_stream(stream, expected)
            except WrongExpectedVersion as exc:
                assert exc.actual == -1
                return
            raise AssertionError("deleting a stream with nothing to delete worked")
        self.store.delete_stream(stream, expected)
        self.model.tb[stream] = version + 1
        self._record_meta(stream)

    @rule(
        stream=st.sampled_from(STREAMS),
        max_count=st.one_of(st.none(), st.integers(min_value=1, max_value=6)),
        tb=st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
    )
    def set_retention(self, stream: str, max_count: int | None, tb: int | None) -> None:
        self.store.set_retention(stream, max_count=max_count, truncate_before=tb)
        self.model.tb[stream] = tb or 0
        if max_count is None:
            self.model.max_count.pop(stream, None)
        else:
            self.model.max_count[stream] = max_count
        self._record_meta(stream)

    @rule(
        stream=st.sampled_from(STREAMS),
        bad=st.sampled_from([{"max_count": 0}, {"truncate_before": -3}, {"max_age": -1}]),
    )
    def bad_retention(self, stream: str, bad: dict[str, int]) -> None:
        try:
            self.store.set_retention(stream, **bad)  # type: ignore[arg-type]
        except InvalidArgument:
            return
        raise AssertionError(f"set_retention({bad}) was accepted")

    @rule(event_id=StoreMachine.ids)
    def redact(self, event_id: ULID) -> None:
        event = Model.get(self.model, event_id)
        if event is None or not self.model.visible(event):
            try:
                self.store.redact(event_id)
            except EventNotFound:
                return
            raise AssertionError("redacting an absent event worked")
        if event.stream.startswith("$$"):
            return
        assert self.store.redact(event_id) is (event_id not in self.model.redacted)
        self.model.redacted.add(event_id)
        got = self.store.get(event_id)
        assert got is not None and got.redacted

    @rule()
    def tombstone(self) -> None:
        if TOMB in self.model.tombstoned:
            try:
                self.store.append(TOMB, [NewEvent("T")])
            except StreamDeleted:
                pass
            else:
                raise AssertionError("an append to a tombstoned stream worked")
            try:
                self.store.read_stream(TOMB)
            except StreamDeleted:
                return
            raise AssertionError("a read of a tombstoned stream worked")
        result = self.store.append(TOMB, [NewEvent("T", 1), NewEvent("T", 2)])
        self.model.record(self._expect(TOMB, [NewEvent("T", 1), NewEvent("T", 2)], result))
        self.store.tombstone_stream(TOMB, expected_version=1)
        self.model.tombstoned.add(TOMB)
        self._record_meta(TOMB)

    @rule()
    def scavenge(self) -> None:
        self.store.scavenge()
        newly = {e.id for e in self.model.log if not self.model.visible(e)} - self.model.removed
        self.model.removed |= newly
        after = self.store.scavenge(dry_run=True)
        assert (after.removed, after.scrubbed) == (0, 0)

    @rule(
        from_seq=st.integers(min_value=0, max_value=600),
        backwards=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
    )
    def read_all_from_seq(self, from_seq: int, backwards: bool, limit: int | None) -> None:
        got = list(self.store.read_all(None, backwards, limit, from_seq=from_seq))
        log = self.model.log
        if backwards:
            want = [e for e in reversed(log) if e.seq <= from_seq]
        else:
            want = [e for e in log if e.seq >= from_seq]
        want = self.model.show(want)
        assert got == (want if limit is None else want[:limit])

    # -- invariants (the base class's, on what is visible) ----------------------

    @invariant()
    def log_is_ordered_and_gap_free(self) -> None:
        log = list(self.store.read_all())
        assert log == self.model.read_all(None, False, None, None, None)
        assert [e.redacted for e in log] == [e.id in self.model.redacted for e in log]
        assert all(a.seq < b.seq for a, b in itertools.pairwise(log))
        removed = {e.seq for e in self.model.log if e.id in self.model.removed}
        assert {s for a, b in self.store.removed_seqs for s in range(a, b + 1)} == removed

    @invariant()
    def every_read_agrees_at_sample_points(self) -> None:
        for stream in STREAMS:
            events = self.model.read_stream(stream, None, False, None)
            assert self.store.stream_version(stream) == self.model.version(stream)
            assert list(self.store.read_stream(stream)) == events
            assert list(self.store.read_stream(stream, backwards=True)) == events[::-1]
            assert list(self.store.read_stream("$$" + stream)) == self.model.read_stream(
                "$$" + stream, None, False, None
            )
            for e in Model.read_stream(self.model, stream, None, False, None)[::3]:
                assert self.store.get(e.id) == self.model.get(e.id)
            if events:
                assert list(self.store.read_index(stream, "type", events[0].type)) == (
                    self.model.read_index(stream, "type", events[0].type, False, None)
                )
            for name, value in (("customer", "c1"), ("region", "eu")):
                assert list(self.store.read_index(stream, name, value)) == (
                    self.model.read_index(stream, name, value, False, None)
                )


ForgetMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestForgetMachine = ForgetMachine.TestCase
