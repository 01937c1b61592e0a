"""Command-line interface: thin Typer commands over the library (SPEC §1, STYLE)."""

from __future__ import annotations

from clinix.cli import (  # noqa: F401  (each module registers its command on the app)
    best,
    crossval,
    evaluate,
    export,
    fingerprint,
    info,
    phantom,
    plan,
    predict,
    preprocess,
    train,
    validate,
)
from clinix.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
