"""Voxel-overlap metrics of one binary mask against its reference (SPEC §8, nnU-Net reference §7).

Counts are taken over the voxels the caller passes in (ignored voxels already removed); true negatives
are never needed. Empty-mask rule, stated once for every metric: a ratio whose denominator is 0 is NaN.
So DSC and IoU are NaN when TP + FP + FN = 0 (empty reference and empty prediction, as nnU-Net), recall
is NaN for an empty reference, precision is NaN for an empty prediction; a prediction beside an empty
reference scores DSC = IoU = precision = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of one class in one case.

    Attributes:
        tp: voxels in both prediction and reference.
        fp: voxels in the prediction only.
        fn: voxels in the reference only.
    """

    tp: int
    fp: int
    fn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn

    def to_json(self) -> dict[str, int]:
        return {"TP": self.tp, "FP": self.fp, "FN": self.fn, "n_pred": self.n_pred, "n_ref": self.n_ref}


def confusion_counts(pred_mask: np.ndarray, ref_mask: np.ndarray) -> ConfusionCounts:
    """TP, FP, FN of two boolean masks of the same shape (any number of axes)."""
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"mask shapes differ: {pred_mask.shape} vs {ref_mask.shape}")
    tp = int(np.count_nonzero(pred_mask & ref_mask))
    return ConfusionCounts(tp=tp, fp=int(np.count_nonzero(pred_mask)) - tp, fn=int(np.count_nonzero(ref_mask)) - tp)


def overlap_metrics(counts: ConfusionCounts) -> dict[str, float]:
    """DSC = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), recall = TP/(TP+FN), precision = TP/(TP+FP)."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    return {
        "DSC": _ratio(2 * tp, 2 * tp + fp + fn),
        "IoU": _ratio(tp, tp + fp + fn),
        "recall": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")
