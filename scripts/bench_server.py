"""How fast `eventstore serve` is, side by side in one run (see docs/benchmarks.md).

    python scripts/bench_server.py [--events 2000] [--procs 1,4,16] [--no-postgres]

Workloads, each from 1, 4 and 16 client processes (kurrentdbclient):
- durable appends, single events and batches of 10, through the server
  (events/s, p50/p99 latency per call), and the same appends in-process
  from as many threads;
- reading `$all` through the server (events/s), and in-process;
- the ceiling grpcio sets here: a bare servicer that streams pre-built
  `ReadResp` messages and answers pre-built `AppendResp`s, read and appended
  to by the same client code;
- the same multi-process application workload (eventsourcing's recorder
  `insert_events`, one aggregate per call) through `eventsourcing-kurrentdb`
  against the server and through `eventsourcing.postgres` on a PostgreSQL
  server this script starts in a temporary folder and stops (Debian's
  `postgresql` and `psycopg` needed; skipped with a note otherwise).

The machine is shared and noisy: compare the ratios printed, not the rates.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = b'{"customer": "c-0042", "total": 42.99, "items": ["a", "b", "c"]}'


# -- servers ---------------------------------------------------------------------


def start_eventstore(folder: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstore.cli", "serve", str(folder), "--listen",
         "127.0.0.1:0", "--insecure", "--sync"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "ready" in line, line
    port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    return proc, port


def _bare_server(port_out: Any, events: int) -> None:
    """A bare grpcio servicer: pre-built responses, no store."""
    import grpc
    from kurrentdbclient.protos.v1 import shared_pb2, streams_pb2, streams_pb2_grpc

    resps = [
        streams_pb2.ReadResp(
            event=streams_pb2.ReadResp.ReadEvent(
                event=streams_pb2.ReadResp.ReadEvent.RecordedEvent(
                    id=shared_pb2.UUID(string=str(uuid.uuid4())),
                    stream_identifier=shared_pb2.StreamIdentifier(stream_name=b"bench-0"),
                    stream_revision=i, prepare_position=(i + 1) * 256,
                    commit_position=(i + 1) * 256,
                    metadata={"type": "OrderPlaced", "content-type": "application/json",
                              "created": "17000000000000000"},
                    data=DATA,
                ),
                commit_position=(i + 1) * 256,
            )
        )
        for i in range(events)
    ]
    append_resp = streams_pb2.AppendResp(
        success=streams_pb2.AppendResp.Success(
            current_revision=1, position=streams_pb2.AppendResp.Position(
                commit_position=256, prepare_position=256)))
    batch_resp = streams_pb2.BatchAppendResp()
    batch_resp.success.current_revision = 1
    batch_resp.success.position.commit_position = 256

    class Bare(streams_pb2_grpc.StreamsServicer):  # type: ignore[misc]
        def Read(self, request: Any, context: Any) -> Iterator[Any]:
            yield from resps[: min(request.options.count or events, events)]

        def Append(self, request_iterator: Any, context: Any) -> Any:
            for _ in request_iterator:
                pass
            return append_resp

        def BatchAppend(self, request_iterator: Any, context: Any) -> Iterator[Any]:
            for req in request_iterator:
                batch_resp.correlation_id.CopyFrom(req.correlation_id)
                yield batch_resp

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=96))
    streams_pb2_grpc.add_StreamsServicer_to_server(Bare(), server)
    port_out.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def start_bare(events: int) -> tuple[mp.Process, int]:
    q: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_bare_server, args=(q, events), daemon=True)
    proc.start()
    return proc, int(q.get(timeout=60))


# -- client processes --------------------------------------------------------------


def _append_worker(port: int, n: int, batch: int, worker: int, start: Any, out: Any) -> None:
    from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

    client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
    stream = f"bench-{worker}-{uuid.uuid4().hex[:8]}"
    calls = n // batch
    lat = []
    start.wait()
    version: int | StreamState = StreamState.NO_STREAM
    for i in range(calls):
        events = [NewEvent(type="OrderPlaced", data=DATA) for _ in range(batch)]
        t = time.perf_counter()
        client.append_to_stream(stream, events=events if batch > 1 else events[0],
                                current_version=version)
        lat.append(time.perf_counter() - t)
        version = (i + 1) * batch - 1
    out.put(lat)
    client.close()


def _read_worker(port: int, n: int, worker: int, start: Any, out: Any) -> None:
    from kurrentdbclient import KurrentDBClient

    client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
    start.wait()
    t = time.perf_counter()
    got = sum(1 for _ in client.read_all(limit=n))
    out.put((got, time.perf_counter() - t))
    client.close()


def run_procs(target: Callable[..., None], procs: int, *args: Any) -> tuple[float, list[Any]]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, i, start, out)) for i in range(procs)]
    for w in workers:
        w.start()
    time.sleep(1.0 + 0.1 * procs)  # let them import and connect
    t = time.perf_counter()
    start.set()
    results: list[Any] = []
    deadline = time.monotonic() + 600
    while len(results) < procs:
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for w in workers:
                    w.kill()
                raise RuntimeError(f"a client process failed (exit codes {failed})") from None
    wall = time.perf_counter() - t
    for w in workers:
        w.join()
    return wall, results


def appends(port: int, procs: int, n: int, batch: int) -> dict[str, float]:
    per = max(batch, n // procs // batch * batch)
    wall, lats = run_procs(_append_worker, procs, port, per, batch)
    flat = sorted(x for lat in lats for x in lat)
    return {
        "events_s": procs * per / wall,
        "p50_ms": 1000 * flat[len(flat) // 2],
        "p99_ms": 1000 * flat[min(len(flat) - 1, int(len(flat) * 0.99))],
    }


def reads(port: int, procs: int, n: int) -> float:
    wall, results = run_procs(_read_worker, procs, port, n)
    return sum(got for got, _ in results) / wall


# -- in-process --------------------------------------------------------------------


def inprocess(folder: Path, threads: int, n: int, batch: int) -> dict[str, float]:
    from eventstore import NO_STREAM, EventStore, NewEvent

    store = EventStore.open(str(folder), sync=True)
    per = max(batch, n // threads // batch * batch)
    lat: list[float] = []
    barrier = threading.Barrier(threads + 1)

    def work(w: int) -> None:
        stream = f"inproc-{w}-{uuid.uuid4().hex[:8]}"
        expected: Any = NO_STREAM
        barrier.wait()
        for i in range(per // batch):
            t = time.perf_counter()
            store.append(stream, [NewEvent("OrderPlaced", DATA) for _ in range(batch)], expected)
            lat.append(time.perf_counter() - t)
            expected = (i + 1) * batch - 1

    ts = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    count = sum(1 for _ in store.read_all())
    read_rate = count / (time.perf_counter() - t1)
    store.close()
    lat.sort()
    return {"events_s": threads * per / wall, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], "read_s": read_rate}


# -- the application workload: eventsourcing recorders ------------------------------


def _es_worker(env: dict[str, str], n: int, worker: int, start: Any, out: Any) -> None:
    """One process of the application workload: a new aggregate's first event per call."""
    from eventsourcing.persistence import InfrastructureFactory, StoredEvent

    factory = InfrastructureFactory.construct(env)
    recorder = factory.application_recorder()
    start.wait()
    t = time.perf_counter()
    for _ in range(n):
        recorder.insert_events(
            [StoredEvent(originator_id=uuid.uuid4(), originator_version=0, topic="bench:Made",
                         state=DATA)]
        )
    out.put(time.perf_counter() - t)


