"""Integrations with other libraries. Each submodule needs its own optional extra.

- :mod:`eventstore.contrib.eventsourcing`: a persistence module for the
  ``eventsourcing`` library (``pip install "tiered-eventstore[eventsourcing]"``).
"""
