"""The Typer application and the error policy of every subcommand.

A ``ClinixError`` raised anywhere below a command becomes one line on stderr and exit code 2;
``--debug`` (or ``CLINIX_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup

from clinix import __version__
from clinix.errors import ClinixError, ClinixWarning

EXIT_BAD_INPUT = 2


class _ClinixGroup(TyperGroup):
    """Turns user errors into one line each and exit 2, whether run from the shell or a test runner;
    clinix's warnings become one ``warning:`` line each.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with _one_line_warnings():
                return super().invoke(ctx)
        except ClinixError as error:
            if _debug(ctx):
                raise
            for line in error.lines():
                typer.echo(f"error: {line}", err=True)
            ctx.exit(EXIT_BAD_INPUT)


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each distinct ``ClinixWarning`` once as ``warning: <message>``; other warnings as Python does."""
    shown: set[str] = set()
    python_showwarning = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, ClinixWarning):
            python_showwarning(message, category, *args, **kwargs)
        elif str(message) not in shown:
            shown.add(str(message))
            typer.echo(f"warning: {message}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = python_showwarning


def _debug(ctx: typer.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("CLINIX_DEBUG") == "1"


app = typer.Typer(
    cls=_ClinixGroup,
    name="clinix",
    help="3D medical image segmentation: plan, preprocess, train, predict, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clinix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    """3D medical image segmentation: plan, preprocess, train, predict, evaluate."""
    ctx.obj = {"debug": debug}


def not_yet_available(command: str) -> None:
    """Exit 2 for a subcommand whose implementation has not landed yet (never pretend)."""
    typer.echo(f"error: 'clinix {command}' is not yet available in clinix {__version__}", err=True)
    sys.exit(EXIT_BAD_INPUT)
