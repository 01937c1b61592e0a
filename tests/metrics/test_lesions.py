"""Lesions found and false positives: 26-connected components, overlap by one voxel, pooling over cases."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.io.image import Geometry, write_image
from clinix.metrics.case import absent_class_record, evaluate_case
from clinix.metrics.classes import ClassSpec
from clinix.metrics.lesions import LesionCounts, lesion_counts
from clinix.metrics.summary import CaseResult, summarize_class

SHAPE = (5, 8, 8)
SPACING = (1.0, 1.0, 1.0)


def _mask(*boxes: tuple[slice, slice, slice]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


# three 2x2x2 boxes, apart from each other
A = np.s_[0:2, 0:2, 0:2]
B = np.s_[0:2, 0:2, 5:7]
C = np.s_[3:5, 5:7, 5:7]


def test_a_lesion_overlapped_by_one_voxel_is_found_and_a_blob_away_from_all_is_a_false_positive():
    pred = _mask(np.s_[1, 1, 1], C)  # one voxel of A, and a blob at C
    assert lesion_counts(pred, _mask(A, B)) == LesionCounts(n_ref=2, n_found=1, n_pred=2, n_false_positive=1)
    assert lesion_counts(pred, _mask(A, B)).recall == 0.5


def test_one_predicted_component_over_two_lesions_finds_both_and_is_no_false_positive():
    pred = _mask(np.s_[0:2, 0:2, 0:7])  # a bar from A to B
    assert lesion_counts(pred, _mask(A, B)) == LesionCounts(n_ref=2, n_found=2, n_pred=1, n_false_positive=0)


def test_lesions_touching_only_at_a_corner_are_one_lesion():
    ref = _mask(np.s_[0:2, 0:2, 0:2], np.s_[2:4, 2:4, 2:4])  # voxels (1, 1, 1) and (2, 2, 2) share a corner
    assert lesion_counts(np.zeros(SHAPE, dtype=bool), ref).n_ref == 1


def test_empty_masks_have_no_lesions_and_an_undefined_recall():
    counts = lesion_counts(np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool))
    assert (counts.n_ref, counts.n_found, counts.n_pred, counts.n_false_positive) == (0, 0, 0, 0)
    assert math.isnan(counts.recall)


def test_a_lesion_only_under_the_ignore_label_is_no_lesion():
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[A], ref[B] = 1, 2  # label 2 is "ignore"
    pred = ref.copy()  # predicts both as lesion: B's prediction lies under the ignore label too
    pred[B] = 1
    assert _lesions(evaluate_case(pred, ref, SPACING, labels=[1])["1"]) == (1, 1, 2, 1)
    record = evaluate_case(pred, ref, SPACING, labels=[1], ignore_label=2)["1"]
    assert _lesions(record) == (1, 1, 1, 0) and record["lesion_recall"] == 1.0


def test_a_class_absent_from_both_maps_has_zero_lesions_and_no_recall():
    record = absent_class_record()
    assert _lesions(record) == (0, 0, 0, 0) and math.isnan(record["lesion_recall"])


def test_the_summary_pools_lesions_over_cases_and_averages_false_positives_per_case():
    # found/reference, false positives: case a 1/2, 1; case b 0/0, 1; case c 2/3, 0
    cases = {
        "a": (_mask(np.s_[1, 1, 1], C), _mask(A, B)),
        "b": (_mask(C), _mask()),
        "c": (_mask(A, B), _mask(A, B, C)),
    }
    results = [
        CaseResult(case_id, Path(f"ref/{case_id}.nii.gz"), Path(f"pred/{case_id}.nii.gz"), _scores(pred, ref))
        for case_id, (pred, ref) in cases.items()
    ]
    lesions = summarize_class(ClassSpec("1", (1,)), results).lesions
    assert (lesions.found, lesions.reference, lesions.false_positives) == (3, 5, 2)
    assert lesions.recall == 3 / 5 and lesions.false_positives_per_case == 2 / 3
    # pooled, not the mean of the per-case recalls (1/2 + 2/3) / 2 = 7/12; case b has no recall
    assert summarize_class(ClassSpec("1", (1,)), results).mean["lesion_recall"] == pytest.approx(7 / 12)


def test_pooled_recall_is_undefined_without_any_reference_lesion():
    result = CaseResult("b", Path("ref/b.nii.gz"), Path("pred/b.nii.gz"), _scores(_mask(C), _mask()))
    lesions = summarize_class(ClassSpec("1", (1,)), [result]).lesions
    assert math.isnan(lesions.recall) and lesions.false_positives_per_case == 1.0
    assert lesions.to_json()["recall"] is None


def test_cli_writes_pooled_lesions_to_summary_json_and_lesion_columns_to_the_csv(tmp_path):
    # case1: lesions A and B, A predicted, a false positive at C; case2: lesion A, predicted
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    for case_id, pred, ref in (("case1", _mask(A, C), _mask(A, B)), ("case2", _mask(A), _mask(A))):
        write_image(ref_dir / f"{case_id}.nii.gz", ref.astype(np.uint8), Geometry.identity(SPACING), is_label=True)
        write_image(pred_dir / f"{case_id}.nii.gz", pred.astype(np.uint8), Geometry.identity(SPACING), is_label=True)
    result = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(ref_dir), "--workers", "1"])
    assert result.exit_code == 0, result.output
    lesions = json.loads((pred_dir / "summary.json").read_text())["per_class"]["1"]["lesions"]
    assert lesions == {
        "found": 2,
        "reference": 3,
        "recall": 2 / 3,
        "false_positives": 1,
        "false_positives_per_case": 0.5,
    }
    rows = list(csv.DictReader((pred_dir / "summary.csv").open()))
    columns = ("lesions_ref", "lesions_found", "lesions_pred", "lesions_fp", "lesion_recall")
    assert [tuple(row[column] for column in columns) for row in rows] == [
        ("2", "1", "2", "1", "0.5"),
        ("1", "1", "1", "0", "1.0"),
    ]


def _lesions(record: dict[str, float]) -> tuple[float, ...]:
    """(reference lesions, found, predicted components, false positives) of a case record."""
    return tuple(record[name] for name in ("lesions_ref", "lesions_found", "lesions_pred", "lesions_fp"))


def _scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, dict[str, float]]:
    return evaluate_case(pred.astype(np.uint8), ref.astype(np.uint8), SPACING, labels=[1])
