"""Serve a store over KurrentDB's gRPC protocol (see docs/server.md).

    from eventstore.server import serve
    server = serve(store, listen="127.0.0.1:2113")      # insecure
    server = serve(store, listen="0.0.0.0:2113", tls_cert="c.pem", tls_key="k.pem",
                   users={"app": "secret"})
    ...
    server.stop()          # stop accepting, finish in-flight calls; the store stays open

Needs the ``server`` extra (grpcio, kurrentdbclient's generated protocol modules).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import IO

from kurrentdbclient.protos.v1 import gossip_pb2_grpc, persistent_pb2_grpc, streams_pb2_grpc
from kurrentdbclient.protos.v2.streams import streams_pb2_grpc as v2_grpc

from ..errors import InvalidArgument
from ..store import EventStore
from .cluster import (
    GossipServicer,
    PersistentSubscriptionsServicer,
    Unimplemented,
    server_features_handler,
)
from .codec import POSITION_STEP
from .operations import Operations
from .streams import Limits, StreamsServicer
from .transport import TransportConfig, build_server, parse_listen, read_pem
from .v2 import V2StreamsServicer

DEFAULT_LISTEN = "127.0.0.1:2113"


class Server:
    """A running server. ``stop()`` (or leaving ``with``) shuts it down gracefully."""

    def __init__(self, store: EventStore, config: TransportConfig, limits: Limits) -> None:
        self.store = store
        self.config = config
        self.limits = limits
        ops = Operations(store)
        self._streams = StreamsServicer(ops, limits)
        self._grpc, self.port = build_server(config, [server_features_handler()])
        streams_pb2_grpc.add_StreamsServicer_to_server(self._streams, self._grpc)
        v2_grpc.add_StreamsServiceServicer_to_server(
            V2StreamsServicer(ops, limits.max_append_size), self._grpc
        )
        advertised = config.host if config.host not in ("0.0.0.0", "::", "") else "localhost"
        gossip_pb2_grpc.add_GossipServicer_to_server(
            GossipServicer(advertised, self.port), self._grpc
        )
        persistent_pb2_grpc.add_PersistentSubscriptionsServicer_to_server(
            PersistentSubscriptionsServicer(), self._grpc
        )
        self._grpc.add_generic_rpc_handlers([Unimplemented()])
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> Server:
        self._grpc.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, end live subscriptions, let other calls finish
        (up to ``grace`` seconds). The store is left open: it is the caller's."""
        if self._stopped.is_set():
            return
        self.limits.stopping.set()
        self.store.wake_waiters()
        self._grpc.stop(grace).wait()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    store: EventStore,
    listen: str = DEFAULT_LISTEN,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    users: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    limits: Limits | None = None,
    warn: IO[str] | None = None,
    max_message_bytes: int = 4 * 1024 * 1024,
    max_connections: int = 256,
    max_workers: int = 96,
    max_concurrent_rpcs: int = 512,
) -> Server:
    """Serve ``store`` on ``listen`` (HOST:PORT) and return the started :class:`Server`.

    TLS needs both ``tls_cert`` and ``tls_key`` (PEM files); a TLS server
    refuses anonymous calls and, without ``users``, accepts only
    ``admin:changeit``, printing a warning (to ``warn``, default stderr).
    Without TLS nothing is authenticated: pass ``insecure=True`` to say so
    (the default when no certificate is given).
    """
    if (tls_cert is None) != (tls_key is None):
        raise InvalidArgument("give both tls_cert and tls_key, or neither")
    secure = tls_cert is not None
    if insecure and secure:
        raise InvalidArgument("insecure=True and a TLS certificate contradict each other")
    if users is not None and not secure:
        raise InvalidArgument("users need TLS: basic-auth credentials must not travel in clear")
    host, port = parse_listen(listen)
    config = TransportConfig(
        host=host,
        port=port,
        users=users,
        max_message_bytes=max_message_bytes,
        max_connections=max_connections,
        max_workers=max_workers,
        max_concurrent_rpcs=max_concurrent_rpcs,
    )
    if secure:
        assert tls_cert is not None and tls_key is not None
        config.tls_cert = read_pem(tls_cert, "TLS certificate")
        config.tls_key = read_pem(tls_key, "TLS key")
        if users is None:
            print(
                "eventstore serve: WARNING: no users file; accepting the default user "
                "admin:changeit. Give --users FILE before exposing this server.",
                file=warn or sys.stderr,
                flush=True,
            )
    return Server(store, config, limits or Limits()).start()


__all__ = ["DEFAULT_LISTEN", "POSITION_STEP", "Limits", "Server", "serve"]
