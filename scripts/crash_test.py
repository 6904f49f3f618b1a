#!/usr/bin/env python3
"""Kill-9 crash test of the tiered store (issue 4): appends, compactions and
merges, SIGKILLed at random moments, then every guarantee checked on reopen.

Each round starts a child process (this script with ``--child``) that opens
the store with ``sync=True`` and runs three threads:

* the writer appends batches one after another, each an ``append`` or an
  ``append_many`` over several streams, every event tagged with its batch
  number, and acknowledges a batch on stdout (ids, streams, versions, seqs
  and a digest of the payload) only after the append returned;
* the maintainer compacts (``before=`` now, a recently acknowledged id, or a
  moment in the recent past; a small random ``max_file_events``) and merges
  archive files (random ``max_events``) at random moments, printing ``C`` or
  ``M`` before it starts and ``c`` or ``m`` when done;
* a reader checks, during all that, that any one view shows a gap-free
  ``$all`` and dense stream versions;
* the maintainer also compacts and at once deletes the hot copies
  (``cleanup()``, racing the background cleaner), printing ``K``/``k``, and
  takes online backups into ``STORE.backups/`` (``B``/``b``);
* an importer copies the log, a slice at a time, into a second store
  (``STORE.mirror``) with ``import_events`` and random batch sizes,
  printing ``J`` (start seq, count, batch size) before and ``I`` after;
* about a third of the writer's batches are ``append_many(...,
  checkpoint=...)``: the checkpoint names the batch and the position
  consumed before it, in the same write; once acknowledged, a second one
  is set with ``set_checkpoint`` (``P``).

The parent kills the child with SIGKILL after a random delay, or shortly
after it announced a compaction, a merge, a cleanup, an import or a backup,
reopens the store itself and checks: every acknowledged event present
exactly once with its acknowledged id, stream, version, seq and payload;
whole appends only (unacknowledged ones only as whole batches at the tail);
no event in both tiers (raw LevelDB keys against the ids in the ESDB files
the manifest names, no id in two files, orphan files removed at open,
garbage below the watermark collected); seq gap-free, versions dense, ids
increasing, also for an append made after the reopen; the writer's
checkpoint naming exactly the last checkpointed batch in the store, and the
one set afterwards a checkpointed batch in the store, not older than the
last acknowledged; the
mirror a prefix of the log holding every acknowledged import and whole
import batches only, and passing ``verify()``; every acknowledged backup
(and one renamed into place just before the kill) opening, passing
``verify()`` and holding the log's first events, as many as it said; and
every read (``read_all`` both ways, with ``after``, ``from_seq``, ``types``
and ``stream_prefix``; ``read_stream`` and ``read_index`` both ways;
``get``; ``stream_version``; ``last_seq``) identical to the history the
parent derives from the batch numbers alone. The payload of batch ``b`` is a
pure function of ``(seed, b)``, so a run is deterministic apart from timing.

Usage (a long run; a fresh store every ``--rounds-per-store`` rounds keeps
the checks of a round near a second)::

    python scripts/crash_test.py --rounds 300 --seed 1 --path /tmp/crash --keep

Exit status 0 when every round passed, 1 at the first violation (with a
message saying what was wrong and where the store is, if ``--keep``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgpack
from ulid import ULID

from eventstore import ANY, EventStore, NewEvent
from eventstore import keys as K
from eventstore._leveldb import plyvel
from eventstore.esdb import ESDBReader
from eventstore.events import Event

# Names chosen so that some are byte prefixes of others ("acct-1", "acct-10").
STREAMS = ["acct-1", "acct-10", "acct-2", "order/7", "order/70", "ünï-3", "x", "x-y", "q", "z9"]
TYPES = ["Opened", "Deposited", "Withdrawn", "Closed"]
PREFIXES = ["acct-1", "order/", "x", "ü", "nope"]


class Violation(Exception):
    """A broken guarantee (or a child that failed)."""


# -- what batch b is: a pure function of (seed, b) ------------------------------


class Spec(NamedTuple):
    """One generated event, as its stream should read it back."""

    stream: str
    type: str
    data: Any
    metadata: Any
    indexes: dict[str, str]


class Part(NamedTuple):
    stream: str
    specs: list[Spec]
    exact: bool  # append with the exact expected version (else ANY)


def _payload(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.choice([0, 3, 40, 700, 9000]))
    if kind == 1:
        return "".join(rng.choice("abcé漢 \n") for _ in range(rng.randrange(30)))
    if kind == 2:
        return [rng.randrange(-(2**63), 2**63), rng.random(), None, True, "s"]
    if kind == 3:
        return {"n": rng.randrange(1000), "nested": {"l": [1, [2, [3]]], "b": b"\x00\xff"}}
    if kind == 4:
        return rng.random() * 1e300
    return None


def make_batch(seed: int, batch: int) -> list[Part]:
    rng = random.Random(f"batch/{seed}/{batch}")
    if rng.random() < 0.4:
        streams = [rng.choice(STREAMS)]
    else:
        streams = rng.sample(STREAMS, rng.randint(2, 3))
        if rng.random() < 0.15:
            streams.append(streams[0])  # a stream twice in one append_many
    parts = []
    for k, stream in enumerate(streams):
        specs = []
        for j in range(rng.randint(1, 3)):
            type_ = rng.choice(TYPES)
            data = {"b": batch, "k": k, "j": j, "p": _payload(rng)}
            metadata = None if rng.random() < 0.5 else {"tag": f"t{batch % 7}", "u": rng.random()}
            indexes = {"parity": "even" if batch % 2 == 0 else "odd"} if rng.random() < 0.5 else {}
            specs.append(Spec(stream, type_, data, metadata, indexes))
        parts.append(Part(stream, specs, rng.random() < 0.5))
    return parts


def checkpointed(seed: int, batch: int) -> bool:
    """Whether batch ``batch`` is appended with a checkpoint in the same write
    (``append_many(..., checkpoint=...)``, as a process manager records the
    events it emits with the position it consumed)."""
    return random.Random(f"cp/{seed}/{batch}").random() < 0.3


CHECKPOINT = "writer"  # written in the same write as its batch
AFTER = "writer-after"  # written by set_checkpoint once its batch is acknowledged


def checkpoint_value(batch: int, consumed: str | None) -> dict[str, Any]:
    """The checkpoint written with batch ``batch``: the batch, and the id of
    the last event before it (the "position consumed")."""
    return {"batch": batch, "consumed": consumed}


def mirror_path(store: str) -> str:
    """The store the child imports the main store's log into."""
    return store + ".mirror"


