"""Crypto-shredding (issue 17): sealed events, forget_subject, backups included."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent
from eventstore.errors import CorruptFile, EventStoreError
from eventstore.shredding import KEY_FILE, ShreddedEvent, Shredder

from .test_scavenge import found, store_bytes


def test_seal_open_forget_and_backups(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    secret = os.urandom(20)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    with EventStore.open(path) as store:
        shredder = Shredder(store)
        store.append(
            "customer-7",
            [
                shredder.seal(
                    "user-7", NewEvent("Registered", {"pw": secret, "at": when}, {"ip": 1})
                ),
                shredder.seal("user-8", NewEvent("Registered", {"pw": b"other"})),
                NewEvent("Plain", {"n": 1}),
            ],
        )
        stored = list(store.read_stream("customer-7"))
        assert found([secret], store_bytes(path)) == set()  # never in the clear on disk
        opened = [shredder.open(e) for e in stored]
        assert opened[0].data == {"pw": secret, "at": when} and opened[0].metadata == {"ip": 1}
        assert opened[2] == stored[2]
        store.backup(str(tmp_path / "before"))
        assert shredder.forget_subject("user-7") is True
        assert shredder.forget_subject("user-7") is False
        gone = shredder.open(stored[0])
        assert isinstance(gone, ShreddedEvent) and gone.shredded
        assert (gone.data, gone.metadata, gone.type, gone.seq) == (None, None, "Registered", 1)
        assert shredder.open(stored[1]).data == {"pw": b"other"}
        assert shredder.subjects == ["user-8"]
    with EventStore.open(path) as store:  # the key stays forgotten across reopen
        again = Shredder(store)
        assert again.open(next(store.read_stream("customer-7"))).shredded  # type: ignore[attr-defined]
    # A backup made before the forgetting holds the sealed events, never the keys.
    assert not os.path.exists(tmp_path / "before" / KEY_FILE)
    with EventStore.open(str(tmp_path / "before")) as old:
        events = [Shredder(old).open(e) for e in old.read_stream("customer-7")]
        assert [type(e).__name__ for e in events] == ["ShreddedEvent", "ShreddedEvent", "Event"]


def test_bad_input_and_tampering(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        shredder = Shredder(store)
        for bad, builtin in (("", ValueError), ("a\x00b", ValueError), (7, TypeError)):
            with pytest.raises(EventStoreError) as info:
                shredder.seal(bad, NewEvent("T", 1))  # type: ignore[arg-type]
            assert isinstance(info.value, builtin)
        with pytest.raises(TypeError):
            shredder.seal("s", NewEvent("T", {1, 2}))
        assert shredder.subjects == []
        store.append(
            "x", [shredder.seal("a", NewEvent("T", 1)), shredder.seal("b", NewEvent("T", 2))]
        )
        first, _second = store.read_stream("x")
        moved = first._replace(data={**first.data, "$shred": "b"})  # another subject's envelope
        with pytest.raises(CorruptFile):
            shredder.open(moved)
    with open(tmp_path / "s" / KEY_FILE, "wb") as f:
        f.write(b"\xc1garbage")
    with EventStore.open(str(tmp_path / "s")) as store, pytest.raises(CorruptFile):
        Shredder(store)
