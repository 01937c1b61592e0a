"""`clinix predict` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("predict", help="Not yet available.")
def predict() -> None:
    not_yet_available("predict")
