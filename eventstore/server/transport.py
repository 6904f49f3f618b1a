"""The gRPC side of ``eventstore serve``: listening, TLS, basic-auth users,
bounds on message sizes, connections and concurrent calls."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from ..errors import InvalidArgument

log = logging.getLogger("eventstore.server")

DEFAULT_USERS = {"admin": "changeit"}
# Methods a KurrentDB node answers without credentials: discovery must work first.
ANONYMOUS = frozenset(
    {
        "/event_store.client.gossip.Gossip/Read",
        "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
    }
)


class BadUsersFile(InvalidArgument):
    """The users file cannot be read as ``name:password`` lines."""


def load_users(path: str) -> dict[str, str]:
    """``name:password`` per line; blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadUsersFile(f"cannot read users file {path!r}: {exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name or not password:
            # Never echo the line: it may hold a password.
            raise BadUsersFile(f"{path}:{number}: expected name:password")
        users[name] = password
    if not users:
        raise BadUsersFile(f"users file {path!r} names no users")
    return users


@dataclass
class TransportConfig:
    host: str = "127.0.0.1"
    port: int = 2113
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    users: Mapping[str, str] | None = None  # None on a TLS server: admin:changeit, with a warning
    max_message_bytes: int = 4 * 1024 * 1024
    max_connections: int = 256
    max_workers: int = 96
    max_concurrent_rpcs: int = 512
    max_streams_per_connection: int = 128

    @property
    def secure(self) -> bool:
        return self.tls_cert is not None


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"listen address {value!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _check_basic(header: str | bytes | None, users: Mapping[str, str]) -> bool | None:
    """True for known credentials, False for wrong ones, None for none at all."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        name, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not sep:
        return False
    known = users.get(name)
    # compare_digest on both branches: no timing hint of which names exist
    good = hmac.compare_digest(password.encode(), (known or "\0").encode())
    return good and known is not None


def _refusing(handler: Any, code: grpc.StatusCode, details: str) -> Any:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    kinds: list[tuple[bool, bool, Callable[..., Any]]] = [
        (False, False, grpc.unary_unary_rpc_method_handler),
        (False, True, grpc.unary_stream_rpc_method_handler),
        (True, False, grpc.stream_unary_rpc_method_handler),
        (True, True, grpc.stream_stream_rpc_method_handler),
    ]
    for req_stream, resp_stream, make in kinds:
        if handler.request_streaming == req_stream and handler.response_streaming == resp_stream:
            return make(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise AssertionError("unknown handler kind")


class BasicAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without good basic-auth credentials (never logs them)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method in ANONYMOUS:
            return handler
        header = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                header = value
                break
        verdict = _check_basic(header, self.users)
        if verdict:
            return handler
        if verdict is None:
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED, "Access denied")
        return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, "Bad username or password")


def build_server(config: TransportConfig, handlers: list[Any]) -> tuple[grpc.Server, int]:
    """A started-later grpc server with every bound applied; returns it and its port."""
    interceptors = []
    if config.secure:
        users = config.users
        if users is None:
            users = DEFAULT_USERS
        interceptors.append(BasicAuth(users))
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", config.max_connections),
        ("grpc.max_metadata_size", 16 * 1024),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="eventstore-rpc"),
        handlers=handlers,
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    address = (
        f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    )
    if config.secure:
        assert config.tls_key is not None and config.tls_cert is not None
        creds = grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def read_pem(path: str, what: str) -> bytes:
    try:
        with open(os.fspath(path), "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"{what} {path!r} is not PEM")
    return data
