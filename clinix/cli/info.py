"""`clinix info` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("info", help="Not yet available.")
def info() -> None:
    not_yet_available("info")
