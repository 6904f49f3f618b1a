"""Values people store: aware datetimes, UUIDs and Decimals round-trip exactly in
both tiers, through JSON and the CLI; user codecs; ext values decode inert;
ExtType codes msgpack would wrap are refused; errors name the offending path."""

from __future__ import annotations

import json
import logging
import re
import uuid
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore, NewEvent
from eventstore.cli.output import BadJSON, from_json, to_json
from eventstore.errors import InvalidArgument, UnserialisableData
from eventstore.values import (
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_UUID,
    decode_ext,
    register_ext,
    unregister_ext,
)

from .test_cli import ok

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def same(a: Any, b: Any) -> bool:
    """Equal in type and value, a datetime also in wall time, fold and tzinfo,
    a Decimal also in its digits and exponent (so NaNs, -0 and 1.0 vs 1.00)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        ta, tb = a.tzinfo, b.tzinfo
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and type(ta) is type(tb)
            and repr(ta) == repr(tb)  # timezone's repr shows its offset and name
            and a.utcoffset() == b.utcoffset()
        )
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


def tricky_values() -> dict[str, Any]:
    return {
        "utc": datetime(2026, 12, 2, 7, 0, 0, 123456, tzinfo=UTC),
        "paris": datetime(2026, 7, 14, 12, 0, tzinfo=PARIS),
        "second_0130": datetime(2021, 11, 7, 1, 30, tzinfo=NEW_YORK, fold=1),  # passed twice
        "first_0130": datetime(2021, 11, 7, 1, 30, tzinfo=NEW_YORK, fold=0),
        "in_the_gap": datetime(2021, 3, 14, 2, 30, tzinfo=NEW_YORK),  # never on a clock
        "fixed": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # before 1 AD in UTC
        "named": datetime(
            9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=5), "EST")
        ),
        "sub_second_offset": datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=-7))),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "uuids": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)],
        "price": Decimal("19.90"),  # the trailing zero kept
        "decimals": [
            Decimal("-0"),
            Decimal("1E+3"),
            Decimal("-1.2300E-50"),
            Decimal("NaN12"),
            Decimal("-sNaN"),
            Decimal("Infinity"),
            Decimal("3.14159265358979323846264338327950288"),
        ],
        "nested": {"at": [{"when": datetime(2020, 2, 29, tzinfo=PARIS)}]},
        Decimal("2.50"): "a Decimal key",
        uuid.UUID(int=7): "a UUID key",
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.open(tmp_path / "s") as s:
        yield s


def test_values_round_trip_exactly_hot_and_after_compaction(store: EventStore) -> None:
    data = tricky_values()
    meta = {"request": uuid.UUID(int=99), "at": datetime(2026, 1, 1, tzinfo=PARIS)}
    r = store.append("s", [NewEvent("T", data, metadata=meta)] * 3)  # rows
    store.append("t", [NewEvent("T", data, metadata=meta)] * 20)  # the bulk path
    store.save_snapshot("s", 2, data)
    store.set_checkpoint("c", data)

    def check() -> None:
        events = list(store.read_all())
        assert len(events) == 23
        for e in events:
            assert same(e.data, data) and same(e.metadata, meta)
        got = store.get(r.ids[1])
        assert got is not None and same(got.data, data)
        snap = store.load_snapshot("s")
        assert snap is not None and same(snap.state, data)
        assert same(store.get_checkpoint("c"), data)

    check()
    store.compact(before=list(store.read_all())[-1].id)
    assert len(store.archive_files()) == 1
    check()  # the cold tier decodes the same bytes the same way


def test_the_encoding_is_the_documented_one(store: EventStore) -> None:
    """The ext bytes docs/FORMAT.md specifies, read back from the store's own record."""
    when = datetime(2021, 11, 7, 1, 30, tzinfo=NEW_YORK, fold=1)  # EST: -05:00
    u = uuid.UUID(int=1)
    store.append("s", [NewEvent("T", [when, u, Decimal("-1.50")])])
    raw = store._hot.db.get(next(k for k, _ in store._hot.db.iterator(prefix=b"e")))
    record = msgpack.unpackb(raw, raw=False)  # no hook: the ext values as stored
    dt, uu, dec = record[3]
    instant_us = int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    assert dt == msgpack.ExtType(
        EXT_DATETIME,
        instant_us.to_bytes(8, "big", signed=True)
        + (-5 * 3600 * 10**6).to_bytes(8, "big", signed=True)
        + bytes([0b011])  # kind 1 (IANA zone) << 1 | fold
        + b"America/New_York",
    )
    assert uu == msgpack.ExtType(EXT_UUID, u.bytes)
    assert dec == msgpack.ExtType(EXT_DECIMAL, b"-1.50")
    assert same(decode_ext(*dt), when)


