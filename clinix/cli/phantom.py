"""`clinix phantom OUT`: write a synthetic dataset for demos and tests: a CT-like abdomen (``--kind ct``), a
CT-sized chest with small lung lesions (``--kind lesion``) or a BraTS-like multi-modal brain tumour MRI
(``--kind brats``, nnU-Net region form or ``--layout msd``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clinix.cli.app import app
from clinix.errors import ClinixError

KINDS = ("ct", "lesion", "brats")


@app.command(
    "phantom",
    help="Write a synthetic dataset (CT-like abdomen, chest CT with lung lesions, or BraTS-like brain MRI).",
)
def phantom(
    out: Path = typer.Argument(..., help="Folder to write (missing, empty, or an earlier phantom)."),
    cases: int = typer.Option(8, "--cases", min=1, help="Training cases (imagesTr/labelsTr)."),
    test_cases: int = typer.Option(2, "--test-cases", min=0, help="Held-out cases (imagesTs/labelsTs)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; the same seed writes the same bytes."),
    kind: str = typer.Option(
        "ct",
        "--kind",
        help="ct: abdomen CT, organ + tumours; lesion: 512x512 chest CT, small lung lesions; "
        "brats: 4-channel brain MRI, edema/core/enhancing.",
    ),
    layout: str = typer.Option("nnunet", "--layout", help="nnunet (v2 raw; regions for brats) or msd (brats only)."),
    size: str = typer.Option("default", "--size", help="'default' or 'tiny' (for tests)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset files of a non-empty folder."),
) -> None:
    from clinix.data.brats import write_brats_dataset
    from clinix.data.lesion import write_lesion_dataset
    from clinix.data.phantom import write_phantom_dataset

    if kind not in KINDS:
        raise ClinixError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "brats" and layout != "nnunet":
        raise ClinixError("--layout msd is written for --kind brats only (the Decathlon's Task01_BrainTumour)")
    console = Console()
    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("", total=cases + test_cases)
        settings = {"cases": cases, "seed": seed, "test_cases": test_cases, "size": size, "overwrite": overwrite}

        def advance(case_id: str) -> None:
            progress.update(task, advance=1, description=case_id)

        if kind == "brats":
            dataset = write_brats_dataset(out, layout=layout, on_case=advance, **settings)
        elif kind == "lesion":
            dataset = write_lesion_dataset(out, on_case=advance, **settings)
        else:
            dataset = write_phantom_dataset(out, on_case=advance, **settings)
    console.print(f"wrote {cases} training and {test_cases} test cases ({kind}, seed {seed}, size {size}) to {dataset}")
