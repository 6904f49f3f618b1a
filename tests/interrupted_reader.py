"""A reader process interrupted over and over, as Ctrl-C interrupts a program.

Run as ``python -m tests.interrupted_reader PATH SECONDS``. It reads in a
loop while a timer raises KeyboardInterrupt (one at a time: at most every
2 ms, checked every 100 us) wherever in eventstore's code the process is,
for SECONDS; then it stops the timer, closes the store and prints
``closed``. Before the fix, close() waited forever for reads that an
interrupt had cut short.
"""

from __future__ import annotations

import faulthandler
import sys
import time

from eventstore import EventStore, NewEvent

from .interrupts import interrupts


def _read_until(store: EventStore, end: float, probe: object) -> int:
    interrupted = 0
    while time.monotonic() < end:
        try:
            store.get(probe)  # type: ignore[arg-type]
            list(store.read_stream("s", limit=5))
            list(store.read_all(limit=3))
            list(store.read_index("s", "type", "T", limit=2))
        except KeyboardInterrupt:
            interrupted += 1
    return interrupted


def main() -> None:
    path, seconds = sys.argv[1], float(sys.argv[2])
    faulthandler.dump_traceback_later(seconds + 15, exit=True)  # a hang shows where
    store = EventStore.open(path)
    probe = store.append("s", [NewEvent("T", {"n": n}) for n in range(20)]).ids[3]
    # (Taken before the timer starts: indexing the ids runs library code,
    # where an interrupt outside _read_until's handler would end the run.)
    interrupts(True)
    interrupted = _read_until(store, time.monotonic() + seconds, probe)
    interrupts(False)
    print("interrupted", interrupted, flush=True)
    store.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
