"""The hot tier's key layout (docs/guarantees.md, "Hot-tier layout").

Every key starts with a one-byte namespace tag; names are UTF-8 and end with a
NUL separator that names can never contain, so no stream's keys are a prefix
of another stream's keys. ULIDs are 16 raw big-endian bytes: byte order is
time order.
"""

from __future__ import annotations

SEP = b"\x00"

EVENT = b"e"
INDEX = b"i"
GLOBAL = b"g"
META = b"m"
SNAPSHOT = b"s"
CHECKPOINT = b"c"
SYSTEM = b"x"
TAG = b"t"

# The version of this layout, kept in the store's configuration. 2: segment
# keys carry the file number (eventstore/segments.py); layout-1 stores are
# migrated when they open. 3: events may carry tags, with ``t`` keys (older
# code would leave those behind when it removes events, so it must refuse);
# a layout-2 store holds none and is upgraded as it opens.
LAYOUT_VERSION = 3

ULID_LEN = 16


def stream_prefix(stream: bytes) -> bytes:
    """Prefix of every ``e`` key of one stream."""
    return EVENT + stream + SEP


def event_key(stream: bytes, id16: bytes) -> bytes:
    return EVENT + stream + SEP + id16


def index_prefix(stream: bytes, name: bytes, value: bytes) -> bytes:
    """Prefix of every ``i`` key of one stream's index ``name=value``."""
    return INDEX + stream + SEP + name + SEP + value + SEP


def index_key(stream: bytes, name: bytes, value: bytes, id16: bytes) -> bytes:
    return INDEX + stream + SEP + name + SEP + value + SEP + id16


def tag_prefix(tag: bytes) -> bytes:
    """Prefix of every ``t`` key of one tag: the store-wide tag index, in ULID
    (so seq) order."""
    return TAG + tag + SEP


def tag_key(tag: bytes, id16: bytes) -> bytes:
    return TAG + tag + SEP + id16


def global_key(id16: bytes) -> bytes:
    return GLOBAL + id16


# The per-stream point keys end in the separator too, so that even these never
# prefix another stream's keys (docs/guarantees.md promises it of every key of a stream).
def meta_key(stream: bytes) -> bytes:
    return META + stream + SEP


def snapshot_key(stream: bytes) -> bytes:
    return SNAPSHOT + stream + SEP


def checkpoint_key(name: bytes) -> bytes:
    return CHECKPOINT + name + SEP


def system_key(name: bytes) -> bytes:
    return SYSTEM + name


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``.

    Prefixes here end in a tag or a NUL, never in 0xFF, so a plain increment
    of the last byte is enough.
    """
    return prefix[:-1] + bytes([prefix[-1] + 1])


# -- the cold tier's system state (all under the `x` tag) -----------------------

WATERMARK = SYSTEM + b"watermark"
MANIFEST = SYSTEM + b"manifest"
STRAY = SYSTEM + b"stray"
COUNTS = SYSTEM + b"counts"  # [streams, last_seq], with every commit: eventstore/counters.py
SEGMENT = SYSTEM + b"seg" + SEP  # the keys themselves: eventstore/segments.py


def segment_prefix(stream: bytes) -> bytes:
    """Prefix of the keys that say which archive files hold part of a stream."""
    return SEGMENT + stream + SEP
