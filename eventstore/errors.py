"""Every error eventstore raises on purpose.

Each one is an :class:`EventStoreError`, and also the built-in exception a
caller would reach for (``ValueError`` for bad names, ``TypeError`` for data
msgpack cannot carry), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class EventStoreError(Exception):
    """Base class of every error eventstore raises on purpose."""


class InvalidName(EventStoreError, ValueError):
    """A stream, index or type name is empty, not a str, too long or holds NUL."""


class InvalidNameType(InvalidName, TypeError):
    """A name is not a str at all."""


class InvalidType(EventStoreError, TypeError):
    """An argument has the wrong type (say, an event that is not a ``NewEvent``)."""


class InvalidULID(EventStoreError, ValueError):
    """A string or value is not a ULID."""


class InvalidArgument(EventStoreError, ValueError):
    """An argument has the right type but an impossible value."""


class UnserialisableData(EventStoreError, TypeError):
    """Event data or metadata holds a value msgpack cannot carry."""


class WrongExpectedVersion(EventStoreError):
    """An append's expected version did not match the stream's version."""

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(f"stream {stream!r}: expected version {expected}, actual version {actual}")


class ConditionFailed(EventStoreError):
    """An append's condition failed: an event matching its query came after
    the position the decision read (``seq``: the first such event's seq)."""

    def __init__(self, after: int | None, seq: int) -> None:
        self.after = after
        self.seq = seq
        super().__init__(
            f"append condition failed: event at seq {seq} matches the query"
            f" and is after {'the start' if after is None else after}"
        )


class StoreLocked(EventStoreError, OSError):
    """Another process (or another open handle) holds the store."""


class StoreClosed(EventStoreError, RuntimeError):
    """The store was used after ``close()``, or failed and must be reopened."""


class CorruptFile(EventStoreError, ValueError):
    """A file's bytes are damaged, truncated or hostile.

    The message names the file and the byte offset where the problem was found.
    """

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(f"{path}: corrupt at offset {offset}: {problem}")


# -- the store and its files (never lose, never serve damage) ---------------


class StoreNotFound(EventStoreError, FileNotFoundError):
    """``open(path, create=False)`` found no store at ``path``."""


class NotAStore(EventStoreError, FileExistsError):
    """The folder holds something other than an eventstore store; nothing was created."""


class StoreDamaged(EventStoreError, OSError):
    """The store's files are damaged, missing or inconsistent with each other.

    The message says what was found and what to do (``eventstore repair``, or
    restore from a backup). Nothing was deleted or changed.
    """


class ArchiveMismatch(StoreDamaged):
    """An archive file is not the one its manifest entry describes (foreign, swapped, replaced)."""


class UnsafePath(EventStoreError, PermissionError):
    """A path would lead outside the store's folder, through a symlink, or to a non-regular file."""


class StorageError(EventStoreError, OSError):
    """The operating system refused a read or write the store needed."""


class DiskFull(StorageError):
    """A write failed for lack of space (``ENOSPC``/``EDQUOT``); nothing half-written is kept."""


class UsedAfterFork(EventStoreError, RuntimeError):
    """A store handle opened in a parent process was used in a child after ``fork()``.

    Open the store in the child instead (after the fork), or serve it.
    """


class AppendTooLarge(InvalidArgument):
    """One append holds more events or bytes than the store accepts at once."""


# -- h4-format: the ESDB file format's limits -------------------------------


class FileFull(InvalidArgument):
    """An ESDB file cannot take this event: one of its chunks would pass the
    format's 64 MiB bound (docs/FORMAT.md, Limits). The writer is unchanged;
    finish the file and put the event in the next one. ``event_id`` is the
    refused event's 16-byte id."""

    def __init__(self, message: str, event_id: bytes) -> None:
        self.event_id = event_id
        super().__init__(message)


# -- h7-server: deletion by KurrentDB's rules ---------------------------------


class StreamDeleted(EventStoreError, LookupError):
    """The stream was tombstoned: it can never be read or appended to again."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"Event stream '{stream}' is deleted.")


# -- h3-bounds: ids at the edges of time ------------------------------------


class IdsExhausted(EventStoreError, OverflowError):
    """The id generator reached the end of the ULID space: no larger id exists.

    Only an id already stored at (or next to) the largest ULID gets a store
    here; ``import_events`` refuses such ids, so a store fed through the API
    never does.
    """


class IdOutOfRange(InvalidArgument):
    """An imported id lies further in the future than the import allows, or in
    the last millisecond of the ULID space, which the store keeps free."""


# -- h2-integrity: reads go on after a failed write -------------------------


class WritesRefused(StoreClosed, StorageError):
    """The store refuses writes, but reads go on: an earlier write failed (a
    full disk, a failing device), or the disk was full when it opened. Free
    the space or fix the device, then close and reopen the store."""


# -- h17-forget: delete, expire and erase -----------------------------------


class EventNotFound(EventStoreError, LookupError):
    """No event with the given id is in the store (or a deletion or retention rule removed it)."""
