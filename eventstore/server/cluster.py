"""The small services a KurrentDB client asks of a node besides Streams:
Gossip.Read (one leader: this server), ServerFeatures.GetSupportedMethods,
an empty PersistentSubscriptions.List, and UNIMPLEMENTED, with a message,
for every other method."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from kurrentdbclient.protos.v1 import (
    gossip_pb2,
    gossip_pb2_grpc,
    persistent_pb2,
    persistent_pb2_grpc,
    shared_pb2,
)

# (service, method) pairs this server answers; ServerFeatures lists them.
SERVED = [
    ("event_store.client.streams.Streams", "Read"),
    ("event_store.client.streams.Streams", "Append"),
    ("event_store.client.streams.Streams", "BatchAppend"),
    ("event_store.client.streams.Streams", "Delete"),
    ("event_store.client.streams.Streams", "Tombstone"),
    ("kurrentdb.protocol.v2.streams.StreamsService", "AppendSession"),
    ("event_store.client.gossip.Gossip", "Read"),
    ("event_store.client.persistent_subscriptions.PersistentSubscriptions", "List"),
    ("event_store.client.server_features.ServerFeatures", "GetSupportedMethods"),
]
_FEATURES = {("event_store.client.streams.Streams", "Read"): ["all", "position", "events"]}
SERVER_VERSION = "25.1.0"  # the KurrentDB release whose client protocol this serves


def _features_messages() -> tuple[Any, Any]:
    """serverfeatures.proto's two messages, built at run time (the client
    wheel ships no generated module for it)."""
    f = descriptor_pb2.FileDescriptorProto(
        name="eventstore_serverfeatures.proto",
        package="event_store.client.server_features",
        syntax="proto3",
    )
    method = f.message_type.add(name="SupportedMethod")
    for number, name, label in ((1, "method_name", 1), (2, "service_name", 1), (3, "features", 3)):
        method.field.add(name=name, number=number, type=9, label=label)
    methods = f.message_type.add(name="SupportedMethods")
    methods.field.add(
        name="methods",
        number=1,
        type=11,
        label=3,
        type_name=".event_store.client.server_features.SupportedMethod",
    )
    methods.field.add(name="event_store_server_version", number=2, type=9, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    package = "event_store.client.server_features."
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(package + "SupportedMethods")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(package + "SupportedMethod")),
    )


SupportedMethods, SupportedMethod = _features_messages()


def _supported_methods(request: bytes, context: grpc.ServicerContext) -> Any:
    return SupportedMethods(
        methods=[
            SupportedMethod(
                method_name=m.lower(), service_name=s.lower(), features=_FEATURES.get((s, m), [])
            )
            for s, m in SERVED
        ],
        event_store_server_version=SERVER_VERSION,
    )


def server_features_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "event_store.client.server_features.ServerFeatures",
        {
            "GetSupportedMethods": grpc.unary_unary_rpc_method_handler(
                _supported_methods,
                request_deserializer=lambda b: b,
                response_serializer=lambda m: m.SerializeToString(),
            )
        },
    )


class GossipServicer(gossip_pb2_grpc.GossipServicer):  # type: ignore[misc]
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.instance_id = str(uuid.uuid4())

    def Read(self, request: Any, context: grpc.ServicerContext) -> Any:
        return gossip_pb2.ClusterInfo(
            members=[
                gossip_pb2.MemberInfo(
                    instance_id=shared_pb2.UUID(string=self.instance_id),
                    time_stamp=time.time_ns() // 100,
                    state=gossip_pb2.MemberInfo.VNodeState.Leader,
                    is_alive=True,
                    http_end_point=gossip_pb2.EndPoint(address=self.host, port=self.port),
                )
            ]
        )


def _unimplemented(name: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served by eventstore")

    return refuse


class PersistentSubscriptionsServicer(persistent_pb2_grpc.PersistentSubscriptionsServicer):  # type: ignore[misc]
    """List answers no subscriptions: eventstore keeps none on the server."""

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        return persistent_pb2.ListResp(subscriptions=[])


for _method in ("Create", "Update", "Delete", "GetInfo", "ReplayParked", "RestartSubsystem"):
    setattr(
        PersistentSubscriptionsServicer,
        _method,
        staticmethod(_unimplemented(f"PersistentSubscriptions.{_method}")),
    )


def _read_unimplemented(request_iterator: Any, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED, "PersistentSubscriptions.Read is not served by eventstore"
    )


PersistentSubscriptionsServicer.Read = staticmethod(_read_unimplemented)


class Unimplemented(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Last in line: any method nothing else serves ends UNIMPLEMENTED, naming it."""

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method

        def refuse(request_iterator: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by eventstore")

        return grpc.stream_stream_rpc_method_handler(
            refuse, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