aware = st.datetimes(
    timezones=st.one_of(
        st.timezones(),
        st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        ),
        st.builds(
            timezone,
            st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
            st.text(min_size=1, max_size=20),
        ),
    )
)
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(places=4)
stored_values = st.lists(aware | st.uuids() | decimals, min_size=1, max_size=8)


@settings(max_examples=60)
@given(values=stored_values)
def test_any_aware_datetime_uuid_decimal_round_trips(
    tmp_path_factory: Any, values: list[Any]
) -> None:
    with EventStore.open(tmp_path_factory.mktemp("v")) as store:
        store.append("s", [NewEvent("T", values)])
        assert same(next(store.read_stream("s")).data, values)
        store.compact(before=store.read_all(backwards=True, limit=1).__next__().id)
        store.append("s", [NewEvent("T", None)])  # the cutoff event stays hot
        assert same(next(store.read_stream("s")).data, values)
    json_form = json.loads(json.dumps(to_json(values), allow_nan=False))
    assert same(from_json(json_form), values)


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        (
            {"items": [1, 2, 3, {"price": object()}]},
            "data['items'][3]['price'] is an object",
            "msgpack cannot carry object values",
        ),
        ({"at": datetime(2026, 1, 1)}, "data['at'] is a datetime", "naive datetime"),
        ({"s": [set()]}, "data['s'][0] is a set", "cannot carry set"),
        ({"when": datetime(2026, 1, 1).date()}, "data['when'] is a date", "cannot carry date"),
    ],
)
def test_unsupported_values_are_refused_naming_their_path(
    store: EventStore, value: Any, path: str, message: str
) -> None:
    store.append("s", [NewEvent("Before")])
    for n in (1, 12):  # one event at a time, and in bulk
        with pytest.raises(UnserialisableData, match="cannot be stored") as info:
            store.append("s", [NewEvent("T")] * (n - 1) + [NewEvent("T", value)])
        assert isinstance(info.value, TypeError)
        assert path in str(info.value) and message in str(info.value), str(info.value)
        assert f"event {n - 1} ('T') of stream 's'" in str(info.value)
    with pytest.raises(
        UnserialisableData,
        match=r"metadata\['items'\]|metadata\['at'\]|metadata\['s'\]|metadata\['when'\]",
    ):
        store.append("s", [NewEvent("T", None, metadata=value)])
    with pytest.raises(UnserialisableData, match=re.escape(path.replace("data", "state", 1))):
        store.save_snapshot("s", 0, value)
    assert store.last_seq == 1 and store.load_snapshot("s") is None


class Offset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)


def test_a_tzinfo_that_would_not_come_back_as_itself_is_refused(store: EventStore) -> None:
    with pytest.raises(UnserialisableData, match=r"data\[0\] is a datetime: .*tzinfo Offset"):
        store.append("s", [NewEvent("T", [datetime(2026, 1, 1, tzinfo=Offset())])])
    assert store.last_seq == 0


# -- ExtType codes (issue 13, item 9) ----------------------------------------------------


def out_of_range() -> list[msgpack.ExtType]:
    base = msgpack.ExtType(5, b"xy")
    return [
        base._replace(code=200),  # would be stored as -56
        msgpack.ExtType._make((300, b"z")),  # as 44
        tuple.__new__(msgpack.ExtType, (-129, b"")),  # as 127
    ]


@pytest.mark.parametrize("bad", out_of_range(), ids=["200", "300", "-129"])
def test_ext_codes_outside_a_byte_are_refused_not_wrapped(store: EventStore, bad: Any) -> None:
    for n in (1, 12):
        with pytest.raises(UnserialisableData) as info:
            store.append(
                "s", [NewEvent("T", {})] * (n - 1) + [NewEvent("T", {"items": [0, {"x": bad}]})]
            )
        assert "ExtType at data['items'][1]['x'] has a code outside -128..127" in str(info.value)
    with pytest.raises(UnserialisableData, match=r"ExtType at metadata\[0\]"):
        store.append("s", [NewEvent("T", None, metadata=[bad])])
    with pytest.raises(UnserialisableData, match=r"outside -128\.\.127"):
        store.set_checkpoint("c", {"k": bad})
    assert store.last_seq == 0 and store.get_checkpoint("c") is None
    # In range, every code is kept as it was (-128 and 127 too).
    edge = [msgpack.ExtType(127, b"a"), tuple.__new__(msgpack.ExtType, (-128, b"b"))]
    store.append("s", [NewEvent("T", edge)])
    assert next(store.read_stream("s")).data == edge


