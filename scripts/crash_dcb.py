#!/usr/bin/env python3
"""Kill-9 crash test of conditional appends (issue 18): conflicting DCB
decisions never both land, whatever the moment the process dies.

Each round starts a child process (this script with ``--child``) that opens
the store with ``sync=True`` and runs several decision threads over one
small world of courses and students (docs/dcb.md): subscribe, unsubscribe,
transfer (two events in one ``append_many``), change a course's capacity,
open a course (a types-only query). Each decision queries its boundary,
folds it, and appends with ``AppendCondition(Query(items), after)``, where
``after`` is the last matching seq it read (or, half the time, the store's
``last_seq`` read before the query, if higher). Every event of a decision
records in its metadata the decision id, the query items, ``after`` and how
many events the decision appended. After the append returns, the child
prints an ack line (``A``). Boundaries overlap (a course's capacity, a
student's limit, a subscription pair), so threads keep failing each other's
conditions (``F`` lines) and retrying. In some rounds a maintainer thread
compacts and merges archive files while decisions run.

The parent SIGKILLs the child after a random delay, or the child kills
itself inside the writer's group commit (a hook on the writer's LevelDB
batch: just before or just after ``batch.write()``, so a whole group of
queued decisions is lost, or lands with none acknowledged), or the parent
kills it just after it announced a compaction. Then the parent reopens the
store and checks, from the log alone:

* for every decision E conditioned on (Q, after), no event matching Q (by
  the checker's own matching, not the store's) has a seq in
  (after, first seq of E): no two conflicting decisions both landed;
* every acknowledged decision is present, whole, with its acked ids and
  seqs; decisions are whole (all their events, contiguous); at most one
  unacknowledged decision per thread, and only its last;
* the business rules: no course over capacity and no student over their
  limit at any point of the log, subscriptions of a pair alternate, courses
  unique and at most MAX_COURSES, capacity never cut below the count;
* ``verify()`` passes; ``store.query(Q, after)`` equals the checker's
  filter of ``read_all`` for a sample of decisions (both tiers), and a
  conditional append with a landed decision's own (Q, after) fails with
  ``ConditionFailed`` at exactly that decision's seq, writing nothing.

Between some rounds the parent compacts (and merges), so later checks and
decisions cross tiers. The store persists across rounds (a fresh one every
``--rounds-per-store``).

Usage::

    python scripts/crash_dcb.py --rounds 150 --seed 1

Exit status 0 when every round passed, 1 at the first violation.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventstore import ANY, AppendCondition, EventStore, NewEvent, Query, QueryItem
from eventstore.errors import ConditionFailed
from eventstore.events import Event

COURSE_DEFINED = "CourseDefined"
CAPACITY_CHANGED = "CapacityChanged"
STUDENT_REGISTERED = "StudentRegistered"
SUBSCRIBED = "StudentSubscribed"
UNSUBSCRIBED = "StudentUnsubscribed"
PROBE = "Probe"  # the parent's conditional appends that must fail

MAX_COURSES = 24
FIRST_COURSES = 5  # defined at setup; threads open more, up to MAX_COURSES
STUDENTS = 12

Items = list[tuple[list[str], list[str]]]  # (types, tags) per query item, as recorded


class Violation(Exception):
    """A broken guarantee (or a child that failed)."""


def course_tag(c: str) -> str:
    return f"course:{c}"


def student_tag(s: str) -> str:
    return f"student:{s}"


def to_query(items: Items) -> Query:
    return Query([QueryItem(types=t, tags=g) for t, g in items])


def setup(path: str) -> None:
    """The world every round starts from: a few courses, all the students."""
    with EventStore.open(path, sync=True) as store:
        if store.last_seq:
            return
        rng = random.Random("setup")
        store.append_many(
            [
                (
                    "courses",
                    [
                        NewEvent(
                            COURSE_DEFINED,
                            {"course": f"c{n}", "capacity": rng.randint(1, 4)},
                            tags=[course_tag(f"c{n}")],
                        )
                        for n in range(FIRST_COURSES)
                    ],
                    -1,
                ),
                (
                    "students",
                    [
                        NewEvent(
                            STUDENT_REGISTERED,
                            {"student": f"s{n}", "max_courses": rng.randint(1, 3)},
                            tags=[student_tag(f"s{n}")],
                        )
                        for n in range(STUDENTS)
                    ],
                    -1,
                ),
            ]
        )


# -- the child: decision threads, a maintainer, a hook in the group commit -----


class Refused(Exception):
    """A business rule refused the decision (nothing is appended)."""


def subscription_types() -> list[str]:
    return [SUBSCRIBED, UNSUBSCRIBED]


def course_items(course: str) -> Items:
    return [([COURSE_DEFINED, CAPACITY_CHANGED, SUBSCRIBED, UNSUBSCRIBED], [course_tag(course)])]


def student_items(student: str) -> Items:
    return [([STUDENT_REGISTERED, SUBSCRIBED, UNSUBSCRIBED], [student_tag(student)])]


def pair_items(student: str, course: str) -> Items:
    return [(subscription_types(), [course_tag(course), student_tag(student)])]


@dataclass
class Folded:
    capacity: dict[str, int] = field(default_factory=dict)
    taken: dict[str, set[str]] = field(default_factory=dict)  # course -> students in it
    limit: dict[str, int] = field(default_factory=dict)
    courses_of: dict[str, set[str]] = field(default_factory=dict)  # student -> courses


def fold(events: Iterable[Event]) -> Folded:
    f = Folded()
    for e in events:
        d = e.data
        if e.type == COURSE_DEFINED:
            f.capacity[d["course"]] = d["capacity"]
            f.taken.setdefault(d["course"], set())
        elif e.type == CAPACITY_CHANGED:
            f.capacity[d["course"]] = d["capacity"]
        elif e.type == STUDENT_REGISTERED:
            f.limit[d["student"]] = d["max_courses"]
            f.courses_of.setdefault(d["student"], set())
        elif e.type == SUBSCRIBED:
            f.taken.setdefault(d["course"], set()).add(d["student"])
            f.courses_of.setdefault(d["student"], set()).add(d["course"])
        elif e.type == UNSUBSCRIBED:
            f.taken.setdefault(d["course"], set()).discard(d["student"])
            f.courses_of.setdefault(d["student"], set()).discard(d["course"])
    return f


def sub_event(kind: str, student: str, course: str, meta: dict[str, Any]) -> NewEvent:
    return NewEvent(
        kind,
        {"student": student, "course": course},
        meta,
        tags=[course_tag(course), student_tag(student)],
    )


def child_main(
    path: str, seed: int, round_no: int, threads: int, hook: str, at: float, plain: bool = False
) -> None:
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def die(where: str) -> None:
        emit("E " + json.dumps(f"{where}: {traceback.format_exc()}"))
        os._exit(3)

    store = EventStore.open(path, sync=True)
    armed = threading.Event()
    if hook in ("pre", "post"):
        install_commit_hook(store, hook, armed, emit)

    def decide(rng: random.Random, did: str, courses: list[str]) -> None:
        """One decision: query, fold, append with the condition. Raises
        Refused, or ConditionFailed when the boundary moved."""
        # A few courses take most decisions, so boundaries collide often.
        hot = courses[:3] + rng.sample(courses, min(2, len(courses)))
        course = rng.choice(hot)
        student = f"s{rng.randrange(STUDENTS)}"
        r = rng.random()
        if r < 0.5:
            kind = "subscribe"
            items = course_items(course) + student_items(student)
        elif r < 0.72:
            kind = "unsubscribe"
            mine = fold(store.query(to_query(student_items(student)))).courses_of.get(student)
            if mine:
                course = rng.choice(sorted(mine))
            items = pair_items(student, course)
        elif r < 0.88:
            kind = "transfer"
            mine = fold(store.query(to_query(student_items(student)))).courses_of.get(student)
            if not mine:
                raise Refused("in no course")
            source = rng.choice(sorted(mine))
            if source == course:
                raise Refused("same course")
            items = pair_items(student, source) + course_items(course)
        elif r < 0.98:
            kind = "capacity"
            items = course_items(course)
        else:
            kind = "open"
            items = [([COURSE_DEFINED], [])]
        head = store.last_seq  # before the query: the view covers all up to it
        seen = list(store.query(to_query(items)))
        after = seen[-1].seq if seen else None
        if rng.random() < 0.5 and head and (after is None or head > after):
            after = head
        f = fold(seen)
        appends: list[tuple[str, list[NewEvent]]]

        def meta(k: int) -> dict[str, Any]:
            return {"d": did, "q": items, "after": after, "k": k}

        if kind == "subscribe":
            if course not in f.capacity or student not in f.limit:
                raise Refused("no such course or student")
            if student in f.taken[course]:
                raise Refused("already in")
            if len(f.taken[course]) >= f.capacity[course]:
                raise Refused("full")
            if len(f.courses_of[student]) >= f.limit[student]:
                raise Refused("student at limit")
            appends = [(f"sub-{course}", [sub_event(SUBSCRIBED, student, course, meta(1))])]
        elif kind == "unsubscribe":
            if student not in f.taken.get(course, set()):
                raise Refused("not in")
            appends = [(f"sub-{course}", [sub_event(UNSUBSCRIBED, student, course, meta(1))])]
        elif kind == "transfer":
            if student not in f.taken.get(source, set()):
                raise Refused("not in the source")
            if course not in f.capacity or student in f.taken[course]:
                raise Refused("already in the target")
            if len(f.taken[course]) >= f.capacity[course]:
                raise Refused("target full")
            appends = [
                (f"sub-{source}", [sub_event(UNSUBSCRIBED, student, source, meta(2))]),
                (f"sub-{course}", [sub_event(SUBSCRIBED, student, course, meta(2))]),
            ]
        elif kind == "capacity":
            if course not in f.capacity:
                raise Refused("no such course")
            new = rng.randint(1, 5)
            if new < len(f.taken[course]) or new == f.capacity[course]:
                raise Refused("below the count")
            appends = [
                (
                    "courses",
                    [
                        NewEvent(
                            CAPACITY_CHANGED,
                            {"course": course, "capacity": new},
                            meta(1),
                            tags=[course_tag(course)],
                        )
                    ],
                )
            ]
        else:
            if len(f.capacity) >= MAX_COURSES:
                raise Refused("enough courses")
            name = f"c{len(f.capacity)}"  # two racing openers pick the same name
            appends = [
                (
                    "courses",
                    [
                        NewEvent(
                            COURSE_DEFINED,
                            {"course": name, "capacity": rng.randint(1, 4)},
                            meta(1),
                            tags=[course_tag(name)],
                        )
                    ],
                )
            ]
        # plain: the checker's own test, decisions appended without their condition
        condition = None if plain else AppendCondition(to_query(items), after=after)
        if len(appends) == 1 and rng.random() < 0.5:
            results = [store.append(appends[0][0], appends[0][1], condition=condition)]
        else:
            results = store.append_many([(s, evs, ANY) for s, evs in appends], condition=condition)
        seqs = [r.first_seq + n for r in results for n in range(len(r.ids))]
        ids = [str(i) for r in results for i in r.ids]
        emit("A " + json.dumps({"d": did, "seqs": seqs, "ids": ids}))

    def run(t: int) -> None:
        rng = random.Random(f"decide/{seed}/{round_no}/{t}")
        n = 0
        courses: list[str] = []
        try:
            while True:
                if n % 20 == 0:  # a types-only query scans: not every decision
                    courses = [
                        e.data["course"] for e in store.query([QueryItem(types=[COURSE_DEFINED])])
                    ]
                n += 1
                did = f"r{round_no}.t{t}.{n}"
                try:
                    decide(rng, did, courses)
                except ConditionFailed:
                    emit(f"F {did}")
                except Refused:
                    pass
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0, 0.004))
        except BaseException:
            die(f"decision thread {t}")

    def maintain() -> None:
        rng = random.Random(f"maint/{seed}/{round_no}")
        n = 0
        try:
            while True:
                time.sleep(rng.uniform(0.02, 0.15))
                n += 1
                if rng.random() < 0.7:
                    emit(f"C {n}")
                    res = store.compact(
                        before=datetime.now(UTC), max_file_events=rng.choice([5, 50, 1000])
                    )
                    emit(f"c {n} {res.events}")
                else:
                    emit(f"M {n}")
                    store.merge_archives(max_events=rng.choice([100, 100_000]))
                    emit(f"m {n}")
        except BaseException:
            die("maintenance thread")

    # "compact": the parent kills it just after a compaction or merge begins.
    if hook == "compact" or random.Random(f"maintains/{seed}/{round_no}").random() < 0.5:
        threading.Thread(target=maintain, daemon=True).start()
    emit("READY")
    for t in range(threads):
        threading.Thread(target=run, args=(t,), daemon=True).start()
    if hook in ("pre", "post"):
        time.sleep(at)
        armed.set()
    threading.Event().wait()  # the parent or the hook kills this process


class _Batch:
    """A LevelDB write batch whose write() may SIGKILL the process."""

    def __init__(self, real: Any, kill: Any) -> None:
        self._real = real
        self._kill = kill
        self.puts = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.puts += 1
        self._real.put(key, value)

    def write(self) -> None:
        self._kill("pre", self.puts)
        self._real.write()
        self._kill("post", self.puts)


class _DB:
    def __init__(self, real: Any, kill: Any) -> None:
        self._real = real
        self._kill = kill

    def write_batch(self, **kwargs: Any) -> _Batch:
        return _Batch(self._real.write_batch(**kwargs), self._kill)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Hot:
    """The writer's view of the hot tier, with its db wrapped."""

    def __init__(self, real: Any, kill: Any) -> None:
        self._real = real
        self._kill = kill

    @property
    def db(self) -> _DB:
        return _DB(self._real.db, self._kill)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_commit_hook(store: EventStore, when: str, armed: threading.Event, emit: Any) -> None:
    """Kill the process in the writer's group commit, once ``armed``: just
    before ``batch.write()`` (the group is lost) or just after (it is durable
    and nobody acknowledged it). Prefers a group of several appends."""
    writer = store._writer
    seen = [0]

    def kill(where: str, puts: int) -> None:
        if where != when or not armed.is_set():
            return
        seen[0] += 1
        # A decision is ~8 puts; wait a few groups for a larger one.
        if puts < 20 and seen[0] < 6:
            return
        emit(f"X {where} {puts}")
        os.kill(os.getpid(), signal.SIGKILL)

    writer._hot = _Hot(writer._hot, kill)  # type: ignore[assignment]


