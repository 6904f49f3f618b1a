"""The ``eventstore`` command line (see docs/cli.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__


class _Group(click.Group):
    """A group whose usage errors are one ``error:`` line too, like every other
    expected failure, and whose Ctrl-C exits 130 without a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(
    cls=_Group,
    invoke_without_command=True,  # plain `eventstore` prints help and exits 0
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, package_name="tiered-eventstore")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    envvar="EVENTSTORE_LOCK_TIMEOUT",
    metavar="SECONDS",
    help="How long to retry opening a store another process holds open "
    "(env EVENTSTORE_LOCK_TIMEOUT).",
)
@click.pass_context
def main(ctx: click.Context, lock_timeout: float) -> None:
    """Read, append to, compact, export and check eventstore stores, and
    inspect ESDB files. See docs/cli.md (in the source distribution)."""
    ctx.obj = {"lock_timeout": lock_timeout}
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


def _register() -> None:
    from . import following, maintenance, reading, transfer, writing
    from .esdb import esdb
    from .forgetting import COMMANDS as FORGET_COMMANDS
    from .serve import serve_command

    main.add_command(esdb)
    main.add_command(serve_command)
    for module in (writing, reading, following, maintenance, transfer):
        for command in module.COMMANDS:
            main.add_command(command)
    for command in FORGET_COMMANDS:
        main.add_command(command)


_register()
