"""`clinix train` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("train", help="Not yet available.")
def train() -> None:
    not_yet_available("train")
