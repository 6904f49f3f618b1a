"""The CLI's JSON encoding of event values (in process): lossless for every
msgpack value, strict JSON, and clear about input it cannot decode."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.cli.output import BadJSON, from_json, parse_json, to_json

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary()
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20))
)
keys = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5) | st.binary(max_size=3)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def packed(value: Any) -> bytes:
    raw: bytes = msgpack.packb(value, use_bin_type=True)
    return raw


@given(values)
def test_every_msgpack_value_survives_strict_json(value: Any) -> None:
    text = json.dumps(to_json(value), allow_nan=False)
    back = from_json(json.loads(text))
    assert packed(back) == packed(value)


def test_the_encoding_is_readable() -> None:
    assert to_json({"a": [1, 2.5, None, "x"]}) == {"a": [1, 2.5, None, "x"]}
    assert to_json(b"\x00\xff") == {"$bytes": "AP8="}
    assert to_json({1: "a"}) == {"$map": [[1, "a"]]}
    assert to_json({"$bytes": "x"}) == {"$map": [["$bytes", "x"]]}
    assert to_json(float("nan")) == {"$float": "nan"}
    assert to_json(msgpack.ExtType(3, b"z")) == {"$ext": [3, "eg=="]}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"$bytes": 5}', "base64 string"),
        ('{"$bytes": "***"}', "invalid base64"),
        ('{"$map": [1]}', "[key, value] pairs"),
        ('{"$map": [[[1], 2]]}', "keys must be scalars"),
        ('{"$float": "big"}', "'nan', 'inf' or '-inf'"),
        ('{"$ext": [300, ""]}', "-128..127"),
        ('{"$repr": "<object>"}', "cannot be read back"),
        ('{"$nope": 1}', "unknown tag '$nope'"),
        ('{"a": 1, "$b": 2}', "starts with '$'"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_input_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(BadJSON, match=None) as info:
        parse_json(text, "--data")
    assert message in str(info.value) and str(info.value).startswith("--data")