def test_keys_that_would_collide_once_decoded_are_refused(store: EventStore) -> None:
    u = uuid.UUID(int=5)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    when = store.append("probe", [NewEvent("T", [at])])
    stored = msgpack.unpackb(  # the ext bytes of `at`, as the hot tier holds them
        store._hot.db.get(next(k for k, _ in store._hot.db.iterator(prefix=b"e"))), raw=False
    )[3][0]
    assert when.last_seq == 1 and isinstance(stored, msgpack.ExtType)
    colliding = [
        {msgpack.ExtType(EXT_UUID, u.bytes): 1, u: 2},
        {msgpack.ExtType(EXT_DECIMAL, b"1"): "x", 1: "y"},  # Decimal(1) == 1
        {"k": {stored: 1, at: 2}},
    ]
    for value in colliding:
        for n in (1, 12):
            with pytest.raises(UnserialisableData, match="same key twice"):
                store.append("s", [NewEvent("T", {})] * (n - 1) + [NewEvent("T", value)])
    assert store.last_seq == 1
    # As values (not keys), or alone, such hand-made ext values are stored and decode.
    store.append("s", [NewEvent("T", {"u": msgpack.ExtType(EXT_UUID, u.bytes), "k": {stored: 1}})])
    assert next(store.read_stream("s")).data == {"u": u, "k": {at: 1}}
    store.verify()


# -- decoding is inert --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "data"),
    [
        (EXT_DATETIME, b""),
        (EXT_DATETIME, bytes(16) + b"\x02" + b"../../../etc/passwd"),  # a zone key that is a path
        (EXT_DATETIME, bytes(16) + b"\x02" + b"No/Such_Zone"),
        (EXT_DATETIME, (2**62).to_bytes(8, "big") + bytes(9)),  # beyond year 9999
        (EXT_DATETIME, bytes(8) + (86_400 * 10**6).to_bytes(8, "big") + b"\x00"),  # 24 h offset
        (EXT_DATETIME, bytes(16) + b"\x00" + b"name on a nameless kind"),
        (EXT_DATETIME, bytes(16) + b"\x08"),  # an unknown kind
        (EXT_UUID, bytes(15)),
        (EXT_DECIMAL, b" 1_0 "),  # Decimal() would take it; not the canonical text
        (EXT_DECIMAL, b"\xff"),
        (EXT_DECIMAL, b"__import__('os')"),
    ],
)
def test_malformed_ext_data_reads_back_as_the_inert_ext_it_is(
    store: EventStore, code: int, data: bytes
) -> None:
    value = msgpack.ExtType(code, data)
    assert decode_ext(code, data) == value
    store.append("s", [NewEvent("T", {"v": value})])
    assert next(store.read_stream("s")).data == {"v": value}
    store.compact(before=list(store.read_all())[-1].id)
    store.append("s", [NewEvent("Later")])
    assert next(store.read_stream("s")).data == {"v": value}


@settings(max_examples=300)
@given(code=st.integers(-128, 127), data=st.binary(max_size=300))
def test_decoding_any_ext_bytes_never_raises(code: int, data: bytes) -> None:
    value = decode_ext(code, data)
    assert isinstance(value, (msgpack.ExtType, datetime, uuid.UUID, Decimal))


# -- user codecs ------------------------------------------------------------------------


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


def money_bytes(m: Money) -> bytes:
    return m.currency.encode() + m.cents.to_bytes(8, "big", signed=True)


def money_from(data: bytes) -> Money:
    return Money(int.from_bytes(data[3:], "big", signed=True), data[:3].decode())


@pytest.fixture
def money_codec() -> Iterator[None]:
    yield
    unregister_ext(7)


def test_a_user_codec_encodes_and_decodes_only_if_registered(
    store: EventStore, money_codec: None, caplog: pytest.LogCaptureFixture
) -> None:
    price = Money(1999, "EUR")
    with pytest.raises(UnserialisableData, match=r"data\['price'\] is a Money"):
        store.append("s", [NewEvent("T", {"price": price})])
    register_ext(7, Money, encode=money_bytes)  # an encoder only
    store.append("s", [NewEvent("T", {"price": price})])
    inert = msgpack.ExtType(7, money_bytes(price))
    assert next(store.read_stream("s")).data == {"price": inert}  # no decoder: inert
    register_ext(7, Money, encode=money_bytes, decode=money_from)
    assert next(store.read_stream("s")).data == {"price": price}
    store.compact(before=store.append("s", [NewEvent("Later")]).ids[0])
    assert next(store.read_stream("s")).data == {"price": price}  # the cold tier too
    assert to_json(price) == to_json(inert)  # the CLI's JSON writes it as its ext

    def broken(data: bytes) -> Money:
        raise RuntimeError("bug in the user's decoder")

    register_ext(7, decode=broken)
    with caplog.at_level(logging.WARNING, logger="eventstore.values"):
        assert next(store.read_stream("s")).data == {"price": inert}  # the read still works
    assert "decoder registered for ext 7 failed" in caplog.text
    store.verify()
    # A decoder only: Money is no longer encoded.
    with pytest.raises(UnserialisableData, match=r"data\[0\] is a Money"):
        store.append("s", [NewEvent("T", [price])])


