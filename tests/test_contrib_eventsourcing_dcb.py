"""eventsourcing's DCB interfaces on eventstore.contrib.eventsourcing: the
library's own ``DCBRecorderTestCase`` and DCB projection test case, unchanged,
the same reads across compaction and reopening, and a DCB application (course
subscriptions, written with eventsourcing.dcb's domain classes) configured
only through the environment."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import unittest
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBQueryItem,
    DCBRecorder,
)
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.dcb.domain import EnduringObject, Group

# eventsourcing's DCB msgpack classes and projection tests need msgspec (a test extra).
from eventsourcing.dcb.msgpack import Decision, InitialDecision, MessagePackMapper
from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.dcb.tests import DCBRecorderTestCase
from eventsourcing.domain import event
from eventsourcing.persistence import DataError, IntegrityError, ProgrammingError, Tracking
from eventsourcing.tests import projection as projection_tests
from eventsourcing.utils import Environment, get_topic

from eventstore import ANY, EventStore, NewEvent
from eventstore.contrib.eventsourcing import (
    DCB_STREAM,
    DCB_TAGS_KEY,
    EventStoreDCBRecorder,
    EventStoreFactory,
    EventStoreTrackingRecorder,
)
from eventstore.ids import ulid_from_int

MODULE = "eventstore.contrib.eventsourcing"


def _compact_all(store: EventStore) -> None:
    last = next(store.read_all(backwards=True, limit=1), None)
    if last is not None:
        store.compact(before=ulid_from_int(int(last.id) + 1))


class Folder:
    folder: str

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="es-dcb-")
        self.factories: list[EventStoreFactory] = []
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        for factory in self.factories:
            factory.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def factory(self) -> EventStoreFactory:
        env = Environment("DCBTest", {"PERSISTENCE_MODULE": MODULE, "EVENTSTORE_PATH": self.folder})
        factory = DCBInfrastructureFactory.construct(env)
        assert isinstance(factory, EventStoreFactory)
        self.factories.append(factory)
        return factory

    def recorder(self) -> EventStoreDCBRecorder:
        return self.factory().dcb_recorder()


# -- eventsourcing's own recorder test case, unchanged -------------------------


class TestDCBRecorder(Folder, DCBRecorderTestCase):
    def test_append_read(self) -> None:
        self._test_append_read(self.recorder())

    def test_append_subscribe(self) -> None:
        self._test_append_subscribe(self.recorder())

    def test_append_read_after_earlier_events_were_compacted(self) -> None:
        """The same test on a store whose first events sit in the cold tier:
        every query then reads both tiers."""
        recorder = self.recorder()
        for n in range(5):
            recorder.append([DCBEvent("Earlier", b"%d" % n, [f"earlier:{n}", "tagX"])])
        _compact_all(recorder.store)
        assert recorder.store.archive_files()
        self._test_append_read(recorder, initial_position=5)

    def test_append_subscribe_after_earlier_events_were_compacted(self) -> None:
        recorder = self.recorder()
        recorder.append([DCBEvent("Earlier", b"", ["tagX"])])
        _compact_all(recorder.store)
        self._test_append_subscribe(recorder, initial_position=1)


# -- the same answers across tiers and reopening -------------------------------

QUERIES: list[DCBQuery | None] = [
    None,
    DCBQuery([DCBQueryItem(tags=["course:1"])]),
    DCBQuery([DCBQueryItem(tags=["course:1", "student:2"])]),
    DCBQuery([DCBQueryItem(types=["Joined"], tags=["student:2"])]),
    DCBQuery([DCBQueryItem(types=["Registered"])]),
    DCBQuery(
        [DCBQueryItem(tags=["student:1"]), DCBQueryItem(types=["Registered"], tags=["course:0"])]
    ),
    DCBQuery([DCBQueryItem(tags=["nobody"])]),
    DCBQuery([DCBQueryItem()]),
]


def _answers(recorder: DCBRecorder) -> list[Any]:
    out = []
    for query in QUERIES:
        for after in (None, 0, 7, 20):
            for limit in (None, 1, 3):
                response = recorder.read(query, after=after, limit=limit)
                events = [(e.position, e.event.type, e.event.data, e.event.tags) for e in response]
                out.append((events, response.head))
    return out


def _fill(recorder: DCBRecorder) -> None:
    for c in range(3):
        recorder.append([DCBEvent("Registered", b"course", [f"course:{c}"])])
    for s in range(4):
        recorder.append([DCBEvent("Registered", b"student", [f"student:{s}"])])
    for s in range(4):
        for c in range(3):
            if (s + c) % 2:
                # Tags not in the store's (sorted) order, and a duplicate.
                tags = [f"student:{s}", f"course:{c}", f"student:{s}"]
                recorder.append([DCBEvent("Joined", b"%d-%d" % (s, c), tags)])


class TestAcrossTiers(Folder, unittest.TestCase):
    def test_reads_agree_with_the_in_memory_recorder_hot_cold_mixed_and_reopened(self) -> None:
        from eventsourcing.dcb.popo import InMemoryDCBRecorder

        memory = InMemoryDCBRecorder()
        _fill(memory)
        expected = _answers(memory)
        factory = self.factory()
        recorder = factory.dcb_recorder()
        _fill(recorder)
        assert _answers(recorder) == expected
        store = recorder.store
        events = list(store.read_all())
        store.compact(before=events[len(events) // 2].id)  # mixed
        assert _answers(recorder) == expected
        _compact_all(store)  # cold
        assert _answers(recorder) == expected
        factory.close()
        self.factories.remove(factory)
        assert _answers(self.recorder()) == expected  # reopened

    def test_tags_come_back_as_given_and_the_store_keeps_them_sorted(self) -> None:
        recorder = self.recorder()
        position = recorder.append(
            [DCBEvent("T", b"", ["b", "a", "b"]), DCBEvent("U", b"x", ["a", "b"])]
        )
        assert position == 2
        got = list(recorder.read())
        assert [e.event.tags for e in got] == [["b", "a", "b"], ["a", "b"]]
        stored = list(recorder.store.read_stream(DCB_STREAM))
        assert [e.tags for e in stored] == [("a", "b"), ("a", "b")]
        assert [e.metadata for e in stored] == [{DCB_TAGS_KEY: ["b", "a", "b"]}, None]
        assert [e.seq for e in stored] == [e.position for e in got]

    def test_bad_input_raises_and_appends_nothing(self) -> None:
        recorder = self.recorder()
        with pytest.raises(ProgrammingError):
            recorder.append([])
        with pytest.raises(DataError):
            recorder.append([DCBEvent("T", "not bytes", [])])  # type: ignore[arg-type]
        with pytest.raises(DataError):
            recorder.append([DCBEvent("T", b"", [""])])
        with pytest.raises(DataError):
            recorder.append([DCBEvent("T", b"", ["a\x00b"])])
        with pytest.raises(DataError):
            recorder.read(DCBQuery([DCBQueryItem(tags=[""])]))
        assert recorder.store.last_seq == 0

    def test_a_failed_condition_appends_nothing(self) -> None:
        recorder = self.recorder()
        recorder.append([DCBEvent("T", b"", ["k"])])
        with pytest.raises(IntegrityError):
            recorder.append(
                [DCBEvent("U", b"", ["k"])],
                DCBAppendCondition(DCBQuery([DCBQueryItem(tags=["k"])]), after=0),
            )
        assert recorder.store.last_seq == 1

    def test_racing_decisions_on_one_boundary_only_one_lands(self) -> None:
        """Threads read the same boundary and append on what they read: of the
        ones that read the same head, exactly one wins each round."""
        recorder = self.recorder()
        boundary = DCBQuery([DCBQueryItem(tags=["seat:1"])])
        wins: list[int] = []
        losses: list[int] = []
        barrier = threading.Barrier(4)

        def decide(n: int) -> None:
            for _ in range(10):
                barrier.wait()
                head = recorder.read(boundary).head
                try:
                    recorder.append(
                        [DCBEvent("Booked", b"%d" % n, ["seat:1"])],
                        DCBAppendCondition(boundary, after=head),
                    )
                except IntegrityError:
                    losses.append(n)
                else:
                    wins.append(n)

        threads = [threading.Thread(target=decide, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        booked = list(recorder.read(boundary))
        assert len(booked) == len(wins) >= 10
        assert len(wins) + len(losses) == 40
        # No two bookings were decided on the same head.
        assert len(booked) == len({e.position for e in booked})

    def test_subscription_filters_by_query_and_stops(self) -> None:
        recorder = self.recorder()
        recorder.append([DCBEvent("A", b"1", ["x"]), DCBEvent("B", b"2", ["y"])])
        query = DCBQuery([DCBQueryItem(tags=["x"])])
        with recorder.subscribe(query) as subscription:
            assert next(subscription).position == 1
            recorder.append([DCBEvent("B", b"3", ["y"]), DCBEvent("A", b"4", ["x"])])
            assert next(subscription).position == 4
            subscription.stop()
            with pytest.raises(StopIteration):
                next(subscription)

    def test_events_live_in_the_store_at_eventstore_path(self) -> None:
        factory = self.factory()
        factory.dcb_recorder().append([DCBEvent("T", b"d", ["t"])])
        factory.close()
        self.factories.remove(factory)
        with EventStore.open(self.folder) as store:
            assert [(e.stream, e.type, e.data, e.tags, e.seq) for e in store.read_all()] == [
                (DCB_STREAM, "T", b"d", ("t",), 1)
            ]
            store.append("other", [NewEvent("Plain", {"not": "bytes"})])
        recorder = self.recorder()
        with pytest.raises(DataError):
            list(recorder.read())  # an event not written as DCB bytes


# -- eventsourcing's DCB projection test case ---------------------------------


class EventStoreEventCountersView(EventStoreTrackingRecorder, projection_tests.EventCountersView):
    """The counters as the lengths of two streams, each increment appended with
    its tracking position in one atomic write."""

    def _count(self, stream: str) -> int:
        with self._guard:
            return self.store.stream_version(stream) + 1

    def _incr(self, stream: str, tracking: Tracking) -> None:
        with self._guard, self._tracking_lock:
            name = self._check_tracking(tracking)
            self.store.append_many(
                [(stream, [NewEvent("Counted", b"")], ANY)],
                checkpoint=(name, tracking.notification_id),
            )

    def get_created_event_counter(self) -> int:
        return self._count("counted-created")

    def get_subsequent_event_counter(self) -> int:
        return self._count("counted-subsequent")

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self._incr("counted-created", tracking)

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self._incr("counted-subsequent", tracking)


class OnEventStoreEnv:
    """PERSISTENCE_MODULE and the stores' folders through os.environ, as a
    user switching storage would: the DCB application's events and the
    projection's view (named ``eventcounters``) in folders of their own."""

    variables: ClassVar[tuple[str, ...]] = ("EVENTSTORE_PATH", "EVENTCOUNTERS_EVENTSTORE_PATH")

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="es-dcb-app-")
        values = {"PERSISTENCE_MODULE": MODULE}
        for name in self.variables:
            values[name] = os.path.join(self.folder, name.lower())
        self.saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(self.folder, ignore_errors=True)


