"""KeyboardInterrupts from a timer, for the interrupted_* child processes.

While on, a timer checks every 100 us and raises KeyboardInterrupt wherever
in eventstore's code the main thread is, one at a time (at most every
2 ms), as Ctrl-C comes: not again while the last one is being handled.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import eventstore

_LIBRARY = str(Path(eventstore.__file__).parent)
_last = [0.0]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Only inside the library: an interrupt in the test's own loop or
    # handlers would end it, which is not what is being tested.
    if frame is not None and frame.f_code.co_filename.startswith(_LIBRARY):
        now = time.monotonic()
        if now - _last[0] > 0.002:
            _last[0] = now
            raise KeyboardInterrupt


def interrupts(on: bool) -> None:
    if on:
        signal.signal(signal.SIGALRM, _interrupt)
        # Not every 50 us: on CPython 3.13 with plyvel-next's LevelDB, a
        # SIGALRM that often left an append in batch.write() for good, inside
        # LevelDB's 1 ms write-slowdown sleep (seen with gdb, at 5564931 too).
        signal.setitimer(signal.ITIMER_REAL, 100e-6, 100e-6)
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # one may still be on its way
