"""`clinix fingerprint` (not yet available)."""

from __future__ import annotations

from clinix.cli.app import app, not_yet_available


@app.command("fingerprint", help="Not yet available.")
def fingerprint() -> None:
    not_yet_available("fingerprint")
