"""A store handle used in a child after fork() refuses at once and never writes
(issue 13, item 1): gunicorn --preload, multiprocessing with fork, Celery
prefork. Every test forks for real: os.fork(), multiprocessing's fork start
method, a subprocess that forks and exits through interpreter shutdown, and
gunicorn --preload on a loopback port.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventstore import ANY, EventStore, NewEvent
from eventstore.errors import StoreLocked, UsedAfterFork
from eventstore.events import Event
from eventstore.ids import ulid_from_int

ROOT = Path(__file__).resolve().parent.parent

# Python 3.12+ warns when a process with threads forks (the store's cleanup
# thread, the tests' writers): that is the situation under test.
pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def in_fork(body: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``body`` in a child made by os.fork() and return what it returned
    (or re-raise, as an AssertionError, what it raised). A child that does
    not finish within ``timeout`` is killed and the test fails: a handle
    that waits for a lock the parent held at the fork hangs for ever."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit
        try:
            os.close(r)
            try:
                payload = pickle.dumps(("ok", body()))
            except BaseException:
                payload = pickle.dumps(("raised", traceback.format_exc()))
            with os.fdopen(w, "wb") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(r, "rb") as inp:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([inp], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the forked child hung for {timeout} s")
            chunk = os.read(inp.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind != "ok":
        raise AssertionError(f"the child raised:\n{value}")
    return value


def make_store(path: Path) -> tuple[EventStore, Event, Event]:
    """A store with archived and hot events, a snapshot and a checkpoint."""
    store = EventStore.open(path, sync=True)
    store.append("a", [NewEvent("T", {"n": n}) for n in range(5)])
    time.sleep(0.002)  # the cutoff's millisecond is after every id of the first append
    cutoff = datetime.now(UTC)
    time.sleep(0.002)
    store.append("a", [NewEvent("T", {"n": n}) for n in range(5, 8)])
    store.compact(before=cutoff)
    store.save_snapshot("a", 2, {"parent": True})
    store.set_checkpoint("cp", "parent")
    log = list(store.read_all())
    return store, log[0], log[-1]


def entry_points(
    store: EventStore, cold: Event, hot: Event, tmp: Path
) -> dict[str, Callable[[], Any]]:
    """Every public way in, each as the child would try it. close() last."""
    later = ulid_from_int(int(hot.id) + (1 << 80) * 10)
    imported = Event(later, "a", hot.version + 1, hot.seq + 1, "FromChild", {}, None, {})
    return {
        "append": lambda: store.append("a", [NewEvent("FromChild", 1)]),
        "append_many": lambda: store.append_many(
            [("b", [NewEvent("FromChild", 1)], ANY)], checkpoint=("cp", "child")
        ),
        "import_events": lambda: store.import_events([imported]),
        "read_stream": lambda: list(store.read_stream("a")),
        "read_index": lambda: list(store.read_index("a", "type", "T")),
        "read_all": lambda: list(store.read_all()),
        "read_all from_seq": lambda: list(store.read_all(from_seq=2)),
        "get hot": lambda: store.get(hot.id),
        "get cold": lambda: store.get(cold.id),
        "stream_version": lambda: store.stream_version("a"),
        "last_seq": lambda: store.last_seq,
        "subscribe": lambda: next(iter(store.subscribe())),
        "wait_for_commit": lambda: store.wait_for_commit(0, timeout=0.1),
        "wake_waiters": store.wake_waiters,
        "compact": lambda: store.compact(before=datetime.now(UTC)),
        "merge_archives": lambda: store.merge_archives(min_files=1),
        "cleanup": store.cleanup,
        "save_snapshot": lambda: store.save_snapshot("a", 3, {"child": True}),
        "load_snapshot": lambda: store.load_snapshot("a"),
        "get_checkpoint": lambda: store.get_checkpoint("cp"),
        "set_checkpoint": lambda: store.set_checkpoint("cp", "child"),
        "backup": lambda: store.backup(tmp / "child-backup"),
        "verify": store.verify,
        "close": store.close,
    }


def outcomes(calls: dict[str, Callable[[], Any]]) -> dict[str, str]:
    """What each call raised (its class name), or "returned"."""
    seen = {}
    for name, call in calls.items():
        try:
            call()
            seen[name] = "returned"
        except Exception as exc:
            seen[name] = type(exc).__name__
    return seen


def check_parent_store(store: EventStore, expected: int) -> None:
    """The parent's handle works, and nothing the child tried is there."""
    log = list(store.read_all())
    assert [e.seq for e in log] == list(range(1, expected + 1))
    assert all(e.type != "FromChild" for e in log)
    assert store.stream_version("b") == -1
    assert store.get_checkpoint("cp") == "parent"
    snap = store.load_snapshot("a")
    assert snap is not None and snap.state == {"parent": True}


