"""`clinix export WORK model.zip`: the trained folds, plan and postprocessing as one checked bundle."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from clinix.cli import options
from clinix.cli.app import app
from clinix.cli.predict import FOLDS_HELP


@app.command("export")
def export(
    workdir: Path = typer.Argument(..., help="The working folder with trained folds."),
    out: Path = typer.Argument(..., help="The bundle to write (model.zip)."),
    folds: str = typer.Option(None, "--folds", help=FOLDS_HELP, show_default=False),
    checkpoint: str = typer.Option("final", "--checkpoint", help="Which checkpoint of each fold: final or best."),
) -> None:
    """Write a model bundle for 'clinix predict --model' on another machine (weights only, checksummed)."""
    from clinix.bundle import export_bundle, read_manifest

    chosen = folds if folds in (None, "all", "best") else options.parse_int_list("--folds", folds)
    path = export_bundle(workdir, out, chosen, checkpoint)
    manifest = read_manifest(path)
    size = path.stat().st_size / 2**20
    folds_text = ", ".join(str(fold) for fold in manifest["folds"])
    summary = f"folds {folds_text}, {len(manifest['files'])} files"
    Console().print(f"wrote {path} ({size:.1f} MiB): {summary}", highlight=False)
