"""Options shared by several subcommands, so each reads the same in every ``--help``."""

from __future__ import annotations

import typer

WORKDIR = typer.Option(
    None, "--workdir", "-w", help="Working folder (default: $CLINIX_WORKDIR or ./clinix_work).", show_default=False
)
WORKERS = typer.Option(None, "--workers", "-j", min=1, help="Worker processes (default: up to 4).", show_default=False)
OVERWRITE = typer.Option(False, "--overwrite", help="Redo finished work instead of skipping it.")

