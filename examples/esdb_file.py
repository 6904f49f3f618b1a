"""The example of Customer.io's ESDB README, ported to eventstore's ESDB files.

Website activity per customer: every customer is a stream (an ESDB *space*),
every event is indexed by its type, and the file answers "all of customer 1's
activity", "customer 1's purchases" and "customer 3's clicks, newest first"
without scanning anything else. Prints exactly what the Go program prints.

    python examples/esdb_file.py [FILE]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from eventstore.esdb import ESDBReader, ESDBWriter, encode_record
from eventstore.ids import MonotonicULIDs

# (customer id, unix timestamp, event type, data), as in the Go example.
EVENTS = [
    ("1", 1403534919, "page", {"url": "http://mysite.com/"}),
    ("1", 1403534920, "click", {"button_text": "Checkout"}),
    ("1", 1403534921, "page", {"url": "http://mysite.com/checkout"}),
    ("1", 1403534923, "purchase", {"total": "42.99"}),
    ("1", 1403534923, "page", {"url": "http://mysite.com/thankyou"}),
    ("2", 1403534919, "page", {"url": "http://mysite.com/"}),
    ("2", 1403534920, "click", {"button_text": "About"}),
    ("2", 1403534921, "page", {"url": "http://mysite.com/about"}),
    ("3", 1403534919, "page", {"url": "http://mysite.com/"}),
    ("3", 1403534920, "click", {"button_text": "About"}),
    ("3", 1403534921, "page", {"url": "http://mysite.com/about"}),
    ("3", 1403534922, "click", {"button_text": "Checkout"}),
    ("3", 1403534923, "purchase", {"total": "126.99"}),
    ("3", 1403534923, "page", {"url": "http://mysite.com/thankyou"}),
]


def go_json(data: dict[str, str]) -> str:
    """What Go's json.Marshal prints for a map[string]string: sorted keys, no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def write(path: str) -> None:
    ids = MonotonicULIDs()
    versions: dict[str, int] = {}
    # The events come grouped by customer, which is already the order a
    # writer wants: streams in byte order, each stream's events together.
    with ESDBWriter(path) as writer:
        for seq, (customer, _ts, event_type, data) in enumerate(EVENTS, 1):
            version = versions.get(customer, 0)
            versions[customer] = version + 1
            record = encode_record(version, seq, event_type, data, None, {})
            writer.add(customer, ids.next_int().to_bytes(16, "big"), record)


def main(path: str) -> None:
    # In case we've already created the file.
    if os.path.exists(path):
        os.remove(path)
    write(path)

    with ESDBReader(path) as db:
        # Stream through all customer 1's activity
        print("activity for 1:")
        for event in db.read_stream("1"):
            print(go_json(event.data))

        # Stream through all customer 2's activity
        print("\nactivity for 2:")
        for event in db.read_stream("2"):
            print(go_json(event.data))

        # Just retrieve customer 1's purchases
        print("\npurchases for 1:")
        for event in db.read_index("1", "type", "purchase"):
            print(go_json(event.data))

        # Just retrieve customer 3's clicks ordered descending
        print("\nclicks for 3:")
        for event in db.read_index("3", "type", "click", backwards=True):
            print(go_json(event.data))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(os.path.join(folder, "activity.esdb"))
