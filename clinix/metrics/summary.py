"""The result of evaluating a folder: per-case records, per-class means with their counts, the class mean.

Means skip non-finite values: a metric that is NaN in a case (an empty mask, see overlap.py and surface.py)
is left out of that class's mean and counted in ``n_undefined``. ``foreground_mean`` is the mean over
classes of the class means (the paper's DSC and mIoU), skipping a class whose mean is itself undefined;
nnU-Net's plain mean would turn NaN there instead.

Lesion detection (lesions.py) is pooled rather than averaged: lesion recall is the lesions found over all
cases divided by the reference lesions over all cases, so a case with one lesion weighs less than a case with
ten, and a case without reference lesions adds none; false positives are reported per case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clinix.metrics.case import METRIC_NAMES
from clinix.metrics.classes import ClassSpec

CLASS_MEAN_METRICS = ("DSC", "IoU", "recall", "precision", "HD95", "NSD")
HD95_CONVENTION = "max of the two directed 95th percentiles of surface distances (MONAI's convention)"
HD95_MISSING_RULES = {
    "max": "a structure in only one of the two maps scores the image diagonal in mm",
    "nan": "a structure in only one of the two maps scores NaN and is left out of the mean (MONAI)",
}


@dataclass
class CaseResult:
    """One case: its files and its per-class records, or the problem that stopped it.

    Attributes:
        prediction_file: None for a missing prediction scored as an empty one (``allow_missing``).
        metrics: class name -> metric name -> value (NaN where undefined).
        reference_labels: nonzero values present in the reference (used when no classes were declared).
        problem: why the case could not be scored; None when it was.
    """

    case_id: str
    reference_file: Path
    prediction_file: Path | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_labels: tuple[int, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class LesionTotals:
    """Lesion detection of one class, summed over the scored cases.

    Attributes:
        found: reference lesions found.
        reference: reference lesions.
        false_positives: predicted components that overlap no reference lesion.
        n_cases: cases summed.
    """

    found: int
    reference: int
    false_positives: int
    n_cases: int

    @property
    def recall(self) -> float:
        """Pooled lesion recall, found / reference; NaN when no case has a reference lesion."""
        return self.found / self.reference if self.reference else math.nan

    @property
    def false_positives_per_case(self) -> float:
        return self.false_positives / self.n_cases if self.n_cases else math.nan

    def to_json(self) -> dict[str, float | None]:
        return json_numbers(
            {
                "found": self.found,
                "reference": self.reference,
                "recall": self.recall,
                "false_positives": self.false_positives,
                "false_positives_per_case": self.false_positives_per_case,
            }
        )


@dataclass(frozen=True)
class ClassSummary:
    """One class over all scored cases.

    Attributes:
        mean: metric -> mean over the cases where it is finite (NaN when it is finite in none).
        n_cases: cases scored.
        n_undefined: metric -> cases left out of its mean.
        n_both_empty: cases whose reference and prediction are both empty for this class.
        n_missed: cases where the reference has the class and the prediction has none of it.
        n_spurious: cases where the prediction has the class and the reference has none of it.
        lesions: lesions found and false positives summed over the cases; ``mean`` holds per-case means.
    """

    spec: ClassSpec
    mean: dict[str, float]
    n_cases: int
    n_undefined: dict[str, int]
    n_both_empty: int
    n_missed: int
    n_spurious: int
    lesions: LesionTotals

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.spec.labels),
            "mean": json_numbers(self.mean),
            "n_cases": self.n_cases,
            "n_both_empty": self.n_both_empty,
            "n_missed": self.n_missed,
            "n_spurious": self.n_spurious,
            "lesions": self.lesions.to_json(),
            "n_undefined": self.n_undefined,
        }


@dataclass
class EvaluationSummary:
    """Everything ``clinix evaluate`` reports; ``to_json`` is the content of summary.json."""

    prediction_folder: Path
    reference_folder: Path
    classes: list[ClassSpec]
    cases: list[CaseResult]
    failed: list[CaseResult]
    missing_predictions: list[str]
    unmatched_predictions: list[str]
    allow_missing: bool
    nsd_tolerance_mm: float
    ignore_label: int | None
    hd95_missing: str = "max"
    per_class: dict[str, ClassSummary] = field(init=False)
    foreground_mean: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.per_class = {spec.name: summarize_class(spec, self.cases) for spec in self.classes}
        self.foreground_mean = mean_over_classes(list(self.per_class.values()))

    @property
    def problems(self) -> list[str]:
        """One line per case that makes the evaluation fail (exit 2): unscored or missing."""
        lines = [f"{case.case_id}: {case.problem}" for case in self.failed]
        if not self.allow_missing:
            lines += [
                f"{case_id}: no prediction in {self.prediction_folder} (--allow-missing scores it as empty)"
                for case_id in self.missing_predictions
            ]
        return lines

    @property
    def warnings(self) -> list[str]:
        return [
            f"prediction {case_id} has no reference in {self.reference_folder}; not scored"
            for case_id in self.unmatched_predictions
        ]

    def to_json(self) -> dict[str, Any]:
        """Valid JSON: NaN and infinities are written as null."""
        return {
            "prediction_folder": str(self.prediction_folder),
            "reference_folder": str(self.reference_folder),
            "settings": {
                "nsd_tolerance_mm": self.nsd_tolerance_mm,
                "ignore_label": self.ignore_label,
                "allow_missing": self.allow_missing,
                "hd95": HD95_CONVENTION,
                "hd95_missing": self.hd95_missing,
                "hd95_missing_rule": HD95_MISSING_RULES[self.hd95_missing],
            },
            "classes": [spec.to_json() for spec in self.classes],
            "foreground_mean": json_numbers(self.foreground_mean),
            "per_class": {name: summary.to_json() for name, summary in self.per_class.items()},
            "metric_per_case": [_case_json(case) for case in self.cases],
            "failed_cases": [_case_json(case) for case in self.failed],
            "missing_predictions": self.missing_predictions,
            "predictions_without_reference": self.unmatched_predictions,
        }


def summarize_class(spec: ClassSpec, cases: list[CaseResult]) -> ClassSummary:
    """Means over cases of every metric of ``spec``, finite values only, with the counts left out; lesion totals."""
    records = [case.metrics[spec.name] for case in cases]
    mean, n_undefined = {}, {}
    for metric in METRIC_NAMES:
        values = np.array([record[metric] for record in records], dtype=float)
        finite = values[np.isfinite(values)]
        mean[metric] = float(finite.mean()) if finite.size else math.nan
        n_undefined[metric] = int(values.size - finite.size)
    both_empty = sum(1 for record in records if record["n_pred"] == 0 and record["n_ref"] == 0)
    missed = sum(1 for record in records if record["n_pred"] == 0 and record["n_ref"] > 0)
    spurious = sum(1 for record in records if record["n_pred"] > 0 and record["n_ref"] == 0)
    lesions = LesionTotals(
        found=sum(record["lesions_found"] for record in records),
        reference=sum(record["lesions_ref"] for record in records),
        false_positives=sum(record["lesions_fp"] for record in records),
        n_cases=len(records),
    )
    return ClassSummary(spec, mean, len(records), n_undefined, both_empty, missed, spurious, lesions)


def mean_over_classes(per_class: list[ClassSummary]) -> dict[str, float]:
    """The mean over classes of each class mean in ``CLASS_MEAN_METRICS``; undefined class means skipped."""
    result = {}
    for metric in CLASS_MEAN_METRICS:
        values = [summary.mean[metric] for summary in per_class if math.isfinite(summary.mean[metric])]
        result[metric] = float(np.mean(values)) if values else math.nan
    return result


def json_numbers(values: dict[str, float]) -> dict[str, float | None]:
    """Non-finite numbers become None (JSON null); JSON has no NaN."""
    return {key: value if math.isfinite(value) else None for key, value in values.items()}


def _case_json(case: CaseResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "case": case.case_id,
        "prediction_file": str(case.prediction_file) if case.prediction_file else None,
        "reference_file": str(case.reference_file),
    }
    if case.problem is not None:
        entry["problem"] = case.problem
    else:
        entry["metrics"] = {name: json_numbers(record) for name, record in case.metrics.items()}
    return entry
