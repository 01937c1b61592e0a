"""Options shared by several subcommands, so each reads the same in every ``--help``."""

from __future__ import annotations

import typer

from clinix.errors import ClinixError

WORKDIR = typer.Option(
    None, "--workdir", "-w", help="Working folder (default: $CLINIX_WORKDIR or ./clinix_work).", show_default=False
)
WORKERS = typer.Option(None, "--workers", "-j", min=1, help="Worker processes (default: up to 4).", show_default=False)
OVERWRITE = typer.Option(False, "--overwrite", help="Redo finished work instead of skipping it.")

ARCH_NAMES = ("mambaclinix", "resunet", "mamba-only", "hgcn-only", "hgcn-uniform-N", "umamba-bot")
ARCH_HELP = f"Network family: {', '.join(ARCH_NAMES)} (default mambaclinix)."


def parse_int_list(option: str, text: str) -> list[int]:
    """``"64,64,64"`` -> ``[64, 64, 64]``; anything else is a ClinixError naming the option."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ClinixError(f"{option} expects comma-separated integers like 64,64,64, got {text!r}") from None