def es_workload(env: dict[str, str], procs: int, n: int, create: bool = False) -> float:
    per = max(1, n // procs)
    # after a one-process warm-up made the tables: racing CREATEs fail on PostgreSQL
    env = env if create else {**env, "CREATE_TABLE": "false"}
    wall, _ = run_procs(_es_worker, procs, env, per)
    return procs * per / wall


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary folder (as the postgres user when root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def __enter__(self) -> Postgres:
        data = self.folder / "data"
        subprocess.run([*self.as_user, "initdb", "-D", str(data), "-A", "trust", "-U", "bench"],
                       check=True, capture_output=True)
        subprocess.run([*self.as_user, "pg_ctl", "-D", str(data), "-l", str(self.folder / "log"),
                        "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                        "-w", "start"], check=True, capture_output=True)
        subprocess.run([*self.as_user, "createdb", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "bench", "bench"], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*self.as_user, "pg_ctl", "-D", str(self.folder / "data"), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": "bench",
                "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(self.port),
                "POSTGRES_USER": "bench", "POSTGRES_PASSWORD": "x", "POSTGRES_POOL_SIZE": "2"}


# -- main ----------------------------------------------------------------------------


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _row(name: str, procs: int, r: dict[str, float]) -> None:
    extra = f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}" if "p50_ms" in r else ""
    print(f"{name:40} {procs:>5} {r['events_s']:>10.0f}{extra}", flush=True)


def _ratio(name: str, procs: int, a: dict[str, float], b: dict[str, float]) -> None:
    print(f"{'  ' + name:40} {procs:>5} {a['events_s'] / b['events_s']:>10.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per workload")
    parser.add_argument("--procs", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    procs_list = [int(p) for p in args.procs.split(",")]
    n = args.events
    rounds = range(args.rounds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    server, port = start_eventstore(tmp / "served")
    bare, bare_port = start_bare(n)
    pg: Postgres | None = None
    try:
        print(f"events per workload: {n}; {os.cpu_count()} cores; sync=True everywhere; "
              f"medians of {args.rounds} interleaved rounds")
        print(f"{'workload':40} {'procs':>5} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for batch in (1, 10):
            for procs in procs_list:
                got: dict[str, list[dict[str, float]]] = {"s": [], "b": [], "i": []}
                for r in rounds:
                    got["s"].append(appends(port, procs, n, batch))
                    got["b"].append(appends(bare_port, procs, n, batch))
                    got["i"].append(inprocess(tmp / f"in-{batch}-{procs}-{r}", procs, n, batch))
                ours, ceiling, mine = (_median(got[k]) for k in "sbi")
                _row(f"append x{batch} server", procs, ours)
                _row(f"append x{batch} bare grpcio ceiling", procs, ceiling)
                _row(f"append x{batch} in-process (threads)", procs, mine)
                _ratio("server / ceiling", procs, ours, ceiling)
        for procs in procs_list:
            got_r: dict[str, list[dict[str, float]]] = {"s": [], "b": []}
            for _ in rounds:
                got_r["s"].append({"events_s": reads(port, procs, n)})
                got_r["b"].append({"events_s": reads(bare_port, procs, n)})
            ours, ceiling = _median(got_r["s"]), _median(got_r["b"])
            _row("read $all server", procs, ours)
            _row("read $all bare grpcio ceiling", procs, ceiling)
            _ratio("server / ceiling", procs, ours, ceiling)
        es_env = {"PERSISTENCE_MODULE": "eventsourcing_kurrentdb",
                  "KURRENTDB_URI": f"esdb://127.0.0.1:{port}?Tls=False"}
        if not args.no_postgres and shutil.which("initdb"):
            try:
                import psycopg  # noqa: F401
                import psycopg_pool  # noqa: F401

                pg = Postgres()
                pg.__enter__()
            except (ImportError, subprocess.CalledProcessError, OSError) as exc:
                print(f"(PostgreSQL skipped: {exc})")
                if pg is not None:
                    pg.__exit__()
                pg = None
        # one process first: it creates the tables, which racing processes cannot
        es_workload(es_env, 1, 1, create=True)
        if pg is not None:
            es_workload(pg.env(), 1, 1, create=True)
        for procs in procs_list:
            got_e: dict[str, list[dict[str, float]]] = {"s": [], "p": []}
            for _ in rounds:
                got_e["s"].append({"events_s": es_workload(es_env, procs, n // 2)})
                if pg is not None:
                    got_e["p"].append({"events_s": es_workload(pg.env(), procs, n // 2)})
            ours = _median(got_e["s"])
            _row("eventsourcing app -> server", procs, ours)
            if pg is not None:
                theirs = _median(got_e["p"])
                _row("eventsourcing app -> PostgreSQL", procs, theirs)
                _ratio("server / PostgreSQL", procs, ours, theirs)
    finally:
        if pg is not None:
            pg.__exit__()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        bare.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
