"""`clinix best WORK [WORK...]`: compare trained configurations and their pairs; write inference.json."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import app


@app.command("best")
def best(
    workdirs: list[Path] = typer.Argument(..., help="Working folders that ran 'clinix crossval'."),
    out: Path = typer.Option(Path("inference.json"), "--out", "-o", help="The inference.json to write."),
    ensembles: bool = typer.Option(True, "--ensembles/--no-ensembles", help="Also score every pair, averaged."),
    workers: int = options.WORKERS,
) -> None:
    """Pick the best configuration (or pair) by pooled cross-validation DSC, for 'clinix predict --model'."""
    from clinix.crossval.best import find_best

    result = find_best(workdirs, out, ensembles, workers or 1)
    classes = list(result.candidates[0].per_class)
    table = Table(title=f"cross-validation DSC, {len(result.candidates[0].members[0].cases)} cases")
    for column in ("", "model", "mean DSC", *classes, "postprocessing"):
        table.add_column(column, justify="left" if column in ("", "model", "postprocessing") else "right")
    for candidate in result.candidates:
        values = [candidate.mean_dsc, *(candidate.per_class.get(name, math.nan) for name in classes)]
        cells = [f"{value:.4f}" if math.isfinite(value) else "n/a" for value in values]
        mark = "best" if candidate is result.chosen else ""
        table.add_row(mark, candidate.name, *cells, candidate.note or candidate.postprocessing.describe())
    console = Console()
    console.print(table)
    console.print(f"chosen: {result.chosen.name}; wrote {result.path}", highlight=False)
