"""eventstore in one page: append, replay, look up by ULID, scan an index.

    python examples/quickstart.py [STORE_FOLDER]

Without a folder it works in a temporary one and leaves nothing behind.
"""

from __future__ import annotations

import sys
import tempfile

from eventstore import NO_STREAM, EventStore, NewEvent
from eventstore.errors import WrongExpectedVersion


def main(folder: str) -> None:
    with EventStore.open(folder, sync=True) as store:
        print(f"opened store at {folder}")

        result = store.append(
            "order-42",
            [
                NewEvent(
                    "OrderPlaced",
                    {"total": 42.99},
                    metadata={"user": "u1"},
                    indexes={"customer": "c7"},
                ),
                NewEvent("ItemAdded", {"sku": "book", "price": 12.5}),
                NewEvent("OrderPaid", {"amount": 55.49}),
            ],
            expected_version=NO_STREAM,
        )
        print(
            f"appended versions {result.first_version}..{result.last_version} "
            f"to order-42, ids {result.ids[0]}..{result.ids[-1]}"
        )
        store.append(
            "order-43", [NewEvent("OrderPlaced", {"total": 7.0}, indexes={"customer": "c7"})]
        )

        try:
            store.append("order-42", [NewEvent("OrderPaid", {})], expected_version=0)
        except WrongExpectedVersion as exc:
            print(f"refused a stale write: {exc}")

        print("replay of order-42:")
        for event in store.read_stream("order-42"):
            print(f"  v{event.version} seq={event.seq} {event.type} {event.data}")

        event = store.get(str(result.ids[1]))
        assert event is not None
        print(
            f"lookup by ULID {event.id}: {event.type} in {event.stream} "
            f"at {event.timestamp.isoformat()}"
        )

        print("order-42's payments, through the type index:")
        for event in store.read_index("order-42", "type", "OrderPaid"):
            print(f"  {event.type} {event.data}")

        print("order-42 newest first:")
        for event in store.read_stream("order-42", backwards=True):
            print(f"  v{event.version} {event.type}")

        print("the global log, OrderPlaced only:")
        for event in store.read_all(types=["OrderPlaced"]):
            print(f"  seq={event.seq} {event.stream} {event.data}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(f"{tmp}/shop")
