"""Every served RPC, driven through kurrentdbclient over real loopback sockets."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, NewEvents, StreamState
from kurrentdbclient.events import CaughtUp, Checkpoint
from kurrentdbclient.exceptions import (
    AppendDeadlineExceededError,
    ConsumerTooSlowError,
    FailedPreconditionError,
    GrpcDeadlineExceededError,
    MaximumSubscriptionsReachedError,
    NotFoundError,
    StreamIsDeletedError,
    UnknownError,
    WrongCurrentVersionError,
)
from kurrentdbclient.protos.v1 import shared_pb2, streams_pb2, streams_pb2_grpc
from ulid import ULID

from eventstore import EventStore
from eventstore import NewEvent as StoreEvent
from eventstore.deletion import StreamDeleted, delete_stream, stream_state, tombstone_stream
from eventstore.server import POSITION_STEP, Limits, Server, serve

Served = tuple[EventStore, Server, KurrentDBClient]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = EventStore.open(str(tmp_path / "store"))
    server = serve(store, "127.0.0.1:0")
    client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
    try:
        yield store, server, client
    finally:
        client.close()
        server.stop()
        store.close()


def ev(type_: str = "T", data: bytes = b"{}", metadata: bytes = b"") -> NewEvent:
    return NewEvent(type=type_, data=data, metadata=metadata)


# -- appends -------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True], ids=["Append", "BatchAppend"])
def test_append_with_each_expected_state(served: Served, batch: bool) -> None:
    store, _, client = served

    def append(expected: int | StreamState) -> int:
        events = [ev()] if batch else ev()
        return client.append_to_stream("s", events=events, current_version=expected)

    with pytest.raises(WrongCurrentVersionError):
        append(StreamState.EXISTS)
    with pytest.raises(WrongCurrentVersionError):
        append(0)
    p0 = append(StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError):
        append(StreamState.NO_STREAM)
    p1 = append(0)
    with pytest.raises(WrongCurrentVersionError) as caught:
        append(0)
    assert caught.value.actual_version == 1
    p2 = append(StreamState.EXISTS)
    p3 = append(StreamState.ANY)
    assert p0 < p1 < p2 < p3
    assert store.stream_version("s") == 3  # the refused appends wrote nothing
    assert [e.stream_position for e in client.get_stream("s")] == [0, 1, 2, 3]


def test_append_returns_positions_from_seq(served: Served) -> None:
    store, _, client = served
    positions = [
        client.append_to_stream(f"s{i}", events=ev(), current_version=StreamState.ANY)
        for i in range(5)
    ]
    seqs = [e.seq for e in store.read_all()]
    assert positions == [s * POSITION_STEP for s in seqs]
    assert all(b - a > 1 for a, b in itertools.pairwise(positions))


def test_idempotent_reappend_of_the_same_ids(served: Served) -> None:
    store, _, client = served
    batch = [ev("A"), ev("B")]
    first = client.append_to_stream("s", events=batch, current_version=StreamState.NO_STREAM)
    # same ids, same expected version: the first answer again, nothing written
    assert (
        client.append_to_stream("s", events=batch, current_version=StreamState.NO_STREAM) == first
    )
    assert client.append_to_stream("s", events=batch, current_version=StreamState.ANY) == first
    single = ev("C")
    p = client.append_to_stream("s", events=single, current_version=1)
    assert client.append_to_stream("s", events=single, current_version=1) == p
    assert client.append_to_stream("s", events=single, current_version=StreamState.ANY) == p
    assert store.stream_version("s") == 2
    # other ids at a taken version still conflict
    with pytest.raises(WrongCurrentVersionError):
        client.append_to_stream("s", events=ev("D"), current_version=1)


def test_multi_stream_append_is_atomic(served: Served) -> None:
    store, _, client = served
    position = client.multi_append_to_stream(
        [
            NewEvents("a", [ev("X"), ev("Y")], StreamState.NO_STREAM),
            NewEvents("b", [ev("Z")], StreamState.ANY),
        ]
    )
    assert position == store.last_seq * POSITION_STEP
    assert [e.type for e in client.get_stream("a")] == ["X", "Y"]
    before = store.last_seq
    with pytest.raises(WrongCurrentVersionError):
        client.multi_append_to_stream(
            [
                NewEvents("c", [ev()], StreamState.NO_STREAM),
                NewEvents("a", [ev()], StreamState.NO_STREAM),  # conflicts
            ]
        )
    assert store.last_seq == before
    assert store.stream_version("c") == -1


# -- reads ---------------------------------------------------------------------


def test_read_stream_every_way(served: Served) -> None:
    _, _, client = served
    client.append_to_stream(
        "s", events=[ev(str(i)) for i in range(10)], current_version=StreamState.NO_STREAM
    )
    types = lambda events: [e.type for e in events]  # noqa: E731
    assert types(client.get_stream("s")) == [str(i) for i in range(10)]
    assert types(client.get_stream("s", backwards=True)) == [str(i) for i in range(9, -1, -1)]
    assert types(client.get_stream("s", stream_position=7)) == ["7", "8", "9"]
    assert types(client.get_stream("s", stream_position=3, backwards=True)) == ["3", "2", "1", "0"]
    assert types(client.get_stream("s", limit=2)) == ["0", "1"]
    assert types(client.get_stream("s", stream_position=20)) == []
    with pytest.raises(NotFoundError):
        client.get_stream("missing")
    assert client.get_current_version("s") == 9
    assert client.get_current_version("missing") is StreamState.NO_STREAM


def test_read_all_every_way(served: Served) -> None:
    _store, _, client = served
    for i in range(6):
        client.append_to_stream(f"s{i % 2}", events=ev(f"T{i}"), current_version=StreamState.ANY)
    all_events = list(client.read_all())
    assert [e.type for e in all_events] == [f"T{i}" for i in range(6)]
    positions = [e.commit_position for e in all_events]
    assert positions == sorted(positions) and len(set(positions)) == 6
    assert [e.type for e in client.read_all(backwards=True, limit=2)] == ["T5", "T4"]
    assert [e.type for e in client.read_all(commit_position=positions[3])] == ["T3", "T4", "T5"]
    assert [e.type for e in client.read_all(commit_position=positions[3], backwards=True)] == [
        "T2",
        "T1",
        "T0",
    ]
    assert client.get_commit_position() == positions[-1]
    with pytest.raises(UnknownError, match="invalid position"):
        list(client.read_all(commit_position=positions[2] + 1))


def test_positions_stable_across_compaction_and_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    store = EventStore.open(path)
    server = serve(store, "127.0.0.1:0")
    client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
    for i in range(20):
        client.append_to_stream(f"s{i % 3}", events=ev(), current_version=StreamState.ANY)
    before = [(e.id, e.stream_name, e.commit_position) for e in client.read_all()]
    store.compact(before=ULID())
    assert store.read_all() is not None
    during = [(e.id, e.stream_name, e.commit_position) for e in client.read_all()]
    client.close()
    server.stop()
    store.close()
    store = EventStore.open(path)
    server = serve(store, "127.0.0.1:0")
    client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
    after = [(e.id, e.stream_name, e.commit_position) for e in client.read_all()]
    client.close()
    server.stop()
    store.close()
    assert before == during == after


def test_filters_on_type_and_stream(served: Served) -> None:
    _, _, client = served
    for stream, type_ in [("order-1", "Placed"), ("order-2", "Paid"), ("user-1", "Placed")]:
        client.append_to_stream(stream, events=ev(type_), current_version=StreamState.ANY)
    by_type = client.read_all(filter_include=["Placed"])
    assert [e.stream_name for e in by_type] == ["order-1", "user-1"]
    excluded = client.read_all(filter_exclude=["Placed"])
    assert [e.stream_name for e in excluded] == ["order-2"]
    by_prefix = client.read_all(
        filter_include=["order-"], filter_by_stream_name=True, filter_by_prefix=True
    )
    assert [e.stream_name for e in by_prefix] == ["order-1", "order-2"]
    by_regex = client.read_all(filter_include=[r"user-\d+"], filter_by_stream_name=True)
    assert [e.type for e in by_regex] == ["Placed"]
    type_prefix = client.read_all(filter_include=["Pa"], filter_by_prefix=True)
    assert [e.type for e in type_prefix] == ["Paid"]


# -- one event, two views ------------------------------------------------------


def test_grpc_event_is_stored_losslessly(served: Served) -> None:
    store, _, client = served
    event = NewEvent(
        type="Raw", data=b"\x00\xffbytes", metadata=b'{"m":1}', content_type="application/x-thing"
    )
    client.append_to_stream("v", events=event, current_version=StreamState.NO_STREAM)
    stored = next(store.read_stream("v"))
    assert stored.data == b"\x00\xffbytes"
    assert stored.metadata == b'{"m":1}'
    assert stored.indexes["$uuid"] == str(event.id)
    assert stored.indexes["$content-type"] == "application/x-thing"
    back = client.get_stream("v")[0]
    assert (back.id, back.data, back.metadata, back.content_type, back.type) == (
        event.id,
        event.data,
        event.metadata,
        event.content_type,
        "Raw",
    )
    assert back.recorded_at is not None
    assert abs(back.recorded_at.timestamp() - stored.timestamp.timestamp()) < 0.001


def test_in_process_event_seen_over_grpc(served: Served) -> None:
    store, _, client = served
    r = store.append(
        "p",
        [
            StoreEvent("Dict", {"total": 42.5, "items": [1, 2]}, metadata={"user": "u1"}),
            StoreEvent("Bytes", b"\x01\x02"),
            StoreEvent("Nested", {"blob": b"\x00"}),
        ],
    )
    got = client.get_stream("p")
    assert got[0].id == uuid.UUID(bytes=r.ids[0].bytes)
    assert got[0].content_type == "application/json"
    assert json.loads(got[0].data) == {"total": 42.5, "items": [1, 2]}
    assert json.loads(got[0].metadata) == {"user": "u1"}
    assert (got[1].content_type, got[1].data, got[1].metadata) == (
        "application/octet-stream",
        b"\x01\x02",
        b"",
    )
    import msgpack

    assert got[2].content_type == "application/vnd.msgpack"
    assert msgpack.unpackb(got[2].data) == {"blob": b"\x00"}
    assert got[0].recorded_at is not None
    assert abs(got[0].recorded_at.timestamp() - r.ids[0].timestamp) < 0.001


# -- subscriptions -------------------------------------------------------------


def test_catch_up_then_live_without_gap_while_others_append(served: Served) -> None:
    store, server, client = served
    total = 600
    for i in range(100):
        client.append_to_stream(f"s{i % 5}", events=ev(), current_version=StreamState.ANY)
    writer = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")

    def append_more() -> None:
        for i in range(100, total):
            writer.append_to_stream(f"s{i % 5}", events=ev(), current_version=StreamState.ANY)
            if i == 300:
                store.compact(before=ULID())  # a compaction in the middle of it all

    sub = client.subscribe_to_all(include_caught_up=True, timeout=60)
    thread = threading.Thread(target=append_more)
    thread.start()
    seen: list[int] = []
    caught_up = 0
    for item in sub:
        if isinstance(item, CaughtUp):
            caught_up += 1
            continue
        seen.append(item.commit_position)
        if len(seen) == total:
            break
    sub.stop()
    thread.join()
    writer.close()
    assert caught_up == 1
    assert seen == [e.seq * POSITION_STEP for e in store.read_all()]


def test_subscribe_from_position_and_to_stream(served: Served) -> None:
    _, _, client = served
    positions = [
        client.append_to_stream("x", events=ev(f"E{i}"), current_version=StreamState.ANY)
        for i in range(4)
    ]
    sub = client.subscribe_to_all(commit_position=positions[1], timeout=10)
    assert [next(sub).type for _ in range(2)] == ["E2", "E3"]  # after the position
    sub.stop()
    ssub = client.subscribe_to_stream("x", stream_position=2, include_caught_up=True, timeout=10)
    assert next(ssub).type == "E3"
    assert isinstance(next(ssub), CaughtUp)
    client.append_to_stream("x", events=ev("E4"), current_version=3)
    assert next(ssub).type == "E4"  # live
    ssub.stop()


def test_filtered_subscription_sends_checkpoints(served: Served) -> None:
    store, _, client = served
    store.append("noise", [StoreEvent("Noise") for _ in range(50)])
    sub = client.subscribe_to_all(
        filter_include=["Wanted"],
        include_checkpoints=True,
        window_size=5,
        checkpoint_interval_multiplier=2,
        timeout=10,
    )
    first = next(sub)
    assert isinstance(first, Checkpoint)
    assert first.commit_position == 10 * POSITION_STEP  # after a window of 5 x 2 scanned
    sub.stop()


def test_subscriber_too_slow_is_ended(tmp_path: Path) -> None:
    store = EventStore.open(str(tmp_path / "store"))
    server = serve(store, "127.0.0.1:0", limits=Limits(max_lag=10))
    client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
    try:
        sub = client.subscribe_to_all(include_caught_up=True, timeout=20)
        assert isinstance(next(sub), CaughtUp)
        store.append("burst", [StoreEvent("B") for _ in range(2000)])
        with pytest.raises(ConsumerTooSlowError):
            for _ in range(5000):
                next(sub)
    finally:
        client.close()
        server.stop()
        store.close()


def test_subscription_limit(tmp_path: Path) -> None:
    store = EventStore.open(str(tmp_path / "store"))
    server = serve(store, "127.0.0.1:0", limits=Limits(max_subscriptions=2))
    client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
    try:
        subs = [client.subscribe_to_all(timeout=10) for _ in range(2)]
        with pytest.raises(MaximumSubscriptionsReachedError):
            client.subscribe_to_all(timeout=10)
        subs[0].stop()
        deadline = time.monotonic() + 10
        while True:  # the slot frees once the server notices the cancel
            try:
                subs.append(client.subscribe_to_all(timeout=10))
                break
            except MaximumSubscriptionsReachedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        for s in subs:
            s.stop()
    finally:
        client.close()
        server.stop()
        store.close()


# -- delete, tombstone, metadata ------------------------------------------------


def test_soft_delete_reads_as_not_found_and_can_be_appended_again(served: Served) -> None:
    _store, _, client = served
    client.append_to_stream("d", events=[ev(), ev()], current_version=StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersionError):
        client.delete_stream("d", current_version=0)
    client.delete_stream("d", current_version=1)
    with pytest.raises(NotFoundError):
        client.get_stream("d")
    assert client.get_current_version("d") is StreamState.NO_STREAM
    client.append_to_stream("d", events=ev("Again"), current_version=StreamState.NO_STREAM)
    again = client.get_stream("d")
    assert [(e.type, e.stream_position) for e in again] == [("Again", 2)]  # versions go on
    with pytest.raises(NotFoundError):
        client.delete_stream("never", current_version=0)
    # Unlike KurrentDB (which keeps them in $all until a scavenge), every read
    # of this store honours a deletion at once, $all included (docs/server.md).
    assert [e.type for e in client.read_all(filter_include=["T", "Again"])] == ["Again"]


def test_tombstone_is_for_ever(served: Served) -> None:
    store, _, client = served
    client.append_to_stream("t", events=ev(), current_version=StreamState.NO_STREAM)
    client.tombstone_stream("t", current_version=0)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream("t")
    with pytest.raises(StreamIsDeletedError):  # BatchAppend: the error inside the response
        client.append_to_stream("t", events=[ev()], current_version=StreamState.ANY)
    with pytest.raises(FailedPreconditionError, match="Event stream 't' is deleted"):  # Append
        client.append_to_stream("t", events=ev(), current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.delete_stream("t", current_version=StreamState.ANY)
    with pytest.raises(FailedPreconditionError, match="is deleted"):
        client.set_stream_metadata("t", metadata={"x": 1})
    assert store.stream_version("t") == 0
    assert stream_state(store, "t").tombstoned


def test_deletion_in_process(tmp_path: Path) -> None:
    with EventStore.open(str(tmp_path / "s")) as store:
        store.append("a", [StoreEvent("A")])
        delete_stream(store, "a", 0)
        state = stream_state(store, "a")
        assert (state.version, state.truncate_before, state.visible) == (0, 1, False)
        tombstone_stream(store, "a")
        with pytest.raises(StreamDeleted):
            tombstone_stream(store, "a")


def test_stream_metadata(served: Served) -> None:
    _, _, client = served
    assert client.get_stream_metadata("m") == ({}, StreamState.NO_STREAM)
    client.set_stream_metadata("m", metadata={"$maxAge": 60, "owner": "me"})
    metadata, version = client.get_stream_metadata("m")
    assert metadata == {"$maxAge": 60, "owner": "me"} and version == 0
    # metadata events stay out of a default $all read (their type starts with $)
    assert list(client.read_all()) == []


# -- the other services -----------------------------------------------------------


def test_gossip_and_discovery(served: Served) -> None:
    _, server, client = served
    members = client.read_gossip()
    assert [(m.state, m.port) for m in members] == [("NODE_STATE_LEADER", server.port)]
    discover = KurrentDBClient(f"esdb+discover://127.0.0.1:{server.port}?Tls=False")
    discover.append_to_stream("g", events=ev(), current_version=StreamState.NO_STREAM)
    many = KurrentDBClient(f"esdb://127.0.0.1:{server.port},localhost:{server.port}?Tls=False")
    assert len(many.get_stream("g")) == 1
    discover.close()
    many.close()


def test_server_features_and_unimplemented(served: Served) -> None:
    from eventstore.server.cluster import SupportedMethods

    _, server, client = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=SupportedMethods.FromString,
        )
        methods = call(shared_pb2.Empty(), timeout=5)
        served_methods = {(m.service_name, m.method_name) for m in methods.methods}
        assert ("event_store.client.streams.streams", "batchappend") in served_methods
        projections = channel.unary_unary(
            "/event_store.client.projections.Projections/Create",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=shared_pb2.Empty.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            projections(shared_pb2.Empty(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "not served by eventstore" in (caught.value.details() or "")
    assert client.list_subscriptions() == []
    with pytest.raises(Exception, match="not served by eventstore"):
        client.create_subscription_to_all("group")


# -- deadlines ---------------------------------------------------------------


def test_deadlines_are_honoured(served: Served) -> None:
    store, server, client = served
    started = time.monotonic()
    sub = client.subscribe_to_all(timeout=0.5)
    with pytest.raises(GrpcDeadlineExceededError):
        for _ in range(1000):
            next(sub)
    assert time.monotonic() - started < 5
    # BatchAppend carries its own deadline: an expired one writes nothing
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)
        req = streams_pb2.BatchAppendReq(
            correlation_id=shared_pb2.UUID(string=str(uuid.uuid4())),
            options=streams_pb2.BatchAppendReq.Options(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=b"late"),
            ),
            proposed_messages=[
                streams_pb2.BatchAppendReq.ProposedMessage(
                    id=shared_pb2.UUID(string=str(uuid.uuid4())),
                    metadata={"type": "T", "content-type": "application/json"},
                    data=b"{}",
                )
            ],
            is_final=True,
        )
        req.options.deadline.nanos = 1
        req.options.any.SetInParent()
        time.sleep(0.01)
        (resp,) = list(stub.BatchAppend(iter([req]), timeout=5))
        from kurrentdbclient.streams import BaseStreamsService

        with pytest.raises(AppendDeadlineExceededError):
            BaseStreamsService._convert_batch_append_resp(resp, "late", StreamState.ANY)
    assert store.stream_version("late") == -1


def test_stream_metadata_sets_retention_that_every_read_honours(served: Served) -> None:
    store, _, client = served
    five = [ev() for _ in range(5)]
    client.append_to_stream("r", events=five, current_version=StreamState.NO_STREAM)
    client.set_stream_metadata("r", metadata={"$maxCount": 2})
    assert store.stream_rules("r").max_count == 2
    assert [e.stream_position for e in client.get_stream("r")] == [3, 4]
    assert [e.version for e in store.read_stream("r")] == [3, 4]
    client.set_stream_metadata("r", metadata={"$tb": 4})
    assert [e.stream_position for e in client.get_stream("r")] == [4]
    assert store.scavenge().removed == 4
    assert [e.version for e in store.read_stream("r")] == [4]
