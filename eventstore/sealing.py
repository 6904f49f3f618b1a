"""The key store of crypto-shredding: events encrypted under a per-subject
key, forgotten by deleting the key (the ``crypto`` extra: ``cryptography``'s
AES-256-GCM). Below the facade: the store holds a :class:`KeyStore` when it
is opened with ``shredding=True`` and opens every event it reads with it
(through the read hook of eventstore/retention.py), so plain reads,
subscriptions and the server return sealed events decrypted, and events of
a forgotten subject as :class:`ShreddedEvent`.

A sealed event's data is the envelope ``{"$shred": subject, "nonce": 12
bytes, "ct": ciphertext}`` and its metadata None; type and indexes stay in
the clear (keep personal data out of them). The ciphertext covers the
msgpack of ``[data, metadata]`` (every value the store carries), with the
subject as associated data, so an envelope moved to another subject fails
to open.

The keys live in one file in the store folder, ``subject-keys`` (msgpack,
replaced whole through a temporary file, fsync and rename on every change).
``EventStore.backup()`` and exports copy the events, never this file, so
forgetting a subject reaches every backup and export however old: their
envelopes can never be opened again. The other side of that: a backup
restores sealed events readable only with a copy of the keys, kept apart
(``eventstore keys export``, a secrets store), from which a forgotten
subject goes only when the keys are exported again. Threat model, in
docs/guarantees.md ("Crypto-shredding").
"""

from __future__ import annotations

import os
import threading
from typing import Any

import msgpack

from .errors import CorruptFile, InvalidArgument, InvalidNameType
from .events import Event, NewEvent
from .records import encoder, unpack

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"crypto-shredding needs the crypto extra: pip install 'tiered-eventstore[crypto]' ({exc})"
    ) from None

KEY_FILE = "subject-keys"
ENVELOPE = "$shred"


class ShreddedEvent(Event):
    """A sealed event whose subject was forgotten: ``data`` and ``metadata``
    None, ``shredded`` True; id, stream, version, seq, type and indexes stay."""

    __slots__ = ()

    @property
    def shredded(self) -> bool:
        return True


def _check_subject(subject: object) -> str:
    if not isinstance(subject, str):
        raise InvalidNameType(f"subject must be a str, got {type(subject).__name__}")
    if not subject or "\x00" in subject:
        raise InvalidArgument(f"subject must be a non-empty str without NUL, got {subject!r}")
    return str(subject)


def is_sealed(event: Event | NewEvent) -> bool:
    data = event.data
    return isinstance(data, dict) and isinstance(data.get(ENVELOPE), str)


class KeyStore:
    """The subject keys of one store (its file ``subject-keys``), and sealing
    and opening of events with them. Given to the store when it is opened
    with ``shredding=True``, which then opens every event it reads; or held
    by a :class:`eventstore.shredding.Shredder`."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, KEY_FILE)
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = self._load()

    def _load(self) -> dict[str, bytes]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            value = unpack(raw)
            keys = value["keys"]
            if not isinstance(keys, dict) or not all(
                isinstance(k, str) and isinstance(v, bytes) and len(v) == 32
                for k, v in keys.items()
            ):
                raise ValueError("keys are not subject -> 32 bytes")
        except Exception as exc:  # msgpack raises several unrelated types
            raise CorruptFile(
                self.path, 0, f"the subject key file does not decode: {exc}"
            ) from None
        return dict(keys)

    def _save(self, keys: dict[str, bytes]) -> None:
        """Replace the key file whole: the old one, with a forgotten key in it,
        is unlinked, never edited in place."""
        _write_keys(self.path, keys)

    def export_keys(self, dest: str) -> int:
        """Write the keys to ``dest`` (a new file, mode 0600) in the key
        file's format, for a backup kept apart from the store's; returns how
        many. A subject forgotten later stays in ``dest`` until it is
        exported again (docs/operations.md).

        Raises:
            InvalidArgument: ``dest`` exists (an older copy is never overwritten).
        """
        with self._lock:
            keys = dict(self._keys)
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidArgument(f"{dest} exists; export the keys to a new file") from None
        os.close(fd)
        _write_keys(dest, keys)
        return len(keys)

    @property
    def subjects(self) -> list[str]:
        """The subjects that have a key."""
        return sorted(self._keys)

    def seal(self, subject: str, event: NewEvent) -> NewEvent:
        """``event`` with its data and metadata encrypted under ``subject``'s
        key (made on first use), ready to append.

        Raises:
            InvalidArgument: ``subject`` is empty or holds NUL.
            InvalidNameType: ``subject`` is not a str.
            UnserialisableData: the data or metadata cannot be stored.
        """
        subject = _check_subject(subject)
        plain = encoder().check([event.data, event.metadata], f"data of event {event.type!r}")
        with self._lock:
            key = self._keys.get(subject)
            if key is None:
                key = AESGCM.generate_key(bit_length=256)
                self._save({**self._keys, subject: key})
                self._keys[subject] = key
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plain, subject.encode())
        return NewEvent(
            event.type, {ENVELOPE: subject, "nonce": nonce, "ct": sealed}, None, event.indexes
        )

    def open(self, event: Event) -> Event:
        """The event as appended (decrypted); a :class:`ShreddedEvent` if its
        subject was forgotten; an event that was not sealed, unchanged.

        Raises:
            CorruptFile: the envelope does not decrypt under its subject's key.
        """
        if not is_sealed(event):
            return event
        envelope: dict[str, Any] = event.data
        subject = envelope[ENVELOPE]
        key = self._keys.get(subject)
        if key is None:
            shredded: Event = tuple.__new__(
                ShreddedEvent,
                (
                    event.id,
                    event.stream,
                    event.version,
                    event.seq,
                    event.type,
                    None,
                    None,
                    event.indexes,
                    event.tags,
                ),
            )
            return shredded
        try:
            plain = AESGCM(key).decrypt(envelope["nonce"], envelope["ct"], subject.encode())
            data, metadata = unpack(plain)
        except (InvalidTag, KeyError, TypeError, ValueError) as exc:
            raise CorruptFile(
                f"event {event.id}", 0, f"its sealed data does not open ({type(exc).__name__})"
            ) from None
        return event._replace(data=data, metadata=metadata)

    def forget_subject(self, subject: str) -> bool:
        """Delete ``subject``'s key, durably: every event sealed under it, in
        this store and in every backup or export of it, opens as shredded
        from now on. False if the subject had no key. A later ``seal`` for
        the same subject makes a new key.

        Raises:
            InvalidArgument: ``subject`` is empty or holds NUL.
            InvalidNameType: ``subject`` is not a str.
        """
        subject = _check_subject(subject)
        with self._lock:
            if subject not in self._keys:
                return False
            keys = {k: v for k, v in self._keys.items() if k != subject}
            self._save(keys)
            self._keys = keys
        return True


def _write_keys(path: str, keys: dict[str, bytes]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(msgpack.packb({"v": 1, "keys": keys}, use_bin_type=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["ENVELOPE", "KEY_FILE", "KeyStore", "ShreddedEvent", "is_sealed"]
