"""The example from ESDB's README, ported to eventstore's API.

Website activity per customer: every customer is a stream, every event is
filed under its type (the ``type`` index), so one customer's purchases can be
read without scanning their page views. Prints what the Go original prints;
its reverse index scan is ``read_index(..., backwards=True)``.

    python examples/activity.py [STORE_FOLDER]
"""

from __future__ import annotations

import json
import sys
import tempfile

from eventstore import EventStore, NewEvent

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


def as_go_json(data: dict[str, str]) -> str:
    # Go's json.Marshal of a map: keys sorted, no spaces.
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def main(folder: str) -> None:
    with EventStore.open(folder) as store:
        for customer, timestamp, event_type, data in EVENTS:
            store.append(customer, [NewEvent(event_type, data, metadata={"timestamp": timestamp})])

        print("activity for 1:")
        for event in store.read_stream("1"):
            print(as_go_json(event.data))

        print("\nactivity for 2:")
        for event in store.read_stream("2"):
            print(as_go_json(event.data))

        print("\npurchases for 1:")
        for event in store.read_index("1", "type", "purchase"):
            print(as_go_json(event.data))

        print("\nclicks for 3:")
        for event in store.read_index("3", "type", "click", backwards=True):
            print(as_go_json(event.data))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(f"{tmp}/activity")
