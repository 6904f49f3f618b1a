"""Operator commands on a served store: `eventstore stats|read|compact|backup|
verify|... PATH` work while `eventstore serve PATH` holds the store.

The server listens on a Unix socket in the store's folder (``serve.sock``,
mode 0600: whoever may connect could open the store's files anyway). A
command that finds the store locked by a server sends it its name and its
parsed parameters (paths made absolute); the server runs the same command on
its own open store, streaming back what it prints and its exit status. One
command at a time; the store is never opened twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
import grpc

from ..ids import ulid_from_int
from ..store import EventStore
from .output import event_json
from .served import SERVED

SOCKET_NAME = "serve.sock"
METHOD = "/eventstore.admin.Admin/Run"
FOLLOW = "/eventstore.admin.Admin/Follow"
_WAKE = 0.5  # how often a follower that sees no events checks its client is there
_MAX_PATH = 100  # sun_path is 108 bytes on Linux


def socket_path(store_path: str) -> str:
    return os.path.join(os.path.realpath(store_path), SOCKET_NAME)


class _Chunks(io.TextIOBase):
    """A text stream whose writes become response chunks."""

    def __init__(self, out: queue.Queue[dict[str, Any]], key: str) -> None:
        self._out = out
        self._key = key

    def writable(self) -> bool:
        return True

    def write(self, text: str | bytes) -> int:
        if isinstance(text, bytes):  # click writes bytes to some streams
            text = text.decode("utf-8", "replace")
        if text:
            self._out.put({self._key: text})
        return len(text)

    def isatty(self) -> bool:
        return False


_run_lock = threading.Lock()  # sys.stdout is process-wide: one command at a time


def _run(
    store: EventStore,
    cli_main: click.Group,
    request: dict[str, Any],
    out: queue.Queue[dict[str, Any]],
) -> None:
    code = 0
    try:
        command: Any = cli_main
        for name in request["command"]:
            command = command.commands[name]
        params = request["params"]
        with (
            _run_lock,
            contextlib.redirect_stdout(_Chunks(out, "o")),
            contextlib.redirect_stderr(_Chunks(out, "e")),
        ):
            SERVED[os.path.realpath(store.path)] = store
            try:
                root = click.Context(cli_main, info_name="eventstore", obj={"lock_timeout": 0.0})
                with root:
                    root.invoke(command, **params)
            except click.ClickException as exc:
                click.echo(f"error: {exc.format_message()}", err=True)
                code = exc.exit_code
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                SERVED.pop(os.path.realpath(store.path), None)
    except Exception as exc:  # report, never take the server down
        out.put({"e": f"error: {type(exc).__name__}: {exc}\n"})
        code = 1
    out.put({"x": code})


class AdminServer:
    """The operator socket of a served store. ``command`` is the root
    ``eventstore`` group the requests name commands of (given, not imported:
    the CLI package imports this module)."""

    def __init__(self, store: EventStore, command: click.Group) -> None:
        self.store = store
        self.command = command
        self.path = socket_path(store.path)
        self._server: grpc.Server | None = None

    def start(self) -> bool:
        """Listen; False when the folder's path is too long for a Unix socket."""
        if len(self.path) > _MAX_PATH:
            return False
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # left by a killed server: we hold the store lock
        handler = grpc.method_handlers_generic_handler(
            "eventstore.admin.Admin",
            {
                "Run": grpc.unary_stream_rpc_method_handler(
                    self._serve_run,
                    request_deserializer=lambda b: json.loads(b),
                    response_serializer=lambda m: json.dumps(m).encode(),
                ),
                "Follow": grpc.unary_stream_rpc_method_handler(
                    self._serve_follow,
                    request_deserializer=lambda b: json.loads(b),
                    response_serializer=lambda m: json.dumps(m).encode(),
                ),
            },
        )
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[handler])
        old = os.umask(0o177)
        try:
            self._server.add_insecure_port(f"unix:{self.path}")
            self._server.start()
        finally:
            os.umask(old)
        return True

    def _serve_run(
        self, request: dict[str, Any], context: grpc.ServicerContext
    ) -> Iterator[dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("command"), list):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad admin request")
        out: queue.Queue[dict[str, Any]] = queue.Queue()
        worker = threading.Thread(
            target=_run, args=(self.store, self.command, request, out), daemon=True
        )
        worker.start()
        while True:
            chunk = out.get()
            yield chunk
            if "x" in chunk:
                return

    def _serve_follow(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[dict[str, Any]]:
        """``eventstore tail`` on the served store: the last ``lines`` events
        (or those after ``after``), then each new one as it commits, through a
        subscription, until the client goes. Runs beside other commands: it
        prints nothing, it sends events."""
        def bad(why: str) -> None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad follow request: {why}")

        if not isinstance(request, dict):
            bad("not an object")
        after, lines = request.get("after"), request.get("lines")
        types, prefix = request.get("types"), request.get("prefix")
        if after is not None and not isinstance(after, str):
            bad("after")
        if type(lines) is not int or lines < 0:
            bad("lines")
        if types is not None and not (
            isinstance(types, list) and all(isinstance(t, str) for t in types)
        ):
            bad("types")
        if prefix is not None and not isinstance(prefix, str):
            bad("prefix")
        store = self.store
        filters: dict[str, Any] = {"types": types or None, "stream_prefix": prefix}
        position = after
        if after is None:
            # The newest event first, then the last lines up to it: an event
            # committed meanwhile comes after it, from the subscription (the
            # other way round, one committed between the two reads was lost).
            newest = next(iter(store.read_all(backwards=True, limit=1)), None)
            if newest is not None:
                above = int(newest.id) + 1
                below = ulid_from_int(above) if above < 1 << 128 else None
                last = store.read_all(below, backwards=True, limit=lines, **filters)
                for ev in reversed(list(last)):
                    yield {"ev": event_json(ev)}
                position = str(newest.id)
                yield {"pos": position}
        yield {"live": True}
        with store.subscribe(after=position, **filters) as sub:
            while context.is_active() and not store.closed:
                ev = sub.get(timeout=_WAKE)
                if ev is not None:
                    yield {"ev": event_json(ev)}

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(5).wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def forward(path: str) -> int | None:
    """Run the current click command on the server that holds ``path``;
    its exit status, or None when no server answers there."""
    sock = socket_path(path)
    if not os.path.exists(sock):
        return None
    ctx = click.get_current_context()
    names = []
    at: click.Context | None = ctx
    while at is not None and at.parent is not None:
        assert at.info_name is not None
        names.append(at.command.name or at.info_name)
        at = at.parent
    params = dict(ctx.params)
    for param in ctx.command.params:
        value = params.get(param.name or "")
        if isinstance(param.type, click.Path) and isinstance(value, str) and value != "-":
            params[param.name or ""] = os.path.abspath(value)
    request = {"command": list(reversed(names)), "params": params}
    try:
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            call = channel.unary_stream(
                METHOD,
                request_serializer=lambda m: json.dumps(m).encode(),
                response_deserializer=json.loads,
            )
            code = 1
            for chunk in call(request, wait_for_ready=False, timeout=None):
                if "o" in chunk:
                    click.echo(chunk["o"], nl=False)
                elif "e" in chunk:
                    click.echo(chunk["e"], nl=False, err=True)
                elif "x" in chunk:
                    code = int(chunk["x"])
            return code
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None  # a socket file without a server behind it
        raise click.ClickException(f"the server holding {path} failed: {exc.details()}") from None


def follow(
    path: str, after: str | None, lines: int, types: list[str] | None, prefix: str | None
) -> Iterator[dict[str, Any]] | None:
    """The messages of ``Follow`` from the server holding ``path`` (``ev``: an
    event as ``event_json`` gives it; ``pos``: the log's newest id; ``live``:
    caught up), or None when no server answers there. Ends when the server
    stops."""
    sock = socket_path(path)
    if not os.path.exists(sock):
        return None
    channel = grpc.insecure_channel(f"unix:{sock}")
    call = channel.unary_stream(
        FOLLOW,
        request_serializer=lambda m: json.dumps(m).encode(),
        response_deserializer=json.loads,
    )
    request = {"after": after, "lines": lines, "types": types, "prefix": prefix}
    stream = call(request, wait_for_ready=False, timeout=None)
    try:
        first = next(stream)
    except StopIteration:
        channel.close()
        return iter(())
    except grpc.RpcError as exc:
        channel.close()
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None
        raise click.ClickException(f"the server holding {path} failed: {exc.details()}") from None

    def rest() -> Iterator[dict[str, Any]]:
        try:
            yield first
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise click.ClickException(
                    f"the server holding {path} failed: {exc.details()}"
                ) from None
        finally:
            stream.cancel()
            channel.close()

    return rest()
