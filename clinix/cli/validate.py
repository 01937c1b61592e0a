"""`clinix validate DATASET`: every problem of a dataset, one line each, then a summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from clinix.cli import options
from clinix.cli.app import EXIT_BAD_INPUT, app
from clinix.io.validate import validate_dataset


@app.command("validate")
def validate(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 raw or Decathlon layout)."),
    workers: int = options.WORKERS,
) -> None:
    """Check a dataset and report every problem: files, channels, geometry, labels, values."""
    report = validate_dataset(dataset, workers=workers)
    console = Console(highlight=False, soft_wrap=True)
    for problem in report.problems:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{style}]{problem.severity}[/{style}]: {problem.path}: {problem.message}", markup=True)
    console.print(f"{report.cases_checked} cases checked: {len(report.errors)} errors, {len(report.warnings)} warnings")
    if report.errors:
        raise typer.Exit(EXIT_BAD_INPUT)
