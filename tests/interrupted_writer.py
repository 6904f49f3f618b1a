"""A writer process interrupted over and over, as Ctrl-C interrupts a program.

Run as ``python -m tests.interrupted_writer PATH SECONDS``. It appends in a
loop while a timer raises KeyboardInterrupt (one at a time: at most every
2 ms, checked every 100 us) wherever in eventstore's code the process is,
for SECONDS, printing the batch number of each append that returned; then
it stops the timer, closes the store and prints ``closed``. An append cut
short may or may not be written, and one cut short inside the write stops
the store (it must not leave a gap in the log); either way close() must
return, and the store must reopen whole.
"""

from __future__ import annotations

import faulthandler
import sys
import time

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import StoreClosed

from .interrupts import interrupts


def main() -> None:
    path, seconds = sys.argv[1], float(sys.argv[2])
    faulthandler.dump_traceback_later(seconds + 15, exit=True)  # a hang shows where
    store = EventStore.open(path)
    end = time.monotonic() + seconds
    batch = interrupted = failed = 0
    interrupts(True)
    while time.monotonic() < end:
        batch += 1
        try:
            store.append_many(
                [
                    (f"s-{batch % 3}", [NewEvent("T", {"batch": batch}, indexes={"b": "x"})], ANY),
                    ("t", [NewEvent("T", {"batch": batch})] * 9, ANY),
                ]
            )
            print("acked", batch, flush=True)
        except KeyboardInterrupt:
            interrupted += 1
        except StoreClosed:  # an interrupt inside a write stops the store: reopen it
            interrupts(False)
            failed += 1
            store.close()
            store = EventStore.open(path)
            interrupts(True)
    interrupts(False)
    print("interrupted", interrupted, "failed", failed, flush=True)
    store.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