def backups_path(store: str) -> str:
    return store + ".backups"


def digest(spec: Spec) -> str:
    packed = msgpack.packb(
        [spec.stream, spec.type, spec.data, spec.metadata, spec.indexes], use_bin_type=True
    )
    return hashlib.sha256(packed).hexdigest()[:16]


# -- the child: writer, maintainer and reader threads ---------------------------


def child_main(path: str, seed: int, round_no: int, first_batch: int) -> None:
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def die(where: str) -> None:
        emit("E " + json.dumps(f"{where}: {traceback.format_exc()}"))
        os._exit(3)

    store = EventStore.open(path, sync=True)
    versions = {s: store.stream_version(s) for s in STREAMS}
    recent: list[str] = []  # acknowledged ids, for compaction cutoffs

    def maintain() -> None:
        rng = random.Random(f"maint/{seed}/{round_no}")
        n = 0
        try:
            while True:
                time.sleep(rng.uniform(0.005, 0.1))
                n += 1
                pick = rng.random()
                if pick < 0.15:
                    # A compaction, then its hot copies deleted at once (the
                    # background cleaner races this, as it does after any).
                    res = store.compact(before=datetime.now(UTC))
                    emit(f"K {n} {res.events}")
                    deleted = store.cleanup()
                    emit(f"k {n} {deleted}")
                elif pick < 0.3:
                    os.makedirs(backups_path(path), exist_ok=True)  # backup makes only DEST
                    dest = os.path.join(backups_path(path), f"r{round_no}-{n}")
                    emit("B " + json.dumps({"n": n, "dest": dest}))
                    copy = store.backup(dest)
                    emit("b " + json.dumps({"n": n, "dest": dest, "events": copy.events}))
                elif pick < 0.75:
                    r = rng.random()
                    before: datetime | str
                    if r < 0.4 or not recent:
                        before = datetime.now(UTC)
                    elif r < 0.8:
                        before = recent[-rng.randint(1, min(30, len(recent)))]
                    else:
                        before = datetime.now(UTC) - timedelta(milliseconds=rng.randint(20, 400))
                    max_file = rng.choice([3, 10, 40, 200, 100_000])
                    emit(f"C {n}")
                    res = store.compact(before=before, max_file_events=max_file)
                    emit(f"c {n} {len(res.files)} {res.events}")
                else:
                    max_events = rng.choice([10, 50, 300, 100_000])
                    emit(f"M {n}")
                    res = store.merge_archives(max_events=max_events, min_files=rng.choice([2, 3]))
                    emit(f"m {n} {len(res.files)} {res.events}")
        except BaseException:
            die("maintenance thread")

    def read() -> None:
        rng = random.Random(f"read/{seed}/{round_no}")
        try:
            while True:
                time.sleep(rng.uniform(0.01, 0.06))
                seqs = [e.seq for e in store.read_all(backwards=True, limit=300)]
                want = list(range(seqs[0], seqs[0] - len(seqs), -1)) if seqs else []
                if seqs != want:
                    at = next(i for i, (a, b) in enumerate(zip(seqs, want, strict=True)) if a != b)
                    raise Violation(
                        f"one view of $all, read backwards from seq {seqs[0]}, "
                        f"has seqs {seqs[max(at - 3, 0) : at + 5]} at {at}"
                    )
                stream = rng.choice(STREAMS)
                vs = [e.version for e in store.read_stream(stream)]
                if vs != list(range(len(vs))):
                    raise Violation(f"one view of stream {stream!r} has versions {vs}")
        except BaseException:
            die("reader thread")

    mirror = EventStore.open(mirror_path(path), sync=True)

    def copy_into_mirror() -> None:
        """Import the main store's log, a slice at a time, into the mirror."""
        rng = random.Random(f"import/{seed}/{round_no}")
        try:
            while True:
                time.sleep(rng.uniform(0.002, 0.05))
                start = mirror.last_seq + 1
                events = list(store.read_all(from_seq=start, limit=rng.choice([1, 9, 60, 400])))
                if not events:
                    continue
                batch_size = rng.choice([1, 4, 32, 4096])
                emit("J " + json.dumps({"start": start, "n": len(events), "batch": batch_size}))
                mirror.import_events(events, batch_size=batch_size)
                emit(f"I {mirror.last_seq}")
        except BaseException:
            die("import thread")

    threading.Thread(target=maintain, daemon=True).start()
    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=copy_into_mirror, daemon=True).start()
    rng = random.Random(f"writer/{seed}/{round_no}")
    newest = list(store.read_all(backwards=True, limit=1))
    consumed = str(newest[0].id) if newest else None
    emit("READY")
    batch = first_batch
    try:
        while True:
            parts = make_batch(seed, batch)
            planned = dict(versions)
            appends = []
            for part in parts:
                expected = planned[part.stream] if part.exact else ANY
                events = [
                    NewEvent(s.type, s.data, s.metadata, s.indexes or None) for s in part.specs
                ]
                appends.append((part.stream, events, expected))
                planned[part.stream] += len(part.specs)
            if checkpointed(seed, batch):
                value = checkpoint_value(batch, consumed)
                results = store.append_many(appends, checkpoint=(CHECKPOINT, value))
            elif len(appends) == 1 and rng.random() < 0.5:
                results = [store.append(*appends[0])]
            else:
                results = store.append_many(appends)
            versions = planned
            acked = []
            for part, result in zip(parts, results, strict=True):
                for n, (spec, id_) in enumerate(zip(part.specs, result.ids, strict=True)):
                    acked.append(
                        [
                            str(id_),
                            result.stream,
                            result.first_version + n,
                            result.first_seq + n,
                            digest(spec),
                        ]
                    )
            emit("A " + json.dumps({"b": batch, "e": acked}))
            if checkpointed(seed, batch):
                store.set_checkpoint(AFTER, {"batch": batch})
                emit(f"P {batch}")
            recent.append(str(results[-1].ids[-1]))
            consumed = recent[-1]
            batch += 1
            if rng.random() < 0.8:  # a few hundred appends a second keeps the checks quick
                time.sleep(rng.uniform(0.001, 0.008))
    except BaseException:
        die("writer thread")


