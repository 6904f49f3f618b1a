"""Aggregates, repositories, snapshots and retries on concurrent edits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.aggregates import (
    Aggregate,
    AggregateNotFound,
    Repository,
    UnknownEventType,
    applies,
    retry_on_conflict,
    with_retries,
)
from eventstore.errors import EventStoreError, InvalidArgument, WrongExpectedVersion


class Refused(Exception):
    pass


class Account(Aggregate):
    stream_prefix = "account-"
    applied: ClassVar[int] = 0  # how many events were applied, all accounts together

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.history: list[int] = []
        self.frozen = False

    @classmethod
    def open(cls, id: str, opening: int = 0) -> Self:
        account = cls(id)
        account.record("Opened", {"amount": opening})
        return account

    def deposit(self, amount: int) -> None:
        if self.frozen:
            raise Refused("frozen")
        if amount <= 0:
            raise Refused("deposit must be positive")
        self.record("Deposited", {"amount": amount}, metadata={"why": "test"})

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise Refused(f"balance {self.balance} < {amount}")
        self.record("account.withdrawn", {"amount": amount})

    def freeze(self) -> None:
        self.record("Frozen")

    def _count(self) -> None:
        Account.applied += 1

    def apply_Opened(self, data: Any) -> None:
        self._count()
        self.balance = data["amount"]

    def apply_Deposited(self, data: Any) -> None:
        self._count()
        self.balance += data["amount"]
        self.history.append(data["amount"])

    @applies("account.withdrawn")
    def _withdrawn(self, data: Any) -> None:
        self._count()
        self.balance -= data["amount"]
        self.history.append(-data["amount"])

    def apply_Frozen(self, data: Any) -> None:
        self._count()
        self.frozen = True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore.open(tmp_path / "store")
    yield s
    s.close()


def state(a: Account) -> tuple[Any, ...]:
    return (a.id, a.version, a.balance, a.history, a.frozen)


def test_commands_record_apply_and_save(store: EventStore) -> None:
    repo = Repository(store, Account)
    acc = Account.open("a1", 10)
    acc.deposit(5)
    acc.withdraw(3)
    assert acc.version == -1 and acc.balance == 12
    assert [e.type for e in acc.pending_events] == ["Opened", "Deposited", "account.withdrawn"]
    result = repo.save(acc)
    assert result is not None and result.last_version == 2
    assert acc.version == 2 and acc.pending_events == []
    assert repo.save(acc) is None  # nothing pending
    assert [e.type for e in store.read_stream("account-a1")] == [
        "Opened",
        "Deposited",
        "account.withdrawn",
    ]
    assert list(store.read_stream("account-a1"))[1].metadata == {"why": "test"}
    loaded = repo.get("a1")
    assert state(loaded) == state(acc)
    assert repo.exists("a1") and not repo.exists("a2")
    with pytest.raises(Refused, match="balance 12 < 13"):
        loaded.withdraw(13)
    assert loaded.pending_events == []  # a refused command records nothing
    assert "a1" in repr(loaded) and "v2" in repr(loaded)


def test_save_metadata_fills_in_missing_metadata(store: EventStore) -> None:
    repo = Repository(store, Account)
    acc = Account.open("a")
    acc.deposit(1)
    repo.save(acc, metadata={"user": "u1"})
    assert [e.metadata for e in store.read_stream("account-a")] == [{"user": "u1"}, {"why": "test"}]


def test_missing_aggregate_and_bad_arguments(store: EventStore) -> None:
    repo = Repository(store, Account)
    with pytest.raises(AggregateNotFound) as info:
        repo.get("nobody")
    assert isinstance(info.value, LookupError) and isinstance(info.value, EventStoreError)
    assert "Account 'nobody' not found" in str(info.value)
    with pytest.raises(InvalidArgument):
        Repository(store, dict)  # type: ignore[type-var]
    with pytest.raises(InvalidArgument):
        Repository(store, Account, snapshot_every=0)
    with pytest.raises(InvalidArgument):
        repo.save(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        retry_on_conflict(lambda: 1, attempts=0)


def test_unknown_event_types(store: EventStore) -> None:
    store.append("account-x", [NewEvent("Opened", {"amount": 1}), NewEvent("Renamed", "y")])
    with pytest.raises(UnknownEventType, match="apply_Renamed"):
        Repository(store, Account).get("x")

    class Lenient(Account):
        ignore_unknown_events = True

    assert Repository(store, Lenient).get("x").balance == 1


def test_default_stream_name_and_inherited_appliers(store: EventStore) -> None:
    class Counter(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.n = 0

        def apply_Inc(self, data: Any) -> None:
            self.n += data

    class Doubler(Counter):
        @applies("Inc")
        def _inc(self, data: Any) -> None:
            self.n += 2 * data

    c = Counter("c")
    c.record("Inc", 1)
    Repository(store, Counter).save(c)
    assert store.stream_version("Counter-c") == 0
    d = Doubler("d")
    d.record("Inc", 1)
    assert d.n == 2


def test_concurrent_edits_conflict(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.save(Account.open("a", 100))
    one, two = repo.get("a"), repo.get("a")
    one.deposit(1)
    two.withdraw(50)
    repo.save(one)
    with pytest.raises(WrongExpectedVersion):
        repo.save(two)
    assert two.version == 0 and len(two.pending_events) == 1  # unchanged: retry-able
    assert repo.get("a").balance == 101
    with pytest.raises(WrongExpectedVersion):  # creating what exists
        repo.save(Account.open("a"))


def test_update_reruns_the_command_on_a_conflict(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.save(Account.open("a", 100))
    runs: list[int] = []

    def withdraw_60(acc: Account) -> int:
        runs.append(acc.balance)
        if len(runs) == 1:  # someone else gets in first
            rival = repo.get("a")
            rival.withdraw(30)
            repo.save(rival)
        acc.withdraw(60)
        return acc.balance

    assert repo.update("a", withdraw_60) == 10
    assert runs == [100, 70]  # re-run on the reloaded state
    # The rules still apply on the rerun: now 10 is left, refused without retrying.
    runs.clear()
    with pytest.raises(Refused):
        repo.update("a", withdraw_60)
    assert runs == [10]
    # Missing: an error, or created with create=.
    with pytest.raises(AggregateNotFound):
        repo.update("b", lambda acc: acc.deposit(1))
    repo.update("b", lambda acc: acc.deposit(1), create=lambda id: Account.open(id))
    assert repo.get("b").balance == 1


def test_retries_are_bounded(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.save(Account.open("a"))
    calls = []

    def always_loses(acc: Account) -> None:
        calls.append(1)
        rival = repo.get("a")
        rival.deposit(1)
        repo.save(rival)
        acc.deposit(1)

    with pytest.raises(WrongExpectedVersion):
        repo.update("a", always_loses, attempts=3)
    assert len(calls) == 3

    @with_retries(attempts=4, backoff=0.0001)
    def handler(amount: int) -> int:
        acc = repo.get("a")
        calls.append(2)
        if calls.count(2) < 3:
            rival = repo.get("a")
            rival.deposit(1)
            repo.save(rival)
        acc.deposit(amount)
        repo.save(acc)
        return acc.balance

    assert handler(10) == repo.get("a").balance
    assert calls.count(2) == 3
    assert handler.__name__ == "handler"


def test_many_threads_updating_one_aggregate_lose_nothing(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=7)
    repo.save(Account.open("hot"))
    threads, each = 8, 25

    def work() -> None:
        for _ in range(each):
            repo.update("hot", lambda acc: acc.deposit(1), attempts=1000)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    acc = repo.get("hot")
    assert acc.balance == threads * each == acc.version
    assert state(acc) == state(Repository(store, Account).get("hot"))


def test_snapshots_are_taken_every_n_and_used(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=10)
    acc = Account.open("a")
    repo.save(acc)
    for n in range(1, 26):
        acc.deposit(n)
        repo.save(acc)
    snap = store.load_snapshot("account-a")
    assert snap is not None and snap.version == 19  # the 20th event
    Account.applied = 0
    loaded = repo.get("a")
    assert Account.applied == 25 - 19  # only the events after the snapshot
    Account.applied = 0
    plain = Repository(store, Account).get("a")  # no snapshots: every event
    assert Account.applied == 26
    assert state(loaded) == state(plain)
    # A big save crossing several multiples takes one snapshot, at its end.
    for _n in range(15):
        acc.deposit(1)
    repo.save(acc)
    assert store.load_snapshot("account-a").version == 40  # type: ignore[union-attr]


def test_snapshot_schema_change_replays_from_scratch(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=2)
    acc = Account.open("a")
    acc.deposit(3)
    acc.deposit(4)
    repo.save(acc)

    class AccountV2(Account):
        snapshot_schema = 2

    Account.applied = 0
    again = Repository(store, AccountV2, snapshot_every=2).get("a")
    assert Account.applied == 3 and again.balance == 7


def test_failing_snapshot_does_not_fail_the_save(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd(Account):
        def snapshot_state(self) -> Any:
            return {"bad": {1, 2}}  # not serialisable

    repo = Repository(store, Odd, snapshot_every=1)
    acc = Odd.open("a", 5)
    with caplog.at_level(logging.ERROR):
        assert repo.save(acc) is not None
    assert "could not snapshot" in caplog.text
    assert store.load_snapshot("account-a") is None
    assert repo.get("a").balance == 5


commands = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(-2, 50)),
        st.tuples(st.just("withdraw"), st.integers(0, 60)),
        st.tuples(st.just("freeze"), st.just(0)),
        st.tuples(st.just("save"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60)
@given(cmds=commands, every=st.integers(1, 6))
def test_loading_with_snapshots_equals_replaying_everything(
    tmp_path_factory: pytest.TempPathFactory, cmds: list[tuple[str, int]], every: int
) -> None:
    with EventStore.open(tmp_path_factory.mktemp("s")) as store:
        snapped = Repository(store, Account, snapshot_every=every)
        plain = Repository(store, Account)
        acc = Account.open("a", 10)
        snapped.save(acc)
        for name, arg in cmds:
            try:
                if name == "save":
                    snapped.save(acc)
                    assert state(snapped.get("a")) == state(plain.get("a")) == state(acc)
                elif name == "freeze":
                    acc.freeze()
                else:
                    getattr(acc, name)(arg)
            except Refused:
                pass
        snapped.save(acc)
        assert state(snapped.get("a")) == state(plain.get("a")) == state(acc)
        snap = store.load_snapshot("account-a")
        n = acc.version + 1
        if n >= every:
            assert snap is not None and snap.version >= n - every


def test_update_backs_off_with_growing_jittered_waits(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.save(Account.open("a"))
    waits: list[float] = []

    def loses_five_times(acc: Account) -> None:
        if len(waits) < 5:
            rival = repo.get("a")
            rival.deposit(1)
            repo.save(rival)
        acc.deposit(10)

    repo.update("a", loses_five_times, backoff=0.01, max_backoff=0.05, sleep=waits.append)
    assert repo.get("a").balance == 5 + 10
    assert len(waits) == 5  # one wait before each of the five retries
    caps = [0.01, 0.02, 0.04, 0.05, 0.05]
    assert all(0 <= w <= cap for w, cap in zip(waits, caps, strict=True)), waits
    assert len(set(waits)) == 5  # jittered: random, not a fixed schedule

    # The defaults wait too (the real sleep), growing from 5 ms.
    waits.clear()
    repo.update("a", loses_five_times, sleep=waits.append)
    assert len(waits) == 5 and all(0 <= w <= 0.005 * 2**n for n, w in enumerate(waits))
    assert sum(waits) > 0

    waits.clear()
    with pytest.raises(WrongExpectedVersion):
        repo.update("a", loses_five_times, attempts=3, sleep=waits.append)
    assert len(waits) == 2  # no wait after the last attempt

    with pytest.raises(InvalidArgument):
        repo.update("a", lambda acc: acc.deposit(1), backoff=-1.0)
    with pytest.raises(InvalidArgument):
        retry_on_conflict(lambda: 1, max_backoff=float("nan"))


def test_update_defaults_let_eight_threads_on_one_durable_aggregate_all_succeed(
    tmp_path: Path,
) -> None:
    threads, each = 8, 12
    with EventStore.open(tmp_path / "durable", sync=True) as durable:
        repo = Repository(durable, Account)
        repo.save(Account.open("hot"))
        failures: list[BaseException] = []
        start = threading.Barrier(threads)

        def work() -> None:
            start.wait()
            for _ in range(each):
                try:
                    repo.update("hot", lambda acc: acc.deposit(1))
                except BaseException as exc:  # counted: every command must succeed
                    failures.append(exc)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert failures == []
        acc = repo.get("hot")
        assert acc.balance == threads * each == acc.version
