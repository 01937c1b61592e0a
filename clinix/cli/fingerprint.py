"""`clinix fingerprint DATASET`: validate the dataset and write WORK/fingerprint.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import app
from clinix.fingerprint import extract_fingerprint
from clinix.workdir import resolve_workdir


@app.command("fingerprint")
def fingerprint(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 raw or Decathlon layout)."),
    workdir: Path = options.WORKDIR,
    workers: int = options.WORKERS,
    overwrite: bool = options.OVERWRITE,
) -> None:
    """Measure shapes, spacings, crop boxes, intensities and label fractions of every case."""
    result, path = extract_fingerprint(dataset, resolve_workdir(workdir), workers=workers, overwrite=overwrite)
    console = Console()
    table = Table(title=f"{result.dataset['name']}: {len(result.cases)} cases")
    for column in ("", "median", "min", "max"):
        table.add_column(column)
    for axis, name in enumerate(("z", "y", "x")):
        spacing = result.spacings[:, axis]
        table.add_row(f"spacing {name} (mm)", *(f"{v:.3g}" for v in (np.median(spacing), spacing.min(), spacing.max())))
    for axis, name in enumerate(("z", "y", "x")):
        size = result.shapes_after_crop[:, axis]
        table.add_row(f"size after crop {name}", *(f"{v:.0f}" for v in (np.median(size), size.min(), size.max())))
    for name, stats in result.labels.items():
        if stats["values"] != [0]:
            table.add_row(f"{name}: % of image (T/W)", f"{100 * stats['fraction_median']:.3g}", "", "")
    console.print(table)
    for channel, stats in result.intensity.items():
        console.print(
            f"channel {channel} ({stats['name']}): foreground mean {stats['mean']:.4g}, std {stats['std']:.4g}, "
            f"p0.5 {stats['percentile_00_5']:.4g}, p99.5 {stats['percentile_99_5']:.4g}"
        )
    console.print(f"wrote {path}")