class TestEventCountersView(Folder, projection_tests.EventCountersViewTestCase):
    def construct_event_counters_view(self) -> EventStoreEventCountersView:
        view = self.factory().tracking_recorder(EventStoreEventCountersView)
        assert isinstance(view, EventStoreEventCountersView)
        return view


class TestTaggedDecisionCountersProjection(
    OnEventStoreEnv, projection_tests.TaggedDecisionCountersProjectionTestCase
):
    view_class = EventStoreEventCountersView
    env: ClassVar[dict[str, str]] = {"MAPPER_TOPIC": get_topic(MessagePackMapper)}


# -- a DCB application on eventsourcing.dcb's domain classes -------------------


class CourseFull(Exception):
    pass


class StudentBusy(Exception):
    pass


class AlreadySubscribed(Exception):
    pass


class Subscribed(Decision):
    """One fact for both objects: it carries the student's and the course's tags."""

    student_id: str
    course_id: str


class Student(EnduringObject[Decision, str]):
    class Registered(InitialDecision):
        student_id: str
        name: str
        max_courses: int

    def __init__(self, name: str, max_courses: int) -> None:
        self.name = name
        self.max_courses = max_courses
        self.course_ids: list[str] = []

    @event(Subscribed)
    def _(self, course_id: str) -> None:
        if len(self.course_ids) >= self.max_courses:
            raise StudentBusy(self.name)
        self.course_ids.append(course_id)


