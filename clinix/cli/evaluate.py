"""`clinix evaluate PRED REF`: score predictions against references; summary.json, summary.csv, a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from clinix.cli import options
from clinix.cli.app import EXIT_BAD_INPUT, app
from clinix.metrics import (
    evaluate_folders,
    parse_labels_option,
    parse_regions_option,
    summary_table,
    write_report,
)
from clinix.metrics.case import DEFAULT_NSD_TOLERANCE_MM


@app.command("evaluate")
def evaluate(
    pred: Path = typer.Argument(..., help="Folder of predicted label maps (CASE.nii.gz, ...)."),
    ref: Path = typer.Argument(..., help="Folder of reference label maps with the same case ids."),
    labels: str = typer.Option(
        None,
        "--labels",
        help="Labels to score, e.g. 1,2 (default: dataset.json, else every value in REF).",
        show_default=False,
    ),
    dataset_json: Path = typer.Option(
        None,
        "--dataset-json",
        help="dataset.json with label names, regions, ignore (default: REF/../dataset.json).",
        show_default=False,
    ),
    regions: str = typer.Option(None, "--regions", help='Unions of labels, e.g. "WT=1,2,3;TC=2,3;ET=3".'),
    classes_only: bool = typer.Option(
        False,
        "--classes",
        help="For a region dataset (BraTS), score its label values (non-overlapping classes) instead of its regions.",
    ),
    workers: int = options.WORKERS,
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="summary.json to write; summary.csv goes beside it (default: PRED/summary.json).",
        show_default=False,
    ),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Score a missing prediction as empty."),
    nsd_tol: float = typer.Option(DEFAULT_NSD_TOLERANCE_MM, "--nsd-tol", min=0.0, help="NSD tolerance in mm."),
    hd95_missing: str = typer.Option(
        "max",
        "--hd95-missing",
        help="HD95 of a structure in only one of the two maps (a missed or a spurious one): 'max' (the image "
        "diagonal in mm, sqrt(sum((size*spacing)^2))) or 'nan' (MONAI: left out of the mean). Counted either way.",
    ),
    ignore_label: int = typer.Option(
        None,
        "--ignore-label",
        help="Reference value left out of every count (default: dataset.json 'ignore').",
        show_default=False,
    ),
) -> None:
    """Score each case and class: DSC, IoU, recall, precision, TP/FP/FN, HD95 (mm), NSD, lesions; then the means."""
    summary = evaluate_folders(
        pred,
        ref,
        labels=parse_labels_option(labels) if labels is not None else None,
        regions=parse_regions_option(regions) if regions is not None else None,
        dataset_json=dataset_json,
        ignore_label=ignore_label,
        nsd_tolerance_mm=nsd_tol,
        workers=workers,
        allow_missing=allow_missing,
        hd95_missing=hd95_missing,
        classes_only=classes_only,
    )
    json_path, csv_path = write_report(summary, out or summary.prediction_folder / "summary.json")
    console, errors = Console(highlight=False), Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(summary_table(summary))
    for line in summary.warnings:
        errors.print(f"warning: {line}", markup=False)
    for line in summary.problems:
        errors.print(f"error: {line}", markup=False)
    console.print(f"wrote {json_path} and {csv_path}", markup=False)
    if summary.problems:
        raise typer.Exit(EXIT_BAD_INPUT)