# -- the parent: one round -----------------------------------------------------


class Ack(NamedTuple):
    id: str
    stream: str
    version: int
    seq: int
    digest: str


Row = tuple[bytes, str, int, int, str, Any, Any, dict[str, str]]


def row(e: Event) -> Row:
    return (e.id.bytes, e.stream, e.version, e.seq, e.type, e.data, e.metadata, e.indexes)


def brief(rows: Sequence[Row]) -> str:
    """Rows for a message: id, stream, version, seq, type, batch and a payload digest."""
    out = []
    for r in rows:
        tag = r[5].get("b") if isinstance(r[5], dict) else None
        payload = hashlib.sha256(repr(r[5:]).encode()).hexdigest()[:8]
        out.append(
            f"(id={r[0].hex()} {r[1]!r} v{r[2]} seq={r[3]} {r[4]} batch={tag} payload#{payload})"
        )
    return "[" + ", ".join(out) + "]"


@dataclass
class History:
    """What the parent knows: every batch in the store so far, in order."""

    seed: int
    rows: list[Row] = field(default_factory=list)  # the verified log, in order
    next_batch: int = 0
    mirrored: int = 0  # events in the mirror store, as last verified
    after_floor: int = -1  # the newest batch whose set_checkpoint(AFTER) returned
    _cache: dict[int, list[Part]] = field(default_factory=dict)

    def batch(self, b: int) -> list[Part]:
        parts = self._cache.get(b)
        if parts is None:
            parts = self._cache[b] = make_batch(self.seed, b)
        return parts


@dataclass
class ChildRun:
    acks: dict[int, list[Ack]]
    mode: str
    killed_after: float
    compactions: int
    merges: int
    moved: int
    error: str | None  # what the child itself found wrong, if anything
    cleanups: int = 0  # compactions whose hot copies the child then deleted
    imported: int = 0  # the mirror's last_seq after the last acknowledged import
    importing: dict[str, int] | None = None  # the import under way at the kill
    backups: list[tuple[str, int]] = field(default_factory=list)  # (dest, events), finished
    backing_up: str | None = None  # a backup begun and not acknowledged
    after: int = -1  # the newest batch whose set_checkpoint(AFTER) returned


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        if line.endswith("\n"):  # a torn last line was never acknowledged
            lines.put(line[:-1])
    lines.put(None)


