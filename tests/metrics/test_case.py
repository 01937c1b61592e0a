"""One case on arrays: labels, BraTS regions as unions, the ignore label, label discovery."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clinix.errors import ClinixError
from clinix.metrics.case import METRIC_NAMES, evaluate_case

# one row of 10 voxels; label 1 = necrosis, 2 = oedema, 3 = enhancing (BraTS-like)
REF = np.array([[[0, 1, 1, 2, 2, 3, 3, 0, 0, 0]]])
PRED = np.array([[[0, 1, 2, 2, 3, 3, 3, 3, 0, 0]]])
SPACING = (1.0, 1.0, 1.0)


def test_each_class_record_holds_every_metric():
    scores = evaluate_case(PRED, REF, SPACING, labels=[1])
    assert set(scores) == {"1"} and tuple(scores["1"]) == METRIC_NAMES


def test_single_labels_are_scored_voxel_by_voxel():
    scores = evaluate_case(PRED, REF, SPACING, labels=[1, 2, 3])
    # label 1: ref x 1,2; pred x 1 -> TP 1, FN 1
    assert (scores["1"]["TP"], scores["1"]["FP"], scores["1"]["FN"]) == (1, 0, 1)
    assert scores["1"]["DSC"] == 2 / 3
    # label 2: ref x 3,4; pred x 2,3 -> TP 1 (x 3), FP 1 (x 2), FN 1 (x 4)
    assert scores["2"]["DSC"] == 2 / 4
    # label 3: ref x 5,6; pred x 4..7 -> TP 2, FP 2
    assert scores["3"]["IoU"] == 2 / 4


def test_regions_are_scored_as_unions_of_labels():
    scores = evaluate_case(PRED, REF, SPACING, regions={"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)})
    # WT: ref x 1..6 (6), pred x 1..7 (7): TP 6, FP 1
    assert (scores["WT"]["TP"], scores["WT"]["FP"], scores["WT"]["FN"]) == (6, 1, 0)
    assert scores["WT"]["DSC"] == 12 / 13 and scores["WT"]["IoU"] == 6 / 7
    # TC: ref x 3..6 (4), pred x 2..7 (6): TP 4, FP 2
    assert scores["TC"]["DSC"] == 8 / 10 and scores["TC"]["recall"] == 1.0 and scores["TC"]["precision"] == 4 / 6
    # ET: ref x 5,6, pred x 4..7: TP 2, FP 2
    assert scores["ET"]["DSC"] == 4 / 6


def test_ignored_reference_voxels_leave_every_count():
    ref = np.array([[[0, 1, 1, 4, 4, 0]]])
    pred = np.array([[[0, 1, 1, 1, 1, 1]]])
    # without ignore: TP 2, FP 3 -> DSC 4/7; ignoring label 4 drops the two FP voxels under it
    assert evaluate_case(pred, ref, SPACING, labels=[1])["1"]["DSC"] == 4 / 7
    scored = evaluate_case(pred, ref, SPACING, labels=[1], ignore_label=4)["1"]
    assert (scored["TP"], scored["FP"], scored["FN"], scored["DSC"]) == (2, 1, 0, 4 / 5)


def test_without_labels_every_nonzero_value_present_is_scored():
    assert set(evaluate_case(PRED, REF, SPACING)) == {"1", "2", "3"}


def test_a_label_absent_from_both_maps_is_undefined_not_zero():
    record = evaluate_case(PRED, REF, SPACING, labels=[5])["5"]
    assert (record["TP"], record["FP"], record["FN"]) == (0, 0, 0)
    assert math.isnan(record["DSC"]) and math.isnan(record["IoU"]) and math.isnan(record["HD95"])


def test_a_shape_mismatch_is_refused():
    with pytest.raises(ClinixError, match="shape"):
        evaluate_case(PRED[..., :9], REF, SPACING, labels=[1])
