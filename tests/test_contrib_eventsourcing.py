"""eventsourcing's own recorder and factory test cases, run on eventstore.contrib.eventsourcing.

The shipped test cases run unchanged; the tests after them cover what they do
not: versions that do not start at 1, str originator ids, snapshots kept in
their own store, compaction, reopening, sharing one open store, and the
errors the module adds.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import threading
import time
import unittest
from datetime import timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    InterfaceError,
    ProcessRecorder,
    StoredEvent,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

from eventstore import EventStore
from eventstore.contrib.eventsourcing import (
    EventStoreAggregateRecorder,
    EventStoreApplicationRecorder,
    EventStoreFactory,
    EventStoreProcessRecorder,
    EventStoreTrackingRecorder,
)
from eventstore.errors import WrongExpectedVersion

MODULE = "eventstore.contrib.eventsourcing"


class StoreFolder:
    """A fresh folder per test, and the factories made on it closed afterwards."""

    folder: str
    factories: list[EventStoreFactory]

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="es-contrib-")
        self.factories = []
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        for factory in self.factories:
            factory.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def make_factory(self, **env: str) -> EventStoreFactory:
        factory = EventStoreFactory(Environment(env={"EVENTSTORE_PATH": self.folder, **env}))
        self.factories.append(factory)
        return factory


# -- the shipped test cases -----------------------------------------------------


class TestAggregateRecorder(StoreFolder, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.make_factory().aggregate_recorder()


class TestSnapshotRecorder(StoreFolder, AggregateRecorderTestCase):
    """The recorder eventsourcing uses for snapshots: a store of its own."""

    def create_recorder(self) -> AggregateRecorder:
        return self.make_factory().aggregate_recorder("snapshots")


class TestApplicationRecorder(StoreFolder, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return self.make_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestApplicationRecorderStrIds(TestApplicationRecorder):
    """The same, with str originator ids instead of UUIDs."""

    def new_originator_id(self) -> UUID | str:
        return f"account-{uuid4()}"


class TestNonInterleavingNotificationIDs(StoreFolder, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.make_factory().application_recorder()


class TestTrackingRecorder(StoreFolder, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.make_factory().tracking_recorder()


class TestProcessRecorder(StoreFolder, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.make_factory().process_recorder()


class MyTrackingRecorder(EventStoreTrackingRecorder):
    pass


class TestFactory(StoreFolder, InfrastructureFactoryTestCase[EventStoreFactory]):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="es-contrib-")
        self.factories = []
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = MODULE
        self.env[EventStoreFactory.EVENTSTORE_PATH] = self.folder
        InfrastructureFactoryTestCase.setUp(self)

    def expected_factory_class(self) -> type[EventStoreFactory]:
        return EventStoreFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return EventStoreAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return EventStoreApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return EventStoreTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return MyTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return EventStoreProcessRecorder


# -- what the shipped cases do not cover ------------------------------------------------


def stored(originator_id: UUID | str, version: int, topic: str = "t") -> StoredEvent:
    return StoredEvent(originator_id, version, topic, f"state{version}".encode())


@pytest.fixture
def factory(tmp_path: Any) -> Any:
    made = EventStoreFactory(Environment(env={"EVENTSTORE_PATH": str(tmp_path / "s")}))
    yield made
    made.close()


def app_recorder(factory: EventStoreFactory) -> EventStoreApplicationRecorder:
    recorder = factory.application_recorder()
    assert isinstance(recorder, EventStoreApplicationRecorder)
    return recorder


def test_versions_are_kept_as_given_and_stream_versions_start_at_zero(
    factory: EventStoreFactory,
) -> None:
    recorder = app_recorder(factory)
    oid = uuid4()
    assert recorder.insert_events([stored(oid, 5), stored(oid, 6), stored(oid, 9)]) == [1, 2, 3]
    assert [e.originator_version for e in recorder.select_events(oid)] == [5, 6, 9]
    events = list(factory.store.read_stream(str(oid)))
    assert [e.version for e in events] == [0, 1, 2]
    assert [e.metadata for e in events] == [{"originator_version": v} for v in (5, 6, 9)]
    assert events[0].data == b"state5" and events[0].type == "t"
    # Versions between recorded ones cannot go in: a stream is append-only.
    with pytest.raises(IntegrityError, match="older than the last one"):
        recorder.insert_events([stored(oid, 7)])
    with pytest.raises(IntegrityError, match="already recorded"):
        recorder.insert_events([stored(oid, 10), stored(oid, 10)])
    assert factory.store.stream_version(str(oid)) == 2


def test_select_events_ranges_with_sparse_versions(factory: EventStoreFactory) -> None:
    recorder = app_recorder(factory)
    oid = uuid4()
    versions = [1, 2, 3, 7, 8, 20, 21, 22, 50]
    recorder.insert_events([stored(oid, v) for v in versions])
    for gt in [None, 0, 1, 2, 5, 7, 8, 19, 22, 49, 50, 60]:
        for lte in [None, 0, 1, 3, 6, 7, 21, 50, 99]:
            for desc in (False, True):
                for limit in (None, 1, 2, 100):
                    want = [
                        v for v in versions if (gt is None or v > gt) and (lte is None or v <= lte)
                    ]
                    if desc:
                        want.reverse()
                    if limit is not None:
                        want = want[:limit]
                    got = recorder.select_events(oid, gt=gt, lte=lte, desc=desc, limit=limit)
                    assert [e.originator_version for e in got] == want, (gt, lte, desc, limit)


def test_interleaved_originators_in_one_call_keep_their_order(factory: EventStoreFactory) -> None:
    recorder = app_recorder(factory)
    a, b = uuid4(), uuid4()
    ids = recorder.insert_events([stored(a, 1), stored(b, 1), stored(a, 2), stored(b, 2)])
    assert ids == [1, 2, 3, 4]
    notes = recorder.select_notifications(None, 10)
    assert [(n.originator_id, n.originator_version) for n in notes] == [
        (a, 1),
        (b, 1),
        (a, 2),
        (b, 2),
    ]
    # A conflict in any originator rejects the whole call.
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(a, 3), stored(b, 2)])
    assert recorder.max_notification_id() == 4
    assert [e.originator_version for e in recorder.select_events(a)] == [1, 2]


def test_str_and_uuid_ids_come_back_as_they_went_in(factory: EventStoreFactory) -> None:
    recorder = app_recorder(factory)
    uid = uuid4()
    looks_like_uuid = str(uuid4())
    recorder.insert_events([stored(uid, 1), stored(looks_like_uuid, 1), stored("plain", 1)])
    assert recorder.select_events(uid)[0].originator_id == uid
    assert recorder.select_events(looks_like_uuid)[0].originator_id == looks_like_uuid
    assert isinstance(recorder.select_events(looks_like_uuid)[0].originator_id, str)
    assert [n.originator_id for n in recorder.select_notifications(None, 5)] == [
        uid,
        looks_like_uuid,
        "plain",
    ]


def test_bad_input_is_a_data_error_and_writes_nothing(factory: EventStoreFactory) -> None:
    recorder = app_recorder(factory)
    with pytest.raises(DataError):
        recorder.insert_events([stored("", 1)])
    with pytest.raises(DataError):
        recorder.insert_events([stored("a\x00b", 1)])
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent(uuid4(), 1, "", b"x")])
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent(uuid4(), "1", "t", b"x")])  # type: ignore[arg-type]
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent(12345, 1, "t", b"x")])  # type: ignore[arg-type]
    assert recorder.max_notification_id() is None


def test_concurrent_writers_of_one_originator_exactly_one_wins(factory: EventStoreFactory) -> None:
    recorder = app_recorder(factory)
    oid = uuid4()
    recorder.insert_events([stored(oid, 1)])
    for version in range(2, 30):
        wins: list[int] = []
        conflicts: list[int] = []
        barrier = threading.Barrier(8)

        def write(
            n: int, version: int, wins: list[int], conflicts: list[int], barrier: Any
        ) -> None:
            barrier.wait()
            try:
                recorder.insert_events([stored(oid, version, topic=f"w{n}")])
            except IntegrityError:
                conflicts.append(n)
            else:
                wins.append(n)

        threads = [
            threading.Thread(target=write, args=(n, version, wins, conflicts, barrier))
            for n in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and len(conflicts) == 7
    assert [e.originator_version for e in recorder.select_events(oid)] == list(range(1, 30))
    assert recorder.max_notification_id() == 29


def test_tracking_is_written_with_the_events_or_not_at_all(factory: EventStoreFactory) -> None:
    recorder = factory.process_recorder()
    oid = uuid4()
    recorder.insert_events([stored(oid, 1)], tracking=Tracking("up", 1))
    # The event conflicts: neither the event nor the tracking position is written.
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(oid, 1)], tracking=Tracking("up", 2))
    assert recorder.max_tracking_id("up") == 1
    assert factory.store.get_checkpoint("eventsourcing:tracking:up") == 1
    # The tracking conflicts: the event is not written.
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(oid, 2)], tracking=Tracking("up", 1))
    assert [e.originator_version for e in recorder.select_events(oid)] == [1]
    assert recorder.max_notification_id() == 1
    # One write: the checkpoint sits in the same batch as the event.
    assert recorder.insert_events([stored(oid, 2)], tracking=Tracking("up", 2)) == [2]
    assert recorder.max_tracking_id("up") == 2


def test_concurrent_tracking_inserts_one_wins(factory: EventStoreFactory) -> None:
    recorder = factory.process_recorder()
    errors: list[int] = []
    barrier = threading.Barrier(6)

    def track(n: int) -> None:
        barrier.wait()
        try:
            recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("up", 7))
        except IntegrityError:
            errors.append(n)

    threads = [threading.Thread(target=track, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 5
    assert recorder.max_notification_id() == 1


def test_reads_are_the_same_after_compaction_and_reopening(tmp_path: Any) -> None:
    env = Environment(env={"EVENTSTORE_PATH": str(tmp_path / "s")})
    factory = EventStoreFactory(env)
    recorder = app_recorder(factory)
    ids = [uuid4() for _ in range(5)]
    for v in range(1, 21):
        recorder.insert_events([stored(oid, v, topic=f"t{v % 3}") for oid in ids])
    recorder.insert_events([stored(ids[0], 21)], tracking=Tracking("x", 1))

    def snapshot() -> list[Any]:
        return [
            list(recorder.select_notifications(None, 1000)),
            list(recorder.select_notifications(7, 9, stop=60, topics=["t1"])),
            [list(recorder.select_events(oid, gt=3, lte=17, desc=True)) for oid in ids],
            recorder.max_notification_id(),
        ]

    before = snapshot()
    time.sleep(0.003)
    result = factory.store.compact(older_than=timedelta(0))
    assert result.events == 101
    assert snapshot() == before
    recorder.insert_events([stored(ids[1], 21)])
    assert recorder.max_notification_id() == 102
    factory.close()
    assert factory.store.closed

    factory = EventStoreFactory(env)
    recorder = app_recorder(factory)
    after = snapshot()
    assert after[0][:101] == before[0] and after[1:3] == before[1:3]
    assert recorder.max_notification_id() == 102
    assert recorder.select_events(ids[1], desc=True, limit=1)[0].originator_version == 21
    factory.close()


def test_snapshots_are_not_in_the_application_sequence(factory: EventStoreFactory) -> None:
    events = app_recorder(factory)
    snapshots = factory.aggregate_recorder("snapshots")
    oid = uuid4()
    events.insert_events([stored(oid, 1), stored(oid, 2)])
    snapshots.insert_events([stored(oid, 2, topic="snap")])
    assert events.max_notification_id() == 2
    assert [n.id for n in events.select_notifications(None, 10)] == [1, 2]
    assert snapshots.select_events(oid, desc=True, limit=1)[0].topic == "snap"
    assert factory.store.path != factory.store.path + "/eventsourcing-snapshots"
    with pytest.raises(ValueError, match="purpose"):
        factory.aggregate_recorder("../elsewhere")


def test_one_store_per_folder_shared_and_closed_by_the_last_factory(tmp_path: Any) -> None:
    env = Environment(env={"EVENTSTORE_PATH": str(tmp_path / "s")})
    first, second = EventStoreFactory(env), EventStoreFactory(env)
    assert first.store is second.store
    recorder = app_recorder(second)
    first.close()
    first.close()  # twice is fine
    assert not second.store.closed
    recorder.insert_events([stored(uuid4(), 1)])
    second.close()
    assert second.store.closed
    with pytest.raises(InterfaceError):
        recorder.insert_events([stored(uuid4(), 1)])
    with pytest.raises(InterfaceError):
        second.application_recorder()
    # Reopening after all closed gives a new store with what was written.
    third = EventStoreFactory(env)
    assert app_recorder(third).max_notification_id() == 1
    third.close()


def test_unclosed_factories_are_released_when_collected(tmp_path: Any) -> None:
    env = Environment(env={"EVENTSTORE_PATH": str(tmp_path / "s")})
    factory = EventStoreFactory(env)
    store = factory.store
    recorder = factory.tracking_recorder()
    del factory
    gc.collect()
    assert not store.closed  # the recorder still uses it
    recorder.insert_tracking(Tracking("a", 1))
    del recorder
    gc.collect()
    assert store.closed


def test_two_applications_may_not_share_a_store(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    first = EventStoreFactory(Environment("Orders", {"EVENTSTORE_PATH": path}))
    first.application_recorder()
    second = EventStoreFactory(Environment("Invoices", {"EVENTSTORE_PATH": path}))
    with pytest.raises(InfrastructureFactoryError, match="INVOICES_EVENTSTORE_PATH"):
        second.application_recorder()
    # A projection's tracking recorder writes no events: it may share the folder.
    second.tracking_recorder()
    # The same application twice (two instances, or a restart) is fine.
    EventStoreFactory(Environment("Orders", {"EVENTSTORE_PATH": path})).process_recorder()
    second.close()
    first.close()


def test_sync_setting_must_agree_within_a_process(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    durable = EventStoreFactory(Environment(env={"EVENTSTORE_PATH": path, "EVENTSTORE_SYNC": "y"}))
    assert durable.store.sync
    with pytest.raises(InfrastructureFactoryError, match="sync"):
        EventStoreFactory(Environment(env={"EVENTSTORE_PATH": path}))
    durable.close()


def test_missing_path_names_the_keys() -> None:
    with pytest.raises(OSError, match="MYAPP_EVENTSTORE_PATH, EVENTSTORE_PATH"):
        EventStoreFactory(Environment("MyApp", {}))


def test_recorders_can_wrap_a_store_opened_directly(tmp_path: Any) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        recorder = EventStoreProcessRecorder(store)
        recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("up", 3))
        assert recorder.max_tracking_id("up") == 3
        assert recorder.max_notification_id() == 1
        with pytest.raises(TypeError):
            EventStoreApplicationRecorder("not a store")  # type: ignore[arg-type]


def test_subscription_is_woken_by_commits_and_stopped_from_another_thread(
    factory: EventStoreFactory,
) -> None:
    recorder = app_recorder(factory)
    got: list[int] = []
    with recorder.subscribe(gt=None, topics=["wanted"]) as subscription:

        def consume() -> None:
            for n in subscription:
                got.append(n.id)

        thread = threading.Thread(target=consume)
        thread.start()
        for v in range(1, 1201):
            recorder.insert_events([stored(uuid4(), v, topic="wanted" if v % 2 else "other")])
        deadline = time.monotonic() + 10
        while len(got) < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        subscription.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1
    assert got == list(range(1, 1201, 2))


class TestSubscriptionAfterCompaction(StoreFolder, unittest.TestCase):
    """A subscription reads through the cold tier and on into the hot one."""

    sizes: ClassVar[tuple[int, int]] = (700, 300)

    def test(self) -> None:
        factory = self.make_factory()
        recorder = app_recorder(factory)
        first, later = self.sizes
        recorder.insert_events([stored(uuid4(), 1) for _ in range(first)])
        time.sleep(0.003)
        factory.store.compact(older_than=timedelta(0))
        recorder.insert_events([stored(uuid4(), 1) for _ in range(later)])
        with recorder.subscribe(gt=5) as subscription:
            ids = [n.id for _, n in zip(range(first + later - 5), subscription, strict=False)]
        assert ids == list(range(6, first + later + 1))


def test_closing_while_other_threads_read_does_not_crash(tmp_path: Any) -> None:
    """eventsourcing's concurrency tests leave reader threads running past the
    test; closing the factory must wait for reads in progress (a LevelDB
    iterator used after close would crash the process), and later calls must
    fail cleanly."""
    for n in range(15):
        env = Environment(env={"EVENTSTORE_PATH": str(tmp_path / f"s{n}")})
        factory = EventStoreFactory(env)
        recorder = app_recorder(factory)
        oid = uuid4()
        recorder.insert_events([stored(oid, v) for v in range(1, 300)])
        outcomes: list[BaseException] = []
        running = threading.Barrier(5)

        def read(outcomes: list[BaseException], running: Any, recorder: Any, oid: UUID) -> None:
            running.wait()
            try:
                while True:
                    recorder.select_notifications(None, 300)
                    recorder.select_events(oid, gt=5, lte=250)
            except BaseException as exc:
                outcomes.append(exc)

        threads = [
            threading.Thread(target=read, args=(outcomes, running, recorder, oid)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        running.wait()
        time.sleep(0.01 + n / 1000)  # let the readers get going
        factory.close()
        for t in threads:
            t.join(5)
        assert len(outcomes) == 4
        assert all(isinstance(e, InterfaceError) for e in outcomes), outcomes


def test_an_insert_that_conflicts_forever_gives_up_instead_of_hanging(
    factory: EventStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = app_recorder(factory)
    calls: list[int] = []

    def always_conflicts(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise WrongExpectedVersion("s", 0, 1)

    monkeypatch.setattr(factory.store, "append_many", always_conflicts)
    with pytest.raises(DatabaseError, match="gave up inserting after 1000 conflicts"):
        recorder.insert_events([stored(uuid4(), 1)])
    assert len(calls) == 1000
