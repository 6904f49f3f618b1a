"""A client process for tests/test_server_processes.py: appends through the
server with racing expected versions and writes one line per acknowledged
append (flushed at once, so the lines survive the server being killed).

    python -m tests.server_worker PORT OUT_FILE APPENDS SEED
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

from kurrentdbclient import KurrentDBClient, NewEvent
from kurrentdbclient.exceptions import KurrentDBClientError, WrongCurrentVersionError

STREAMS = ["shared-a", "shared-b", "shared-c"]


def _watchdog(progress: list[float]) -> None:
    """Exit (status 4) if no call has come back for 30 s: a hung client call
    must not hang the test that waits for this process."""
    while True:
        time.sleep(1)
        if time.monotonic() - progress[0] > 30:
            os._exit(4)


def main() -> int:
    port, out_path, appends, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    progress = [time.monotonic()]
    threading.Thread(target=_watchdog, args=(progress,), daemon=True).start()
    rng = random.Random(seed)
    client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False&MaxDiscoverAttempts=1")
    failing_since: float | None = None
    with open(out_path, "a", encoding="utf-8") as out:
        done = 0
        while done < appends:
            progress[0] = time.monotonic()
            stream = rng.choice(STREAMS)
            events = [NewEvent(type="Raced", data=b"{}") for _ in range(rng.randint(1, 3))]
            try:
                current = client.get_current_version(stream, timeout=3)
                position = client.append_to_stream(
                    stream,
                    events=events if len(events) > 1 else events[0],
                    current_version=current,
                    timeout=3,
                )
            except WrongCurrentVersionError:
                continue  # lost the race: read again and retry
            except KurrentDBClientError:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > 5:
                    # The server is gone. os._exit: a process whose grpc channel
                    # saw its server die can hang in interpreter teardown.
                    out.flush()
                    os._exit(3)
                time.sleep(0.05)
                continue
            failing_since = None
            line = {"stream": stream, "ids": [str(e.id) for e in events], "position": position}
            out.write(json.dumps(line) + "\n")
            out.flush()
            done += 1
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
