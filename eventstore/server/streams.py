"""KurrentDB's v1 Streams service (Read, Append, BatchAppend, Delete, Tombstone)
mapped onto an :class:`~eventstore.store.EventStore`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from kurrentdbclient.protos.v1 import shared_pb2, status_pb2, streams_pb2, streams_pb2_grpc

from ..deletion import (
    StreamDeleted,
    base_stream,
    delete_stream,
    stream_state,
    tombstone_stream,
)
from ..errors import EventStoreError, StoreClosed, WrongExpectedVersion
from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, NewEvent
from .codec import (
    POSITION_STEP,
    created_ticks,
    event_uuid,
    expected_number,
    first_seq_at,
    new_event,
    parse_uuid,
    position_of,
    wire_data,
    wire_metadata,
)
from .operations import Appended, EventFilter, Operations, read_all_from

Options = streams_pb2.ReadReq.Options
_EMPTY = empty_pb2.Empty()
PAGE = 256  # events read from one view before looking at the clock and the client again


@dataclass
class Limits:
    max_append_size: int = 1_048_576  # bytes of data + metadata in one append, as KurrentDB
    max_subscriptions: int = 64
    max_lag: int = 100_000  # events a live subscriber may fall behind before "too slow"
    live_wait: float = 0.5  # seconds between checks of a waiting subscription
    stopping: threading.Event = field(default_factory=threading.Event)


class _Refused(Exception):
    """An RPC ends with this gRPC status (raised inside the handlers)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _stream_name(identifier: shared_pb2.StreamIdentifier) -> str:
    try:
        name = identifier.stream_name.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "stream name is not UTF-8") from None
    if not name:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "stream name is empty")
    return name


def _expected(options: Any, revision_field: str) -> Any:
    which = options.WhichOneof(options.DESCRIPTOR.oneofs[0].name)
    if which == revision_field:
        return int(getattr(options, revision_field))
    if which == "no_stream":
        return NO_STREAM
    if which == "stream_exists":
        return STREAM_EXISTS
    return ANY


def _timestamp() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def recorded_event(event: Event) -> streams_pb2.ReadResp:
    data, content_type = wire_data(event)
    position = position_of(event.seq)
    return streams_pb2.ReadResp(
        event=streams_pb2.ReadResp.ReadEvent(
            event=streams_pb2.ReadResp.ReadEvent.RecordedEvent(
                id=shared_pb2.UUID(string=event_uuid(event)),
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=event.stream.encode()),
                stream_revision=event.version,
                prepare_position=position,
                commit_position=position,
                metadata={
                    "type": event.type,
                    "content-type": content_type,
                    "created": str(created_ticks(event)),
                    "eventstore-seq": str(event.seq),
                },
                custom_metadata=wire_metadata(event),
                data=data,
            ),
            commit_position=position,
        )
    )


def _proposed(messages: Any, max_size: int) -> list[NewEvent]:
    events = []
    total = 0
    for message in messages:
        meta = message.metadata
        if "type" not in meta or "content-type" not in meta:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "Required Metadata Properties Missing")
        try:
            uuid_text = parse_uuid(message.id)
        except ValueError:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "event id is not a UUID") from None
        if not meta["type"]:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "event type is empty")
        total += len(message.data) + len(message.custom_metadata)
        if total > max_size:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"Maximum Append Size of {max_size} Exceeded."
            )
        events.append(
            new_event(
                meta["type"], meta["content-type"], uuid_text, message.data, message.custom_metadata
            )
        )
    return events


def _check_position(commit: int) -> None:
    """KurrentDB's answer (code and text, which clients match) to a position
    that no event is at."""
    if commit % POSITION_STEP:
        raise _Refused(grpc.StatusCode.UNKNOWN, "Trying to read from an invalid position.")


def _wev_text(stream: str, expected: Any, actual: int) -> str:
    return (
        "Append failed due to WrongExpectedVersion. "
        f"Stream: {stream}, Expected version: {expected_number(expected)}, "
        f"Actual version: {actual}"
    )


def _deleted_text(stream: str) -> str:
    return f"Event stream '{stream}' is deleted."


