"""`clinix phantom` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("phantom", help="Not yet available.")
def phantom() -> None:
    not_yet_available("phantom")