# -- the parent: one round -----------------------------------------------------


@dataclass
class ChildRun:
    acks: dict[str, tuple[list[int], list[str]]]  # decision -> (seqs, ids)
    mode: str
    killed_after: float
    failed: int  # ConditionFailed seen by the decision threads
    compactions: int
    hooked: str | None  # "pre N"/"post N": the commit hook fired, with N puts
    error: str | None


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        if line.endswith("\n"):  # a torn last line was never acknowledged
            lines.put(line[:-1])
    lines.put(None)


def run_child(
    store: str, seed: int, round_no: int, threads: int, rng: random.Random, plain: bool = False
) -> ChildRun:
    mode = rng.choice(["timer", "timer", "timer", "pre", "post", "post", "compact"])
    at = rng.uniform(0.05, 0.6)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        store,
        "--seed",
        str(seed),
        "--child-round",
        str(round_no),
        "--threads",
        str(threads),
        "--hook",
        mode if mode in ("pre", "post", "compact") else "none",
        "--at",
        str(at),
    ] + (["--unconditioned"] if plain else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    pump.start()
    seen: list[str] = []
    eof = False

    def take(timeout: float) -> str | None:
        nonlocal eof
        try:
            line = lines.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        if line is None:
            eof = True
            return None
        seen.append(line)
        return line

    try:
        deadline = time.monotonic() + 30
        while not eof and "READY" not in seen and time.monotonic() < deadline:
            take(deadline - time.monotonic())
        if "READY" not in seen:
            raise Violation(f"child did not start: {seen[-3:]}")
        started = time.monotonic()
        if mode == "timer":
            deadline = started + at
        elif mode == "compact":
            deadline = started + 3.0
        else:  # the hook kills it; if it never fires, the round says so
            deadline = started + at + 10.0
        while not eof and time.monotonic() < deadline:
            line = take(deadline - time.monotonic())
            if mode == "compact" and line is not None and line.split()[0] in "CM":
                time.sleep(rng.choice([0.0, rng.uniform(0, 0.01)]))
                break
        killed_after = time.monotonic() - started
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        pump.join()
        while take(0) is not None or not lines.empty():
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errors = [json.loads(line[2:]) for line in seen if line.startswith("E ")]
    if not errors and proc.returncode != -signal.SIGKILL:
        raise Violation(f"child exited by itself with status {proc.returncode}: {seen[-3:]}")
    acks: dict[str, tuple[list[int], list[str]]] = {}
    failed = compactions = 0
    hooked = None
    for line in seen:
        tag, _, rest = line.partition(" ")
        if tag == "A":
            msg = json.loads(rest)
            acks[msg["d"]] = (msg["seqs"], msg["ids"])
        elif tag == "F":
            failed += 1
        elif tag == "c":
            compactions += 1
        elif tag == "X":
            hooked = rest
    if mode in ("pre", "post") and hooked is None and not errors:
        raise Violation(f"the commit hook ({mode}) never fired: {seen[-3:]}")
    return ChildRun(
        acks, mode, killed_after, failed, compactions, hooked, errors[0] if errors else None
    )


# -- the parent: checking the log ----------------------------------------------


def matches(items: Items, e: Event) -> bool:
    """The checker's own matching (not the store's): any item whose types
    name the event's type (or are empty) and whose tags it all carries."""
    if not items:
        return True
    tags = set(e.tags)
    return any((not types or e.type in types) and set(tg) <= tags for types, tg in items)


@dataclass
class Decision:
    id: str
    items: Items
    after: int | None
    seqs: list[int]
    ids: list[str]


@dataclass
class Stats:
    events: int = 0
    decisions: int = 0
    unacked: int = 0
    conflicts_checked: int = 0  # events in the windows (after, E.seq) checked


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Violation(message)


def decisions_of(events: Sequence[Event]) -> list[Decision]:
    """The decisions in the log, each whole and contiguous."""
    out: list[Decision] = []
    current: Decision | None = None
    want = 0
    for e in events:
        m = e.metadata
        if not isinstance(m, dict) or "d" not in m:
            check(current is None, f"decision {current and current.id} cut at seq {e.seq}")
            continue
        if current is not None and m["d"] == current.id:
            current.seqs.append(e.seq)
            current.ids.append(str(e.id))
        else:
            check(
                current is None or len(current.seqs) == want,
                f"decision {current and current.id} has {current and len(current.seqs)} of "
                f"its {want} events (next event seq {e.seq})",
            )
            check(all(d.id != m["d"] for d in out[-50:]), f"decision {m['d']} twice")
            current = Decision(
                m["d"], [(list(t), list(g)) for t, g in m["q"]], m["after"], [e.seq], [str(e.id)]
            )
            out.append(current)
            want = m["k"]
        if len(current.seqs) == want:
            current = None
    check(current is None, f"decision {current and current.id} incomplete at the log's end")
    return out


def check_conditions(events: Sequence[Event], decisions: Sequence[Decision]) -> int:
    """No event matching a decision's query between its ``after`` and it."""
    checked = 0
    for d in decisions:
        low = 0 if d.after is None else d.after
        check(low < d.seqs[0], f"decision {d.id} at seq {d.seqs[0]} conditioned after {low}")
        for e in events[low : d.seqs[0] - 1]:  # seqs low+1 .. first-1
            checked += 1
            if matches(d.items, e):
                other = e.metadata.get("d") if isinstance(e.metadata, dict) else None
                raise Violation(
                    f"conflicting decisions both landed: {d.id} (seq {d.seqs[0]}) was "
                    f"conditioned on {d.items} after {d.after}, and the event at seq "
                    f"{e.seq} ({e.type} {list(e.tags)}, decision {other}) matches it"
                )
    return checked


def check_rules(events: Sequence[Event]) -> None:
    """The business rules at every point of the log."""
    capacity: dict[str, int] = {}
    taken: dict[str, set[str]] = {}
    limit: dict[str, int] = {}
    courses_of: dict[str, set[str]] = {}
    for e in events:
        d = e.data
        where = f"at seq {e.seq} ({e.type} {d})"
        if e.type == COURSE_DEFINED:
            check(d["course"] not in capacity, f"course defined twice {where}")
            capacity[d["course"]] = d["capacity"]
            taken[d["course"]] = set()
            check(len(capacity) <= MAX_COURSES, f"more than {MAX_COURSES} courses {where}")
        elif e.type == CAPACITY_CHANGED:
            check(d["course"] in capacity, f"capacity of an unknown course {where}")
            check(
                d["capacity"] >= len(taken[d["course"]]),
                f"capacity cut below the {len(taken[d['course']])} subscribed {where}",
            )
            capacity[d["course"]] = d["capacity"]
        elif e.type == STUDENT_REGISTERED:
            limit[d["student"]] = d["max_courses"]
            courses_of[d["student"]] = set()
        elif e.type in (SUBSCRIBED, UNSUBSCRIBED):
            s, c = d["student"], d["course"]
            check(c in capacity and s in limit, f"unknown course or student {where}")
            if e.type == SUBSCRIBED:
                check(s not in taken[c], f"subscribed twice {where}")
                taken[c].add(s)
                courses_of[s].add(c)
                check(
                    len(taken[c]) <= capacity[c],
                    f"course {c} over capacity: {len(taken[c])} > {capacity[c]} {where}",
                )
                check(
                    len(courses_of[s]) <= limit[s],
                    f"student {s} over limit: {len(courses_of[s])} > {limit[s]} {where}",
                )
            else:
                check(s in taken[c], f"unsubscribed while not subscribed {where}")
                taken[c].discard(s)
                courses_of[s].discard(c)
        elif e.type != PROBE:
            raise Violation(f"unknown event type {where}")


def check_acks(
    decisions: Sequence[Decision], acks: dict[str, tuple[list[int], list[str]]], round_no: int
) -> int:
    """Every acknowledged decision present as acknowledged; of this round's
    unacknowledged ones, at most one per thread, its last. Returns their count."""
    landed = {d.id: d for d in decisions}
    for did, (seqs, ids) in acks.items():
        d = landed.get(did)
        check(d is not None, f"acknowledged decision {did} lost (seqs {seqs})")
        assert d is not None
        check(
            (d.seqs, d.ids) == (seqs, ids),
            f"decision {did} acknowledged at {seqs} {ids}, the log has {d.seqs} {d.ids}",
        )
    mine = f"r{round_no}."
    acked_n: dict[str, int] = {}
    for did in acks:
        thread, n = did.rsplit(".", 1)
        acked_n[thread] = max(acked_n.get(thread, 0), int(n))
    unacked: dict[str, list[int]] = {}
    for d in decisions:
        if d.id.startswith(mine) and d.id not in acks:
            thread, n = d.id.rsplit(".", 1)
            unacked.setdefault(thread, []).append(int(n))
    for thread, ns in unacked.items():
        check(
            len(ns) == 1 and ns[0] > acked_n.get(thread, 0),
            f"thread {thread}: unacknowledged decisions {ns} in the log "
            f"(last acknowledged {acked_n.get(thread)}; one append in flight at most)",
        )
    return sum(len(ns) for ns in unacked.values())


def check_log(
    events: Sequence[Event], acks: dict[str, tuple[list[int], list[str]]], round_no: int
) -> Stats:
    """Every check made from the log alone (``events``: read_all, in order)."""
    check(
        [e.seq for e in events] == list(range(1, len(events) + 1)),
        "seqs are not 1..n without gaps",
    )
    decisions = decisions_of(events)
    stats = Stats(events=len(events), decisions=len(decisions))
    stats.conflicts_checked = check_conditions(events, decisions)
    check_rules(events)
    stats.unacked = check_acks(decisions, acks, round_no)
    return stats


def check_store(store: EventStore, events: Sequence[Event], rng: random.Random) -> None:
    """The store's own answers against the log: query(Q, after) is the
    checker's filter, and a landed decision's own condition now fails at it."""
    decisions = decisions_of(events)
    if not decisions:
        return
    for d in rng.sample(decisions, min(8, len(decisions))) + decisions[-4:]:
        low = 0 if d.after is None else d.after
        want = [e.seq for e in events[low:] if matches(d.items, e)]
        got = [e.seq for e in store.query(to_query(d.items), after=d.after)]
        check(got == want, f"query {d.items} after {d.after}: store {got[:8]}, log {want[:8]}")
        if not want:
            continue
        head = store.last_seq
        try:
            store.append(
                "probes",
                [NewEvent(PROBE, None)],
                condition=AppendCondition(to_query(d.items), after=d.after),
            )
        except ConditionFailed as exc:
            check(
                exc.seq == want[0],
                f"condition {d.items} after {d.after} failed at {exc.seq}, first match {want[0]}",
            )
        else:
            raise Violation(f"stale condition {d.items} after {d.after} did not fail")
        check(store.last_seq == head, "a failed conditional append wrote something")


def between_rounds(path: str, rng: random.Random) -> str:
    """Compact (and merge) some of the time, so the checks cross tiers."""
    r = rng.random()
    if r < 0.45:
        return ""
    with EventStore.open(path, sync=True) as store:
        res = store.compact(before=datetime.now(UTC), max_file_events=rng.choice([7, 60, 5000]))
        done = f"compact {res.events}"
        if r > 0.8:
            merged = store.merge_archives(max_events=rng.choice([200, 100_000]))
            done += f" merge {len(merged.files)}"
    return done


def verify_round(
    path: str, run: ChildRun, round_no: int, rng: random.Random, previous: list[bytes]
) -> tuple[Stats, int]:
    """Reopen and check; ``previous`` (the ids of the log the last round
    left) must be the log's prefix, and becomes this round's log."""
    with EventStore.open(path, sync=True) as store:
        store.verify()
        events = list(store.read_all())
        ids = [e.id.bytes for e in events]
        if ids[: len(previous)] != previous:
            at = next(
                (i for i, (a, b) in enumerate(zip(ids, previous, strict=False)) if a != b),
                len(ids),
            )
            raise Violation(f"the log changed below the last round's end: at seq {at + 1}")
        previous[:] = ids
        stats = check_log(events, run.acks, round_no)
        check_store(store, events, rng)
        files = len(store.archive_files())
    return stats, files


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=20, help="kill rounds (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=6, help="decision threads (default 6)")
    p.add_argument("--path", help="a folder for the stores (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the store of a failing round")
    p.add_argument("--rounds-per-store", type=int, default=60, help="a fresh store every N rounds")
    p.add_argument(
        "--unconditioned",
        action="store_true",
        help="append decisions without their conditions: the checks must then fail",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--hook", default="none", help=argparse.SUPPRESS)
    p.add_argument("--at", type=float, default=0.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child_main(
            args.child,
            args.seed,
            args.child_round,
            args.threads,
            args.hook,
            args.at,
            args.unconditioned,
        )
        return 0
    base = args.path or tempfile.mkdtemp(prefix="crash-dcb-")
    os.makedirs(base, exist_ok=True)
    started = time.monotonic()
    totals = {"acked": 0, "failed": 0, "unacked": 0, "hooked": 0, "compactions": 0}
    store = ""
    for round_no in range(1, args.rounds + 1):
        if round_no == 1 or (args.rounds_per_store and (round_no - 1) % args.rounds_per_store == 0):
            if store:
                shutil.rmtree(store, ignore_errors=True)
            store = os.path.join(base, f"store-{args.seed}-{round_no:04d}")
            if os.path.exists(store):
                print(f"{store} exists; give an empty --path", file=sys.stderr)
                return 2
            setup(store)
            previous: list[bytes] = []
        rng = random.Random(f"round/{args.seed}/{round_no}")
        t0 = time.monotonic()
        try:
            run = run_child(store, args.seed, round_no, args.threads, rng, args.unconditioned)
            if run.error is not None:
                raise Violation(f"the child failed: {run.error}")
            stats, files = verify_round(store, run, round_no, rng, previous)
            between = between_rounds(store, rng)
        except Violation as exc:
            print(f"FAIL round {round_no} (seed {args.seed}, store {store}): {exc}", flush=True)
            if args.keep:
                print(f"kept the store at {store}", flush=True)
            elif not args.path:
                shutil.rmtree(base, ignore_errors=True)
            return 1
        totals["acked"] += len(run.acks)
        totals["failed"] += run.failed
        totals["unacked"] += stats.unacked
        totals["hooked"] += run.hooked is not None
        totals["compactions"] += run.compactions
        print(
            f"round {round_no}/{args.rounds} kill={run.mode}@{run.killed_after:.3f}s"
            f"{' hook=' + run.hooked.replace(' ', '/') if run.hooked else ''} "
            f"acked={len(run.acks)} unacked={stats.unacked} condition_failed={run.failed} "
            f"compactions={run.compactions} events={stats.events} decisions={stats.decisions} "
            f"window={stats.conflicts_checked} files={files}"
            f"{' then ' + between if between else ''} "
            f"ok ({time.monotonic() - t0:.2f}s)",
            flush=True,
        )
    if not args.path:
        shutil.rmtree(base, ignore_errors=True)
    elif store:
        shutil.rmtree(store, ignore_errors=True)
    print(
        f"PASS {args.rounds} rounds, seed {args.seed}: {totals['acked']} acknowledged "
        f"decisions, {totals['failed']} conditions failed (and retried), "
        f"{totals['unacked']} unacknowledged decisions landed, killed in the group "
        f"commit in {totals['hooked']} rounds, {totals['compactions']} compactions in "
        f"killed processes; {time.monotonic() - started:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
