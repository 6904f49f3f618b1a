"""Monotonic ULIDs: strictly increasing within a millisecond, across clock
steps backwards, across threads, and above a floor."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from eventstore._leveldb import plyvel
from eventstore.errors import IdsExhausted, InvalidULID
from eventstore.ids import (
    MAX_ULID,
    MonotonicULIDs,
    UlidRange,
    to_ulid_bytes,
    ulid_from_bytes,
    ulid_from_int,
)


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_many_ids_in_one_millisecond_shuffled_into_leveldb_come_back_in_creation_order(
    tmp_path: object,
) -> None:
    # The seed post's test: 100,000 ids made as fast as possible (so many share
    # a millisecond), inserted shuffled, iterated back in creation order.
    gen = MonotonicULIDs()
    created = [(n, gen.next_int()) for n in range(100_000)]
    ms = [value >> 80 for _, value in created]
    assert len(set(ms)) < len(ms)  # many shared a millisecond
    shuffled = created[:]
    random.Random(1000000).shuffle(shuffled)
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    with db.write_batch() as batch:
        for number, value in shuffled:
            batch.put(value.to_bytes(16, "big"), number.to_bytes(4, "big"))
    numbers = [int.from_bytes(v, "big") for _, v in db]
    db.close()
    assert numbers == list(range(100_000))


def test_ids_increase_while_the_clock_stands_still() -> None:
    clock = FakeClock(1_700_000_000_000)
    gen = MonotonicULIDs(clock=clock)
    values = [gen.next_int() for _ in range(1000)]
    assert values == sorted(set(values))
    assert all(v >> 80 == clock.ms for v in values)
    assert all(b - a == 1 for a, b in itertools.pairwise(values))


def test_ids_stay_above_the_last_when_the_clock_steps_back() -> None:
    clock = FakeClock(1_700_000_000_000)
    gen = MonotonicULIDs(clock=clock)
    before = gen.next_int()
    clock.ms -= 60_000
    after = [gen.next_int() for _ in range(10)]
    assert after[0] > before
    assert after == sorted(set(after))
    clock.ms += 120_000  # the clock catches up: back to its own time
    assert gen.next_int() >> 80 == clock.ms


def test_a_new_millisecond_starts_from_fresh_random_bits() -> None:
    clock = FakeClock(1_700_000_000_000)
    gen = MonotonicULIDs(clock=clock)
    lows = set()
    for _ in range(50):
        clock.ms += 1
        lows.add(gen.next_int() & ((1 << 80) - 1))
    assert len(lows) == 50  # 80 secure random bits: collisions are impossible in practice


def test_carry_out_of_the_random_bits_moves_into_the_time() -> None:
    clock = FakeClock(5)
    gen = MonotonicULIDs(floor=(5 << 80) | ((1 << 80) - 1), clock=clock)
    value = gen.next_int()
    assert value == 6 << 80
    assert gen.next_int() == (6 << 80) + 1


def test_generator_resumes_above_its_floor() -> None:
    clock = FakeClock(1000)
    floor = (2000 << 80) | 12345
    gen = MonotonicULIDs(floor=floor, clock=clock)
    assert gen.next_int() == floor + 1
    gen.raise_floor(floor + 100)
    assert gen.next_int() == floor + 101
    gen.raise_floor(5)  # never lowers
    assert gen.next_int() == floor + 102


def test_exhausted_id_space_is_an_error_not_a_wrap() -> None:
    gen = MonotonicULIDs(floor=MAX_ULID, clock=FakeClock(1))
    with pytest.raises(IdsExhausted, match="ULID space ends"):  # also an OverflowError
        gen.next_int()
    assert gen.last == MAX_ULID


def test_ids_from_many_threads_are_unique_and_increasing_per_thread() -> None:
    gen = MonotonicULIDs()
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        for _ in range(5000):
            out.append(gen.next_int())
        out.extend(gen.next_ints(500))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [v for out in results for v in out]
    assert len(set(everything)) == len(everything) == 8 * 5500
    for out in results:
        assert out == sorted(out)


def test_making_an_id_is_far_cheaper_than_ulid_ULID() -> None:
    # Not a timed assertion of speed (bench.py measures that); only that the
    # generator does not build ULID objects: it returns plain ints.
    gen = MonotonicULIDs()
    assert type(gen.next_int()) is int
    assert all(type(v) is int for v in gen.next_ints(3))


@given(st.binary(min_size=16, max_size=16))
def test_ulid_conversions_round_trip(raw: bytes) -> None:
    u = ulid_from_bytes(raw)
    assert isinstance(u, ULID)
    assert u == ULID(raw)
    assert str(u) == str(ULID(raw))
    assert to_ulid_bytes(u) == raw
    assert to_ulid_bytes(str(u)) == raw
    assert to_ulid_bytes(raw) == raw
    assert ulid_from_int(int.from_bytes(raw, "big")) == u


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FA!",  # not Crockford base32
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # more than 128 bits
        b"short",
        12,
        None,
    ],
)
def test_malformed_ulids_raise_a_value_error(bad: object) -> None:
    with pytest.raises(InvalidULID) as info:
        to_ulid_bytes(bad)
    assert isinstance(info.value, ValueError)


def test_timestamp_of_a_fresh_id_is_now() -> None:
    gen = MonotonicULIDs()
    ms = gen.next_int() >> 80
    assert abs(ms - time.time() * 1000) < 5000


def test_a_batch_of_ids_is_consecutive_and_above_everything_before() -> None:
    clock = FakeClock(1000)
    gen = MonotonicULIDs(clock=clock)
    single = gen.next_int()
    batch = list(gen.next_ints(100))
    assert batch == list(range(single + 1, single + 101))  # same millisecond: counted up
    clock.ms = 999  # the clock steps back
    again = list(gen.next_ints(3))
    assert again[0] == batch[-1] + 1
    clock.ms = 5000
    later = list(gen.next_ints(2))
    assert later[0] >> 80 == 5000 and later[1] == later[0] + 1


def test_a_batch_that_would_pass_the_last_ulid_raises_and_hands_out_nothing() -> None:
    gen = MonotonicULIDs(floor=MAX_ULID - 3, clock=FakeClock(1))
    with pytest.raises(IdsExhausted):
        gen.next_ints(5)
    assert list(gen.next_ints(3)) == [MAX_ULID - 2, MAX_ULID - 1, MAX_ULID]


def test_ulid_range_is_a_read_only_list_of_ulids() -> None:
    ints = range(1 << 90, (1 << 90) + 5)
    ids = UlidRange(ints)
    as_list = [ULID.from_int(i) for i in ints]
    assert len(ids) == 5 and list(ids) == as_list and list(reversed(ids)) == as_list[::-1]
    assert ids[0] == as_list[0] and ids[-1] == as_list[-1] and ids[1:3] == as_list[1:3]
    assert ids == as_list and as_list == ids and ids == tuple(as_list) and ids == UlidRange(ints)
    assert ids != as_list[:4] and ids != UlidRange(ints[1:]) and ids != "x"
    assert as_list[2] in ids and ULID.from_int(1) not in ids and "x" not in ids
    assert ids.index(as_list[3]) == 3 and ids.count(as_list[0]) == 1
    assert ids + [ULID.from_int(7)] == [*as_list, ULID.from_int(7)]  # noqa: RUF005 (the + itself)
    assert repr(ids) == repr(as_list)
    with pytest.raises(IndexError):
        ids[5]
    with pytest.raises(TypeError):
        hash(ids)
    assert all(type(u) is ULID for u in ids) and str(ids[0]) == str(as_list[0])