def run_child(
    store: str, seed: int, round_no: int, first_batch: int, rng: random.Random
) -> ChildRun:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        store,
        "--seed",
        str(seed),
        "--child-round",
        str(round_no),
        "--first-batch",
        str(first_batch),
    ]
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
        mode = rng.choice(
            ["timer", "timer", "compact", "compact", "merge", "cleanup", "import", "backup"]
        )
        if mode == "timer":
            deadline = started + rng.uniform(0.02, 0.9)
            while not eof and time.monotonic() < deadline:
                take(deadline - time.monotonic())
        else:
            tag = {"compact": "C", "merge": "M", "cleanup": "K", "import": "J", "backup": "B"}[mode]
            wanted = rng.randint(1, 2) if tag in "KB" else rng.randint(1, 4)
            delay = rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.02)])
            deadline = started + 3.0
            count = 0
            while not eof and count < wanted and time.monotonic() < deadline:
                line = take(deadline - time.monotonic())
                if line is not None and line.split()[0] == tag:
                    count += 1
            if delay:
                time.sleep(delay)
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
    acks: dict[int, list[Ack]] = {}
    compactions = merges = moved = cleanups = imported = 0
    after = -1
    importing: dict[str, int] | None = None
    backups: list[tuple[str, int]] = []
    backing_up: str | None = None
    for line in seen:
        tag, _, rest = line.partition(" ")
        if tag == "A":
            msg = json.loads(rest)
            acks[msg["b"]] = [Ack(*e) for e in msg["e"]]
        elif tag in ("c", "m"):
            compactions += tag == "c"
            merges += tag == "m"
            moved += int(rest.split()[2]) if tag == "c" else 0
        elif tag == "k":
            cleanups += 1
        elif tag == "P":
            after = int(rest)
        elif tag == "J":
            importing = json.loads(rest)
        elif tag == "I":
            imported, importing = int(rest), None
        elif tag == "B":
            backing_up = json.loads(rest)["dest"]
        elif tag == "b":
            msg = json.loads(rest)
            backups.append((msg["dest"], msg["events"]))
            backing_up = None
    return ChildRun(
        acks,
        mode,
        killed_after,
        compactions,
        merges,
        moved,
        errors[0] if errors else None,
        cleanups,
        imported,
        importing,
        backups,
        backing_up,
        after,
    )


# -- the parent: checking the store -------------------------------------------


class Raw(NamedTuple):
    watermark: bytes
    manifest: list[str]  # file names
    live: list[bytes]  # ids of global keys at or above the watermark
    below: int  # keys of events below the watermark (garbage not yet collected)
    segments: set[tuple[str, int, int, int]]  # (stream, file number, first, last version)
    strays: list[list[int]]  # file numbers being made and retired, per x stray


def raw_state(store: str) -> Raw:
    """The hot tier read directly with plyvel (the store must be closed)."""
    db = plyvel.DB(os.path.join(store, "hot"), create_if_missing=False)
    try:
        watermark = db.get(K.WATERMARK) or bytes(16)
        raw_manifest = db.get(K.MANIFEST)
        manifest = (
            []
            if raw_manifest is None
            else [entry[1] for entry in msgpack.unpackb(raw_manifest, raw=False)["files"]]
        )
        live, below = [], 0
        for key in db.iterator(prefix=K.GLOBAL, include_value=False):
            if key[1:] >= watermark:
                live.append(key[1:])
            else:
                below += 1
        for prefix in (K.EVENT, K.INDEX):
            for key in db.iterator(prefix=prefix, include_value=False):
                below += key[-16:] < watermark
        segments = set()
        for key, value in db.iterator(prefix=K.SEGMENT):
            stream = key[len(K.SEGMENT) : key.index(K.SEP, len(K.SEGMENT))].decode()
            number, first, last = msgpack.unpackb(value)
            segments.add((stream, number, first, last))
        raw_strays = db.get(K.STRAY)
        strays = [[], []] if raw_strays is None else msgpack.unpackb(raw_strays)
        return Raw(watermark, manifest, live, below, segments, strays)
    finally:
        db.close()


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Violation(message)


def expected_rows(history: History, events: list[Event], acks: dict[int, list[Ack]]) -> int:
    """Match the store's log against the history plus this round's batches.
    Extends ``history.rows`` and returns the number of unacknowledged batches
    found at the tail."""
    old = history.rows
    n_old = len(old)
    check(len(events) >= n_old, f"the log shrank: {len(events)} events, had {n_old}")
    for mine, e in zip(old, events, strict=False):
        if row(e) != mine:
            raise Violation(
                f"event changed or lost since the last round: had "
                f"{brief([mine])}, now {brief([row(e)])}"
            )
    versions: dict[str, int] = {}
    for r in old:
        versions[r[1]] = r[2]
    at, b = n_old, history.next_batch
    rows: list[Row] = []
    while at < len(events):
        specs = [s for p in history.batch(b) for s in p.specs]
        got = events[at : at + len(specs)]
        tags = [e.data.get("b") if isinstance(e.data, dict) else None for e in got]
        if tags[0] != b:
            said = "acknowledged" if b in acks else "not acknowledged in this round"
            raise Violation(
                f"batch {b} ({said}) missing: the event at seq {got[0].seq} "
                f"(id {got[0].id}) belongs to "
                f"batch {tags[0]} (acknowledged batches: "
                f"{min(acks, default=None)}..{max(acks, default=None)})"
            )
        if tags != [b] * len(specs):
            raise Violation(
                f"partial append: batch {b} has {tags.count(b)} of its "
                f"{len(specs)} events (seqs from {got[0].seq})"
            )
        ack_list = acks.get(b)
        if ack_list is not None and len(ack_list) != len(specs):
            raise Violation(
                f"batch {b} acknowledged with {len(ack_list)} events, it has {len(specs)}"
            )
        for i, (spec, e) in enumerate(zip(specs, got, strict=True)):
            version = versions.get(spec.stream, -1) + 1
            versions[spec.stream] = version
            want = (
                e.id.bytes,
                spec.stream,
                version,
                at + 1,
                spec.type,
                spec.data,
                spec.metadata,
                spec.indexes,
            )
            if row(e) != want:
                raise Violation(
                    f"batch {b}: event at seq {at + 1} is {brief([row(e)])}, "
                    f"expected {brief([want])}"
                )
            if ack_list is not None:
                ack = ack_list[i]
                got_ack = Ack(str(e.id), e.stream, e.version, e.seq, digest(spec))
                if got_ack != ack:
                    raise Violation(f"batch {b} acknowledged as {ack}, store has {got_ack}")
            rows.append(want)
            at += 1
        b += 1
    for batch in acks:
        if batch >= b:
            raise Violation(
                f"acknowledged batch {batch} lost (log ends with batch {b - 1}, "
                f"{len(events)} events)"
            )
    last_acked = max(acks, default=history.next_batch - 1)
    unacked = b - 1 - last_acked
    check(
        unacked <= 1,
        f"{unacked} unacknowledged batches at the tail (one writer thread "
        "has at most one append in flight)",
    )
    missing = [x for x in range(history.next_batch, last_acked + 1) if x not in acks]
    check(not missing, f"batches {missing[:5]} present but never acknowledged before later ones")
    history.rows.extend(rows)
    history.next_batch = b
    return unacked


