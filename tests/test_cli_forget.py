"""`eventstore delete`, `retention`, `redact`, `scavenge`, and what `verify` says of erasure."""

from __future__ import annotations

import json
from pathlib import Path

from eventstore import EventStore, NewEvent

from .test_cli import fails, ok


def _store(tmp_path: Path) -> tuple[str, list[str]]:
    path = str(tmp_path / "s")
    with EventStore.open(path) as store:
        store.append("a", [NewEvent("T", {"n": i}) for i in range(4)])
        store.append("b", [NewEvent("T", {"n": i}) for i in range(2)])
        ids = [str(e.id) for e in store.read_all()]
    return path, ids


def test_retention_set_show_and_scavenge(tmp_path: Path) -> None:
    path, _ = _store(tmp_path)
    assert "no retention rules" in ok("retention", path, "a")
    out = json.loads(ok("retention", path, "a", "--max-count", "2", "--max-age", "30d", "--json"))
    assert out == {
        "stream": "a",
        "tombstoned": False,
        "truncate_before": 0,
        "max_count": 2,
        "max_age": 30 * 86400,
    }
    fails("retention", path, "a", "--max-count", "0", message="max_count must be between 1")
    fails("retention", path, "a", "--max-age", "forever", message="--max-age wants a duration",
          code=2)
    fails("retention", path, "a", "--clear", "--max-count", "3", message="--clear takes", code=2)
    verified = json.loads(ok("verify", path, "--json"))
    assert verified["erasure_pending"] == 2 and verified["removed"] == 0
    assert "still holds bytes of 2 erased events" in ok("verify", path)
    dry = json.loads(ok("scavenge", path, "--dry-run", "--json"))
    assert (dry["removed"], dry["dry_run"]) == (2, True)
    done = json.loads(ok("scavenge", path, "--json"))
    assert (done["removed"], done["scrubbed"]) == (2, 2)
    verified = json.loads(ok("verify", path, "--json"))
    assert verified["erasure_pending"] == 0 and verified["removed"] == 2
    with EventStore.open(path) as store:
        assert [e.version for e in store.read_stream("a")] == [2, 3]
        assert store.removed_seqs == [(1, 2)]
    assert "no retention rules" in ok("retention", path, "a", "--clear")


def test_delete_tombstone_and_redact(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    fails("delete", path, "a", "--expected-version", "1", message="expected version 1")
    ok("delete", path, "a", "--expected-version", "3")
    ok("delete", path, "b", "--tombstone")
    fails("delete", path, "b", message="is deleted")
    assert "is tombstoned" in ok("retention", path, "b")
    fails("redact", path, ids[0], message="no event with id")  # deleted with its stream
    fails("redact", path, "nonsense", message="EVENT_ID", code=2)
    with EventStore.open(path) as store:
        store.append("c", [NewEvent("T", {"secret": 1})])
        target = str(next(store.read_stream("c")).id)
    assert f"redacted {target}" in ok("redact", path, target)
    assert "redacted already" in ok("redact", path, target)
    with EventStore.open(path) as store:
        event = store.get(target)
        assert event is not None and event.redacted and event.data is None
        assert list(store.read_all(types=["T"])) == [event]


def test_served_store_scavenges_on_a_schedule(tmp_path: Path) -> None:
    import time

    from kurrentdbclient import KurrentDBClient, StreamState
    from kurrentdbclient import NewEvent as WireEvent

    from .server_fixtures import free_port, serve_process

    store = tmp_path / "sched"
    port = free_port()
    with serve_process(
        store, "--listen", f"127.0.0.1:{port}", "--insecure", "--scavenge-every", "1s"
    ):
        client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
        client.append_to_stream(
            "gone",
            events=[WireEvent(type="T", data=b'{"x": 1}') for _ in range(3)],
            current_version=StreamState.NO_STREAM,
        )
        client.delete_stream("gone", current_version=2)
        deadline = time.monotonic() + 30
        while True:  # `verify` runs through the server's operator socket
            found = json.loads(ok("verify", str(store), "--json").splitlines()[0])
            if found["removed"] == 3:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        assert found["erasure_pending"] == 0
        client.close()


def test_export_and_import_carry_removed_and_redacted_events(tmp_path: Path) -> None:
    path, _ = _store(tmp_path)
    with EventStore.open(path) as store:
        store.set_retention("a", max_count=2)
        store.redact(next(store.read_stream("b")).id)
        store.append("c", [NewEvent("T", {"n": 9})])
        store.delete_stream("c")
        store.scavenge()  # a's first two and c's event: husks
        store.append("d", [NewEvent("T", {"n": 1})])
        store.set_retention("d", max_count=1)
        store.append("d", [NewEvent("T", {"n": 2})])  # d's first: hidden, not scavenged
        seen = list(store.read_all())
        last_seq, removed = store.last_seq, store.removed_seqs
    out = str(tmp_path / "x.jsonl")
    ok("export", path, out)
    lines = [json.loads(line) for line in Path(out).read_text().splitlines()]
    assert lines[0]["format"] == 2
    assert [x["seq"] for x in lines[1:]] == list(range(1, last_seq + 1))
    assert sum(1 for x in lines if x.get("removed")) == 4
    assert sum(1 for x in lines if x.get("redacted")) == 1
    dst = str(tmp_path / "d")
    assert f"seq now {last_seq}" in ok("import", dst, out)
    assert "nothing to import" in ok("import", dst, out)  # a rerun finds it all there
    ok("verify", dst)
    with EventStore.open(dst) as store:
        assert list(store.read_all()) == seen
        assert [e.redacted for e in store.read_all()] == [e.redacted for e in seen]
        assert removed == [(1, 2), (8, 8)]
        assert store.removed_seqs == [*removed, (10, 10)]  # the hidden one: removed
        assert store.last_seq == last_seq


def test_a_format_1_export_still_imports(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    out = tmp_path / "old.jsonl"
    ok("export", path, str(out))
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    header["format"] = 1
    out.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    ok("import", str(tmp_path / "d"), str(out))
    with EventStore.open(str(tmp_path / "d")) as store:
        assert [str(e.id) for e in store.read_all()] == ids
