"""``clinix crossval``: every training case predicted once, by the fold that did not see it, scored together.

The numbered folds with a ``checkpoint_final.pt`` take part (any number of them, after
``clinix train --fold F``). Each must hold its full validation (``validation/validation.json``, written
by ``clinix train`` or ``clinix train --validate-only``) and all must have been trained on the same plan.
Their validation files (label maps, and probabilities where saved) are linked, or copied across file
systems, into ``WORK/crossval/<config>/``, which is evaluated as one folder: ``summary.json`` (+ ``.csv``)
pooled over every case, and ``crossval.json`` with each fold's means and the mean ± std over folds.
The postprocessing these predictions support (postprocessing.py) is decided and written to
``WORK/results/<config>/postprocessing.json``, which ``clinix predict`` applies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from clinix.crossval.postprocessing import decide_postprocessing
from clinix.crossval.validate import RECORD_FILE, link_references
from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.io.dataset import open_dataset
from clinix.metrics import EvaluationSummary, evaluate_folders, write_report
from clinix.metrics.summary import CLASS_MEAN_METRICS, json_numbers
from clinix.plan.model import load_plan
from clinix.postprocess import Postprocessing
from clinix.workdir import WorkDir

CROSSVAL_FILE = "crossval.json"


@dataclasses.dataclass
class CrossvalResult:
    """The pooled evaluation and the per-fold ones (fold -> summary of its cases)."""

    folder: Path
    pooled: EvaluationSummary
    folds: dict[int, EvaluationSummary]
    unfinished: list[int]
    postprocessing: Postprocessing
    postprocessing_file: Path

    def fold_statistics(self) -> dict[str, dict[str, dict[str, float]]]:
        """Class (and "mean") -> metric -> {"mean", "std"} over the folds' means (std 0 for one fold)."""
        rows: dict[str, dict[str, dict[str, float]]] = {}
        names = [*self.pooled.per_class, "mean"]
        for name in names:
            rows[name] = {}
            for metric in CLASS_MEAN_METRICS:
                values = [_fold_value(summary, name, metric) for summary in self.folds.values()]
                finite = [value for value in values if math.isfinite(value)]
                rows[name][metric] = {
                    "mean": statistics.fmean(finite) if finite else math.nan,
                    "std": statistics.pstdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan,
                }
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "folds": sorted(self.folds),
            "unfinished_folds": self.unfinished,
            "postprocessing": self.postprocessing.describe(),
            "cases": len(self.pooled.cases),
            "pooled": {
                "foreground_mean": json_numbers(self.pooled.foreground_mean),
                "per_class": {name: json_numbers(s.mean) for name, s in self.pooled.per_class.items()},
            },
            "per_fold": {
                str(fold): {
                    "cases": [case.case_id for case in summary.cases],
                    "foreground_mean": json_numbers(summary.foreground_mean),
                    "per_class": {name: json_numbers(s.mean) for name, s in summary.per_class.items()},
                }
                for fold, summary in self.folds.items()
            },
            "over_folds": {
                name: {metric: json_numbers(values) for metric, values in metrics.items()}
                for name, metrics in self.fold_statistics().items()
            },
        }


def crossval(workdir: str | Path, workers: int | None = None) -> CrossvalResult:
    """Merge and evaluate the validations of every finished numbered fold of ``workdir`` (module docstring)."""
    work = WorkDir(workdir)
    records = finished_fold_records(work)
    out = work.crossval()
    _merge(work, records, out)
    plan = load_plan(work.root)
    dataset = open_dataset(plan.dataset_root)
    case_ids = [case for record in records.values() for case in record["cases"]]
    with tempfile.TemporaryDirectory(prefix="clinix-reference-") as references:
        link_references(dataset, case_ids, Path(references))
        pooled = evaluate_folders(out, references, dataset_json=dataset.root / "dataset.json", workers=workers)
    write_report(pooled, out / "summary.json")
    folds = {fold: _subset(pooled, set(record["cases"])) for fold, record in records.items()}
    pairs = [(out / f"{case.case_id}.nii.gz", dataset.case(case.case_id).label) for case in pooled.cases]
    postprocessing = decide_postprocessing(pairs, pooled.classes, pooled.ignore_label)
    write_json(work.postprocessing(), postprocessing.to_json())
    result = CrossvalResult(out, pooled, folds, _unfinished_folds(work), postprocessing, work.postprocessing())
    write_json(out / CROSSVAL_FILE, result.to_json())
    return result


def finished_fold_records(work: WorkDir) -> dict[int, dict[str, Any]]:
    """Fold -> its ``validation.json`` for every numbered fold with a final checkpoint; ClinixError when
    there is none, when one's validation is missing, or when two were trained on different plans."""
    finished = _numbered_folds(work, lambda fold: work.checkpoint(fold, "final").is_file())
    if not finished:
        raise ClinixError(
            f"no finished fold in {work.results()}; train one first ('clinix train --fold 0'), "
            "then run 'clinix crossval'"
        )
    records: dict[int, dict[str, Any]] = {}
    for fold in finished:
        path = work.validation(fold) / RECORD_FILE
        try:
            records[fold] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ClinixError(
                f"fold {fold}: no full validation in {work.validation(fold)}; "
                f"run 'clinix train --fold {fold} --validate-only'"
            ) from None
    first = finished[0]
    for fold in finished[1:]:
        keys = ("plan_digest", "model_digest")
        if any(records[fold].get(key) != records[first].get(key) for key in keys):
            raise ClinixError(
                f"fold {fold} was trained on another plan than fold {first}; retrain one of them on the "
                f"current plan ('clinix train --fold {fold} --overwrite') before 'clinix crossval'"
            )
    seen: dict[str, int] = {}
    for fold, record in records.items():
        for case in record["cases"]:
            if case in seen:
                raise ClinixError(
                    f"case {case} is a validation case of folds {seen[case]} and {fold}; "
                    f"{work.splits} must give each case to one fold"
                )
            seen[case] = fold
    return records


def _merge(work: WorkDir, records: dict[int, dict[str, Any]], out: Path) -> None:
    """``out`` holds exactly the folds' validation files (label maps, probabilities) after this."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for fold, record in records.items():
        source = work.validation(fold)
        for case in record["cases"]:
            files = [source / f"{case}.nii.gz"]
            if record.get("probabilities"):
                files += [source / f"{case}.npz", source / f"{case}.json"]
            for file in files:
                if not file.is_file():
                    raise ClinixError(
                        f"fold {fold}: {file} is missing; run 'clinix train --fold {fold} --validate-only'"
                    )
                _link_or_copy(file, out / file.name)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _numbered_folds(work: WorkDir, keep: Any) -> list[int]:
    return [fold for fold in work.fold_names() if isinstance(fold, int) and keep(fold)]


def _unfinished_folds(work: WorkDir) -> list[int]:
    return _numbered_folds(work, lambda fold: not work.checkpoint(fold, "final").is_file())


def _subset(summary: EvaluationSummary, case_ids: set[str]) -> EvaluationSummary:
    """``summary`` restricted to ``case_ids`` (its class means recomputed)."""
    return dataclasses.replace(summary, cases=[case for case in summary.cases if case.case_id in case_ids])


def _fold_value(summary: EvaluationSummary, name: str, metric: str) -> float:
    if name == "mean":
        return summary.foreground_mean.get(metric, math.nan)
    return summary.per_class[name].mean.get(metric, math.nan)
