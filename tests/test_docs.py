"""Documentation that runs: every ```python block of these pages executes, in
order, in one module per page, so the docs cannot rot; and the reference is
true: every public method of EventStore names the errors it raises, and a
call that should raise each one does."""

from __future__ import annotations

import inspect
import itertools
import re
import sys
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventstore import ANY, NO_STREAM, EventStore, NewEvent, aggregates, errors
from eventstore import store as store_module
from eventstore.errors import EventStoreError, StoreLocked

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE_PAGES = [
    "docs/index.md",
    "docs/tutorial.md",
    "docs/operations.md",
    "docs/subscriptions.md",
    "docs/eventsourcing.md",
    "docs/dcb.md",
]
_runs = itertools.count(1)


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_python_block_runs(page: str) -> None:
    text = (ROOT / page).read_text()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M)
    assert blocks, f"{page} has no python blocks"
    # A real module, importable while the page runs: eventsourcing imports the
    # module of every aggregate class it sees, and finds event classes by topic
    # (a new name on each run: it refuses a second class for a known topic).
    module = types.ModuleType(f"docs_page_{Path(page).stem}_{next(_runs)}")
    sys.modules[module.__name__] = module
    try:
        for n, (indent, block) in enumerate(blocks, 1):
            source = re.sub(rf"^{indent}", "", block, flags=re.M)  # a block in a list item
            code = compile(source, f"{page} block {n}", "exec")
            exec(code, module.__dict__)  # our own documentation
    finally:
        del sys.modules[module.__name__]


# -- the reference: every public method says what it raises, and does ------

def _documented_raises(fn: Any) -> list[str]:
    """The errors a docstring names: its Raises: section, or else (a few
    docstrings say it in a sentence) the error classes it names with
    :class:`...` in a docstring that says it raises."""
    doc = inspect.getdoc(fn) or ""
    if "\nRaises:\n" in doc:
        section = doc.split("\nRaises:\n", 1)[1]
        return re.findall(r"^    (\w+):", section, re.M)
    if "aise" not in doc:
        return []
    return [name for name in re.findall(r":class:`~?(?:[\w.]+\.)?(\w+)`", doc) if name in _ERRORS]


# Methods that raise nothing on purpose (closing twice is fine; waiting ends
# on close), and so have no Raises section.
_RAISE_NOTHING = {"close", "wait_for_commit", "wake_waiters", "archive_files"}
_ERRORS = {
    name: obj
    for module in (errors, aggregates, store_module)
    for name, obj in vars(module).items()
    if isinstance(obj, type) and issubclass(obj, EventStoreError)
}


def test_every_public_store_method_documents_its_errors() -> None:
    methods = [
        name for name, fn in inspect.getmembers(EventStore, inspect.isfunction)
        if not name.startswith("_") and name not in _RAISE_NOTHING
    ]
    assert len(methods) > 15
    undocumented = [name for name in methods if not _documented_raises(getattr(EventStore, name))]
    assert not undocumented, f"no Raises: section in {undocumented}"
    for name in methods:
        for error in _documented_raises(getattr(EventStore, name)):
            assert error in _ERRORS, f"EventStore.{name} documents {error}, which is no error class"


@pytest.fixture
def one_event_store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(tmp_path / "s") as s:
        s.append("a", [NewEvent("T", {})])
        yield s