def test_every_entry_point_refuses_in_a_forked_child_and_the_parent_is_untouched(
    tmp_path: Path,
) -> None:
    store, cold, hot = make_store(tmp_path / "s")
    try:
        seen = in_fork(lambda: outcomes(entry_points(store, cold, hot, tmp_path)))
        assert seen == dict.fromkeys(seen, "UsedAfterFork"), seen
        assert not (tmp_path / "child-backup").exists()
        assert not (tmp_path / "child-backup.partial").exists()
        # The child's close() released nothing: the parent still owns the
        # store (another opener is refused) and goes on appending.
        with pytest.raises(StoreLocked):
            EventStore.open(tmp_path / "s")
        check_parent_store(store, 8)
        r = store.append("a", [NewEvent("T", {"n": 8})])
        assert r.first_seq == 9 and r.first_version == 8
        check_parent_store(store, 9)
    finally:
        store.close()
    with EventStore.open(tmp_path / "s") as again:
        check_parent_store(again, 9)
        again.verify()


def test_the_error_says_what_to_do(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s") as store:

        def child() -> str:
            try:
                store.append("a", [NewEvent("T", 1)])
            except UsedAfterFork as exc:
                assert isinstance(exc, RuntimeError)
                return str(exc)
            return "no error"

        message = in_fork(child)
    assert "forked" in message and "Open the store after the fork" in message
    assert "eventstore serve" in message


def test_a_child_forked_while_parent_threads_hold_the_store_refuses_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """A fork while another thread is inside an append or a compaction: the
    child's copies of the writer and maintenance locks are held for ever.
    The child's calls must raise at once, not wait for them."""
    store, cold, hot = make_store(tmp_path / "s")
    try:
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            # As an appender inside the writer lock and a compaction inside
            # the maintenance lock hold them (white box: timing a real one
            # to the fork is not reliable).
            with store._maintenance, store._writer._lock, store._archive.lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        try:
            seen = in_fork(lambda: outcomes(entry_points(store, cold, hot, tmp_path)), timeout=20)
        finally:
            release.set()
            holder.join()
        assert seen == dict.fromkeys(seen, "UsedAfterFork"), seen
        check_parent_store(store, 8)
        store.append("a", [NewEvent("T", 8)])
        check_parent_store(store, 9)
    finally:
        store.close()


def test_a_child_forked_mid_compaction_refuses_at_once(tmp_path: Path) -> None:
    """A real compaction in another thread at the moment of the fork."""
    store = EventStore.open(tmp_path / "s")
    try:
        for k in range(20):
            store.append(f"s-{k}", [NewEvent("T", {"k": k, "pad": "x" * 200})] * 500)
        compaction = threading.Thread(target=lambda: store.compact(before=datetime.now(UTC)))
        compaction.start()
        deadline = time.monotonic() + 10
        while not store._maintenance.locked() and time.monotonic() < deadline:
            time.sleep(0.0002)
        during = store._maintenance.locked()
        seen = in_fork(
            lambda: outcomes(
                {
                    "compact": lambda: store.compact(before=datetime.now(UTC)),
                    "append": lambda: store.append("x", [NewEvent("FromChild", 1)]),
                    "close": store.close,
                }
            ),
            timeout=20,
        )
        compaction.join()
        assert during, "the compaction was over before the fork: the test proved nothing"
        assert seen == dict.fromkeys(seen, "UsedAfterFork"), seen
        log = list(store.read_all())
        assert [e.seq for e in log] == list(range(1, 10_001))
        assert store.stream_version("x") == -1
    finally:
        store.close()


def _child_tries(store: EventStore, results: Any, k: int) -> None:
    """A multiprocessing target: what the child's calls raised."""
    seen = outcomes(
        {
            "append": lambda: store.append(f"child-{k}", [NewEvent("FromChild", k)]),
            "read_all": lambda: list(store.read_all(limit=5)),
            "last_seq": lambda: store.last_seq,
            "close": store.close,
        }
    )
    results.put((k, seen))


def test_multiprocessing_fork_children_refuse_while_the_parent_keeps_appending(
    tmp_path: Path,
) -> None:
    """Writers in the parent append durably throughout, while children are
    forked (multiprocessing's fork start method) and try the store. Every
    acknowledged append is there, seqs gap-free, nothing from a child."""
    ctx = multiprocessing.get_context("fork")
    store = EventStore.open(tmp_path / "s", sync=True)
    acked: list[tuple[str, list[Any]]] = []
    stop = threading.Event()

    def write(w: int) -> None:
        n = 0
        while not stop.is_set():
            r = store.append(f"w-{w}", [NewEvent("T", {"w": w, "n": n})] * 3)
            acked.append((r.stream, list(r.ids)))
            n += 1

    writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for t in writers:
        t.start()
    try:
        results = ctx.Queue()
        children = []
        for k in range(4):
            time.sleep(0.05)
            p = ctx.Process(target=_child_tries, args=(store, results, k))
            p.start()
            children.append(p)
        try:
            got = dict(results.get(timeout=30) for _ in children)
        finally:
            for p in children:
                p.join(10)
                if p.exitcode is None:
                    p.kill()  # a child stuck on a lock the parent held at the fork
                    p.join()
        assert [p.exitcode for p in children] == [0] * 4
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    try:
        assert sorted(got) == [0, 1, 2, 3]
        for seen in got.values():
            assert seen == dict.fromkeys(seen, "UsedAfterFork"), seen
        log = list(store.read_all())
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert all(e.type == "T" for e in log)
        ids = {e.id for e in log}
        assert all(set(batch) <= ids for _, batch in acked)
        assert len(log) == 3 * len(acked)
        for w in range(3):
            versions = [e.version for e in store.read_stream(f"w-{w}")]
            assert versions == list(range(len(versions)))
    finally:
        store.close()
    with EventStore.open(tmp_path / "s") as again:
        assert again.last_seq == 3 * len(acked)
        again.verify()


CHILD_EXITS_NORMALLY = textwrap.dedent(
    """
    import gc, os, sys, time
    from eventstore import EventStore, NewEvent
    from eventstore.errors import UsedAfterFork

    store = EventStore.open(sys.argv[1])
    pad = os.urandom(4000)
    for attempt in range(int(sys.argv[2])):
        # ~16 MB each time: LevelDB flushes and compacts in its own thread,
        # often still at the fork.
        for k in range(40):
            store.append(f"s-{k}", [NewEvent("T", {"k": k, "pad": pad})] * 100)
        pid = os.fork()
        if pid == 0:
            try:
                store.append("child", [NewEvent("FromChild", 1)])
                code = 3
            except UsedAfterFork:
                code = 0
            del store  # nothing of the child's holds it now: Python frees it
            gc.collect()
            sys.exit(code)  # and interpreter shutdown frees what is left
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("exit", os.waitstatus_to_exitcode(status), flush=True)
                break
            time.sleep(0.005)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("hung", flush=True)
    store.append("after", [NewEvent("T", 1)])
    store.close()
    """
)


def test_a_child_that_drops_the_handle_and_exits_frees_nothing_of_the_parents(
    tmp_path: Path,
) -> None:
    """A child that lets go of the handle (or exits through interpreter
    shutdown) would free the parent's plyvel database, and LevelDB's
    destructor, run in the child, waits for a background compaction whose
    thread does not exist there (or a mutex it held): without keeping them
    for ever, 4 of these 10 children hung. Each must exit at once, and the
    parent's store stay whole."""
    script = tmp_path / "fork_exit.py"
    script.write_text(CHILD_EXITS_NORMALLY)
    path = tmp_path / "s"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["exit 0"] * 10, proc.stdout + proc.stderr
    with EventStore.open(path) as store:
        log = list(store.read_all())
        assert [e.seq for e in log] == list(range(1, 10 * 40 * 100 + 2))
        assert store.stream_version("child") == -1
        store.verify()


# -- gunicorn --preload ------------------------------------------------------------


PRELOADED_APP = textwrap.dedent(
    """
    # Opens the store at import: with --preload that is the master, and the
    # workers are forked from it holding its handle.
    import json, os
    from eventstore import EventStore, NewEvent
    from eventstore.errors import UsedAfterFork

    store = EventStore.open(os.environ["STORE"], sync=True)
    store.append("boot", [NewEvent("Booted", {"pid": os.getpid()})])

    def app(environ, start_response):
        try:
            r = store.append("web", [NewEvent("Hit", {"pid": os.getpid()})])
            body = {"appended": str(r.ids[0])}
        except UsedAfterFork as exc:
            body = {"error": type(exc).__name__}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    """
)

POST_FORK_APP = textwrap.dedent(
    """
    # The documented pattern (docs/operations.md): the app module may be
    # preloaded, but the store is opened in the worker, after the fork.
    import json, os
    from eventstore import EventStore, NewEvent

    store = None

    def open_store():
        global store
        store = EventStore.open(os.environ["STORE"], sync=True)

    def close_store():
        if store is not None:
            store.close()

    def app(environ, start_response):
        r = store.append("web", [NewEvent("Hit", {"pid": os.getpid()})])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"appended": str(r.ids[0])}).encode()]
    """
)

POST_FORK_CONF = textwrap.dedent(
    """
    def post_fork(server, worker):
        import post_fork_app
        post_fork_app.open_store()

    def worker_exit(server, worker):
        import post_fork_app
        post_fork_app.close_store()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _gunicorn(tmp_path: Path, args: list[str], requests: int) -> list[dict[str, str]]:
    """Start gunicorn in ``tmp_path``, make ``requests`` requests, stop it
    with SIGTERM (a graceful shutdown), and return the JSON answers."""
    exe = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or shutil.which(
        "gunicorn"
    )
    assert exe is not None
    port = _free_port()
    env = {**os.environ, "STORE": str(tmp_path / "s"), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [exe, "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    answers = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
                    raise AssertionError(f"gunicorn did not start: {out}") from None
                time.sleep(0.1)
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
                answers.append(json.loads(resp.read()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    assert proc.returncode == 0, out
    return answers


def test_gunicorn_preload_workers_get_used_after_fork_and_write_nothing(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "preloaded_app.py").write_text(PRELOADED_APP)
    answers = _gunicorn(tmp_path, ["--preload", "-w", "2", "preloaded_app:app"], requests=6)
    assert answers == [{"error": "UsedAfterFork"}] * 6
    with EventStore.open(tmp_path / "s") as store:
        assert [e.type for e in store.read_all()] == ["Booted"]
        assert store.stream_version("web") == -1


def test_gunicorn_preload_with_the_store_opened_in_post_fork_works(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "post_fork_app.py").write_text(POST_FORK_APP)
    (tmp_path / "gunicorn_conf.py").write_text(POST_FORK_CONF)
    answers = _gunicorn(
        tmp_path,
        ["--preload", "-w", "1", "-c", "gunicorn_conf.py", "post_fork_app:app"],
        requests=5,
    )
    ids = [a["appended"] for a in answers]
    assert len(ids) == 5
    with EventStore.open(tmp_path / "s") as store:
        log = list(store.read_all())
        assert [str(e.id) for e in log] == ids
        assert [e.seq for e in log] == [1, 2, 3, 4, 5]
