"""`clinix preprocess` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("preprocess", help="Not yet available.")
def preprocess() -> None:
    not_yet_available("preprocess")
