"""Crypto-shredding inside the store (issue 17): a store opened with
``shredding=True`` seals through ``store.seal``, and every read path (streams,
indexes, get, read_all, subscriptions, the gRPC server) returns sealed events
decrypted, then shredded once ``forget_subject`` deleted the key."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from kurrentdbclient import KurrentDBClient

from eventstore import EventStore, NewEvent
from eventstore.errors import InvalidArgument
from eventstore.events import Event
from eventstore.sealing import KEY_FILE, KeyStore, ShreddedEvent, is_sealed
from eventstore.server import serve
from eventstore.shredding import Shredder


def _reads(store: EventStore, ids: list[object]) -> dict[str, list[Event]]:
    sub = store.subscribe()
    got = [sub.get(timeout=5) for _ in range(len(ids))]
    sub.close()
    return {
        "read_stream": list(store.read_stream("c")),
        "read_index": list(store.read_index("c", "kind", "person")),
        "get": [store.get(i) for i in ids],  # type: ignore[misc]
        "read_all": list(store.read_all()),
        "subscribe": got,  # type: ignore[dict-item]
    }


def test_every_read_opens_sealed_events_then_shreds_them(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    secret = b"SECRET-" + os.urandom(8)
    with EventStore.open(path, shredding=True) as store:
        person = {"kind": "person"}
        r = store.append(
            "c",
            [
                store.seal("u7", NewEvent("Registered", {"name": secret}, {"ip": "1"}, person)),
                NewEvent("Plain", {"n": 1}, None, person),
                store.seal("u8", NewEvent("Registered", {"name": b"other"}, None, person)),
            ],
        )
        ids = list(r.ids)
        assert store.subjects == ["u7", "u8"]
        for how, events in _reads(store, ids).items():
            assert [e.data for e in events] == [{"name": secret}, {"n": 1}, {"name": b"other"}], how
            assert events[0].metadata == {"ip": "1"}, how
        server = serve(store, "127.0.0.1:0")
        client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
        try:
            import msgpack

            got = client.get_stream("c")
            assert msgpack.unpackb(got[0].data) == {"name": secret}
            assert store.forget_subject("u7") is True
            assert store.forget_subject("u7") is False
            got = client.get_stream("c")
            assert json.loads(got[0].data) is None and secret not in got[0].metadata
            assert msgpack.unpackb(got[2].data) == {"name": b"other"}
        finally:
            client.close()
            server.stop()
        for how, events in _reads(store, ids).items():
            first = events[0]
            assert isinstance(first, ShreddedEvent) and first.shredded, how
            assert (first.data, first.metadata, first.type) == (None, None, "Registered"), how
            assert first.indexes == {"kind": "person"}, how
            assert events[1].data == {"n": 1} and events[2].data == {"name": b"other"}, how
    # Opened without shredding: the envelopes as stored, nothing decrypted.
    with EventStore.open(path) as store:
        raw = list(store.read_stream("c"))
        assert is_sealed(raw[0]) and is_sealed(raw[2]) and raw[1].data == {"n": 1}
        with pytest.raises(InvalidArgument, match="shredding=True"):
            store.seal("u9", NewEvent("T", {}))
        with pytest.raises(InvalidArgument, match="shredding=True"):
            store.forget_subject("u8")
    # Reopened with shredding: the forgotten subject stays forgotten.
    with EventStore.open(path, shredding=True) as store:
        assert [type(e).__name__ for e in store.read_stream("c")] == [
            "ShreddedEvent",
            "Event",
            "Event",
        ]


def test_a_backup_needs_its_keys_exported_apart(tmp_path: Path) -> None:
    path, back = str(tmp_path / "s"), str(tmp_path / "b")
    saved = str(tmp_path / "keys")
    with EventStore.open(path, shredding=True) as store:
        store.append("c", [store.seal("u1", NewEvent("T", {"x": 1}))])
        store.backup(back)
        assert KeyStore(path).export_keys(saved) == 1
        assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
        with pytest.raises(InvalidArgument, match="exists"):
            KeyStore(path).export_keys(saved)
        store.forget_subject("u1")
    assert not os.path.exists(os.path.join(back, KEY_FILE))  # never copied by backup
    with EventStore.open(back, shredding=True) as b:
        assert next(b.read_stream("c")).shredded  # type: ignore[attr-defined]
    shutil.copy(saved, os.path.join(back, KEY_FILE))  # restored with the keys kept apart
    with EventStore.open(back, shredding=True) as b:
        assert next(b.read_stream("c")).data == {"x": 1}


def test_a_shredder_of_a_shredding_store_shares_its_keys(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s"), shredding=True) as store:
        shredder = Shredder(store)
        store.append("c", [shredder.seal("u1", NewEvent("T", {"x": 1}))])
        assert next(store.read_stream("c")).data == {"x": 1}
        store.forget_subject("u1")
        assert shredder.subjects == []
        event = next(store.read_stream("c"))
        assert shredder.open(event).shredded  # type: ignore[attr-defined]
        assert json.dumps(event.data) == "null"


def test_cli_keys_export_and_forget(tmp_path: Path) -> None:
    from .test_cli import fails, ok

    path = str(tmp_path / "s")
    with EventStore.open(path, shredding=True) as store:
        store.append("c", [store.seal("u1", NewEvent("T", {"x": 1}))])
    saved = str(tmp_path / "keys")
    assert "exported 1 subject keys" in ok("keys", "export", path, saved)
    fails("keys", "export", path, saved, message="exists")
    assert "forgot subject 'u1'" in ok("keys", "forget", path, "u1")
    assert "has no key" in ok("keys", "forget", path, "u1")
    with EventStore.open(path, shredding=True) as store:
        assert next(store.read_stream("c")).shredded  # type: ignore[attr-defined]
    shutil.copy(saved, os.path.join(path, KEY_FILE))
    with EventStore.open(path, shredding=True) as store:
        assert next(store.read_stream("c")).data == {"x": 1}
