"""Size-tiered merging (issue 19): ``merge_archives(fanout=F)`` merges only
runs of at least F adjacent files of one size tier, so on a schedule each
event is rewritten at most once per tier and a large file is left alone
until it has F - 1 like it, where merging every run rewrote it each time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.errors import InvalidArgument


def _tier(events: int, fanout: int) -> int:
    k = 0
    while events >= fanout:
        events //= fanout
        k += 1
    return k


def _append_and_compact(store: EventStore, n: int, start: int) -> None:
    for i in range(start, start + n):
        store.append(f"s{i % 3}", [NewEvent("T", {"i": i})])
    last = next(iter(store.read_all(backwards=True, limit=1)))
    store.compact(before=last.id)  # all but the newest event


def test_a_large_file_waits_for_its_like(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        _append_and_compact(store, 41, 0)  # one file of 40 events: tier 2 at fanout 4
        big = store.archive_files()[0].path
        rewritten = 0
        for round_ in range(12):  # files of 5 events: tier 1
            _append_and_compact(store, 5, 41 + 5 * round_)
            rewritten += store.merge_archives(fanout=4).events
            if round_ < 11:
                # 4 small files fold into one of 20 (tier 2); the 40-event
                # file is not rewritten until 3 of those sit beside it.
                assert store.archive_files()[0].path == big
        sizes = [f.events for f in store.archive_files()]
        assert sizes == [100]  # [40, 20, 20, 20] merged at the 12th round
        assert rewritten == 60 + 100
        assert [e.data["i"] for e in store.read_all()] == list(range(41 + 60))
    # The same schedule merging every run each time rewrites the 40 at every round.
    with EventStore.open(str(tmp_path / "plain")) as store:
        _append_and_compact(store, 41, 0)
        plain = 0
        for round_ in range(12):
            _append_and_compact(store, 5, 41 + 5 * round_)
            plain += store.merge_archives().events
        assert plain == sum(40 + 5 * (r + 1) for r in range(12))  # 870


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(2, 12), min_size=1, max_size=14),
    st.integers(2, 4),
    st.integers(20, 200),
)
def test_each_event_is_rewritten_at_most_once_per_tier(
    tmp_path: Path, batches: list[int], fanout: int, max_events: int
) -> None:
    path = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    with EventStore.open(str(path)) as store:
        appended = 0
        rewrites: dict[int, int] = {}  # event number -> times rewritten
        for n in batches:
            _append_and_compact(store, n, appended)
            appended += n
            before = {f.path for f in store.archive_files()}
            store.merge_archives(max_events=max_events, fanout=fanout)
            for f in store.archive_files():
                if f.path not in before:
                    for seq in range(f.first_seq, f.last_seq + 1):
                        rewrites[seq] = rewrites.get(seq, 0) + 1
            files = store.archive_files()
            assert all(f.events <= max(max_events, max(batches) + 1) for f in files)
            # No run of fanout adjacent files of one tier is left unmerged
            # unless together they exceed max_events.
            tiers = [_tier(f.events, fanout) for f in files]
            for i in range(len(files) - fanout + 1):
                if len(set(tiers[i : i + fanout])) == 1:
                    assert sum(f.events for f in files[i : i + fanout]) > max_events
        top = _tier(max_events, fanout) + 1
        assert all(times <= top for times in rewrites.values())
        assert [e.data["i"] for e in store.read_all()] == list(range(appended))


def test_fanout_must_be_an_int_of_at_least_two(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        _append_and_compact(store, 5, 0)
        files = store.archive_files()
        for bad in (1, 0, -3, 2.0, "8", True):
            with pytest.raises(InvalidArgument):
                store.merge_archives(fanout=bad)  # type: ignore[arg-type]
        assert store.archive_files() == files


def test_the_servers_schedule_merges_by_tiers(tmp_path: Path) -> None:
    """`eventstore serve --compact-every`: each scheduled compaction used to
    merge every run, rewriting the large file with every small one."""
    from datetime import timedelta

    from eventstore.cli.serve import _scheduled_compaction

    with EventStore.open(str(tmp_path / "s")) as store:
        _append_and_compact(store, 101, 0)  # one file of 100 events
        big = store.archive_files()[0].path
        for round_ in range(3):
            store.append("t", [NewEvent("T", {"round": round_})])
            time.sleep(0.005)  # older than now by a millisecond at least
            _scheduled_compaction(store, timedelta(0))
            assert store.archive_files()[0].path == big
        files = store.archive_files()
        assert files[0].events == 100 and len(files) > 1  # the small ones wait for their like
        assert sum(f.events for f in files) == 104
