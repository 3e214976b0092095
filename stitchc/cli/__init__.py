"""The ``stitchc`` command line: one click group, one module per pipeline stage.

Each ``_*.py`` module here defines the commands of one stage and lists them in its
``COMMANDS``; this module adds them to the group. The library only logs: the CLI sets
the log level, draws progress bars and turns a :class:`~stitchc.errors.StitchcError`
into a one-line message and exit status 2.
"""

from __future__ import annotations

import logging
import sys

import click

from stitchc.errors import StitchcError

__all__ = ["main"]


class _Group(click.Group):
    """A click group that prints stitchc errors as one line and exits with status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StitchcError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (repeat for debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="stitchc")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Recombine two trained neural networks by stitching their torch.fx graphs."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _add_commands() -> None:
    # Imported here, not at the top, so that each stage module may import `main`'s
    # helpers without a cycle.
    from stitchc.cli import _capture, _demo, _eval, _match, _search, _supernet

    for module in (_capture, _match, _supernet, _search, _eval, _demo):
        for command in module.COMMANDS:
            main.add_command(command)


_add_commands()
