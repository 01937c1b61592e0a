"""`clinix phantom OUT`: write the synthetic CT-like demo dataset (nnU-Net v2 raw layout)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clinix.cli.app import app
from clinix.data.phantom import write_phantom_dataset


@app.command("phantom", help="Write a synthetic CT-like dataset (nnU-Net v2 raw layout) for demos and tests.")
def phantom(
    out: Path = typer.Argument(..., help="Folder to write (missing, empty, or an earlier phantom)."),
    cases: int = typer.Option(8, "--cases", min=1, help="Training cases (imagesTr/labelsTr)."),
    test_cases: int = typer.Option(2, "--test-cases", min=0, help="Held-out cases (imagesTs/labelsTs)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; the same seed writes the same bytes."),
    size: str = typer.Option("default", "--size", help="'default' (~40x80x80 voxels) or 'tiny' (~18x36x36)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset files of a non-empty folder."),
) -> None:
    console = Console()
    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("", total=cases + test_cases)
        dataset = write_phantom_dataset(
            out,
            cases=cases,
            seed=seed,
            test_cases=test_cases,
            size=size,
            overwrite=overwrite,
            on_case=lambda case_id: progress.update(task, advance=1, description=case_id),
        )
    console.print(f"wrote {cases} training and {test_cases} test cases (seed {seed}, size {size}) to {dataset}")
