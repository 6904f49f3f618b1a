"""TLS, basic auth, bounds, and hostile clients: the server stays up, the store whole."""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    GrpcError,
    KurrentDBClientError,
    MaximumAppendSizeExceededError,
    SSLError,
    UnauthenticatedError,
)
from kurrentdbclient.protos.v1 import gossip_pb2_grpc, shared_pb2, streams_pb2, streams_pb2_grpc
from kurrentdbclient.streams import BaseStreamsService

from eventstore import EventStore
from eventstore.server import serve
from eventstore.server.transport import BadUsersFile, load_users

from .server_fixtures import free_port, make_cert, serve_process


def ev(data: bytes = b"{}") -> NewEvent:
    return NewEvent(type="T", data=data)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[EventStore, int, str]]:
    cert, key = make_cert(tmp_path)
    store = EventStore.open(str(tmp_path / "store"))
    server = serve(
        store,
        "127.0.0.1:0",
        tls_cert=str(cert),
        tls_key=str(key),
        users={"app": "s3cret", "admin": "other"},
    )
    try:
        yield store, server.port, cert.read_text()
    finally:
        server.stop()
        store.close()


def _client(port: int, ca: str, userinfo: str = "") -> KurrentDBClient:
    return KurrentDBClient(f"esdb://{userinfo}localhost:{port}", root_certificates=ca)


