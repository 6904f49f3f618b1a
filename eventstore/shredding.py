"""Crypto-shredding through a wrapper: ``Shredder(store)`` seals and opens
events with the store's subject keys (eventstore/sealing.py holds them).

    shredder = Shredder(store)
    store.append("customer-7", [shredder.seal("user-7", NewEvent("Registered", {...}))])
    shredder.open(event)            # the event with its data and metadata, decrypted
    shredder.forget_subject("user-7")
    shredder.open(event).shredded   # True: data and metadata None, for ever

A store opened with ``EventStore.open(path, shredding=True)`` does all of
this itself (``store.seal``, ``store.forget_subject``, and every read opens
sealed events): prefer that. A Shredder of such a store shares its keys.
"""

from __future__ import annotations

from .events import Event, NewEvent
from .sealing import KEY_FILE, KeyStore, ShreddedEvent, is_sealed
from .store import EventStore


class Shredder:
    """The subject keys of one store, and sealing and opening of its events."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        own = store._forget.sealing
        self._keys: KeyStore = own if isinstance(own, KeyStore) else KeyStore(store.path)
        self.path = self._keys.path

    @property
    def subjects(self) -> list[str]:
        """The subjects that have a key."""
        return self._keys.subjects

    def seal(self, subject: str, event: NewEvent) -> NewEvent:
        """See :meth:`eventstore.sealing.KeyStore.seal`."""
        return self._keys.seal(subject, event)

    def open(self, event: Event) -> Event:
        """See :meth:`eventstore.sealing.KeyStore.open`."""
        return self._keys.open(event)

    def forget_subject(self, subject: str) -> bool:
        """See :meth:`eventstore.sealing.KeyStore.forget_subject`."""
        return self._keys.forget_subject(subject)


__all__ = ["KEY_FILE", "ShreddedEvent", "Shredder", "is_sealed"]