class StreamsServicer(streams_pb2_grpc.StreamsServicer):  # type: ignore[misc]
    def __init__(self, ops: Operations, limits: Limits) -> None:
        self.ops = ops
        self.store = ops.store
        self.limits = limits
        self._subscriptions = 0
        self._sub_lock = threading.Lock()

    # -- calling conventions ------------------------------------------------

    @staticmethod
    def _fail(context: grpc.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, _Refused):
            context.abort(exc.code, exc.details)
        if isinstance(exc, StreamDeleted):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, _deleted_text(exc.stream))
        if isinstance(exc, StoreClosed):
            context.abort(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
        if isinstance(exc, (ValueError, TypeError)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _check_deadline(context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    # -- Read -----------------------------------------------------------------

    def Read(self, request: streams_pb2.ReadReq, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from self._read(request.options, context)
        except (EventStoreError, _Refused, ValueError, TypeError) as exc:
            self._fail(context, exc)

    def _read(self, options: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        backwards = options.read_direction == Options.Backwards
        filt = None
        if options.WhichOneof("filter_option") == "filter":
            f = options.filter
            on_stream = f.WhichOneof("filter") == "stream_identifier"
            expr = f.stream_identifier if on_stream else f.event_type
            try:
                filt = EventFilter(on_stream, expr.regex, list(expr.prefix))
            except Exception as exc:  # re.error
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad filter: {exc}") from None
        subscribe = options.WhichOneof("count_option") == "subscription"
        if options.WhichOneof("stream_option") == "stream":
            stream = _stream_name(options.stream.stream_identifier)
            if subscribe:
                yield from self._subscribed(
                    context, lambda gone: self._follow_stream(options, stream, gone)
                )
            else:
                yield from self._read_stream(options.stream, stream, backwards, options.count)
        elif options.WhichOneof("stream_option") == "all":
            if subscribe:
                yield from self._subscribed(
                    context, lambda gone: self._follow_all(options, filt, gone)
                )
            else:
                yield from self._read_all(options.all, backwards, options.count, filt, context)
        else:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "read names no stream and not $all")

    def _read_stream(self, sopts: Any, stream: str, backwards: bool, count: int) -> Iterator[Any]:
        state = stream_state(self.store, base_stream(stream))
        if state.tombstoned:
            raise StreamDeleted(base_stream(stream))
        plain = stream.startswith("$$")
        floor = 0 if plain else state.truncate_before
        version = self.store.stream_version(stream) if plain else state.version
        if version < 0 or (not plain and not state.visible):
            yield streams_pb2.ReadResp(
                stream_not_found=streams_pb2.ReadResp.StreamNotFound(
                    stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode())
                )
            )
            return
        which = sopts.WhichOneof("revision_option")
        if which == "revision":
            start = int(sopts.revision)
        elif which == "end":
            start = version if backwards else version + 1
        else:
            start = version if backwards else floor
        if backwards:
            if start < floor:
                return
        else:
            start = max(start, floor)
        events = self.store.read_stream(stream, from_version=start, backwards=backwards)
        for sent, event in enumerate(events):
            if sent >= count or event.version < floor:
                return
            yield recorded_event(event)

    def _read_all(
        self,
        aopts: Any,
        backwards: bool,
        count: int,
        filt: EventFilter | None,
        context: grpc.ServicerContext,
    ) -> Iterator[Any]:
        which = aopts.WhichOneof("all_option")
        last = self.store.last_seq
        if which == "position":
            commit = aopts.position.commit_position
            _check_position(commit)
            at = first_seq_at(commit)
            start = at - 1 if backwards else at
        elif which == "end":
            start = last if backwards else last + 1
        else:
            start = last if backwards else 1
        sent = 0
        if count == 0 or start > last:
            return
        for event in read_all_from(self.store, start, backwards, filt):
            if filt is not None and not filt.matches(event):
                continue
            yield recorded_event(event)
            sent += 1
            if sent >= count:
                return

    # -- subscriptions ----------------------------------------------------------

    def _subscribed(
        self,
        context: grpc.ServicerContext,
        follow: Callable[[threading.Event], Iterator[Any]],
    ) -> Iterator[Any]:
        with self._sub_lock:
            if self._subscriptions >= self.limits.max_subscriptions:
                raise _Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Maximum subscriptions reached ({self.limits.max_subscriptions})",
                )
            self._subscriptions += 1
        gone = threading.Event()  # the client cancelled or went away

        def on_done() -> None:
            gone.set()
            self.store.wake_waiters()

        context.add_callback(on_done)
        try:
            yield streams_pb2.ReadResp(
                confirmation=streams_pb2.ReadResp.SubscriptionConfirmation(
                    subscription_id=str(uuid.uuid4())
                )
            )
            for resp in follow(gone):
                if gone.is_set():
                    return
                yield resp
        finally:
            with self._sub_lock:
                self._subscriptions -= 1

    def _wait(self, seen_seq: int, gone: threading.Event) -> bool:
        """Wait for a commit after ``seen_seq`` (or a short while); False once the
        client is gone. Refuses once the server is stopping."""
        stopping = self.limits.stopping
        if stopping.is_set():
            raise _Refused(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
        self.store.wait_for_commit(
            seen_seq,
            self.limits.live_wait,
            until=lambda: stopping.is_set() or gone.is_set(),
        )
        return not gone.is_set()

    def _too_slow(self, behind: int) -> None:
        if behind > self.limits.max_lag:
            raise _Refused(
                grpc.StatusCode.ABORTED,
                "Consumer too slow to handle event while live. Client resubscription required.",
            )

    def _follow_stream(self, options: Any, stream: str, gone: threading.Event) -> Iterator[Any]:
        sopts = options.stream
        which = sopts.WhichOneof("revision_option")
        if which == "revision":
            next_version = int(sopts.revision) + 1
        elif which == "end":
            next_version = self.store.stream_version(stream) + 1
        else:
            next_version = 0
        caught_up = False
        while True:
            seen = self.store.last_seq
            state = stream_state(self.store, base_stream(stream))
            if state.tombstoned:
                raise StreamDeleted(base_stream(stream))
            if not stream.startswith("$$"):
                next_version = max(next_version, state.truncate_before)
            n = 0
            for event in self.store.read_stream(stream, from_version=next_version, limit=PAGE):
                yield recorded_event(event)
                next_version = event.version + 1
                n += 1
            if n == PAGE:
                if caught_up:
                    self._too_slow(self.store.stream_version(stream) - next_version)
                continue
            if not caught_up:
                caught_up = True
                yield streams_pb2.ReadResp(
                    caught_up=streams_pb2.ReadResp.CaughtUp(
                        timestamp=_timestamp(), stream_revision=next_version - 1
                    )
                )
            if not self._wait(seen, gone):
                return

    def _follow_all(
        self, options: Any, filt: EventFilter | None, gone: threading.Event
    ) -> Iterator[Any]:
        aopts = options.all
        which = aopts.WhichOneof("all_option")
        if which == "position":
            _check_position(aopts.position.commit_position)
            after = aopts.position.commit_position // POSITION_STEP
        elif which == "end":
            after = self.store.last_seq
        else:
            after = 0
        window = 0
        if filt is not None:
            f = options.filter
            size = f.max if f.WhichOneof("window") == "max" and f.max > 0 else 32
            window = size * max(1, f.checkpointIntervalMultiplier)
        scanned = 0
        caught_up = False
        while True:
            seen = self.store.last_seq
            n = 0
            for event in read_all_from(self.store, after + 1, False, filt):
                after = event.seq
                n += 1
                if filt is None or filt.matches(event):
                    yield recorded_event(event)
                scanned += 1
                if window and scanned >= window:
                    scanned = 0
                    yield self._checkpoint(after)
                if n == PAGE:
                    break
            if n == PAGE:
                if caught_up:
                    self._too_slow(self.store.last_seq - after)
                continue
            after = max(after, seen)  # seqs below seen that we did not meet were removed
            if not caught_up:
                caught_up = True
                if window:
                    yield self._checkpoint(after)
                position = position_of(after)
                yield streams_pb2.ReadResp(
                    caught_up=streams_pb2.ReadResp.CaughtUp(
                        timestamp=_timestamp(),
                        position=streams_pb2.ReadResp.Position(
                            commit_position=position, prepare_position=position
                        ),
                    )
                )
            if not self._wait(seen, gone):
                return

    @staticmethod
    def _checkpoint(seq: int) -> streams_pb2.ReadResp:
        position = position_of(seq)
        return streams_pb2.ReadResp(
            checkpoint=streams_pb2.ReadResp.Checkpoint(
                commit_position=position, prepare_position=position, timestamp=_timestamp()
            )
        )

    # -- Append -----------------------------------------------------------------

    def Append(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("content") != "options":
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "append must begin with options")
            stream = _stream_name(first.options.stream_identifier)
            expected = _expected(first.options, "revision")
            messages = []
            for req in request_iterator:
                if req.WhichOneof("content") != "proposed_message":
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "options sent twice")
                messages.append(req.proposed_message)
            events = _proposed(messages, self.limits.max_append_size)
            self._check_deadline(context)
            if not events:
                return self._empty_append(stream, expected)
            try:
                done = self.ops.append(stream, events, expected)
            except WrongExpectedVersion as exc:
                return self._wrong_version(expected, exc.actual)
            return self._success(done)
        except (EventStoreError, _Refused, ValueError, TypeError) as exc:
            self._fail(context, exc)
            raise AssertionError("unreachable") from exc

    def _empty_append(self, stream: str, expected: Any) -> streams_pb2.AppendResp:
        """KurrentDB checks the expected version of an empty append, writing nothing."""
        state = stream_state(self.store, base_stream(stream))
        if state.tombstoned:
            raise StreamDeleted(base_stream(stream))
        current = state.version if state.visible else -1
        ok = (
            expected is ANY
            or (expected is NO_STREAM and current == -1)
            or (expected is STREAM_EXISTS and current >= 0)
            or expected == current
        )
        if not ok:
            return self._wrong_version(expected, current)
        success = streams_pb2.AppendResp.Success()
        if current < 0:
            success.no_stream.CopyFrom(shared_pb2.Empty())
        else:
            success.current_revision = current
        success.no_position.CopyFrom(shared_pb2.Empty())
        return streams_pb2.AppendResp(success=success)

    @staticmethod
    def _success(done: Appended) -> streams_pb2.AppendResp:
        return streams_pb2.AppendResp(
            success=streams_pb2.AppendResp.Success(
                current_revision=done.last_version,
                position=streams_pb2.AppendResp.Position(
                    commit_position=done.position, prepare_position=done.position
                ),
            )
        )

    @staticmethod
    def _wrong_version(expected: Any, actual: int) -> streams_pb2.AppendResp:
        wev = streams_pb2.AppendResp.WrongExpectedVersion()
        if actual < 0:
            wev.current_no_stream.CopyFrom(shared_pb2.Empty())
        else:
            wev.current_revision = actual
        if expected is ANY:
            wev.expected_any.CopyFrom(shared_pb2.Empty())
        elif expected is NO_STREAM:
            wev.expected_no_stream.CopyFrom(shared_pb2.Empty())
        elif expected is STREAM_EXISTS:
            wev.expected_stream_exists.CopyFrom(shared_pb2.Empty())
        else:
            wev.expected_revision = expected
        return streams_pb2.AppendResp(wrong_expected_version=wev)

    # -- BatchAppend --------------------------------------------------------------

    def BatchAppend(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        pending: dict[str, tuple[Any, list[Any], float | None]] = {}
        try:
            for req in request_iterator:
                key = req.correlation_id.SerializeToString()
                if req.HasField("options"):
                    deadline = None
                    if req.options.WhichOneof("deadline_option") == "deadline":
                        d = req.options.deadline
                        deadline = time.monotonic() + d.seconds + d.nanos / 1e9
                    pending[key] = (req.options, [], deadline)
                if key not in pending:
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "batch append without options")
                options, messages, deadline = pending[key]
                messages.extend(req.proposed_messages)
                if len(pending) > 64:
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "too many open batches")
                if req.is_final:
                    del pending[key]
                    yield self._batch(req.correlation_id, options, messages, deadline)
        except (EventStoreError, _Refused, ValueError, TypeError) as exc:
            self._fail(context, exc)

    def _batch(
        self, correlation_id: Any, options: Any, messages: list[Any], deadline: float | None
    ) -> streams_pb2.BatchAppendResp:
        resp = streams_pb2.BatchAppendResp(
            correlation_id=correlation_id, stream_identifier=options.stream_identifier
        )
        expected = _expected(options, "stream_position")
        if type(expected) is int:
            resp.stream_position = expected
        elif expected is NO_STREAM:
            resp.no_stream.CopyFrom(_EMPTY)
        elif expected is STREAM_EXISTS:
            resp.stream_exists.CopyFrom(_EMPTY)
        else:
            resp.any.CopyFrom(_EMPTY)
        try:
            stream = _stream_name(options.stream_identifier)
            if deadline is not None and time.monotonic() > deadline:
                return self._batch_error(resp, 4, "Timeout", shared_pb2.Timeout())
            try:
                events = _proposed(messages, self.limits.max_append_size)
            except _Refused as exc:
                if exc.details.startswith("Maximum Append Size"):
                    detail: Any = shared_pb2.MaximumAppendSizeExceeded(
                        maxAppendSize=self.limits.max_append_size
                    )
                else:
                    detail = shared_pb2.BadRequest(message=exc.details)
                return self._batch_error(resp, 3, exc.details, detail)
            done = self.ops.append(stream, events, expected) if events else None
        except WrongExpectedVersion as exc:
            wev = shared_pb2.WrongExpectedVersion()
            if exc.actual < 0:
                wev.current_no_stream.CopyFrom(_EMPTY)
            else:
                wev.current_stream_revision = exc.actual
            if type(expected) is int:
                wev.expected_stream_position = expected
            elif expected is NO_STREAM:
                wev.expected_no_stream.CopyFrom(_EMPTY)
            elif expected is STREAM_EXISTS:
                wev.expected_stream_exists.CopyFrom(_EMPTY)
            else:
                wev.expected_any.CopyFrom(_EMPTY)
            return self._batch_error(resp, 9, "WrongExpectedVersion", wev)
        except StreamDeleted as exc:
            return self._batch_error(
                resp,
                9,
                _deleted_text(exc.stream),
                shared_pb2.StreamDeleted(
                    stream_identifier=shared_pb2.StreamIdentifier(stream_name=exc.stream.encode())
                ),
            )
        except _Refused as exc:
            return self._batch_error(
                resp, 3, exc.details, shared_pb2.BadRequest(message=exc.details)
            )
        except (ValueError, TypeError) as exc:
            return self._batch_error(resp, 3, str(exc), shared_pb2.BadRequest(message=str(exc)))
        if done is None:
            resp.success.no_position.CopyFrom(_EMPTY)
            resp.success.no_stream.CopyFrom(_EMPTY)
        else:
            resp.success.current_revision = done.last_version
            resp.success.position.commit_position = done.position
            resp.success.position.prepare_position = done.position
        return resp

    @staticmethod
    def _batch_error(
        resp: streams_pb2.BatchAppendResp, code: int, message: str, detail: Any
    ) -> streams_pb2.BatchAppendResp:
        packed = any_pb2.Any()
        packed.Pack(detail)
        resp.error.CopyFrom(status_pb2.Status(code=code, message=message, details=packed))  # type: ignore[arg-type]
        return resp

    # -- Delete, Tombstone ----------------------------------------------------------

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._delete(request, context, delete_stream, streams_pb2.DeleteResp)

    def Tombstone(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._delete(request, context, tombstone_stream, streams_pb2.TombstoneResp)

    def _delete(
        self, request: Any, context: grpc.ServicerContext, how: Callable[..., Any], resp: Any
    ) -> Any:
        try:
            stream = _stream_name(request.options.stream_identifier)
            expected = _expected(request.options, "revision")
            self._check_deadline(context)
            try:
                with self.ops._lock(stream):
                    result = how(self.store, stream, expected)
            except WrongExpectedVersion as exc:
                raise _Refused(
                    grpc.StatusCode.FAILED_PRECONDITION, _wev_text(stream, expected, exc.actual)
                ) from None
            position = position_of(result.last_seq)
            return resp(position=resp.Position(commit_position=position, prepare_position=position))
        except (EventStoreError, _Refused, ValueError, TypeError) as exc:
            self._fail(context, exc)
            raise AssertionError("unreachable") from exc
