"""An `eventsourcing` application (its dog-school example) stored in an eventstore.

The application code is plain eventsourcing; two environment variables put it
on this store:

    PERSISTENCE_MODULE=eventstore.contrib.eventsourcing
    EVENTSTORE_PATH=<folder>

Halfway through, the events so far are compacted into an ESDB file, and the
application carries on reading and writing as before.

Run: python examples/eventsourcing_app.py [folder]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from eventstore import EventStore
from eventstore.contrib.eventsourcing import EventStoreFactory


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application[UUID]):
    is_snapshotting_enabled = True

    def register_dog(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)

    def get_dog(self, dog_id: UUID) -> dict[str, Any]:
        dog: Dog = self.repository.get(dog_id)
        return {"name": dog.name, "tricks": list(dog.tricks)}


def show(school: DogSchool, dog_id: UUID, prefix: str = "") -> None:
    dog = school.get_dog(dog_id)
    print(f"{prefix}{dog['name']}: {dog['tricks']}")


def main(folder: str) -> None:
    os.environ["PERSISTENCE_MODULE"] = "eventstore.contrib.eventsourcing"
    os.environ["EVENTSTORE_PATH"] = folder

    school = DogSchool()
    fido = school.register_dog("Fido")
    for trick in ("roll over", "play dead", "fetch"):
        school.add_trick(fido, trick)
    buster = school.register_dog("Buster")
    school.add_trick(buster, "sit")
    rex = school.register_dog("Rex")
    school.add_trick(rex, "beg")
    show(school, fido)

    # The factory shares its open store: only one EventStore may be open per
    # folder in a process, so compaction goes through it.
    assert isinstance(school.factory, EventStoreFactory)
    store = school.factory.store
    if hasattr(EventStore, "compact"):
        time.sleep(0.002)  # let the clock pass the last event's millisecond
        result = store.compact(older_than=timedelta(0))
        files = len(result.files)
        print(f"compacted {result.events} events into {files} file{'s' if files != 1 else ''}")
    else:
        print("this eventstore has no compact(); skipping compaction")
    show(school, fido, "after compaction, ")

    school.add_trick(buster, "stay")
    school.add_trick(rex, "shake")
    lassie = school.register_dog("Lassie")
    school.add_trick(lassie, "rescue")

    ids = [n.id for n in school.notification_log.select(start=1, limit=10)] + [
        n.id for n in school.notification_log.select(start=11, limit=10)
    ]
    assert ids == list(range(1, len(ids) + 1)), ids
    print(f"notification ids 1..{ids[-1]}, gap-free")

    school.take_snapshot(fido)
    assert school.snapshots is not None
    snapshot = next(iter(school.snapshots.get(fido, desc=True, limit=1)))
    print(f"snapshot of Fido at version {snapshot.originator_version}")
    show(school, fido, "from snapshot, ")

    with school.recorder.subscribe(gt=0) as subscription:
        seen = [n for _, n in zip(range(len(ids)), subscription, strict=False)]
    print(f"subscription read {len(seen)} notifications, last: {seen[-1].topic}")
    school.close()

    school = DogSchool()
    show(school, buster, "reopened: ")
    print(f"max notification id after reopening: {school.recorder.max_notification_id()}")
    school.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "dog-school"))
