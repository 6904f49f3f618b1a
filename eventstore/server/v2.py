"""KurrentDB's v2 streams service: the multi-stream ``AppendSession`` that
kurrentdbclient 1.3 calls for ``multi_append_to_stream``, on ``append_many``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status
from kurrentdbclient.protos.v2.streams import errors_pb2, streams_pb2, streams_pb2_grpc

from ..deletion import StreamDeleted
from ..errors import EventStoreError, StoreClosed, WrongExpectedVersion
from ..events import ANY, NO_STREAM, STREAM_EXISTS, NewEvent
from .codec import JSON_TYPE, OCTET_STREAM, expected_number, new_event, position_of
from .operations import Operations

_MAX_STREAMS = 1000


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, detail: Any = None
) -> None:
    status = status_pb2.Status(code=code.value[0], message=message)
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    context.abort_with_status(rpc_status.to_status(status))


def _expected(request: Any) -> Any:
    if not request.HasField("expected_revision"):
        return ANY
    value = request.expected_revision
    if value >= 0:
        return value
    symbolic = {-1: NO_STREAM, -2: ANY, -4: STREAM_EXISTS}.get(value)
    if symbolic is None:
        raise ValueError(f"expected revision {value} is not one KurrentDB defines")
    return symbolic


def _record(record: Any) -> NewEvent:
    if not record.schema.name:
        raise ValueError("record has no schema name (event type)")
    properties = {}
    for key, value in record.properties.items():
        kind = value.WhichOneof("kind")
        properties[key] = getattr(value, kind) if kind and kind != "null_value" else None
    metadata = json.dumps(properties).encode() if properties else b""
    content_type = (
        JSON_TYPE if record.schema.format == streams_pb2.SCHEMA_FORMAT_JSON else OCTET_STREAM
    )
    record_id = (
        str(uuid.UUID(record.record_id)) if record.HasField("record_id") else str(uuid.uuid4())
    )
    return new_event(record.schema.name, content_type, record_id, record.data, metadata)


class V2StreamsServicer(streams_pb2_grpc.StreamsServiceServicer):  # type: ignore[misc]
    def __init__(self, ops: Operations, max_append_size: int) -> None:
        self.ops = ops
        self.max_append_size = max_append_size

    def AppendSession(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        parts: list[tuple[str, list[NewEvent], Any]] = []
        seen: set[str] = set()
        size = 0
        try:
            for request in request_iterator:
                if not request.stream:
                    raise ValueError("append request names no stream")
                if request.stream in seen:
                    _abort(
                        context,
                        grpc.StatusCode.ABORTED,
                        f"Stream '{request.stream}' is already in this append session",
                        errors_pb2.StreamAlreadyInAppendSessionErrorDetails(stream=request.stream),
                    )
                seen.add(request.stream)
                if len(seen) > _MAX_STREAMS:
                    raise ValueError(f"an append session may name at most {_MAX_STREAMS} streams")
                events = [_record(r) for r in request.records]
                size += sum(len(r.data) for r in request.records)
                if size > self.max_append_size:
                    _abort(
                        context,
                        grpc.StatusCode.ABORTED,
                        f"The transaction is {size} bytes; the limit is {self.max_append_size}",
                        errors_pb2.AppendTransactionSizeExceededErrorDetails(
                            size=size, max_size=self.max_append_size
                        ),
                    )
                if not events:
                    raise ValueError(f"append request for stream '{request.stream}' has no records")
                parts.append((request.stream, events, _expected(request)))
            if not parts:
                raise ValueError("append session sent no requests")
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            try:
                results = self.ops.append_many(parts)
            except WrongExpectedVersion as exc:
                expected = expected_number(exc.expected)
                _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Append failed due to a revision conflict on stream '{exc.stream}'."
                    f" Expected revision: {expected}. Actual revision: {exc.actual}.",
                    errors_pb2.StreamRevisionConflictErrorDetails(
                        stream=exc.stream, expected_revision=expected, actual_revision=exc.actual
                    ),
                )
            except StreamDeleted as exc:
                _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Stream '{exc.stream}' is tombstoned",
                    errors_pb2.StreamTombstonedErrorDetails(stream=exc.stream),
                )
            outputs = [
                streams_pb2.AppendResponse(
                    stream=stream, stream_revision=r.last_version, position=position_of(r.last_seq)
                )
                for (stream, _, _), r in zip(parts, results, strict=True)
            ]
            return streams_pb2.AppendSessionResponse(
                output=outputs, position=position_of(results[-1].last_seq)
            )
        except StoreClosed:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
        except (EventStoreError, ValueError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable")

    def AppendRecords(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "AppendRecords is not served by eventstore (use AppendSession)",
        )