class Course(EnduringObject[Decision, str]):
    class Registered(InitialDecision):
        course_id: str
        title: str
        capacity: int

    def __init__(self, title: str, capacity: int) -> None:
        self.title = title
        self.capacity = capacity
        self.student_ids: list[str] = []

    @event(Subscribed)
    def _(self, student_id: str) -> None:
        if student_id in self.student_ids:
            raise AlreadySubscribed(student_id)
        if len(self.student_ids) >= self.capacity:
            raise CourseFull(self.title)
        self.student_ids.append(student_id)


class Enrolment(Group[Decision]):
    def __init__(self, student: Student | None, course: Course | None) -> None:
        assert student is not None and course is not None
        self.student = student
        self.course = course

    def subscribe(self) -> None:
        self.trigger_event(Subscribed, student_id=self.student.id, course_id=self.course.id)


class Courses(DCBApplication):
    env: Mapping[str, str] = {"MAPPER_TOPIC": get_topic(MessagePackMapper)}

    def register_student(self, name: str, max_courses: int) -> str:
        student = Student(name=name, max_courses=max_courses)
        self.repository.save(student)
        return student.id

    def register_course(self, title: str, capacity: int) -> str:
        course = Course(title=title, capacity=capacity)
        self.repository.save(course)
        return course.id

    def subscribe(self, student_id: str, course_id: str) -> None:
        enrolment = self.repository.get_group(Enrolment, student_id, course_id)
        enrolment.subscribe()
        self.repository.save(enrolment)

    def students(self, course_id: str) -> list[str]:
        course = self.repository.get(course_id)
        assert isinstance(course, Course)
        return course.student_ids


