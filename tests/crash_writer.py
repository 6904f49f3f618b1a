"""A writer process for crash tests: appends forever, acknowledging each append.

Run as ``python -m tests.crash_writer PATH SYNC``. Each append is an
``append_many`` of three streams, two events each, all tagged with the batch
number, with a checkpoint naming the batch in the same write; after it
returns, the batch number and its ids go to stdout, flushed.
The parent kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys

from eventstore import ANY, EventStore, NewEvent


def main() -> None:
    path, sync = sys.argv[1], sys.argv[2] == "1"
    store = EventStore.open(path, sync=sync)
    batch = store.last_seq // 6
    print("ready", flush=True)
    while True:
        results = store.append_many(
            [
                (f"s-{(batch + k) % 5}", [NewEvent("T", [batch, k, j]) for j in range(2)], ANY)
                for k in range(3)
            ],
            # In the same write: after a kill it names the last batch in the store.
            checkpoint=("writer", {"batch": batch}),
        )
        ids = " ".join(str(i) for r in results for i in r.ids)
        sys.stdout.write(f"{batch} {ids}\n")
        sys.stdout.flush()
        batch += 1


if __name__ == "__main__":
    main()
