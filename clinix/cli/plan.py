"""`clinix plan` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("plan", help="Not yet available.")
def plan() -> None:
    not_yet_available("plan")
