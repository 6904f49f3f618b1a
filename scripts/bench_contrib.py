"""The same ``eventsourcing`` application workload on its SQLite module and on
eventstore.contrib.eventsourcing, side by side.

Only the persistence module differs: the application, its aggregates and its
transcoding are eventsourcing's. Phases (each a rate per second, the median of
``runs`` runs, each run on fresh folders):

- ``create``: register aggregates, one ``save()`` each (one event).
- ``update``: get an aggregate, trigger an event, save it; single thread.
- ``update_8_threads``: the same from 8 threads, each on its own aggregates.
- ``get``: reconstruct every aggregate from its events (aggregates per second).
- ``notifications``: read the whole notification log, 500 at a time.

SQLite runs on a file (WAL, eventsourcing's settings: every commit durable);
eventstore runs with ``EVENTSTORE_SYNC=n`` (the store's default: survives a
process crash) and with ``EVENTSTORE_SYNC=y`` (durable like SQLite). The
ratios are eventstore's rate over SQLite's, taken in the same run.

    python scripts/bench_contrib.py            # 3 runs
    python scripts/bench_contrib.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

CONTENDERS: dict[str, dict[str, str]] = {
    "eventsourcing-sqlite": {"PERSISTENCE_MODULE": "eventsourcing.sqlite"},
    "eventstore": {
        "PERSISTENCE_MODULE": "eventstore.contrib.eventsourcing",
        "EVENTSTORE_SYNC": "n",
    },
    "eventstore-sync": {
        "PERSISTENCE_MODULE": "eventstore.contrib.eventsourcing",
        "EVENTSTORE_SYNC": "y",
    },
}
BASELINE = "eventsourcing-sqlite"
PHASES = ("create", "update", "update_8_threads", "get", "notifications")


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0
        self.history: list[int] = []

    @event("Credited")
    def credit(self, amount: int, memo: str) -> None:
        self.balance += amount
        self.history.append(amount)


class Bank(Application[UUID]):
    pass


def _env(contender: str, folder: str) -> dict[str, str]:
    env = dict(CONTENDERS[contender])
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        env["SQLITE_DBNAME"] = os.path.join(folder, "bank.db")
    else:
        env["EVENTSTORE_PATH"] = os.path.join(folder, "bank")
    return env


def _rate(count: int, fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


def run_once(contender: str, accounts: int, updates: int) -> dict[str, float]:
    """One run of every phase on fresh storage; rates per second."""
    folder = tempfile.mkdtemp(prefix="es-bench-contrib-")
    rates: dict[str, float] = {}
    try:
        app = Bank(env=_env(contender, folder))
        ids: list[UUID] = []

        def create() -> None:
            for n in range(accounts):
                account = Account(f"owner-{n}")
                app.save(account)
                ids.append(account.id)

        def update_all(mine: list[UUID]) -> None:
            for _ in range(updates):
                for account_id in mine:
                    account: Account = app.repository.get(account_id)
                    account.credit(10, "monthly interest")
                    app.save(account)

        rates["create"] = _rate(accounts, create)
        half = accounts // 2
        rates["update"] = _rate(half * updates, lambda: update_all(ids[:half]))

        def threaded() -> None:
            rest = ids[half:]
            slices = [rest[k::8] for k in range(8)]
            threads = [threading.Thread(target=update_all, args=(s,)) for s in slices]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        rates["update_8_threads"] = _rate((accounts - half) * updates, threaded)

        def get_all() -> None:
            for account_id in ids:
                app.repository.get(account_id)

        rates["get"] = _rate(accounts, get_all)
        total = app.recorder.max_notification_id() or 0
        assert total == accounts * (1 + updates), (total, accounts, updates)

        def read_log() -> None:
            start, seen = 1, 0
            while True:
                page = app.recorder.select_notifications(start, 500)
                if not page:
                    break
                seen += len(page)
                start = page[-1].id + 1
            assert seen == total, (seen, total)

        rates["notifications"] = _rate(total, read_log)
        app.close()
        gc.collect()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rates


def bench_eventsourcing(
    accounts: int = 400,
    updates: int = 4,
    runs: int = 3,
    contenders: tuple[str, ...] = tuple(CONTENDERS),
    quick: bool = False,
) -> dict[str, Any]:
    """Run the workload on each contender, interleaved run by run so that
    machine noise hits them alike. Returns the median rates and the ratios to
    eventsourcing's SQLite module::

        {"workload": {...}, "rates": {contender: {phase: per_second}},
         "ratios": {contender: {phase: rate / sqlite_rate}}}
    """
    if quick:
        accounts, updates, runs = 48, 2, 1
    samples: dict[str, dict[str, list[float]]] = {c: {p: [] for p in PHASES} for c in contenders}
    for _ in range(runs):
        for contender in contenders:
            for phase, rate in run_once(contender, accounts, updates).items():
                samples[contender][phase].append(rate)
    rates = {
        c: {p: statistics.median(v) for p, v in phases.items()} for c, phases in samples.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    if BASELINE in rates:
        base = rates[BASELINE]
        ratios = {c: {p: r[p] / base[p] for p in PHASES} for c, r in rates.items() if c != BASELINE}
    return {
        "workload": {
            "application": "eventsourcing Application, one Account aggregate per account",
            "accounts": accounts,
            "updates_per_account": updates,
            "events": accounts * (1 + updates),
            "runs": runs,
        },
        "rates": rates,
        "ratios": ratios,
    }


def report(result: dict[str, Any]) -> str:
    lines = []
    w = result["workload"]
    lines.append(
        f"eventsourcing application workload: {w['accounts']} accounts, "
        f"{w['updates_per_account']} updates each, {w['events']} events, "
        f"median of {w['runs']} run(s)"
    )
    header = "".join(f"{c:>22}" for c in result["rates"])
    lines.append(f"{'phase':<18}{header}   ratio to sqlite")
    for phase in PHASES:
        line = f"{phase:<18}"
        for contender in result["rates"]:
            line += f"{result['rates'][contender][phase]:>20.0f}/s"
        line += "   " + "  ".join(f"{c}: {r[phase]:.2f}x" for c, r in result["ratios"].items())
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=400)
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = bench_eventsourcing(args.accounts, args.updates, args.runs, quick=args.quick)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
