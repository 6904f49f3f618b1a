"""What every ``eventstore`` command shares: failing with one line, the JSON
encoding of event values, aligned tables and progress bars.

The JSON encoding is lossless for everything msgpack can carry, so that
``all --json``, ``esdb dump --json`` and ``export`` write the same lines and
``import`` reads them back byte for byte:

=============================  =============================================
msgpack value                  JSON
=============================  =============================================
nil, bool, int, str, array     themselves
finite float                   itself
NaN, +inf, -inf                ``{"$float": "nan" | "nan:<16 hex digits>" | "inf" | "-inf"}``
bin (bytes)                    ``{"$bytes": "<base64>"}``
map, all keys str, none        an object
starting with ``$``
any other map                  ``{"$map": [[key, value], ...]}``
ext (incl. timestamps)         ``{"$ext": [code, "<base64>"]}``
aware datetime (ext 120)       ``{"$datetime": "<ISO 8601>[<IANA zone>]"}``
                               (RFC 9557: the zone in brackets, for a
                               ``ZoneInfo``; none for a fixed offset), or
                               ``{"$datetime": ["<ISO 8601>", "<name>"]}``
                               for a named ``timezone(offset, name)``;
                               ``[_fold=1]`` ends the text when ``fold=1``
                               is not told by the offset
UUID (ext 121)                 ``{"$uuid": "<8-4-4-4-12 hex>"}``
Decimal (ext 122)              ``{"$decimal": "<str(value)>"}``
=============================  =============================================

A datetime's ISO text carries its UTC offset, which picks ``fold`` for a
wall time a zone passes twice (or never); a value of a type registered with
:func:`eventstore.values.register_ext` is written as its ``$ext``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
import msgpack

from .. import values
from ..errors import EventStoreError
from ..events import Event

F = TypeVar("F", bound=Callable[..., Any])


class BadJSON(EventStoreError, ValueError):
    """A JSON value that does not decode to an event value."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def usage(message: str) -> NoReturn:
    """A usage mistake (a bad option value, a missing or contradicting one):
    one ``error:`` line naming the options, and exit 2, as click's own."""
    raise click.UsageError(message, click.get_current_context(silent=True))


def guard(func: F) -> F:
    """Turn a library error raised mid-command into one stderr line, no traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EventStoreError as exc:
            fail(str(exc))
        except BrokenPipeError:
            # The reader of our output (`| head`) went away: not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:
            fail(str(exc))
        except RecursionError:
            # json.loads of deeply nested input (`import`, `--data -`).
            fail("the input JSON is nested too deeply to decode")
        except Exception as exc:
            # A plyvel or decoding error the library let through: still one line.
            from ..hot import storage_error

            mapped = storage_error(exc, "the store", decoding=False)  # a bug stays a traceback
            if mapped is None:
                raise
            fail(str(mapped))

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


# -- the lossless JSON encoding ------------------------------------------------


_NAN_BITS = struct.pack(">d", math.nan)


def to_json(value: Any) -> Any:
    """A msgpack value as a JSON value (see the module docstring)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if math.isnan(value):
            bits = struct.pack(">d", value)
            # NaNs carry payload bits; keep any but the usual one, losslessly.
            return {"$float": "nan" if bits == _NAN_BITS else "nan:" + bits.hex()}
        return {"$float": "inf" if value > 0 else "-inf"}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: to_json(v) for k, v in value.items()}
        return {"$map": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if isinstance(value, msgpack.ExtType):  # a namedtuple: before the tuples
        return {"$ext": [value.code, base64.b64encode(value.data).decode("ascii")]}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, msgpack.Timestamp):
        return {"$ext": [-1, base64.b64encode(value.to_bytes()).decode("ascii")]}
    if isinstance(value, datetime):
        return {"$datetime": _datetime_json(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, Decimal):
        return {"$decimal": Decimal.__str__(value)}
    try:
        ext = values.encode_value(value)  # a type with a registered codec
    except TypeError:
        ext = None
    if ext is not None:
        return to_json(ext)
    return {"$repr": repr(value)}  # never made by msgpack; refused by from_json


def _datetime_json(value: datetime) -> str | list[str]:
    tz = value.tzinfo
    text = value.isoformat()
    key = getattr(tz, "key", None) if type(tz) is not timezone else None
    if isinstance(key, str):
        text += f"[{key}]"
    # fold=1 that the offset does not tell (RFC 9557's suffix syntax, a private key).
    if value.fold and (key is None or value.replace(fold=0).utcoffset() == value.utcoffset()):
        text += _FOLD_TAG
    if type(tz) is timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]  # (offset[, name])
        if len(args) == 2:
            return [text, str(args[1])]
    return text


