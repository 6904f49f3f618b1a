"""eventsourcing's application and projection test cases on eventstore.contrib.eventsourcing,
configured only through the environment, as a user switching storage would;
and the example application run as a program."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

# Imported as modules: a TestCase class in this module's namespace would be
# collected and run on eventsourcing's default (in-memory) persistence.
from eventsourcing.tests import application as application_tests

from eventstore import EventStore

try:  # eventsourcing's projection tests import msgspec (for its DCB part)
    from eventsourcing.tests import projection as projection_tests
except ImportError:  # pragma: no cover
    HAVE_PROJECTION_TESTS = False
else:
    HAVE_PROJECTION_TESTS = True

ROOT = Path(__file__).resolve().parent.parent
MODULE = "eventstore.contrib.eventsourcing"


class OnEventStore:
    """Point eventsourcing at a fresh store through os.environ for one test."""

    folder: str
    saved: dict[str, str | None]
    variables: ClassVar[tuple[str, ...]] = ("EVENTSTORE_PATH",)

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="es-contrib-app-")
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


class TestExampleApplication(OnEventStore, application_tests.ExampleApplicationTestCase):
    expected_factory_topic = f"{MODULE}:EventStoreFactory"


class TestApplication(OnEventStore, application_tests.ApplicationTestCase):
    def test_events_land_in_the_store_at_eventstore_path(self) -> None:
        app = Application[UUID]()
        aggregate = Aggregate()
        aggregate.trigger_event(Aggregate.Event)
        recordings = app.save(aggregate)
        assert [r.notification.id for r in recordings] == [1, 2]
        app.close()
        with EventStore.open(os.environ["EVENTSTORE_PATH"]) as store:
            events = list(store.read_stream(str(aggregate.id)))
        assert [e.seq for e in events] == [1, 2]
        assert [e.metadata for e in events] == [
            {"originator_version": 1},
            {"originator_version": 2},
        ]
        assert events[0].type == "eventsourcing.domain:Aggregate.Created"


if HAVE_PROJECTION_TESTS:

    class TestEventSourcedProjection(OnEventStore, projection_tests.EventSourcedProjectionTestCase):
        """The projection is an application too, so it needs its own store:
        ``COUNTERS_EVENTSTORE_PATH`` (its name, as eventsourcing prefixes keys)."""

        variables = ("EVENTSTORE_PATH", "COUNTERS_EVENTSTORE_PATH")


def test_example_program(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "examples/eventsourcing_app.py", str(tmp_path / "school")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.endswith("EVENTSTORE_PATH")},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Fido: ['roll over', 'play dead', 'fetch']" in out
    assert "compacted 8 events into 1 file" in out
    assert "after compaction, Fido: ['roll over', 'play dead', 'fetch']" in out
    assert "notification ids 1..12, gap-free" in out
    assert "reopened: Buster: ['sit', 'stay']" in out
    assert "snapshot of Fido at version 4" in out
    assert "subscription read 12 notifications, last: __main__:Dog.TrickAdded" in out
    assert "max notification id after reopening: 12" in out


def test_bench_runs_both_modules_side_by_side() -> None:
    """A smoke test of scripts/bench_contrib.py (speed itself is the script's job)."""
    path = ROOT / "scripts" / "bench_contrib.py"
    spec = importlib.util.spec_from_file_location("bench_contrib", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    # eventsourcing resolves the workload's event classes by module name.
    sys.modules.setdefault("bench_contrib", bench)
    spec.loader.exec_module(bench)
    result = bench.bench_eventsourcing(quick=True)
    assert set(result["rates"]) == {"eventsourcing-sqlite", "eventstore", "eventstore-sync"}
    assert set(result["ratios"]) == {"eventstore", "eventstore-sync"}
    assert all(rate > 0 for rates in result["rates"].values() for rate in rates.values())
    assert "ratio to sqlite" in bench.report(result)
