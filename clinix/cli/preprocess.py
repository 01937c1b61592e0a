"""`clinix preprocess`: crop, normalise and resample every case of the plan into WORK/preprocessed/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import app
from clinix.preprocess import preprocess_dataset
from clinix.workdir import resolve_workdir


@app.command("preprocess")
def preprocess(
    workdir: Path = options.WORKDIR,
    workers: int = options.WORKERS,
    overwrite: bool = options.OVERWRITE,
) -> None:
    """Preprocess the planned dataset (WORK/plans.json); finished cases are skipped."""
    summary = preprocess_dataset(resolve_workdir(workdir), workers=workers, overwrite=overwrite)
    console = Console()
    if summary.processed:
        table = Table(title=f"{len(summary.processed)} cases preprocessed")
        for column in ("", "median", "min", "max"):
            table.add_column(column)
        shapes = np.array([case.shape for case in summary.processed])
        for axis, name in enumerate(("z", "y", "x")):
            table.add_row(f"shape {name}", *_statistics(shapes[:, axis], "{:.0f}"))
        table.add_row("seconds per case", *_statistics(np.array([c.seconds for c in summary.processed]), "{:.2f}"))
        console.print(table)
    console.print(f"preprocessed {len(summary.processed)} cases, skipped {len(summary.skipped)} already done")
    console.print(f"output: {summary.folder}")


def _statistics(values: np.ndarray, template: str) -> list[str]:
    return [template.format(v) for v in (np.median(values), values.min(), values.max())]
