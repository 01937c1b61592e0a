"""`clinix evaluate` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("evaluate", help="Not yet available.")
def evaluate() -> None:
    not_yet_available("evaluate")