_NOW = datetime.now(UTC)
# (method, documented error, a call that must raise it)
_CASES: list[tuple[str, str, Callable[[EventStore], object]]] = [
    ("append", "WrongExpectedVersion", lambda s: s.append("a", [NewEvent("T")], NO_STREAM)),
    ("append", "InvalidName", lambda s: s.append("a\0", [NewEvent("T")])),
    ("append", "InvalidType", lambda s: s.append("a", ["not an event"])),  # type: ignore[list-item]
    ("append", "InvalidArgument", lambda s: s.append("a", [])),
    ("append", "UnserialisableData", lambda s: s.append("a", [NewEvent("T", {"x": object()})])),
    ("append_many", "InvalidArgument", lambda s: s.append_many([])),
    ("append_many", "InvalidType", lambda s: s.append_many([("a",)])),  # type: ignore[list-item]
    ("append_many", "WrongExpectedVersion",
     lambda s: s.append_many([("b", [NewEvent("T")], ANY), ("a", [NewEvent("T")], 5)])),
    ("read_stream", "InvalidName", lambda s: list(s.read_stream(""))),
    ("read_stream", "InvalidArgument", lambda s: list(s.read_stream("a", from_version=-1))),
    ("read_index", "InvalidName", lambda s: list(s.read_index("a", "type", "x\0"))),
    ("read_index", "InvalidArgument", lambda s: list(s.read_index("a", "type", "T", limit=-1))),
    ("get", "InvalidULID", lambda s: s.get("nope")),
    ("read_all", "InvalidULID", lambda s: list(s.read_all(after="nope"))),
    ("read_all", "InvalidName", lambda s: list(s.read_all(stream_prefix=3))),  # type: ignore[arg-type]
    ("read_all", "InvalidArgument", lambda s: list(s.read_all(from_seq=-1))),
    ("stream_version", "InvalidName", lambda s: s.stream_version("")),
    ("subscribe", "InvalidULID", lambda s: s.subscribe(after="nope")),
    ("subscribe", "InvalidName", lambda s: s.subscribe(name="")),
    ("subscribe", "InvalidArgument", lambda s: s.subscribe(after=None, page_size=0)),
    ("save_snapshot", "InvalidName", lambda s: s.save_snapshot("", 0, {})),
    ("save_snapshot", "InvalidArgument", lambda s: s.save_snapshot("a", 5, {})),
    ("save_snapshot", "UnserialisableData", lambda s: s.save_snapshot("a", 0, object())),
    ("load_snapshot", "InvalidName", lambda s: s.load_snapshot("")),
    ("get_checkpoint", "InvalidName", lambda s: s.get_checkpoint("")),
    ("set_checkpoint", "InvalidName", lambda s: s.set_checkpoint("", 1)),
    ("set_checkpoint", "UnserialisableData", lambda s: s.set_checkpoint("c", object())),
    ("compact", "InvalidArgument", lambda s: s.compact(before=_NOW + timedelta(days=1))),
    ("compact", "InvalidULID", lambda s: s.compact(before=5)),  # type: ignore[arg-type]
    ("merge_archives", "InvalidArgument", lambda s: s.merge_archives(max_events=0)),
    ("backup", "InvalidArgument", lambda s: s.backup(Path(s.path).parent)),
    ("import_events", "InvalidArgument", lambda s: s.import_events(list(s.read_stream("a")))),
    ("verify", "StoreClosed", lambda s: (s.close(), s.verify())),
    ("cleanup", "StoreClosed", lambda s: (s.close(), s.cleanup())),
    ("append", "StoreClosed", lambda s: (s.close(), s.append("a", [NewEvent("T")]))),
    ("read_stream", "StoreClosed", lambda s: (s.close(), list(s.read_stream("a")))),
    ("delete_stream", "WrongExpectedVersion", lambda s: s.delete_stream("a", 3)),
    ("delete_stream", "InvalidArgument", lambda s: s.delete_stream("$$a")),
    ("delete_stream", "InvalidName", lambda s: s.delete_stream("")),
    ("delete_stream", "StreamDeleted", lambda s: (s.tombstone_stream("a"), s.delete_stream("a"))),
    ("tombstone_stream", "WrongExpectedVersion", lambda s: s.tombstone_stream("a", NO_STREAM)),
    ("tombstone_stream", "StreamDeleted",
     lambda s: (s.tombstone_stream("a"), s.tombstone_stream("a"))),
    ("append", "StreamDeleted",
     lambda s: (s.tombstone_stream("a"), s.append("a", [NewEvent("T")]))),
    ("read_stream", "StreamDeleted", lambda s: (s.tombstone_stream("a"), s.read_stream("a"))),
    ("read_index", "StreamDeleted",
     lambda s: (s.tombstone_stream("a"), s.read_index("a", "type", "T"))),
    ("set_retention", "InvalidArgument", lambda s: s.set_retention("a", max_count=-1)),
    ("set_retention", "InvalidType", lambda s: s.set_retention("a", max_count="1")),  # type: ignore[arg-type]
    ("set_retention", "StreamDeleted",
     lambda s: (s.tombstone_stream("a"), s.set_retention("a", max_count=1))),
    ("stream_rules", "InvalidName", lambda s: s.stream_rules("")),
    ("redact", "EventNotFound", lambda s: s.redact("01ARZ3NDEKTSV4RRFFQ69G5FAV")),
    ("redact", "InvalidULID", lambda s: s.redact("nope")),
    ("redact", "InvalidArgument",
     lambda s: (s.set_retention("a", max_count=1), s.redact(next(s.read_stream("$$a")).id))),
    ("scavenge", "StoreClosed", lambda s: (s.close(), s.scavenge())),
]


