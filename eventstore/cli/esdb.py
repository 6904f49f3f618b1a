"""``eventstore esdb ...``: inspect, dump and verify ESDB files (being written)."""

from __future__ import annotations

import click


@click.group()
def esdb() -> None:
    """Work with one ESDB file."""