def check_files(store: str, raw: Raw, events: list[Event]) -> tuple[int, int, list[int]]:
    """ESDB files against the hot tier: nothing in both, nothing twice."""
    folder = os.path.join(store, "archive")
    by_id = {e.id.bytes: e for e in events}
    cold: set[bytes] = set()
    metas = []
    for name in raw.manifest:
        with ESDBReader(os.path.join(folder, name)) as reader:
            metas.append((reader.meta.first_seq, reader.meta.last_seq, name))
            previous = b""
            for e in reader.read_all():
                id16 = e.id.bytes
                check(id16 > previous, f"{name}: ids out of order at {e.id}")
                previous = id16
                check(id16 not in cold, f"event {e.id} is in two archive files ({name})")
                check(id16 < raw.watermark, f"{name} holds {e.id}, above the watermark")
                cold.add(id16)
                mine = by_id.get(id16)
                check(
                    mine is not None and row(mine) == row(e),
                    f"{name}: {brief([row(e)])} differs from the store's read "
                    f"{brief([row(mine)] if mine else [])}",
                )
    live = set(raw.live)
    both = cold & live
    check(not both, f"{len(both)} events in both tiers, e.g. {sorted(both)[:1]}")
    check(
        cold | live == set(by_id),
        f"files + hot tier != read_all: {len(cold)} cold + {len(live)} hot vs {len(by_id)} read",
    )
    if cold and live:
        check(max(cold) < min(live), "an archived id is above a hot one")
    metas.sort()
    expect = 1
    boundaries = []
    for first, last, name in metas:
        check(first == expect, f"{name} starts at seq {first}, expected {expect}")
        expect = last + 1
        boundaries += [first, last]
    return len(cold), len(raw.manifest), [*boundaries, expect]


