"""Compaction on its own: what it refuses to move into the archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent
from eventstore.errors import CorruptFile


def test_a_damaged_hot_table_stops_compaction_and_nothing_moves(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EventStore.open(path) as store:
        for i in range(50):
            store.append(f"s{i % 5}", [NewEvent("T", {"n": i, "pad": "x" * 200})] * 20)
        store._hot.db.compact_range()  # the events into table files, out of the log
        (newest,) = store.read_all(backwards=True, limit=1)
    (table,) = (path / "hot").glob("*.ldb")
    data = bytearray(table.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside an event block, far from the table's index
    table.write_bytes(bytes(data))
    with EventStore.open(path) as store:
        with pytest.raises(CorruptFile, match=r"hot tier.*damaged block"):
            store.compact(before=newest.id)
        assert store.watermark is None
        assert store.archive_files() == []
    assert list((path / "archive").iterdir()) == []