def test_tls_with_users_accepts_known_and_refuses_others(tls: tuple[EventStore, int, str]) -> None:
    store, port, ca = tls
    good = _client(port, ca, "app:s3cret@")
    good.append_to_stream("s", events=ev(), current_version=StreamState.NO_STREAM)
    assert len(good.get_stream("s")) == 1
    assert good.read_gossip()
    good.close()
    wrong = _client(port, ca, "app:nope@")
    with pytest.raises(UnauthenticatedError):
        wrong.append_to_stream("s", events=ev(), current_version=StreamState.ANY)
    wrong.close()
    unknown = _client(port, ca, "mallory:s3cret@")
    with pytest.raises(UnauthenticatedError):
        unknown.get_stream("s")
    unknown.close()
    default = _client(port, ca, "admin:changeit@")  # a users file replaces the default
    with pytest.raises(UnauthenticatedError):
        default.get_stream("s")
    default.close()
    # kurrentdbclient insists on credentials with TLS: anonymous calls go on a raw channel
    creds = grpc.ssl_channel_credentials(root_certificates=ca.encode())
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        gossip = gossip_pb2_grpc.GossipStub(channel)
        assert len(gossip.Read(shared_pb2.Empty(), timeout=5).members) == 1  # as on KurrentDB
        reading = streams_pb2_grpc.StreamsStub(channel).Read(
            BaseStreamsService._construct_read_request(stream_name="s"), timeout=5
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(reading)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert store.stream_version("s") == 0


def test_default_user_only_with_a_warning(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    warned = io.StringIO()
    with EventStore.open(str(tmp_path / "store")) as store:
        server = serve(store, "127.0.0.1:0", tls_cert=str(cert), tls_key=str(key), warn=warned)
        try:
            assert "admin:changeit" in warned.getvalue() and "WARNING" in warned.getvalue()
            client = _client(server.port, cert.read_text(), "admin:changeit@")
            client.append_to_stream("s", events=ev(), current_version=StreamState.ANY)
            client.close()
        finally:
            server.stop()
    quiet = io.StringIO()
    with EventStore.open(str(tmp_path / "store2")) as store:
        serve(store, "127.0.0.1:0", warn=quiet).stop()  # insecure: no users, no warning
    assert quiet.getvalue() == ""


def test_plain_client_cannot_talk_to_tls_and_back(
    tls: tuple[EventStore, int, str], tmp_path: Path
) -> None:
    _, port, ca = tls
    plain = KurrentDBClient(f"esdb://localhost:{port}?Tls=False&MaxDiscoverAttempts=1")
    with pytest.raises(GrpcError):
        plain.get_stream("s", timeout=5)
    plain.close()
    with EventStore.open(str(tmp_path / "insecure")) as store:
        server = serve(store, "127.0.0.1:0")
        try:
            secure = KurrentDBClient(f"esdb://admin:changeit@127.0.0.1:{server.port}")
            with pytest.raises(SSLError):
                secure.get_stream("s", timeout=5)
            secure.close()
        finally:
            server.stop()
    assert ssl.get_server_certificate(("localhost", port)).strip() == ca.strip()


def test_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# operators\nadmin:pw1\n\napp:pw:with:colons\n")
    assert load_users(str(path)) == {"admin": "pw1", "app": "pw:with:colons"}
    path.write_text("admin:pw1\nbroken-line-with-secret\n")
    with pytest.raises(BadUsersFile) as caught:
        load_users(str(path))
    assert "secret" not in str(caught.value) and ":2:" in str(caught.value)
    with pytest.raises(BadUsersFile):
        load_users(str(tmp_path / "missing"))


def test_credentials_never_logged(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    users = tmp_path / "users"
    users.write_text("app:Hunter2-secret\n")
    port = free_port()
    with serve_process(
        tmp_path / "store",
        "--listen",
        f"localhost:{port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--users",
        str(users),
        env={"GRPC_VERBOSITY": "debug"},
    ) as proc:
        for userinfo in ("app:Hunter2-secret@", "app:Wrong-secret@", "nobody:Hunter2-secret@"):
            client = _client(port, cert.read_text(), userinfo)
            with contextlib.suppress(KurrentDBClientError):
                client.append_to_stream("s", events=ev(), current_version=StreamState.ANY)
            client.close()
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "secret" not in out + err
    assert "admin:changeit" not in out + err  # a users file: no default-user warning


# -- bounds and hostile clients -----------------------------------------------------


@pytest.fixture
def insecure(tmp_path: Path) -> Iterator[tuple[EventStore, int]]:
    store = EventStore.open(str(tmp_path / "store"))
    server = serve(store, "127.0.0.1:0", max_message_bytes=256 * 1024, max_connections=64)
    try:
        yield store, server.port
    finally:
        server.stop()
        store.close()


def _still_serves(store: EventStore, port: int) -> None:
    client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
    before = store.last_seq
    client.append_to_stream("alive", events=ev(), current_version=StreamState.ANY)
    assert store.last_seq == before + 1
    assert client.get_stream("alive")[-1].commit_position > 0
    client.close()
    store.verify()


def test_garbage_bytes_on_the_port(insecure: tuple[EventStore, int]) -> None:
    store, port = insecure
    for payload in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 64,
        b"PRI * HTTP/2.0",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionError):
                s.recv(1024)
    _still_serves(store, port)


def test_oversized_messages_are_refused_and_change_nothing(
    insecure: tuple[EventStore, int], tmp_path: Path
) -> None:
    store, port = insecure
    client = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
    for events in (ev(b"x" * 400_000), [ev(b"x" * 400_000)]):  # Append, BatchAppend
        with pytest.raises(GrpcError, match="larger than max"):
            client.append_to_stream("big", events=events, current_version=StreamState.ANY)
    client.close()
    assert store.stream_version("big") == -1
    _still_serves(store, port)
    # within the default message bound (4 MiB), above the append bound (1 MiB)
    with EventStore.open(str(tmp_path / "other")) as other:
        server = serve(other, "127.0.0.1:0")
        try:
            client = KurrentDBClient(f"esdb://127.0.0.1:{server.port}?Tls=False")
            with pytest.raises(MaximumAppendSizeExceededError):
                client.append_to_stream(
                    "big",
                    events=[ev(b"y" * 200_000) for _ in range(8)],
                    current_version=StreamState.ANY,
                )
            client.close()
        finally:
            server.stop()
        assert other.stream_version("big") == -1


def test_malformed_requests_get_errors(insecure: tuple[EventStore, int]) -> None:
    store, port = insecure
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)
        bad = [
            # proposed message before options
            [streams_pb2.AppendReq(proposed_message=streams_pb2.AppendReq.ProposedMessage())],
            # no type / content-type
            [
                streams_pb2.AppendReq(
                    options=streams_pb2.AppendReq.Options(
                        stream_identifier=shared_pb2.StreamIdentifier(stream_name=b"m"),
                        any=shared_pb2.Empty(),
                    )
                ),
                streams_pb2.AppendReq(
                    proposed_message=streams_pb2.AppendReq.ProposedMessage(
                        id=shared_pb2.UUID(string="not-a-uuid"), data=b"x"
                    )
                ),
            ],
            # a stream name that is not UTF-8
            [
                streams_pb2.AppendReq(
                    options=streams_pb2.AppendReq.Options(
                        stream_identifier=shared_pb2.StreamIdentifier(stream_name=b"\xff\xfe"),
                        any=shared_pb2.Empty(),
                    )
                )
            ],
        ]
        for requests in bad:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Append(iter(requests), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        garbage = channel.unary_unary(
            "/event_store.client.streams.Streams/Delete",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as caught:
            garbage(b"\xff\xff\xff\xff", timeout=5)
        assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert store.last_seq == 0
    _still_serves(store, port)


def test_subscriber_that_never_reads_and_one_that_disconnects(
    insecure: tuple[EventStore, int],
) -> None:
    store, port = insecure
    store.append("fill", [ev_store() for _ in range(5000)])
    # never reads: opens a subscription to $all over a raw channel and leaves it
    stuck = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = streams_pb2_grpc.StreamsStub(stuck)
    req = BaseStreamsService._construct_read_request(subscribe=True)
    call = stub.Read(req, timeout=60)
    # disconnects mid-stream: reads a little of a long read, then drops the channel
    for _ in range(3):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reading = streams_pb2_grpc.StreamsStub(channel).Read(
                BaseStreamsService._construct_read_request(), timeout=30
            )
            next(reading)
    appender = KurrentDBClient(f"esdb://127.0.0.1:{port}?Tls=False")
    started = time.monotonic()
    for _ in range(200):
        appender.append_to_stream("more", events=ev(b"z" * 1000), current_version=StreamState.ANY)
    assert time.monotonic() - started < 30  # appends are not held up by the stuck reader
    appender.close()
    call.cancel()
    stuck.close()
    _still_serves(store, port)


def ev_store() -> object:
    from eventstore import NewEvent as StoreEvent

    return StoreEvent("Fill", b"f" * 500)


def test_flood_of_connections(insecure: tuple[EventStore, int]) -> None:
    store, port = insecure
    socks: list[socket.socket] = []
    errors = 0
    try:
        for _ in range(200):  # more than max_connections (64)
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                errors += 1
        for s in socks[:50]:
            try:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            except OSError:
                errors += 1
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    done = threading.Event()

    def check() -> None:
        _still_serves(store, port)
        done.set()

    t = threading.Thread(target=check)
    t.start()
    t.join(30)
    assert done.is_set()