def check_reads(
    s: EventStore, events: list[Event], boundaries: list[int], rng: random.Random
) -> None:
    """Every read against the log; ``boundaries`` are seqs where tiers or files meet."""
    rows = [row(e) for e in events]
    n = len(rows)
    check([e.seq for e in events] == list(range(1, n + 1)), "seq is not gap-free 1..N")
    ids = [e.id.bytes for e in events]
    check(all(a < b for a, b in itertools.pairwise(ids)), "read_all ids not strictly increasing")
    check(s.last_seq == n, f"last_seq {s.last_seq}, log has {n}")

    def same(what: str, got: Iterator[Event], want: Sequence[Row]) -> None:
        got_rows = [row(e) for e in got]
        if got_rows != list(want):
            first = next(
                (i for i, (a, b) in enumerate(zip(got_rows, want, strict=False)) if a != b),
                min(len(got_rows), len(want)),
            )
            raise Violation(
                f"{what}: {len(got_rows)} events, expected {len(want)}; first "
                f"difference at {first}: got {brief(got_rows[first : first + 1])}, "
                f"expected {brief(want[first : first + 1])}"
            )

    same("read_all(backwards=True)", s.read_all(backwards=True), rows[::-1])
    for stream in STREAMS:
        mine = [r for r in rows if r[1] == stream]
        check(s.stream_version(stream) == len(mine) - 1, f"stream_version({stream!r})")
        check([r[2] for r in mine] == list(range(len(mine))), f"versions of {stream!r} not dense")
        same(f"read_stream({stream!r})", s.read_stream(stream), mine)
        same(
            f"read_stream({stream!r}, backwards)", s.read_stream(stream, backwards=True), mine[::-1]
        )
        if mine:
            v = rng.randrange(len(mine))
            same(
                f"read_stream({stream!r}, from_version={v})",
                s.read_stream(stream, from_version=v),
                mine[v:],
            )
            same(
                f"read_stream({stream!r}, from_version={v}, backwards)",
                s.read_stream(stream, from_version=v, backwards=True),
                mine[: v + 1][::-1],
            )
            same(f"read_stream({stream!r}, limit=3)", s.read_stream(stream, limit=3), mine[:3])
        for name, value in [("type", t) for t in TYPES] + [("parity", "even"), ("parity", "odd")]:
            if name == "type":
                hits = [r for r in mine if r[4] == value]
            else:
                hits = [r for r in mine if r[7].get(name) == value]
            same(f"read_index({stream!r}, {name}={value})", s.read_index(stream, name, value), hits)
            same(
                f"read_index({stream!r}, {name}={value}, backwards)",
                s.read_index(stream, name, value, backwards=True),
                hits[::-1],
            )
    # Reads from a position: one in full each way, the others (the ends and the
    # seqs where archive files and the hot tier meet) 40 events each way.
    whole = rng.randint(1, n + 1)
    edges = sorted({1, n, n + 1, *rng.sample(boundaries, min(len(boundaries), 8))})
    for k in [whole, *edges]:
        lim = None if k == whole else 40
        same(
            f"read_all(from_seq={k}, limit={lim})",
            s.read_all(from_seq=k, limit=lim),
            rows[k - 1 :][:lim],
        )
        same(
            f"read_all(from_seq={k}, backwards, limit={lim})",
            s.read_all(from_seq=k, backwards=True, limit=lim),
            rows[:k][::-1][:lim],
        )
    if n:
        whole = rng.randrange(n)
        edges = sorted({0, n - 1, *(k - 1 for k in boundaries if 0 < k <= n)})
        for i in [whole, *rng.sample(edges, min(len(edges), 6))]:
            after = events[i].id
            lim = None if i == whole else 40
            same(
                f"read_all(after=#{i}, limit={lim})",
                s.read_all(after=after, limit=lim),
                rows[i + 1 :][:lim],
            )
            same(
                f"read_all(after=#{i}, backwards, limit={lim})",
                s.read_all(after=after, backwards=True, limit=lim),
                rows[:i][::-1][:lim],
            )
    type_ = rng.choice(TYPES)
    same(
        f"read_all(types=[{type_}])", s.read_all(types=[type_]), [r for r in rows if r[4] == type_]
    )
    prefix = rng.choice(PREFIXES)
    same(
        f"read_all(stream_prefix={prefix!r}, backwards)",
        s.read_all(stream_prefix=prefix, backwards=True),
        [r for r in rows[::-1] if r[1].startswith(prefix)],
    )
    sample = rng.sample(range(n), min(n, 60)) + ([0, n - 1] if n else [])
    for i in sample:
        got = s.get(events[i].id)
        check(
            got is not None and row(got) == rows[i],
            f"get({events[i].id}) = {brief([row(got)] if got else [])}, "
            f"expected {brief(rows[i : i + 1])}",
        )
    id_set = set(ids)
    for i in rng.sample(range(n), min(n, 5)):
        other = (int.from_bytes(ids[i], "big") + 7).to_bytes(16, "big")
        if other not in id_set:
            check(s.get(other) is None, f"get of an absent id {other.hex()} found an event")


def append_after_reopen(s: EventStore, history: History, events: list[Event]) -> None:
    """The next batch, appended by the parent: ids above everything, seq N+1..."""
    b = history.next_batch
    top = events[-1].id.bytes if events else bytes(16)
    versions = {st: s.stream_version(st) for st in STREAMS}
    appends = []
    for part in history.batch(b):
        appends.append(
            (
                part.stream,
                [NewEvent(x.type, x.data, x.metadata, x.indexes or None) for x in part.specs],
                versions[part.stream],
            )
        )
        versions[part.stream] += len(part.specs)
    if checkpointed(history.seed, b):
        consumed = str(events[-1].id) if events else None
        results = s.append_many(appends, checkpoint=(CHECKPOINT, checkpoint_value(b, consumed)))
        s.set_checkpoint(AFTER, {"batch": b})
        history.after_floor = b
    else:
        results = s.append_many(appends)
    seq = len(events)
    for result in results:
        for id_ in result.ids:
            check(id_.bytes > top, f"id {id_} after reopen is not above {top.hex()}")
            top = id_.bytes
        check(result.first_seq == seq + 1, f"seq after reopen {result.first_seq}, not {seq + 1}")
        seq = result.last_seq
    fresh = [e for r in results for e in map(s.get, r.ids) if e is not None]
    check(len(fresh) == sum(len(r.ids) for r in results), "append after reopen not readable")
    expected_rows(
        history,
        events + fresh,
        {
            b: [
                Ack(
                    str(e.id),
                    e.stream,
                    e.version,
                    e.seq,
                    digest(Spec(e.stream, e.type, e.data, e.metadata, e.indexes)),
                )
                for e in fresh
            ]
        },
    )


def check_segment_keys(store: str, raw: Raw) -> None:
    """After open, each stream has exactly one segment key per manifest file
    that holds it, with its version range there, and no key names another file
    (a crash mid-compaction or mid-merge leaves keys that open must sweep)."""
    want = set()
    for name in raw.manifest:
        with ESDBReader(os.path.join(store, "archive", name)) as r:
            number = int(name.split(".")[0])
            want.update((sp.stream, number, sp.first_version, sp.last_version) for sp in r.spaces())
    extra, lacking = raw.segments - want, want - raw.segments
    check(
        not extra and not lacking,
        f"segment keys: {len(extra)} name no live file (e.g. {sorted(extra)[:3]}), "
        f"{len(lacking)} missing (e.g. {sorted(lacking)[:3]})",
    )


