"""`clinix crossval`: the trained folds' validations merged and scored together (per fold and pooled)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import app

if TYPE_CHECKING:
    from clinix.crossval import CrossvalResult

COLUMNS = (("DSC", 4), ("IoU", 4), ("recall", 4), ("HD95", 2))


@app.command("crossval")
def crossval(workdir: Path = options.WORKDIR, workers: int = options.WORKERS) -> None:
    """Merge every finished fold's validation into WORK/crossval/3d_fullres/ and evaluate it."""
    from clinix.crossval import crossval as run_crossval
    from clinix.workdir import resolve_workdir

    result = run_crossval(resolve_workdir(workdir), workers=workers)
    console = Console()
    console.print(crossval_table(result))
    console.print(per_fold_table(result))
    evidence = result.postprocessing.evidence
    console.print(
        f"postprocessing: {result.postprocessing.describe()} (mean DSC {_number(evidence['baseline']['mean_dsc'], 4)} "
        f"-> {_number(evidence['postprocessed']['mean_dsc'], 4)}), written to {result.postprocessing_file}"
    )
    if result.unfinished:
        console.print(f"not finished, left out: fold {', '.join(map(str, result.unfinished))}")
    console.print(f"output: {result.folder}")


def crossval_table(result: CrossvalResult) -> Table:
    """Per class and for the mean over classes: the pooled values, and the DSC's mean ± std over folds
    (crossval.json holds the spread of every metric)."""
    folds = sorted(result.folds)
    table = Table(title=f"cross-validation: folds {', '.join(map(str, folds))}; {len(result.pooled.cases)} cases")
    table.add_column("class", no_wrap=True)
    table.add_column("DSC", justify="right")
    table.add_column("DSC over folds", justify="right", no_wrap=True)
    for metric, _ in COLUMNS[1:]:
        table.add_column(f"{metric} mm" if metric == "HD95" else metric, justify="right")
    statistics = result.fold_statistics()
    pooled = {name: summary.mean for name, summary in result.pooled.per_class.items()}
    pooled["mean"] = result.pooled.foreground_mean
    for name, values in pooled.items():
        cells = [_number(values.get(metric, math.nan), digits) for metric, digits in COLUMNS]
        cells.insert(1, _spread(statistics[name]["DSC"], 4))
        table.add_row(name, *cells, end_section=name == list(pooled)[-2])
    return table


def per_fold_table(result: CrossvalResult) -> Table:
    """DSC per class (and the mean over classes) of each fold's validation cases."""
    table = Table(title="DSC per fold")
    table.add_column("class", no_wrap=True)
    for fold, summary in sorted(result.folds.items()):
        table.add_column(f"fold {fold} ({len(summary.cases)})", justify="right")
    names = [*result.pooled.per_class, "mean"]
    for name in names:
        values = [
            summary.foreground_mean["DSC"] if name == "mean" else summary.per_class[name].mean["DSC"]
            for _, summary in sorted(result.folds.items())
        ]
        table.add_row(name, *(_number(value, 4) for value in values), end_section=name == names[-2])
    return table


def _number(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def _spread(values: dict[str, float], digits: int) -> str:
    mean, std = values["mean"], values["std"]
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(mean) else "n/a"