@pytest.mark.parametrize(
    ("method", "error", "call"), _CASES, ids=[f"{m}-{e}" for m, e, _ in _CASES]
)
def test_a_documented_error_is_the_one_raised(
    one_event_store: EventStore, method: str, error: str, call: Callable[[EventStore], object]
) -> None:
    assert error in _documented_raises(getattr(EventStore, method)), (method, error)
    with pytest.raises(_ERRORS[error]):
        call(one_event_store)


def test_open_documents_and_raises_store_locked(tmp_path: Path) -> None:
    assert "StoreLocked" in _documented_raises(EventStore.open)
    with EventStore.open(tmp_path / "s"), pytest.raises(StoreLocked):
        EventStore.open(tmp_path / "s")


def test_projection_documents_and_raises_its_errors(one_event_store: EventStore) -> None:
    from eventstore import Projection
    from eventstore.errors import UnserialisableData

    for method in (Projection.save, Projection.catch_up, Projection.run):
        assert {"UnserialisableData", "StoreClosed"} <= set(_documented_raises(method))
    projection = Projection(one_event_store, "p", lambda state, e: object(), lambda: None)
    with pytest.raises(UnserialisableData):
        projection.catch_up()
    one_event_store.close()
    with pytest.raises(errors.StoreClosed):
        Projection(one_event_store, "q", lambda state, e: state, lambda: 0).catch_up()


def test_subscription_and_projection_constructors_raise_what_they_document(
    one_event_store: EventStore,
) -> None:
    from eventstore import Projection, Subscription

    s = one_event_store
    cases: list[tuple[type, str, Callable[[], object]]] = [
        (Subscription, "InvalidULID", lambda: Subscription(s, after="nope")),
        (Subscription, "InvalidName", lambda: Subscription(s, name="")),
        (Subscription, "InvalidArgument", lambda: Subscription(s, page_size=0)),
        (Projection, "InvalidName", lambda: Projection(s, "", lambda st, e: st, lambda: 0)),
        (Projection, "InvalidArgument",
         lambda: Projection(s, "p", lambda st, e: st, lambda: 0, save_every=0)),
    ]
    for cls, error, call in cases:
        assert error in _documented_raises(cls), (cls, error)
        with pytest.raises(_ERRORS[error]):
            call()
    s.close()
    with pytest.raises(errors.StoreClosed):
        Subscription(s)


def test_aggregates_raise_what_they_document(one_event_store: EventStore) -> None:
    from eventstore import Aggregate, AggregateNotFound, Repository, UnknownEventType

    class Counter(Aggregate):
        def apply_Added(self, data: Any) -> None:
            pass

    for method, error in [(Aggregate.record, "UnknownEventType"),
                          (Aggregate.apply, "UnknownEventType"),
                          (Repository.get, "AggregateNotFound"),
                          (Repository.get, "UnknownEventType")]:
        assert error in _documented_raises(method), (method, error)
    with pytest.raises(UnknownEventType):
        Counter("c").record("Removed", {})
    repo = Repository(one_event_store, Counter)
    with pytest.raises(AggregateNotFound):
        repo.get("nobody")
    one_event_store.append(Counter.stream_name("x"), [NewEvent("Removed", {})])
    with pytest.raises(UnknownEventType):
        repo.get("x")