def check_checkpoint(s: EventStore, history: History) -> None:
    """The checkpoint written with the checkpointed batches (one atomic write
    with the events) names the last such batch in the store, and the
    position consumed before it: never a batch the kill lost, never an older
    one than the events say."""
    want = max(
        (b for b in range(history.next_batch) if checkpointed(history.seed, b)), default=None
    )
    got = s.get_checkpoint(CHECKPOINT)
    if want is None:
        check(got is None, f"checkpoint {got!r}, but no checkpointed batch is in the store")
        return
    consumed = None
    for r in reversed(history.rows):  # the last event of the batches before it
        tag = r[5].get("b") if isinstance(r[5], dict) else None
        if tag is not None and tag < want:
            consumed = str(ULID.from_bytes(r[0]))
            break
    check(
        got == checkpoint_value(want, consumed),
        f"checkpoint {got!r}, but the last checkpointed batch in the store is {want} "
        f"(consumed {consumed}): the checkpoint and its events disagree",
    )


def check_after_checkpoint(s: EventStore, history: History, run: ChildRun | None) -> None:
    """The checkpoint set once its batch was acknowledged: never ahead of the
    events (its batch is in the store), never behind the last one whose
    set_checkpoint returned (sync=True: it is durable)."""
    if run is not None:
        history.after_floor = max(history.after_floor, run.after)
    got = s.get_checkpoint(AFTER)
    if got is None:
        check(history.after_floor < 0, f"{AFTER} lost: it was set for batch {history.after_floor}")
        return
    batch = got.get("batch") if isinstance(got, dict) else None
    check(
        isinstance(batch, int) and checkpointed(history.seed, batch) and batch < history.next_batch,
        f"{AFTER} is {got!r}: not a checkpointed batch in the store "
        f"(batches < {history.next_batch})",
    )
    check(
        batch >= history.after_floor,
        f"{AFTER} names batch {batch}, but it was set for batch {history.after_floor} since",
    )


