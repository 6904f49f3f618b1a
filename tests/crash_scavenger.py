"""A scavenging process for crash tests (tests/test_crash_scavenge.py).

Run as ``python -m tests.crash_scavenger PATH K``: it opens the store and
scavenges it, killing itself with SIGKILL at the K-th step it passes (K=0:
never; the parent then kills it at a random moment instead). The steps are
the calls that change files: recording removed seqs, each hot record
rewritten (one synced batch each here), the memtable flush, each archive
file's number, write, segment keys, commit, old keys and removal, the
snapshot drop, the final compaction, and the reopen (the new MANIFEST and
CURRENT written, the folder fsynced), each killed before and after.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import eventstore.scavenge as scavenge
from eventstore import EventStore, manifest, segments
from eventstore.hot import HotTier
from eventstore.scavenge import Scavenging
from eventstore.tiering import Tiering

count = [0]


def _step(func: Callable[..., Any], limit: int) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for when in ("before", "after"):
            if when == "after":
                result = func(*args, **kwargs)
            count[0] += 1
            if count[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper


def main() -> None:
    path, limit = sys.argv[1], int(sys.argv[2])
    scavenge._CHUNK = 1  # one synced batch per hot record: a kill between any two
    for name in ("write_file", "_husk", "_flush_memtable", "removed_item"):
        setattr(scavenge, name, _step(getattr(scavenge, name), limit))
    # The reopen's scrub of LevelDB's MANIFEST: its writes and folder fsyncs.
    for name in ("_write_synced", "_fsync_dir"):
        setattr(manifest, name, _step(getattr(manifest, name), limit))
    scavenge.segments = type(  # type: ignore[assignment,attr-defined]
        "S",
        (),
        {k: staticmethod(_step(getattr(segments, k), limit)) for k in ("write", "delete")}
        | {"Strays": segments.Strays},
    )
    for cls, name in (
        (Tiering, "_take_file_number"),
        (Tiering, "_commit_files"),
        (Scavenging, "_drop_snapshots"),
        (Scavenging, "_compact"),
        (HotTier, "reopen"),
        (Scavenging, "_record_removed"),
    ):
        setattr(cls, name, _step(getattr(cls, name), limit))
    with EventStore.open(path, sync=True) as store:
        print("ready", flush=True)
        store.scavenge()
    print(f"done {count[0]}", flush=True)


if __name__ == "__main__":
    main()
