"""Means per class over finite values, their counts, and the mean over classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from clinix.metrics.case import METRIC_NAMES
from clinix.metrics.classes import ClassSpec
from clinix.metrics.summary import CaseResult, EvaluationSummary

NAN = math.nan
CLASSES = [ClassSpec("liver", (1,)), ClassSpec("tumour", (2,))]


def _record(dsc: float, n_pred: int, n_ref: int) -> dict[str, float]:
    """A record whose every ratio is ``dsc`` (enough to test the averaging) and whose counts are given.

    A nonempty mask holds one lesion, found when both masks are nonempty.
    """
    record = {metric: dsc for metric in METRIC_NAMES}
    record.update(TP=0, FP=n_pred, FN=n_ref, n_pred=n_pred, n_ref=n_ref)
    lesions_ref, lesions_pred = int(n_ref > 0), int(n_pred > 0)
    found = min(lesions_ref, lesions_pred)
    record.update(
        lesions_ref=lesions_ref, lesions_found=found, lesions_pred=lesions_pred, lesions_fp=lesions_pred - found
    )
    return record


def _case(case_id: str, liver: tuple[float, int, int], tumour: tuple[float, int, int]) -> CaseResult:
    metrics = {"liver": _record(*liver), "tumour": _record(*tumour)}
    return CaseResult(case_id, Path(f"ref/{case_id}.nii.gz"), Path(f"pred/{case_id}.nii.gz"), metrics)


# liver DSC 0.5, undefined (both empty), 1.0; tumour DSC 0.25, then undefined twice
CASES = [
    _case("a", (0.5, 4, 4), (0.25, 4, 4)),
    _case("b", (NAN, 0, 0), (NAN, 0, 0)),
    _case("c", (1.0, 4, 4), (NAN, 0, 0)),
]


def _summary(
    cases: list[CaseResult] = CASES, missing: list[str] | None = None, allow_missing: bool = False
) -> EvaluationSummary:
    failed = [CaseResult("d", Path("ref/d.nii.gz"), Path("pred/d.nii.gz"), problem="shape differs")]
    return EvaluationSummary(
        prediction_folder=Path("pred"),
        reference_folder=Path("ref"),
        classes=CLASSES,
        cases=cases,
        failed=failed,
        missing_predictions=missing or [],
        unmatched_predictions=["extra"],
        allow_missing=allow_missing,
        nsd_tolerance_mm=1.0,
        ignore_label=None,
    )


def test_class_mean_skips_undefined_cases_and_counts_them():
    liver = _summary().per_class["liver"]
    assert liver.mean["DSC"] == (0.5 + 1.0) / 2
    assert (liver.n_cases, liver.n_undefined["DSC"], liver.n_both_empty) == (3, 1, 1)


def test_mean_over_classes_averages_the_class_means():
    # liver 0.75, tumour 0.25 (its only defined case)
    assert _summary().foreground_mean["DSC"] == (0.75 + 0.25) / 2


def test_a_class_undefined_in_every_case_is_left_out_of_the_mean_over_classes():
    summary = _summary(cases=[CASES[1]])
    assert math.isnan(summary.per_class["liver"].mean["DSC"])
    assert math.isnan(summary.foreground_mean["DSC"])


def test_json_writes_undefined_values_as_null():
    payload = _summary().to_json()
    text = json.dumps(payload, allow_nan=False)
    case_b = json.loads(text)["metric_per_case"][1]
    assert case_b["metrics"]["liver"]["DSC"] is None and case_b["metrics"]["liver"]["TP"] == 0
    assert payload["per_class"]["liver"]["n_undefined"]["DSC"] == 1
    assert payload["failed_cases"] == [
        {
            "case": "d",
            "prediction_file": "pred/d.nii.gz",
            "reference_file": "ref/d.nii.gz",
            "problem": "shape differs",
        }
    ]


def test_problems_name_failed_and_missing_cases():
    problems = _summary(missing=["e"]).problems
    assert problems[0] == "d: shape differs"
    assert problems[1].startswith("e: no prediction")


def test_allowed_missing_predictions_are_not_problems():
    assert _summary(missing=["e"], allow_missing=True).problems == ["d: shape differs"]


def test_a_prediction_without_reference_is_a_warning():
    assert _summary().warnings == ["prediction extra has no reference in ref; not scored"]
