"""`clinix validate` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("validate", help="Not yet available.")
def validate() -> None:
    not_yet_available("validate")