def test_a_failing_user_encoder_is_a_clear_error(store: EventStore, money_codec: None) -> None:
    register_ext(7, Money, encode=lambda m: m.cents)  # not bytes
    with pytest.raises(
        UnserialisableData, match=r"data\[0\] is a Money: .*returned int, not bytes"
    ):
        store.append("s", [NewEvent("T", [Money(1, "EUR")])])

    def fails(m: Money) -> bytes:
        raise ValueError("no currency")

    register_ext(7, Money, encode=fails)
    with pytest.raises(UnserialisableData, match="no currency"):
        store.append("s", [NewEvent("T", [Money(1, "EUR")])] * 10)
    assert store.last_seq == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((120, Money), {"encode": money_bytes}, "not yours"),
        ((-1,), {"decode": money_from}, "not yours"),
        ((True,), {"decode": money_from}, "must be an int"),
        ((7, Money), {}, "both type and encode"),
        ((7,), {}, "needs an encoder"),
        ((7, datetime), {"encode": str}, "stored by eventstore itself"),
        ((7, "Money"), {"encode": money_bytes}, "wants a class"),
    ],
)
def test_register_ext_refuses_bad_registrations(args: Any, kwargs: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        register_ext(*args, **kwargs)


# -- JSON: the CLI, export and import -------------------------------------------------


def test_json_forms_are_the_documented_ones() -> None:
    assert to_json(datetime(2021, 11, 7, 1, 30, tzinfo=NEW_YORK, fold=1)) == {
        "$datetime": "2021-11-07T01:30:00-05:00[America/New_York]"
    }
    assert to_json(datetime(2026, 1, 1, tzinfo=UTC)) == {"$datetime": "2026-01-01T00:00:00+00:00"}
    assert to_json(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET"))) == {
        "$datetime": ["2026-01-01T00:00:00+01:00", "CET"]
    }
    assert to_json(uuid.UUID(int=1)) == {"$uuid": "00000000-0000-0000-0000-000000000001"}
    assert to_json(Decimal("19.90")) == {"$decimal": "19.90"}
    for bad, message in [
        ({"$datetime": "2026-01-01T00:00:00"}, "no UTC offset"),
        ({"$datetime": "2026-01-01T00:00:00+07:00[Europe/Paris]"}, "is not one zone"),
        ({"$datetime": "2026-01-01T00:00:00+01:00[../etc/passwd]"}, "not an IANA time zone key"),
        ({"$datetime": "yesterday"}, "no ISO 8601"),
        ({"$uuid": "xyz"}, "no UUID"),
        ({"$decimal": "1_000"}, "wants a decimal number"),
        ({"$decimal": 1.5}, "wants a decimal number"),
    ]:
        with pytest.raises(BadJSON, match=message):
            from_json(bad)


def test_export_import_and_cli_json_keep_the_values(tmp_path: Path) -> None:
    a, b, file = tmp_path / "a", tmp_path / "b", tmp_path / "a.jsonl"
    data = tricky_values()
    with EventStore.open(a) as store:
        store.append("s", [NewEvent("T", data, metadata={"id": uuid.UUID(int=3)})] * 2)
        store.compact(before=store.append("s", [NewEvent("T", data)]).ids[0])
    ok("export", str(a), str(file))
    ok("import", str(b), str(file))
    with EventStore.open(b) as store:
        events = list(store.read_all())
    assert len(events) == 3 and all(same(e.data, data) for e in events)
    assert same(events[0].metadata, {"id": uuid.UUID(int=3)})
    line = json.loads(ok("all", str(b), "--json").splitlines()[0])
    assert line["data"]["$map"][0] == ["utc", {"$datetime": "2026-12-02T07:00:00.123456+00:00"}]
    ok(
        "append",
        str(b),
        "s",
        "Paid",
        "--data",
        '{"at": {"$datetime": "2026-03-29T02:30:00+01:00[Europe/Paris]"}, '
        '"amount": {"$decimal": "10.00"}}',
    )
    with EventStore.open(b) as store:
        last = list(store.read_all())[-1]
    assert same(
        last.data, {"at": datetime(2026, 3, 29, 2, 30, tzinfo=PARIS), "amount": Decimal("10.00")}
    )
