"""The DCB crash test (scripts/crash_dcb.py, issue 18), short version, and
its checker shown to fail on the violations it looks for.

The script SIGKILLs a process making conditional appends on overlapping
boundaries (also inside the writer's group commit), then checks from the
log that no two conflicting decisions both landed. The script's docstring
gives the command for a long run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eventstore import ANY, AppendCondition, EventStore, NewEvent
from eventstore.errors import ConditionFailed

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "crash_dcb.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_dcb", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_dcb"] = module
    spec.loader.exec_module(module)
    return module


cd = _load_script()


def test_crash_dcb_script_short_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "8", "--seed", "2", "--path", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "PASS 8 rounds" in proc.stdout
    # The run did what it is for: decisions collided, and kills hit the group commit.
    summary = re.search(
        r"(\d+) acknowledged decisions, (\d+) conditions failed.*"
        r"killed in the group commit in (\d+) rounds",
        proc.stdout,
    )
    assert summary is not None, proc.stdout[-2000:]
    acked, failed, hooked = (int(g) for g in summary.groups())
    assert acked > 50 and failed > 10 and hooked >= 1, proc.stdout[-2000:]


def test_crash_dcb_script_fails_when_decisions_skip_their_conditions(tmp_path: Path) -> None:
    """The whole run as a check of itself: the same decision threads appending
    without their conditions land conflicting decisions, and the run fails."""
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--unconditioned",
            "--rounds",
            "6",
            "--seed",
            "2",
            "--path",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert re.search(
        r"FAIL round \d+ .*(conflicting decisions both landed|over capacity|over limit)",
        proc.stdout,
    ), proc.stdout[-4000:]


def _world(tmp_path: Path, most: bool = False) -> tuple[str, str, int]:
    """A set-up store, and its course of least (or most) capacity."""
    path = str(tmp_path / "s")
    cd.setup(path)
    with EventStore.open(path) as store:
        f = cd.fold(store.read_all())
    course = (max if most else min)(f.capacity, key=lambda c: f.capacity[c])
    return path, course, f.capacity[course]


def _subscribe(
    store: EventStore, did: str, student: str, course: str, items: Any, after: int | None
) -> int:
    """A subscription recorded as a decision on (items, after), appended
    without a condition: what a store that ignored conditions would write."""
    meta = {"d": did, "q": items, "after": after, "k": 1}
    event = cd.sub_event(cd.SUBSCRIBED, student, course, meta)
    return store.append(f"sub-{course}", [event], ANY).first_seq


def _check(path: str, acks: dict[str, Any] | None = None) -> Any:
    with EventStore.open(path) as store:
        events = list(store.read_all())
    return cd.check_log(events, acks or {}, 1)


def test_the_checker_catches_two_conflicting_decisions(tmp_path: Path) -> None:
    """Two decisions made on the same read of one boundary, both landed
    (appended without a condition): the checker reports the conflict."""
    path, course, _ = _world(tmp_path)
    with EventStore.open(path) as store:
        a = cd.course_items(course) + cd.student_items("s0")
        b = cd.course_items(course) + cd.student_items("s1")
        after = store.last_seq  # both decide on the same read of the log
        first = _subscribe(store, "r1.t0.1", "s0", course, a, after)
        _subscribe(store, "r1.t1.1", "s1", course, b, after)
        # With the condition, the store refuses the second at the first one's seq.
        with pytest.raises(ConditionFailed) as caught:
            store.append(
                "probe",
                [NewEvent(cd.PROBE, None)],
                condition=AppendCondition(cd.to_query(b), after=after),
            )
        assert caught.value.seq == first
    with pytest.raises(
        cd.Violation, match=r"conflicting decisions both landed: r1\.t1\.1 .* decision r1\.t0\.1"
    ):
        _check(path)


def test_the_checker_passes_decisions_made_one_after_the_other(tmp_path: Path) -> None:
    """The same two decisions, the second made on a read of the first: clean."""
    path, course, capacity = _world(tmp_path, most=True)
    assert capacity >= 2
    with EventStore.open(path) as store:
        for n in range(2):
            items = cd.course_items(course) + cd.student_items(f"s{n}")
            after = [e.seq for e in store.query(cd.to_query(items))][-1]
            _subscribe(store, f"r1.t{n}.1", f"s{n}", course, items, after)
    stats = _check(path, None)
    assert stats.decisions == 2 and stats.conflicts_checked > 0


def test_the_checker_catches_a_course_over_capacity(tmp_path: Path) -> None:
    """Decisions on too narrow a boundary (the student's only) never conflict,
    and overfill the course: the business rules catch it."""
    path, course, capacity = _world(tmp_path)
    with EventStore.open(path) as store:
        for n in range(capacity + 1):
            items = cd.student_items(f"s{n}")
            after = [e.seq for e in store.query(cd.to_query(items))][-1]
            _subscribe(store, f"r1.t{n}.1", f"s{n}", course, items, after)
    with pytest.raises(cd.Violation, match=f"course {course} over capacity"):
        _check(path)


def test_the_checker_catches_a_lost_acknowledged_decision(tmp_path: Path) -> None:
    path, course, capacity = _world(tmp_path, most=True)
    assert capacity >= 2
    with EventStore.open(path) as store:
        items = cd.course_items(course) + cd.student_items("s0")
        after = [e.seq for e in store.query(cd.to_query(items))][-1]
        seq = _subscribe(store, "r1.t0.1", "s0", course, items, after)
        id_ = str(next(store.read_all(from_seq=seq)).id)
    assert _check(path, {"r1.t0.1": ([seq], [id_])}).unacked == 0
    with pytest.raises(cd.Violation, match=r"acknowledged decision r1\.t0\.2 lost"):
        _check(path, {"r1.t0.1": ([seq], [id_]), "r1.t0.2": ([seq + 1], ["x"])})
    # Two of one thread landed unacknowledged: it had one append in flight at most.
    with EventStore.open(path) as store:
        items = cd.course_items(course) + cd.student_items("s1")
        after = [e.seq for e in store.query(cd.to_query(items))][-1]
        _subscribe(store, "r1.t0.2", "s1", course, items, after)
    with pytest.raises(cd.Violation, match=r"unacknowledged decisions \[1, 2\]"):
        _check(path, {})


def test_the_checker_catches_half_a_decision(tmp_path: Path) -> None:
    """A two-event decision (a transfer) with one of its events in the log."""
    path, course, _ = _world(tmp_path)
    with EventStore.open(path) as store:
        items = cd.student_items("s0")
        meta = {"d": "r1.t0.1", "q": items, "after": None, "k": 2}
        store.append("sub-x", [cd.sub_event(cd.SUBSCRIBED, "s0", course, meta)])
    with pytest.raises(cd.Violation, match=r"decision r1\.t0\.1 incomplete"):
        _check(path)


def test_the_checker_catches_a_log_changed_since_the_last_round(tmp_path: Path) -> None:
    path, _, _ = _world(tmp_path)
    run = cd.ChildRun({}, "timer", 0.0, 0, 0, None, None)
    previous: list[bytes] = []
    cd.verify_round(path, run, 1, cd.random.Random(1), previous)
    assert len(previous) == cd.FIRST_COURSES + cd.STUDENTS
    previous[3] = bytes(16)
    with pytest.raises(cd.Violation, match="the log changed below the last round's end: at seq 4"):
        cd.verify_round(path, run, 2, cd.random.Random(1), previous)