_FOLD_TAG = "[_fold=1]"
_OFFSET = re.compile(r"(.+?)([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?")
_ZONE_SUFFIX = re.compile(r"(.*)\[([^\[\]]+)\]")


def _datetime_from_json(inner: Any) -> datetime:
    name: str | None = None
    if isinstance(inner, list) and len(inner) == 2 and all(isinstance(x, str) for x in inner):
        inner, name = inner
    if not isinstance(inner, str):
        raise BadJSON("$datetime wants an ISO 8601 string (or [ISO 8601, zone name])")
    fold = 1 if inner.endswith(_FOLD_TAG) else 0
    inner = inner.removesuffix(_FOLD_TAG)
    zone = None
    if name is None and (m := _ZONE_SUFFIX.fullmatch(inner)):
        inner, zone = m.group(1), m.group(2)
    # The offset by hand: fromisoformat() loses an offset's microseconds near zero.
    m = _OFFSET.fullmatch(inner)
    if m is None:
        try:
            datetime.fromisoformat(inner)
        except ValueError:
            raise BadJSON(f"$datetime holds no ISO 8601 date and time: {inner[:40]!r}") from None
        raise BadJSON(f"$datetime {inner[:40]!r} has no UTC offset (naive times are refused)")
    try:
        wall = datetime.fromisoformat(m.group(1))
    except ValueError:
        raise BadJSON(f"$datetime holds no ISO 8601 date and time: {inner[:40]!r}") from None
    if wall.tzinfo is not None:
        raise BadJSON(f"$datetime holds no ISO 8601 date and time: {inner[:40]!r}")
    sign, hours, minutes, seconds, micros = m.group(2, 3, 4, 5, 6)
    offset = timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds or 0),
        microseconds=int(micros or 0),
    ) * (-1 if sign == "-" else 1)
    if offset >= timedelta(days=1):
        raise BadJSON(f"$datetime {inner[:40]!r}: the offset is a day or more")
    wall = wall.replace(fold=fold)
    if zone is None:
        return wall.replace(tzinfo=timezone(offset) if name is None else timezone(offset, name))
    try:
        tzinfo = values.zone(zone)
    except ValueError as exc:
        raise BadJSON(f"$datetime: {exc}") from None
    for candidate_fold in (fold,) if fold else (0, 1):  # the fold the offset gives (RFC 9557)
        candidate = wall.replace(tzinfo=tzinfo, fold=candidate_fold)
        if candidate.utcoffset() == offset:
            return candidate
    raise BadJSON(f"$datetime {inner[:40]!r}: offset {offset} is not one zone {zone} has then")


