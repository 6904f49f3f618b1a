"""The ``eventstore`` command line."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventstore")
def main() -> None:
    """Inspect, back up, export and compact eventstore stores and ESDB files."""


def _register() -> None:
    from .esdb import esdb

    main.add_command(esdb)


_register()