def check_mirror(store: str, history: History, events: list[Event], run: ChildRun) -> int:
    """The store the child imported into: a prefix of the main log, holding
    every acknowledged import, and whole import batches of the one under
    way at the kill. Returns how many events it holds."""
    path = mirror_path(store)
    if not os.path.exists(path):
        check(history.mirrored == 0 and run.imported == 0, f"{path} is gone")
        return 0
    with EventStore.open(path) as m:
        got = [row(e) for e in m.read_all()]
        n = len(got)
        check(
            got == [row(e) for e in events[:n]],
            f"the mirror's {n} events are not the main log's first {n}",
        )
        floor = max(history.mirrored, run.imported)
        if run.importing is None:
            allowed = {floor}
        else:
            start, count, size = (run.importing[k] for k in ("start", "n", "batch"))
            check(start - 1 >= floor, f"an import from seq {start} began below {floor}")
            allowed = {start - 1 + min(k * size, count) for k in range(count // size + 2)}
        check(
            n in allowed,
            f"the mirror holds {n} events; after the acknowledged imports and whole "
            f"batches of the one under way ({run.importing}) it may hold {sorted(allowed)}",
        )
        m.verify()
    history.mirrored = n
    return n


def check_backups(store: str, events: list[Event], run: ChildRun) -> int:
    """Every acknowledged backup opens, verifies, and holds a prefix of the
    log as long as it said; one under way at the kill is absent or whole."""
    found = list(run.backups)
    if run.backing_up is not None and os.path.exists(run.backing_up):
        found.append((run.backing_up, -1))  # renamed into place just before the kill
    for dest, count in found:
        check(os.path.isdir(dest), f"acknowledged backup {dest} is missing")
        with EventStore.open(dest) as b:
            got = [row(e) for e in b.read_all()]
            if count >= 0:
                check(len(got) == count, f"backup {dest} holds {len(got)} events, said {count}")
            check(
                got == [row(e) for e in events[: len(got)]],
                f"backup {dest} is not a prefix of the log",
            )
            b.verify()
    shutil.rmtree(backups_path(store), ignore_errors=True)  # and any .partial left
    return len(found)


class RoundStats(NamedTuple):
    events: int
    cold: int
    files: int
    orphans: int
    strays: int
    unacked: int
    garbage: int
    mirrored: int = 0
    backups: int = 0


def verify(
    store: str,
    history: History,
    acks: dict[int, list[Ack]],
    rng: random.Random,
    run: ChildRun | None = None,
) -> RoundStats:
    raw = raw_state(store)
    folder = os.path.join(store, "archive")
    on_disk = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    missing = set(raw.manifest) - on_disk
    check(not missing, f"files named by the manifest are missing: {sorted(missing)}")
    with EventStore.open(store) as s:
        orphans = set(s.orphans_removed)
        strays = len(s.strays_swept)
        check(
            orphans == on_disk - set(raw.manifest),
            f"orphans removed {sorted(orphans)}, expected {sorted(on_disk - set(raw.manifest))}",
        )
        left = set(os.listdir(folder))
        check(
            left == set(raw.manifest),
            f"archive folder after open holds {sorted(left)}, "
            f"the manifest names {sorted(raw.manifest)}",
        )
        events = list(s.read_all())
        unacked = expected_rows(history, events, acks)
        check_checkpoint(s, history)
        check_after_checkpoint(s, history, run)
        cold, files, boundaries = check_files(store, raw, events)
        check_reads(s, events, boundaries, rng)  # racing the background cleanup
        s.cleanup()  # finish what the cleanup thread resumed at open
    after = raw_state(store)
    check(after.below == 0, f"{after.below} hot keys below the watermark after cleanup()")
    check(after.strays == [[], []], f"stray file numbers left after open: {after.strays}")
    check_segment_keys(store, after)
    check(
        after.watermark == raw.watermark and after.manifest == raw.manifest,
        "opening and reading changed the watermark or the manifest",
    )
    mirrored = backups = 0
    if run is not None:
        mirrored = check_mirror(store, history, events, run)
        backups = check_backups(store, events, run)
    with EventStore.open(store, sync=True) as s:
        append_after_reopen(s, history, events)
        check_checkpoint(s, history)
    return RoundStats(
        len(events), cold, files, len(orphans), strays, unacked, raw.below, mirrored, backups
    )


# -- the command line ----------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=20, help="kill rounds (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything but timing")
    p.add_argument("--path", help="folder for the stores (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the store when a round fails")
    p.add_argument(
        "--rounds-per-store",
        type=int,
        default=20,
        help="start a fresh store after this many rounds (0: never; default 20)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--first-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.rounds_per_store < 0:
        p.error("--rounds must be >= 1 and --rounds-per-store >= 0")
    return args


def remove_store(store: str) -> None:
    for folder in (store, mirror_path(store), backups_path(store)):
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child_main(args.child, args.seed, args.child_round, args.first_batch)
        return 0
    base = args.path or tempfile.mkdtemp(prefix="crash_test-")
    os.makedirs(base, exist_ok=True)
    started = time.monotonic()
    store = ""
    history = History(args.seed)
    epoch = -1
    totals = {
        "acked": 0,
        "compactions": 0,
        "merges": 0,
        "in_compaction": 0,
        "orphan_rounds": 0,
        "stray_rounds": 0,
        "cleanups": 0,
        "garbage_rounds": 0,
        "backups": 0,
        "in_import": 0,
    }
    for round_no in range(1, args.rounds + 1):
        if epoch < 0 or (args.rounds_per_store and (round_no - 1) % args.rounds_per_store == 0):
            if store:
                remove_store(store)
            epoch += 1
            store = os.path.join(base, f"store-{args.seed}-{epoch:03d}")
            if os.path.exists(store):
                print(f"{store} exists; give an empty --path", file=sys.stderr)
                return 2
            history = History(args.seed)
        rng = random.Random(f"round/{args.seed}/{round_no}")
        t0 = time.monotonic()
        try:
            run = run_child(store, args.seed, round_no, history.next_batch, rng)
            if run.error is not None:
                # Say what the child saw, and what the store holds after it.
                try:
                    verify(store, history, run.acks, rng, run)
                    after = "the store passed every check after reopen"
                except Violation as exc:
                    after = f"the store after reopen: {exc}"
                raise Violation(f"the child failed: {run.error}\n{after}")
            stats = verify(store, history, run.acks, rng, run)
        except Violation as exc:
            print(f"FAIL round {round_no} (seed {args.seed}, store {store}): {exc}", flush=True)
            if args.keep:
                print(f"kept the store at {store}", flush=True)
            else:
                remove_store(store)
                if not args.path:
                    shutil.rmtree(base, ignore_errors=True)
            return 1
        totals["acked"] += len(run.acks)
        totals["compactions"] += run.compactions
        totals["merges"] += run.merges
        totals["orphan_rounds"] += stats.orphans > 0
        totals["stray_rounds"] += stats.strays > 0
        totals["cleanups"] += run.cleanups
        totals["garbage_rounds"] += stats.garbage > 0
        totals["backups"] += stats.backups
        totals["in_import"] += run.importing is not None
        print(
            f"round {round_no}/{args.rounds} store {epoch} kill={run.mode}@"
            f"{run.killed_after:.3f}s acked={len(run.acks)} unacked={stats.unacked} "
            f"compactions={run.compactions} merges={run.merges} events={stats.events} "
            f"cold={stats.cold} files={stats.files} orphans={stats.orphans} strays={stats.strays} "
            f"garbage={stats.garbage} cleanups={run.cleanups} mirrored={stats.mirrored}"
            f"{'+' if run.importing else ''} backups={stats.backups} "
            f"ok ({time.monotonic() - t0:.2f}s)",
            flush=True,
        )
    remove_store(store)
    if not args.path:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"PASS {args.rounds} rounds, seed {args.seed}: {totals['acked']} acknowledged "
        f"appends, {totals['compactions']} compactions and {totals['merges']} merges "
        f"completed in killed processes; orphan files removed at open in "
        f"{totals['orphan_rounds']} rounds, stray segment keys swept in "
        f"{totals['stray_rounds']}; {totals['cleanups']} cleanups completed, garbage "
        f"left at the kill in {totals['garbage_rounds']} rounds; {totals['backups']} "
        f"backups checked; killed mid-import in {totals['in_import']} rounds; "
        f"{time.monotonic() - started:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
