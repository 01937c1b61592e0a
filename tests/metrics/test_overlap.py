"""Overlap counts and ratios on boxes whose overlap is counted by hand."""

from __future__ import annotations

import math

import numpy as np

from clinix.metrics.overlap import ConfusionCounts, confusion_counts, overlap_metrics


def _box(shape: tuple[int, ...], *slices: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[slices] = True
    return mask


def test_two_boxes_give_hand_counted_tp_fp_fn():
    # ref: 2x3x4 = 24 voxels; pred: 2x3x2 = 12 voxels, 2 of its x columns (of 2) inside ref's x range 1..4
    ref = _box((4, 5, 8), slice(1, 3), slice(1, 4), slice(1, 5))
    pred = _box((4, 5, 8), slice(1, 3), slice(1, 4), slice(4, 6))
    counts = confusion_counts(pred, ref)
    # overlap: x = 4 only -> 2*3*1 = 6 voxels; FP = 12 - 6; FN = 24 - 6
    assert counts == ConfusionCounts(tp=6, fp=6, fn=18)
    assert (counts.n_pred, counts.n_ref) == (12, 24)


def test_ratios_are_the_exact_fractions_of_the_counts():
    metrics = overlap_metrics(ConfusionCounts(tp=6, fp=6, fn=18))
    assert metrics["DSC"] == 12 / 36
    assert metrics["IoU"] == 6 / 30
    assert metrics["recall"] == 6 / 24
    assert metrics["precision"] == 6 / 12


def test_empty_reference_and_prediction_leave_every_ratio_undefined():
    metrics = overlap_metrics(confusion_counts(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)))
    assert all(math.isnan(value) for value in metrics.values())


def test_prediction_beside_an_empty_reference_scores_zero_and_has_no_recall():
    metrics = overlap_metrics(ConfusionCounts(tp=0, fp=5, fn=0))
    assert (metrics["DSC"], metrics["IoU"], metrics["precision"]) == (0.0, 0.0, 0.0)
    assert math.isnan(metrics["recall"])


def test_empty_prediction_against_a_reference_scores_zero_and_has_no_precision():
    metrics = overlap_metrics(ConfusionCounts(tp=0, fp=0, fn=7))
    assert (metrics["DSC"], metrics["IoU"], metrics["recall"]) == (0.0, 0.0, 0.0)
    assert math.isnan(metrics["precision"])
