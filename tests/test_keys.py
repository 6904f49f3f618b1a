"""The key layout: no stream's keys are a prefix of another stream's keys."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from eventstore import keys

from .strategies import names

ids = st.binary(min_size=16, max_size=16)


def stream_keys(stream: str, name: str, value: str, id16: bytes) -> list[bytes]:
    s, n, v = stream.encode(), name.encode(), value.encode()
    return [
        keys.stream_prefix(s),
        keys.event_key(s, id16),
        keys.index_prefix(s, n, v),
        keys.index_key(s, n, v, id16),
        keys.meta_key(s),
        keys.snapshot_key(s),
    ]


@given(names, names, names, names, ids, ids)
def test_no_stream_key_prefixes_another_streams_key(
    a: str, b: str, name: str, value: str, id_a: bytes, id_b: bytes
) -> None:
    assume(a != b)
    for ka in stream_keys(a, name, value, id_a):
        for kb in stream_keys(b, name, value, id_b):
            assert not kb.startswith(ka)
            assert not ka.startswith(kb)


@given(names, st.tuples(names, names), st.tuples(names, names), ids, ids)
def test_index_keys_of_different_entries_never_prefix_each_other(
    stream: str, first: tuple[str, str], second: tuple[str, str], id_a: bytes, id_b: bytes
) -> None:
    assume(first != second)
    s = stream.encode()
    ka = keys.index_key(s, first[0].encode(), first[1].encode(), id_a)
    kb = keys.index_key(s, second[0].encode(), second[1].encode(), id_b)
    pa = keys.index_prefix(s, first[0].encode(), first[1].encode())
    assert not kb.startswith(pa)
    assert not ka.startswith(kb) and not kb.startswith(ka)


@given(names, ids, ids)
def test_event_keys_of_one_stream_sort_by_id(stream: str, id_a: bytes, id_b: bytes) -> None:
    s = stream.encode()
    assert (keys.event_key(s, id_a) < keys.event_key(s, id_b)) == (id_a < id_b)


@given(names)
def test_prefix_end_bounds_exactly_the_prefix(stream: str) -> None:
    prefix = keys.stream_prefix(stream.encode())
    end = keys.prefix_end(prefix)
    assert prefix < end
    assert prefix + b"\xff" * 20 < end
    assert not end.startswith(prefix)
