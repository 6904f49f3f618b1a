"""ESDB: the immutable cold-tier file format (specified in docs/FORMAT.md).

One file holds a ULID range of many streams: one *space* per stream, events
in compressed, checksummed blocks, per-space secondary indexes, a space
index, a ULID index and a fixed footer that finds them all.
"""

from ..records import encode_record
from .format import FORMAT_VERSION, FileMeta, SpaceInfo
from .reader import BlockCache, ESDBReader
from .writer import ESDBWriter

# encode_record is the one way to make the record bytes ESDBWriter.add takes
# (docs/api.md): public here, so callers need not reach into records.
__all__ = [
    "FORMAT_VERSION",
    "BlockCache",
    "ESDBReader",
    "ESDBWriter",
    "FileMeta",
    "SpaceInfo",
    "encode_record",
]