class TestCoursesApplication(OnEventStoreEnv, unittest.TestCase):
    def test_capacity_and_limit_hold_and_the_events_are_in_the_store(self) -> None:
        app = Courses()
        assert isinstance(app.recorder, EventStoreDCBRecorder)
        ann, bob, cy = (app.register_student(n, max_courses=2) for n in ("ann", "bob", "cy"))
        french = app.register_course("French", capacity=2)
        maths = app.register_course("Maths", capacity=5)
        art = app.register_course("Art", capacity=5)
        app.subscribe(ann, french)
        app.subscribe(bob, french)
        with pytest.raises(CourseFull):
            app.subscribe(cy, french)
        with pytest.raises(AlreadySubscribed):
            app.subscribe(ann, french)
        app.subscribe(ann, maths)
        with pytest.raises(StudentBusy):
            app.subscribe(ann, art)
        assert app.students(french) == [ann, bob]
        app.close()

        # The same answers after compaction and reopening.
        with EventStore.open(os.environ["EVENTSTORE_PATH"]) as store:
            events = list(store.read_all())
            assert {e.stream for e in events} == {DCB_STREAM}
            assert [e.seq for e in events] == list(range(1, 10))
            joined = [e for e in events if e.type == get_topic(Subscribed)]
            assert joined[0].tags == tuple(sorted([ann, french]))
            _compact_all(store)
        again = Courses()
        assert again.students(french) == [ann, bob]
        with pytest.raises(CourseFull):
            again.subscribe(cy, french)
        again.subscribe(cy, art)
        assert again.students(art) == [cy]
        again.close()

    def test_a_decision_made_on_a_stale_read_is_refused(self) -> None:
        """Two enrolments read the same course with one place left; the
        second to save fails the append condition, not the capacity rule."""
        app = Courses()
        ann, bob = app.register_student("ann", 3), app.register_student("bob", 3)
        course = app.register_course("Pottery", capacity=1)
        first = app.repository.get_group(Enrolment, ann, course)
        second = app.repository.get_group(Enrolment, bob, course)
        first.subscribe()
        second.subscribe()
        app.repository.save(first)
        with pytest.raises(IntegrityError):
            app.repository.save(second)
        assert app.students(course) == [ann]
        app.close()