def _b64(text: Any, tag: str) -> bytes:
    if not isinstance(text, str):
        raise BadJSON(f"{tag} wants a base64 string, got {json.dumps(text)[:40]}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadJSON(f"{tag} holds invalid base64: {text[:40]!r}") from None


def from_json(value: Any) -> Any:
    """The msgpack value that :func:`to_json` made ``value`` from."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag.startswith("$"):
            return _tagged(tag, inner)
    for k in value:
        if k.startswith("$"):
            raise BadJSON(f"object key {k!r} starts with '$': write such maps as {{\"$map\": ...}}")
    return {k: from_json(v) for k, v in value.items()}


def _tagged(tag: str, inner: Any) -> Any:
    if tag == "$bytes":
        return _b64(inner, tag)
    if tag == "$map":
        if not isinstance(inner, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in inner
        ):
            raise BadJSON("$map wants a list of [key, value] pairs")
        out: dict[Any, Any] = {}
        for k, v in inner:
            key = from_json(k)
            if isinstance(key, (list, dict)):
                raise BadJSON("$map keys must be scalars")
            out[key] = from_json(v)
        return out
    if tag == "$float":
        table = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
        if isinstance(inner, str) and inner.startswith("nan:") and len(inner) == 20:
            try:
                value: float = struct.unpack(">d", bytes.fromhex(inner[4:]))[0]
            except ValueError:
                raise BadJSON(f"$float NaN bits must be 16 hex digits, got {inner!r}") from None
            if math.isnan(value):
                return value
        if inner not in table:
            raise BadJSON(f"$float wants 'nan', 'inf' or '-inf', got {inner!r}")
        return table[inner]
    if tag == "$ext":
        if not (
            isinstance(inner, list)
            and len(inner) == 2
            and type(inner[0]) is int
            and -128 <= inner[0] <= 127
        ):
            raise BadJSON("$ext wants [code (-128..127), base64]")
        return msgpack.ExtType(inner[0], _b64(inner[1], tag))
    if tag == "$datetime":
        return _datetime_from_json(inner)
    if tag == "$uuid":
        if not isinstance(inner, str):
            raise BadJSON("$uuid wants a string")
        try:
            return uuid.UUID(inner)
        except ValueError:
            raise BadJSON(f"$uuid holds no UUID: {inner[:40]!r}") from None
    if tag == "$decimal":
        if not isinstance(inner, str) or not _DECIMAL.fullmatch(inner):
            raise BadJSON(f"$decimal wants a decimal number as a string, got {str(inner)[:40]!r}")
        return Decimal(inner)
    if tag == "$repr":
        raise BadJSON(f"a $repr value cannot be read back: {str(inner)[:60]}")
    raise BadJSON(f"unknown tag {tag!r}")


# What Decimal() reads, less the spaces and underscores it also takes.
_DECIMAL = re.compile(
    r"[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|inf(inity)?|s?nan\d*)", re.IGNORECASE
)


def parse_json(text: str, what: str) -> Any:
    """A value given on the command line as JSON (``--data``), decoded."""
    try:
        return from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise BadJSON(f"{what} is not valid JSON: {exc}") from None
    except BadJSON as exc:
        raise BadJSON(f"{what}: {exc}") from None


def event_json(ev: Event) -> dict[str, Any]:
    """One event as a JSON object: the line format of every ``--json`` output and of
    ``export``."""
    line = {
        "id": str(ev.id),
        "stream": ev.stream,
        "version": ev.version,
        "seq": ev.seq,
        "type": ev.type,
        "data": to_json(ev.data),
        "metadata": to_json(ev.metadata),
        "indexes": to_json(ev.indexes),
        "timestamp": ev.timestamp.isoformat(),
    }
    if ev.tags:  # only when there are some: untagged lines stay as they were
        line["tags"] = list(ev.tags)
    return line


def compact_json(value: Any) -> str:
    """Event data for a human table: one line, non-ASCII kept."""
    return json.dumps(to_json(value), ensure_ascii=False, separators=(", ", ": "))


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


# -- human output ---------------------------------------------------------------


def human_time(ev: Event) -> str:
    return ev.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """``name  value`` lines with the values aligned."""
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value}")


class Table:
    """Rows printed as aligned columns, streaming.

    The first ``buffer`` rows are held back to size the columns; after that
    rows print at once and the columns stay where they are: a later cell too
    wide for its column pushes the rest of its own row only, never the rows
    after it. ``min_widths`` sizes columns whose widest cell is known ahead
    (seqs up to the store's last). The last column is never padded.
    """

    def __init__(
        self,
        heads: Sequence[str],
        numeric: set[int] | None = None,
        buffer: int = 200,
        min_widths: Sequence[int] = (),
    ) -> None:
        self.heads = list(heads)
        self.numeric = numeric or set()
        self.widths = [
            max(len(h), w) for h, w in zip(heads, [*min_widths, *[0] * len(heads)], strict=False)
        ]
        self.buffer = buffer
        self.held: list[list[str]] | None = []
        if buffer == 0:
            self._flush()

    def _line(self, cells: Sequence[str]) -> str:
        parts = [
            c.rjust(self.widths[i]) if i in self.numeric else c.ljust(self.widths[i])
            for i, c in enumerate(cells[:-1])
        ]
        parts.append(cells[-1])
        return "  ".join(parts).rstrip()

    def _flush(self) -> None:
        held, self.held = self.held or [], None
        for row in held:
            for i, cell in enumerate(row[:-1]):
                self.widths[i] = max(self.widths[i], len(cell))
        click.echo(self._line(self.heads))
        for row in held:
            click.echo(self._line(row))

    def row(self, cells: Sequence[str]) -> None:
        if self.held is None:
            click.echo(self._line(cells))
            return
        self.held.append(list(cells))
        if len(self.held) >= self.buffer:
            self._flush()

    def flush(self) -> None:
        """Print what is held back (the header alone if there were no rows); later
        rows print at once."""
        if self.held is not None:
            self._flush()


# -- progress bars --------------------------------------------------------------


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal, nothing when piped.

    Yields ``advance(n)``; redraws at most ten times a second, so calling it
    per event costs little.
    """
    if not on_terminal() or length <= 0:
        yield lambda n: None
        return
    pending = 0
    last = 0.0
    with click.progressbar(
        length=length, label=label, file=sys.stderr, show_pos=True, show_percent=True
    ) as bar:

        def advance(n: int) -> None:
            nonlocal pending, last
            pending += n
            now = time.monotonic()
            if now - last >= 0.1:
                bar.update(pending)
                pending, last = 0, now

        yield advance
        bar.update(pending)
